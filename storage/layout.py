"""Where things live under the data directory, and start-up recovery of that tree.

data_dir/
  spool/               objects being received (deleted at start-up: never acked)
  objects/ab/<blake3>  the hot tier: content-addressed Part-10 files as received,
                       named by the dataset hash
  warm/ab/<blake3>     the warm tier: the same files compressed so that they restore
                       byte for byte (core_rs warm format, storage.tiers)
  index.lmdb/          the LMDB environment (see storage.index)
  run/                 with several worker processes: who is connected, metrics
                       files, the forwarder's wake socket (cleared at start-up)
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @cached_property  # asked for on every object stored
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def warm(self) -> Path:
        return self.root / "warm"

    @property
    def index(self) -> Path:
        return self.root / "index.lmdb"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def metrics(self) -> Path:
        return self.run / "metrics"

    def object_path(self, blake3_hex: str) -> Path:
        return self.objects / blake3_hex[:2] / blake3_hex

    def warm_path(self, blake3_hex: str) -> Path:
        return self.warm / blake3_hex[:2] / blake3_hex

    def tier_path(self, tier: str, blake3_hex: str) -> Path | None:
        """Where an object of `tier` is on this node; None once purged (central only)."""
        if tier == "hot":
            return self.object_path(blake3_hex)
        if tier == "warm":
            return self.warm_path(blake3_hex)
        return None

    def prepare(self) -> None:
        """Create the tree once, durably, so that storing an object never has to
        create (and fsync) a directory on the hot path."""
        for folder in (self.root, self.spool, self.objects, self.warm, self.index):
            folder.mkdir(parents=True, exist_ok=True)
        created = False
        for tier in (self.objects, self.warm):
            for byte in range(256):
                sub = tier / f"{byte:02x}"
                if not sub.is_dir():
                    sub.mkdir()
                    created = True
            if created:
                fsync_dir(tier)
        if created:
            fsync_dir(self.root)

    def disk_used(self) -> float:
        """The share of the data disk in use, 0..1."""
        disk = shutil.disk_usage(self.root)
        return 1 - disk.free / disk.total

    def disk_full(self, watermark: float) -> str:
        """Why no new object may come in ("" while there is room): above
        storage.disk_high_watermark only purging or forwarding makes room."""
        used = self.disk_used()
        if used <= watermark:
            return ""
        return (
            f"data disk {used:.1%} used, over storage.disk_high_watermark {watermark:.0%}: "
            "stored objects wait for their destinations before they can be purged"
        )

    def clear_run(self) -> None:
        """Start the process group with no leftovers of the previous one."""
        shutil.rmtree(self.run, ignore_errors=True)
        self.metrics.mkdir(parents=True)

    def clean_spool(self, pid: int | None = None) -> int:
        """Delete objects whose reception never finished: none of them was acknowledged.
        With `pid`, only those of that (dead) worker process."""
        removed = 0
        pattern = "*" if pid is None else f"{pid}-*"
        for leftover in self.spool.glob(pattern):
            leftover.unlink()
            removed += 1
        if removed:
            log.warning("recovery: deleted %d unfinished object(s) from %s", removed, self.spool)
        return removed


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
