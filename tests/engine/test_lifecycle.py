"""Tiers and lifecycle against a real Orthanc on real (small) filesystems: the warm
tier forwards the original bytes; committed objects are purged down to the low
watermark, oldest first; an uncommitted backlog is never purged, and while it
fills the disk new storing associations are refused (transient) until Orthanc is
back, commits, and purging makes room. Nothing acknowledged is lost on the way."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from pynetdicom import AE

from tests.engine.test_access import audit_events
from tests.engine.test_forward import central_dataset, comparable, dicom_destination
from tests.storage.test_durability import verify_every_indexed_object
from tests.support.corpus import SourceFile, make_large, make_series
from tests.support.dcmtk import storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import AE_TITLE, EngineProcess, wait_until
from tests.support.wire import IMPLICIT_LE, VERIFICATION, Client

TRANSIENT, PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED = 2, 3, 2
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
FAST_RETRIES = {"retry_base_delay": 0.2, "retry_max_delay": 1.0}


def tiers(engine: EngineProcess) -> dict[str, int]:
    found = engine.status()["storage"]["tiers"]
    return {tier: int(counts["instances"]) for tier, counts in found.items()}


def disk_used(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return 1 - usage.free / usage.total


def orthanc_for(engine: EngineProcess, workdir: Path) -> OrthancProcess:
    """An Orthanc that sends its storage commitment reports back to `engine`."""
    return OrthancProcess(workdir, modalities={"edge": (AE_TITLE, "127.0.0.1", engine.port)})


def test_warm_tier_packs_and_forwards_the_original_bytes(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    engine = engine_factory({}, start=False)
    central = orthanc_for(engine, tmp_path / "orthanc")  # not started: the WAN is down
    rule = {"name": "everything", "warm_codec": "jpeg-ls", "hot_days": 0}
    engine.settings["destination"] = [dicom_destination(central)]
    engine.settings["forward"] = FAST_RETRIES
    engine.settings["lifecycle"] = {"window": "", "interval": 1.0, "rule": [rule]}
    engine.start()
    files = [
        *make_series(tmp_path / "ct", 3, "CT_small.dcm"),
        *make_series(tmp_path / "mr", 3, "MR_small.dcm"),
        *make_series(tmp_path / "rgb", 2, "SC_rgb.dcm"),
    ]
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    wait_until(lambda: tiers(engine)["warm"] == len(files), 60, "every object packed warm")
    for f in files:
        record = engine.instance(f.sop_instance_uid)
        assert record is not None
        assert record["tier"] == "warm"
        assert not engine.object_path(record["hash"]).exists()
        warm = engine.data_dir / "warm" / record["hash"][:2] / record["hash"]
        assert 0 < warm.stat().st_size == record["stored_length"] < f.path.stat().st_size
    assert "packed" in engine.log()
    assert "warm tier" in engine.log()
    central.start()
    try:
        wait_until(lambda: central.count() == len(files), 90, "the warm objects forwarded")
        for f in files:
            got = central_dataset(central, f.sop_instance_uid)
            assert got is not None
            ts = f.transfer_syntax_uid
            assert comparable(got, ts) == comparable(f.dataset_bytes, ts), f.path.name
        # Restored copies are spool files, deleted after each send (Orthanc counts the
        # last one before its C-STORE-RSP reaches us).
        spool = engine.data_dir / "spool"
        wait_until(lambda: not list(spool.iterdir()), 10, "the restored copies deleted")
    finally:
        central.stop()


def test_committed_objects_are_purged_oldest_first_to_the_low_watermark(
    engine_factory: Callable[..., EngineProcess],
    tmpfs: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    disk = tmpfs("32m")
    settings = {
        "storage": {"index_map_size": "8MiB", "disk_high_watermark": 0.9},
        "lifecycle": {"high_watermark": 0.5, "low_watermark": 0.3, "window": "", "interval": 1.0},
    }
    engine = engine_factory(settings, start=False, data_dir=disk / "data")
    central = orthanc_for(engine, tmp_path / "orthanc").start()
    try:
        engine.settings["destination"] = [
            dicom_destination(central, commitment=True, commitment_wait=0)
        ]
        engine.start()
        files = [make_large(tmp_path / f"big{i:02}.dcm", 1) for i in range(22)]
        assert storescu(engine.port, [f.path for f in files]).returncode == 0
        wait_until(
            lambda: tiers(engine)["central"] > 0 and disk_used(disk) <= 0.3,
            90,
            "purging below the low watermark",
        )
        assert central.count() == len(files)
        records = [engine.instance(f.sop_instance_uid) for f in files]
        assert all(r is not None for r in records)
        purged = [r for r in records if r and r["tier"] == "central"]
        kept = [r for r in records if r and r["tier"] == "hot"]
        assert len(purged) + len(kept) == len(files)
        # Oldest first, and a purged object has no local file left.
        assert max(r["received_at"] for r in purged) <= min(r["received_at"] for r in kept)
        assert all(not engine.object_path(r["hash"]).exists() for r in purged)
        assert all(engine.object_path(r["hash"]).exists() for r in kept)
        # Only as much as the low watermark asks: the disk was not emptied.
        assert kept, "purged everything instead of stopping at the low watermark"
        purged_uids = {r["sop_instance_uid"] for r in purged}
        wait_until(  # the audit trail is appended twice a second
            lambda: (
                {e["sop_instance_uid"] for e in audit_events(engine, "instance_purged")}
                == purged_uids
            ),
            10,
            "an audit line per purged instance",
        )
        events = audit_events(engine, "instance_purged")
        assert all(e["destinations"] == ["central"] for e in events)
        metrics = engine.get_text("/metrics")
        assert f'pacs_edge_tier_objects{{tier="central"}} {float(len(purged))}' in metrics
        assert re.search(r'pacs_edge_lifecycle_objects_total\{action="purged"\} [1-9]', metrics)
    finally:
        central.stop()


def store_one(port: int, f: SourceFile) -> int | tuple[int, int, int]:
    """One object on an association of its own: its status, or the A-ASSOCIATE-RJ."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(f.sop_class_uid, [f.transfer_syntax_uid])
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        return (int(rj.result), int(rj.result_source), int(rj.diagnostic))
    assert assoc.is_established
    status = int(assoc.send_c_store(f.path).Status)
    assoc.release()
    return status


