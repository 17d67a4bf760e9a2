"""deploy/haproxy.cfg with local addresses: the shipped file, as the benchmark and
the tests run it. Only addresses, ports, limits and the check interval change."""

from __future__ import annotations

import csv
import io
import re
import socket
from dataclasses import dataclass
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
SOURCE = "127.0.0.9"  # HAProxy's side of its connections to the nodes
_DICOM, _TLS = "104", "2762"  # the frontends' ports in the shipped file
_NODE_DICOM, _NODE_TLS = "11112", "2762"  # the nodes' ports in the shipped file


@dataclass(frozen=True)
class Node:
    name: str  # edge1, edge2: the shipped file's server names, in order
    dicom_port: int
    http_port: int
    tls_port: int = 0  # 0: the node has no TLS port (HAProxy sees it DOWN there)


def render(port: int, tls_port: int, nodes: list[Node], admin_socket: Path) -> str:
    """The shipped file listening on 127.0.0.1:`port` (and `tls_port`) in front of
    `nodes`; servers beyond len(nodes) are dropped."""
    text = DEPLOY.read_text()
    text = text.replace("    log /dev/log local0\n", "")
    # Its FD limit follows maxconn; an unprivileged test shell cannot raise it to 40k.
    text = text.replace("maxconn 20000", "maxconn 2000")
    text = re.sub(r"stats socket \S+ .*", f"stats socket {admin_socket} mode 600 level admin", text)
    frontends = {_DICOM: port, _TLS: tls_port}
    text = re.sub(r"bind \S+:(\d+)", lambda m: f"bind 127.0.0.1:{frontends[m[1]]}", text)
    text = re.sub(r"source \S+", f"source {SOURCE}", text)
    text = text.replace("inter 2s fall 2 rise 3", "inter 300ms fall 2 rise 1")
    by_name = {node.name: node for node in nodes}

    def server(match: re.Match[str]) -> str:
        node = by_name.get(match[1])
        if node is None:
            return ""
        target = node.dicom_port if match[2] == _NODE_DICOM else node.tls_port or 1
        return f"    server {node.name} 127.0.0.1:{target} check port {node.http_port}\n"

    return re.sub(r"    server (\S+) \S+:(\d+) check port \d+\n", server, text)


def states(admin_socket: Path) -> dict[tuple[str, str], str]:
    """(backend, node) -> state as HAProxy sees it (UP, DOWN, ...)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(admin_socket))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return {
        (row["pxname"], row["svname"]): row["status"]
        for row in rows
        if row["svname"] not in ("FRONTEND", "BACKEND")
    }
