"""Store-and-forward against a real central archive: Orthanc (Debian package) over
DICOM and over DICOMweb, and DCMTK storescp as a destination that refuses a SOP
class. Every object the edge acknowledged must arrive exactly once, as stored."""

from __future__ import annotations

import random
import struct
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.pixels
import pytest

from bench.peers import free_port, wait_for_port
from tests.storage.test_transcode import assert_lossy_jpeg_agrees, assert_openjph_decodes
from tests.support.corpus import SourceFile, make_series, public_corpus
from tests.support.dcmtk import propose_flag, storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import EngineProcess, wait_until

odd_corpus = pytest.mark.filterwarnings("ignore::UserWarning")
FAST_RETRY = {
    "retry_base_delay": 0.2,
    "retry_max_delay": 1.0,
    "breaker_threshold": 2,
    "max_busy_attempts": 3,
}


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    central = OrthancProcess(tmp_path / "orthanc").start()
    yield central
    central.stop()
    print(f"----- orthanc log -----\n{central.log()[-5000:]}")


def dicom_destination(
    central: OrthancProcess, name: str = "central", **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "dicom",
        "host": "127.0.0.1",
        "port": central.port,
        "called_ae": central.ae_title,
        **extra,
    }


def without_trailing_padding(dataset: bytes) -> bytes:
    """Orthanc (DCMTK) drops (FFFC,FFFC) Data Set Trailing Padding on receipt (padding
    carries no information); everything before it must be byte-identical."""
    at = dataset.rfind(b"\xfc\xff\xfc\xff")
    if at < 0:
        return dataset
    explicit = dataset[at + 4 : at + 6] == b"OB"
    length_at, header = (at + 8, 12) if explicit else (at + 4, 8)
    (length,) = struct.unpack_from("<I", dataset, length_at)
    return dataset[:at] if at + header + length == len(dataset) else dataset


def comparable(dataset: bytes, transfer_syntax_uid: str) -> bytes:
    """Deflated datasets are compared inflated: Orthanc re-deflates what it stores."""
    if transfer_syntax_uid == "1.2.840.10008.1.2.1.99":
        dataset = zlib.decompress(dataset, -zlib.MAX_WBITS)
    return without_trailing_padding(dataset)


def edge_dataset(engine: EngineProcess, uid: str) -> bytes:
    record = engine.instance(uid)
    assert record is not None, uid
    return engine.object_path(record["hash"]).read_bytes()[record["meta_length"] :]


def central_dataset(central: OrthancProcess, uid: str) -> bytes | None:
    from pynetdicom.dsutils import split_dataset

    data = central.file(uid)
    if data is None:
        return None
    path = central.workdir / "fetched.dcm"
    path.write_bytes(data)
    _meta, offset = split_dataset(path)
    return data[offset:]


def drained(engine: EngineProcess, name: str = "central") -> bool:
    dest = engine.status()["destinations"][name]
    return bool(dest["depth"] == 0 and dest["in_flight"] == 0)


def distinct_corpus() -> list[SourceFile]:
    """The public corpus, one file per SOP Instance UID, in a syntax storescu sends."""
    files, _ = public_corpus()
    chosen: dict[str, SourceFile] = {}
    for f in files:
        if propose_flag(f.transfer_syntax_uid) is not None:
            chosen.setdefault(f.sop_instance_uid, f)
    return list(chosen.values())


def send_each(engine: EngineProcess, files: list[SourceFile]) -> list[SourceFile]:
    """storescu, one file per run (a broken file stops a run); returns those stored."""

    def send(f: SourceFile) -> SourceFile | None:
        result = storescu(engine.port, [f.path], f.transfer_syntax_uid)
        return f if result.returncode == 0 else None

    with ThreadPoolExecutor(max_workers=2) as pool:
        return [f for f in pool.map(send, files) if f is not None]


