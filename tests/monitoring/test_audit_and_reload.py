"""The audit trail and hot reload, on a real engine process with DCMTK peers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.process import EngineProcess, wait_until, write_toml


def audit_events(engine: EngineProcess) -> list[dict[str, Any]]:
    time.sleep(1.0)  # the engine writes its audit lines twice a second
    path = engine.data_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_log_records_who_sent_what_and_survives_rotation(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    engine = engine_factory({"dicom": {"allowed_calling_aes": ["CT1"]}})
    files = make_series(tmp_path / "s", 3, PatientID="PAT-42")
    assert storescu(engine.port, [f.path for f in files], calling_ae="CT1").returncode == 0
    assert storescu(engine.port, [files[0].path], calling_ae="INTRUDER").returncode != 0
    events = audit_events(engine)
    kinds = [e["event"] for e in events]
    assert kinds.count("association_accepted") == 1
    assert kinds.count("instance_stored") == 3
    rejected = next(e for e in events if e["event"] == "association_rejected")
    assert rejected["calling_ae"] == "INTRUDER"
    assert rejected["peer"].startswith("127.0.0.1:")
    assert "not allowed" in rejected["why"] or rejected["reason"] == 3
    stored = next(e for e in events if e["event"] == "instance_stored")
    assert stored["sop_instance_uid"] in {f.sop_instance_uid for f in files}
    assert stored["patient_id"] == "PAT-42"
    assert len(stored["hash"]) == 64
    # logrotate: move the file away, SIGHUP, and the engine writes a fresh one.
    audit = engine.data_dir / "audit.jsonl"
    audit.rename(engine.data_dir / "audit.jsonl.1")
    assert engine.proc is not None
    os.kill(engine.proc.pid, signal.SIGHUP)
    wait_until(audit.exists, 10, "the audit log reopened")
    assert storescu(engine.port, [files[1].path], calling_ae="CT1").returncode == 0
    wait_until(lambda: "association_accepted" in audit.read_text(), 10, "a line in the new file")


def test_audit_without_patient_identifiers(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    engine = engine_factory({"audit": {"patient_identifiers": False}})
    files = make_series(tmp_path / "s", 1, PatientID="PAT-42", PatientName="Doe^Jane")
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    text = "\n".join(json.dumps(event) for event in audit_events(engine))
    assert "instance_stored" in text
    assert "PAT-42" not in text
    assert "Doe" not in text


def test_reload_applies_to_the_next_association_and_refuses_a_broken_file(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    engine = engine_factory({"dicom": {"allowed_calling_aes": ["CT1"]}})
    files = make_series(tmp_path / "s", 150)
    assert storescu(engine.port, [files[0].path], calling_ae="CT2").returncode != 0
    # A long association is in flight while the config changes under it.
    long_run = subprocess.Popen(
        ["storescu", "-aet", "CT1", "-aec", "PACS_EDGE", "127.0.0.1", str(engine.port)]
        + [str(f.path) for f in files],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine.settings["dicom"]["allowed_calling_aes"] = ["CT1", "CT2"]
    engine.settings["dicom"]["port"] = engine.port + 1  # only a restart would apply it
    write_toml(engine.config_path, engine.settings)
    code, answer = engine.post("/api/v1/reload")
    assert code == 200, answer
    assert "dicom.allowed_calling_aes" in answer["changed"]
    assert answer["needs_restart"] == ["dicom.port"]
    assert long_run.wait(timeout=120) == 0  # the ongoing association finished
    assert storescu(engine.port, [files[0].path], calling_ae="CT2").returncode == 0
    # A broken file is refused with the field, and the running config stays.
    engine.config_path.write_text(
        engine.config_path.read_text() + '\n[storage]\ndurability = "maybe"\n'
    )
    code, answer = engine.post("/api/v1/reload")
    assert code == 400
    assert "storage.durability" in answer["error"]
    assert answer["running"] == "unchanged"
    assert storescu(engine.port, [files[1].path], calling_ae="CT2").returncode == 0
    assert engine.status()["instances"] == 150
    kinds = [e["event"] for e in audit_events(engine)]
    assert "config_reloaded" in kinds
    assert "config_reload_refused" in kinds


def test_reload_adds_a_destination_without_losing_queued_jobs(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    from tests.engine.test_forward import dicom_destination, drained
    from tests.support.orthanc import OrthancProcess

    engine = engine_factory({})
    files = make_series(tmp_path / "s", 5)
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    orthanc = OrthancProcess(tmp_path / "orthanc").start()
    try:
        engine.settings["destination"] = [dicom_destination(orthanc)]
        write_toml(engine.config_path, engine.settings)
        code, answer = engine.post("/api/v1/reload")
        assert code == 200, answer
        assert answer["destinations_restarted"] == ["central"]
        more = make_series(tmp_path / "t", 4)
        assert storescu(engine.port, [f.path for f in more]).returncode == 0
        wait_until(lambda: drained(engine), 60, "the new destination's queue")
        # Objects stored before the destination existed were not routed to it.
        assert sorted(orthanc.sop_instance_uids()) == sorted(f.sop_instance_uid for f in more)
    finally:
        orthanc.stop()


def test_reload_check_shows_removals_and_a_reload_logs_each(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    """An empty file is a valid configuration: reloading it drops the allow-list and
    every destination. `reload --check` shows that first; a reload that does it says
    so at WARNING and in the audit log, one line per item."""
    central = {"name": "central", "kind": "dicom", "host": "127.0.0.1", "port": 9}
    engine = engine_factory(
        {
            "dicom": {"allowed_calling_aes": ["CT1"]},
            "destination": [{**central, "called_ae": "CENTRAL"}],
        }
    )
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    url = f"http://127.0.0.1:{engine.http_port}"
    check = subprocess.run(
        [sys.executable, "-m", "engine.cli", "reload", "--check", str(empty), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "REMOVES dicom.allowed_calling_aes 'CT1'" in check.stdout
    assert "REMOVES destination 'central'" in check.stdout
    assert "ANY calling AE may now associate" in check.stdout
    assert "only after a restart: " in check.stdout  # the ports, the data directory...
    code, running = engine.get("/api/v1/config")
    assert code == 200
    assert [d["name"] for d in running["destination"]] == ["central"], "--check applied"
    # Now for real: the engine's own file emptied, then reloaded.
    engine.config_path.write_text("")
    code, answer = engine.post("/api/v1/reload")
    assert code == 200, answer
    assert "destination 'central'" in answer["removed"]
    log = engine.log()
    assert "WARNING engine.ops.reload: reload removes dicom.allowed_calling_aes 'CT1'" in log
    assert "WARNING engine.ops.reload: reload removes destination 'central'" in log
    removed = [e for e in audit_events(engine) if e["event"] == "config_removed"]
    assert {e["item"] for e in removed} >= {"destination 'central'"}
    assert {e["by"] for e in removed} == {"loopback"}
