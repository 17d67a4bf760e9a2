"""The raw limits an SCP works under, measured in the same run as the peers.

- loopback: the corpus's bytes pushed through N TCP connections on 127.0.0.1 with
  nothing but send/recv (1 MiB buffers, TCP_NODELAY), one sender and one receiver
  thread per connection: no SCP can receive faster on this machine;
- write+fdatasync: the corpus's files written to new files on the disk the peers
  use, N writers, fdatasync per file: a floor on the cost of durability;
- write+fdatasync+rename+dir fsync: the same, each file written under a temporary
  name, synced, renamed into one of 256 folders and that folder fsynced: what a
  durable SCP that never shows a half-written object must at least do per object,
  the ceiling for fsync mode (issue 18).

and the latency floors for one 0.5 MB object, paced like the latency scenario:

- loopback round trip: 0.5 MB sent, a 1-byte answer back (an idle VM wakes slowly);
- write+fdatasync of 0.5 MB to a new file: what a durable store adds at least.

Threads are enough: the GIL is released in every send, recv, write and fdatasync.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import Corpus
from bench.scratch import discard

_CHUNK = 1 << 20


@dataclass
class Limit:
    name: str
    associations: int
    mb_per_s: float
    mix: str = "CT-heavy"


@dataclass
class Floor:
    name: str
    p50_ms: float
    p99_ms: float


def _parallel(jobs: list[threading.Thread]) -> float:
    started = time.perf_counter()
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    return time.perf_counter() - started


def loopback(corpus: Corpus, connections: int) -> Limit:
    share = corpus.bytes // connections
    server = socket.create_server(("127.0.0.1", 0), backlog=connections)
    port = server.getsockname()[1]

    def receive() -> None:
        conn, _ = server.accept()
        buffer = bytearray(_CHUNK)
        with conn:
            while conn.recv_into(buffer):
                pass

    def send() -> None:
        data = memoryview(bytes(_CHUNK))
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            left = share
            while left > 0:
                conn.sendall(data[: min(_CHUNK, left)])
                left -= _CHUNK

    jobs = [threading.Thread(target=receive) for _ in range(connections)]
    jobs += [threading.Thread(target=send) for _ in range(connections)]
    with server:
        seconds = _parallel(jobs)
    return Limit("loopback TCP", connections, round(share * connections / seconds / 1e6, 1))


def write_fdatasync(
    corpus: Corpus, writers: int, folder: Path, rename: bool = False, mix: str = "CT-heavy"
) -> Limit:
    folder.mkdir(parents=True, exist_ok=True)
    # Read first, so the disk's writes are measured, not the corpus's reads.
    for path in corpus.files:
        path.read_bytes()
    shards = [folder / f"{k:02x}" for k in range(256)] if rename else []
    for shard in shards:
        shard.mkdir(exist_ok=True)

    def write(n: int) -> None:
        for k, path in enumerate(corpus.files[n::writers]):
            target = folder / f"{n}-{k}"
            with path.open("rb") as source, target.open("wb") as out:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
                out.flush()
                os.fdatasync(out.fileno())
            if rename:  # the engine's layout: objects/<2 hex>/<name>, the folder synced
                shard = shards[hash((n, k)) % 256]
                target.rename(shard / target.name)
                fd = os.open(shard, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    seconds = _parallel([threading.Thread(target=write, args=(n,)) for n in range(writers)])
    discard(folder)
    folder.mkdir()
    name = "write+fdatasync+rename+dir fsync" if rename else "write+fdatasync"
    return Limit(name, writers, round(corpus.bytes / seconds / 1e6, 1), mix)


def _floor(name: str, seconds: list[float]) -> Floor:
    ordered = sorted(seconds)
    return Floor(
        name,
        round(ordered[len(ordered) // 2] * 1000, 2),
        round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    )


def latency_floors(
    folder: Path, size: int = 512 * 1024, count: int = 200, rate: float = 100
) -> list[Floor]:
    """Round trip and durable write of one `size` object, `count` times at `rate`/s."""
    payload = bytes(size)
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        buffer = bytearray(_CHUNK)
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            got = 0
            while n := conn.recv_into(buffer):
                got += n
                while got >= size:
                    got -= size
                    conn.sendall(b"!")

    thread = threading.Thread(target=echo)
    thread.start()
    trips = []
    with server, socket.create_connection(server.getsockname()) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            time.sleep(1 / rate)
            started = time.perf_counter()
            conn.sendall(payload)
            conn.recv(1)
            trips.append(time.perf_counter() - started)
    thread.join()
    folder.mkdir(parents=True, exist_ok=True)
    writes = []
    for k in range(count):
        time.sleep(1 / rate)
        started = time.perf_counter()
        with (folder / f"floor-{k}").open("wb") as out:
            out.write(payload)
            out.flush()
            os.fdatasync(out.fileno())
        writes.append(time.perf_counter() - started)
    discard(folder)
    return [_floor("loopback round trip", trips), _floor("write+fdatasync", writes)]
