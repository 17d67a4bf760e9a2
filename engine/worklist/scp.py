"""The DIMSE side of the worklist proxy: a Modality Worklist C-FIND identifier read
from its spool, and answers encoded in the presentation context's syntax. The
association (engine.dicom.association) sends them; engine.worklist.mirror finds them."""

from __future__ import annotations

import warnings

from pydicom import Dataset

from engine.dicom import dimse
from engine.worklist.names import in_pinyin

MAX_IDENTIFIER = 1 << 20
PENDING, SUCCESS, UNABLE_TO_PROCESS = 0xFF00, 0x0000, 0xC000


def read_identifier(data: bytes, transfer_syntax: str) -> Dataset:
    """ValueError when it cannot be read."""
    try:
        identifier = dimse.read(data, transfer_syntax)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _element in identifier:  # values are decoded lazily: fail here, not later
                pass
    except (ValueError, TypeError, EOFError, KeyError, LookupError, NotImplementedError) as exc:
        raise ValueError(f"unreadable worklist identifier: {exc}") from exc
    return identifier


def encode(answer: Dataset, transfer_syntax: str, pinyin: bool = False) -> bytes:
    """`pinyin`: for a calling AE with `worklist_names = "pinyin"` (engine.worklist.names)."""
    return dimse.write(in_pinyin(answer) if pinyin else answer, transfer_syntax)
