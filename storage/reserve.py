"""Zeroed space kept written ahead of the index's LMDB data file (docs/decisions/0044).

LMDB grows its data file as the index grows: a commit writes its new pages past the
file's end. On ext4 that changes the file's size and block map, so the commit's
`fdatasync` must also commit the filesystem journal, a second device flush on the
path of every store it answers. A page written over bytes already on disk changes
data only. With durability "fsync" the index therefore keeps a few MiB of zeros
written past LMDB's last page, topped up as LMDB uses them.

LMDB reads nothing past its last page, so the zeros are never data. They are
written only while holding LMDB's write lock (an empty write transaction), when no
commit of any thread or process can be writing pages past the end.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lmdb

log = logging.getLogger(__name__)

AHEAD = 16 << 20  # bytes of zeros kept past LMDB's last page, at most
_PIECE = 1 << 20
_RETRY_AFTER = 60.0  # seconds, after a top-up failed (disk full)


def used_bytes(env: lmdb.Environment, page: int) -> int:
    """Bytes of the data file LMDB's last committed transaction uses: up to its last
    page (`page`: the environment's page size, read once by the caller)."""
    return (int(env.info()["last_pgno"]) + 1) * page


class Reserve:
    def __init__(self, env: lmdb.Environment, data_file: Path, map_size: int) -> None:
        self._env = env
        self._data_file = data_file
        self._page = int(env.stat()["psize"])
        self._map_size = map_size
        # A small map (a test's, a tiny site's) keeps a share of it, not 16 MiB of disk.
        self._ahead = min(AHEAD, map_size // 8)
        self._low = self._ahead // 2  # topped up below: one write of >= half of it
        self._end = data_file.stat().st_size  # what this process last saw or wrote
        self._failed_at: float | None = None

    def _used(self) -> int:
        return used_bytes(self._env, self._page)

    def top_up(self) -> int:
        """Write zeros up to `AHEAD` past LMDB's last page when fewer than half of
        that remain; the bytes written. Called after a commit (cheap when not due)."""
        if self._end - self._used() >= self._low or self._end >= self._map_size:
            return 0
        if self._failed_at is not None and time.monotonic() - self._failed_at < _RETRY_AFTER:
            return 0
        try:
            # LMDB's write lock: no commit writes pages past the end meanwhile.
            txn = self._env.begin(write=True)
            try:
                return self._extend(self._used())
            finally:
                txn.abort()  # nothing to commit
        except (OSError, lmdb.Error) as exc:
            self._failed_at = time.monotonic()
            log.warning(
                "could not keep zeroed space ahead of the index (%s): its commits may take "
                "a journal flush more until there is room again (retried in %d s)",
                exc,
                _RETRY_AFTER,
            )
            return 0

    def _extend(self, used: int) -> int:
        fd = os.open(self._data_file, os.O_WRONLY | os.O_CLOEXEC)
        try:
            # Another process may have extended it: append past its real end only
            # (nothing when that is at or past the target already).
            start = os.fstat(fd).st_size
            target = min(used + self._ahead, self._map_size)
            zeros = bytes(_PIECE)
            offset = start
            while offset < target:
                offset += os.pwrite(fd, zeros[: min(_PIECE, target - offset)], offset)
            if offset > start:
                os.fdatasync(fd)  # the new size and blocks durable now, not in a commit
            self._end = offset
            return offset - start
        finally:
            os.close(fd)
