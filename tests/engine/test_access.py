"""Who may associate: per calling AE source networks and limits, counted per node
over every worker process, refused with the PS3.8 reasons and an audit line."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from tests.support.process import EngineProcess, wait_until, write_toml
from tests.support.wire import Client

PERMANENT, TRANSIENT = 1, 2
SERVICE_USER, PROVIDER_PRESENTATION = 1, 3
CALLING_AE_NOT_RECOGNIZED, LOCAL_LIMIT_EXCEEDED = 3, 2


def audit_events(node: EngineProcess, event: str) -> list[dict[str, object]]:
    path = node.data_dir / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == event]


def test_networks_and_limits_per_calling_ae_over_two_workers(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    node = engine_factory(
        {
            "node": {"workers": 2},
            "calling_ae": [
                {"ae_title": "CT1", "networks": ["127.0.0.0/8"], "max_associations": 3},
                {"ae_title": "XR1", "networks": ["10.1.20.0/24"]},
            ],
        }
    )
    # The kernel spreads these over both workers; the limit is the node's.
    held = [Client(node.port) for _ in range(3)]
    for client in held:
        assert client.associate(calling="CT1").type == 2
    fourth = Client(node.port)
    assert fourth.associate(calling="CT1").reject == (
        TRANSIENT,
        PROVIDER_PRESENTATION,
        LOCAL_LIMIT_EXCEEDED,
    )
    fourth.close()
    live = node.status()["associations"]
    assert live["active"] == 3
    assert {a["calling_ae"] for a in live["live"]} == {"CT1"}
    # XR1 may only come from its own network.
    xr = Client(node.port)
    assert xr.associate(calling="XR1").reject == (
        PERMANENT,
        SERVICE_USER,
        CALLING_AE_NOT_RECOGNIZED,
    )
    xr.close()
    # An AE named nowhere, once [[calling_ae]] entries exist.
    stranger = Client(node.port)
    assert stranger.associate(calling="NOBODY").reject[2] == CALLING_AE_NOT_RECOGNIZED
    stranger.close()
    # One ends: CT1 may open another (once its worker has seen the close).
    held.pop().close()
    for _ in range(50):
        again = Client(node.port)
        if again.associate(calling="CT1").type == 2:
            held.append(again)
            break
        again.close()
        time.sleep(0.1)
    else:
        raise AssertionError("CT1 could not associate again after one of its associations ended")
    # Raised by a reload through the API: the background process passes it on
    # to both workers, so the next CT1 association is admitted wherever it lands.
    node.settings["calling_ae"][0]["max_associations"] = 4
    write_toml(node.config_path, node.settings)
    code, answer = node.post("/api/v1/reload")
    assert code == 200, answer
    assert "calling_ae" in answer["changed"]

    def fourth_admitted() -> bool:
        client = Client(node.port)
        if client.associate(calling="CT1").type == 2:
            held.append(client)
            return True
        client.close()
        return False

    wait_until(fourth_admitted, 10, "a fourth CT1 association after the reload")
    for client in held:
        assert client.echo() == 0x0000
        client.close()
    # Counted over both workers: /metrics is the background process's sum.
    metrics = node.get_text("/metrics")
    assert 'pacs_edge_associations_total{calling_ae="CT1",result="accepted"} 5.0' in metrics
    # At least the fourth; retries above while a worker had not yet seen a close or
    # the reload are refused (and counted) too.
    rejected_line = re.search(
        r'pacs_edge_associations_total\{calling_ae="CT1",result="rejected"\} (\S+)', metrics
    )
    assert rejected_line is not None
    assert float(rejected_line.group(1)) >= 1.0
    assert node.stop() == 0  # and the audit log is flushed
    rejected = audit_events(node, "association_rejected")
    whys = [str(e["why"]) for e in rejected]
    assert any("calling_ae.max_associations" in why for why in whys), whys
    assert any("may not connect from 127.0.0.1 (10.1.20.0/24)" in why for why in whys), whys
    assert all(str(e["peer"]).startswith("127.0.0.1:") for e in rejected)
