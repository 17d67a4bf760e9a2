"""A pacs-edge server process: opens storage, serves DICOM and ops HTTP, shuts
down in order.

One process does everything (`role="all"`, `--workers 1`), or engine.workers runs
several "ingest" processes sharing the DICOM port plus one "background" process
that forwards and serves ops HTTP; they share the data directory and LMDB.

Start-up:  data tree -> spool cleaned -> audit log, index opened and checked ->
           group commit thread -> ops HTTP -> DICOM listener(s) -> forwarder ->
           lifecycle -> ready.
Shutdown (SIGTERM/SIGINT): not ready (/readyz 503) -> DICOM listeners closed ->
           open associations finish (release) within dicom.shutdown_grace, then
           end after their current object -> store tasks awaited -> ops HTTP
           closed -> lifecycle and forwarder stopped (unsent jobs stay queued) ->
           group commit flushed -> index and audit log closed. A start that fails
           half-way undoes what it did in the same order (one exit stack).
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
from typing import Any

import core_rs
from engine.dicom import tls_listener
from engine.dicom.association import Acceptor, Association
from engine.dicom.hub import AssociationHub
from engine.dicom.live import LiveAssociations
from engine.dicom.store import StoreService
from engine.forward import recall, wake
from engine.forward.forwarder import Forwarder
from engine.forward.senders import ObjectReader
from engine.hl7 import service as hl7_service
from engine.lifecycle import LifecycleWorker
from engine.ops import queue_api, reload, status
from engine.ops.http import Raw, Route
from engine.ops.reload import Reloader
from engine.services import Role, Shared
from engine.web import app as web_app
from engine.web.server import HttpServer
from engine.worklist.mirror import Mirror
from monitoring.audit import AuditLog
from monitoring.metrics import CONTENT_TYPE, Metrics
from policies.config import Config, TlsConfig
from policies.rules import Router
from storage import recovery
from storage.committer import GroupCommitter
from storage.index import Index, IndexOpenError
from storage.layout import DataLayout

log = logging.getLogger(__name__)

AsyncCloser = Callable[[], Awaitable[None]]


class StartupError(RuntimeError):
    """The engine cannot start; the message says what to change."""


async def serve(
    config: Config,
    stop: asyncio.Event | None = None,
    load: Callable[[], Config] | None = None,
    role: Role = "all",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`); `load` re-reads the config on SIGHUP.
    Roles other than "all" expect engine.workers to have prepared the data tree.

    Everything started is registered on one exit stack, in start-up order, so a
    start that fails half-way and a shutdown undo the same things in the same
    (reverse) order."""
    async with contextlib.AsyncExitStack() as stack:
        stop = _on_signals(stack, stop or asyncio.Event())
        shared, hub = await _start(stack, config, role, load)
        _log_ready(shared, role)
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("shutting down: no new associations; finishing objects in flight")
        shared.ready = False
        hub.draining = True
    log.info("stopped cleanly")


