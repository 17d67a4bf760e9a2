"""The pacs-edge server process: opens storage, serves DICOM and ops HTTP, shuts
down in order.

Start-up:  data tree -> spool cleaned -> index opened and checked -> group commit
           thread -> DICOM listener -> ops HTTP -> forwarder -> ready.
Shutdown (SIGTERM/SIGINT): not ready -> DICOM listener closed -> associations
           drained (objects in flight finish, bounded by dicom.shutdown_grace) ->
           store tasks awaited -> forwarder stopped (unsent jobs stay queued) ->
           group commit flushed -> index closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import core_rs
from engine import queue_api
from engine.association import Association
from engine.forwarder import Forwarder
from engine.hub import AssociationHub
from engine.ops_http import OpsHttp, Raw, Route
from engine.reload import Reloader
from engine.store import StoreService
from monitoring import status
from monitoring.audit import AuditLog
from monitoring.metrics import CONTENT_TYPE, Metrics
from policies.config import Config
from policies.rules import Router
from storage import recovery
from storage.committer import GroupCommitter
from storage.index import Index
from storage.layout import DataLayout

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The engine cannot start; the message says what to change."""


@dataclass
class Services:
    """What every association shares."""

    config: Config
    layout: DataLayout
    index: Index
    committer: GroupCommitter
    store: StoreService
    hub: AssociationHub
    forwarder: Forwarder
    metrics: Metrics
    audit: AuditLog
    ready: bool = False


async def serve(
    config: Config, stop: asyncio.Event | None = None, load: Callable[[], Config] | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`); `load` re-reads the config on SIGHUP."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    layout = DataLayout(config.node.data_dir)
    layout.prepare()
    layout.clean_spool()
    index = Index(layout.index, config.storage.index_map_size, config.durable)
    await asyncio.to_thread(recovery.verify, index, layout, config.storage.verify_on_start)
    committer = GroupCommitter(index, layout, config.storage.on_duplicate)
    committer.start()
    # Finishing an object with fsync (fdatasync, rename, folder fsync) blocks a
    # thread, never the loop. One thread per possible association: they sleep in
    # syscalls, and the more syncs wait together, the more one journal commit carries.
    io_pool = ThreadPoolExecutor(
        max_workers=config.dicom.max_associations, thread_name_prefix="object-store"
    )
    metrics = Metrics()
    audit = AuditLog(config.audit_path, config.audit.patient_identifiers)
    hub = AssociationHub(config.dicom.max_associations, metrics, audit)
    router = Router(config.route, [dest.name for dest in config.destination])
    forwarder = Forwarder(config, index, layout, io_pool, metrics, audit)
    committer.on_jobs = forwarder.jobs_queued
    store = StoreService(config, layout, committer, io_pool, router, audit)
    svc = Services(config, layout, index, committer, store, hub, forwarder, metrics, audit)
    metrics.watch(lambda: status.metrics_state(svc))
    reloader = Reloader(svc, load or (lambda: config))
    reloads: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reloader.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)

    try:
        dicom = await loop.create_server(
            lambda: Association(svc),
            config.dicom.host,
            config.dicom.port,
            reuse_address=True,
            backlog=256,
        )
    except OSError as exc:
        committer.close()
        index.close()
        raise StartupError(
            f"cannot listen for DICOM on {config.dicom.host}:{config.dicom.port}: {exc.strerror}"
            " - is another DICOM server using it? Set [dicom] port or --port."
        ) from exc
    http = OpsHttp(
        [
            Route("GET", "/healthz", lambda query: status.healthz(svc)),
            Route("GET", "/readyz", lambda query: status.readyz(svc)),
            Route("GET", "/api/v1/status", lambda query: (200, status.status(svc))),
            Route("GET", "/metrics", lambda query: (200, Raw(CONTENT_TYPE, metrics.render()))),
            Route("POST", "/api/v1/reload", lambda query: reloader.reload()),
            Route("GET", "/api/v1/instances/{uid}", lambda uid, query: status.instance(svc, uid)),
            *queue_api.routes(svc),
        ]
    )
    try:
        await http.start(config.http.host, config.http.port)
    except OSError as exc:
        dicom.close()
        committer.close()
        index.close()
        raise StartupError(
            f"cannot listen for ops HTTP on {config.http.host}:{config.http.port}: {exc.strerror}"
            " - set [http] port or --http-port."
        ) from exc
    forwarder.start()
    svc.ready = True
    log.info(
        "pacs-edge %s (%s build) ready: DICOM AE %s on %s:%d, ops HTTP on %s:%d, data in %s, "
        "durability %s",
        core_rs.__version__,
        core_rs.BUILD_PROFILE,
        config.node.ae_title,
        config.dicom.host,
        config.dicom.port,
        config.http.host,
        config.http.port,
        layout.root.resolve(),
        config.storage.durability,
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down: no new associations; finishing objects in flight")
        svc.ready = False
        dicom.close()
        await hub.shutdown(config.dicom.shutdown_grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dicom.wait_closed(), timeout=5)
        http.close()
        await forwarder.stop()  # what is not sent stays queued on disk
        committer.close()
        io_pool.shutdown(wait=True)
        index.close()
        audit.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("stopped cleanly")