def test_an_uncommitted_backlog_is_kept_and_refuses_new_stores_until_central_commits(
    engine_factory: Callable[..., EngineProcess],
    tmpfs: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    disk = tmpfs("24m")
    settings = {
        "storage": {"index_map_size": "8MiB", "disk_high_watermark": 0.6},
        "lifecycle": {
            "high_watermark": 0.4,
            "low_watermark": 0.25,
            "window": "",
            "interval": 1.0,
        },
        "forward": FAST_RETRIES,
    }
    engine = engine_factory(settings, start=False, data_dir=disk / "data")
    central = orthanc_for(engine, tmp_path / "orthanc")  # down until the disk is full
    engine.settings["destination"] = [
        dicom_destination(central, commitment=True, commitment_wait=0)
    ]
    engine.start()
    files = [make_large(tmp_path / f"big{i:02}.dcm", 1) for i in range(24)]
    acked: list[SourceFile] = []
    refusal: tuple[int, int, int] | None = None
    for f in files:
        answer = store_one(engine.port, f)
        if isinstance(answer, tuple):
            refusal = answer
            break
        assert answer == 0x0000, hex(answer)
        acked.append(f)
    assert refusal == (TRANSIENT, PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED), refusal
    assert 8 <= len(acked) < len(files)
    # Nothing was purged: nothing is committed anywhere.
    assert tiers(engine) == {"hot": len(acked), "warm": 0, "central": 0}
    code, ready = engine.get("/readyz")
    assert code == 503, ready
    assert ready["status"] == "disk full", ready
    assert "pacs_edge_disk_refusing 1.0" in engine.get_text("/metrics")
    wait_until(
        lambda: "cannot be purged until their destinations commit them" in engine.log(),
        30,
        "the lifecycle warning",
    )
    # Echo (and commitment reports) still get in: they write nothing to the disk.
    echo = Client(engine.port)
    assert echo.associate(contexts=[(1, VERIFICATION, [IMPLICIT_LE])]).type == 2
    echo.close()
    # Central comes back: it gets the backlog, commits it on an association of
    # its own, the edge purges, and stores are taken again.
    central.start()
    try:
        wait_until(lambda: engine.get("/readyz")[0] == 200, 120, "room again after purging")
        assert tiers(engine)["central"] > 0
        assert disk_used(disk) < 0.6
        assert store_one(engine.port, files[len(acked)]) == 0x0000
        acked.append(files[len(acked)])
        wait_until(lambda: central.count() == len(acked), 60, "everything acked at central")
        assert set(central.sop_instance_uids()) == {f.sop_instance_uid for f in acked}
        assert "pacs_edge_disk_refusing 0.0" in engine.get_text("/metrics")
    finally:
        central.stop()
    assert engine.stop() == 0
    # Every object the modality was told Success for: its record, and its file or
    # its purge after central committed it.
    assert verify_every_indexed_object(engine) == len(acked)
