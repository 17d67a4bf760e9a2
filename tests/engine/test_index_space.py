"""An index that has grown into its map (storage.index_map_size), as the site would
live it: each store is refused with 0xA700 while the association goes on, the log says
what to raise, status and metrics show how full it is, and a restart with a larger
map stores the refused object with nothing lost. And a map the process may not take
at all is refused at start, readably."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.peers import free_port
from tests.storage.test_durability import store_until_refused
from tests.support.corpus import make_series
from tests.support.process import EngineProcess

SMALL_MAP = 256 * 1024


def _gauge(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def test_a_full_index_refuses_with_out_of_resources_and_a_larger_map_stores_again(
    engine_factory: Callable[..., EngineProcess],
    tmp_path: Path,
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    node = engine_factory({"storage": {"index_map_size": SMALL_MAP}})
    files = make_series(tmp_path / "series", 200)
    assoc, statuses = store_until_refused(node.port, files)
    stored = statuses.count(0)
    assert statuses[-1] == 0xA700, statuses
    assert stored >= 1, statuses
    # Refused again, not a one-off; and the association still serves.
    assert int(assoc.send_c_store(files[stored].path).Status) == 0xA700
    assert assoc.send_c_echo().Status == 0

    log = node.log()
    assert "the index is full" in log, log[-3000:]
    assert "Raise storage.index_map_size" in log
    assert log.count("the index is full") == 1, "explained once a minute, not per store"
    metrics = node.get_text("/metrics")
    assert _gauge(metrics, "pacs_edge_index_map_bytes") == SMALL_MAP
    assert _gauge(metrics, "pacs_edge_index_bytes") > 0.8 * SMALL_MAP
    shown = run_cli("status", "--url", f"http://127.0.0.1:{node.http_port}").stdout
    assert "FULL" in shown, shown
    assert "raise storage.index_map_size" in shown
    assoc.release()
    assert node.stop() == 0

    # The same data with a larger map: what was refused now stores, nothing was lost.
    larger = engine_factory({"storage": {"index_map_size": "64MiB"}}, data_dir=node.data_dir)
    assoc, statuses = store_until_refused(larger.port, files[stored : stored + 1])
    assert statuses == [0]
    assoc.release()
    assert larger.status()["instances"] == stored + 1
    for f in files[: stored + 1]:
        assert larger.instance(f.sop_instance_uid) is not None
    metrics = larger.get_text("/metrics")
    assert _gauge(metrics, "pacs_edge_index_map_bytes") == 64 * 2**20
    shown = run_cli("status", "--url", f"http://127.0.0.1:{larger.http_port}").stdout
    assert "FULL" not in shown, shown


@pytest.mark.parametrize("workers", [1, 2])
def test_a_map_the_process_may_not_take_is_refused_readably(tmp_path: Path, workers: int) -> None:
    """Under an address-space limit (ulimit -v) smaller than the 1 TiB default map,
    serve says which setting and which limit, and exits 2, with either process model."""
    gib = 2**30

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * gib, 4 * gib))

    where = ["--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1"]
    ports = ["--port", str(free_port()), "--http-port", str(free_port())]
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", "--workers", str(workers), *where, *ports],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "storage.index_map_size = 1.0TiB" in result.stderr
    assert "ulimit -v" in result.stderr
    assert "Traceback" not in result.stderr
