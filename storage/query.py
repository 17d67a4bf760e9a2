"""Queries over the catalog: PS3.4 C.2.2.2 matching at PATIENT, STUDY, SERIES and
IMAGE level, answered from keys, never by reading an object.

A `Query` is a level and the identifier's keys as text (keyword -> value, "" for a
return key). `search` yields one answer per match: every requested keyword with its
value here ("" when this node does not know it), plus `_tiers` (instances per tier)
for the caller's Instance Availability.

A STUDY-level query is driven by the most selective key it has: Study Instance UIDs,
PatientID, AccessionNumber, a StudyDate range, a PatientName prefix or a modality,
each a key range in storage.catalog; only a query with none of them walks every
study. Lower levels walk their parent's children (hierarchical model: the parent's
unique key must be given) unless the query is relational (the SCU negotiated it, or
QIDO-RS): then the studies its study-level keys match are walked, and at IMAGE level
each series is tested on its series-level keys. Matching: single value, `*`/`?`
wildcards, UID lists, date and time ranges, universal; person names
case-insensitively (as most archives do, whatever the SCU negotiated); a
multi-valued attribute matches when any value does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import lmdb

    from storage.index import Index, Instance

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")

# keyword -> (record field, VR class for matching)
PATIENT_KEYS = {
    "PatientID": ("patient_id", "text"),
    "PatientName": ("patient_name", "name"),
    "IssuerOfPatientID": ("issuer_of_patient_id", "text"),
    "PatientBirthDate": ("patient_birth_date", "date"),
    "PatientSex": ("patient_sex", "text"),
}
STUDY_KEYS = {
    **PATIENT_KEYS,
    "StudyInstanceUID": ("uid", "uid"),
    "StudyDate": ("study_date", "date"),
    "StudyTime": ("study_time", "time"),
    "StudyID": ("study_id", "text"),
    "AccessionNumber": ("accession_number", "text"),
    "StudyDescription": ("study_description", "text"),
    "ReferringPhysicianName": ("referring_physician_name", "name"),
    "ModalitiesInStudy": ("modalities", "list"),
    "NumberOfStudyRelatedSeries": ("series", "count"),
    "NumberOfStudyRelatedInstances": ("instances", "count"),
}
SERIES_KEYS = {
    "SeriesInstanceUID": ("uid", "uid"),
    "StudyInstanceUID": ("study_instance_uid", "uid"),
    "Modality": ("modality", "text"),
    "SeriesNumber": ("series_number", "text"),
    "SeriesDescription": ("series_description", "text"),
    "SeriesDate": ("series_date", "date"),
    "BodyPartExamined": ("body_part_examined", "text"),
    "NumberOfSeriesRelatedInstances": ("instances", "count"),
}
IMAGE_KEYS = {
    "SOPInstanceUID": ("sop_instance_uid", "uid"),
    "SOPClassUID": ("sop_class_uid", "uid"),
    "InstanceNumber": ("instance_number", "text"),
    "NumberOfFrames": ("number_of_frames", "text"),
    "SeriesInstanceUID": ("series_instance_uid", "uid"),
    "StudyInstanceUID": ("study_instance_uid", "uid"),
    "AvailableTransferSyntaxUID": ("transfer_syntax_uid", "uid"),
}
PATIENT_LEVEL_KEYS = {
    **PATIENT_KEYS,
    "NumberOfPatientRelatedStudies": ("studies", "count"),
    "NumberOfPatientRelatedInstances": ("instances", "count"),
}
KEYS: dict[Level, dict[str, tuple[str, str]]] = {
    "PATIENT": PATIENT_LEVEL_KEYS,
    "STUDY": STUDY_KEYS,
    "SERIES": SERIES_KEYS,
    "IMAGE": IMAGE_KEYS,
}
# The key that names one entity of each level (PS3.4 C.2.1.1.2).
UNIQUE: dict[Level, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


class QueryError(ValueError):
    """The identifier cannot be answered as asked: PS3.4 "identifier does not match
    SOP class" (0xA900); the message says which key."""


@dataclass(frozen=True)
class Query:
    level: Level
    keys: dict[str, str] = field(default_factory=dict)
    relational: bool = False  # parents' unique keys may be missing (PS3.4 C.4.1.2.2.1)


def search(index: Index, query: Query) -> Iterator[dict[str, Any]]:
    """Answers, one read transaction for all of them (a consistent snapshot)."""
    if query.level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {query.level!r} is not one of {LEVELS}")
    tests = _tests(query)
    with index.reading() as txn:
        walk = {
            "PATIENT": _patients,
            "STUDY": _studies,
            "SERIES": _series,
            "IMAGE": _images,
        }[query.level]
        for record in walk(index, txn, query):
            if all(test(record) for test in tests):
                yield _answer(query, record)


