"""A pacs-edge server process: opens storage, serves DICOM and ops HTTP, shuts
down in order.

One process does everything (`role="all"`, `--workers 1`), or engine.workers runs
several "ingest" processes sharing the DICOM port plus one "background" process
that forwards and serves ops HTTP; they share the data directory and LMDB.

Start-up:  data tree -> spool cleaned -> index opened and checked -> group commit
           thread -> DICOM listener(s) -> ops HTTP -> forwarder -> lifecycle -> ready.
Shutdown (SIGTERM/SIGINT): not ready (/readyz 503) -> DICOM listeners closed ->
           open associations finish (release) within dicom.shutdown_grace, then
           end after their current object -> store tasks awaited -> lifecycle and
           forwarder stopped (unsent jobs stay queued) -> group commit flushed ->
           index closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import core_rs
from engine import queue_api, recall, reload, tls_listener, wake
from engine.association import Association
from engine.forwarder import Forwarder
from engine.hub import AssociationHub
from engine.lifecycle import LifecycleWorker
from engine.live import LiveAssociations
from engine.ops_http import OpsHttp, Raw, Route
from engine.reload import Reloader
from engine.store import StoreService
from monitoring import status
from monitoring.audit import AuditLog
from monitoring.metrics import CONTENT_TYPE, Metrics
from policies.config import Config, TlsConfig
from policies.rules import Router
from storage import recovery
from storage.committer import GroupCommitter
from storage.index import Index
from storage.layout import DataLayout

log = logging.getLogger(__name__)

Role = Literal["all", "ingest", "background"]
Closer = Callable[[], Awaitable[None] | None]


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
    lifecycle: LifecycleWorker | None = None  # in the process that forwards
    role: Role = "all"
    ready: bool = False


async def serve(
    config: Config,
    stop: asyncio.Event | None = None,
    load: Callable[[], Config] | None = None,
    role: Role = "all",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`); `load` re-reads the config on SIGHUP.
    Roles other than "all" expect engine.workers to have prepared the data tree."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    layout = DataLayout(config.node.data_dir)
    if role == "all":
        layout.prepare()
        layout.clean_spool()
    run_dir = None if role == "all" else layout.run
    index = Index(layout.index, config.storage.index_map_size, config.durable)
    if role == "all":
        index.upgrade()
        await asyncio.to_thread(recovery.verify, index, layout, config.storage.verify_on_start)
    else:
        index.check_readers()  # slots a killed worker held
    committer = GroupCommitter(index, layout, config.storage.on_duplicate)
    committer.start()
    # Finishing an object with fsync (fdatasync, rename, folder fsync) blocks a
    # thread, never the loop. One thread per possible association: they sleep in
    # syscalls, and the more syncs wait together, the more one journal commit carries.
    io_pool = ThreadPoolExecutor(
        max_workers=config.dicom.max_associations, thread_name_prefix="object-store"
    )
    metrics = Metrics(None if run_dir is None else layout.metrics)
    audit = AuditLog(config.audit_path, config.audit.patient_identifiers, config.node.site)
    hub = AssociationHub(
        config.dicom.max_associations,
        config.dicom.max_pending_connections,
        metrics,
        audit,
        LiveAssociations(run_dir),
        disk_full=lambda: layout.disk_full(svc.config.storage.disk_high_watermark),
    )
    router = Router(config.route, [dest.name for dest in config.destination])
    forwarder = Forwarder(config, index, committer, layout, io_pool, metrics, audit)
    if role == "all":
        committer.on_jobs = forwarder.jobs_queued
    elif role == "ingest":
        waker = wake.WakeSender(wake.socket_path(layout.run))
        committer.on_jobs = lambda jobs: waker.notify(job.destination for job in jobs)
    store = StoreService(config, layout, committer, io_pool, router, audit)
    lifecycle = None if role == "ingest" else LifecycleWorker(config, index, layout, metrics, audit)
    svc = Services(
        config,
        layout,
        index,
        committer,
        store,
        hub,
        forwarder,
        metrics,
        audit,
        lifecycle=lifecycle,
        role=role,
    )
    metrics.watch(lambda: status.metrics_state(svc))
    reloader = Reloader(svc, load or (lambda: config), lambda: _signal_workers(hub.live))
    reloads: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reloader.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    listeners: list[Closer] = []  # DICOM ports: closed first, new associations refused
    services: list[Closer] = []  # ops HTTP, the wake socket: closed once drained
    try:
        if role != "background":
            listeners += await _listen_dicom(svc, reuse_port=role == "ingest")
            hub.live.start()
        if role != "ingest":
            services.append(await _serve_http(svc, reloader, recall.Recaller(svc)))
            forwarder.start()
            if lifecycle is not None:
                lifecycle.start()
        if role == "background":
            services.append(wake.listen(wake.socket_path(layout.run), forwarder.wake))
    except StartupError:
        await _close_all(listeners + services)
        await forwarder.stop()
        if lifecycle is not None:
            await lifecycle.stop()
        committer.close()
        index.close()
        raise
    svc.ready = True
    _log_ready(svc, role)
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: no new associations; finishing objects in flight")
        svc.ready = False
        hub.draining = True
        await _close_all(listeners)
        await hub.shutdown(config.dicom.shutdown_grace)
        hub.live.stop()
        if role == "background":
            # /readyz answers 503 while the workers drain, so the balancer sees it.
            await _wait_for_workers(hub.live, config.dicom.shutdown_grace + 5)
        await _close_all(services)
        if lifecycle is not None:
            await lifecycle.stop()  # between two objects; each move is whole or not done
        await forwarder.stop()  # what is not sent stays queued on disk
        committer.close()
        io_pool.shutdown(wait=True)
        index.close()
        audit.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("stopped cleanly")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server coroutine on uvloop (the brief's loop), asyncio's if absent."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _listen_dicom(svc: Services, reuse_port: bool) -> list[Closer]:
    """The DICOM port, and the DICOM TLS port when enabled."""
    loop = asyncio.get_running_loop()
    dicom = svc.config.dicom
    closers: list[Closer] = []
    port, key = dicom.port, "[dicom] port or --port"
    try:
        server = await loop.create_server(
            lambda: Association(svc),
            dicom.host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=256,
        )
        closers.append(_server_closer(server))
        if dicom.tls.enabled:
            port, key = dicom.tls.port, "[dicom.tls] port"
            context = tls_context(dicom.tls)
            closers.append(await tls_listener.serve(svc, context, dicom.host, port, reuse_port))
    except OSError as exc:
        await _close_all(closers)
        raise StartupError(
            f"cannot listen for DICOM on {dicom.host}:{port}: {exc.strerror}"
            f" - is another DICOM server using it? Set {key}."
        ) from exc
    return closers


def _server_closer(server: asyncio.Server) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)

    return close


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """DICOM TLS (PS3.15 B.1/B.9): TLS 1.2+, client certificates verified if asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    try:
        context.load_cert_chain(tls.certificate, tls.private_key)
        if tls.client_ca:
            context.load_verify_locations(tls.client_ca)
            context.verify_mode = (
                ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
            )
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"DICOM TLS: cannot load dicom.tls.certificate / private_key / client_ca: {exc}"
        ) from exc
    return context


