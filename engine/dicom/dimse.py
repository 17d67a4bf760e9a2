"""DIMSE response command sets that carry more than a status (PS3.7 9.3, 9.1.2):
Query/Retrieve answers with an identifier and sub-operation counts. Encoded with
pydicom: a few per query, never per image byte (C-STORE's are core_rs's)."""

from __future__ import annotations

import struct
from typing import Any

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

NO_DATASET, DATASET = 0x0101, 0x0000


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
    `counts` are keywords such as NumberOfRemainingSuboperations."""
    ds = Dataset()
    ds.AffectedSOPClassUID = sop_class
    ds.CommandField = command_field
    ds.MessageIDBeingRespondedTo = message_id
    ds.CommandDataSetType = DATASET if dataset else NO_DATASET
    ds.Status = status
    if comment:
        ds.ErrorComment = comment[:64]  # LO
    for keyword, value in (counts or {}).items():
        setattr(ds, keyword, value)
    return _with_group_length(ds)


def _with_group_length(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = True, True
    write_dataset(buffer, ds)
    body = bytes(buffer.getvalue())
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def as_dict(counts: Any) -> dict[str, int]:
    """Sub-operation counts (engine.dicom.move) as response keywords."""
    return {
        "NumberOfRemainingSuboperations": counts.remaining,
        "NumberOfCompletedSuboperations": counts.completed,
        "NumberOfFailedSuboperations": counts.failed,
        "NumberOfWarningSuboperations": counts.warning,
    }
