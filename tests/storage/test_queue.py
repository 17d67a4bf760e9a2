"""The durable forward queues on a real LMDB environment: order, claims, outcomes."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from storage.index import Index
from storage.queue import Job, Outcome, Settlement, Target
from tests.support.records import instance


@pytest.fixture
def index(tmp_path: Path) -> Index:
    return Index(tmp_path / "index.lmdb", 2**26, durable=False)


def enqueue(index: Index, *items: tuple[str, str, int]) -> None:
    """(uid, study, priority) each, routed to destination "d"."""
    batch = [(instance(uid, study), [Target("d", priority)]) for uid, study, priority in items]
    index.apply(batch, "replace")


def uids(jobs: list[Job]) -> list[str]:
    return [job.sop_instance_uid for job in jobs]


def test_jobs_are_written_with_their_instance_and_ordered(index: Index) -> None:
    enqueue(index, ("a", "S1", 1), ("b", "S2", 2), ("c", "S3", 0), ("d", "S1", 1))
    assert index.get("a") is not None
    claimed = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    assert uids(claimed) == ["c", "a", "d", "b"]  # high, then normal in arrival, then low
    assert index.queues.stats("d").queued == 4
    # The same object again changes nothing and queues nothing.
    enqueue(index, ("a", "S1", 1))
    assert index.queues.stats("d").queued == 4


def test_claims_skip_in_flight_and_busy_studies(index: Index) -> None:
    enqueue(index, ("a", "S1", 1), ("b", "S1", 1), ("c", "S2", 1))
    first = index.queues.claim("d", 1, 2**30, set(), set(), time.time())
    assert uids(first) == ["a"]
    # Another association: S1 is being sent, so only S2's instance is free.
    other = index.queues.claim("d", 10, 2**30, {j.key for j in first}, {"S1"}, time.time())
    assert uids(other) == ["c"]


def test_a_backing_off_instance_holds_back_its_study(index: Index) -> None:
    enqueue(index, ("a", "S1", 1), ("b", "S1", 1), ("c", "S2", 1))
    (a,) = index.queues.claim("d", 1, 2**30, set(), set(), time.time())
    later = replace(a, attempts=1, not_before=time.time() + 60, last_error="status 0xa900")
    index.queues.settle([Settlement(later, Outcome.RETRY)])
    claimed = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    assert uids(claimed) == ["c"]  # b waits behind a: a study goes in arrival order
    assert index.queues.next_due("d", time.time()) == pytest.approx(later.not_before)
    assert index.queues.next_due("d", later.not_before + 1) is None


def test_outcomes_move_jobs(index: Index) -> None:
    enqueue(index, ("a", "S1", 1), ("b", "S2", 1), ("c", "S3", 1))
    a, b, c = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    index.queues.settle(
        [
            Settlement(a, Outcome.SENT),
            Settlement(replace(b, attempts=5, last_error="status 0xc000"), Outcome.DEAD),
            Settlement(replace(c, transaction_uid="1.2.3", sent_at=1.0), Outcome.AWAIT_COMMITMENT),
        ]
    )
    stats = index.queues.stats("d")
    assert (stats.queued, stats.sent, stats.dead, stats.waiting) == (0, 1, 1, 1)
    assert index.queues.delivery("d", "a") == {
        "state": "sent",
        "at": pytest.approx(time.time(), abs=5),
        "hash": index.get("a").hash,  # type: ignore[union-attr]  # the version sent
    }
    (dead,) = index.queues.dead_jobs("d", 10)
    assert dead.last_error == "status 0xc000"
    # Commitment: an unknown transaction changes nothing; ours commits c.
    assert index.queues.commitment_result("9.9", {"c"}, {}) == (0, 0)
    assert index.queues.commitment_result("1.2.3", {"c"}, {}) == (1, 0)
    assert index.queues.stats("d").committed == 1
    assert index.queues.delivery("d", "c")["state"] == "committed"  # type: ignore[index]
    # Dead letters come back with a fresh attempt count.
    assert index.queues.requeue_dead("d") == 1
    (back,) = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    assert (back.sop_instance_uid, back.attempts) == ("b", 0)


def test_commitment_failure_and_timeout_requeue(index: Index) -> None:
    enqueue(index, ("a", "S1", 1), ("b", "S2", 1))
    a, b = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    old = time.time() - 7200
    index.queues.settle(
        [
            Settlement(replace(a, transaction_uid="T1", sent_at=old), Outcome.AWAIT_COMMITMENT),
            Settlement(
                replace(b, transaction_uid="T2", sent_at=time.time()), Outcome.AWAIT_COMMITMENT
            ),
        ]
    )
    assert index.queues.expire_waiting(time.time() - 3600) == 1  # a: no report for 2 h
    assert index.queues.commitment_result("T2", set(), {"b": "reason 0x0110"}) == (0, 1)
    queued = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    assert sorted(uids(queued)) == ["a", "b"]
    assert {job.transaction_uid for job in queued} == {""}
    assert index.queues.stats("d").commit_failed == 1


def test_jobs_survive_reopening(tmp_path: Path) -> None:
    """What is claimed but not settled (a crash mid-send) is still queued."""
    first = Index(tmp_path / "i.lmdb", 2**26, durable=True)
    enqueue(first, ("a", "S1", 1), ("b", "S1", 1))
    first.queues.claim("d", 10, 2**30, set(), set(), time.time())
    first.close()
    again = Index(tmp_path / "i.lmdb", 2**26, durable=True)
    assert uids(again.queues.claim("d", 10, 2**30, set(), set(), time.time())) == ["a", "b"]


def test_purge_and_retry_now(index: Index) -> None:
    enqueue(index, ("a", "S1", 1), ("b", "S2", 1))
    a, _b = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    index.queues.settle([Settlement(replace(a, not_before=time.time() + 600), Outcome.RETRY)])
    assert index.queues.retry_now("d") == 1
    assert len(index.queues.claim("d", 10, 2**30, set(), set(), time.time())) == 2
    assert index.queues.purge("d") == 2
    assert index.queues.stats("d").queued == 0
    assert index.get("a") is not None  # the objects stay


@pytest.mark.parametrize("damage", [b"\x00\x17 not a record", b'{"seq": 1}', b"[1, 2]"])
def test_a_damaged_job_is_passed_by_kept_and_purged(
    index: Index, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A job record that does not read (a bad sector, a bug) must not stop its
    destination's queue, its listings or its stats; before, each raised."""
    enqueue(index, ("a", "S1", 1), ("b", "S2", 1), ("c", "S3", 1))
    key = index.queues.jobs("d", 10)[0].key
    with index._env.begin(write=True) as txn:
        txn.put(key, damage, db=index.queues._queue)
    claimed = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    assert uids(claimed) == ["b", "c"]
    assert "is damaged and cannot be read" in caplog.text
    assert key.hex() in caplog.text
    assert uids(index.queues.jobs("d", 10)) == ["b", "c"]
    stats = index.queues.stats("d")
    assert stats.queued == 3, "kept: nothing is dropped on an unreadable record's word"
    assert stats.oldest_enqueued_at is None or stats.oldest_enqueued_at > 0
    assert index.queues.next_due("d", time.time()) is None
    assert index.queues.retry_now("d") == 0
    assert index.queues.purge("d") == 3
    assert index.queues.stats("d").queued == 0
    assert index.queues.claim("d", 10, 2**30, set(), set(), time.time()) == []


