"""The zeroed space a durable index keeps written ahead of LMDB's last page: LMDB's
commits land in it without growing the file, it is topped up after commits, and a
full disk costs a warning, never a commit."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from storage.committer import GroupCommitter
from storage.index import Index, Outcome
from storage.layout import DataLayout
from storage.reserve import Reserve
from tests.support.records import instance

MAP = 8 << 20  # keeps an eighth of it ahead: 1 MiB, topped up below 512 KiB


def _used(env: lmdb.Environment) -> int:
    return (int(env.info()["last_pgno"]) + 1) * int(env.stat()["psize"])


def test_commits_land_in_the_zeros_and_the_reserve_is_topped_up(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), map_size=MAP)
    data = tmp_path / "data.mdb"
    reserve = Reserve(env, data, MAP)
    assert reserve.top_up() > 0
    size = data.stat().st_size
    assert size == _used(env) + (1 << 20)
    assert data.read_bytes()[_used(env) :] == bytes(size - _used(env))
    assert reserve.top_up() == 0  # not due
    values: dict[bytes, bytes] = {}
    batch = 0
    while size - _used(env) >= 512 << 10:
        with env.begin(write=True) as txn:
            for k in range(20):
                key = f"{batch:03d}-{k:02d}".encode()
                values[key] = os.urandom(3000)
                txn.put(key, values[key])
        batch += 1
        assert data.stat().st_size == size  # LMDB wrote over zeros, the file did not grow
    assert reserve.top_up() >= 512 << 10
    assert data.stat().st_size == _used(env) + (1 << 20)
    env.close()
    with lmdb.open(str(tmp_path), map_size=MAP, readonly=True) as again, again.begin() as txn:
        assert {bytes(k): bytes(v) for k, v in txn.cursor()} == values


@pytest.mark.parametrize("durable", [True, False])
def test_only_a_durable_index_keeps_a_reserve(tmp_path: Path, durable: bool) -> None:
    Index(tmp_path, 2**26, durable=durable).close()
    # A new index uses a few pages; the reserve of a 64 MiB map is 8 MiB.
    assert ((tmp_path / "data.mdb").stat().st_size >= 8 << 20) == durable


def test_the_fsync_committer_tops_the_reserve_up_as_the_index_grows(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, MAP, durable=True)

    async def main() -> list[Outcome]:
        committer = GroupCommitter(index, layout, "replace", sync_files=True)
        committer.start()
        try:
            path = str(layout.object_path(f"{0:064x}"))
            stored = []
            for chunk in range(10):  # several batches, 2-3 MiB of records in all
                stored += await asyncio.gather(
                    *(
                        committer.submit(instance(f"1.2.3.{chunk}.{n}"), [], path, False)
                        for n in range(200)
                    )
                )
            return stored
        finally:
            committer.close()

    try:
        assert asyncio.run(main()) == [Outcome.STORED] * 2000
    finally:
        index.close()
    with lmdb.open(str(layout.index), map_size=MAP, max_dbs=48, readonly=True) as env:
        assert _used(env) > 2 << 20  # it grew past the first reserve
        # Without top-ups LMDB would have grown the file itself, to what it uses.
        assert (layout.index / "data.mdb").stat().st_size - _used(env) >= 512 << 10


def test_a_full_disk_costs_a_warning_not_a_commit(
    tmpfs: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = tmpfs("2m")
    env = lmdb.open(str(disk), map_size=64 << 20)  # its reserve (8 MiB) cannot fit
    reserve = Reserve(env, disk / "data.mdb", 64 << 20)
    with caplog.at_level(logging.WARNING, logger="storage.reserve"):
        assert reserve.top_up() == 0
        assert reserve.top_up() == 0  # not tried again at once: one warning
    assert [r.getMessage()[:44] for r in caplog.records] == [
        "could not keep zeroed space ahead of the ind"
    ]
    with env.begin(write=True) as txn:
        txn.put(b"still", b"commits")
    with env.begin() as txn:
        assert txn.get(b"still") == b"commits"
    env.close()
