"""What /api/v1/status, /healthz, /readyz and `pacs-edge status` report."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import core_rs
from monitoring.metrics import DestinationState, State

if TYPE_CHECKING:
    from engine.dicom.hub import AssociationHub
    from engine.forward.forwarder import Forwarder
    from engine.lifecycle import LifecycleWorker
    from engine.services import Shared
    from engine.worklist.mirror import Mirror

_STARTED = time.time()


@dataclass(frozen=True)
class Node:
    """What the status documents read: the shared state and the parts that report."""

    shared: Shared
    hub: AssociationHub
    forwarder: Forwarder
    lifecycle: LifecycleWorker | None
    worklist: Mirror | None = None


def status(node: Node) -> dict[str, Any]:
    totals = node.shared.index.totals()
    index_bytes, index_map_bytes = node.shared.index.space()
    counted = node.shared.metrics.totals(
        {"pacs_edge_associations": "result", "pacs_edge_dimse_responses": "status"}
    )
    disk = shutil.disk_usage(node.shared.layout.root)
    return {
        "version": core_rs.__version__,
        "build": core_rs.BUILD_PROFILE,
        "ae_title": node.shared.config.node.ae_title,
        "site": node.shared.config.node.site,
        "pid": os.getpid(),
        "uptime_seconds": round(time.time() - _STARTED, 1),
        "ready": node.shared.ready,
        "instances": totals.instances,
        "series": totals.series,
        "studies": totals.studies,
        "bytes": totals.bytes,
        "associations": _associations(node, counted["pacs_edge_associations"]),
        "statuses_returned": {
            code: int(n) for code, n in sorted(counted["pacs_edge_dimse_responses"].items())
        },
        "workers": _workers(node),
        **(
            {"group_commit": node.shared.committer.stats.as_dict()}
            if node.shared.role == "all"
            else {}
        ),
        "destinations": node.forwarder.status(),
        "storage": {
            "data_dir": str(node.shared.layout.root.resolve()),
            "durability": node.shared.config.storage.durability,
            "disk_free_bytes": disk.free,
            "disk_total_bytes": disk.total,
            "refusing_associations": bool(_refusal(node)),
            "catalog_rebuild_due": totals.catalog_damaged,
            "index_bytes": index_bytes,
            "index_map_bytes": index_map_bytes,
            "tiers": {
                tier: {"instances": count, "bytes": size}
                for tier, (count, size) in node.shared.index.tier_totals().items()
            },
        },
        **({"lifecycle": node.lifecycle.status()} if node.lifecycle else {}),
        **(
            {"worklist": node.worklist.status()}
            if node.worklist and node.shared.config.worklist_source
            else {}
        ),
    }


def _refusal(node: Node) -> str:
    return node.shared.layout.disk_full(node.shared.config.storage.disk_high_watermark)


def _workers(node: Node) -> dict[str, int]:
    """Ingest processes: one when it all runs in one process."""
    if node.shared.role == "all":
        return {"expected": 1, "running": 1}
    return {"expected": node.shared.config.ingest_workers, "running": node.hub.live.workers()}


def _associations(node: Node, results: dict[str, float]) -> dict[str, Any]:
    """Counted over every worker process (from the metrics), listed live."""
    live = node.hub.live.all()
    return {
        "active": len(live),
        "accepted_total": int(results.get("accepted", 0)),
        "rejected_total": int(results.get("rejected", 0)),
        "aborted_total": int(results.get("aborted", 0)),
        # Connections of this process that have not associated yet (dicom.max_pending_connections).
        "pending_connections": node.hub.pending,
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


def instance(node: Node, sop_instance_uid: str) -> tuple[int, dict[str, Any]]:
    record = node.shared.index.get(sop_instance_uid)
    if record is None:
        return 404, {"error": f"no instance {sop_instance_uid} on this node"}
    return 200, asdict(record)


def healthz(node: Node) -> tuple[int, dict[str, Any]]:
    return 200, {"status": "alive"}


def readyz(node: Node) -> tuple[int, dict[str, Any]]:
    if node.hub.draining:
        return 503, {"status": "draining", "reason": "node is shutting down"}
    if not node.shared.ready:
        return 503, {"status": "starting", "reason": "index not open yet"}
    if node.shared.role == "background" and node.hub.live.workers() == 0:
        return 503, {"status": "no ingest worker", "reason": "every ingest worker is starting"}
    full = _refusal(node)
    if full:
        return 503, {
            "status": "disk full",
            "reason": f"{full}; new associations are refused: send modalities elsewhere "
            "until space is freed",
        }
    return 200, {"status": "ready"}


def metrics_state(node: Node) -> State:
    """The engine's state as /metrics reports it (read at each scrape)."""
    totals = node.shared.index.totals()
    index_bytes, index_map_bytes = node.shared.index.space()
    destinations = {}
    for name, runner in node.forwarder.runners.items():
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
        site=node.shared.config.node.site,
        ae_title=node.shared.config.node.ae_title,
        ready=readyz(node)[0] == 200,
        associations_active=len(node.hub.live.all()),
        instances_stored=totals.instances,
        bytes_stored=totals.bytes,
        data_paths={"data": node.shared.layout.root},
        destinations=destinations,
        tiers=node.shared.index.tier_totals(),
        refusing=bool(_refusal(node)),
        catalog_damaged=totals.catalog_damaged,
        index_bytes=index_bytes,
        index_map_bytes=index_map_bytes,
        worklist_ages=node.worklist.ages() if node.worklist else {},
    )