def test_purge_also_drops_a_damaged_dead_or_waiting_record_and_only_those(
    index: Index,
) -> None:
    """A damaged record in the dead letters or waiting for a storage commitment can
    be neither requeued nor matched by a report: `queue purge` is what the log tells
    ops to run, so it removes those too, and leaves the readable ones."""
    enqueue(index, ("a", "S1", 1), ("b", "S2", 1), ("c", "S3", 1), ("e", "S4", 1))
    a, b, c, e = index.queues.claim("d", 10, 2**30, set(), set(), time.time())
    waiting = [replace(job, transaction_uid="1.2.9") for job in (c, e)]
    index.queues.settle(
        [
            Settlement(a, Outcome.DEAD),
            Settlement(b, Outcome.DEAD),
            *(Settlement(job, Outcome.AWAIT_COMMITMENT) for job in waiting),
        ]
    )
    dead_key = b"d\0" + a.key[-8:]
    waiting_key = b"1.2.9\0d\0" + c.key[-8:]
    with index._env.begin(write=True) as txn:  # damaged on purpose
        assert txn.put(dead_key, b"[1, 2]", db=index.queues._dead, overwrite=True)
        assert txn.put(waiting_key, b"\x00 not a record", db=index.queues._waiting)
    before = index.queues.stats("d")
    assert (before.queued, before.dead, before.waiting) == (0, 2, 2)
    assert uids(index.queues.dead_jobs("d", 10)) == ["b"]

    assert index.queues.purge("d") == 2
    after = index.queues.stats("d")
    assert (after.dead, after.waiting) == (1, 1)
    assert uids(index.queues.dead_jobs("d", 10)) == ["b"]
    assert index.queues.expire_waiting(time.time() + 1) == 1  # the readable one, requeued
    assert uids(index.queues.jobs("d", 10)) == ["e"]
