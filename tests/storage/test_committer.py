"""Group commit on the event loop (durability "os"): one transaction per loop
iteration for everything submitted in it, and nothing goes through the thread.
With durability "fsync" the thread syncs the batch's files before indexing them,
and indexes none of them when that sync fails."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from storage.committer import GroupCommitter, IndexUnavailable
from storage.index import Index, Outcome
from storage.layout import DataLayout
from storage.queue import Job, Target
from tests.support.records import instance


def test_os_mode_commits_one_batch_per_loop_iteration(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, 2**26, durable=False)
    queued: list[tuple[list[Job], threading.Thread]] = []
    target = [Target("central", 1, None)]

    async def main() -> tuple[list[Outcome], list[Outcome], GroupCommitter]:
        committer = GroupCommitter(index, layout, "replace", on_loop=True)
        committer.on_jobs = lambda jobs: queued.append((jobs, threading.current_thread()))
        committer.start()
        try:
            path = str(layout.object_path(f"{0:064x}"))
            first = await asyncio.gather(
                *(committer.submit(instance(f"1.2.3.{n}"), target, path, False) for n in range(5))
            )
            second = await asyncio.gather(committer.submit(instance("1.2.3.9"), [], path, False))
            return first, second, committer
        finally:
            committer.close()

    try:
        first, second, committer = asyncio.run(main())
        assert first == [Outcome.STORED] * 5
        assert second == [Outcome.STORED]
        # Five submitted in one iteration share a transaction; the sixth has its own.
        assert committer.stats.batches == 2
        assert committer.stats.largest_batch == 5
        assert all(index.get(f"1.2.3.{n}") is not None for n in (0, 4, 9))
        # The jobs were queued by a commit on the loop's own thread, not the commit thread.
        assert [len(jobs) for jobs, _ in queued] == [5]
        assert {thread for _, thread in queued} == {threading.main_thread()}
    finally:
        index.close()


@pytest.mark.parametrize("objects_folder", ["present", "gone"])
def test_fsync_mode_indexes_only_what_the_filesystem_sync_made_durable(
    tmp_path: Path, objects_folder: str
) -> None:
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, 2**26, durable=True)
    if objects_folder == "gone":  # the sync cannot even open the hot tier's folder
        shutil.rmtree(layout.objects)

    async def main() -> list[Outcome | BaseException]:
        committer = GroupCommitter(index, layout, "replace", sync_files=True)
        committer.start()
        try:
            path = str(layout.object_path(f"{0:064x}"))
            submitted = (
                committer.submit(instance(f"1.2.3.{n}"), [], path, False) for n in range(3)
            )
            return await asyncio.gather(*submitted, return_exceptions=True)
        finally:
            committer.close()

    try:
        outcomes = asyncio.run(main())
        if objects_folder == "present":
            assert outcomes == [Outcome.STORED] * 3
            assert all(index.get(f"1.2.3.{n}") is not None for n in range(3))
        else:  # no false Success, and no record pointing at a file that may be lost
            assert all(isinstance(o, IndexUnavailable) for o in outcomes), outcomes
            assert "object files not durable" in str(outcomes[0])
            assert all(index.get(f"1.2.3.{n}") is None for n in range(3))
    finally:
        index.close()


def test_a_committer_that_syncs_files_refuses_the_loop(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "data")
    with pytest.raises(ValueError, match="must not commit on the loop"):
        GroupCommitter(None, layout, "replace", on_loop=True, sync_files=True)  # type: ignore[arg-type]


def test_a_damaged_catalog_record_fails_its_batch_not_the_committer(tmp_path: Path) -> None:
    """A study record that is not JSON: the instances of that study get
    IndexUnavailable (0xA700), nothing of their batch is indexed, and the next
    batch, of another study, commits."""
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, 2**26, durable=False)
    with index._env.begin(write=True) as txn:  # damaged on purpose
        txn.put(b"S1", b"{not json", db=index.catalog.studies)

    async def main() -> tuple[list[Outcome | BaseException], Outcome]:
        committer = GroupCommitter(index, layout, "replace", on_loop=True)
        committer.start()
        try:
            path = str(layout.object_path(f"{0:064x}"))
            # Bounded: a commit that died in its loop callback would leave them waiting.
            async with asyncio.timeout(10):
                damaged = await asyncio.gather(
                    committer.submit(instance("1.2.3.1", study="S1"), [], path, False),
                    committer.submit(instance("1.2.3.2", study="S2"), [], path, False),
                    return_exceptions=True,
                )
                later = await committer.submit(instance("1.2.3.3", study="S2"), [], path, False)
            return damaged, later
        finally:
            committer.close()

    try:
        damaged, later = asyncio.run(main())
        assert all(isinstance(o, IndexUnavailable) for o in damaged), damaged
        assert "unreadable index record" in str(damaged[0])
        assert index.get("1.2.3.1") is None
        assert index.get("1.2.3.2") is None
        assert later is Outcome.STORED
        assert index.study("S2") is not None
    finally:
        index.close()
