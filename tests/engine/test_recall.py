"""Recall against a real Orthanc: a CT study purged from the edge comes back through
`pacs-edge recall` (C-MOVE to our AE, stored by our own SCP), is hot again, and is
not forwarded a second time. The 500-instance study and its timing are bench.recall's."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.engine.test_forward import central_dataset, dicom_destination, edge_dataset
from tests.engine.test_lifecycle import orthanc_for, tiers
from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.process import EngineProcess, wait_until, write_toml

STUDY = 60  # instances: over one forward batch and several associations
PURGE_WHEN_COMMITTED = {"window": "", "interval": 1.0, "rule": [{"name": "now", "keep_days": 0}]}


def reload_lifecycle(engine: EngineProcess, lifecycle: dict[str, Any]) -> None:
    engine.settings["lifecycle"] = lifecycle
    write_toml(engine.config_path, engine.settings)
    code, body = engine.post("/api/v1/reload")
    assert code == 200, body


def test_a_purged_study_comes_back_and_is_not_forwarded_again(
    engine_factory: Callable[..., EngineProcess],
    run_cli: Callable[..., Any],
    tmp_path: Path,
) -> None:
    engine = engine_factory({"lifecycle": PURGE_WHEN_COMMITTED}, start=False)
    central = orthanc_for(engine, tmp_path / "orthanc").start()
    try:
        engine.settings["destination"] = [
            dicom_destination(
                central, commitment=True, commitment_wait=0, recall=True, associations=4
            )
        ]
        engine.start()
        url = f"http://127.0.0.1:{engine.http_port}"
        files = make_series(tmp_path / "ct", STUDY)
        assert storescu(engine.port, [f.path for f in files]).returncode == 0
        wait_until(lambda: tiers(engine)["central"] == STUDY, 180, "the study committed and purged")
        record = engine.instance(files[0].sop_instance_uid)
        assert record is not None
        study = record["study_instance_uid"]
        sent_before = engine.status()["destinations"]["central"]["sent"]
        # A local user needs it again: purging stops for it, and it is recalled.
        reload_lifecycle(engine, {"window": "", "interval": 1.0, "rule": []})
        started = time.monotonic()
        done = run_cli("recall", study, "--url", url, timeout=180)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"done: {STUDY} instance(s) back from central" in done.stdout, done.stdout
        print(f"recall of {STUDY} CT instances: {took:.1f} s (CLI, including its polling)")
        assert tiers(engine) == {"hot": STUDY, "warm": 0, "central": 0}
        for f in files[::7]:
            local = edge_dataset(engine, f.sop_instance_uid)
            assert local == central_dataset(central, f.sop_instance_uid)
        # Not forwarded again, and counted as committed at central: it can be purged.
        status = engine.status()["destinations"]["central"]
        assert status["sent"] == sent_before
        assert status["depth"] == 0
        assert central.count() == STUDY
        reload_lifecycle(engine, PURGE_WHEN_COMMITTED)
        wait_until(lambda: tiers(engine)["central"] == STUDY, 60, "purged again after use")
    finally:
        central.stop()


def test_recall_says_what_to_configure(
    engine_factory: Callable[..., EngineProcess], run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    engine = engine_factory()
    url = f"http://127.0.0.1:{engine.http_port}"
    unknown = run_cli("recall", "1.2.3.4", "--url", url, timeout=60)
    assert unknown.returncode == 1
    assert "study 1.2.3.4 was never stored on this node" in unknown.stderr
    files = make_series(tmp_path / "ct", 2)
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    record = engine.instance(files[0].sop_instance_uid)
    assert record is not None
    nowhere = run_cli("recall", record["study_instance_uid"], "--url", url, timeout=60)
    assert nowhere.returncode == 1
    assert "no destination has recall = true" in nowhere.stderr
