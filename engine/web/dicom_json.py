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
Encoder = Callable[[str], tuple[str, dict[str, Any]]]


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
def encoder(keyword: str) -> Encoder:
    """text -> (tag, JSON attribute) for one keyword; multiple values split on '\\'."""
    tag = tag_hex(keyword)
    vr = dictionary_VR(keyword)
    convert = _NUMBERS.get(vr)

    def one(value: str) -> Any:
        if vr == "PN":
            groups = value.split("=")
            return {name: g for name, g in zip(_PN_GROUPS, groups, strict=False) if g}
        if convert is not None:
            try:
                return convert(value)
            except ValueError:
                return value
        return value

    def encode(text: str) -> tuple[str, dict[str, Any]]:
        if not text:
            return tag, {"vr": vr}
        return tag, {"vr": vr, "Value": [one(v) for v in text.split("\\")]}

    return encode


def answer_json(answer: dict[str, str], extra: dict[str, str]) -> dict[str, Any]:
    """One QIDO answer (keyword -> text, `_`-prefixed keys skipped) as DICOM JSON."""
    out: dict[str, Any] = {}
    for keyword, value in (*answer.items(), *extra.items()):
        if keyword.startswith("_"):
            continue
        tag, attribute = encoder(keyword)(value)
        out[tag] = attribute
    return dict(sorted(out.items()))


def metadata(path: Path, bulk_uri: str, compressed: bool) -> dict[str, Any]:
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
