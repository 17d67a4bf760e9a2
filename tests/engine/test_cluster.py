"""Two pacs-edge nodes behind real HAProxy (deploy/haproxy.cfg) on one address.

HAProxy connects to the nodes from 127.0.0.9 with a PROXY v2 header; modalities
(DCMTK storescu, pynetdicom) connect to HAProxy from 127.0.0.1. So a node that
reports 127.0.0.1 read the header, and one that reports 127.0.0.9 did not.
Node 1 runs two ingest workers, node 2 one process: both shapes behind one balancer.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from bench.balancer import Node
from tests.support.corpus import SourceFile, make_series
from tests.support.dcmtk import acknowledged, storescu_verbose
from tests.support.haproxy import SOURCE, HAProxyProcess
from tests.support.process import AE_TITLE, EngineProcess, wait_until

BALANCER_PORT = 11112  # the address: 127.0.0.1:11112
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class Cluster:
    nodes: list[EngineProcess]
    haproxy: HAProxyProcess

    def holder(self, sop_instance_uid: str) -> list[int]:
        """Which nodes (0, 1) have the instance."""
        return [n for n, node in enumerate(self.nodes) if node.instance(sop_instance_uid)]

    def wait_state(self, name: str, state: str, backend: str = "pacs_edge") -> None:
        wait_until(
            lambda: self.haproxy.state(name, backend).startswith(state),
            15,
            f"HAProxy to see {name} {state}",
        )


@pytest.fixture
def cluster(engine_factory: Callable[..., EngineProcess], tmp_path: Path) -> Iterator[Cluster]:
    trusted = {"trusted_proxies": [f"{SOURCE}/32"], "shutdown_grace": 30.0}
    nodes = [
        engine_factory({"node": {"workers": 2}, "dicom": trusted}, name="edge1"),
        engine_factory({"dicom": trusted}, name="edge2"),
    ]
    workdir = tmp_path / "haproxy"
    workdir.mkdir()
    haproxy = HAProxyProcess(
        workdir,
        BALANCER_PORT,
        [Node(f"edge{n + 1}", node.port, node.http_port) for n, node in enumerate(nodes)],
    ).start()
    found = Cluster(nodes, haproxy)
    found.wait_state("edge1", "UP")
    found.wait_state("edge2", "UP")
    yield found
    haproxy.close()
    print(f"----- haproxy log -----\n{haproxy.log_path.read_text()[-5000:]}")


def storescu(files: list[SourceFile], calling_ae: str) -> subprocess.Popen[str]:
    """A modality configured with the balancer's address."""
    return storescu_verbose(BALANCER_PORT, [f.path for f in files], calling_ae)


