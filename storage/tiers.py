"""Moving stored objects between tiers: hot -> warm -> central only.

Warm: the hot file is packed by core_rs into a warm file that restores byte for
byte: native pixel data frame by frame (JPEG-LS or byte-shuffled zstd), the rest in
zstd. core_rs decodes the packed file and compares its length and BLAKE3 with the
original before it returns; only then is the warm file moved into place, the
index switched to it, and the hot file deleted, in that order. A crash in between
leaves two copies, never none; the move is journalled in the index (before the warm
file appears, and in the transaction that switches the record), so start-up
recovery deletes whichever copy the record no longer names.

Central only ("purge"): the local file is deleted once every destination the object
was routed to holds THIS version (its delivery record names the hash) and, unless
`purge_when = "sent"`, has committed it (storage commitment). The index is updated
first, journalling the move, then the file goes: a crash in between leaves a file
that start-up recovery deletes, never a record without its file. An object routed
nowhere is never purged: the edge has the only copy.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom.dataelem import RawDataElement

import core_rs
from storage.index import Index, Instance
from storage.layout import DataLayout, fsync_dir
from storage.transcode import (
    DEFLATED,
    NATIVE_LITTLE_ENDIAN,
    PIXEL_DATA,
    frame_count,
    pixel_layout,
    read_header,
)

log = logging.getLogger(__name__)

WarmCodec = Literal["zstd", "jpeg-ls"]
PurgeWhen = Literal["committed", "sent"]


class NotLocal(FileNotFoundError):
    """The object was purged from this node: only its destinations have it."""


@dataclass(frozen=True)
class Migrated:
    instance: Instance
    packed: core_rs.WarmPacked


@dataclass(frozen=True)
class PixelPlan:
    offset: int
    frames: int
    layout: core_rs.PixelLayout


def pixel_plan(path: Path, transfer_syntax: str) -> tuple[PixelPlan | None, str]:
    """Where a stored file's native pixel data lies, or None and why it is packed
    as plain bytes (compressed pixels, none, deflated, an odd layout). A wrong plan
    costs ratio, never bytes: every segment restores exactly what it was given."""
    if transfer_syntax not in NATIVE_LITTLE_ENDIAN or transfer_syntax == DEFLATED:
        return None, f"pixel data not native little endian in the file ({transfer_syntax})"
    try:
        ds = read_header(path, transfer_syntax)
        layout = pixel_layout(ds, transfer_syntax)
        frames = frame_count(ds)
    except core_rs.NotRepresentable as exc:
        return None, str(exc)
    except (OSError, ValueError, TypeError) as exc:
        return None, f"header not readable: {exc}"
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value_tell is None:
        return None, "Pixel Data has no file offset"
    if layout.bits_allocated not in (8, 16) or raw.length < frames * layout.frame_bytes:
        return None, f"{layout.bits_allocated}-bit or short pixel data"
    if raw.value_tell + frames * layout.frame_bytes > path.stat().st_size:
        return None, "Pixel Data runs past the end of the file"
    return PixelPlan(raw.value_tell, frames, layout), ""


def pack(
    src: Path, dst: Path, plan: PixelPlan | None, codec: WarmCodec, level: int, durable: bool
) -> core_rs.WarmPacked:
    """core_rs.warm_pack with a pixel plan (None: the whole file in zstd chunks)."""
    if plan is None:
        return core_rs.warm_pack(src, dst, codec, level, durable)
    return core_rs.warm_pack(src, dst, codec, level, durable, plan.offset, plan.frames, plan.layout)


class Tiers:
    def __init__(self, index: Index, layout: DataLayout, durable: bool) -> None:
        self._index = index
        self._layout = layout
        self._durable = durable

    def migrate(self, instance: Instance, codec: WarmCodec, level: int) -> Migrated | None:
        """Hot -> warm, verified; None if the record changed meanwhile."""
        hot = self._layout.object_path(instance.hash)
        plan, why = pixel_plan(hot, instance.transfer_syntax_uid)
        if plan is None and codec == "jpeg-ls":
            log.debug("%s: packed with zstd only: %s", instance.sop_instance_uid, why)
        spool = self._layout.spool / f"{os.getpid()}-warm-{uuid.uuid4().hex}"
        try:
            packed = pack(hot, spool, plan, codec, level, self._durable)
            warm = self._layout.warm_path(instance.hash)
            self._index.begin_tier_move(instance, "warm")  # before the warm file exists
            os.replace(spool, warm)
        finally:
            spool.unlink(missing_ok=True)
        if self._durable:
            fsync_dir(warm.parent)
        moved = self._index.set_tier(
            instance.sop_instance_uid, instance.hash, "warm", packed.stored
        )
        if moved is None:
            warm.unlink(missing_ok=True)
            return None
        hot.unlink(missing_ok=True)
        return Migrated(moved, packed)

    def purge(self, instance: Instance) -> Instance | None:
        """Delete the local copy of an instance its destinations hold; None if the
        record changed meanwhile. The caller checked `unsafe_to_purge` first."""
        path = self._layout.tier_path(instance.tier, instance.hash)
        purged = self._index.set_tier(instance.sop_instance_uid, instance.hash, "central", 0)
        if purged is not None and path is not None:
            path.unlink(missing_ok=True)
        return purged

    def unsafe_to_purge(self, instance: Instance, purge_when: PurgeWhen) -> str:
        """Why deleting the local copy could lose the object ("" when it cannot)."""
        if not instance.destinations:
            return "routed to no destination: this node has the only copy"
        wanted = ("committed",) if purge_when == "committed" else ("committed", "sent")
        for destination in instance.destinations:
            delivery = self._index.queues.delivery(destination, instance.sop_instance_uid)
            if delivery is None:
                return f"not yet delivered to {destination}"
            if delivery.get("hash") != instance.hash:
                return f"{destination} has another version of it"
            if delivery["state"] not in wanted:
                return f"sent to {destination}, not yet committed there"
        return ""

    def restore(self, instance: Instance) -> Path:
        """A warm object's original bytes in a new spool file; the caller deletes it."""
        spool = self._layout.spool / f"{os.getpid()}-restored-{uuid.uuid4().hex}"
        try:
            core_rs.warm_unpack(self._layout.warm_path(instance.hash), spool, False)
        except BaseException:
            spool.unlink(missing_ok=True)
            raise
        return spool
