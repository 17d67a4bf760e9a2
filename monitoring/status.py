"""What /api/v1/status, /healthz, /readyz and `pacs-edge status` report."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import core_rs
from monitoring.metrics import DestinationState, State

if TYPE_CHECKING:
    from engine.server import Services

_STARTED = time.time()


def status(svc: Services) -> dict[str, Any]:
    totals = svc.index.totals()
    counted = svc.metrics.totals(
        {"pacs_edge_associations": "result", "pacs_edge_dimse_responses": "status"}
    )
    disk = shutil.disk_usage(svc.layout.root)
    return {
        "version": core_rs.__version__,
        "build": core_rs.BUILD_PROFILE,
        "ae_title": svc.config.node.ae_title,
        "site": svc.config.node.site,
        "pid": os.getpid(),
        "uptime_seconds": round(time.time() - _STARTED, 1),
        "ready": svc.ready,
        "instances": totals.instances,
        "series": totals.series,
        "studies": totals.studies,
        "bytes": totals.bytes,
        "associations": _associations(svc, counted["pacs_edge_associations"]),
        "statuses_returned": {
            code: int(n) for code, n in sorted(counted["pacs_edge_dimse_responses"].items())
        },
        "workers": _workers(svc),
        **({"group_commit": svc.committer.stats.as_dict()} if svc.role == "all" else {}),
        "destinations": svc.forwarder.status(),
        "storage": {
            "data_dir": str(svc.layout.root.resolve()),
            "durability": svc.config.storage.durability,
            "disk_free_bytes": disk.free,
            "disk_total_bytes": disk.total,
            "refusing_associations": bool(_refusal(svc)),
            "tiers": {
                tier: {"instances": count, "bytes": size}
                for tier, (count, size) in svc.index.tier_totals().items()
            },
        },
        **({"lifecycle": svc.lifecycle.status()} if svc.lifecycle else {}),
    }


def _refusal(svc: Services) -> str:
    return svc.layout.disk_full(svc.config.storage.disk_high_watermark)


def _workers(svc: Services) -> dict[str, int]:
    """Ingest processes: one when it all runs in one process."""
    if svc.role == "all":
        return {"expected": 1, "running": 1}
    return {"expected": svc.config.ingest_workers, "running": svc.hub.live.workers()}


def _associations(svc: Services, results: dict[str, float]) -> dict[str, Any]:
    """Counted over every worker process (from the metrics), listed live."""
    live = svc.hub.live.all()
    return {
        "active": len(live),
        "accepted_total": int(results.get("accepted", 0)),
        "rejected_total": int(results.get("rejected", 0)),
        "aborted_total": int(results.get("aborted", 0)),
        # Connections of this process that have not associated yet (dicom.max_pending_connections).
        "pending_connections": svc.hub.pending,
        "live": [
            {
                "calling_ae": a.calling_ae,
                "peer": a.peer,
                **({"via": a.via} if a.via else {}),
                "tls": a.tls,
                "seconds": round(time.time() - a.since, 1),
            }
            for a in live
        ],
    }


def instance(svc: Services, sop_instance_uid: str) -> tuple[int, dict[str, Any]]:
    record = svc.index.get(sop_instance_uid)
    if record is None:
        return 404, {"error": f"no instance {sop_instance_uid} on this node"}
    return 200, asdict(record)


def healthz(svc: Services) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "alive"}


def readyz(svc: Services) -> tuple[int, dict[str, Any]]:
    if svc.hub.draining:
        return 503, {"status": "draining", "reason": "node is shutting down"}
    if not svc.ready:
        return 503, {"status": "starting", "reason": "index not open yet"}
    if svc.role == "background" and svc.hub.live.workers() == 0:
        return 503, {"status": "no ingest worker", "reason": "every ingest worker is starting"}
    full = _refusal(svc)
    if full:
        return 503, {
            "status": "disk full",
            "reason": f"{full}; new associations are refused: send modalities elsewhere "
            "until space is freed",
        }
    return 200, {"status": "ready"}


def metrics_state(svc: Services) -> State:
    """The engine's state as /metrics reports it (read at each scrape)."""
    totals = svc.index.totals()
    destinations = {}
    for name, runner in svc.forwarder.runners.items():
        now = runner.status()
        destinations[name] = DestinationState(
            depth=now["depth"],
            oldest_age_seconds=now["oldest_age_seconds"],
            in_flight=now["in_flight"],
            waiting_commitment=now["awaiting_commitment"],
            committed=now["committed"],
            dead=now["dead"],
            circuit_open=now["circuit"] != "closed",
        )
    return State(
        site=svc.config.node.site,
        ae_title=svc.config.node.ae_title,
        ready=readyz(svc)[0] == 200,
        associations_active=len(svc.hub.live.all()),
        instances_stored=totals.instances,
        bytes_stored=totals.bytes,
        data_paths={"data": svc.layout.root},
        destinations=destinations,
        tiers=svc.index.tier_totals(),
        refusing=bool(_refusal(svc)),
    )
