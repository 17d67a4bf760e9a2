"""Real HAProxy for a test, configured from deploy/haproxy.cfg itself: only the
addresses, ports and check interval are swapped, so the shipped file is what runs."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from bench import balancer
from bench.peers import free_port
from tests.support.process import launch, wait_until

SOURCE = balancer.SOURCE


class HAProxyProcess:
    def __init__(self, workdir: Path, port: int, nodes: list[balancer.Node]) -> None:
        self.port = port
        self.tls_port = free_port()
        self.socket_path = workdir / "admin.sock"
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.workdir = workdir
        text = balancer.render(port, self.tls_port, nodes, self.socket_path)
        self.config_path.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxyProcess:
        check = subprocess.run(
            ["haproxy", "-c", "-f", str(self.config_path)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = launch(
            ["haproxy", "-db", "-f", str(self.config_path)], self.log_path, self.workdir
        )
        wait_until(self._listening, 10, f"HAProxy on 127.0.0.1:{self.port} and its admin socket")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"HAProxy exited: {self.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            # The DICOM port can listen before the admin socket does; `state` needs it.
            balancer.states(self.socket_path)
        except OSError:  # FileNotFoundError, ConnectionRefusedError: not yet
            return False
        return True

    def state(self, node: str, backend: str = "pacs_edge") -> str:
        """A node's state as HAProxy sees it (UP, DOWN, ...)."""
        return balancer.states(self.socket_path).get((backend, node), "")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None
