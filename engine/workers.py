"""`pacs-edge serve --workers N`: N ingest processes and one background process.

One asyncio loop tops out near one core, and a 16-core edge server takes many
modalities at once. The supervisor (this module, in the process the admin
started) prepares the data tree once, then starts:

- N "ingest" workers. Each binds the DICOM port(s) with SO_REUSEPORT, so the kernel
  spreads new connections over them, and opens the shared LMDB environment (LMDB
  serialises writers across processes; each worker group-commits its own objects).
- one "background" process: the forwarder (it learns of new jobs from a datagram,
  engine.forward.wake) and ops HTTP (/readyz, /metrics summed over every process, status).

A child that dies is started again (after 1 s, doubling to 30 s while it keeps
dying young). A dead worker's connections drop with it; the modality sees its
association end without a C-STORE-RSP and retries. Nothing it acknowledged can be
lost: Success went out only after the object and its index entry were durable.

SIGTERM/SIGINT: every child drains (see engine.server) and the supervisor exits 0
when they have; SIGHUP is passed on (each child reloads its configuration).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from engine.dicom import live
from policies.config import Config, ConfigError, load_config
from storage import recovery
from storage.index import Index, IndexOpenError
from storage.layout import DataLayout

log = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited loop or LMDB
_STARTUP_SECONDS = 60.0
_YOUNG = 10.0  # a child that dies sooner than this after its start is crash-looping
_MAX_BACKOFF = 30.0


@dataclass
class _Child:
    name: str
    role: str
    process: BaseProcess | None = None
    started: float = 0.0
    backoff: float = 1.0
    due: float = 0.0  # when to start it again after it died
    ready: Any = None  # the multiprocessing Event the child sets once it serves


def child_main(
    role: str, name: str, config_path: Path | None, overrides: dict[str, Any], ready: Any
) -> None:
    """The entry point of a child process (spawned, so it imports afresh)."""
    from engine.server import StartupError, run, serve
    from monitoring.logs import configure

    _end_with_supervisor()
    config = load_config(config_path, overrides)
    configure(config.logging.level, process=name)
    try:
        run(
            serve(
                config,
                load=lambda: load_config(config_path, overrides),
                role=role,  # type: ignore[arg-type]
                on_ready=ready.set,
            )
        )
    except StartupError as exc:
        print(f"pacs-edge {name}: {exc}", file=sys.stderr)
        sys.exit(2)


def _end_with_supervisor() -> None:
    """A supervisor killed with SIGKILL cannot stop its children: the kernel does
    (PR_SET_PDEATHSIG), or an orphaned worker would hold the port and the index."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        sys.exit(1)


class Supervisor:
    def __init__(self, config: Config, config_path: Path | None, overrides: dict[str, Any]):
        self._config = config
        self._path = config_path
        self._overrides = overrides
        self._layout = DataLayout(config.node.data_dir)
        count = config.ingest_workers
        self._children = [_Child(f"ingest-{n}", "ingest") for n in range(1, count + 1)]
        self._children.append(_Child("background", "background"))
        self._stopping = False
        self._reload = False

    def run(self) -> int:
        self._prepare()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        for child in self._children:
            self._start(child)
        if not self._await_startup():
            self._stop_all()
            return 2
        log.info(
            "pacs-edge ready: %d ingest worker(s) on DICOM port %d%s, background process with "
            "ops HTTP on %s:%d",
            len(self._children) - 1,
            self._config.dicom.port,
            f" and TLS port {self._config.dicom.tls.port}"
            if self._config.dicom.tls.enabled
            else "",
            self._config.http.host,
            self._config.http.port,
        )
        while not self._stopping:
            self._watch()
        self._stop_all()
        log.info("stopped cleanly")
        return 0

    def _prepare(self) -> None:
        """What one process must do before many share the data directory."""
        layout = self._layout
        layout.prepare()
        layout.clean_spool()
        layout.clear_run()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(layout.metrics)
        index = Index(layout.index, self._config.storage.index_map_size, self._config.durable)
        try:
            index.upgrade()
            recovery.verify(index, layout, self._config.storage.verify_on_start)
        finally:
            index.close()

    def _start(self, child: _Child) -> None:
        child.ready = _SPAWN.Event()
        child.process = _SPAWN.Process(
            target=child_main,
            args=(child.role, child.name, self._path, self._overrides, child.ready),
            name=child.name,
            daemon=False,
        )
        child.process.start()
        child.started = time.monotonic()
        log.info("%s started (pid %d)", child.name, child.process.pid)

    def _await_startup(self) -> bool:
        deadline = time.monotonic() + _STARTUP_SECONDS
        for child in self._children:
            assert child.process is not None
            while not child.ready.wait(0.2):
                if not child.process.is_alive() or self._stopping:
                    log.error("%s did not start (exit code %s)", child.name, child.process.exitcode)
                    return False
                if time.monotonic() > deadline:
                    log.error("%s did not start within %.0f s", child.name, _STARTUP_SECONDS)
                    return False
        return True

    def _watch(self) -> None:
        """One round: reap dead children, start due ones, pass on a reload."""
        if self._reload:
            self._reload = False
            self._signal_all(signal.SIGHUP)
        running = [c.process.sentinel for c in self._children if c.process is not None]
        multiprocessing.connection.wait(running, timeout=0.5)
        now = time.monotonic()
        for child in self._children:
            process = child.process
            if process is not None and not process.is_alive() and not self._stopping:
                self._reaped(child, process, now)
            elif process is None and now >= child.due and not self._stopping:
                self._start(child)

    def _reaped(self, child: _Child, process: BaseProcess, now: float) -> None:
        process.join()
        pid = process.pid or 0
        live.forget_process(self._layout.run, pid)
        self._layout.clean_spool(pid)
        _forget_metrics(pid)
        young = now - child.started < _YOUNG
        child.backoff = min(child.backoff * 2, _MAX_BACKOFF) if young else 1.0
        child.due = now + child.backoff
        child.process = None
        log.error(
            "%s (pid %d) ended with exit code %s; starting it again in %.0f s. Its open "
            "associations were cut; everything it acknowledged is stored.",
            child.name,
            pid,
            process.exitcode,
            child.backoff,
        )

    def _stop_all(self) -> None:
        self._stopping = True
        log.info("stopping: every process drains its associations (dicom.shutdown_grace)")
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._config.dicom.shutdown_grace + 30
        for child in self._children:
            if child.process is None:
                continue
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                log.error("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.join()

    def _signal_all(self, sig: int) -> None:
        for child in self._children:
            if child.process is not None and child.process.pid is not None:
                try:
                    os.kill(child.process.pid, sig)
                except ProcessLookupError:
                    continue

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True


def _forget_metrics(pid: int) -> None:
    """prometheus-client's clean-up for a dead process's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve_workers(config_path: Path | None, overrides: dict[str, Any]) -> int:
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        print(f"pacs-edge: {exc}", file=sys.stderr)
        return 2
    try:
        return Supervisor(config, config_path, overrides).run()
    except IndexOpenError as exc:
        print(f"pacs-edge: {exc}", file=sys.stderr)
        return 2
