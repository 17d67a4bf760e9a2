"""The set of live associations: admission (limit, draining), counters, shutdown.

Associations register here so the server can refuse the (N+1)th at once instead
of queueing it, drain them in order on SIGTERM, and wait for every object in
flight before the index closes.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.dicom.live import LiveAssociation, LiveAssociations
from engine.dicom.pumps import Pumps
from engine.dicom.store import StoreResult
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from policies import access
from storage.index import Outcome

if TYPE_CHECKING:
    from engine.dicom.association import Association

log = logging.getLogger(__name__)
_CUT_SECONDS = 10.0  # after the grace period, for the objects being received to finish
_TRIM_AFTER = 64  # connections at once that make it worth giving memory back after
_GIVE_BACK_AFTER = 1.0  # seconds after a flood is mostly over


class AssociationHub:
    def __init__(
        self,
        limit: int,
        max_pending: int,
        metrics: Metrics,
        audit: AuditLog,
        live: LiveAssociations,
        disk_full: Callable[[], str] = lambda: "",
    ) -> None:
        self.limit = limit
        self.max_pending = max_pending
        self._pending: set[Association] = set()  # connected, no A-ASSOCIATE-RQ answered
        self._pending_warned = -60.0
        self._peak = 0  # most connections at once since memory was last given back
        self._giving_back: asyncio.TimerHandle | None = None
        self._disk_full = disk_full
        self._metrics = metrics
        self._audit = audit
        self.live = live
        self._all: set[Association] = set()
        self._established: set[Association] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stores = 0  # objects being indexed without a task (Association._store_then)
        self._stores_settled: asyncio.Future[None] | None = None  # set by shutdown
        self.draining = False  # refuse new associations
        self.cutting = False  # grace is over: end each association after its object
        self.pumps = Pumps()  # associations' socket-reading threads (engine.dicom.pumps)

    def add(self, association: Association) -> bool:
        """A new connection; False when too many have not associated yet (the
        caller closes it: before association, each costs memory and a file
        descriptor, and ARTIM alone lets an idle flood hold them for 30 s)."""
        if len(self._pending) >= self.max_pending:
            self._metrics.refused_connections.inc()
            now = time.monotonic()
            if now - self._pending_warned >= 60:
                self._pending_warned = now
                log.warning(
                    "refusing connections: %d have not sent an A-ASSOCIATE-RQ yet "
                    "(dicom.max_pending_connections); a port scan or a stuck client?",
                    len(self._pending),
                )
            return False
        self._all.add(association)
        self._pending.add(association)
        self._peak = max(self._peak, len(self._all))
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def associated(self, association: Association) -> None:
        """Its A-ASSOCIATE-RQ was accepted: no longer pending (a rejected one stays
        pending until its peer closes or ARTIM does)."""
        self._pending.discard(association)

    def free_slot(self, association: Association) -> None:
        """An association we aborted stops counting against the limits at once,
        not when its peer gets round to closing the connection."""
        self.live.remove(_key(association))

    def remove(self, association: Association) -> None:
        self._all.discard(association)
        self._pending.discard(association)
        self.live.remove(_key(association))
        if self._peak >= _TRIM_AFTER and len(self._all) <= self._peak // 8:
            # A flood of connections is over: give its memory back once the rest of it
            # has closed too (a moment later, not per connection).
            self._peak = len(self._all)
            if self._giving_back is None:
                loop = asyncio.get_running_loop()
                self._giving_back = loop.call_later(_GIVE_BACK_AFTER, self._give_back)
        if association in self._established and not association.released:
            self._metrics.association(association.calling_ae, "aborted", association.host)
        self._established.discard(association)

    def admit(
        self, association: Association, ae_limit: int | None, stores: bool = True
    ) -> access.Rejection | None:
        """The dynamic part of accepting an association (PS3.8 9.3.4 reasons): node
        and calling-AE limits over every worker process, and room on the data disk
        for one that `stores`; admitted means counted."""
        if self.draining:
            return access.temporary_congestion("node is shutting down")
        disk_full = self._disk_full() if stores else ""
        if disk_full:
            # Transient: the modality retries (or the balancer tries another node)
            # once the destinations have caught up and purging made room.
            return access.local_limit_exceeded(disk_full)
        entry = LiveAssociation(
            key=_key(association),
            calling_ae=association.calling_ae,
            peer=association.peer,
            via=association.via,
            tls=association.tls_names is not None,
            since=time.time(),
        )
        full = self.live.admit(entry, self.limit, ae_limit)
        return None if full is None else access.local_limit_exceeded(full)

    def established(self, association: Association) -> None:
        self._established.add(association)
        self._count(association, "accepted")

    def rejected(self, association: Association, rejection: access.Rejection) -> None:
        """Every A-ASSOCIATE-RJ sent, whatever the reason (counted at AE-8)."""
        self._count(
            association,
            "rejected",
            result=rejection.result,
            source=rejection.source,
            reason=rejection.reason,
            why=rejection.message,
        )

    def _count(self, association: Association, outcome: str, **audited: object) -> None:
        """Metrics and audit line of an association's outcome (status reads the metrics)."""
        self._metrics.association(association.calling_ae, outcome, association.host)
        self._audit.write(
            f"association_{outcome}",
            calling_ae=association.calling_ae,
            peer=association.peer,
            **association.transport_facts(),
            **audited,
        )

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def store_began(self) -> None:
        self._stores += 1

    def store_ended(self) -> None:
        self._stores -= 1
        settled = self._stores_settled
        if not self._stores and settled is not None and not settled.done():
            settled.set_result(None)

    def record_store(self, result: StoreResult, calling_ae: str, seconds: float) -> None:
        self._metrics.status(result.status)
        if result.outcome not in (None, Outcome.STORED):
            self._metrics.duplicates.labels(result.outcome.value).inc()
        if result.status == 0x0000:
            self._metrics.stored(calling_ae, result.modality, result.size, seconds)

    def record_echo(self) -> None:
        self._metrics.status(0x0000)

    async def shutdown(self, grace: float) -> None:
        """Drain: open associations get up to `grace` s to finish (release) by
        themselves; then each ends after the object it is receiving; then abort."""
        self.draining = True
        waiting = [a.closed for a in self._all]
        if waiting:
            log.info("shutdown: waiting up to %.0f s for %d association(s)", grace, len(waiting))
            _, pending = await asyncio.wait(waiting, timeout=grace)
            if pending:
                log.warning(
                    "shutdown: grace period over; ending %d association(s) after their "
                    "current object",
                    len(pending),
                )
                self.cutting = True
                for association in list(self._all):
                    association.drain()
                _, pending = await asyncio.wait(pending, timeout=_CUT_SECONDS)
            for association in list(self._all):
                if not association.closed.done():
                    association.abort("shutdown grace period over")
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._stores:  # their group commit answers each, even of a closed association
            self._stores_settled = asyncio.get_running_loop().create_future()
            await self._stores_settled
        self.pumps.close()

    def _give_back(self) -> None:
        """Free the closed connections' objects, which sit in reference cycles
        (protocol, transport, futures) until the cyclic collector runs (an idle engine
        allocates too little to trigger it), then return glibc's free pages: without
        both, the RSS of a scan's peak stays for good."""
        self._giving_back = None
        gc.collect()
        _malloc_trim()


def _malloc_trim() -> None:
    """Return the C heap's free pages to the kernel (glibc; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _key(association: Association) -> str:
    return f"{os.getpid()}-{association.id}"
