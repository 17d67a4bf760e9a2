"""Codec benchmark: pacs-edge's lossless JPEG-LS (core_rs over CharLS) beside the same
codec as imagecodecs ships it (its own CharLS build) and zstd level 3 (zstandard),
and our RLE Lossless (plain Rust) beside imagecodecs' DICOM RLE decoder, on the
benchmark corpus's real images, in one run.

A verified encode in pacs-edge is an encode plus a decode and a comparison (no frame
is used before it round-trips), so it is timed against imagecodecs doing the same
three steps; decoding is timed on its own.

HTJ2K: our verified encode (core_rs.HTJ2K_BACKEND: the system's OpenJPH 0.9, or the
pure-Rust openjph-core without it; checked by OpenJPEG) against OpenJPH through
imagecodecs doing encode, decode and compare; JPEG: lossless SV1 and (8-bit) baseline
streams made by imagecodecs, decoded by both (both are libjpeg-turbo 3.1 inside).

The warm tier packs whole stored files (core_rs.warm_pack: zstd chunks, byte-shuffled
16-bit pixel frames or JPEG-LS frames, verified by unpacking and hashing). It is timed
against the same algorithm through imagecodecs' byteshuffle and zstd (the reference C
libraries) on the same files: encode, decode and compare. Ours also reads and writes
files and computes BLAKE3 twice; the reference works in memory.

Speeds are native MB per CPU-second on one core (the best of 3 runs of each object, to
shed the shared host's noise); ratios are native bytes / coded bytes.

    python -m bench.codecs            # ~2 min, prints the tables, saves JSON + markdown
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pydicom

import core_rs
from bench import results
from bench.corpus import QUICK, build
from storage.tiers import PixelPlan, pack, pixel_plan
from storage.transcode import pixel_layout

try:
    import imagecodecs
    import zstandard
except ImportError:  # pragma: no cover - both are in the bench extra
    sys.exit("bench.codecs needs the bench extra: pip install -e '.[bench]'")

PER_MODALITY = 3  # objects of each modality (the CT slices share pixels: a few suffice)
REPEAT = 3


@dataclass
class Row:
    modality: str
    bits: int = 0  # Bits Stored: JPEG-LS precision here; imagecodecs codes 8 or 16
    objects: int = 0
    native: int = 0
    ours: int = 0  # coded bytes
    theirs: int = 0
    zstd: int = 0
    ours_encode_s: float = 0.0  # CPU seconds, verified encode
    theirs_encode_s: float = 0.0
    ours_decode_s: float = 0.0
    theirs_decode_s: float = 0.0
    rle: int = 0  # RLE Lossless: coded bytes, our verified encode, both decoders
    rle_encode_s: float = 0.0
    rle_decode_s: float = 0.0
    theirs_rle_decode_s: float = 0.0
    j2k: int = 0  # lossless JPEG 2000 and HTJ2K made by imagecodecs; both decoders
    j2k_decode_s: float = 0.0
    theirs_j2k_decode_s: float = 0.0
    htj2k: int = 0
    htj2k_decode_s: float = 0.0
    theirs_htj2k_decode_s: float = 0.0
    htj2k_ours: int = 0  # our verified HTJ2K encode (openjph-core) against OpenJPH's
    htj2k_frames: int = 0
    htj2k_unverified: int = 0  # frames whose codestream did not verify: not used
    htj2k_verified_native: int = 0  # native and OpenJPH bytes of the verified frames
    htj2k_verified_theirs: int = 0
    htj2k_encode_s: float = 0.0
    theirs_htj2k_encode_s: float = 0.0
    ljpeg: int = 0  # lossless JPEG (SV1) made by imagecodecs; both decoders
    ljpeg_decode_s: float = 0.0
    theirs_ljpeg_decode_s: float = 0.0
    baseline_native: int = 0  # 8-bit frames only: lossy baseline (quality 90), decoded
    baseline_decode_s: float = 0.0
    theirs_baseline_decode_s: float = 0.0

    def mb_per_s(self, seconds: float) -> float:
        return _mb_per_s(self.native, seconds)

    def htj2k_ratios(self) -> tuple[float, float] | None:
        """Ours and OpenJPH's HTJ2K ratio over the frames ours verified, if any."""
        if not self.htj2k_ours:
            return None
        native = self.htj2k_verified_native
        return native / self.htj2k_ours, native / self.htj2k_verified_theirs