def _answer(query: Query, record: dict[str, Any]) -> dict[str, Any]:
    known = KEYS[query.level]
    answer: dict[str, Any] = {"_tiers": record.get("tiers", {})}
    for keyword in query.keys:
        if keyword in known:
            answer[keyword] = _text(record.get(known[keyword][0], ""))
        elif keyword in STUDY_KEYS and "_study" in record:
            answer[keyword] = _text(record["_study"].get(STUDY_KEYS[keyword][0], ""))
        elif keyword in SERIES_KEYS and "_series" in record:
            answer[keyword] = _text(record["_series"].get(SERIES_KEYS[keyword][0], ""))
        else:
            answer[keyword] = ""
    answer[UNIQUE[query.level]] = _text(record.get(known[UNIQUE[query.level]][0], ""))
    return answer


def _text(value: Any) -> str:
    if isinstance(value, dict):  # ModalitiesInStudy: {"CT": 12, "SR": 1}
        return "\\".join(sorted(value))
    return str(value)


# ---- walking the catalog ------------------------------------------------------------


def _patients(index: Index, txn: lmdb.Transaction, query: Query) -> Iterator[dict[str, Any]]:
    catalog = index.catalog
    wanted = query.keys.get("PatientID", "")
    if wanted and not _has_wildcard(wanted):
        record = catalog.patient(txn, wanted)
        if record is not None:
            yield {**record, "patient_id": wanted}
        return
    for patient_id, record in catalog.all_patients(txn):
        yield {**record, "patient_id": patient_id}


def _studies(index: Index, txn: lmdb.Transaction, query: Query) -> Iterator[dict[str, Any]]:
    catalog = index.catalog
    for uid in _study_candidates(index, txn, query.keys):
        record = catalog.study(txn, uid)
        if record is not None:
            yield {**record, "uid": uid}


def _study_candidates(index: Index, txn: lmdb.Transaction, keys: dict[str, str]) -> Iterator[str]:
    """Study UIDs to test, from the most selective key the query has."""
    catalog = index.catalog
    uids = keys.get("StudyInstanceUID", "")
    if uids and not _has_wildcard(uids):
        yield from dict.fromkeys(uids.split("\\"))
        return
    for keyword, field_name in (("PatientID", b"pid"), ("AccessionNumber", b"acc")):
        value = keys.get(keyword, "")
        if value and not _has_wildcard(value):
            yield from catalog.studies_by(txn, field_name, value)
            return
    date = keys.get("StudyDate", "")
    if date and not _has_wildcard(date):
        low, dash, high = date.partition("-")
        yield from catalog.studies_by(txn, b"date", low, (high or "99999999") if dash else None)
        return
    name = keys.get("PatientName", "").upper()
    prefix = re.split(r"[*?]", name, maxsplit=1)[0]
    if prefix and "=" not in name:
        yield from catalog.studies_by(txn, b"name", prefix, None if prefix == name else "")
        return
    modality = keys.get("ModalitiesInStudy", "")
    if modality and "\\" not in modality and not _has_wildcard(modality):
        yield from catalog.studies_by(txn, b"mod", modality)
        return
    yield from catalog.all_study_uids(txn)


def _parent(keys: dict[str, str], keyword: str, level: str) -> list[str]:
    value = keys.get(keyword, "")
    if not value or _has_wildcard(value):
        raise QueryError(
            f"a {level}-level query needs {keyword} (hierarchical model: relational "
            "queries were not negotiated)"
        )
    return list(dict.fromkeys(value.split("\\")))


def _study_uids(index: Index, txn: lmdb.Transaction, query: Query) -> Iterator[str]:
    """The studies whose children a SERIES or IMAGE query walks."""
    value = query.keys.get("StudyInstanceUID", "")
    if not query.relational or (value and not _has_wildcard(value)):
        yield from _parent(query.keys, "StudyInstanceUID", query.level)
        return
    yield from _study_candidates(index, txn, query.keys)


def _series(index: Index, txn: lmdb.Transaction, query: Query) -> Iterator[dict[str, Any]]:
    catalog = index.catalog
    for study_uid in _study_uids(index, txn, query):
        study = catalog.study(txn, study_uid)
        if study is None:
            continue
        for uid in catalog.children(txn, catalog.series_of, study_uid):
            record = catalog.series_record(txn, uid)
            if record is not None:
                yield {**record, "uid": uid, "_study": study}


