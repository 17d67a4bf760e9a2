"""A damaged index record, as the site would live it (decision 40): DCMTK storescu
sends, one study is refused, the rest is stored, ops see it in the status and the
metrics, and a restart mends it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom

from storage.index import Index
from tests.support.corpus import make_series
from tests.support.dcmtk import acknowledged, storescu, storescu_verbose
from tests.support.process import EngineProcess


def _damage_study(engine: EngineProcess, study_instance_uid: str) -> None:
    """Overwrite a study's catalog record with bytes that are not a record, from a
    second process, as a bad sector or a bug would (LMDB lets processes share it)."""
    index = Index(engine.data_dir / "index.lmdb", 2**30, durable=True)
    try:
        with index._env.begin(write=True) as txn:
            key = study_instance_uid.encode()
            assert txn.get(key, db=index.catalog.studies) is not None
            txn.put(key, b"\x00\x17 not a record", db=index.catalog.studies)
    finally:
        index.close()


def test_a_damaged_study_record_refuses_its_study_only_and_a_restart_mends_it(
    engine: EngineProcess,
    tmp_path: Path,
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    damaged = make_series(tmp_path / "damaged", 2)
    healthy = make_series(tmp_path / "healthy", 1)
    assert storescu(engine.port, [damaged[0].path]).returncode == 0
    assert engine.instance(damaged[0].sop_instance_uid) is not None
    study_uid = pydicom.dcmread(damaged[0].path, stop_before_pixels=True).StudyInstanceUID
    _damage_study(engine, study_uid)

    # One association, both studies: only the damaged study's object is refused, and
    # the association goes on (storescu told not to halt at a failure).
    files = [damaged[1].path, healthy[0].path]
    client = storescu_verbose(engine.port, files, "MODALITY", halt=False)
    output, _ = client.communicate(timeout=60)
    assert acknowledged(output) == {str(healthy[0].path)}, output
    assert engine.instance(healthy[0].sop_instance_uid) is not None
    assert engine.instance(damaged[1].sop_instance_uid) is None
    assert "restart the engine" in engine.log()
    assert engine.status()["storage"]["catalog_rebuild_due"] is True
    assert "pacs_edge_index_catalog_damaged 1.0" in engine.get_text("/metrics")
    shown = run_cli("status", "--url", f"http://127.0.0.1:{engine.http_port}").stdout
    assert "INDEX CATALOG DAMAGED" in shown, shown

    # The restart the log asks for rebuilds the catalog; the modality's retry is stored.
    assert engine.stop() == 0
    engine.start()
    assert "rebuilding the catalog and the counts from 2 instance record(s)" in engine.log()
    assert storescu(engine.port, [damaged[1].path]).returncode == 0
    assert engine.instance(damaged[1].sop_instance_uid) is not None
    assert engine.status()["storage"]["catalog_rebuild_due"] is False
    assert "pacs_edge_index_catalog_damaged 0.0" in engine.get_text("/metrics")
    assert engine.stop() == 0
    index = Index(engine.data_dir / "index.lmdb", 2**30, durable=True)
    try:
        study = index.study(study_uid)
        assert study is not None
        assert study["instances"] == 2
    finally:
        index.close()