def _mb_per_s(size: int, seconds: float) -> float:
    """MB per CPU-second, as the tables print it."""
    return round(size / 1e6 / max(seconds, 1e-9), 1)


def _cpu(work: Callable[[], object]) -> tuple[float, object]:
    """The least CPU time of REPEAT runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(REPEAT):
        start = time.process_time()
        result = work()
        best = min(best, time.process_time() - start)
    return best, result


def _frames(ds: pydicom.Dataset) -> tuple[core_rs.PixelLayout, list[np.ndarray]]:
    layout = pixel_layout(ds, str(ds.file_meta.TransferSyntaxUID))
    dtype = np.dtype(f"<{'i' if layout.signed else 'u'}{layout.bits_allocated // 8}")
    shape = (layout.rows, layout.columns) + (
        (layout.samples_per_pixel,) if layout.samples_per_pixel > 1 else ()
    )
    count = int(ds.get("NumberOfFrames", 1) or 1)
    flat = np.frombuffer(ds.PixelData, dtype, count=count * int(np.prod(shape)))
    return layout, list(flat.reshape((count, *shape)))


def _theirs_verified(frame: np.ndarray) -> bytes:
    coded = bytes(imagecodecs.jpegls_encode(frame, level=0))
    if not np.array_equal(imagecodecs.jpegls_decode(coded), frame.view(frame.dtype)):
        raise AssertionError("imagecodecs JPEG-LS did not round-trip")
    return coded


def measure(row: Row, ds: pydicom.Dataset) -> None:
    layout, frames = _frames(ds)
    row.bits = layout.bits_stored
    raw = [f.tobytes() for f in frames]
    # imagecodecs codes unsigned samples; signed ones go as their bit pattern.
    unsigned = [f.view(f"<u{f.itemsize}") for f in frames]
    t, ours = _cpu(lambda: [core_rs.jpegls_encode(r, layout) for r in raw])
    row.ours_encode_s += t
    t, theirs = _cpu(lambda: [_theirs_verified(f) for f in unsigned])
    row.theirs_encode_s += t
    assert isinstance(ours, list)
    assert isinstance(theirs, list)
    t, decoded = _cpu(lambda: [core_rs.jpegls_decode(c, layout) for c in ours])
    assert decoded == raw, "core_rs JPEG-LS decode differs"
    row.ours_decode_s += t
    t, _ = _cpu(lambda: [imagecodecs.jpegls_decode(c) for c in theirs])
    row.theirs_decode_s += t
    t, rle = _cpu(lambda: [core_rs.rle_encode(r, layout) for r in raw])
    row.rle_encode_s += t
    assert isinstance(rle, list)
    t, decoded = _cpu(lambda: [core_rs.rle_decode(c, layout) for c in rle])
    assert decoded == raw, "core_rs RLE decode differs"
    row.rle_decode_s += t
    dtype = frames[0].dtype
    t, _ = _cpu(lambda: [imagecodecs.dicomrle_decode(c, dtype) for c in rle])
    row.theirs_rle_decode_s += t
    row.rle += sum(len(c) for c in rle)
    _measure_j2k(row, layout, frames, raw)
    _measure_jpeg(row, layout, unsigned, raw)
    row.objects += 1
    row.native += sum(len(r) for r in raw)
    row.ours += sum(len(c) for c in ours)
    row.theirs += sum(len(c) for c in theirs)
    row.zstd += len(zstandard.ZstdCompressor(level=3).compress(b"".join(raw)))


@dataclass
class WarmRow:
    modality: str
    objects: int = 0
    original: int = 0  # file bytes
    zstd: int = 0  # our warm file, pixel frames byte-shuffled + zstd
    jpegls: int = 0  # our warm file, pixel frames JPEG-LS
    reference: int = 0  # imagecodecs byteshuffle + zstd, the same segments
    zstd_pack_s: float = 0.0
    jpegls_pack_s: float = 0.0
    reference_pack_s: float = 0.0
    zstd_unpack_s: float = 0.0
    reference_unpack_s: float = 0.0

    def mb_per_s(self, seconds: float) -> float:
        return _mb_per_s(self.original, seconds)


_CHUNK = 4 << 20  # core_rs.warm's zstd segment size


def _reference_pack(data: bytes, plan: PixelPlan | None) -> list[tuple[bytes, bool]]:
    """The warm format's segments through imagecodecs: zstd-3 chunks, 16-bit pixel
    frames byte-shuffled first; each segment with whether it was shuffled."""
    start = end = len(data)
    if plan is not None:
        start, end = plan.offset, plan.offset + plan.frames * plan.layout.frame_bytes
    shuffle = plan is not None and plan.layout.bits_allocated == 16

    def chunks(first: int, last: int, shuffled: bool) -> list[tuple[bytes, bool]]:
        out = []
        for at in range(first, last, _CHUNK):
            piece = data[at : min(at + _CHUNK, last)]
            if shuffled:
                piece = imagecodecs.byteshuffle_encode(np.frombuffer(piece, "<u2")).tobytes()
            out.append((bytes(imagecodecs.zstd_encode(piece, level=3)), shuffled))
        return out

    segments = chunks(0, start, False)
    if plan is not None:
        size = plan.layout.frame_bytes
        for n in range(plan.frames):
            segments += chunks(start + n * size, start + (n + 1) * size, shuffle)
    return segments + chunks(end, len(data), False)


def _reference_unpack(segments: list[tuple[bytes, bool]]) -> bytes:
    parts = []
    for segment, shuffled in segments:
        raw = imagecodecs.zstd_decode(segment)
        if shuffled:
            raw = imagecodecs.byteshuffle_decode(np.frombuffer(raw, "<u2")).tobytes()
        parts.append(bytes(raw))
    return b"".join(parts)


def measure_warm(row: WarmRow, path: Path, transfer_syntax: str, scratch: Path) -> None:
    plan, _ = pixel_plan(path, transfer_syntax)
    data = path.read_bytes()
    warm, back = scratch / "object.warm", scratch / "object.back"
    for codec in ("zstd", "jpeg-ls"):
        t, packed = _cpu(lambda c=codec: pack(path, warm, plan, c, 3, False))  # type: ignore[misc]
        assert isinstance(packed, core_rs.WarmPacked)
        if codec == "zstd":
            row.zstd_pack_s += t
            row.zstd += packed.stored
            t, _ = _cpu(lambda: core_rs.warm_unpack(warm, back, False))
            row.zstd_unpack_s += t
            assert back.read_bytes() == data, "warm zstd did not restore"
        else:
            row.jpegls_pack_s += t
            row.jpegls += packed.stored

    def reference_verified() -> list[tuple[bytes, bool]]:
        segments = _reference_pack(data, plan)
        if _reference_unpack(segments) != data:
            raise AssertionError("imagecodecs byteshuffle + zstd did not round-trip")
        return segments

    t, segments = _cpu(reference_verified)
    assert isinstance(segments, list)
    row.reference_pack_s += t
    row.reference += sum(len(segment) for segment, _ in segments)
    t, _ = _cpu(lambda: _reference_unpack(segments))
    row.reference_unpack_s += t
    row.objects += 1
    row.original += len(data)


def _versus(ours: float, theirs: float) -> str:
    """A table cell: ours / theirs (their ratio)."""
    return f"{ours} / {theirs} ({ours / theirs:.2f})"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def warm_table(rows: list[WarmRow]) -> str:
    header = [
        "modality",
        "objects",
        "file MB",
        "ratio: ours zstd+shuffle / imagecodecs / ours JPEG-LS",
        "verified pack MB/s: ours / imagecodecs (x)",
        "ours JPEG-LS pack MB/s",
        "unpack MB/s: ours / imagecodecs (x)",
    ]
    cells = []
    for r in rows:
        ratios = (r.original / r.zstd, r.original / r.reference, r.original / r.jpegls)
        cells.append(
            [
                r.modality,
                str(r.objects),
                f"{r.original / 1e6:.1f}",
                " / ".join(f"{x:.2f}" for x in ratios),
                _versus(r.mb_per_s(r.zstd_pack_s), r.mb_per_s(r.reference_pack_s)),
                str(r.mb_per_s(r.jpegls_pack_s)),
                _versus(r.mb_per_s(r.zstd_unpack_s), r.mb_per_s(r.reference_unpack_s)),
            ]
        )
    return _markdown(header, cells)


def _measure_j2k(
    row: Row, layout: core_rs.PixelLayout, frames: list[np.ndarray], raw: list[bytes]
) -> None:
    """Lossless JPEG 2000 (OpenJPEG, through imagecodecs) and HTJ2K (OpenJPH) of the
    same frames, decoded by core_rs (OpenJPEG 2.5 for both) and by imagecodecs."""
    j2k = [bytes(imagecodecs.jpeg2k_encode(f, level=0, codecformat="J2K")) for f in frames]
    ht = [bytes(imagecodecs.htj2k_encode(f)) for f in frames]
    for coded, theirs, field in (
        (j2k, imagecodecs.jpeg2k_decode, "j2k"),
        (ht, imagecodecs.htj2k_decode, "htj2k"),
    ):
        t, decoded = _cpu(lambda c=coded: [core_rs.j2k_decode(x, layout) for x in c])  # type: ignore[misc]
        assert decoded == raw, f"core_rs {field} decode differs"
        setattr(row, f"{field}_decode_s", getattr(row, f"{field}_decode_s") + t)
        t, _ = _cpu(lambda c=coded, d=theirs: [d(x) for x in c])  # type: ignore[misc]
        setattr(row, f"theirs_{field}_decode_s", getattr(row, f"theirs_{field}_decode_s") + t)
        setattr(row, field, getattr(row, field) + sum(len(x) for x in coded))
    t, ours = _cpu(lambda: [_htj2k_or_none(r, layout) for r in raw])
    assert isinstance(ours, list)
    row.htj2k_encode_s += t
    # Ratios over the frames our encoder verified; a refused one is counted, not used.
    row.htj2k_frames += len(ours)
    row.htj2k_unverified += ours.count(None)
    row.htj2k_ours += sum(len(x) for x in ours if x is not None)
    row.htj2k_verified_native += sum(len(r) for r, o in zip(raw, ours, strict=True) if o)
    t, openjph = _cpu(lambda: [_openjph_verified(f) for f in frames])
    assert isinstance(openjph, list)
    row.theirs_htj2k_encode_s += t
    row.htj2k_verified_theirs += sum(len(x) for x, o in zip(openjph, ours, strict=True) if o)


def _htj2k_or_none(frame: bytes, layout: core_rs.PixelLayout) -> bytes | None:
    """Our verified HTJ2K frame, or None where the verification refused it."""
    try:
        return core_rs.htj2k_encode(frame, layout)
    except core_rs.VerificationFailed:
        return None


def _openjph_verified(frame: np.ndarray) -> bytes:
    # No colour transform on colour frames, as ours: the copy keeps its Photometric
    # Interpretation (the rgb keyword is for 3-sample frames only).
    coded = bytes(imagecodecs.htj2k_encode(frame, rgb=False if frame.ndim == 3 else None))
    decoded = imagecodecs.htj2k_decode(coded)
    if decoded.shape != frame.shape:  # colour planes, without the colour transform
        decoded = np.moveaxis(decoded, 0, -1)
    if not np.array_equal(decoded, frame):
        raise AssertionError("imagecodecs HTJ2K did not round-trip")
    return coded


def _measure_jpeg(
    row: Row, layout: core_rs.PixelLayout, unsigned: list[np.ndarray], raw: list[bytes]
) -> None:
    """Lossless JPEG (SV1, at the container's precision) of every frame, and lossy
    baseline of 8-bit frames, made by imagecodecs; decoded by core_rs (libjpeg-turbo
    3.1 behind our checks) and by imagecodecs (libjpeg-turbo 3.1.3)."""
    bits = layout.bits_allocated
    lossless = [
        bytes(imagecodecs.jpeg8_encode(f, lossless=True, predictor=1, bitspersample=bits))
        for f in unsigned
    ]
    t, decoded = _cpu(lambda: [core_rs.jpeg_decode(c, layout) for c in lossless])
    assert decoded == raw, "core_rs lossless JPEG decode differs"
    row.ljpeg_decode_s += t
    row.ljpeg += sum(len(c) for c in lossless)
    t, _ = _cpu(lambda: [imagecodecs.jpeg8_decode(c) for c in lossless])
    row.theirs_ljpeg_decode_s += t
    if bits != 8:
        return
    baseline = [bytes(imagecodecs.jpeg8_encode(f, level=90)) for f in unsigned]
    decode = core_rs.jpeg_decode_ybr if layout.samples_per_pixel == 3 else core_rs.jpeg_decode
    t, _ = _cpu(lambda: [decode(c, layout) for c in baseline])
    row.baseline_decode_s += t
    t, _ = _cpu(lambda: [imagecodecs.jpeg8_decode(c) for c in baseline])
    row.theirs_baseline_decode_s += t
    row.baseline_native += sum(len(r) for r in raw)


def j2k_table(rows: list[Row]) -> str:
    header = [
        "modality",
        "JPEG 2000 ratio",
        "decode MB/s: ours / imagecodecs-OpenJPEG (x)",
        "HTJ2K frames refused (not verified)",
        "HTJ2K ratio on verified frames: ours / OpenJPH",
        "verified encode MB/s: ours / imagecodecs-OpenJPH (x)",
        "decode MB/s: ours / imagecodecs-OpenJPH (x)",
    ]
    cells = [
        [
            r.modality,
            f"{r.native / r.j2k:.2f}",
            _versus(r.mb_per_s(r.j2k_decode_s), r.mb_per_s(r.theirs_j2k_decode_s)),
            f"{r.htj2k_unverified} of {r.htj2k_frames}",
            "-" if (ht := r.htj2k_ratios()) is None else f"{ht[0]:.2f} / {ht[1]:.2f}",
            _versus(r.mb_per_s(r.htj2k_encode_s), r.mb_per_s(r.theirs_htj2k_encode_s)),
            _versus(r.mb_per_s(r.htj2k_decode_s), r.mb_per_s(r.theirs_htj2k_decode_s)),
        ]
        for r in rows
    ]
    return _markdown(header, cells)


def jpeg_table(rows: list[Row]) -> str:
    header = [
        "modality",
        "lossless JPEG ratio",
        "lossless decode MB/s: ours / imagecodecs (x)",
        "baseline decode MB/s (8-bit): ours / imagecodecs (x)",
    ]
    cells = []
    for r in rows:
        baseline = "-"
        if r.baseline_native:
            baseline = _versus(
                _mb_per_s(r.baseline_native, r.baseline_decode_s),
                _mb_per_s(r.baseline_native, r.theirs_baseline_decode_s),
            )
        cells.append(
            [
                r.modality,
                f"{r.native / r.ljpeg:.2f}",
                _versus(r.mb_per_s(r.ljpeg_decode_s), r.mb_per_s(r.theirs_ljpeg_decode_s)),
                baseline,
            ]
        )
    return _markdown(header, cells)


_R = TypeVar("_R", Row, WarmRow)


def _sum(label: str, rows: list[_R], kind: type[_R]) -> _R:
    """One row adding up `rows`' counts and seconds (not their labels)."""
    total = kind(label)
    for r in rows:
        for name in vars(total):
            if name not in ("modality", "bits"):
                setattr(total, name, getattr(total, name) + getattr(r, name))
    return total


def rle_table(rows: list[Row]) -> str:
    header = [
        "modality",
        "RLE ratio",
        "verified encode MB/s (ours)",
        "decode MB/s: ours / imagecodecs (x)",
    ]
    cells = [
        [
            r.modality,
            f"{r.native / r.rle:.2f}",
            str(r.mb_per_s(r.rle_encode_s)),
            _versus(r.mb_per_s(r.rle_decode_s), r.mb_per_s(r.theirs_rle_decode_s)),
        ]
        for r in rows
    ]
    return _markdown(header, cells)


def table(rows: list[Row]) -> str:
    header = [
        "modality",
        "bits stored",
        "objects",
        "native MB",
        "JPEG-LS ratio: ours / imagecodecs",
        "zstd-3 ratio",
        "verified encode MB/s: ours / imagecodecs (x)",
        "decode MB/s: ours / imagecodecs (x)",
    ]
    cells = [
        [
            r.modality,
            str(r.bits or "-"),
            str(r.objects),
            f"{r.native / 1e6:.1f}",
            f"{r.native / r.ours:.2f} / {r.native / r.theirs:.2f}",
            f"{r.native / r.zstd:.2f}",
            _versus(r.mb_per_s(r.ours_encode_s), r.mb_per_s(r.theirs_encode_s)),
            _versus(r.mb_per_s(r.ours_decode_s), r.mb_per_s(r.theirs_decode_s)),
        ]
        for r in rows
    ]
    return _markdown(header, cells)


def _htj2k_goals(ordered: list[Row], total: Row) -> list[str]:
    """Issue 19's checks: every modality at >= 0.9x imagecodecs (OpenJPH 0.26 inside),
    the ratio within 0.5% of OpenJPH's, and JPEG-LS beside HTJ2K on the same frames
    (the warm tier's choice of codec, decision 0035)."""
    lines = [f"HTJ2K encoder: {core_rs.HTJ2K_BACKEND}; decoder: OpenJPEG"]
    for label, field in (("verified encode", "htj2k_encode_s"), ("decode", "htj2k_decode_s")):
        per = {
            r.modality: getattr(r, f"theirs_{field}") / max(getattr(r, field), 1e-9)
            for r in ordered
        }
        worst = min(per, key=per.__getitem__)
        lines.append(
            f"HTJ2K {label} on every modality: worst {worst} {per[worst]:.2f}x imagecodecs "
            f"(goal >= 0.9x: {'met' if per[worst] >= 0.9 else 'NOT met'})"
        )
    ht = total.htj2k_ratios() or (0.0, 1.0)
    lines.append(
        f"HTJ2K ratio on verified frames: ours {ht[0]:.3f}, OpenJPH {ht[1]:.3f} "
        f"(goal within 0.5%: {'met' if abs(ht[0] / ht[1] - 1) <= 0.005 else 'NOT met'}); "
        f"{total.htj2k_unverified} of {total.htj2k_frames} frames refused by the verification"
    )
    lines.append(
        f"warm codec candidates, verified encode of the same frames: JPEG-LS ratio "
        f"{total.native / total.ours:.3f} at {total.mb_per_s(total.ours_encode_s):.1f} MB/s, "
        f"HTJ2K ratio {ht[0]:.3f} at {total.mb_per_s(total.htj2k_encode_s):.1f} MB/s"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.parse_args(argv)
    corpus = build(QUICK)
    rows: dict[str, Row] = {}
    warm_rows: dict[str, WarmRow] = {}
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as scratch:
        for item in corpus.items:
            row = rows.setdefault(item.modality, Row(item.modality))
            if row.objects >= PER_MODALITY:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(item.path)
            measure(row, ds)
            warm = warm_rows.setdefault(item.modality, WarmRow(item.modality))
            measure_warm(warm, Path(item.path), str(ds.file_meta.TransferSyntaxUID), Path(scratch))
            print(
                f"  {item.modality}: {row.objects} object(s), {row.native / 1e6:.1f} MB",
                flush=True,
            )
    ordered = sorted(rows.values(), key=lambda r: r.modality)
    warm_ordered = sorted(warm_rows.values(), key=lambda r: r.modality)
    warm_total = _sum("all", warm_ordered, WarmRow)
    # CharLS has fast paths for 8, 12 and 16 bits; imagecodecs always codes 8 or 16,
    # while we code Bits Stored (PS3.5 8.2.3: the stream must match the dataset).
    same_precision = [r for r in ordered if r.bits in (8, 12, 16)]
    same = _sum("same precision (8/12/16 bits)", same_precision, Row)
    total = _sum("all", ordered, Row)
    text = (
        table([*ordered, same, total])
        + "\n\nRLE Lossless:\n\n"
        + rle_table([*ordered, total])
        + "\n\nJPEG 2000 and HTJ2K decoding (lossless streams made by imagecodecs):\n\n"
        + j2k_table([*ordered, total])
        + "\n\nJPEG decoding (lossless SV1 and baseline streams made by imagecodecs):\n\n"
        + jpeg_table([*ordered, total])
        + "\n\nWarm tier (whole files, restored byte for byte):\n\n"
        + warm_table([*warm_ordered, warm_total])
    )
    goals = []
    for r in (same, total):
        enc = r.mb_per_s(r.ours_encode_s) / r.mb_per_s(r.theirs_encode_s)
        dec = r.mb_per_s(r.ours_decode_s) / r.mb_per_s(r.theirs_decode_s)
        goals += [
            f"{r.modality}: verified encode {enc:.2f}x imagecodecs, decode {dec:.2f}x "
            f"(goal >= 0.9x: {'met' if min(enc, dec) >= 0.9 else 'NOT met'})",
        ]
    for label, ours_s, theirs_s in (
        ("JPEG 2000 decode", total.j2k_decode_s, total.theirs_j2k_decode_s),
        ("HTJ2K decode", total.htj2k_decode_s, total.theirs_htj2k_decode_s),
        ("HTJ2K verified encode", total.htj2k_encode_s, total.theirs_htj2k_encode_s),
        ("lossless JPEG decode", total.ljpeg_decode_s, total.theirs_ljpeg_decode_s),
        ("baseline JPEG decode", total.baseline_decode_s, total.theirs_baseline_decode_s),
    ):
        x = theirs_s / max(ours_s, 1e-9)  # same bytes both sides: the speed ratio
        verdict = "met" if x >= 0.9 else "NOT met"
        goals.append(f"{label} {x:.2f}x imagecodecs (goal >= 0.9x: {verdict})")
    goals += _htj2k_goals(ordered, total)
    rle = total.mb_per_s(total.rle_decode_s) / total.mb_per_s(total.theirs_rle_decode_s)
    goals.append(
        f"RLE decode {rle:.2f}x imagecodecs (goal >= 0.9x: {'met' if rle >= 0.9 else 'NOT met'})"
    )
    pack = warm_total.mb_per_s(warm_total.zstd_pack_s) / warm_total.mb_per_s(
        warm_total.reference_pack_s
    )
    unpack = warm_total.mb_per_s(warm_total.zstd_unpack_s) / warm_total.mb_per_s(
        warm_total.reference_unpack_s
    )
    goals.append(
        f"warm zstd+shuffle: pack {pack:.2f}x, unpack {unpack:.2f}x imagecodecs byteshuffle+zstd "
        f"(goal >= 0.9x: {'met' if min(pack, unpack) >= 0.9 else 'NOT met'}); ratio "
        f"{warm_total.original / warm_total.zstd:.3f} vs "
        f"{warm_total.original / warm_total.reference:.3f}"
    )
    ratio = (total.native / total.ours, total.native / total.theirs)
    goals.append(
        f"ratio: ours {ratio[0]:.3f}, imagecodecs {ratio[1]:.3f} "
        f"(goal the same or better: {'met' if ratio[0] >= ratio[1] * 0.99 else 'NOT met'})"
    )
    print(text + "\n\n" + "\n".join(goals))
    markdown = text + "\n\n```\n" + "\n".join(goals) + "\n```\n"
    results.save(
        "codecs",
        {"rows": [vars(r) for r in ordered], "warm": [vars(r) for r in warm_ordered]},
        markdown,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