def _images(index: Index, txn: lmdb.Transaction, query: Query) -> Iterator[dict[str, Any]]:
    catalog = index.catalog
    value = query.keys.get("SeriesInstanceUID", "")
    if query.relational and (not value or _has_wildcard(value)):
        # Series keys (Modality ...) narrow the walk; study keys are tested per image.
        series_query = Query("SERIES", query.keys, relational=True)
        tests = _tests(series_query)
        series = [
            (record["uid"], record)
            for record in _series(index, txn, series_query)
            if all(test(record) for test in tests)
        ]
    else:
        series = []
        for uid in _parent(query.keys, "SeriesInstanceUID", "IMAGE"):
            record = catalog.series_record(txn, uid)
            if record is not None:
                study = catalog.study(txn, record["study_instance_uid"]) or {}
                series.append((uid, {**record, "_study": study}))
    for series_uid, record in series:
        for uid in catalog.children(txn, catalog.instances_of, series_uid):
            instance: Instance | None = index.get_in(txn, uid)
            if instance is not None:
                yield {
                    **vars(instance),
                    "tiers": {instance.tier: 1},
                    "_study": record["_study"],
                    "_series": record,
                }


def instance_uids(index: Index, query: Query) -> Iterator[str]:
    """Every SOP Instance UID under what `query` matches (what a retrieve sends),
    from keys alone, in study, series, instance order."""
    catalog = index.catalog
    unique = UNIQUE[query.level]
    with index.reading() as txn:
        for answer in search(index, query):
            uid = answer[unique]
            if query.level == "IMAGE":
                yield uid
                continue
            studies = (
                list(catalog.studies_by(txn, b"pid", uid)) if query.level == "PATIENT" else [uid]
            )
            series = (
                [uid]
                if query.level == "SERIES"
                else [
                    s for study in studies for s in catalog.children(txn, catalog.series_of, study)
                ]
            )
            for one in series:
                yield from catalog.children(txn, catalog.instances_of, one)


def instances(index: Index, query: Query) -> Iterator[Instance]:
    """The records of every instance under what `query` matches (instance_uids'
    order), read in one transaction; an instance removed meanwhile is skipped."""
    with index.reading() as txn:
        for uid in instance_uids(index, query):
            record: Instance | None = index.get_in(txn, uid)
            if record is not None:
                yield record


# ---- matching (PS3.4 C.2.2.2) ----------------------------------------------------------


def _tests(query: Query) -> list[Callable[[dict[str, Any]], bool]]:
    known = KEYS[query.level]
    tests = []
    for keyword, wanted in query.keys.items():
        if wanted in ("", "*"):
            continue  # universal matching
        if keyword in known:
            field_name, kind = known[keyword]
            tests.append(_test(field_name, kind, wanted, inherited=False))
        elif keyword in STUDY_KEYS and query.level in ("SERIES", "IMAGE"):
            field_name, kind = STUDY_KEYS[keyword]
            tests.append(_test(field_name, kind, wanted, inherited=True))
    return tests


def _test(field_name: str, kind: str, wanted: str, inherited: bool) -> Callable[[Any], bool]:
    match = matcher(kind, wanted)

    def test(record: dict[str, Any]) -> bool:
        source = record.get("_study", {}) if inherited else record
        value = source.get(field_name, "")
        if kind == "list":
            return any(match(v) for v in value)
        return match(_text(value))

    return test


def matcher(kind: str, wanted: str) -> Callable[[str], bool]:
    if kind == "count":
        return lambda value: value == wanted.strip()
    if kind == "uid":
        allowed = set(wanted.split("\\"))
        return lambda value: value in allowed
    if kind in ("date", "time") and "-" in wanted:
        low, _, high = wanted.partition("-")
        return lambda value: (
            bool(value) and (not low or value >= low) and (not high or value[: len(high)] <= high)
        )
    if kind == "name":
        pattern = _wildcards(wanted, ignore_case=True)
        return lambda value: any(pattern.fullmatch(part) for part in (value, *value.split("=")))
    if kind in ("text", "list", "date", "time") and "\\" in wanted:
        options = [_wildcards(w, ignore_case=False) for w in wanted.split("\\")]
        return lambda value: any(p.fullmatch(value) for p in options)
    pattern = _wildcards(wanted, ignore_case=False)
    return lambda value: pattern.fullmatch(value) is not None


@cache
def _wildcards(wanted: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in wanted
    )
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def availability(tiers: dict[str, int], recallable: bool) -> str:
    """Instance Availability (0008,0056) of what `tiers` counts: ONLINE when every
    instance is hot, NEARLINE when each is warm or hot or (with a recall source)
    at the center, UNAVAILABLE otherwise."""
    held = {tier: n for tier, n in tiers.items() if n > 0}
    if set(held) <= {"hot"}:
        return "ONLINE"
    if "central" not in held or recallable:
        return "NEARLINE"
    return "UNAVAILABLE"