async def _serve_http(
    svc: Services, reloader: Reloader, recaller: recall.Recaller
) -> Callable[[], None]:
    config, metrics = svc.config, svc.metrics
    http = OpsHttp(
        [
            Route("GET", "/healthz", lambda query: status.healthz(svc), "open"),
            Route("GET", "/readyz", lambda query: status.readyz(svc), "open"),
            Route(
                "GET", "/metrics", lambda query: (200, Raw(CONTENT_TYPE, metrics.render())), "open"
            ),
            Route("GET", "/api/v1/status", lambda query: (200, status.status(svc))),
            Route("GET", "/api/v1/instances/{uid}", lambda uid, query: status.instance(svc, uid)),
            Route("GET", "/api/v1/config", lambda query: (200, reload.shown(svc.config))),
            Route(
                "POST",
                "/api/v1/reload",
                lambda caller, query: reloader.reload(from_api=True, caller=caller),
                "admin",
            ),
            *queue_api.routes(svc),
            *recall.routes(svc, recaller),
        ],
        lambda: svc.config.http.token,
        svc.audit,
    )
    try:
        await http.start(config.http.host, config.http.port)
    except OSError as exc:
        raise StartupError(
            f"cannot listen for ops HTTP on {config.http.host}:{config.http.port}: {exc.strerror}"
            " - set [http] port or --http-port."
        ) from exc
    return http.close


def _signal_workers(live: LiveAssociations) -> None:
    for pid in live.worker_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)


async def _close_all(closers: list[Closer]) -> None:
    for close in closers:
        result = close()
        if result is not None:
            await result


async def _wait_for_workers(live: LiveAssociations, limit: float) -> None:
    """The background process: wait for the ingest workers' associations to end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    # Another process's files: nothing to wait on but the clock.
    while live.all() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def _log_ready(svc: Services, role: Role) -> None:
    config = svc.config
    if role == "ingest":
        log.info("ingest worker ready on DICOM port %d", config.dicom.port)
        return
    if role == "background":
        log.info(
            "background process ready: forwarding, ops HTTP on %s:%d",
            config.http.host,
            config.http.port,
        )
        return
    log.info(
        "pacs-edge %s (%s build) ready: DICOM AE %s on %s:%d%s, ops HTTP on %s:%d, data in %s, "
        "durability %s",
        core_rs.__version__,
        core_rs.BUILD_PROFILE,
        config.node.ae_title,
        config.dicom.host,
        config.dicom.port,
        f" (TLS on {config.dicom.tls.port})" if config.dicom.tls.enabled else "",
        config.http.host,
        config.http.port,
        svc.layout.root.resolve(),
        config.storage.durability,
    )
