"""What a connection costs before it associates: little memory, a capped number,
and the memory back once they are gone (a port scan or an idle flood must not
grow the engine for good)."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.support.process import EngineProcess, wait_until
from tests.support.wire import Client

IDLE = 2000


@pytest.fixture
def many_files() -> Iterator[None]:
    """2,000 sockets here and 2,000 in the engine (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 3 * IDLE) if hard != resource.RLIM_INFINITY else 3 * IDLE
    if wanted < 2 * IDLE + 100:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below what the test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _rss(node: EngineProcess) -> int:
    assert node.proc is not None
    return int(psutil.Process(node.proc.pid).memory_info().rss)


def _settled_rss(node: EngineProcess) -> int:
    """RSS once it stops moving (the first samples after start-up still grow)."""
    last = _rss(node)
    for _ in range(20):
        time.sleep(0.1)
        now = _rss(node)
        if abs(now - last) < 256 * 1024:
            return now
        last = now
    return last


def test_idle_connections_cost_little_and_give_memory_back(
    engine_factory: Callable[..., EngineProcess], many_files: None
) -> None:
    node = engine_factory(
        {
            "dicom": {"max_pending_connections": IDLE + 100, "artim_timeout": 60.0},
            "logging": {"level": "INFO"},
        }
    )
    # One association first, so the buffers and code paths of a real one are warm.
    warm = Client(node.port)
    assert warm.associate().type == 2
    warm.close()
    baseline = _settled_rss(node)
    idle = [socket.create_connection(("127.0.0.1", node.port), timeout=10) for _ in range(IDLE)]
    pending = lambda: node.status()["associations"]["pending_connections"]  # noqa: E731
    wait_until(lambda: pending() == IDLE, 10, f"the engine to hold all {IDLE}")
    loaded = _settled_rss(node)
    for sock in idle:
        sock.close()
    grown = (loaded - baseline) / 2**20
    print(f"RSS {baseline / 2**20:.1f} MiB -> {loaded / 2**20:.1f} MiB with {IDLE} idle")
    assert grown <= 20, f"{IDLE} idle connections cost {grown:.1f} MiB (at most 20)"
    wait_until(lambda: _rss(node) <= baseline * 1.10, 15, "RSS back within 10% of its baseline")
    print(f"after they closed: {_rss(node) / 2**20:.1f} MiB")


def test_connections_beyond_the_pending_cap_are_closed_at_accept(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    node = engine_factory({"dicom": {"max_pending_connections": 20, "artim_timeout": 30.0}})
    idle = [Client(node.port, timeout=5) for _ in range(20)]
    wait_until(lambda: node.status()["associations"]["pending_connections"] == 20, 5, "20 pending")
    extra = Client(node.port, timeout=5)
    assert extra.closed_by_peer(), "the 21st unassociated connection should be closed"
    extra.close()
    metrics = node.get_text("/metrics")
    assert "pacs_edge_refused_connections_total 1.0" in metrics
    assert "max_pending_connections" in node.log()
    # An accepted association is no longer pending: the cap counts only idle ones.
    first = idle.pop()
    assert first.associate().type == 2
    another = Client(node.port, timeout=5)
    assert another.associate().type == 2
    assert another.echo() == 0x0000
    for client in (*idle, first, another):
        client.close()
