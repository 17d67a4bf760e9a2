"""Who may call the ops HTTP API, tried with curl against a real engine: every
endpoint without a token, with a read token and with an admin token (the table in
the README), and who asked, in the audit log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.monitoring.test_audit_and_reload import audit_events
from tests.support.process import EngineProcess

UID = "1.2.3.4"
# method, path, role needed: the README's table, endpoint by endpoint.
ENDPOINTS = [
    ("GET", "/healthz", "open"),
    ("GET", "/readyz", "open"),
    ("GET", "/metrics", "open"),
    ("GET", "/api/v1/status", "read"),
    ("GET", "/api/v1/config", "read"),
    ("GET", f"/api/v1/instances/{UID}", "read"),
    ("GET", "/api/v1/queues", "read"),
    ("GET", "/api/v1/queues/central", "read"),
    ("GET", "/api/v1/queues/central/dead", "read"),
    ("GET", f"/api/v1/recalls/{UID}", "read"),
    ("POST", "/api/v1/queues/central/retry", "admin"),
    ("POST", "/api/v1/queues/central/dead/requeue", "admin"),
    ("POST", "/api/v1/queues/central/purge", "admin"),
    ("POST", f"/api/v1/recalls/{UID}", "admin"),
    ("POST", "/api/v1/reload", "admin"),
]
ALLOWED = {
    None: {"open"},
    "read": {"open", "read"},
    "admin": {"open", "read", "admin"},
}
# Somewhere nothing listens: jobs for it stay queued, which is all these tests need.
CENTRAL = {"name": "central", "kind": "dicom", "host": "127.0.0.1", "port": 9, "called_ae": "X"}


def curl(engine: EngineProcess, method: str, path: str, token: str | None) -> tuple[int, str]:
    command = ["curl", "-s", "-i", "-X", method, f"http://127.0.0.1:{engine.http_port}{path}"]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    status = int(done.stdout.split(" ", 2)[1])
    return status, done.stdout


def body(response: str) -> Any:
    return json.loads(response.split("\n\n", 1)[1])  # text mode made \r\n into \n


def make_token(name: str, role: str) -> tuple[str, dict[str, str]]:
    """`pacs-edge token`, as an admin runs it: the secret, and the entry it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "token", name, "--role", role],
        capture_output=True,
        text=True,
        check=True,
    )
    secret = done.stdout.splitlines()[1].strip()
    entry = dict(re.findall(r'^(\w+) = "([^"]*)"$', done.stdout, re.MULTILINE))
    assert entry == {"name": name, "sha256": entry["sha256"], "role": role}
    return secret, entry


def test_every_endpoint_by_token_role(engine_factory: Callable[..., EngineProcess]) -> None:
    read_secret, read_entry = make_token("dashboard", "read")
    admin_secret, admin_entry = make_token("night-shift", "admin")
    engine = engine_factory(
        {"http": {"token": [read_entry, admin_entry]}, "destination": [CENTRAL]}
    )
    tokens = {None: None, "read": read_secret, "admin": admin_secret}
    for holder, secret in tokens.items():
        for method, path, needed in ENDPOINTS:
            status, response = curl(engine, method, path, secret)
            where = f"{method} {path} with {holder or 'no'} token"
            if needed in ALLOWED[holder]:
                assert status not in (401, 403), f"{where}: {response}"
                continue
            expected = 401 if holder is None else 403
            assert status == expected, f"{where}: {response}"
            assert body(response)["error"], where
            if status == 401:
                assert "www-authenticate: bearer" in response.lower()  # names: any case
    # Loopback is no credential once tokens exist, and a wrong token is refused.
    status, response = curl(engine, "GET", "/api/v1/status", "not-a-token")
    assert status == 401
    assert body(response)["error"] == "unknown token"
    events = audit_events(engine)
    purge = next(e for e in events if e["event"] == "queue_purged")
    assert (purge["by"], purge["client"]) == ("night-shift", "127.0.0.1")
    reload = next(e for e in events if e["event"] == "config_reloaded")
    assert reload["by"] == "night-shift"
    refused = [e for e in events if e["event"] == "http_refused"]
    assert len(refused) == 12 + 5 + 1  # none: all but the 3 open; read: the 5 admin; wrong
    assert {e["client"] for e in refused} == {"127.0.0.1"}


def test_without_tokens_only_loopback_and_only_on_loopback(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    engine = engine_factory(start=False)
    del engine.settings["http"]["host"]  # the embedded default
    engine.start()
    assert engine.proc is not None
    listening = {
        c.laddr
        for c in psutil.Process(engine.proc.pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
    assert ("127.0.0.1", engine.http_port) in listening, listening
    for method, path, _ in ENDPOINTS:
        status, response = curl(engine, method, path, None)
        assert status not in (401, 403), f"{method} {path} from loopback: {response}"


def test_cli_sends_the_token_from_the_environment_or_a_file(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    secret, entry = make_token("ops", "read")
    engine = engine_factory({"http": {"token": [entry]}})
    url = f"http://127.0.0.1:{engine.http_port}"

    def status(*extra: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PACS_EDGE_TOKEN"}
        if token is not None:
            env["PACS_EDGE_TOKEN"] = token
        command = [sys.executable, "-m", "engine.cli", "status", "--url", url, *extra]
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    refused = status()
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert "PACS_EDGE_TOKEN" in refused.stderr
    assert status(token=secret).returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text(secret + "\n")
    assert status("--token-file", str(token_file)).returncode == 0
    assert "AE PACS_EDGE" in status("--token-file", str(token_file)).stdout


@pytest.mark.parametrize("flag", ["--http-host", "--host"])
def test_http_host_flag_is_not_the_dicom_one(flag: str) -> None:
    from engine.cli import _overrides, build_parser

    args = build_parser().parse_args(["serve", flag, "0.0.0.0"])
    section = "http" if flag == "--http-host" else "dicom"
    assert _overrides(args) == {section: {"host": "0.0.0.0"}}
