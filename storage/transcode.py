"""Lossless transcoding of a stored object's pixel data, one frame at a time in core_rs.

Native (uncompressed, little-endian) pixel data becomes JPEG-LS lossless
(1.2.840.10008.1.2.4.80). core_rs returns a frame only after decoding it again and
finding every byte equal to the original, so a transcoded copy carries exactly the
pixels the modality sent. Everything else in the dataset is carried over as it is,
except what the standard ties to the new encoding: the transfer syntax, Pixel Data
as encapsulated OB, and Planar Configuration 0 (PS3.5 8.2.3).

Objects the codec cannot carry (already compressed, no pixel data, 32-bit, YBR 4:2:2,
big endian, ...) raise `core_rs.NotRepresentable` with the reason; a frame that does
not round-trip raises `core_rs.VerificationFailed`. Callers keep the original then.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

import core_rs

JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
# Pixel data in these is stored as it is on the wire, little-endian.
NATIVE_LITTLE_ENDIAN = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}
)
_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})


@dataclass(frozen=True)
class Transcoded:
    dataset: Dataset  # the same object, now encapsulated JPEG-LS
    frames: int
    native_bytes: int
    encoded_bytes: int

    @property
    def ratio(self) -> float:
        return self.native_bytes / max(self.encoded_bytes, 1)


def pixel_layout(ds: Dataset, transfer_syntax: str) -> core_rs.PixelLayout:
    """The frame layout of `ds`'s native pixel data, or NotRepresentable saying why."""
    if transfer_syntax not in NATIVE_LITTLE_ENDIAN:
        raise core_rs.NotRepresentable(
            f"pixel data is compressed or big endian ({transfer_syntax})"
        )
    if "PixelData" not in ds:
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


def _frames(ds: Dataset, layout: core_rs.PixelLayout) -> list[memoryview]:
    try:
        count = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise core_rs.NotRepresentable(f"Number of Frames is invalid: {exc}") from exc
    size = layout.frame_bytes
    data = ds.PixelData
    if not isinstance(data, bytes | bytearray) or len(data) < count * size:
        raise core_rs.NotRepresentable(
            f"Pixel Data holds {len(data)} bytes; {count} frame(s) of {size} expected"
        )
    view = memoryview(data)
    frames = [view[n * size : (n + 1) * size] for n in range(count)]
    if layout.samples_per_pixel > 1 and int(ds.get("PlanarConfiguration", 0)) == 1:
        # Colour planes to interleaved samples: what JPEG-LS (and PS3.5) expects.
        dtype = np.uint8 if layout.bits_allocated == 8 else np.dtype("<u2")
        shape = (layout.samples_per_pixel, layout.rows, layout.columns)
        frames = [
            memoryview(np.frombuffer(f, dtype).reshape(shape).transpose(1, 2, 0).tobytes())
            for f in frames
        ]
    return frames


def to_jpegls(ds: Dataset, transfer_syntax: str) -> Transcoded:
    """Re-encode `ds` (read from a file stored in `transfer_syntax`) in place as
    JPEG-LS lossless, every frame verified; on any exception `ds` is unchanged."""
    layout = pixel_layout(ds, transfer_syntax)
    frames = _frames(ds, layout)
    encoded = [core_rs.jpegls_encode(frame, layout) for frame in frames]
    ds.PixelData = encapsulate(encoded, has_bot=len(encoded) > 1)
    element = ds["PixelData"]
    element.VR = "OB"
    element.is_undefined_length = True
    if layout.samples_per_pixel > 1 and "PlanarConfiguration" in ds:
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = UID(JPEG_LS_LOSSLESS)
    return Transcoded(
        ds, len(frames), len(frames) * layout.frame_bytes, sum(len(e) for e in encoded)
    )


def dataset_bytes(ds: Dataset) -> bytes:
    """`ds` without file meta, in explicit VR little endian (every compressed syntax's
    encoding): what a C-STORE carries."""
    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a modality's odd values are carried as they are
        write_dataset(out, ds)
    return out.getvalue()