def _on_signals(stack: contextlib.AsyncExitStack, stop: asyncio.Event) -> asyncio.Event:
    """SIGTERM and SIGINT set `stop`, from before start-up on."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
        stack.callback(loop.remove_signal_handler, sig)
    return stop


async def _start(
    stack: contextlib.AsyncExitStack,
    config: Config,
    role: Role,
    load: Callable[[], Config] | None,
) -> tuple[Shared, AssociationHub]:
    """Open, start and wire everything; each step registers its undoing on `stack`.
    Undone last to first: DICOM listeners closed, associations drained, workers
    awaited (background), ops HTTP and the wake socket closed, lifecycle and forwarder
    stopped (unsent jobs stay queued), group commit flushed, index and audit closed."""
    layout = DataLayout(config.node.data_dir)
    if role == "all":
        layout.prepare()
        layout.clean_spool()
    run_dir = None if role == "all" else layout.run
    audit = AuditLog(config.audit_path, config.audit.patient_identifiers, config.node.site)
    stack.callback(audit.close)
    try:
        index = Index(layout.index, config.storage.index_map_size, config.durable)
    except IndexOpenError as exc:
        raise StartupError(str(exc)) from exc
    stack.callback(index.close)
    if role == "all":
        index.upgrade()
        await asyncio.to_thread(recovery.verify, index, layout, config.storage.verify_on_start)
    else:
        index.check_readers()  # slots a killed worker held
    # Blocking file work (reading extra routing attributes, unlinking what a failed
    # store wrote, the object reader) runs here, never on the loop: one thread per
    # possible association, since they sleep in syscalls.
    io_pool = ThreadPoolExecutor(
        max_workers=config.dicom.max_associations, thread_name_prefix="object-store"
    )
    stack.callback(io_pool.shutdown, wait=True)
    committer = GroupCommitter(
        index,
        layout,
        config.storage.on_duplicate,
        on_loop=not config.durable,
        sync_files=config.durable,
    )
    committer.start()
    stack.callback(committer.close)
    metrics = Metrics(None if run_dir is None else layout.metrics)
    shared = Shared(config, layout, index, committer, metrics, audit, role=role)
    forwarder = Forwarder(config, index, committer, layout, io_pool, metrics, audit)
    stack.push_async_callback(forwarder.stop)
    lifecycle = None
    if role != "ingest":
        lifecycle = LifecycleWorker(config, index, layout, metrics, audit)
        stack.push_async_callback(lifecycle.stop)  # between two moves: each whole or not done
    if role == "all":
        committer.on_jobs = forwarder.jobs_queued
    elif role == "ingest":
        waker = wake.WakeSender(wake.socket_path(layout.run))
        committer.on_jobs = lambda jobs: waker.notify(job.destination for job in jobs)
    hub = AssociationHub(
        config.dicom.max_associations,
        config.dicom.max_pending_connections,
        metrics,
        audit,
        LiveAssociations(run_dir),
        disk_full=lambda: layout.disk_full(shared.config.storage.disk_high_watermark),
    )
    router = Router(config.route, [dest.name for dest in config.destination])
    store = StoreService(shared, io_pool, router)
    mirror = Mirror(shared)  # worklist: polled where forwarding runs, asked everywhere
    node = status.Node(shared, hub, forwarder, lifecycle, mirror)
    metrics.watch(lambda: status.metrics_state(node))
    reloader = Reloader(
        shared,
        store,
        forwarder,
        lifecycle,
        load or (lambda: config),
        lambda: _signal_workers(hub.live),
    )
    _on_sighup(stack, reloader)
    recaller = recall.Recaller(shared, hub.track)  # for the API, C-MOVE and WADO
    if role != "ingest":
        mirror.start()
        stack.push_async_callback(mirror.stop)
    objects = ObjectReader(index, layout, io_pool, metrics)
    if role != "ingest":
        if role == "background":  # STOW-RS objects are committed here
            committer.on_jobs = forwarder.jobs_queued
        stack.push_async_callback(await _serve_http(node, reloader, recaller, store, objects))
    if role != "ingest" and config.hl7.enabled:
        try:
            stack.push_async_callback(await hl7_service.listen(shared, hub.track))
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HL7 on {config.hl7.host}:{config.hl7.port}: {exc.strerror}"
                " - set [hl7] port."
            ) from exc
    if role == "background":
        stack.callback(wake.listen(wake.socket_path(layout.run), forwarder.wake))
        # /readyz answers 503 while the workers drain, so the balancer sees it.
        stack.push_async_callback(_wait_for_workers, hub.live, config.dicom.shutdown_grace + 5)
    else:
        hub.live.start()
        stack.callback(hub.live.stop)
        stack.push_async_callback(hub.shutdown, config.dicom.shutdown_grace)
        acceptor = Acceptor(shared, hub, store, forwarder.report, objects, recaller, mirror)
        for close in await _listen_dicom(acceptor, reuse_port=role == "ingest"):
            stack.push_async_callback(close)  # closed first: new associations refused
    if role != "ingest":
        forwarder.start()
        if lifecycle is not None:
            lifecycle.start()
    shared.ready = True
    return shared, hub


def _on_sighup(stack: contextlib.AsyncExitStack, reloader: Reloader) -> None:
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reloader.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    stack.callback(loop.remove_signal_handler, signal.SIGHUP)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server coroutine on uvloop (the brief's loop), asyncio's if absent."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _listen_dicom(acceptor: Acceptor, reuse_port: bool) -> list[AsyncCloser]:
    """The DICOM port, and the DICOM TLS port when enabled."""
    loop = asyncio.get_running_loop()
    dicom = acceptor.shared.config.dicom
    closers: list[AsyncCloser] = []
    port, key = dicom.port, "[dicom] port or --port"
    try:
        server = await loop.create_server(
            lambda: Association(acceptor),
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
            closers.append(
                await tls_listener.serve(acceptor, context, dicom.host, port, reuse_port)
            )
    except OSError as exc:
        for close in closers:
            await close()
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
    node: status.Node,
    reloader: Reloader,
    recaller: recall.Recaller,
    store: StoreService,
    objects: ObjectReader,
) -> AsyncCloser:
    shared = node.shared
    config, metrics = shared.config, shared.metrics
    ops_routes = [
        Route("GET", "/healthz", lambda query: status.healthz(node), "open"),
        Route("GET", "/readyz", lambda query: status.readyz(node), "open"),
        Route("GET", "/metrics", lambda query: (200, Raw(CONTENT_TYPE, metrics.render())), "open"),
        Route("GET", "/api/v1/status", lambda query: (200, status.status(node))),
        Route("GET", "/api/v1/instances/{uid}", lambda uid, query: status.instance(node, uid)),
        Route("GET", "/api/v1/config", lambda query: (200, reload.shown(shared.config))),
        Route(
            "POST",
            "/api/v1/reload",
            lambda caller, query: reloader.reload(from_api=True, caller=caller),
            "admin",
        ),
        *queue_api.routes(shared, node.forwarder),
        *recall.routes(shared, recaller),
    ]
    app = web_app.build(node, ops_routes, recaller, store, objects)
    http = HttpServer(app, config.http)
    try:
        await http.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen for HTTP on {config.http.host}:{config.http.port}: {exc.strerror}"
            " - set [http] port or --http-port."
        ) from exc
    return http.close


def _signal_workers(live: LiveAssociations) -> None:
    for pid in live.worker_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)


async def _wait_for_workers(live: LiveAssociations, limit: float) -> None:
    """The background process: wait for the ingest workers' associations to end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    # Another process's files: nothing to wait on but the clock.
    while live.all() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def _log_ready(shared: Shared, role: Role) -> None:
    config = shared.config
    if role == "ingest":
        log.info("ingest worker ready on DICOM port %d", config.dicom.port)
        return
    if role == "background":
        log.info(
            "background process ready: forwarding; HTTP (ops API, DICOMweb, console) on %s:%d",
            config.http.host,
            config.http.port,
        )
        return
    log.info(
        "pacs-edge %s (%s build) ready: DICOM AE %s on %s:%d%s, HTTP (ops API, DICOMweb, "
        "console) on %s:%d, data in %s, "
        "durability %s",
        core_rs.__version__,
        core_rs.BUILD_PROFILE,
        config.node.ae_title,
        config.dicom.host,
        config.dicom.port,
        f" (TLS on {config.dicom.tls.port})" if config.dicom.tls.enabled else "",
        config.http.host,
        config.http.port,
        shared.layout.root.resolve(),
        config.storage.durability,
    )
