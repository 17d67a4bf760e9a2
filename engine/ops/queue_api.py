"""/api/v1/queues: what ops see of the forward queues and how they steer them.

The same operations back `pacs-edge queue ...` and `pacs-edge dead ...`. Writes go
to LMDB in a worker thread; every answer says how many jobs it touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING, Any

from engine.ops.http import Answer, Route
from policies.http_access import Caller

if TYPE_CHECKING:
    from engine.forward.forwarder import DestinationRunner, Forwarder
    from engine.services import Shared

log = logging.getLogger(__name__)
_DEFAULT_LIMIT = 100


def routes(shared: Shared, forwarder: Forwarder) -> list[Route]:
    def runner(name: str) -> DestinationRunner | Answer:
        found = forwarder.runners.get(name)
        if found is None:
            known = sorted(forwarder.runners)
            return 404, {"error": f"no destination {name!r}", "destinations": known}
        return found

    def limit(query: dict[str, str]) -> int:
        try:
            return max(1, min(10_000, int(query.get("limit", _DEFAULT_LIMIT))))
        except ValueError:
            return _DEFAULT_LIMIT

    def overview(query: dict[str, str]) -> Answer:
        return 200, forwarder.status()

    def queued(name: str, query: dict[str, str]) -> Answer:
        found = runner(name)
        if isinstance(found, tuple):
            return found
        jobs = shared.index.queues.jobs(name, limit(query))
        return 200, {"destination": name, **found.status(), "jobs": [_job(j) for j in jobs]}

    def dead(name: str, query: dict[str, str]) -> Answer:
        found = runner(name)
        if isinstance(found, tuple):
            return found
        jobs = shared.index.queues.dead_jobs(name, limit(query))
        return 200, {"destination": name, "jobs": [_job(j) for j in jobs]}

    async def act(
        name: str,
        caller: Caller,
        work: Callable[[], int],
        event: str,
        key: str,
        send_now: bool,
        **audit: Any,
    ) -> Answer:
        """Run a queue change in a thread, audit it with who asked, and wake the
        destination if asked."""
        found = runner(name)
        if isinstance(found, tuple):
            return found
        count = await asyncio.to_thread(work)
        shared.audit.write(event, destination=name, jobs=count, **caller.audit_fields(), **audit)
        log.warning(
            "%s: %s %d job(s), asked by %s from %s", name, key, count, caller.name, caller.address
        )
        if send_now:
            found.breaker.reset()
            await found.wake()
        return 200, {"destination": name, key: count}

    queues = shared.index.queues

    def retry(name: str, caller: Caller, query: dict[str, str]) -> Awaitable[Answer]:
        work = partial(queues.retry_now, name)
        return act(name, caller, work, "queue_retried", "retried", True)

    def purge(name: str, caller: Caller, query: dict[str, str]) -> Awaitable[Answer]:
        work = partial(queues.purge, name)
        return act(name, caller, work, "queue_purged", "purged", False)

    def requeue(name: str, caller: Caller, query: dict[str, str]) -> Awaitable[Answer]:
        uid = query.get("uid") or None
        work = partial(queues.requeue_dead, name, uid)
        return act(name, caller, work, "dead_requeued", "requeued", True, sop_instance_uid=uid)

    return [
        Route("GET", "/api/v1/queues", overview),
        Route("GET", "/api/v1/queues/{name}", queued),
        Route("POST", "/api/v1/queues/{name}/retry", retry, "admin"),
        Route("POST", "/api/v1/queues/{name}/purge", purge, "admin"),
        Route("GET", "/api/v1/queues/{name}/dead", dead),
        Route("POST", "/api/v1/queues/{name}/dead/requeue", requeue, "admin"),
    ]


def _job(job: Any) -> dict[str, Any]:
    record = asdict(job)
    record["priority"] = ("high", "normal", "low")[job.priority]
    return record
