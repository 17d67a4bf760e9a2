"""One frame of a stored object as a JPEG or PNG picture (WADO-RS /rendered and
/thumbnail, WADO-URI image/jpeg): modality rescale, a VOI window, MONOCHROME1
inverted, scaled to fit.

The input is always a file with native pixels (engine.web.objects decodes a
compressed one with core_rs first), and only the one frame asked for is read.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_rescale
from pydicom.pixels.utils import pixel_array

ImageFormat = Literal["jpeg", "png"]
MEDIA_TYPES: dict[ImageFormat, str] = {"jpeg": "image/jpeg", "png": "image/png"}


class RenderError(ValueError):
    """The object cannot be shown as a picture (no pixels, or a frame that is not there)."""


@dataclass(frozen=True)
class View:
    frame: int = 1  # 1-based, as in DICOMweb
    window: tuple[float, float] | None = None  # centre, width; None: the dataset's or the range
    size: int | None = None  # fit in size x size
    form: ImageFormat = "jpeg"
    quality: int = 90


def render(path: Path | BytesIO, view: View) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, stop_before_pixels=True)
        if "Rows" not in ds:
            raise RenderError("the object has no pixel data to render")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if not 1 <= view.frame <= frames:
            raise RenderError(f"frame {view.frame} asked for; the object has {frames}")
        if isinstance(path, BytesIO):
            path.seek(0)
        pixels = pixel_array(path, index=view.frame - 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 1:
        picture = _grey(ds, pixels, view.window)
        image = Image.fromarray(picture, mode="L")
    else:
        image = Image.fromarray(_to_uint8(pixels, ds), mode="RGB")
    if view.size:
        image.thumbnail((view.size, view.size))
    out = io.BytesIO()
    if view.form == "jpeg":
        image.save(out, "JPEG", quality=view.quality)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def _grey(ds: Dataset, pixels: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    values = apply_rescale(pixels, ds).astype(np.float64)
    centre_width = window or _dataset_window(ds)
    if centre_width is None:
        low, high = float(values.min()), float(values.max())
    else:
        centre, width = centre_width
        low, high = centre - width / 2, centre + width / 2
    scaled = (values - low) / max(high - low, 1e-9)
    picture = (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    if str(getattr(ds, "PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        picture = 255 - picture
    return picture


def _dataset_window(ds: Dataset) -> tuple[float, float] | None:
    centre = getattr(ds, "WindowCenter", None)
    width = getattr(ds, "WindowWidth", None)
    if centre is None or width is None:
        return None
    try:
        return _first(centre), _first(width)
    except (TypeError, ValueError, IndexError):
        return None


def _first(value: object) -> float:
    """A multi-valued window (several presets) is shown with its first."""
    if isinstance(value, MultiValue):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def _to_uint8(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    bits = int(getattr(ds, "BitsStored", 8))
    return (pixels.astype(np.float64) / ((1 << bits) - 1) * 255).clip(0, 255).astype(np.uint8)


def parse_window(text: str) -> tuple[float, float]:
    """`window=centre,width[,function]` (PS3.18 8.3.5.1.3)."""
    parts = text.split(",")
    try:
        centre, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise RenderError(f"window {text!r} is not centre,width[,function]") from None
    if width <= 0:
        raise RenderError("window width must be positive")
    return centre, width
