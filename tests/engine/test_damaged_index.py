"""A damaged index record, as the site would live it (decision 40): DCMTK storescu
sends, one study is refused, the rest is stored, ops see it in the status and the
metrics, and a restart mends it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom

from bench.peers import free_port
from storage.index import Index
from tests.engine.test_forward import FAST_RETRY, dicom_destination, drained
from tests.engine.test_hl7 import adt, msa, send
from tests.support.corpus import make_series
from tests.support.dcmtk import acknowledged, storescu, storescu_verbose
from tests.support.orthanc import OrthancProcess
from tests.support.process import EngineProcess, wait_until


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


def test_an_hl7_update_that_meets_a_damaged_record_is_rejected_and_the_next_is_answered(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    """The HIS gets AR (not processed, send again later) with the reason, the edge
    asks for the restart that mends the catalog, and the connection answers the next
    message: before, the listener's worker died and the HIS waited for an ACK."""
    hl7_port = free_port()
    engine = engine_factory(start=False)
    engine.settings["hl7"] = {"enabled": True, "host": "127.0.0.1", "port": hl7_port}
    engine.start()
    damaged = make_series(tmp_path / "damaged", 1, PatientID="P1", PatientName="Li^Na")
    healthy = make_series(tmp_path / "healthy", 1, PatientID="P2", PatientName="Zhou^Yi")
    assert storescu(engine.port, [damaged[0].path, healthy[0].path]).returncode == 0
    study_uid = pydicom.dcmread(damaged[0].path, stop_before_pixels=True).StudyInstanceUID
    _damage_study(engine, study_uid)

    # Both messages on one MLLP connection, each waiting for its ACK (mllp_send).
    both = adt("A08", "C1", "P1", "Li^Na^Mei") + adt("A08", "C2", "P2", "Zhou^Yiming")
    answer = send(hl7_port, both, tmp_path)
    first, second = [line for line in answer.replace("\n", "\r").split("\r") if line[:4] == "MSA|"]
    assert first.split("|")[1:3] == ["AR", "C1"], answer
    assert "restart" in first, answer
    assert second.split("|")[1:3] == ["AA", "C2"], answer
    assert "restart the engine" in engine.log()
    assert engine.status()["storage"]["catalog_rebuild_due"] is True
    record = engine.instance(healthy[0].sop_instance_uid)
    assert record is not None
    assert record["patient_name"] == "Zhou^Yiming"

    # After the restart the HIS's resend is applied.
    assert engine.stop() == 0
    engine.start()
    assert msa(send(hl7_port, adt("A08", "C3", "P1", "Li^Na^Mei"), tmp_path))[1:3] == ["AA", "C3"]
    record = engine.instance(damaged[0].sop_instance_uid)
    assert record is not None
    assert record["patient_name"] == "Li^Na^Mei"


def _damage_instance(engine: EngineProcess, sop_instance_uid: str) -> None:
    """Overwrite an instance record with bytes that are not a record (a second process)."""
    index = Index(engine.data_dir / "index.lmdb", 2**30, durable=True)
    try:
        with index._env.begin(write=True) as txn:
            assert txn.put(sop_instance_uid.encode(), b"[1, 2", db=index._instances)
    finally:
        index.close()


def test_a_damaged_instance_record_is_dead_lettered_and_the_edge_forwards_and_starts_on(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    """Its forward job fails for good (dead-lettered, the log says why) and the
    others go; before, it ended the destination's worker and forwarding stopped. And
    the start-up check passes it by; before, the engine did not start."""
    central = OrthancProcess(tmp_path / "orthanc")  # down at first: the copies wait
    engine = engine_factory({"destination": [dicom_destination(central)], "forward": FAST_RETRY})
    series = make_series(tmp_path / "s", 3)
    assert storescu(engine.port, [f.path for f in series]).returncode == 0
    _damage_instance(engine, series[0].sop_instance_uid)
    central.start()
    try:
        wait_until(lambda: drained(engine), 60, "the queue to drain")
        assert sorted(central.sop_instance_uids()) == sorted(f.sop_instance_uid for f in series[1:])
        assert engine.status()["destinations"]["central"]["dead"] == 1
        assert f"instance {series[0].sop_instance_uid}: instance record" in engine.log()
        later = make_series(tmp_path / "later", 1)
        assert storescu(engine.port, [later[0].path]).returncode == 0
        wait_until(lambda: central.count() == 3, 60, "a later object at central")
    finally:
        central.stop()

    assert engine.stop() == 0
    engine.start()
    assert "passed by; the object, sent again, replaces it" in engine.log()
    assert storescu(engine.port, [series[0].path]).returncode == 0
    record = engine.instance(series[0].sop_instance_uid)
    assert record is not None
