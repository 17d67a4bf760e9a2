"""Durable forward queues, in the index's LMDB environment.

    queue    dest NUL priority(1) seq(8, big-endian)   -> Job   (waiting to be sent)
    dead     dest NUL seq(8)                           -> Job   (gave up; last status kept)
    waiting  transaction UID NUL dest NUL seq(8)       -> Job   (sent; storage commitment asked)
    done     dest NUL SOP Instance UID                 -> {"state": "sent"|"committed", "at": t,
                                                           "hash": BLAKE3 of the version sent}
    counts   dest NUL name                             -> integer
    meta     "seq"                                     -> the last job sequence number

Jobs are added by `enqueue` inside the transaction that indexes their object
(storage.index), so no acknowledged object can lack its jobs. Key order is the
sending order: priority, then arrival. Nothing here is in memory only: what the
forwarder holds in flight is still in `queue` until `settle` removes it, so a
crash means a resend, never a loss.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import lmdb
import orjson

log = logging.getLogger(__name__)

COUNTERS = ("queued", "dead", "waiting", "sent", "committed", "commit_failed")


@dataclass(frozen=True)
class Target:
    """One destination an object is routed to (from policies.rules)."""

    destination: str
    priority: int  # 0 high, 1 normal, 2 low
    coerce: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    seq: int
    destination: str
    priority: int
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    size: int
    enqueued_at: float
    coerce: dict[str, Any] | None = None
    attempts: int = 0
    not_before: float = 0.0
    last_error: str = ""
    transaction_uid: str = ""  # the storage commitment request it waits for
    sent_at: float = 0.0
    hash: str = ""  # the version it was queued for (its delivery record names it)

    @property
    def key(self) -> bytes:
        return _queue_key(self.destination, self.priority, self.seq)

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)  # shallow: see Instance.encode

    @classmethod
    def decode(cls, raw: bytes) -> Job:
        return cls(**json.loads(raw))


class Outcome(Enum):
    SENT = "sent"  # the destination answered Success: done (or waits for commitment)
    RETRY = "retry"  # failed; try again after `not_before`
    DEAD = "dead"  # failed for good: to dead letters
    AWAIT_COMMITMENT = "await"  # sent; storage commitment requested under transaction_uid


@dataclass(frozen=True)
class Settlement:
    job: Job  # as updated by the forwarder (attempts, last_error, ...)
    outcome: Outcome


@dataclass
class QueueStats:
    queued: int = 0
    dead: int = 0
    waiting: int = 0
    sent: int = 0
    committed: int = 0
    commit_failed: int = 0
    oldest_enqueued_at: float | None = None


def _prefix(dest: str) -> bytes:
    return dest.encode() + b"\0"


def _queue_key(dest: str, priority: int, seq: int) -> bytes:
    return _prefix(dest) + struct.pack(">BQ", priority, seq)


def _dead_key(dest: str, seq: int) -> bytes:
    return _prefix(dest) + struct.pack(">Q", seq)


def _waiting_key(job: Job) -> bytes:
    return job.transaction_uid.encode() + b"\0" + _dead_key(job.destination, job.seq)


def _decoded(raw: bytes) -> Job | ValueError | TypeError:
    """The job a record holds, or why it does not read (a bad sector, a bug)."""
    try:
        return Job.decode(raw)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        return exc


def _readable(key: bytes, raw: bytes, reported: set[bytes]) -> Job | None:
    """The job a record holds, or None when it is damaged. A damaged job is passed
    by, so the rest of its destination's queue goes, and kept, so that nothing is
    dropped on an unreadable record's word (decision 40)."""
    job = _decoded(raw)
    if isinstance(job, Job):
        return job
    if key not in reported and len(reported) < 10_000:
        reported.add(key)
        log.error(
            "forward job %d (key %s) is damaged and cannot be read: %s. It is passed "
            "by and the destination's other jobs go. Its object is still stored; "
            "`pacs-edge queue purge <destination>` removes the record",
            struct.unpack(">Q", key[-8:])[0] if len(key) >= 8 else -1,
            key.hex(),
            job,
        )
    return None


