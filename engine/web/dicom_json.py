"""The DICOM JSON Model (PS3.18 F.2): an answer's keyword -> text values as the
objects QIDO-RS returns, and stored headers as WADO-RS metadata.

Encoders are made once per keyword (tag, VR, value conversion) and cached: a study
list of 5,000 answers converts 60,000 values, so the per-value work is a dict
lookup and one call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

# Not in every dictionary's sense of "an attribute of the object", but in the answer.
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_NUMBERS: dict[str, Callable[[str], Any]] = {
    "IS": int,
    "DS": float,
    "US": int,
    "UL": int,
    "SS": int,
    "SL": int,
    "UV": int,
    "SV": int,
    "FL": float,
    "FD": float,
}


def tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


def keyword_of(name: str) -> str | None:
    """A QIDO attribute named by keyword (PatientID) or tag (00100020): its keyword."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


@cache
def _plan(keyword: str) -> tuple[str, str, Callable[[str], Any] | None]:
    """(tag, VR, how one value is converted; None: kept as text) for a keyword."""
    vr = dictionary_VR(keyword)
    if vr == "PN":
        return tag_hex(keyword), vr, _person_name
    return tag_hex(keyword), vr, _NUMBERS.get(vr)


def _person_name(value: str) -> dict[str, str]:
    groups = value.split("=")
    return {name: g for name, g in zip(_PN_GROUPS, groups, strict=False) if g}


def answers_json(answers: list[dict[str, str]]) -> list[dict[str, Any]]:
    """QIDO answers (keyword -> text, `_`-prefixed keys skipped) as DICOM JSON. The
    answers of one search share their keywords: tags, VRs and converters are looked
    up once, in tag order, and each value costs a split and a dict."""
    if not answers:
        return []
    keywords = [k for k in answers[0] if not k.startswith("_")]
    plan = sorted(((*_plan(k), k, {"vr": _plan(k)[1]}) for k in keywords), key=lambda p: p[0])
    out = []
    for answer in answers:
        item: dict[str, Any] = {}
        for tag, vr, convert, keyword, empty in plan:
            text = answer.get(keyword, "")
            if not text:
                item[tag] = empty  # shared: the list is serialized, never changed
            elif convert is None:
                item[tag] = {"vr": vr, "Value": text.split("\\")}
            else:
                item[tag] = {"vr": vr, "Value": [_converted(convert, v) for v in text.split("\\")]}
        out.append(item)
    return out


def _converted(convert: Callable[[str], Any], value: str) -> Any:
    try:
        return convert(value)
    except ValueError:
        return value  # a malformed number is shown as sent, not dropped


def metadata(path: Path | BytesIO, bulk_uri: str, compressed: bool) -> dict[str, Any]:
    """A stored object's header as DICOM JSON. Pixel Data is never read: it is named
    by a BulkDataURI under `bulk_uri`, and so is any other value over 1 KiB."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds: Dataset = dcmread(path, defer_size=_BULK, stop_before_pixels=True)
        out = ds.to_json_dict(
            bulk_data_threshold=_BULK,
            bulk_data_element_handler=lambda element: f"{bulk_uri}/{element.tag:08X}",
        )
    for tag, attribute in out.items():
        if len(attribute.get("InlineBinary", "")) > _BULK * 4 // 3 + 4:
            out[tag] = {"vr": attribute["vr"], "BulkDataURI": f"{bulk_uri}/{tag}"}
    if "Rows" in ds:
        wide = int(ds.get("BitsAllocated", 8) or 8) > 8
        vr = "OW" if wide and not compressed else "OB"
        out["7FE00010"] = {"vr": vr, "BulkDataURI": f"{bulk_uri}/7FE00010"}
    return out


_BULK = 1024
