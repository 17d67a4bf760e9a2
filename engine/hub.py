"""The set of live associations: admission (limit, draining), counters, shutdown.

Associations register here so the server can refuse the (N+1)th at once instead
of queueing it, drain them in order on SIGTERM, and wait for every object in
flight before the index closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.live import LiveAssociation, LiveAssociations
from engine.store import StoreResult
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from policies import access
from storage.index import Outcome

if TYPE_CHECKING:
    from engine.association import Association

log = logging.getLogger(__name__)
_CUT_SECONDS = 10.0  # after the grace period, for the objects being received to finish


class AssociationHub:
    def __init__(
        self,
        limit: int,
        metrics: Metrics,
        audit: AuditLog,
        live: LiveAssociations,
        disk_full: Callable[[], str] = lambda: "",
    ) -> None:
        self.limit = limit
        self._disk_full = disk_full
        self._metrics = metrics
        self._audit = audit
        self.live = live
        self._all: set[Association] = set()
        self._established: set[Association] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.draining = False  # refuse new associations
        self.cutting = False  # grace is over: end each association after its object

    def add(self, association: Association) -> None:
        self._all.add(association)

    def remove(self, association: Association) -> None:
        self._all.discard(association)
        self.live.remove(_key(association))
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

    def record_store(self, result: StoreResult, calling_ae: str, seconds: float) -> None:
        self._metrics.statuses.labels(f"{result.status:#06x}").inc()
        if result.outcome not in (None, Outcome.STORED):
            self._metrics.duplicates.labels(result.outcome.value).inc()
        if result.status == 0x0000:
            self._metrics.stored(calling_ae, result.modality, result.size, seconds)

    def record_echo(self) -> None:
        self._metrics.statuses.labels("0x0000").inc()

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


def _key(association: Association) -> str:
    return f"{os.getpid()}-{association.id}"
