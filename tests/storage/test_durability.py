"""Success means durable: kill -9, SIGTERM and a full disk never cost an
acknowledged object, and never leave a half-written one indexed."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pynetdicom._config as pynetdicom_config
import pytest
from pynetdicom import AE
from pynetdicom.association import Association

import core_rs
from storage.index import Index
from tests.support.corpus import SourceFile, make_large, make_series
from tests.support.process import AE_TITLE, EngineProcess
from tests.support.wire import A_RELEASE_RQ, Client, c_store_rq, pdata

pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True


def verify_every_indexed_object(node: EngineProcess) -> int:
    """With the engine stopped: every index record's file exists and its dataset
    hashes to the recorded BLAKE3 (an independent implementation). A warm file is
    checked restored; a purged record ("central") has no file here to check.
    Returns how many records there are."""
    index = Index(node.data_dir / "index.lmdb", 2**30, durable=False)
    try:
        checked = 0
        for record in index.instances():
            checked += 1
            if record.tier == "central":
                continue
            path = node.object_path(record.hash)
            if record.tier == "warm":
                path = node.workdir / "restored.dcm"
                core_rs.warm_unpack(
                    node.data_dir / "warm" / record.hash[:2] / record.hash, path, False
                )
            data = path.read_bytes()
            assert len(data) == record.meta_length + record.dataset_length
            assert blake3.blake3(data[record.meta_length :]).hexdigest() == record.hash
        return checked
    finally:
        index.close()


def send_series(
    port: int, files: list[SourceFile], acked: list[SourceFile], lock: threading.Lock
) -> None:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(files[0].sop_class_uid, [files[0].transfer_syntax_uid])
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if not assoc.is_established:
        return
    for f in files:
        rsp = assoc.send_c_store(f.path)
        if not rsp:  # the connection is gone
            return
        if rsp.Status == 0x0000:
            with lock:
                acked.append(f)
    assoc.release()


def test_kill_9_during_parallel_ingest(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    node = engine_factory({"storage": {"verify_on_start": "hash"}})
    series = [make_series(tmp_path / f"k{i}", 40) for i in range(8)]
    acked: list[SourceFile] = []
    lock = threading.Lock()
    threads = [
        threading.Thread(target=send_series, args=(node.port, files, acked, lock))
        for files in series
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    node.kill()
    for t in threads:
        t.join(timeout=60)
    total = sum(len(s) for s in series)
    assert 60 <= len(acked) < total, "the kill should land mid-ingest"

    node.start()  # recovery: spool cleaned, every record checked by hash
    assert "all present" in node.log()
    for f in acked:
        record = node.instance(f.meta_sop_instance_uid)
        assert record is not None, f"acknowledged {f.sop_instance_uid} is lost"
        assert record["hash"] == f.blake3
    assert not list((node.data_dir / "spool").iterdir())
    assert node.stop() == 0
    assert verify_every_indexed_object(node) >= len(acked)


def test_sigterm_finishes_the_object_in_flight(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    node = engine_factory()
    src = make_series(tmp_path / "s", 1)[0]
    client = Client(node.port)
    assert client.associate(contexts=[(3, src.sop_class_uid, [src.transfer_syntax_uid])]).type == 2
    data = src.dataset_bytes
    half = len(data) // 2
    client.send(pdata(3, c_store_rq(src.sop_instance_uid, sop_class=src.sop_class_uid), True))
    client.send(pdata(3, data[:half], command=False, last=False))
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert node.proc.poll() is None, "must wait for the object in flight"
    assert node.get("/readyz")[0] == 503
    with pytest.raises(ConnectionRefusedError):
        Client(node.port)  # no new associations while draining
    client.send(pdata(3, data[half:], command=False, last=True))
    assert int(client.read_pdu().command().Status) == 0x0000
    # The association is the modality's to end (within dicom.shutdown_grace).
    client.send(A_RELEASE_RQ)
    assert client.read_pdu().type == 6  # A-RELEASE-RP
    client.close()
    assert node.proc.wait(timeout=30) == 0
    node.proc = None
    node.start()
    record = node.instance(src.sop_instance_uid)
    assert record is not None
    assert record["hash"] == src.blake3


def test_sigterm_ends_an_association_after_the_grace_period(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    """A modality that keeps its association open is not waited for forever:
    after shutdown_grace it is ended at the next object boundary."""
    node = engine_factory({"dicom": {"shutdown_grace": 1.0}})
    src = make_series(tmp_path / "s", 1)[0]
    client = Client(node.port)
    assert client.associate(contexts=[(3, src.sop_class_uid, [src.transfer_syntax_uid])]).type == 2
    assert node.proc is not None
    started = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    assert client.read_pdu().type == 7  # A-ABORT, once the grace period is over
    assert time.monotonic() - started >= 1.0
    client.close()
    assert node.proc.wait(timeout=30) == 0
    node.proc = None


def store_until_refused(port: int, files: list[SourceFile]) -> tuple[Association, list[int]]:
    """One pynetdicom association (the files' context and Verification) that sends
    `files` until the first status that is not Success: it, still open, and the
    statuses."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(files[0].sop_class_uid, [files[0].transfer_syntax_uid])
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    statuses: list[int] = []
    for f in files:
        statuses.append(int(assoc.send_c_store(f.path).Status))
        if statuses[-1] != 0:
            break
    return assoc, statuses


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("12m")


def test_full_disk_answers_out_of_resources(
    engine_factory: Callable[..., EngineProcess], small_disk: Path, tmp_path: Path
) -> None:
    node = engine_factory({"storage": {"index_map_size": "8MiB"}}, data_dir=small_disk / "data")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 3 * 2**20)
    objects = [make_large(tmp_path / f"big{i}.dcm", 2) for i in range(8)]
    assoc, statuses = store_until_refused(node.port, objects)
    assert statuses[-1] == 0xA700, statuses
    assert statuses.count(0) >= 1
    # The association and the node keep working, nothing half-written remains.
    assert assoc.send_c_echo().Status == 0
    assert not list((small_disk / "data" / "spool").iterdir())
    # Space comes back: the same object now stores.
    filler.unlink()
    assert int(assoc.send_c_store(objects[len(statuses) - 1].path).Status) == 0
    assoc.release()
    stored = statuses.count(0) + 1
    assert node.status()["instances"] == stored
    assert node.stop() == 0
    assert verify_every_indexed_object(node) == stored
