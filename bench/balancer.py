"""deploy/haproxy.cfg with local addresses: the shipped file, as the benchmark and
the tests run it. Only addresses, ports, limits and the check interval change."""

from __future__ import annotations

import csv
import io
import re
import socket
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
SOURCE = "127.0.0.9"  # HAProxy's side of its connections to the nodes


def render(port: int, nodes: list[tuple[str, int, int]], admin_socket: Path) -> str:
    """`nodes`: (name, DICOM port, HTTP port) of each pacs-edge node."""
    text = DEPLOY.read_text()
    text = text.replace("    log /dev/log local0\n", "")
    # Its FD limit follows maxconn; an unprivileged test shell cannot raise it to 40k.
    text = text.replace("maxconn 20000", "maxconn 2000")
    text = re.sub(r"stats socket \S+ .*", f"stats socket {admin_socket} mode 600 level admin", text)
    text = re.sub(r"bind \S+", f"bind 127.0.0.1:{port}", text)
    text = re.sub(r"source \S+", f"source {SOURCE}", text)
    text = text.replace("inter 2s fall 2 rise 3", "inter 300ms fall 2 rise 1")
    text = re.sub(r"    server .*\n", "", text)
    return text + "".join(
        f"    server {name} 127.0.0.1:{dicom} check port {http}\n" for name, dicom, http in nodes
    )


def states(admin_socket: Path) -> dict[str, str]:
    """Each node's state as HAProxy sees it (UP, DOWN, ...), from its admin socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(admin_socket))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {
        row["svname"]: row["status"] for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")
    }
