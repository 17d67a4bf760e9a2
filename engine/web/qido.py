"""QIDO-RS (PS3.18 10.6): /studies, /series and /instances searches, at any depth of
the hierarchy, answered by storage.query from the catalog's keys.

A search below STUDY level without its parents' UIDs (`/series?Modality=MR`,
`/instances?PatientID=...`) is a relational query (storage.query walks the studies
that match the study-level keys), paged by `offset` and `limit` without
materializing more than the page. Every answer carries Instance
Availability (ONLINE, NEARLINE, UNAVAILABLE, as storage.query decides), the Retrieve
AE Title and its RetrieveURL.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.dicom.find import check_value
from engine.web.dicom_json import answers_json, keyword_of
from storage.index import Index
from storage.query import (
    IMAGE_KEYS,
    SERIES_KEYS,
    STUDY_KEYS,
    Level,
    Query,
    QueryError,
    availability,
    search,
)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
# The attributes PS3.18 Table 10.6.3-3..5 says an origin server returns by default.
DEFAULT_KEYS: dict[Level, tuple[str, ...]] = {
    "STUDY": (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "SeriesDate",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    ),
    "IMAGE": (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "NumberOfFrames",
        "AvailableTransferSyntaxUID",
    ),
}
_LEVEL_KEYS = {"STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS, "IMAGE": IMAGE_KEYS}
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


class QidoError(ValueError):
    """A request that cannot be answered as asked: 400 with this reason."""


@dataclass
class Search:
    level: Level
    matches: dict[str, str] = field(default_factory=dict)  # keyword -> value to match
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def parse(level: Level, params: list[tuple[str, str]], parents: dict[str, str]) -> Search:
    """The query string (repeated keys kept) and the path's UIDs, checked."""
    found = Search(level, matches=dict(parents))
    for name, value in params:
        if name in ("limit", "offset"):
            try:
                number = int(value)
            except ValueError:
                raise QidoError(f"{name} must be a whole number, not {value!r}") from None
            if number < 0:
                raise QidoError(f"{name} must not be negative")
            if name == "limit":
                found.limit = min(number, MAX_LIMIT) or DEFAULT_LIMIT
            else:
                found.offset = number
        elif name == "fuzzymatching":
            if value not in ("true", "false"):
                raise QidoError("fuzzymatching must be true or false")
            # Person names always match case-insensitively here (storage.query).
        elif name == "includefield":
            for item in value.split(","):
                if item == "all":
                    found.include_all = True
                elif (keyword := keyword_of(item.strip())) is not None:
                    found.include.add(keyword)
                else:
                    raise QidoError(f"includefield {item!r} is not a DICOM keyword or tag")
        else:
            keyword = keyword_of(name)
            if keyword is None:
                raise QidoError(
                    f"unknown query parameter {name!r}: use a DICOM keyword or tag, or one "
                    f"of {sorted(_CONTROL)}"
                )
            try:
                check_value(keyword, value)
            except ValueError as exc:
                raise QidoError(str(exc)) from exc
            found.matches[keyword] = value
    return found


def answer(
    index: Index, search_: Search, recallable: bool, base: str, retrieve_ae: str
) -> tuple[bytes, int, bool]:
    """The response body, how many answers it holds, and whether more exist; run in
    a thread. The collector is paused meanwhile: a list of thousands of answers is
    tens of thousands of new dicts, and the collections they set off (walking the
    engine's whole heap) took as long as building them."""
    with _collector_paused():
        found = list(run(index, search_, recallable))
        page = found[: search_.limit]
        return orjson.dumps(to_json(page, base, retrieve_ae)), len(page), len(found) > len(page)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def run(index: Index, search_: Search, recallable: bool) -> Iterator[dict[str, str]]:
    """The page of answers (keyword -> text), Instance Availability included; run in a
    thread (it reads LMDB)."""
    answers = _answers(index, search_)
    page = itertools.islice(answers, search_.offset, search_.offset + search_.limit + 1)
    for answer in page:
        tiers = answer.pop("_tiers", {})
        answer["InstanceAvailability"] = availability(tiers, recallable)
        yield answer


def _returned(search_: Search) -> dict[str, str]:
    """Keys to ask storage.query for at this level: defaults, includes, matches."""
    level = search_.level
    known = {**_LEVEL_KEYS[level], **(STUDY_KEYS if level != "STUDY" else {})}
    wanted = dict.fromkeys(DEFAULT_KEYS[level], "")
    if level != "STUDY":
        wanted["StudyInstanceUID"] = ""
    if level == "IMAGE":
        wanted["SeriesInstanceUID"] = ""
    include = set(known) if search_.include_all else search_.include
    wanted |= dict.fromkeys(sorted(k for k in include if k in known), "")
    return wanted


def _answers(index: Index, search_: Search) -> Iterator[dict[str, Any]]:
    keys = _returned(search_) | search_.matches
    return search(index, Query(search_.level, keys, relational=True))


def to_json(answers: list[dict[str, str]], base: str, retrieve_ae: str) -> list[dict[str, Any]]:
    """Answers as PS3.18 JSON, each with RetrieveURL and Retrieve AE Title."""
    for answer in answers:
        url = f"{base}/studies/{answer['StudyInstanceUID']}"
        if "SeriesInstanceUID" in answer:
            url += f"/series/{answer['SeriesInstanceUID']}"
        if "SOPInstanceUID" in answer:
            url += f"/instances/{answer['SOPInstanceUID']}"
        answer["RetrieveAETitle"] = retrieve_ae
        answer["RetrieveURL"] = url
    return answers_json(answers)


__all__ = ["QidoError", "QueryError", "Search", "answer", "parse", "run", "to_json"]
