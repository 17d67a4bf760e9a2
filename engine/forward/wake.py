"""New jobs in another process: a datagram that wakes the forwarder.

Ingest workers commit jobs to LMDB; the background process forwards them. A
worker's group-commit thread sends the destination names to a Unix datagram
socket in <data_dir>/run, and the forwarder wakes those destinations at once. The
message is only a hint: the jobs are durable already, and an idle forwarder also
looks at its queues every few seconds, so a lost datagram costs latency, never an
object.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)
_MAX_DATAGRAM = 65536


def socket_path(run_dir: Path) -> Path:
    return run_dir / "forward.sock"


class WakeSender:
    """Used from the group-commit thread; never blocks it."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def notify(self, destinations: Iterable[str]) -> None:
        message = "\n".join(sorted(set(destinations))).encode()[:_MAX_DATAGRAM]
        try:
            self._sock.sendto(message, self._path)
        except OSError as exc:
            # Not started yet, restarting, or its buffer is full: it polls anyway.
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                log.warning("cannot wake the forwarder at %s: %s", self._path, exc)

    def close(self) -> None:
        self._sock.close()


def listen(path: Path, wake: Callable[[list[str]], None]) -> Callable[[], None]:
    """Call `wake(destination names)` for each datagram; returns the closer."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)

    def readable() -> None:
        while True:
            try:
                message = sock.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            wake([name for name in message.decode(errors="replace").split("\n") if name])

    loop.add_reader(sock.fileno(), readable)

    def close() -> None:
        loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    return close