def _keys(cursor: lmdb.Cursor, prefix: bytes) -> list[bytes]:
    """Every key from `prefix` on that starts with it; values are not read."""
    keys: list[bytes] = []
    if cursor.set_range(prefix):
        for key in cursor.iternext(keys=True, values=False):
            if not bytes(key).startswith(prefix):
                break
            keys.append(bytes(key))
    return keys


class Queues:
    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self._queue = env.open_db(b"queue")
        self._dead = env.open_db(b"dead")
        self._waiting = env.open_db(b"waiting")
        self._done = env.open_db(b"done")
        self._counts = env.open_db(b"counts")
        self._meta = env.open_db(b"meta")
        self._reported: set[bytes] = set()  # damaged job keys logged already

    # ---- written with the index, in its transaction ----------------------------------

    def enqueue(
        self,
        txn: lmdb.Transaction,
        instance_uid: str,
        sop_class_uid: str,
        study_uid: str,
        size: int,
        blake3_hex: str,
        targets: Iterable[Target],
    ) -> list[Job]:
        now = time.time()
        jobs = []
        for target in targets:
            job = Job(
                seq=self._next_seq(txn),
                destination=target.destination,
                priority=target.priority,
                sop_instance_uid=instance_uid,
                sop_class_uid=sop_class_uid,
                study_instance_uid=study_uid,
                size=size,
                enqueued_at=now,
                coerce=target.coerce,
                hash=blake3_hex,
            )
            txn.put(job.key, job.encode(), db=self._queue)
            self._count(txn, job.destination, "queued", +1)
            jobs.append(job)
        return jobs

    def _next_seq(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq", db=self._meta)
        seq = (0 if raw is None else int(raw)) + 1
        txn.put(b"seq", str(seq).encode(), db=self._meta)
        return seq

    def _count(self, txn: lmdb.Transaction, dest: str, name: str, delta: int) -> None:
        key = _prefix(dest) + name.encode()
        raw = txn.get(key, db=self._counts)
        value = max(0, (0 if raw is None else int(raw)) + delta)
        txn.put(key, str(value).encode(), db=self._counts)

    # ---- the forwarder's side ----------------------------------------------------------

    def claim(
        self,
        dest: str,
        limit: int,
        max_bytes: int,
        in_flight: set[bytes],
        busy_studies: set[str],
        now: float,
        ordered: bool = True,
    ) -> list[Job]:
        """The next jobs to send, in key order.

        Skips jobs already in flight, jobs backing off and, when `ordered`, jobs of a
        study another association is sending or that wait behind a backing-off
        instance of their study (so a study's instances go in arrival order).
        """
        prefix = _prefix(dest)
        jobs: list[Job] = []
        total = 0
        with self._env.begin(db=self._queue) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(prefix):
                return jobs
            for key, raw in cursor:
                if not key.startswith(prefix) or len(jobs) >= limit:
                    break
                if key in in_flight:
                    continue
                job = _readable(bytes(key), raw, self._reported)
                if job is None:
                    continue
                study = job.study_instance_uid
                if study in busy_studies:
                    continue
                if job.not_before > now:
                    if ordered:  # later instances of this study wait for it
                        busy_studies = busy_studies | {study}
                    continue
                if jobs and total + job.size > max_bytes:
                    break
                jobs.append(job)
                total += job.size
        return jobs

    def next_due(self, dest: str, now: float) -> float | None:
        """When the next backing-off job may go (None: none backs off). Jobs already
        due but held back behind a busy study are not counted: the worker sending
        that study wakes the others when its batch is done."""
        prefix = _prefix(dest)
        soonest: float | None = None
        for _key, job in self._scan(self._queue, prefix, limit=10_000):
            if job.not_before > now and (soonest is None or job.not_before < soonest):
                soonest = job.not_before
        return soonest

    def settle(self, settlements: list[Settlement]) -> None:
        """Record what happened to jobs, in one durable transaction."""
        with self._env.begin(write=True) as txn:
            self.settle_in(txn, settlements)

    def settle_in(self, txn: lmdb.Transaction, settlements: list[Settlement]) -> None:
        """Record what happened to jobs inside `txn` (the group commit's)."""
        now = time.time()
        for item in settlements:
            job = item.job
            if not txn.delete(job.key, db=self._queue):
                continue  # purged by an admin meanwhile: nothing to record
            if item.outcome is Outcome.RETRY:
                txn.put(job.key, job.encode(), db=self._queue)
                continue
            self._count(txn, job.destination, "queued", -1)
            if item.outcome is Outcome.SENT:
                self._mark_done(txn, job, "sent", now)
            elif item.outcome is Outcome.DEAD:
                txn.put(_dead_key(job.destination, job.seq), job.encode(), db=self._dead)
                self._count(txn, job.destination, "dead", +1)
            else:
                txn.put(_waiting_key(job), job.encode(), db=self._waiting)
                self._count(txn, job.destination, "waiting", +1)

    def _mark_done(self, txn: lmdb.Transaction, job: Job, state: str, now: float) -> None:
        self.mark_delivered(txn, job.destination, job.sop_instance_uid, job.hash, state, now)
        self._count(txn, job.destination, state, +1)

    def mark_delivered(
        self,
        txn: lmdb.Transaction,
        dest: str,
        sop_instance_uid: str,
        blake3_hex: str,
        state: str,
        now: float | None = None,
    ) -> None:
        """Record that `dest` holds this version ("sent" or "committed")."""
        record = {"state": state, "at": time.time() if now is None else now, "hash": blake3_hex}
        key = _prefix(dest) + sop_instance_uid.encode()
        txn.put(key, orjson.dumps(record), db=self._done)

    def forget_delivered(self, txn: lmdb.Transaction, dests: Iterable[str], uid: str) -> None:
        """Drop what `mark_delivered` recorded of `uid` at each of `dests` (an MPPS
        message pruned: nothing asks for its delivery any more)."""
        for dest in dests:
            txn.delete(_prefix(dest) + uid.encode(), db=self._done)

    def waiting_ids(self, dest: str) -> set[str]:
        """What `dest`'s queued and dead-lettered jobs are for (their SOP Instance or
        MPPS message IDs): what must still be there when they go."""
        return {
            job.sop_instance_uid
            for db in (self._queue, self._dead)
            for _, job in self._scan(db, _prefix(dest))
        }

    # ---- storage commitment ------------------------------------------------------------

    def commitment_result(
        self, transaction_uid: str, committed: set[str], failed: dict[str, str]
    ) -> tuple[int, int]:
        """Apply an N-EVENT-REPORT: committed instances are done, failed ones go back
        to the queue. Returns (committed, re-queued); (0, 0) for an unknown transaction."""
        prefix = transaction_uid.encode() + b"\0"
        now = time.time()
        done = requeued = 0
        with self._env.begin(write=True) as txn:
            for key, job in list(self._scan(self._waiting, prefix, txn=txn)):
                uid = job.sop_instance_uid
                if uid not in committed and uid not in failed:
                    continue  # not in this report; it may come in a later one
                txn.delete(key, db=self._waiting)
                self._count(txn, job.destination, "waiting", -1)
                if uid in committed:
                    self._mark_done(txn, job, "committed", now)
                    done += 1
                else:
                    retry = replace(job, transaction_uid="", last_error=failed[uid])
                    self._requeue(txn, retry)
                    self._count(txn, job.destination, "commit_failed", +1)
                    requeued += 1
        return done, requeued

    def expire_waiting(self, older_than: float) -> int:
        """Commitment never reported: send those instances again (and ask again)."""
        count = 0
        with self._env.begin(write=True) as txn:
            for key, job in list(self._scan(self._waiting, b"", txn=txn)):
                if job.sent_at > older_than:
                    continue
                txn.delete(key, db=self._waiting)
                self._count(txn, job.destination, "waiting", -1)
                why = "no storage commitment report in time; sending again"
                self._requeue(txn, replace(job, transaction_uid="", last_error=why))
                count += 1
        return count

    def _requeue(self, txn: lmdb.Transaction, job: Job) -> None:
        fresh = replace(job, not_before=0.0, sent_at=0.0)
        txn.put(fresh.key, fresh.encode(), db=self._queue)
        self._count(txn, job.destination, "queued", +1)

    # ---- what ops see and steer --------------------------------------------------------

    def stats(self, dest: str) -> QueueStats:
        prefix = _prefix(dest)
        with self._env.begin() as txn:
            counts = {
                name: int(txn.get(prefix + name.encode(), b"0", db=self._counts))
                for name in COUNTERS
            }
            oldest: float | None = None
            for priority in (0, 1, 2):
                cursor = txn.cursor(db=self._queue)
                start = prefix + bytes([priority])
                if cursor.set_range(start) and cursor.key().startswith(start):
                    job = _readable(bytes(cursor.key()), cursor.value(), self._reported)
                    if job is not None:  # else a damaged first job leaves the age unknown
                        oldest = job.enqueued_at if oldest is None else min(oldest, job.enqueued_at)
        return QueueStats(**counts, oldest_enqueued_at=oldest)

    def jobs(self, dest: str, limit: int) -> list[Job]:
        return [job for _, job in self._scan(self._queue, _prefix(dest), limit=limit)]

    def dead_jobs(self, dest: str, limit: int) -> list[Job]:
        return [job for _, job in self._scan(self._dead, _prefix(dest), limit=limit)]

    def delivery(self, dest: str, sop_instance_uid: str) -> dict[str, Any] | None:
        with self._env.begin(db=self._done) as txn:
            raw = txn.get(_prefix(dest) + sop_instance_uid.encode())
        return None if raw is None else dict(json.loads(raw))

    def requeue_dead(self, dest: str, sop_instance_uid: str | None = None) -> int:
        count = 0
        with self._env.begin(write=True) as txn:
            for key, job in list(self._scan(self._dead, _prefix(dest), txn=txn)):
                if sop_instance_uid is not None and job.sop_instance_uid != sop_instance_uid:
                    continue
                txn.delete(key, db=self._dead)
                self._count(txn, dest, "dead", -1)
                self._requeue(txn, replace(job, attempts=0))
                count += 1
        return count

    def retry_now(self, dest: str) -> int:
        """Clear every backoff of a destination's jobs."""
        count = 0
        with self._env.begin(write=True) as txn:
            for key, job in list(self._scan(self._queue, _prefix(dest), txn=txn)):
                if job.not_before:
                    txn.put(key, replace(job, not_before=0.0).encode(), db=self._queue)
                    count += 1
        return count

    def purge(self, dest: str) -> int:
        """Drop every queued job of a destination (the objects stay on the edge),
        damaged records too: their keys are all it reads. A damaged record that the
        destination has in the dead letters or waiting for a storage commitment goes
        as well: nothing else can read it, and it would stay counted there for good.
        Returns how many records went."""
        prefix = _prefix(dest)
        with self._env.begin(write=True) as txn:
            queued = _keys(txn.cursor(db=self._queue), prefix)
            for key in queued:
                txn.delete(key, db=self._queue)
            self._count(txn, dest, "queued", -len(queued))
            removed = len(queued)
            waiting = [
                key
                for key in _keys(txn.cursor(db=self._waiting), b"")
                if key.split(b"\0", 1)[-1][:-9] == dest.encode()  # UID NUL dest NUL seq
            ]
            for db, name, keys in (
                (self._dead, "dead", _keys(txn.cursor(db=self._dead), prefix)),
                (self._waiting, "waiting", waiting),
            ):
                damaged = [
                    key for key in keys if not isinstance(_decoded(txn.get(key, b"", db=db)), Job)
                ]
                for key in damaged:
                    txn.delete(key, db=db)
                self._count(txn, dest, name, -len(damaged))
                removed += len(damaged)
        return removed

    def _scan(
        self,
        db: Any,
        prefix: bytes,
        limit: int | None = None,
        txn: lmdb.Transaction | None = None,
    ) -> Iterator[tuple[bytes, Job]]:
        own = txn is None
        txn = txn or self._env.begin()
        try:
            cursor = txn.cursor(db=db)
            if not cursor.set_range(prefix):
                return
            for n, (key, raw) in enumerate(cursor):
                key = bytes(key)
                if not key.startswith(prefix) or (limit is not None and n >= limit):
                    break
                job = _readable(key, bytes(raw), self._reported)
                if job is not None:
                    yield key, job
        finally:
            if own:
                txn.abort()
