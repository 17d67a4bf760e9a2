"""Test images: pydicom-data and pydicom's own test files, and generated series."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import blake3
import pydicom
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import generate_uid
from pynetdicom.dsutils import split_dataset

from engine.dicom.negotiation import TRANSFER_SYNTAXES, storage_sop_classes


@dataclass(frozen=True)
class SourceFile:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int
    # What pynetdicom puts in the C-STORE command when it sends the file as-is.
    meta_sop_instance_uid: str

    @property
    def dataset_bytes(self) -> bytes:
        return self.path.read_bytes()[self.dataset_offset :]

    @property
    def blake3(self) -> str:
        return blake3.blake3(self.dataset_bytes).hexdigest()


def describe(path: Path) -> SourceFile | str:
    """A sendable file, or why a storage SCU cannot send it."""
    try:
        with warnings.catch_warnings():
            # pydicom's test files are odd on purpose; reading them warns.
            warnings.simplefilter("ignore")
            meta, offset = split_dataset(path)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, ValueError, OSError, EOFError, KeyError) as exc:
        return f"unreadable: {exc}"
    ts = str(getattr(meta, "TransferSyntaxUID", ""))
    sop_class = str(ds.get("SOPClassUID", ""))
    sop_instance = str(ds.get("SOPInstanceUID", ""))
    if not ts or not sop_class or not sop_instance:
        return "no transfer syntax, SOP class or SOP instance"
    if sop_class not in storage_sop_classes():
        return f"SOP class {sop_class} is not a storage class"
    if ts not in TRANSFER_SYNTAXES:
        return f"transfer syntax {ts} is not one a storage SCP accepts here"
    meta_uid = str(getattr(meta, "MediaStorageSOPInstanceUID", "") or sop_instance)
    return SourceFile(path, sop_class, sop_instance, ts, offset, meta_uid)


@cache
def public_corpus() -> tuple[list[SourceFile], dict[Path, str]]:
    """Every file of pydicom-data and pydicom's test files, split into sendable
    files and the others with the reason."""
    paths = sorted({Path(p) for p in get_testdata_files("**/*") if p.endswith(".dcm")})
    sendable, excluded = [], {}
    for path in paths:
        found = describe(path)
        if isinstance(found, SourceFile):
            sendable.append(found)
        else:
            excluded[path] = found
    return sendable, excluded


def make_series(
    folder: Path, count: int, template: str = "CT_small.dcm", **attributes: str
) -> list[SourceFile]:
    """`count` distinct objects (fresh UIDs) from a real image, in one study, with
    `attributes` (keyword=value) set on each."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file(template))
    study, series = generate_uid(), generate_uid()
    made = []
    for i in range(count):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        found = describe(path)
        assert isinstance(found, SourceFile), found
        made.append(found)
    return made


def make_large(path: Path, megabytes: int) -> SourceFile:
    """One big uncompressed object (a multi-frame secondary capture)."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    frame = 128 * 128 * 2
    frames = max(1, megabytes * 2**20 // frame)
    ds = copy.deepcopy(base)
    ds.Rows = ds.Columns = 128
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(range(256)) * (frame * frames // 256)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    found = describe(path)
    assert isinstance(found, SourceFile), found
    return found
