"""C-FIND SCP, Patient Root and Study Root (PS3.4 C.4.1): from an identifier to
pending answers, each saying where the copy is.

The query itself is storage.query's (keys, never a scan of objects). Here: reading
the identifier, mapping failures to the statuses PS3.4 names (0xA900 identifier
does not match, 0xC000 cannot process), encoding each answer in the character set
the SCU asked in (or UTF-8 when a value does not fit it), with Retrieve AE Title and
Instance Availability. Answers are produced a page at a time in a thread, so a
query that matches 50,000 studies holds one page in memory, and the association
sends them as fast as the SCU reads.
"""

from __future__ import annotations

import logging
import re
import struct
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from engine.dicom import dimse
from engine.dicom.dimse import EXPLICIT_BE, IMPLICIT_LE
from engine.dicom.negotiation import STUDY_ROOT
from storage.index import Index
from storage.query import LEVELS, UNIQUE, Query, QueryError, availability, search

log = logging.getLogger(__name__)

PENDING, SUCCESS, CANCELLED = 0xFF00, 0x0000, 0xFE00
IDENTIFIER_DOES_NOT_MATCH, UNABLE_TO_PROCESS = 0xA900, 0xC000
PAGE = 200  # answers produced per hop to the thread
MAX_IDENTIFIER = 1 << 20
_DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")
_TIME_RANGE = re.compile(r"^(\d{2,6}(\.\d{1,6})?)?-?(\d{2,6}(\.\d{1,6})?)?$")


