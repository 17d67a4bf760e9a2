"""/metrics under a real Prometheus (Debian package): every dashboard panel and
alert expression is evaluated through Prometheus' HTTP API after an ingest and a
forward to a real Orthanc, and the figures match /api/v1/status."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.peers import free_port
from tests.engine.test_forward import dicom_destination, drained
from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import EngineProcess, launch, wait_until, wait_up

MONITORING = Path(__file__).parents[2] / "monitoring"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "pacs-edge.json"


class PrometheusProcess:
    def __init__(self, workdir: Path, target_port: int) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "pacs-edge",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{target_port}"], "labels": {"site": "test"}}
                    ],
                }
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusProcess:
        command = [
            "prometheus",
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.proc = launch(command, self.log_path, self.workdir)
        wait_up(self.proc, lambda: self._get("/-/ready") is not None, 60, self.log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as rsp:
            return bytes(rsp.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = json.loads(self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def prometheus_for() -> Iterator[Callable[[Path, int], PrometheusProcess]]:
    made: list[PrometheusProcess] = []

    def make(workdir: Path, port: int) -> PrometheusProcess:
        made.append(PrometheusProcess(workdir, port).start())
        return made[-1]

    yield make
    for prometheus in made:
        prometheus.stop()
        print(f"----- prometheus log -----\n{prometheus.log()[-3000:]}")


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            # Grafana's variables, as "All" and a short rate window would expand them.
            expr = target["expr"].replace("$__rate_interval", "1m")
            expr = expr.replace("$site", ".*").replace("$instance", ".*")
            queries.append((panel["title"], expr))
    return queries


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from the Prometheus text format (summed over other labels)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[2])
    return total


def test_promtool_accepts_the_shipped_rules_and_config() -> None:
    for args in (
        ["promtool", "check", "rules", str(ALERTS)],
        ["promtool", "check", "config", str(MONITORING / "prometheus" / "prometheus.yml")],
        # Alerts that no scenario here can bring about in time (a worklist mirror ten
        # minutes old), fed synthetic series: they fire when they should.
        ["promtool", "test", "rules", str(MONITORING / "prometheus" / "alerts_test.yml")],
    ):
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_dashboard_and_alerts_against_a_real_prometheus(
    engine_factory: Callable[..., EngineProcess],
    prometheus_for: Callable[[Path, int], PrometheusProcess],
    tmp_path: Path,
    workers: int,
) -> None:
    """With two workers the same numbers must come out: counters summed over the
    processes, forwarding in the background process woken by the workers."""
    orthanc = OrthancProcess(tmp_path / "orthanc").start()
    try:
        down = {
            "name": "down",
            "kind": "dicom",
            "host": "127.0.0.1",
            "port": free_port(),
            "called_ae": "NOBODY",
        }
        engine = engine_factory(
            {
                # JPEG-LS to central: the transcoding panel has data too.
                "destination": [
                    dicom_destination(orthanc, transfer_syntax="jpeg-ls-lossless"),
                    down,
                ],
                "forward": {"retry_base_delay": 0.2, "retry_max_delay": 1.0},
                "node": {"workers": workers},
                # Packed warm at once: the lifecycle panel has data, and JPEG-LS
                # forwarding is fed from restored warm copies as often as not.
                "lifecycle": {
                    "window": "",
                    "interval": 1.0,
                    "rule": [{"name": "all", "warm_codec": "zstd", "hot_days": 0}],
                },
            }
        )
        prometheus = prometheus_for(tmp_path / "prometheus", engine.http_port)
        wait_until(
            lambda: bool(prometheus.query("pacs_edge_instances_stored")), 30, "a first scrape"
        )
        ct = make_series(tmp_path / "ct", 12)
        mr = make_series(tmp_path / "mr", 4, "MR_small.dcm")
        assert storescu(engine.port, [f.path for f in ct], calling_ae="CT1").returncode == 0
        assert storescu(engine.port, [f.path for f in mr], calling_ae="MR1").returncode == 0
        wait_until(lambda: drained(engine), 60, "the forward to Orthanc")
        wait_until(
            lambda: engine.status()["storage"]["tiers"]["warm"]["instances"] == 16,
            60,
            "every object packed warm",
        )
        wait_until(
            lambda: bool(prometheus.query("pacs_edge_forward_circuit_open == 1")),
            60,
            "Prometheus to see the dead destination",
        )
        # A few more scrapes, so that rate() has points after the ingest.
        wait_until(
            lambda: all(prometheus.query(expr) for _, expr in panel_queries()),
            30,
            "every dashboard panel to have data",
        )

        # The same numbers as the status document.
        status = engine.status()
        text = engine.get_text("/metrics")
        assert metric(text, "pacs_edge_instances_received_total") == status["instances"] == 16
        assert (
            metric(text, "pacs_edge_instances_received_total", calling_ae="CT1", modality="CT")
            == 12
        )
        assert (
            metric(text, "pacs_edge_instances_received_total", calling_ae="MR1", modality="MR") == 4
        )
        assert metric(text, "pacs_edge_store_duration_seconds_count") == 16
        assert metric(text, "pacs_edge_bytes_received_total") == status["bytes"]
        assert metric(text, "pacs_edge_associations_total", result="accepted") == 2
        central = status["destinations"]["central"]
        assert (
            metric(text, "pacs_edge_forward_instances_total", destination="central", result="sent")
            == central["sent"]
            == 16
        )
        assert (
            metric(text, "pacs_edge_forward_queue_depth", destination="down")
            == status["destinations"]["down"]["depth"]
            == 16
        )
        sent_bytes = metric(
            text, "pacs_edge_forward_bytes_total", destination="central", result="sent"
        )
        assert sent_bytes == central["bytes_sent_since_start"] == status["bytes"]
        assert metric(text, "pacs_edge_forward_duration_seconds_count", destination="central") == 16
        assert metric(text, "pacs_edge_transcodes_total", codec="jpeg-ls", outcome="verified") == 16
        assert metric(text, "pacs_edge_lifecycle_objects_total", action="migrated") == 16
        assert metric(text, "pacs_edge_tier_objects", tier="warm") == 16
        assert metric(text, "pacs_edge_disk_refusing") == 0
        assert "SOPInstanceUID" not in text
        assert ct[0].sop_instance_uid not in text

        # Every panel returns data.
        empty = [title for title, expr in panel_queries() if not prometheus.query(expr)]
        assert empty == [], f"panels without data: {empty}"

        # Every alert expression is valid; these fire in this scenario, these do not.
        results = {name: prometheus.query(expr) for name, expr in alert_rules().items()}
        assert {r["metric"]["destination"] for r in results["PacsEdgeDestinationDown"]} == {"down"}
        for quiet in (
            "PacsEdgeDown",
            "PacsEdgeNotReady",
            "PacsEdgeDiskAlmostFull",
            "PacsEdgeDeadLetters",
            "PacsEdgeTranscodeMismatch",
            "PacsEdgeSlowStores",
            "PacsEdgeNoIntakeInWorkingHours",
            "PacsEdgeRefusingStores",
            "PacsEdgeWarmCopyMismatch",
            "PacsEdgeIndexCatalogDamaged",
        ):
            assert results[quiet] == [], (quiet, results[quiet])
        # Prometheus loaded the rules and evaluates them (state pending/firing/inactive).
        rules = json.loads(prometheus._get("/api/v1/rules"))["data"]["groups"][0]["rules"]
        assert {rule["name"] for rule in rules} == set(alert_rules())
        assert all(rule["health"] == "ok" for rule in rules), rules
    finally:
        orthanc.stop()


def test_association_results_are_counted_by_calling_ae(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    from tests.support.wire import Client

    engine = engine_factory({"dicom": {"allowed_calling_aes": ["TESTSCU"]}})
    released = Client(engine.port)
    assert released.associate().type == 2
    assert released.echo() == 0x0000
    released.send(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # A-RELEASE-RQ
    assert released.read_pdu().type == 6
    released.close()
    aborted = Client(engine.port)
    assert aborted.associate().type == 2
    aborted.send(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # A-ABORT from the modality
    aborted.close()
    refused = Client(engine.port)
    assert refused.associate(calling="STRANGER").type == 3
    refused.close()

    def counts() -> tuple[float, float, float, float]:
        text = engine.get_text("/metrics")
        return (
            metric(text, "pacs_edge_associations_total", calling_ae="TESTSCU", result="accepted"),
            metric(text, "pacs_edge_associations_total", calling_ae="TESTSCU", result="aborted"),
            metric(text, "pacs_edge_associations_total", calling_ae="STRANGER", result="rejected"),
            metric(text, "pacs_edge_dimse_responses_total", status="0x0000"),
        )

    wait_until(lambda: counts() == (2, 1, 1, 1), 10, "accepted 2, aborted 1, rejected 1, 1 echo")
