"""Orthanc as a Query/Retrieve SCU of the edge, through its REST API as a PACS admin
would drive it: /modalities/{id}/query finds a study on the edge, /retrieve has the
edge C-MOVE it to Orthanc, and the datasets that arrive are the edge's stored bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import AE_TITLE, EngineProcess, wait_until


def test_orthanc_queries_and_retrieves_from_the_edge(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    engine = engine_factory(start=False)
    orthanc = OrthancProcess(
        tmp_path / "orthanc", modalities={"edge": (AE_TITLE, "127.0.0.1", engine.port)}
    )
    engine.settings["calling_ae"] = [
        {"ae_title": "STORESCU"},
        {"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.port},
    ]
    engine.start()
    orthanc.start()
    try:
        files = make_series(tmp_path / "ct", 4, PatientID="ORTH1", AccessionNumber="OQ1")
        assert storescu(engine.port, [f.path for f in files]).returncode == 0
        query = orthanc.post(
            "/modalities/edge/query",
            {"Level": "Study", "Query": {"PatientID": "ORTH1", "StudyInstanceUID": ""}},
        )
        answers = orthanc.get(f"/queries/{query['ID']}/answers?expand")
        assert len(answers) == 1
        assert answers[0]["0008,0050"]["Value"] == "OQ1"
        assert answers[0]["0008,0056"]["Value"] == "ONLINE"
        orthanc.post(f"/queries/{query['ID']}/retrieve", {"TargetAet": orthanc.ae_title})
        wait_until(lambda: orthanc.count() == 4, 60, "Orthanc received the study by C-MOVE")
        for source in files:
            record = engine.instance(source.sop_instance_uid)
            assert record is not None
            stored = engine.object_path(record["hash"]).read_bytes()[record["meta_length"] :]
            copy = orthanc.file(source.sop_instance_uid)
            assert copy is not None
            # Orthanc writes a meta header of its own; the dataset is the edge's, byte for byte.
            assert copy[144 + int.from_bytes(copy[140:144], "little") :] == stored
    finally:
        orthanc.stop()
