"""Benchmark corpora from pydicom-data's real images, with fresh UIDs, cached.

The quick mix is CT-heavy like a real morning: 0.5 MB CT slices (real CT pixels
from eCT_Supplemental, one frame each), 2 MB MR images and 7 MB CR images.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

CACHE = Path(__file__).parent / ".corpus"


@dataclass(frozen=True)
class Corpus:
    name: str
    files: list[Path]

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def _read(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not in pydicom-data: pip install pydicom-data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _ct_slice() -> Dataset:
    """A 512x512 16-bit CT Image Storage slice with real CT pixels."""
    enhanced = _read("eCT_Supplemental.dcm")
    ds = copy.deepcopy(_read("CT_small.dcm"))
    frame = 512 * 512 * 2
    ds.Rows = ds.Columns = 512
    ds.PixelData = enhanced.PixelData[:frame]
    return ds


def _variants(template: Dataset, count: int, folder: Path, modality: str) -> list[Path]:
    study = generate_uid()
    series = generate_uid()
    paths = []
    for i in range(count):
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.Modality = modality
        path = folder / f"{modality}-{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def build(ct: int, mr: int, cr: int) -> Corpus:
    name = f"ct{ct}-mr{mr}-cr{cr}"
    folder = CACHE / name
    manifest = folder / "manifest.json"
    if manifest.exists():
        files = [folder / f for f in json.loads(manifest.read_text())]
        if all(f.exists() for f in files):
            return Corpus(name, files)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"building corpus {name} in {folder} ...", flush=True)
    files = (
        _variants(_ct_slice(), ct, folder, "CT")
        + _variants(_read("MR2_UNCR.dcm"), mr, folder, "MR")
        + _variants(_read("RG1_UNCR.dcm"), cr, folder, "CR")
    )
    manifest.write_text(json.dumps([f.name for f in files]))
    return Corpus(name, files)
