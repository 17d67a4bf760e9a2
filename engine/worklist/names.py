"""Patient names for devices that cannot show Chinese characters: the worklist
answer's PatientName in pinyin (pypinyin), in the alphabetic group only, and the
answer re-declared as ISO_IR 100 (Latin-1), which such devices do show.

A name that already has a Latin alphabetic group (`Wang^Fang=王^芳`) keeps that group;
one written only in Chinese characters (`王^芳`) is transliterated component by
component, in capitals as registration desks write them (`WANG^FANG`)."""

from __future__ import annotations

import re

from pydicom import Dataset

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def pinyin_name(name: str) -> str:
    groups = name.split("=")
    alphabetic = groups[0]
    if alphabetic and not _HAN.search(alphabetic):
        return alphabetic
    source = alphabetic or next((g for g in groups[1:] if g), "")
    # pypinyin's dictionaries take ~53 MB in every process that imports it, a third of
    # the engine's memory: loaded at the first name that needs them (in the encoding
    # thread, ~0.2 s), not at start-up, since most sites never ask for pinyin.
    from pypinyin import Style, lazy_pinyin

    return "^".join(
        "".join(lazy_pinyin(component, style=Style.NORMAL)).upper()
        for component in source.split("^")
    )


def in_pinyin(answer: Dataset) -> Dataset:
    """`answer` with PatientName in pinyin and the Latin-1 character set; other text
    that Latin-1 cannot hold goes out as '?' (pydicom's replacement on writing)."""
    if "PatientName" in answer and answer.PatientName:
        answer.PatientName = pinyin_name(str(answer.PatientName))
    answer.SpecificCharacterSet = "ISO_IR 100"
    return answer
