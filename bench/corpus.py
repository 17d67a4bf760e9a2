"""Benchmark corpora from pydicom-data's real images, with fresh UIDs, cached.

A corpus is a modality mix (`Mix`): 0.5 MB CT slices (real CT pixels from
eCT_Supplemental), 2 MB MR, 7 MB CR, 6 MB DX, 0.9 MB RGB US, 27 MB and 70 MB MG
(real CR pixels tiled to mammography matrices; pydicom-data has no MG) and ~210 MB
multi-frame XA (400 real CT frames). Each modality is one study. The manifest keeps,
per object, where its dataset starts and where its UIDs are, so the load generator
sends dataset bytes straight from disk and can give every send fresh UIDs (soak,
and 16 distinct 200 MB objects from one file) by patching them in flight.

UIDs have a fixed length and end in "1" + 8 digits: the load generator overwrites
those 8 digits with a counter, which keeps the element lengths and the dataset valid.
"""

from __future__ import annotations

import copy
import json
import random
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID

CACHE = Path(__file__).parent / ".corpus"
_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root
SUFFIX = 8  # digits at the end of every UID the load generator may overwrite
UID_LENGTH = 56  # every UID new_uid() makes: even, so never padded
_XA_CLASS = "1.2.840.10008.5.1.4.1.1.12.1"  # X-Ray Angiographic Image Storage
_MG_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image - For Presentation
_DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image - For Presentation


@dataclass(frozen=True)
class Mix:
    """How many objects of each kind; each kind is one study."""

    ct: int = 0  # 0.5 MB slices
    mr: int = 0  # 2 MB
    cr: int = 0  # 7 MB
    dx: int = 0  # 6 MB
    us: int = 0  # 0.9 MB RGB
    mg: int = 0  # 27 MB (4096 x 3328), every fourth one 70 MB (7000 x 5000)
    xa: int = 0  # ~210 MB multi-frame (400 frames of 512 x 512)

    @property
    def name(self) -> str:
        return "-".join(f"{f.name}{getattr(self, f.name)}" for f in fields(self))


QUICK = Mix(ct=160, mr=10, cr=4, dx=2, us=10, mg=1)  # ~170 MB
FULL = Mix(ct=480, mr=30, cr=12, dx=6, us=30, mg=4)  # ~600 MB
# Issue 18's second mix: most bytes in 5-70 MB objects (CR, DX, MG), a few CT and MR.
LARGE_QUICK = Mix(ct=20, mr=5, cr=8, dx=8, mg=4)  # ~275 MB, 93% in 5-70 MB objects
LARGE_FULL = Mix(ct=60, mr=15, cr=24, dx=24, mg=8)  # ~675 MB, 91% in 5-70 MB objects
BIG = Mix(xa=1)  # the one >= 200 MB object, for the memory scenario


@dataclass(frozen=True)
class Item:
    """One object: where its dataset is and where its UIDs are (file offsets)."""

    path: Path
    modality: str
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    offset: int
    length: int
    uid_offsets: tuple[int, int, int]  # StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID

    @property
    def size(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Corpus:
    name: str
    items: list[Item]

    @property
    def files(self) -> list[Path]:
        return [i.path for i in self.items]

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.items)

    def only(self, modality: str) -> Corpus:
        return Corpus(f"{self.name}-{modality}", [i for i in self.items if i.modality == modality])


def _read(name: str) -> Dataset:
    # Never pydicom's get_testdata_files(): it would try to download from GitHub.
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"{name} is not in pydicom-data: pip install pydicom-data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def new_uid() -> UID:
    """Fixed length (UID_LENGTH), last component "1" + SUFFIX digits."""
    uid = UID(f"{_ROOT}{random.randrange(10**19, 10**20)}.1{0:0{SUFFIX}d}")
    assert len(uid) == UID_LENGTH
    return uid


def ct_slice() -> Dataset:
    """A 512x512 16-bit CT Image Storage slice with real CT pixels."""
    enhanced = _read("eCT_Supplemental.dcm")
    ds = copy.deepcopy(_read("CT_small.dcm"))
    frame = 512 * 512 * 2
    ds.Rows = ds.Columns = 512
    ds.PixelData = enhanced.PixelData[:frame]
    return ds


