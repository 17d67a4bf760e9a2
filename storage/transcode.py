"""Lossless transcoding of a stored object's pixel data, one frame at a time in core_rs.

Native (uncompressed, little-endian) pixel data becomes JPEG-LS lossless
(1.2.840.10008.1.2.4.80) or HTJ2K lossless (1.2.840.10008.1.2.4.201). core_rs returns
a frame only after decoding it again and finding every byte equal to the original,
so a transcoded copy carries exactly the pixels the modality sent. Everything else
in the dataset is carried over as it is, except what the standard ties to the new
encoding: the transfer syntax, Pixel Data as encapsulated OB, and Planar
Configuration 0 (PS3.5 8.2.3). HTJ2K is coded without a colour transform, so the
Photometric Interpretation (RGB, YBR_FULL) stays what it was.

The copy is written to a file frame by frame: Pixel Data is never read whole, so a
2 GB multi-frame object costs one frame of memory, not two gigabytes. When the object
is stored in explicit VR little endian and no coercion applies (the usual case), the
bytes around Pixel Data are copied as they are, not re-encoded by pydicom: they stay
byte-identical and the copy costs a fraction of the CPU.

Objects the codec cannot carry (already compressed, no pixel data, 32-bit, YBR 4:2:2,
big endian, ...) raise `core_rs.NotRepresentable` with the reason; a frame that does
not round-trip raises `core_rs.VerificationFailed`. Callers keep the original then.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filewriter import correct_ambiguous_vr, write_dataset, write_file_meta_info
from pydicom.uid import UID

import core_rs

JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
# JPEG 2000 (lossless, lossy) and HTJ2K (lossless, RPCL, any): core_rs decodes them.
JPEG_2000 = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
# JPEG baseline, extended (12-bit), lossless and lossless SV1: core_rs decodes them.
JPEG = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    }
)
# What core_rs can turn back into native pixels, by transfer syntax.
DECODERS: dict[str, Callable[[bytes, core_rs.PixelLayout], bytes]] = {
    RLE_LOSSLESS: core_rs.rle_decode,
    **dict.fromkeys(JPEG_2000, core_rs.j2k_decode),
    **dict.fromkeys(JPEG, core_rs.jpeg_decode),
}
# What a destination's `transfer_syntax` may ask for: the syntax and its encoder.
ENCODERS: dict[str, tuple[str, Callable[[bytes | bytearray, core_rs.PixelLayout], bytes]]] = {
    "jpeg-ls-lossless": (JPEG_LS_LOSSLESS, core_rs.jpegls_encode),
    "htj2k-lossless": (HTJ2K_LOSSLESS, core_rs.htj2k_encode),
}
# JPEG 2000's colour transforms are undone by the decoder: the samples come out RGB.
_DECODED_AS_RGB = frozenset({"YBR_RCT", "YBR_ICT"})
# JPEG's YCbCr (YBR_FULL_422 from most modalities) is converted to RGB on decoding.
_JPEG_YBR = frozenset({"YBR_FULL", "YBR_FULL_422"})
# Pixel data in these is stored as it is on the wire, little-endian.
NATIVE_LITTLE_ENDIAN = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}
)
DEFLATED = "1.2.840.10008.1.2.1.99"
_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})
PIXEL_DATA = 0x7FE00010
_PLANAR_CONFIGURATION = 0x00280006
_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_MAX_OFFSET = 0xFFFFFFFF  # a Basic Offset Table entry is 32 bits
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_PIXEL_GROUP_LENGTH = b"\xe0\x7f\x00\x00UL\x04\x00"  # (7FE0,0000), retired (PS3.5 7.2)


@dataclass(frozen=True)
class Transcoded:
    frames: int
    native_bytes: int
    encoded_bytes: int
    size: int  # bytes written (the dataset, and the file meta when asked for)

    @property
    def ratio(self) -> float:
        return self.native_bytes / max(self.encoded_bytes, 1)


def read_header(path: Path, transfer_syntax: str) -> Dataset:
    """A stored object with Pixel Data (and other large values) left on disk, except
    when deflated: its file offsets mean nothing, so it is read whole."""
    defer = None if transfer_syntax == DEFLATED else 64 * 1024
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a modality's odd encoding is carried as it is
        return dcmread(path, defer_size=defer)


def pixel_layout(ds: Dataset, transfer_syntax: str) -> core_rs.PixelLayout:
    """The frame layout of `ds`'s native pixel data, or NotRepresentable saying why."""
    if transfer_syntax not in NATIVE_LITTLE_ENDIAN:
        raise core_rs.NotRepresentable(
            f"pixel data is compressed or big endian ({transfer_syntax})"
        )
    if PIXEL_DATA not in ds:
        raise core_rs.NotRepresentable("no Pixel Data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _PHOTOMETRIC:
        raise core_rs.NotRepresentable(f"photometric interpretation {photometric or 'missing'}")
    try:
        return core_rs.PixelLayout(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples_per_pixel=int(ds.SamplesPerPixel),
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.BitsStored),
            signed=int(ds.PixelRepresentation) == 1,
        )
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise core_rs.NotRepresentable(f"image pixel attributes missing or invalid: {exc}") from exc