@odd_corpus
def test_corpus_arrives_once_and_identical_over_dicom(
    engine_factory: Callable[..., EngineProcess], orthanc: OrthancProcess
) -> None:
    engine = engine_factory(
        {"destination": [dicom_destination(orthanc, associations=2)], "forward": FAST_RETRY}
    )
    stored = send_each(engine, distinct_corpus())
    records = [engine.instance(f.sop_instance_uid) or {} for f in stored]
    modalities = {record.get("modality") for record in records}
    assert len(stored) >= 50, (len(stored), modalities)
    assert len(modalities) >= 5, (len(stored), modalities)
    wait_until(lambda: drained(engine), 180, "the queue to drain")
    # Orthanc refuses (0xA700) objects without Patient ID, Study or Series UID; those
    # must be dead letters saying so, and nothing else may be missing.
    _, dead = engine.get("/api/v1/queues/central/dead?limit=1000")
    refused = {job["sop_instance_uid"]: job["last_error"] for job in dead["jobs"]}
    for uid, why in refused.items():
        record = engine.instance(uid) or {}
        assert "0xa700" in why, why
        assert not all(
            record[k] for k in ("patient_id", "study_instance_uid", "series_instance_uid")
        )
    uids = orthanc.sop_instance_uids()
    expected = [f.sop_instance_uid for f in stored if f.sop_instance_uid not in refused]
    assert sorted(uids) == sorted(expected)  # each exactly once
    assert len(refused) < len(stored) // 10, refused
    differ = []
    for f in stored:
        if f.sop_instance_uid in refused:
            continue
        got = central_dataset(orthanc, f.sop_instance_uid)
        assert got is not None, f.path.name
        ours = edge_dataset(engine, f.sop_instance_uid)
        ts = f.transfer_syntax_uid
        if comparable(got, ts) != comparable(ours, ts):
            differ.append(f.path.name)
    assert differ == []


def test_series_over_dicomweb(
    engine_factory: Callable[..., EngineProcess], orthanc: OrthancProcess, tmp_path: Path
) -> None:
    destination = {"name": "web", "kind": "dicomweb", "url": orthanc.dicomweb_url}
    engine = engine_factory({"destination": [destination], "forward": {"batch_size": 8}})
    files = make_series(tmp_path / "series", 30) + make_series(tmp_path / "mr", 5, "MR_small.dcm")
    result = storescu(engine.port, [f.path for f in files])
    assert result.returncode == 0, result.stderr
    wait_until(lambda: drained(engine, "web"), 120, "STOW-RS to drain the queue")
    assert sorted(orthanc.sop_instance_uids()) == sorted(f.sop_instance_uid for f in files)
    for f in files[:5] + files[-2:]:
        got = central_dataset(orthanc, f.sop_instance_uid)
        assert got is not None
        assert without_trailing_padding(got) == without_trailing_padding(
            edge_dataset(engine, f.sop_instance_uid)
        )
    assert engine.status()["destinations"]["web"]["sent"] == len(files)


def test_central_outage_queues_then_drains_by_itself(
    engine_factory: Callable[..., EngineProcess], orthanc: OrthancProcess, tmp_path: Path
) -> None:
    engine = engine_factory({"destination": [dicom_destination(orthanc)], "forward": FAST_RETRY})
    first = make_series(tmp_path / "a", 10)
    assert storescu(engine.port, [f.path for f in first]).returncode == 0
    wait_until(lambda: orthanc.count() == 10, 60, "the first series at central")
    orthanc.stop()
    second = make_series(tmp_path / "b", 25)
    result = storescu(engine.port, [f.path for f in second])
    assert result.returncode == 0, "the edge must keep ingesting while central is down"
    wait_until(
        lambda: engine.status()["destinations"]["central"]["last_error"] != "",
        30,
        "the outage to show in status",
    )
    dest = engine.status()["destinations"]["central"]
    assert dest["depth"] == 25
    assert dest["circuit"] in ("retrying", "open")
    assert "connect" in dest["last_error"]
    orthanc.start()
    wait_until(lambda: drained(engine), 60, "the queue to drain after central is back")
    assert sorted(orthanc.sop_instance_uids()) == sorted(f.sop_instance_uid for f in first + second)


