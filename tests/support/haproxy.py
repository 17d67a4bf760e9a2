"""Real HAProxy for a test, configured from deploy/haproxy.cfg itself: only the
addresses, ports and check interval are swapped, so the shipped file is what runs."""

from __future__ import annotations

import csv
import io
import re
import signal
import socket
import subprocess
from pathlib import Path

from tests.support.process import launch, wait_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
SOURCE = "127.0.0.9"  # HAProxy's side of its connections to the nodes


class HAProxyProcess:
    def __init__(self, workdir: Path, port: int, nodes: list[tuple[str, int, int]]) -> None:
        """`nodes`: (name, DICOM port, HTTP port) of each pacs-edge node."""
        self.port = port
        self.socket_path = workdir / "admin.sock"
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.workdir = workdir
        text = DEPLOY.read_text()
        text = text.replace("    log /dev/log local0\n", "").replace(
            "maxconn 20000", "maxconn 2000"
        )
        text = re.sub(
            r"stats socket \S+ .*", f"stats socket {self.socket_path} mode 600 level admin", text
        )
        text = re.sub(r"bind \S+", f"bind 127.0.0.1:{port}", text)
        text = re.sub(r"source \S+", f"source {SOURCE}", text)
        text = text.replace("inter 2s fall 2 rise 3", "inter 300ms fall 2 rise 1")
        text = re.sub(r"    server .*\n", "", text)
        text += "".join(
            f"    server {name} 127.0.0.1:{dicom} check port {http}\n"
            for name, dicom, http in nodes
        )
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
        wait_until(self._listening, 10, f"HAProxy on 127.0.0.1:{self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"HAProxy exited: {self.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def states(self) -> dict[str, str]:
        """Each node's state as HAProxy sees it (UP, DOWN, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None
