"""Ingest from real SCUs: DCMTK storescu/echoscu and pynetdicom, against a real
engine process. Every acknowledged object must be on disk, hashed and indexed,
with the dataset exactly as sent."""

from __future__ import annotations

import multiprocessing
import subprocess
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import blake3
import pydicom
import pynetdicom._config as pynetdicom_config
import pytest
from pynetdicom import AE

from engine.dicom.negotiation import TRANSFER_SYNTAXES
from tests.support.corpus import SourceFile, make_series, public_corpus
from tests.support.dcmtk import dcmdump_ok, propose_flag, storescu
from tests.support.process import AE_TITLE, EngineProcess
from tests.support.pynet import store_series

pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes unchanged
# pydicom's test files are odd on purpose: the SENDING side warns while reading them.
odd_corpus = pytest.mark.filterwarnings("ignore::UserWarning")


def stored_dataset(engine: EngineProcess, record: dict[str, object]) -> bytes:
    path = engine.object_path(str(record["hash"]))
    return path.read_bytes()[int(str(record["meta_length"])) :]


def test_echoscu(engine: EngineProcess) -> None:
    result = subprocess.run(
        ["echoscu", "-aec", AE_TITLE, "127.0.0.1", str(engine.port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@odd_corpus
def test_pynetdicom_public_corpus_byte_identical(engine: EngineProcess) -> None:
    """Every sendable file of pydicom-data and pydicom's tests, sent as-is: the
    stored dataset bytes equal the file's, and the hash is BLAKE3 of them."""
    files, excluded = public_corpus()
    assert len(files) > 100, "the public corpus shrank: is pydicom-data installed?"
    print(f"{len(files)} files sent, {len(excluded)} not sendable by any SCU:")
    for path, why in excluded.items():
        print(f"  {path.name}: {why}")
    ae = AE(ae_title="PYNETDICOM")
    for sop_class, ts in sorted({(f.sop_class_uid, f.transfer_syntax_uid) for f in files}):
        ae.add_requested_context(sop_class, [ts])
    assert len(ae.requested_contexts) <= 128
    assoc = ae.associate("127.0.0.1", engine.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        for f in files:
            rsp = assoc.send_c_store(f.path)
            assert rsp.Status == 0x0000, f"{f.path.name}: status {rsp.Status:#06x}"
            record = engine.instance(f.meta_sop_instance_uid)
            assert record is not None, f.path.name
            assert record["hash"] == f.blake3, f.path.name
            assert stored_dataset(engine, record) == f.dataset_bytes, f.path.name
            assert record["transfer_syntax_uid"] == f.transfer_syntax_uid
            # A valid Part-10 file: pydicom reads our meta and the dataset behind it.
            stored = pydicom.dcmread(engine.object_path(record["hash"]))
            assert stored.file_meta.TransferSyntaxUID == f.transfer_syntax_uid
            assert stored.file_meta.MediaStorageSOPInstanceUID == f.meta_sop_instance_uid
            assert stored.file_meta.SourceApplicationEntityTitle == "PYNETDICOM"
    finally:
        assoc.release()


def _same_dataset(stored: Path, source: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corpus is odd on purpose
        a = pydicom.dcmread(stored)
        b = pydicom.dcmread(source)
    assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
    # DCMTK drops group lengths and Data Set Trailing Padding when it sends.
    keys_a = {e.tag for e in a if e.tag.element != 0 and e.tag != 0xFFFCFFFC}
    keys_b = {e.tag for e in b if e.tag.element != 0 and e.tag != 0xFFFCFFFC}
    assert keys_a == keys_b, source.name
    for tag in keys_b:
        assert a[tag].value == b[tag].value, f"{source.name} {tag}"


@odd_corpus
@pytest.mark.parametrize("nodelay", [True, False], ids=["TCP_NODELAY=1", "default"])
def test_storescu_public_corpus(engine: EngineProcess, nodelay: bool) -> None:
    """DCMTK storescu sends each file in its own transfer syntax; DCMTK re-encodes
    the dataset, so the stored copy is compared element by element, and must be
    readable by dcmdump."""
    files, _ = public_corpus()
    cannot_propose = [f for f in files if propose_flag(f.transfer_syntax_uid) is None]
    sendable = [f for f in files if f not in cannot_propose]
    print(
        f"storescu cannot propose the syntax of {len(cannot_propose)} file(s): "
        + ", ".join(sorted({f.transfer_syntax_uid for f in cannot_propose}))
    )

    def send(f: SourceFile) -> tuple[SourceFile, subprocess.CompletedProcess[str]]:
        return f, storescu(engine.port, [f.path], f.transfer_syntax_uid, nodelay=nodelay)

    refused_by_dcmtk, stored = [], 0
    # One file per storescu run (a bad file stops storescu at its input check),
    # two at a time; files with the same SOP Instance UID go in the same worker
    # order they appear, and are checked right after their own store.
    by_uid: dict[str, list[SourceFile]] = {}
    for f in sendable:
        by_uid.setdefault(f.sop_instance_uid, []).append(f)

    def send_all(group: list[SourceFile]) -> list[tuple[SourceFile, str]]:
        problems: list[tuple[SourceFile, str]] = []
        for f in group:
            _, result = send(f)
            output = result.stdout + result.stderr
            if result.returncode != 0:
                problems.append((f, output))
                continue
            record = engine.instance(f.sop_instance_uid)
            assert record is not None, f.path.name
            path = engine.object_path(record["hash"])
            assert blake3.blake3(stored_dataset(engine, record)).hexdigest() == record["hash"]
            assert dcmdump_ok(path), f.path.name
            _same_dataset(path, f.path)
        return problems

    with ThreadPoolExecutor(max_workers=2) as pool:
        for problems in pool.map(send_all, by_uid.values()):
            for f, output in problems:
                # storescu refuses some deliberately broken files before sending.
                if "missing SOP class (or instance) in file" in output:
                    refused_by_dcmtk.append(f)
                else:
                    pytest.fail(f"storescu failed on {f.path.name}:\n{output[-2000:]}")
    stored = len(sendable) - len(refused_by_dcmtk)
    print(
        f"{stored} stored; storescu refused {len(refused_by_dcmtk)} broken file(s) itself: "
        + ", ".join(f.path.name for f in refused_by_dcmtk)
    )
    assert stored > 100
    assert len(refused_by_dcmtk) < 10


def test_16_parallel_storescu_associations(engine: EngineProcess, tmp_path: Path) -> None:
    streams = 16
    per_stream = 12
    series = [make_series(tmp_path / f"s{i}", per_stream) for i in range(streams)]
    procs = [
        subprocess.Popen(
            [
                "storescu",
                "-R",
                "-aet",
                f"CT{i:02d}",
                "-aec",
                AE_TITLE,
                "127.0.0.1",
                str(engine.port),
                *(str(f.path) for f in files),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        for i, files in enumerate(series)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    status = engine.status()
    assert status["instances"] == streams * per_stream
    assert status["studies"] == streams
    assert status["series"] == streams
    assert status["associations"]["accepted_total"] == streams
    for i, files in enumerate(series):
        for f in files:
            record = engine.instance(f.sop_instance_uid)
            assert record is not None
            assert record["calling_ae"] == f"CT{i:02d}"
            assert record["modality"] == "CT"
            stored = engine.object_path(record["hash"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(stored)
            assert ds.SOPInstanceUID == f.sop_instance_uid
            assert ds.file_meta.SourceApplicationEntityTitle == f"CT{i:02d}"
    # Nothing is left half-way.
    assert not list((engine.data_dir / "spool").iterdir())


def test_index_survives_restart(engine: EngineProcess, tmp_path: Path) -> None:
    files = make_series(tmp_path / "s", 5)
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    before = engine.status()
    assert engine.stop() == 0
    engine.start()
    after = engine.status()
    for key in ("instances", "series", "studies", "bytes"):
        assert after[key] == before[key], key
    assert all(engine.instance(f.sop_instance_uid) for f in files)


def test_pynetdicom_parallel_associations(engine: EngineProcess, tmp_path: Path) -> None:
    """16 pynetdicom associations at once, each storing its own series from a client
    process of its own (tests/support/pynet.py says why not 16 threads)."""
    series = [make_series(tmp_path / f"p{i}", 5, "MR_small.dcm") for i in range(16)]
    first = series[0][0]
    with ProcessPoolExecutor(16, mp_context=multiprocessing.get_context("spawn")) as pool:
        sent = [
            pool.submit(
                store_series,
                engine.port,
                AE_TITLE,
                first.sop_class_uid,
                first.transfer_syntax_uid,
                [str(f.path) for f in files],
            )
            for files in series
        ]
        failures = [failure for future in sent for failure in future.result(timeout=120)]
    assert not failures
    assert engine.status()["instances"] == 16 * 5


def test_cli_store_echo_status(
    engine: EngineProcess, tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    files = make_series(tmp_path / "cli", 3)
    (tmp_path / "cli" / "notes.txt").write_text("not DICOM")
    echo = run_cli("echo", "127.0.0.1", str(engine.port))
    assert echo.returncode == 0
    assert "status 0x0000" in echo.stdout
    store = run_cli("store", "127.0.0.1", str(engine.port), str(tmp_path / "cli"))
    assert store.returncode == 0, store.stderr
    assert "3 stored (0.1 MB), 0 failed, 1 skipped" in store.stdout
    status = run_cli("status", "--url", f"http://127.0.0.1:{engine.http_port}")
    assert "3 instances, 1 series, 1 studies" in status.stdout
    assert all(engine.instance(f.sop_instance_uid) for f in files)


@odd_corpus
def test_import_of_the_pydicom_data_folder(
    engine: EngineProcess, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """`pacs-edge import` of pydicom-data's folder and pydicom's test files: every
    Part-10 file whose transfer syntax a storage SCP takes is stored; the rest are
    skipped or failed, with why."""
    from pydicom.data import get_testdata_file

    from engine.send_files import Summary, find

    folders = [
        Path(str(get_testdata_file(name))).parent for name in ("693_J2KR.dcm", "CT_small.dcm")
    ]
    assert folders[0] != folders[1]
    expected = Summary()
    found = find(folders, expected)
    assert len(found) > 100
    config = engine.workdir / "pacs-edge.toml"
    result = run_cli("import", *map(str, folders), "--config", str(config), timeout=600)
    assert "stored" in result.stdout, result.stderr
    assert "ETA" in result.stderr  # the progress line
    # Every file the edge can take is in the index once, by its SOP Instance UID.
    takeable = [f for f in found if f.transfer_syntax_uid in TRANSFER_SYNTAXES]
    missing = [f.path.name for f in takeable if engine.instance(f.sop_instance_uid) is None]
    assert missing == [], missing
    assert engine.status()["instances"] == len({f.sop_instance_uid for f in takeable})
    skipped = int(result.stdout.split(" skipped")[0].rsplit(",", 1)[1].split()[0])
    assert skipped == len(expected.skipped) > 0
    refused = len(found) - len(takeable)
    assert f"{refused} failed" in result.stdout
    assert (result.returncode == 0) == (refused == 0)


def test_import_of_a_dicomdir(
    engine: EngineProcess, run_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A CD's DICOMDIR given as the path: the images below it are imported."""
    from pydicom.data import get_testdata_file

    dicomdir = Path(str(get_testdata_file("DICOMDIR", download=False)))
    assert dicomdir.name == "DICOMDIR"
    config = engine.workdir / "pacs-edge.toml"
    result = run_cli("import", str(dicomdir), "--config", str(config), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    images = pydicom.dcmread(dicomdir).DirectoryRecordSequence
    listed = {
        str(r.ReferencedSOPInstanceUIDInFile)
        for r in images
        if "ReferencedSOPInstanceUIDInFile" in r
    }
    assert len(listed) > 10
    assert all(engine.instance(uid) is not None for uid in listed)