def _tiled(source: Dataset, rows: int, columns: int) -> bytes:
    """16-bit pixels of `source` repeated to rows x columns (real texture, any size)."""
    width = source.Columns * 2
    pixels = source.PixelData
    source_rows = [pixels[r * width : (r + 1) * width] for r in range(source.Rows)]
    out = bytearray()
    for r in range(rows):
        line = source_rows[r % source.Rows]
        out += (line * (columns * 2 // width + 1))[: columns * 2]
    return bytes(out)


def _mammogram(rows: int, columns: int) -> Dataset:
    ds = _read("RG1_UNCR.dcm")
    ds.PixelData = _tiled(ds, rows, columns)
    ds.Rows, ds.Columns = rows, columns
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(_MG_CLASS)
    return ds


def _dx() -> Dataset:
    ds = _read("RG3_UNCR.dcm")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(_DX_CLASS)
    return ds


def _xa_run(frames: int = 400) -> Dataset:
    """A multi-frame XA run of real CT frames: 512x512x16-bit, ~210 MB for 400."""
    enhanced = _read("eCT_Supplemental.dcm")
    ds = ct_slice()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(_XA_CLASS)
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 33.3
    two = enhanced.PixelData[: 2 * 512 * 512 * 2]
    ds.PixelData = two * (frames // 2) + two[: (frames % 2) * 512 * 512 * 2]
    return ds


def write_series(
    template: Dataset, count: int, modality: str, folder: Path, prefix: str = ""
) -> list[Path]:
    study, series = new_uid(), new_uid()
    paths = []
    for i in range(count):
        ds = template if count == 1 else copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.InstanceNumber = i + 1
        ds.Modality = modality
        ds.PatientID = f"BENCH-{modality}"
        path = folder / f"{prefix or modality}-{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _item(path: Path) -> Item:
    meta = read_file_meta_info(path)
    # Preamble and "DICM", then (0002,0000) UL, 12 bytes, counting the rest of the meta.
    offset = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    with path.open("rb") as handle:
        handle.seek(offset)
        head = handle.read(1 << 20)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    positions = tuple(offset + head.index(str(u).encode()) for u in uids)
    return Item(
        path=path,
        modality=str(ds.Modality),
        sop_class=str(ds.SOPClassUID),
        sop_instance=str(ds.SOPInstanceUID),
        transfer_syntax=str(meta.TransferSyntaxUID),
        offset=offset,
        length=path.stat().st_size - offset,
        uid_offsets=(positions[0], positions[1], positions[2]),
    )


def build(mix: Mix) -> Corpus:
    """The corpus for `mix`, from the cache when it was built before."""
    folder = CACHE / mix.name
    manifest = folder / "manifest.json"
    if manifest.exists():
        rows = json.loads(manifest.read_text())
        items = [
            Item(**{**r, "path": folder / r["path"], "uid_offsets": tuple(r["uid_offsets"])})
            for r in rows
        ]
        if all(i.path.exists() for i in items):
            return Corpus(mix.name, items)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"building corpus {mix.name} in {folder} ...", flush=True)
    makers = {
        "ct": ("CT", ct_slice),
        "mr": ("MR", lambda: _read("MR2_UNCR.dcm")),
        "cr": ("CR", lambda: _read("RG1_UNCR.dcm")),
        "dx": ("DX", _dx),
        "us": ("US", lambda: _read("US1_UNCR.dcm")),
        "xa": ("XA", _xa_run),
    }
    paths: list[Path] = []
    for kind, (modality, make) in makers.items():
        count = getattr(mix, kind)
        if count:
            paths += write_series(make(), count, modality, folder)
    if mix.mg:
        # Every fourth mammogram is a large-detector one: 27 MB and 70 MB objects.
        large = mix.mg // 4
        paths += write_series(_mammogram(4096, 3328), mix.mg - large, "MG", folder)
        if large:
            paths += write_series(_mammogram(7000, 5000), large, "MG", folder, "MG-large")
    items = [_item(p) for p in paths]
    rows = [{**asdict(i), "path": str(i.path.relative_to(folder))} for i in items]
    manifest.write_text(json.dumps(rows))
    return Corpus(mix.name, items)