def frame_count(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise core_rs.NotRepresentable(f"Number of Frames is invalid: {exc}") from exc


class _Frames:
    """Reads one native frame at a time: from the file where Pixel Data starts, or
    (deflated objects, whose file offsets mean nothing) from the inflated value."""

    def __init__(self, path: Path, ds: Dataset, layout: core_rs.PixelLayout, count: int):
        self._size = layout.frame_bytes
        self._layout = layout
        self._planar = layout.samples_per_pixel > 1 and int(ds.get("PlanarConfiguration", 0)) == 1
        raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
        self._offset: int | None = None
        self._value: bytes | None = None
        if isinstance(raw, RawDataElement) and raw.value is None and raw.value_tell is not None:
            length, self._offset = raw.length, raw.value_tell
        else:
            value = ds.PixelData
            self._value = bytes(value) if isinstance(value, bytes | bytearray) else b""
            length = len(self._value)
        if length < count * self._size or length == 0xFFFFFFFF:
            raise core_rs.NotRepresentable(
                f"Pixel Data holds {length} bytes; {count} frame(s) of {self._size} expected"
            )
        self._path = path
        self._buffer = bytearray(self._size)

    def read(self, handle: BufferedReader, n: int) -> bytes | bytearray:
        if self._value is not None:
            frame: bytes | bytearray = self._value[n * self._size : (n + 1) * self._size]
        else:
            assert self._offset is not None
            handle.seek(self._offset + n * self._size)
            if handle.readinto(self._buffer) != self._size:
                raise core_rs.NotRepresentable(f"{self._path} ends inside frame {n + 1}")
            frame = self._buffer
        if not self._planar:
            return frame
        # Colour planes to interleaved samples: what JPEG-LS (and PS3.5) expects.
        layout = self._layout
        dtype = np.uint8 if layout.bits_allocated == 8 else np.dtype("<u2")
        planes = np.frombuffer(frame, dtype).reshape(
            layout.samples_per_pixel, layout.rows, layout.columns
        )
        return planes.transpose(1, 2, 0).tobytes()


def _file_meta(ds: Dataset, transfer_syntax: str) -> bytes:
    """Preamble, "DICM" and file meta for the transcoded copy (PS3.10 7.1)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(core_rs.IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = core_rs.IMPLEMENTATION_VERSION_NAME
    if "SourceApplicationEntityTitle" in ds.file_meta:
        meta.SourceApplicationEntityTitle = ds.file_meta.SourceApplicationEntityTitle
    out = DicomBytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)
    return bytes(128) + b"DICM" + out.getvalue()


def _write_elements(out: DicomFileLike, ds: Dataset, after_pixels: bool) -> None:
    """The elements before (or after) Pixel Data, re-encoded by pydicom."""
    part = Dataset()
    for tag in sorted(ds.keys()):
        if (tag > PIXEL_DATA) if after_pixels else (tag < PIXEL_DATA):
            part.add(ds[tag])
    implicit, little = ds.original_encoding
    part.set_original_encoding(implicit, little, ds.original_character_set)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values are carried as they are
        write_dataset(out, correct_ambiguous_vr(part, True))


@contextmanager
def _output(
    dest: Path, ds: Dataset, transfer_syntax: str, part10: bool
) -> Iterator[tuple[BinaryIO, DicomFileLike]]:
    """`dest` open for an explicit VR little endian dataset (after file meta naming
    `transfer_syntax`, with `part10`); deleted again if anything fails."""
    try:
        with dest.open("wb") as file:
            if part10:
                file.write(_file_meta(ds, transfer_syntax))
            out = DicomFileLike(file)
            out.is_little_endian = True
            out.is_implicit_VR = False
            yield file, out
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class _Verbatim:
    """Byte ranges of the source to copy around Pixel Data, and where Planar
    Configuration's value sits in the head (to write 0 there), if anywhere."""

    head: tuple[int, int]
    tail: int  # first byte after Pixel Data's value
    planar_at: int | None


def _verbatim(source: Path, ds: Dataset, transfer_syntax: str) -> _Verbatim | None:
    """How to copy the non-pixel bytes as they are, or None (pydicom re-encodes)."""
    if transfer_syntax != EXPLICIT_LE:
        return None
    pixels = ds.get_item(PIXEL_DATA, keep_deferred=True)
    planar = ds.get_item(_PLANAR_CONFIGURATION, keep_deferred=True)
    group = ds.file_meta.get("FileMetaInformationGroupLength")
    if not isinstance(pixels, RawDataElement) or pixels.value_tell is None or group is None:
        return None
    start = 128 + 4 + 12 + int(group)  # preamble, "DICM", (0002,0000), the meta
    element = pixels.value_tell - 12  # tag, VR, 2 reserved bytes, 4-byte length
    with source.open("rb") as handle:
        handle.seek(start - 12 - int(group) - 4)
        magic = handle.read(4)
        handle.seek(element - 12)
        before = handle.read(12)
        header = handle.read(12)
    if magic != b"DICM" or header[:4] != b"\xe0\x7f\x10\x00" or header[4:6] not in (b"OB", b"OW"):
        return None
    end = element - 12 if before[:8] == _PIXEL_GROUP_LENGTH else element
    planar_at = None
    if isinstance(planar, RawDataElement) and planar.value_tell is not None:
        planar_at = planar.value_tell - start
    return _Verbatim((start, end), pixels.value_tell + pixels.length, planar_at)


def _copy(handle: BufferedReader, file: BinaryIO, start: int, end: int | None) -> None:
    handle.seek(start)
    left = None if end is None else end - start
    while left is None or left > 0:
        chunk = handle.read(1 << 20 if left is None else min(1 << 20, left))
        if not chunk:
            if left:
                raise OSError(f"{handle.name} ends {left} bytes early")
            return
        file.write(chunk)
        if left is not None:
            left -= len(chunk)


def encode_lossless(
    source: Path,
    transfer_syntax: str,
    dest: Path,
    codec: str = "jpeg-ls-lossless",
    change: Callable[[Dataset], None] | None = None,
    part10: bool = False,
) -> Transcoded:
    """Write the dataset of the stored object `source` (native pixels) to `dest`
    with its pixels encoded and verified by `codec` (a key of ENCODERS); with
    `part10`, preceded by a preamble and file meta naming the new transfer syntax
    (a file, for STOW-RS). `change` may alter the other attributes first (a routing
    rule's coercion). On any exception nothing is left at `dest`."""
    target, encode = ENCODERS[codec]
    ds = read_header(source, transfer_syntax)
    verbatim = _verbatim(source, ds, transfer_syntax) if change is None else None
    if change is not None:
        change(ds)
    layout = pixel_layout(ds, transfer_syntax)
    count = frame_count(ds)
    frames = _Frames(source, ds, layout, count)
    planar = layout.samples_per_pixel > 1 and _PLANAR_CONFIGURATION in ds
    if planar:
        ds.PlanarConfiguration = 0
    # A Basic Offset Table for several frames, unless offsets might pass 32 bits.
    table = count > 1 and count * layout.frame_bytes < _MAX_OFFSET
    with source.open("rb") as handle, _output(dest, ds, target, part10) as (file, out):
        if verbatim is None:
            _write_elements(out, ds, after_pixels=False)
        else:
            head_at = file.tell()
            _copy(handle, file, *verbatim.head)
            if planar and verbatim.planar_at is not None:
                file.seek(head_at + verbatim.planar_at)
                file.write(b"\x00\x00")
                file.seek(0, 2)
        file.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")
        file.write(_ITEM + struct.pack("<I", 4 * count if table else 0))
        table_at = file.tell()
        file.write(bytes(4 * count if table else 0))
        first_item = file.tell()
        offsets, encoded = [], 0
        for n in range(count):
            coded = encode(frames.read(handle, n), layout)
            offsets.append(file.tell() - first_item)
            padded = len(coded) + len(coded) % 2
            file.write(_ITEM + struct.pack("<I", padded) + coded)
            if padded != len(coded):
                file.write(b"\x00")
            encoded += len(coded)
        file.write(_SEQUENCE_DELIMITER)
        if verbatim is None:
            _write_elements(out, ds, after_pixels=True)
        else:
            _copy(handle, file, verbatim.tail, None)
        size = file.tell()
        if table:
            file.seek(table_at)
            file.write(struct.pack(f"<{count}I", *offsets))
    return Transcoded(count, count * layout.frame_bytes, encoded, size)


def decode_to_native(
    source: Path,
    transfer_syntax: str,
    dest: Path,
    change: Callable[[Dataset], None] | None = None,
    part10: bool = False,
) -> Transcoded:
    """Write the dataset of `source`, stored compressed in `transfer_syntax` (one of
    DECODERS), to `dest` with native pixels in explicit VR little endian (decoded by
    core_rs, one frame at a time; only the compressed Pixel Data is held in memory);
    `change` and `part10` as for `encode_lossless`. On any exception nothing is left at
    `dest`."""
    decode = DECODERS.get(transfer_syntax)
    if decode is None:
        raise core_rs.NotRepresentable(f"no decoder here for {transfer_syntax}")
    ds = read_header(source, transfer_syntax)
    if change is not None:
        change(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if transfer_syntax in JPEG and photometric in _JPEG_YBR:
        decode = core_rs.jpeg_decode_ybr
        ds.PhotometricInterpretation = "RGB"
    elif photometric in _DECODED_AS_RGB:
        ds.PhotometricInterpretation = "RGB"
    layout = pixel_layout(ds, EXPLICIT_LE)  # the frame layout; the syntax is compressed
    count = frame_count(ds)
    fragments = generate_frames(ds.PixelData, number_of_frames=count)
    if layout.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0  # decoded samples are interleaved
    size = count * layout.frame_bytes
    vr = b"OB" if layout.bits_allocated == 8 else b"OW"
    encoded = 0
    with _output(dest, ds, EXPLICIT_LE, part10) as (file, out):
        _write_elements(out, ds, after_pixels=False)
        file.write(b"\xe0\x7f\x10\x00" + vr + b"\x00\x00" + struct.pack("<I", size + size % 2))
        for _ in range(count):
            fragment = next(fragments, None)
            if fragment is None:
                raise core_rs.CodecError(f"Pixel Data holds fewer than {count} frames")
            file.write(decode(fragment, layout))
            encoded += len(fragment)
        if size % 2:
            file.write(b"\x00")
        _write_elements(out, ds, after_pixels=True)
        written = file.tell()
    return Transcoded(count, size, encoded, written)
