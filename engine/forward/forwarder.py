"""The forwarder: durable queues (storage.queue) to destinations (engine.forward.senders).

Per destination, `associations` worker tasks each claim a batch of jobs in queue
order and send it; each answer is settled in LMDB (in the next group commit) before
the next object goes. The queue on disk is the only truth: a job leaves it only
once the destination said Success (or it is dead-lettered), so a crash at any point
means a resend of at most the object in flight on each association, never a loss.

Failures that are the destination's (refused, unreachable, timeout, abort, out of
resources) pause the whole destination: a circuit breaker with exponential backoff
and jitter, probing with one association once the pause is over. Failures that
are the object's count attempts and end in dead letters, with the last status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from pydicom.uid import generate_uid

from engine.dicom.client import PeerUnavailable
from engine.forward import commitment
from engine.forward.mpps import MppsSender
from engine.forward.senders import Delivery, DicomSender, ObjectReader, Settle, StowSender
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from policies.config import Config, DicomDestination, ForwardConfig, MppsDestination
from storage.committer import GroupCommitter, IndexUnavailable
from storage.index import Index
from storage.layout import DataLayout
from storage.queue import Job, Outcome, Settlement

log = logging.getLogger(__name__)

_MAX_BATCH_BYTES = 64 * 2**20
_POLL = 5.0  # seconds a worker with nothing to do sleeps unless woken


class Sender(Protocol):
    async def send(self, jobs: list[Job], settle: Settle) -> None: ...
    async def idle(self) -> None: ...
    async def close(self) -> None: ...


class Breaker:
    """Closed: send. Open: wait until the pause ends. Then half-open: one probe."""

    def __init__(self, base: float, ceiling: float, threshold: int) -> None:
        self._base = base
        self._ceiling = ceiling
        self._threshold = threshold
        self.failures = 0
        self.open_until = 0.0
        self._probing = False
        self.last_error = ""

    @property
    def state(self) -> str:
        if self.failures == 0:
            return "closed"
        return "open" if self.failures >= self._threshold else "retrying"

    def wait_time(self, now: float) -> float:
        """Seconds this worker should wait before sending; 0: go (maybe as the probe)."""
        if self.failures == 0:
            return 0.0
        if now < self.open_until:
            return self.open_until - now
        if self._probing:
            return 1.0
        self._probing = True
        return 0.0

    def success(self) -> None:
        if self.failures:
            log.info("destination back after %d failure(s)", self.failures)
        self.failures = 0
        self._probing = False
        self.last_error = ""

    def failure(self, why: str, now: float) -> float:
        self.failures += 1
        self._probing = False
        self.last_error = why
        delay: float = min(self._ceiling, self._base * 2.0 ** (self.failures - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: edges must not retry in lockstep
        self.open_until = now + delay
        return delay

    def release_probe(self) -> None:
        self._probing = False

    def reset(self) -> None:
        """An admin says the destination is fixed: try at once."""
        self.failures = 0
        self.open_until = 0.0
        self._probing = False


class TokenBucket:
    """A bytes-per-second cap shared by a destination's associations."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._capacity = max(rate, 1 << 20)  # a burst of one second, at least one window
        self._tokens = float(self._capacity)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: int) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= min(amount, self._capacity):
                    self._tokens -= amount
                    return
                await asyncio.sleep((min(amount, self._capacity) - self._tokens) / self._rate)


@dataclass
class _Batch:
    """What one claimed batch has come to so far."""

    transaction_uid: str  # its storage commitment request; "": none
    deliveries: list[Delivery] = field(default_factory=list)
    settled: set[bytes] = field(default_factory=set)
    committed_refs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Activity:
    sent: int = 0
    sent_bytes: int = 0
    failed: int = 0