def test_kill_9_mid_forward_resends_at_most_the_objects_in_flight(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    """kill -9 at random moments while forwarding into Orthanc and DCMTK storescp:
    nothing is lost, and each crash sends again at most one object per forward
    association (the one in flight), counted per SOP Instance UID at the receivers."""
    central = OrthancProcess(tmp_path / "orthanc", count_receptions=True).start()
    received = tmp_path / "storescp"
    received.mkdir()
    scp_port = free_port()
    scp = subprocess.Popen(
        ["storescp", "+uf", "-od", str(received), "-aet", "ARCHIVE", str(scp_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    associations = 2
    # A thin "WAN": 1 MB/s each, so every kill lands mid-forward.
    thin = {"bandwidth": "1MB", "associations": associations, "ordered": False}
    archive = {"name": "archive", "kind": "dicom", "host": "127.0.0.1", "port": scp_port}
    engine = engine_factory(
        {
            "destination": [
                dicom_destination(central, **thin),
                {**archive, "called_ae": "ARCHIVE", **thin},
            ]
        }
    )
    try:
        files = make_series(tmp_path / "s", 200)  # about 7.8 MB
        assert storescu(engine.port, [f.path for f in files]).returncode == 0
        seed = int(time.time())
        print(f"kill points from random seed {seed}")
        rng = random.Random(seed)
        crashes = 3
        for crash in range(crashes):
            time.sleep(rng.uniform(0.3, 1.5))
            engine.kill()
            assert central.count() < len(files), f"forwarding finished before kill {crash + 1}"
            engine.start()
        wait_until(
            lambda: drained(engine, "central") and drained(engine, "archive"),
            120,
            "both queues to drain after the restarts",
        )
        wanted = Counter(f.sop_instance_uid for f in files)
        at_central = Counter(central.receptions.read_text().split())
        at_archive = Counter(
            str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            for path in received.iterdir()
        )
        for name, copies in (("Orthanc", at_central), ("storescp", at_archive)):
            assert set(copies) == set(wanted), f"{name}: objects lost or foreign"
            again = sum(copies.values()) - len(wanted)
            print(f"{name}: {again} object(s) received twice over {crashes} crashes")
            assert again <= crashes * associations, f"{name}: {again} resent"
    finally:
        scp.terminate()
        scp.wait(timeout=10)
        central.stop()


def storescp_refusing(workdir: Path, refused: str | None) -> tuple[subprocess.Popen[bytes], int]:
    """DCMTK storescp with its stock profile minus one SOP class (by DCMTK name)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stock = Path("/etc/dcmtk/storescp.cfg").read_text()
    lines = [
        line
        for line in stock.splitlines()
        if refused is None or f"= {refused}\\" not in line.replace("  ", " ")
    ]
    config = workdir / "storescp.cfg"
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    out = workdir / "received"
    out.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        ["storescp", "-xf", str(config), "Default", "-od", str(out), "-aet", "ARCHIVE", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc, port


def run_cli(engine: EngineProcess, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    url = f"http://127.0.0.1:{engine.http_port}"
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_refused_sop_class_dead_letters_and_requeues(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    scp, port = storescp_refusing(tmp_path / "scp1", refused="MRImageStorage")
    try:
        destination = {
            "name": "archive",
            "kind": "dicom",
            "host": "127.0.0.1",
            "port": port,
            "called_ae": "ARCHIVE",
            "max_attempts": 2,
        }
        engine = engine_factory({"destination": [destination], "forward": FAST_RETRY})
        ct = make_series(tmp_path / "ct", 8)
        mr = make_series(tmp_path / "mr", 3, "MR_small.dcm")
        assert storescu(engine.port, [f.path for f in ct + mr]).returncode == 0
        wait_until(lambda: drained(engine, "archive"), 60, "CT to flow and MR to die")
        dest = engine.status()["destinations"]["archive"]
        assert dest["sent"] == 8, dest
        assert dest["dead"] == 3, dest
        listing = run_cli(engine, "dead", "ls", "archive")
        assert listing.returncode == 0, listing.stderr
        for f in mr:
            assert f.sop_instance_uid in listing.stdout
        assert "no presentation context for SOP class 1.2.840.10008.5.1.4.1.1.4" in listing.stdout
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    # The archive is fixed (MR accepted now, same port): requeue, and MR arrives.
    fixed = subprocess.Popen(
        ["storescp", "-od", str(tmp_path / "scp1" / "received"), "-aet", "ARCHIVE", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, fixed)
        requeue = run_cli(engine, "dead", "requeue", "archive")
        assert requeue.returncode == 0, requeue
        assert "3 job(s)" in requeue.stdout, requeue
        wait_until(lambda: drained(engine, "archive"), 60, "the requeued MR")
        dest = engine.status()["destinations"]["archive"]
        assert dest["sent"] == 11, dest
        assert dest["dead"] == 0, dest
        received = list((tmp_path / "scp1" / "received").iterdir())
        assert sum(1 for p in received if p.name.startswith("MR")) == 3
    finally:
        fixed.terminate()
        fixed.wait(timeout=10)


def test_routing_rules_and_coercion(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    a = OrthancProcess(tmp_path / "a").start()
    b = OrthancProcess(tmp_path / "b").start()
    try:
        routes = [
            {"name": "ct1-only-a", "destinations": ["A"], "match": {"calling_ae": "CT1"}},
            {
                "name": "mammo-both",
                "destinations": ["A", "B"],
                "priority": "high",
                "match": {"Modality": "MG"},
                "coerce": {
                    "set": {"IssuerOfPatientID": "SITE1"},
                    "prefix": {"PatientID": "S1-"},
                },
            },
            {"name": "rest-local", "destinations": [], "match": {}},
        ]
        engine = engine_factory(
            {
                "destination": [dicom_destination(a, "A"), dicom_destination(b, "B")],
                "route": routes,
            }
        )
        ct = make_series(tmp_path / "ct", 4)
        mg = make_series(tmp_path / "mg", 3, Modality="MG", PatientID="P77")
        other = make_series(tmp_path / "other", 2)
        assert storescu(engine.port, [f.path for f in ct], calling_ae="CT1").returncode == 0
        assert storescu(engine.port, [f.path for f in mg], calling_ae="MG1").returncode == 0
        assert storescu(engine.port, [f.path for f in other], calling_ae="US1").returncode == 0
        wait_until(lambda: drained(engine, "A") and drained(engine, "B"), 60, "routes")
        want_a = {f.sop_instance_uid for f in ct + mg}
        want_b = {f.sop_instance_uid for f in mg}
        wait_until(lambda: set(a.sop_instance_uids()) >= want_a, 10, "A to index them")
        wait_until(lambda: set(b.sop_instance_uids()) >= want_b, 10, "B to index them")
        assert set(a.sop_instance_uids()) == want_a
        assert set(b.sop_instance_uids()) == want_b
        for central in (a, b):
            tags = central.tags(mg[0].sop_instance_uid)
            assert tags is not None
            assert tags["IssuerOfPatientID"] == "SITE1"
            assert tags["PatientID"] == "S1-P77"
        ct_tags = a.tags(ct[0].sop_instance_uid)
        assert ct_tags is not None
        assert "IssuerOfPatientID" not in ct_tags
        # The edge's own copy is untouched.
        record = engine.instance(mg[0].sop_instance_uid)
        assert record is not None
        own = pydicom.dcmread(engine.object_path(record["hash"]))
        assert own.PatientID == "P77"
        assert "IssuerOfPatientID" not in own
    finally:
        a.stop()
        b.stop()


def test_queue_cli_ls_retry_purge(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    # A destination nobody listens on: jobs wait, with the reason.
    destination = {
        "name": "down",
        "kind": "dicom",
        "host": "127.0.0.1",
        "port": free_port(),
        "called_ae": "NOBODY",
    }
    engine = engine_factory({"destination": [destination], "forward": FAST_RETRY})
    files = make_series(tmp_path / "s", 5)
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    wait_until(lambda: engine.status()["destinations"]["down"]["last_error"] != "", 30, "a failure")
    listing = run_cli(engine, "queue", "ls")
    assert listing.returncode == 0, listing.stderr
    assert "down: 5 queued" in listing.stdout
    assert "cannot connect" in listing.stdout
    retry = run_cli(engine, "queue", "retry", "down")
    assert retry.returncode == 0, retry
    assert "sending now" in retry.stdout, retry
    refused = run_cli(engine, "queue", "purge", "down")
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    purge = run_cli(engine, "queue", "purge", "down", "--yes")
    assert purge.returncode == 0, purge
    assert "5 job(s) purged" in purge.stdout, purge
    assert engine.status()["destinations"]["down"]["depth"] == 0
    assert engine.status()["instances"] == 5  # purging a queue never deletes objects
    unknown = run_cli(engine, "queue", "retry", "nowhere")
    assert unknown.returncode == 1
    assert "no destination 'nowhere'" in unknown.stderr


@odd_corpus
def test_jpegls_destination_gets_verified_lossless_copies(
    engine_factory: Callable[..., EngineProcess], orthanc: OrthancProcess
) -> None:
    """transfer_syntax = "jpeg-ls-lossless": native images reach Orthanc as JPEG-LS whose
    pixels, decoded by pylibjpeg-libjpeg and by Orthanc itself, are the modality's;
    what JPEG-LS cannot carry goes as stored, byte for byte."""
    destination = dicom_destination(orthanc, transfer_syntax="jpeg-ls-lossless")
    engine = engine_factory({"destination": [destination], "forward": FAST_RETRY})
    by_name = {f.path.name: f for f in public_corpus()[0]}
    # Signed 16-bit CT, 12-bit MR and CR, 8-bit mono, RGB, a 2-frame enhanced CT.
    transcoded = [
        "CT_small.dcm",
        "MR2_UNCR.dcm",
        "RG1_UNCR.dcm",
        "vlut_04.dcm",
        "US1_UNCR.dcm",
        "eCT_Supplemental.dcm",
    ]
    as_stored = ["JPEG2000.dcm", "mlut_18.dcm", "SC_rgb_32bit.dcm"]
    files = [by_name[name] for name in transcoded + as_stored]
    assert send_each(engine, files) == files
    wait_until(lambda: drained(engine), 120, "the queue to drain")
    for f in files:
        got = central_dataset(orthanc, f.sop_instance_uid)
        assert got is not None, f.path.name
        if f.path.name in as_stored:
            ts = f.transfer_syntax_uid
            assert comparable(got, ts) == comparable(edge_dataset(engine, f.sop_instance_uid), ts)
            continue
        original = pydicom.dcmread(f.path)
        fetched = orthanc.file(f.sop_instance_uid)
        assert fetched is not None
        copy = pydicom.dcmread(BytesIO(fetched))
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80", f.path.name
        assert len(copy.PixelData) < len(original.PixelData), f.path.name
        assert np.array_equal(copy.pixel_array, original.pixel_array), f.path.name
        # Orthanc's own JPEG-LS decoder (DCMTK + CharLS) gives back the same samples.
        plain = orthanc.file(f.sop_instance_uid, transcode="1.2.840.10008.1.2.1")
        assert plain is not None
        assert np.array_equal(pydicom.dcmread(BytesIO(plain)).pixel_array, original.pixel_array)
        # Everything else is the modality's, element for element (Orthanc drops the
        # trailing padding, see without_trailing_padding).
        changed = (0x00280006, 0x7FE00010, 0xFFFCFFFC)
        others = {e.tag: e.value for e in original if e.tag not in changed}
        assert {e.tag: e.value for e in copy if e.tag in others} == others, f.path.name
    assert list((engine.data_dir / "spool").glob("*transcode*")) == []  # copies deleted
    metrics = engine.get_text("/metrics")
    assert 'pacs_edge_transcodes_total{codec="jpeg-ls",outcome="verified"} 6.0' in metrics
    # mlut_18 and the 32-bit image: refused by the codec, sent as stored.
    assert 'pacs_edge_transcodes_total{codec="jpeg-ls",outcome="not_representable"} 2.0' in metrics


@odd_corpus
def test_htj2k_destination_gets_verified_lossless_copies(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    """transfer_syntax = "htj2k-lossless": native images arrive as HTJ2K Lossless whose
    pixels, decoded by pydicom + pylibjpeg-openjpeg and by OpenJPH, are the modality's.
    The archive is a second pacs-edge: the Debian Orthanc (1.10) and DCMTK (3.6.7)
    predate HTJ2K and refuse its transfer syntax."""
    central = engine_factory({"node": {"ae_title": "CENTRAL"}}, name="central")
    destination = {
        "name": "central",
        "kind": "dicom",
        "host": "127.0.0.1",
        "port": central.port,
        "called_ae": "CENTRAL",
        "transfer_syntax": "htj2k-lossless",
    }
    engine = engine_factory({"destination": [destination], "forward": FAST_RETRY})
    by_name = {f.path.name: f for f in public_corpus()[0]}
    # RG1_UNCR.dcm (15-bit CR) needs the fixed openjph-core (its PATCHED.md).
    transcoded = [
        "CT_small.dcm",
        "MR2_UNCR.dcm",
        "US1_UNCR.dcm",
        "eCT_Supplemental.dcm",
        "RG1_UNCR.dcm",
    ]
    as_stored = ["JPEG2000.dcm"]  # compressed already
    files = [by_name[name] for name in [*transcoded, *as_stored]]
    assert send_each(engine, files) == files
    wait_until(lambda: drained(engine), 120, "the queue to drain")
    for f in files:
        record = central.instance(f.sop_instance_uid)
        assert record is not None, f.path.name
        copy = pydicom.dcmread(central.object_path(record["hash"]))
        if f.path.name in as_stored:
            assert copy.file_meta.TransferSyntaxUID == f.transfer_syntax_uid
            continue
        original = pydicom.dcmread(f.path)
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.201", f.path.name
        assert len(copy.PixelData) < len(original.PixelData), f.path.name
        assert np.array_equal(copy.pixel_array, original.pixel_array), f.path.name
        assert_openjph_decodes(copy, pydicom.pixels.pixel_array(original, raw=True), f.path.name)
        # Every other element as the edge stored it (storescu dropped the padding).
        stored = pydicom.dcmread(engine.object_path(engine.instance(f.sop_instance_uid)["hash"]))
        others = {e.tag: e.value for e in stored if e.tag not in (0x00280006, 0x7FE00010)}
        assert {e.tag: e.value for e in copy if e.tag in others} == others, f.path.name
    metrics = engine.get_text("/metrics")
    assert 'pacs_edge_transcodes_total{codec="htj2k",outcome="verified"} 5.0' in metrics
    assert 'outcome="mismatch"' not in metrics


@odd_corpus
def test_stow_destination_gets_jpegls_files(
    engine_factory: Callable[..., EngineProcess], orthanc: OrthancProcess
) -> None:
    """The same over DICOMweb: STOW-RS carries JPEG-LS Part-10 files (file meta naming
    the new transfer syntax) that Orthanc stores and decodes to the original pixels."""
    destination = {
        "name": "web",
        "kind": "dicomweb",
        "url": orthanc.dicomweb_url,
        "transfer_syntax": "jpeg-ls-lossless",
    }
    engine = engine_factory({"destination": [destination], "forward": {"batch_size": 4}})
    by_name = {f.path.name: f for f in public_corpus()[0]}
    files = [by_name[n] for n in ("CT_small.dcm", "US1_UNCR.dcm", "JPEG2000.dcm")]
    assert send_each(engine, files) == files
    wait_until(lambda: drained(engine, "web"), 120, "STOW-RS to drain the queue")
    for f in files:
        fetched = orthanc.file(f.sop_instance_uid)
        assert fetched is not None, f.path.name
        copy = pydicom.dcmread(BytesIO(fetched))
        original = pydicom.dcmread(f.path)
        if f.path.name == "JPEG2000.dcm":
            assert copy.file_meta.TransferSyntaxUID == f.transfer_syntax_uid
            continue
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80", f.path.name
        assert np.array_equal(copy.pixel_array, original.pixel_array), f.path.name
    assert list((engine.data_dir / "spool").glob("*transcode*")) == []
    metrics = engine.get_text("/metrics")
    assert 'pacs_edge_transcodes_total{codec="jpeg-ls",outcome="verified"} 2.0' in metrics


@odd_corpus
def test_uncompressed_destination_gets_compressed_objects_decoded(
    engine_factory: Callable[..., EngineProcess], orthanc: OrthancProcess
) -> None:
    """transfer_syntax = "uncompressed": RLE, JPEG 2000 and JPEG objects reach
    Orthanc in explicit VR little endian, decoded by core_rs to the original pixels
    (YBR_RCT and JPEG's YCbCr as RGB; lossy JPEG as close as two decoders agree);
    an RGB dataset whose JPEG stream is coded YCbCr goes as stored."""
    destination = dicom_destination(orthanc, transfer_syntax="uncompressed")
    engine = engine_factory({"destination": [destination], "forward": FAST_RETRY})
    by_name = {f.path.name: f for f in public_corpus()[0]}
    rle = ["MR_small_RLE.dcm", "SC_rgb_rle_16bit_2frame.dcm"]
    j2k = ["JPEG2000.dcm", "US1_J2KR.dcm", "MR2_J2KI.dcm"]
    jpeg = ["JPEG-LL.dcm", "JPGExtended.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"]
    ambiguous = "SC_jpeg_no_color_transform.dcm"
    files = [by_name[n] for n in [*rle, *j2k, *jpeg, ambiguous]]
    assert send_each(engine, files) == files
    wait_until(lambda: drained(engine), 120, "the queue to drain")
    for f in files:
        fetched = orthanc.file(f.sop_instance_uid)
        assert fetched is not None, f.path.name
        copy = pydicom.dcmread(BytesIO(fetched))
        if f.path.name == ambiguous:
            assert copy.file_meta.TransferSyntaxUID == f.transfer_syntax_uid
            continue
        assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", f.path.name
        ours, theirs = copy.pixel_array, pydicom.dcmread(f.path).pixel_array
        if f.path.name in ("JPGExtended.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"):  # lossy
            assert_lossy_jpeg_agrees(ours, theirs, f.path.name)
        else:
            assert np.array_equal(ours, theirs), f.path.name
    for name in ("US1_J2KR.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm"):
        assert orthanc.tags(by_name[name].sop_instance_uid)["PhotometricInterpretation"] == "RGB"
    assert list((engine.data_dir / "spool").glob("*transcode*")) == []
    metrics = engine.get_text("/metrics")
    assert 'pacs_edge_transcodes_total{codec="rle",outcome="decoded"} 2.0' in metrics
    assert 'pacs_edge_transcodes_total{codec="jpeg2000",outcome="decoded"} 3.0' in metrics
    assert 'pacs_edge_transcodes_total{codec="jpeg",outcome="decoded"} 3.0' in metrics
    assert 'pacs_edge_transcodes_total{codec="jpeg",outcome="not_representable"} 1.0' in metrics
