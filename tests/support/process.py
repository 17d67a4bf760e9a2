"""Run a real `pacs-edge serve` process for a test: free ports, a TOML config,
a bounded wait for /readyz, and its log kept for the failure report."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.peers import descendants, free_port
from engine.ops.client import OpsClient

AE_TITLE = "PACS_EDGE"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    return json.dumps(str(value))


def write_toml(path: Path, settings: dict[str, Any]) -> None:
    """Sections are tables; a list of dicts is an array of tables ([[destination]])."""
    lines = []
    for section, values in settings.items():
        items = values if isinstance(values, list) else [values]
        header = f"[[{section}]]" if isinstance(values, list) else f"[{section}]"
        for item in items:
            lines.append(header)
            lines.extend(f"{key} = {_toml_value(v)}" for key, v in item.items())
            lines.append("")
    path.write_text("\n".join(lines))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` (bounded): for what another process does in its own time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def launch(command: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A server process with its output appended to `log_path`."""
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)


def wait_up(
    proc: subprocess.Popen[bytes], is_up: Callable[[], bool], timeout: float, log: Callable[[], str]
) -> None:
    """Poll `is_up` until it holds; fail with the log if the process dies or time runs out."""
    name = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log()}")
        try:
            if is_up():
                return
        except OSError:
            pass  # not listening yet: poll again until the deadline
        time.sleep(0.05)
    raise RuntimeError(f"{name} not up within {timeout} s:\n{log()}")


class EngineProcess:
    def __init__(
        self,
        workdir: Path,
        settings: dict[str, Any] | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.data_dir = data_dir or workdir / "data"
        self.port = free_port()
        self.http_port = free_port()
        self.config_path = workdir / "pacs-edge.toml"
        self.log_path = workdir / "engine.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._api: OpsClient | None = None
        self.token: str | None = None  # sent by `api` when the test configures tokens
        self.settings: dict[str, Any] = {
            # One process unless a test asks for workers: starts fast, and most
            # tests are about what happens inside one.
            "node": {"data_dir": str(self.data_dir), "ae_title": AE_TITLE, "workers": 1},
            "dicom": {"host": "127.0.0.1", "port": self.port, "artim_timeout": 5.0},
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "logging": {"level": "DEBUG"},
        }
        for section, values in (settings or {}).items():
            if isinstance(values, list):
                self.settings[section] = values
            else:
                self.settings.setdefault(section, {}).update(values)

    def start(self, timeout: float = 30) -> EngineProcess:
        write_toml(self.config_path, self.settings)
        command = [sys.executable, "-m", "engine.cli", "serve", "--config", str(self.config_path)]
        self.proc = launch(command, self.log_path, self.workdir)
        wait_up(self.proc, lambda: self.get("/readyz")[0] == 200, timeout, self.log)
        return self

    @property
    def api(self) -> OpsClient:
        """The ops API, as the CLI calls it (loopback: no token needed by default)."""
        if self._api is None:
            self._api = OpsClient(f"http://127.0.0.1:{self.http_port}", self.token)
        return self._api

    def get(self, path: str) -> tuple[int, Any]:
        return self.api.call(path)

    def post(self, path: str) -> tuple[int, Any]:
        return self.api.call(path, "POST")

    def get_text(self, path: str) -> str:
        return self.api.text(path)

    def status(self) -> dict[str, Any]:
        code, body = self.get("/api/v1/status")
        assert code == 200, body
        return dict(body)

    def instance(self, sop_instance_uid: str) -> dict[str, Any] | None:
        code, body = self.get(f"/api/v1/instances/{sop_instance_uid}")
        return dict(body) if code == 200 else None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the node, worker processes first: a power cut, not a shutdown."""
        assert self.proc is not None
        for child in descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def audit(self, event: str, timeout: float = 10) -> list[dict[str, Any]]:
        """The audit log's `event` lines, once there is one: the log is written in
        batches (twice a second), so a line may lag the action by that much."""
        path = self.data_dir / "audit.jsonl"

        def found() -> list[dict[str, Any]]:
            lines = path.read_text().splitlines() if path.exists() else []
            return [e for e in map(json.loads, lines) if e["event"] == event]

        wait_until(lambda: bool(found()), timeout, f"an audit line {event}")
        return found()

    def object_path(self, blake3_hex: str) -> Path:
        return self.data_dir / "objects" / blake3_hex[:2] / blake3_hex

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None
