"""Same SOP Instance UID again: identical bytes are stored once; other content
follows storage.on_duplicate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pynetdicom._config as pynetdicom_config
import pytest
from pynetdicom import AE

from tests.support.corpus import SourceFile, describe, make_series
from tests.support.process import AE_TITLE, EngineProcess

pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True


def changed_copy(src: SourceFile, path: Path) -> SourceFile:
    ds = pydicom.dcmread(src.path)
    ds.PatientName = "CHANGED^AFTER^SEND"
    ds.save_as(path, enforce_file_format=True)
    found = describe(path)
    assert isinstance(found, SourceFile)
    return found


def send(port: int, *files: SourceFile) -> list[int]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(files[0].sop_class_uid, [files[0].transfer_syntax_uid])
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(f.path).Status) for f in files]
    assoc.release()
    return statuses


def object_files(node: EngineProcess) -> list[Path]:
    return [p for p in (node.data_dir / "objects").rglob("*") if p.is_file()]


def test_identical_object_is_stored_once(engine: EngineProcess, tmp_path: Path) -> None:
    src = make_series(tmp_path / "s", 1)[0]
    assert send(engine.port, src, src) == [0, 0]
    assert send(engine.port, src) == [0]
    assert engine.status()["instances"] == 1
    assert len(object_files(engine)) == 1


@pytest.mark.parametrize(
    ("policy", "second_status", "kept"),
    [("replace", 0x0000, "second"), ("keep", 0x0000, "first"), ("reject", 0x0111, "first")],
)
def test_other_content_same_uid(
    engine_factory: Callable[..., EngineProcess],
    tmp_path: Path,
    policy: str,
    second_status: int,
    kept: str,
) -> None:
    node = engine_factory({"storage": {"on_duplicate": policy}})
    first = make_series(tmp_path / "s", 1)[0]
    second = changed_copy(first, tmp_path / "changed.dcm")
    assert first.blake3 != second.blake3
    assert send(node.port, first, second) == [0, second_status]
    record = node.instance(first.sop_instance_uid)
    assert record is not None
    winner = second if kept == "second" else first
    assert record["hash"] == winner.blake3
    assert record["patient_name"] == str(pydicom.dcmread(winner.path).PatientName)
    # Only the indexed version is on disk; the other was never kept or was removed.
    assert [p.name for p in object_files(node)] == [winner.blake3]
    assert node.status()["instances"] == 1
    assert "SOP Instance UID" in node.log()
