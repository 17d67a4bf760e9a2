"""DIMSE response command sets that carry more than a status (PS3.7 9.3, 9.1.2):
Query/Retrieve answers with an identifier and sub-operation counts (C-STORE's are
core_rs's)."""

from __future__ import annotations

import struct
import warnings
from io import BytesIO
from typing import Any

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

IMPLICIT_LE, EXPLICIT_BE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"

NO_DATASET, DATASET = 0x0101, 0x0000
_COUNTS = {
    "NumberOfRemainingSuboperations": 0x1020,
    "NumberOfCompletedSuboperations": 0x1021,
    "NumberOfFailedSuboperations": 0x1022,
    "NumberOfWarningSuboperations": 0x1023,
}


def response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class: str,
    *,
    dataset: bool = False,
    comment: str = "",
    counts: dict[str, int] | None = None,
) -> bytes:
    """A response command set, implicit VR little endian with its group length;
    `counts` are keywords such as NumberOfRemainingSuboperations. Written by hand:
    a retrieve sends one per sub-operation (pydicom took ~150 us each)."""
    uid = sop_class.encode()
    elements = [
        (0x0002, uid + b"\0" * (len(uid) % 2)),
        (0x0100, struct.pack("<H", command_field)),
        (0x0120, struct.pack("<H", message_id)),
        (0x0800, struct.pack("<H", DATASET if dataset else NO_DATASET)),
        (0x0900, struct.pack("<H", status)),
    ]
    if comment:
        text = comment[:64].encode("ascii", "replace")  # LO
        elements.append((0x0902, text + b" " * (len(text) % 2)))
    for keyword, value in (counts or {}).items():  # US: past 65,535 it says 65,535
        elements.append((_COUNTS[keyword], struct.pack("<H", min(value, 0xFFFF))))
    body = b"".join(
        struct.pack("<HHI", 0x0000, tag, len(value)) + value for tag, value in sorted(elements)
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def as_dict(counts: Any) -> dict[str, int]:
    """Sub-operation counts (engine.dicom.move) as response keywords."""
    return {
        "NumberOfRemainingSuboperations": counts.remaining,
        "NumberOfCompletedSuboperations": counts.completed,
        "NumberOfFailedSuboperations": counts.failed,
        "NumberOfWarningSuboperations": counts.warning,
    }


def read(data: bytes, transfer_syntax: str) -> Dataset:
    """A request's dataset (identifier, attribute list) from its bytes. pydicom reads
    values lazily: a malformed one raises when it is used, so callers catch ValueError,
    TypeError, EOFError, KeyError, LookupError and NotImplementedError there too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dataset(
            BytesIO(data),
            is_implicit_VR=transfer_syntax == IMPLICIT_LE,
            is_little_endian=transfer_syntax != EXPLICIT_BE,
        )


def write(ds: Dataset, transfer_syntax: str) -> bytes:
    """An answer's dataset (identifier, worklist item) in the context's syntax, values
    as they are, valid or not for their VR: pydicom's warnings are not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = DicomBytesIO()
        buffer.is_implicit_VR = transfer_syntax == IMPLICIT_LE
        buffer.is_little_endian = transfer_syntax != EXPLICIT_BE
        write_dataset(buffer, ds)
    return bytes(buffer.getvalue())
