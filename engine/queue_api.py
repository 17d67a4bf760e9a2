"""/api/v1/queues: what ops see of the forward queues and how they steer them.

The same operations back `pacs-edge queue ...` and `pacs-edge dead ...`. Writes go
to LMDB in a worker thread; every answer says how many jobs it touched.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from engine.ops_http import Answer, Route

if TYPE_CHECKING:
    from engine.forwarder import DestinationRunner
    from engine.server import Services

_DEFAULT_LIMIT = 100


def routes(svc: Services) -> list[Route]:
    def runner(name: str) -> DestinationRunner | Answer:
        found = svc.forwarder.runners.get(name)
        if found is None:
            known = sorted(svc.forwarder.runners)
            return 404, {"error": f"no destination {name!r}", "destinations": known}
        return found

    def limit(query: dict[str, str]) -> int:
        try:
            return max(1, min(10_000, int(query.get("limit", _DEFAULT_LIMIT))))
        except ValueError:
            return _DEFAULT_LIMIT

    def overview(query: dict[str, str]) -> Answer:
        return 200, svc.forwarder.status()

    def queued(name: str, query: dict[str, str]) -> Answer:
        found = runner(name)
        if isinstance(found, tuple):
            return found
        jobs = svc.index.queues.jobs(name, limit(query))
        return 200, {"destination": name, **found.status(), "jobs": [_job(j) for j in jobs]}

    def dead(name: str, query: dict[str, str]) -> Answer:
        found = runner(name)
        if isinstance(found, tuple):
            return found
        jobs = svc.index.queues.dead_jobs(name, limit(query))
        return 200, {"destination": name, "jobs": [_job(j) for j in jobs]}

    async def retry(name: str, query: dict[str, str]) -> Answer:
        found = runner(name)
        if isinstance(found, tuple):
            return found
        count = await asyncio.to_thread(svc.index.queues.retry_now, name)
        svc.audit.write("queue_retried", destination=name, jobs=count)
        found.breaker.reset()
        await found.wake()
        return 200, {"destination": name, "retried": count}

    async def purge(name: str, query: dict[str, str]) -> Answer:
        found = runner(name)
        if isinstance(found, tuple):
            return found
        count = await asyncio.to_thread(svc.index.queues.purge, name)
        svc.audit.write("queue_purged", destination=name, jobs=count)
        return 200, {"destination": name, "purged": count}

    async def requeue(name: str, query: dict[str, str]) -> Answer:
        found = runner(name)
        if isinstance(found, tuple):
            return found
        uid = query.get("uid") or None
        count = await asyncio.to_thread(svc.index.queues.requeue_dead, name, uid)
        svc.audit.write("dead_requeued", destination=name, jobs=count, sop_instance_uid=uid)
        found.breaker.reset()
        await found.wake()
        return 200, {"destination": name, "requeued": count}

    return [
        Route("GET", "/api/v1/queues", overview),
        Route("GET", "/api/v1/queues/{name}", queued),
        Route("POST", "/api/v1/queues/{name}/retry", retry),
        Route("POST", "/api/v1/queues/{name}/purge", purge),
        Route("GET", "/api/v1/queues/{name}/dead", dead),
        Route("POST", "/api/v1/queues/{name}/dead/requeue", requeue),
    ]


def _job(job: Any) -> dict[str, Any]:
    record = asdict(job)
    record["priority"] = ("high", "normal", "low")[job.priority]
    return record