class DestinationRunner:
    def __init__(
        self,
        config: Config,
        dest: Any,
        index: Index,
        committer: GroupCommitter,
        objects: ObjectReader,
        io_pool: Executor,
        metrics: Metrics,
        audit: AuditLog,
    ) -> None:
        self.dest = dest
        self._committer = committer
        self._metrics = metrics
        self._audit = audit
        forward: ForwardConfig = config.forward
        self._forward = forward
        self._calling_ae = getattr(dest, "calling_ae", None) or config.node.ae_title
        self._queues = index.queues
        self._index = index
        self._objects = objects
        self._io_pool = io_pool
        self._batch = dest.batch_size or forward.batch_size
        self._max_attempts = dest.max_attempts or forward.max_attempts
        wait = getattr(dest, "commitment_wait", None)
        self._commitment_wait = forward.commitment_wait if wait is None else wait
        self.breaker = Breaker(
            forward.retry_base_delay, forward.retry_max_delay, forward.breaker_threshold
        )
        self._bucket = TokenBucket(dest.bandwidth) if dest.bandwidth else None
        self._wake = asyncio.Condition()
        self.in_flight: set[bytes] = set()
        self._busy_studies: Counter[str] = Counter()
        self.activity = Activity()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for n in range(self.dest.associations):
            self._tasks.append(asyncio.create_task(self._worker(n), name=f"{self.dest.name}-{n}"))
        if isinstance(self.dest, DicomDestination) and self.dest.commitment:
            self._tasks.append(asyncio.create_task(self._expire_commitments()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wake(self) -> None:
        async with self._wake:
            self._wake.notify_all()

    def _sender(self) -> Sender:
        throttle = self._bucket.take if self._bucket else None
        if isinstance(self.dest, MppsDestination):
            return MppsSender(self.dest, self._calling_ae, self._index.mpps)
        if isinstance(self.dest, DicomDestination):
            return DicomSender(self.dest, self._calling_ae, self._objects, throttle)
        return StowSender(self.dest, self._objects, throttle)

    async def _sleep(self, seconds: float) -> None:
        async with self._wake:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _worker(self, number: int) -> None:
        """One association's loop. A failure of this edge's own (the index refusing a
        settlement, a bug) pauses the destination like a failure of the destination's
        and starts over on a new association: it must not end forwarding unseen."""
        sender = self._sender()
        idle_since: float | None = None
        try:
            while True:
                try:
                    idle_since = await self._turn(sender, idle_since)
                except Exception as exc:  # logged with its traceback; the destination pauses
                    delay = self.breaker.failure(f"edge error: {exc!r}"[:200], time.time())
                    log.exception(
                        "%s: association %d failed on this edge; its jobs stay queued, "
                        "retrying in %.1f s",
                        self.dest.name,
                        number,
                        delay,
                    )
                    await self._close(sender)
                    sender = self._sender()
        finally:
            await self._close(sender)

    async def _turn(self, sender: Sender, idle_since: float | None) -> float | None:
        """Wait, or claim and send one batch; returns since when the queue is empty."""
        wait = self.breaker.wait_time(time.time())
        if wait > 0:
            await sender.idle()
            await self._sleep(min(wait, _POLL))  # "retry now" must wake it
            return idle_since
        jobs = self._queues.claim(
            self.dest.name,
            self._batch,
            _MAX_BATCH_BYTES,
            self.in_flight,
            set(self._busy_studies) if self.dest.ordered else set(),
            time.time(),
            self.dest.ordered,
        )
        if not jobs:
            self.breaker.release_probe()  # nothing to probe with
            now = time.monotonic()
            idle_since = idle_since or now
            if now - idle_since >= _POLL:
                await sender.idle()
            await self._sleep(self._until_due())
            return idle_since
        await self._send(sender, jobs)
        return None

    @staticmethod
    async def _close(sender: Sender) -> None:
        with contextlib.suppress(OSError, PeerUnavailable):
            await sender.close()

    def _until_due(self) -> float:
        """Seconds until the first backing-off job may go (at most the poll interval)."""
        now = time.time()
        due = self._queues.next_due(self.dest.name, now)
        return _POLL if due is None else min(_POLL, max(0.05, due - now))

    async def _send(self, sender: Sender, jobs: list[Job]) -> None:
        keys = [job.key for job in jobs]
        studies = [job.study_instance_uid for job in jobs]
        self.in_flight.update(keys)
        self._busy_studies.update(studies)
        batch = _Batch(str(generate_uid()) if self._wants_commitment() else "")
        try:
            try:
                await sender.send(jobs, partial(self._settle, batch))
            except PeerUnavailable as exc:
                untried = [job for job in jobs if job.key not in batch.settled]
                await self._settle(batch, [Delivery(j, "unreachable", str(exc)) for j in untried])
            except IndexUnavailable:
                raise  # nothing can be settled now; the worker pauses, the jobs stay as they are
            except Exception as exc:
                # A bug of ours with these objects: each spends an attempt, so one that
                # always fails ends in the dead letters instead of stalling the queue.
                untried = [job for job in jobs if job.key not in batch.settled]
                why = f"edge error: {exc!r}"[:200]
                await self._settle(batch, [Delivery(j, "permanent", why) for j in untried])
                raise
            self._judge(batch.deliveries)
            if batch.committed_refs:
                await self._request_commitment(batch.transaction_uid, batch.committed_refs)
        finally:
            self.in_flight.difference_update(keys)
            self._busy_studies.subtract(studies)
            self._busy_studies += Counter()  # drop zero counts
        await self.wake()  # jobs held back behind this batch's studies may go now

    async def _settle(self, batch: _Batch, deliveries: list[Delivery]) -> None:
        """Record answers in the next group commit, as they come: the sender waits
        for this before its next object, so a crash resends at most the object in
        flight on each association, never what the destination already has."""
        now = time.time()
        settlements = [self._settlement(batch, delivery, now) for delivery in deliveries]
        batch.deliveries += deliveries
        batch.settled.update(delivery.job.key for delivery in deliveries)
        await self._committer.settle(settlements)

    def _settlement(self, batch: _Batch, delivery: Delivery, now: float) -> Settlement:
        job = delivery.job
        result = "sent" if delivery.kind == "sent" else "failed"
        self._metrics.forward(self.dest.name, result, job.size, delivery.seconds)
        if delivery.kind == "sent":
            self.activity.sent += 1
            self.activity.sent_bytes += job.size
            self._audit.write(
                "instance_forwarded",
                destination=self.dest.name,
                sop_instance_uid=job.sop_instance_uid,
                size=job.size,
                commitment_transaction=batch.transaction_uid or None,
            )
            if not batch.transaction_uid:
                return Settlement(job, Outcome.SENT)
            batch.committed_refs.append((job.sop_class_uid, job.sop_instance_uid))
            waiting = replace(job, transaction_uid=batch.transaction_uid, sent_at=now)
            return Settlement(waiting, Outcome.AWAIT_COMMITMENT)
        if delivery.kind == "permanent":
            return self._failed(job, delivery.message, now, self._max_attempts)
        if delivery.kind == "retry":
            # "Not now" may be the destination's state (disk full) or this object's
            # (archives answer 0xA700 to what they cannot index): a larger budget.
            return self._failed(job, delivery.message, now, self._forward.max_busy_attempts)
        return Settlement(replace(job, last_error=delivery.message), Outcome.RETRY)

    def _judge(self, deliveries: list[Delivery]) -> None:
        """The batch as a whole says whether the destination is well."""
        trouble = [d for d in deliveries if d.kind in ("retry", "unreachable")]
        if trouble:
            delay = self.breaker.failure(trouble[0].message, time.time())
            log.warning(
                "%s: %s; pausing %.1f s (failure %d in a row)",
                self.dest.name,
                trouble[0].message,
                delay,
                self.breaker.failures,
            )
        elif deliveries:
            self.breaker.success()

    def _failed(self, job: Job, why: str, now: float, budget: int) -> Settlement:
        """One attempt spent: back off this job, or dead-letter it."""
        self.activity.failed += 1
        attempts = job.attempts + 1
        if attempts >= budget:
            self._metrics.forward(self.dest.name, "dead", job.size, 0.0)
            self._audit.write(
                "instance_dead_lettered",
                destination=self.dest.name,
                sop_instance_uid=job.sop_instance_uid,
                attempts=attempts,
                why=why,
            )
            log.error(
                "%s: %s dead-lettered after %d attempt(s): %s",
                self.dest.name,
                job.sop_instance_uid,
                attempts,
                why,
            )
            return Settlement(replace(job, attempts=attempts, last_error=why), Outcome.DEAD)
        delay = min(self._forward.retry_max_delay, self._forward.retry_base_delay * 2**attempts)
        retry = replace(job, attempts=attempts, last_error=why, not_before=now + delay)
        log.warning(
            "%s: %s failed (%s); attempt %d of %d in %.0f s",
            self.dest.name,
            job.sop_instance_uid,
            why,
            attempts,
            budget,
            delay,
        )
        return Settlement(retry, Outcome.RETRY)

    # ---- storage commitment ------------------------------------------------------------

    def _wants_commitment(self) -> bool:
        return isinstance(self.dest, DicomDestination) and self.dest.commitment

    async def _request_commitment(self, transaction_uid: str, refs: list[tuple[str, str]]) -> None:
        try:
            report = await asyncio.to_thread(
                commitment.request,
                self.dest,
                self._calling_ae,
                transaction_uid,
                refs,
                self._commitment_wait,
            )
        except commitment.CommitmentError as exc:
            log.error(
                "%s: %s; the %d instance(s) are sent again after commitment_timeout",
                self.dest.name,
                exc,
                len(refs),
            )
            return
        if report is not None:
            await apply_report(
                self._queues, self._io_pool, report, self._audit, "on the N-ACTION's association"
            )

    async def _expire_commitments(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self._forward.commitment_timeout / 4))
            older_than = time.time() - self._forward.commitment_timeout
            loop = asyncio.get_running_loop()
            count = await loop.run_in_executor(
                self._io_pool, self._queues.expire_waiting, older_than
            )
            if count:
                log.warning(
                    "%s: no commitment report for %d instance(s); sending again",
                    self.dest.name,
                    count,
                )
                await self.wake()

    # ---- what ops see ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        stats = self._queues.stats(self.dest.name)
        oldest = stats.oldest_enqueued_at
        return {
            "kind": self.dest.kind,
            "depth": stats.queued,
            "oldest_age_seconds": round(time.time() - oldest, 1) if oldest else 0.0,
            "in_flight": len(self.in_flight),
            "sent": stats.sent,
            "committed": stats.committed,
            "awaiting_commitment": stats.waiting,
            "failed": self.activity.failed,
            "dead": stats.dead,
            "sent_since_start": self.activity.sent,
            "bytes_sent_since_start": self.activity.sent_bytes,
            "circuit": self.breaker.state,
            "last_error": self.breaker.last_error,
        }


async def apply_report(
    queues: Any, io_pool: Executor, report: commitment.Report, audit: AuditLog, via: str
) -> None:
    """`via`: how the report came, for the log (the archive's choice, PS3.4 J.3.3)."""
    loop = asyncio.get_running_loop()
    done, requeued = await loop.run_in_executor(
        io_pool, queues.commitment_result, report.transaction_uid, report.committed, report.failed
    )
    audit.write(
        "commitment_report",
        transaction_uid=report.transaction_uid,
        committed=sorted(report.committed),
        failed=report.failed,
        applied=done + requeued,
        via=via,
    )
    log.info(
        "storage commitment %s, reported %s: %d committed, %d failed and re-queued",
        report.transaction_uid,
        via,
        done,
        requeued,
    )


class Forwarder:
    def __init__(
        self,
        config: Config,
        index: Index,
        committer: GroupCommitter,
        layout: DataLayout,
        io_pool: Executor,
        metrics: Metrics,
        audit: AuditLog,
    ) -> None:
        self._committer = committer
        self._objects = ObjectReader(index, layout, io_pool, metrics)
        self._index = index
        self._io_pool = io_pool
        self._metrics = metrics
        self._audit = audit
        self._config = config
        self.runners = {dest.name: self._runner(config, dest) for dest in config.queues}
        self._loop: asyncio.AbstractEventLoop | None = None  # set once the workers run
        self._wakes: set[asyncio.Task[None]] = set()

    def _runner(self, config: Config, dest: Any) -> DestinationRunner:
        return DestinationRunner(
            config,
            dest,
            self._index,
            self._committer,
            self._objects,
            self._io_pool,
            self._metrics,
            self._audit,
        )

    async def reconfigure(self, config: Config) -> list[str]:
        """Hot reload: restart the workers of destinations whose settings changed,
        start new ones, stop removed ones (their jobs stay queued on disk)."""
        forward_changed = config.forward != self._config.forward
        calling_changed = config.node.ae_title != self._config.node.ae_title
        wanted = {dest.name: dest for dest in config.queues}
        for name, runner in list(self.runners.items()):
            if wanted.get(name) != runner.dest or forward_changed or calling_changed:
                await runner.stop()
                del self.runners[name]
                if name not in wanted:
                    log.warning("destination %s removed: its queued jobs stay on disk", name)
        started = []
        for name, dest in wanted.items():
            if name not in self.runners:
                self.runners[name] = self._runner(config, dest)
                if self._loop is not None:
                    self.runners[name].start()
                started.append(name)
        self._config = config
        return started

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for runner in self.runners.values():
            runner.start()

    async def stop(self) -> None:
        await asyncio.gather(*(runner.stop() for runner in self.runners.values()))

    def jobs_queued(self, jobs: list[Job]) -> None:
        """From the committing thread (the loop itself with durability "os"): new jobs
        are durable, wake their workers."""
        if self._loop is not None:
            names = list({job.destination for job in jobs})
            self._loop.call_soon_threadsafe(self.wake, names)

    def wake(self, destinations: list[str]) -> None:
        """On the loop: jobs for these destinations were queued (here or by a worker)."""
        for name in destinations:
            runner = self.runners.get(name)
            if runner is not None:
                task = asyncio.get_running_loop().create_task(runner.wake())
                self._wakes.add(task)
                task.add_done_callback(self._wakes.discard)

    async def report(self, report: commitment.Report, via: str) -> None:
        await apply_report(self._index.queues, self._io_pool, report, self._audit, via)

    def status(self) -> dict[str, Any]:
        return {name: runner.status() for name, runner in self.runners.items()}