class FindFailure(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass(frozen=True)
class Request:
    query: Query
    identifier: Dataset  # as received: the keys and their order to answer with
    charset: list[str]  # Specific Character Set terms ([] : the default repertoire)
    root: str  # the SOP class (negotiation.QR_FIND, QR_RETRIEVE, QR_GET)


def parse(data: bytes, transfer_syntax: str, sop_class: str, relational: bool = False) -> Request:
    """The identifier of a C-FIND-RQ (or C-MOVE-RQ); FindFailure with the status to
    answer. `relational`: negotiated for this SOP class (negotiation.relational)."""
    try:
        identifier = dimse.read(data, transfer_syntax)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keys = _keys(identifier)
    except (ValueError, TypeError, EOFError, KeyError, LookupError, NotImplementedError) as exc:
        raise FindFailure(UNABLE_TO_PROCESS, f"unreadable identifier: {exc}") from exc
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise FindFailure(
            IDENTIFIER_DOES_NOT_MATCH, f"QueryRetrieveLevel {level!r} is not one of {LEVELS}"
        )
    if sop_class in STUDY_ROOT and level == "PATIENT":
        raise FindFailure(IDENTIFIER_DOES_NOT_MATCH, "Study Root has no PATIENT level")
    for keyword, value in keys.items():
        try:
            check_value(keyword, value)
        except ValueError as exc:
            raise FindFailure(IDENTIFIER_DOES_NOT_MATCH, str(exc)) from exc
    raw = identifier.get("SpecificCharacterSet")
    charset = [] if not raw else [str(raw)] if isinstance(raw, str) else [str(t) for t in raw]
    keys.pop("QueryRetrieveLevel", None)
    keys.pop("SpecificCharacterSet", None)
    return Request(Query(level, keys, relational), identifier, charset, sop_class)


def _keys(identifier: Dataset) -> dict[str, str]:
    keys: dict[str, str] = {}
    for element in identifier:
        if element.tag.group in (0x0000, 0x0002) or not element.keyword:
            continue
        value = element.value
        if isinstance(value, Sequence):
            keys[element.keyword] = ""  # sequence matching: returned, not matched
        elif isinstance(value, MultiValue):
            keys[element.keyword] = "\\".join(str(v) for v in value)
        elif value is None:
            keys[element.keyword] = ""
        else:
            keys[element.keyword] = str(value).strip()
    return keys


def check_value(keyword: str, value: str) -> None:
    """ValueError naming the key when a date or time key is no value or range."""
    if not value or "*" in value or "?" in value:
        return
    try:
        vr = dictionary_VR(keyword)
    except KeyError:
        return
    pattern = {"DA": _DATE_RANGE, "TM": _TIME_RANGE}.get(vr)
    for single in value.split("\\"):
        if pattern is not None and (single == "-" or not pattern.match(single)):
            raise ValueError(f"{keyword} {single!r} is not a {vr} value or range (PS3.4 C.2.2.2.5)")


def answers(index: Index, query: Query) -> Generator[dict[str, Any]]:
    """storage.query's answers, with its refusal as the status PS3.4 names."""
    try:
        yield from search(index, query)
    except QueryError as exc:
        raise FindFailure(IDENTIFIER_DOES_NOT_MATCH, str(exc)) from exc


# Explicit VR elements with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})  # in the character set
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
_QUERY_LEVEL, _CHARSET, _RETRIEVE_AE, _AVAILABILITY = 0x00080052, 0x00080005, 0x00080054, 0x00080056


class Encoder:
    """A request's answers as identifiers, the requested keys in tag order, values as
    stored (valid or not for their VR). Little endian with a single character set is
    written here (tens of microseconds an answer); big endian and ISO 2022 code
    extensions go through pydicom (`encode`)."""

    def __init__(
        self, request: Request, transfer_syntax: str, retrieve_ae: str, recallable: bool
    ) -> None:
        self._request = request
        self._syntax = transfer_syntax
        self._ae = retrieve_ae
        self._recallable = recallable
        self._implicit = transfer_syntax == IMPLICIT_LE
        asked = request.charset[0] if request.charset else ""
        self._pydicom = transfer_syntax == EXPLICIT_BE or len(request.charset) > 1
        try:
            self._codec = convert_encodings([asked])[0] if asked else "ascii"
        except LookupError:
            self._pydicom = True
            self._codec = "ascii"
        plan: dict[int, tuple[str, str]] = {}
        for element in request.identifier:
            keyword = element.keyword
            if keyword and element.tag not in (_QUERY_LEVEL, _CHARSET) and element.tag.group > 2:
                plan[int(element.tag)] = (element.VR, keyword)
        unique = UNIQUE[request.query.level]  # always in the answer (PS3.4 C.4.1.2.3.1)
        plan.setdefault(int(tag_for_keyword(unique) or 0), (dictionary_VR(unique), unique))
        plan[_QUERY_LEVEL] = ("CS", "")
        plan[_RETRIEVE_AE] = ("AE", "")
        plan[_AVAILABILITY] = ("CS", "")
        self._plan = sorted(plan.items())

    def __call__(self, answer: dict[str, Any]) -> bytes:
        if self._pydicom:
            return encode(self._request, answer, self._syntax, self._ae, self._recallable)
        asked = self._request.charset[0] if self._request.charset else ""
        try:
            return self._write(answer, self._codec, asked)
        except UnicodeEncodeError:  # does not fit what the SCU asked in: UTF-8
            return self._write(answer, "utf-8", "ISO_IR 192")

    def _write(self, answer: dict[str, Any], codec: str, charset: str) -> bytes:
        out = bytearray()
        if charset:
            self._element(out, _CHARSET, "CS", charset.encode())
        fixed = {
            _QUERY_LEVEL: self._request.query.level,
            _RETRIEVE_AE: self._ae,
            _AVAILABILITY: availability(answer.get("_tiers", {}), self._recallable),
        }
        for tag, (vr, keyword) in self._plan:
            text = fixed.get(tag) or str(answer.get(keyword, ""))
            if vr in _TEXT_VRS:
                raw = text.encode(codec)
            elif vr in _ASCII_VRS:
                raw = text.encode("ascii", "replace")
            else:
                raw = b""  # binary VRs and sequences: returned empty
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
            self._element(out, tag, vr, raw)
        return bytes(out)

    def _element(self, out: bytearray, tag: int, vr: str, raw: bytes) -> None:
        group_element = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        if self._implicit:
            out += group_element + struct.pack("<I", len(raw)) + raw
        elif vr in _LONG_VRS:
            out += group_element + vr.encode() + b"\0\0" + struct.pack("<I", len(raw)) + raw
        else:
            out += group_element + vr.encode() + struct.pack("<H", len(raw)) + raw


def encode(
    request: Request,
    answer: dict[str, Any],
    transfer_syntax: str,
    retrieve_ae: str,
    recallable: bool,
) -> bytes:
    """One pending answer's identifier, the requested keys in the SCU's order. Values
    go back as stored, valid or not for their VR: pydicom's warnings are not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = Dataset()
        ds.QueryRetrieveLevel = request.query.level
        for element in request.identifier:
            keyword = element.keyword
            if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            if isinstance(element.value, Sequence):
                ds.add(DataElement(element.tag, "SQ", Sequence()))
                continue
            value = _value(element.VR, answer.get(keyword, ""))
            ds.add(DataElement(element.tag, element.VR, value))
        unique = UNIQUE[request.query.level]  # always in the answer (PS3.4 C.4.1.2.3.1)
        if unique not in ds:
            setattr(ds, unique, answer[unique])
        ds.RetrieveAETitle = retrieve_ae
        ds.InstanceAvailability = availability(answer.get("_tiers", {}), recallable)
        ds.SpecificCharacterSet = _charset(request.charset, ds)
    return dimse.write(ds, transfer_syntax)


def _value(vr: str, text: str) -> Any:
    if not text:
        return None
    if vr == "PN":
        return PersonName(text)
    if vr in ("US", "UL", "SS", "SL"):
        return int(text)
    if "\\" in text:
        return text.split("\\")
    return text


def _charset(asked: list[str], ds: Dataset) -> list[str] | str:
    """The SCU's character set when every value fits it, else UTF-8 (PS3.4 C.4.1.1.3.1
    allows the SCP another one; ISO_IR 192 holds every name)."""
    texts = [str(e.value) for e in ds if e.VR in ("PN", "LO", "SH", "LT", "ST", "UT")]
    if all(text.isascii() for text in texts):
        return asked or ""
    try:
        encodings = convert_encodings(asked or ["ISO_IR 6"])
        if len(encodings) == 1:
            for text in texts:
                text.encode(encodings[0])
            return asked
    except (LookupError, UnicodeEncodeError):
        pass  # not representable in what was asked for
    return "ISO_IR 192"


def audited_keys(request: Request, patient_identifiers: bool) -> dict[str, str]:
    """The keys a query matches on (return keys say nothing), for its audit line;
    the patient's only with `audit.patient_identifiers`."""
    return {
        k: v
        for k, v in request.query.keys.items()
        if v and (patient_identifiers or not k.startswith("Patient"))
    }
