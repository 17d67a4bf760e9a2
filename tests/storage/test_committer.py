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

import core_rs
from storage.committer import GroupCommitter, IndexUnavailable
from storage.index import Index, Instance, Outcome, Recalled
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


def test_a_damaged_catalog_record_fails_its_objects_not_their_batch(tmp_path: Path) -> None:
    """A study record that is not JSON: the instance of that study gets
    IndexUnavailable (0xA700); the instance of another study that shares its batch
    is stored; the catalog is marked for a rebuild, and the rebuild at the next start
    mends it, after which the study takes objects again."""
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, 2**26, durable=False)
    with index._env.begin(write=True) as txn:  # damaged on purpose
        txn.put(b"S1", b"{not json", db=index.catalog.studies)

    async def send(*items: Instance) -> list[Outcome | BaseException]:
        committer = GroupCommitter(index, layout, "replace", on_loop=True)
        committer.start()
        try:
            path = str(layout.object_path(f"{0:064x}"))
            # Bounded: a commit that died in its loop callback would leave them waiting.
            async with asyncio.timeout(10):
                return await asyncio.gather(
                    *(committer.submit(i, [], path, False) for i in items),
                    return_exceptions=True,
                )
        finally:
            committer.close()

    try:
        damaged, other = asyncio.run(
            send(instance("1.2.3.1", study="S1"), instance("1.2.3.2", study="S2"))
        )
        assert isinstance(damaged, IndexUnavailable), damaged
        assert "unreadable index record" in str(damaged)
        assert "study S1" in str(damaged)
        assert other is Outcome.STORED
        assert index.get("1.2.3.1") is None
        assert index.study("S2") is not None
        assert index.upgrade() == 1  # the start-up rebuild: from the one instance record
        assert index.study("S1") is None
        assert asyncio.run(send(instance("1.2.3.1", study="S1"))) == [Outcome.STORED]
        study = index.study("S1")
        assert study is not None
        assert study["instances"] == 1
        assert index.study("S2")["instances"] == 1  # type: ignore[index]
        assert index.upgrade() == 0  # rebuilt once, not at every start
    finally:
        index.close()


def with_a_damaged_instance_record(tmp_path: Path) -> Index:
    """A new index whose record of instance 1.2.3.1 does not decode."""
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, 2**26, durable=False)
    with index._env.begin(write=True) as txn:  # damaged on purpose
        txn.put(b"1.2.3.1", b"[1, 2", db=index._instances)
    return index


def test_a_damaged_instance_record_is_replaced_by_the_object_sent_again(
    tmp_path: Path,
) -> None:
    """An instance record that does not decode blocks nothing: the object sent again
    is stored in its place, and a catalog rebuild leaves it out instead of failing."""
    index = with_a_damaged_instance_record(tmp_path)
    try:
        assert index.upgrade() == 0  # schema 1 (new): rebuilt, the damaged one left out
        outcomes, _, _ = index.apply([(instance("1.2.3.1", study="S1"), [])], "replace")
        assert outcomes == [Outcome.STORED]
        stored = index.get("1.2.3.1")
        assert stored is not None
        assert stored.study_instance_uid == "S1"
        assert index.study("S1")["instances"] == 1  # type: ignore[index]
    finally:
        index.close()


def test_the_next_start_counts_again_after_a_damaged_record_was_replaced(
    tmp_path: Path,
) -> None:
    """The replaced record's size, tier and study could not be taken out of the
    counts; the next start counts every total again from the instance records."""
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, 2**26, durable=False)
    try:
        index.upgrade()
        index.apply([(instance("1.2.3.1", size=300), []), (instance("1.2.3.2"), [])], "replace")
        with index._env.begin(write=True) as txn:  # damaged on purpose
            txn.put(b"1.2.3.1", b"[1, 2", db=index._instances)
        outcomes, _, _ = index.apply([(instance("1.2.3.1", size=200), [])], "replace")
        assert outcomes == [Outcome.STORED]
        assert index.totals().instances == 3  # the damaged one's part is still in them

        index.close()
        index = Index(layout.index, 2**26, durable=False)
        assert index.upgrade() == 2
        totals = index.totals()
        assert (totals.instances, totals.bytes, totals.studies) == (2, 300, 1)
        assert index.tier_totals()["hot"] == (2, 2 * 10 + 300)
        assert index.study("S1")["instances"] == 2  # type: ignore[index]
        assert sorted(i.sop_instance_uid for i in index.by_age("hot")) == ["1.2.3.1", "1.2.3.2"]
        assert index.upgrade() == 0  # counted once, not at every start
    finally:
        index.close()


def test_a_batch_committed_again_item_by_item_is_not_synced_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability "fsync": a damaged catalog record makes its batch commit again
    object by object; the files were made durable by the batch's one sync, so the
    retries index them without syncing the filesystem once per object."""
    layout = DataLayout(tmp_path / "data")
    layout.prepare()
    index = Index(layout.index, 2**26, durable=True)
    with index._env.begin(write=True) as txn:  # damaged on purpose
        txn.put(b"S1", b"{not json", db=index.catalog.studies)
    syncs: list[str] = []
    real_sync = core_rs.sync_filesystem

    def counted(path: str) -> None:
        syncs.append(path)
        real_sync(path)

    monkeypatch.setattr(core_rs, "sync_filesystem", counted)

    async def main() -> list[Outcome | BaseException]:
        committer = GroupCommitter(index, layout, "replace", sync_files=True)
        path = str(layout.object_path(f"{0:064x}"))
        sent = [
            asyncio.ensure_future(
                committer.submit(instance(f"1.2.3.{n}", study=study), [], path, False)
            )
            for n, study in enumerate(("S1", "S2", "S3"))
        ]
        await asyncio.sleep(0)  # all three queued before the thread starts: one batch
        committer.start()
        try:
            async with asyncio.timeout(10):
                return await asyncio.gather(*sent, return_exceptions=True)
        finally:
            committer.close()

    try:
        damaged, second, third = asyncio.run(main())
        assert isinstance(damaged, IndexUnavailable), damaged
        assert (second, third) == (Outcome.STORED, Outcome.STORED)
        assert len(syncs) == 1, syncs
    finally:
        index.close()


def test_a_recalled_copy_over_a_damaged_record_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy that comes back from the archive over a damaged record takes its place,
    and the damage is logged once, not once per read of the record."""
    index = with_a_damaged_instance_record(tmp_path)
    try:
        outcomes, _, jobs = index.apply([(instance("1.2.3.1"), Recalled("central"))], "replace")
        assert outcomes == [Outcome.STORED]
        stored = index.get("1.2.3.1")
        assert stored is not None
        assert stored.destinations == ("central",)
        assert jobs == []
        damaged = [r for r in caplog.records if "instance 1.2.3.1" in r.getMessage()]
        assert len(damaged) == 1, [r.getMessage() for r in damaged]
    finally:
        index.close()
