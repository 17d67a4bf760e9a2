"""Where things live under the data directory, and start-up recovery of that tree.

data_dir/
  spool/               objects being received (deleted at start-up: never acked)
  objects/ab/<blake3>  content-addressed Part-10 files, named by the dataset hash
  index.lmdb/          the LMDB environment (see storage.index)
  run/                 with several worker processes: who is connected, metrics
                       files, the forwarder's wake socket (cleared at start-up)
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def objects(self) -> Path:
        return self.root / "objects"

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

    def prepare(self) -> None:
        """Create the tree once, durably, so that storing an object never has to
        create (and fsync) a directory on the hot path."""
        for folder in (self.root, self.spool, self.objects, self.index):
            folder.mkdir(parents=True, exist_ok=True)
        created = False
        for byte in range(256):
            sub = self.objects / f"{byte:02x}"
            if not sub.is_dir():
                sub.mkdir()
                created = True
        if created:
            _fsync_dir(self.objects)
            _fsync_dir(self.root)

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