def audit(node: EngineProcess, event: str) -> list[dict[str, str]]:
    lines = (node.data_dir / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def test_sixteen_modalities_one_address_two_nodes(cluster: Cluster, tmp_path: Path) -> None:
    series = [make_series(tmp_path / f"s{i}", 6) for i in range(16)]
    procs = [storescu(files, f"CT{i:02d}") for i, files in enumerate(series)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    per_node = [0, 0]
    for files in series:
        for f in files:
            holders = cluster.holder(f.sop_instance_uid)
            assert len(holders) == 1, (f.path, holders)
            per_node[holders[0]] += 1
    assert all(per_node), f"leastconn should use both nodes: {per_node}"
    for n, node in enumerate(cluster.nodes):
        metrics = node.get_text("/metrics")
        accepted = node.status()["associations"]["accepted_total"]
        assert accepted * 6 == per_node[n]
        # Allowlists, audit, metrics and status see the modality, not HAProxy.
        line = 'pacs_edge_association_sources_total{address="127.0.0.1",result="accepted"}'
        assert f"{line} {float(accepted)}" in metrics
        assert SOURCE not in metrics
        node.stop()  # flushes the audit log
        events = audit(node, "association_accepted")
        assert len(events) == accepted
        assert all(e["peer"].startswith("127.0.0.1:") for e in events), events
        assert all(e["via"].startswith(f"{SOURCE}:") for e in events), events


def test_a_node_dies_mid_run_nothing_acknowledged_is_lost(cluster: Cluster, tmp_path: Path) -> None:
    series = [make_series(tmp_path / f"s{i}", 25) for i in range(16)]
    by_path = {str(f.path): f for files in series for f in files}
    procs = [storescu(files, f"MOD{i:02d}") for i, files in enumerate(series)]
    edge1 = cluster.nodes[0]
    wait_until(lambda: edge1.status()["instances"] >= 30, 120, "edge1 to store 30 objects")
    edge1.kill()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    acked = set().union(*(acknowledged(out) for out in outputs))
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    assert failed, "killing edge1 mid-run should cut some associations"
    # The modalities retry: HAProxy sends the new associations to edge2.
    cluster.wait_state("edge1", "DOWN")
    for i in failed:
        retry = storescu(series[i], f"MOD{i:02d}")
        output = retry.communicate(timeout=300)[0]
        assert retry.returncode == 0, output
    for i in failed:
        for f in series[i]:
            assert cluster.nodes[1].instance(f.sop_instance_uid), f.path
    edge1.start()
    for path in acked:  # every Success either node gave is there, on disk
        uid = by_path[path].sop_instance_uid
        holders = cluster.holder(uid)
        assert holders, f"{path} was acknowledged but is on no node"
        node = cluster.nodes[holders[0]]
        record = node.instance(uid)
        assert record is not None
        assert dcmread(node.object_path(record["hash"])).SOPInstanceUID == uid
    assert len(acked) + sum(len(series[i]) for i in failed) >= len(by_path)


def test_drain_finishes_open_associations_and_sends_new_ones_elsewhere(
    cluster: Cluster, tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    files = make_series(tmp_path / "long", 12)
    modality = AE(ae_title="LONGSCU")
    modality.add_requested_context(CT_IMAGE, "1.2.840.10008.1.2.1")
    # One long association on each node (leastconn alternates on a tie).
    long_ones = [modality.associate("127.0.0.1", BALANCER_PORT, ae_title=AE_TITLE) for _ in "ab"]
    assert all(a.is_established for a in long_ones)
    for a, f in zip(long_ones, files[:2], strict=True):
        assert a.send_c_store(dcmread(f.path)).Status == 0x0000
    live = [node.status()["associations"]["live"] for node in cluster.nodes]
    assert [len(x) for x in live] == [1, 1], live
    shown = run_cli("status", "--url", f"http://127.0.0.1:{cluster.nodes[1].http_port}").stdout
    assert re.search(rf"LONGSCU +127\.0\.0\.1:\d+ via {SOURCE}:\d+", shown), shown
    draining, other = cluster.nodes
    assert draining.proc is not None
    draining.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: draining.get("/readyz")[0] == 503, 5, "the draining node's 503")
    # New associations: refused by the draining node, so HAProxy sends them on.
    extra = make_series(tmp_path / "new", 4)
    for f in extra:
        proc = storescu([f], "NEWSCU")
        assert proc.communicate(timeout=60)[0] is not None
        assert proc.returncode == 0
        assert cluster.holder(f.sop_instance_uid) == [1]
    # The draining node's open association finishes its work and releases.
    for f in files[2:12:2]:
        time.sleep(0.3)
        for a in long_ones:
            assert a.send_c_store(dcmread(f.path)).Status == 0x0000
    for a in long_ones:
        a.release()
    assert draining.proc.wait(timeout=60) == 0
    draining.proc = None
    assert other.status()["associations"]["active"] == 0
    draining.start()
    for f in files[2:12:2]:  # what both long associations sent is on both nodes
        assert cluster.holder(f.sop_instance_uid) == [0, 1], f.path
