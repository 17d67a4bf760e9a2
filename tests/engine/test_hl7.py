"""HL7 ADT from a real MLLP client (the hl7 package's `mllp_send`): A08 updates a
patient, A40 merges one into another, A47 changes an identifier. Queries (QIDO-RS)
and retrievals (WADO-RS) show the change; copies forwarded afterwards carry it; the
stored bytes stay as the device sent them; bad messages get AE/AR with the reason."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from bench.peers import free_port
from engine.hl7.mllp import END, START, MllpConnection
from tests.engine.test_forward import dicom_destination
from tests.engine.test_lifecycle import FAST_RETRIES
from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import AE_TITLE, EngineProcess, wait_until

MLLP_SEND = str(Path(sys.executable).with_name("mllp_send"))


def adt(
    event: str, control: str, pid: str, name: str = "", mrg: str = "", version: str = "2.5"
) -> str:
    segments = [
        f"MSH|^~\\&|HIS|HOSP|PACS|SITE|20261204120000||ADT^{event}^ADT_A01|{control}|P|{version}",
        f"EVN|{event}|20261204120000",
    ]
    if pid:
        segments.append(f"PID|1||{pid}^^^HOSP^MR||{name}||19700101|F")
    if mrg:
        segments.append(f"MRG|{mrg}^^^HOSP^MR")
    return "\r".join(segments) + "\r"


def send(port: int, message: str, tmp: Path) -> str:
    """`mllp_send` as an integration engine would: the ACK it printed."""
    path = tmp / "message.hl7"
    path.write_bytes(message.replace("\r", "\r\n").encode())  # a file as HIS exports have it
    done = subprocess.run(
        [MLLP_SEND, "--loose", "-p", str(port), "-f", str(path), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def msa(ack: str) -> list[str]:
    line = next(part for part in ack.replace("\n", "\r").split("\r") if part.startswith("MSA|"))
    return line.split("|")


def c_find(port: int, **keys: str) -> list[Dataset]:
    """A STUDY-level C-FIND (Study Root) with pynetdicom: the answers."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = ""
    ds.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [
            found
            for status, found in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind)
            if status is not None and status.Status == 0xFF00
        ]
    finally:
        assoc.release()


def studies(engine: EngineProcess, **params: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{engine.http_port}/dicom-web/studies"
    return list(httpx.get(url, params={**params, "includefield": "all"}).json())


def test_adt_updates_merges_and_renames_patients(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    assert shutil.which(MLLP_SEND) or Path(MLLP_SEND).exists()
    hl7_port = free_port()
    engine = engine_factory(start=False)
    central = OrthancProcess(tmp_path / "orthanc")  # down until the end: copies wait
    engine.settings["hl7"] = {"enabled": True, "host": "127.0.0.1", "port": hl7_port}
    engine.settings["destination"] = [dicom_destination(central)]
    engine.settings["forward"] = FAST_RETRIES
    engine.start()
    old = make_series(tmp_path / "old", 2, PatientID="OLD1", PatientName="Li^Na")
    new = make_series(tmp_path / "new", 1, PatientID="NEW1", PatientName="Li^Na")
    zhou = make_series(tmp_path / "zhou", 1, PatientID="P3", PatientName="Zhou^Yi")
    assert storescu(engine.port, [f.path for f in [*old, *new, *zhou]]).returncode == 0

    # A08: demographics updated; queries show it, the stored file does not change.
    answer = send(hl7_port, adt("A08", "C1", "P3", "Zhou^Yiming"), tmp_path)
    assert msa(answer)[1:3] == ["AA", "C1"]
    (study,) = studies(engine, PatientID="P3")
    assert study["00100010"]["Value"] == [{"Alphabetic": "Zhou^Yiming"}]
    record = engine.instance(zhou[0].sop_instance_uid)
    assert record is not None
    assert str(pydicom.dcmread(engine.object_path(record["hash"])).PatientName) == "Zhou^Yi"
    wado = httpx.get(
        f"http://127.0.0.1:{engine.http_port}/wado",
        params={
            "requestType": "WADO",
            "studyUID": record["study_instance_uid"],
            "seriesUID": record["series_instance_uid"],
            "objectUID": record["sop_instance_uid"],
            "contentType": "application/dicom",
        },
    )
    assert str(pydicom.dcmread(io.BytesIO(wado.content)).PatientName) == "Zhou^Yiming"

    # A40: OLD1 merged into NEW1 (PID dominant); a repeat changes nothing and is AA.
    assert msa(send(hl7_port, adt("A40", "C2", "NEW1", "Li^Na", mrg="OLD1"), tmp_path))[1] == "AA"
    assert studies(engine, PatientID="OLD1") == []
    assert len(studies(engine, PatientID="NEW1")) == 2
    repeat = msa(send(hl7_port, adt("A40", "C3", "NEW1", "Li^Na", mrg="OLD1"), tmp_path))
    assert repeat[1] == "AA"
    assert "before" in repeat[3]
    # An image that arrives later under the merged ID joins the dominant patient.
    late = make_series(tmp_path / "late", 1, PatientID="OLD1", PatientName="Li^Na")
    assert storescu(engine.port, [late[0].path]).returncode == 0
    late_record = engine.instance(late[0].sop_instance_uid)
    assert late_record is not None
    assert late_record["patient_id"] == "NEW1"

    # A47: an identifier changes.
    assert (
        msa(send(hl7_port, adt("A47", "C4", "P3X", "Zhou^Yiming", mrg="P3"), tmp_path))[1] == "AA"
    )
    assert studies(engine, PatientID="P3") == []
    assert len(studies(engine, PatientID="P3X")) == 1
    # C-FIND (pynetdicom) sees it as QIDO-RS does.
    found = c_find(engine.port, PatientID="P3X")
    assert [str(a.PatientName) for a in found] == ["Zhou^Yiming"]
    assert c_find(engine.port, PatientID="P3") == []

    # What cannot be applied: AR or AE with the reason, nothing changed.
    wrong_version = msa(send(hl7_port, adt("A08", "C5", "NEW1", "X^Y", version="3.0"), tmp_path))
    assert wrong_version[1] == "AR"
    assert "version" in wrong_version[3]
    no_pid = msa(send(hl7_port, adt("A08", "C6", ""), tmp_path))
    assert no_pid[1] == "AR"
    assert "PID" in no_pid[3]
    unknown = msa(send(hl7_port, adt("A08", "C7", "NOBODY", "X^Y"), tmp_path))
    assert unknown[1] == "AE"
    assert "unknown patient" in unknown[3]
    assert len(studies(engine, PatientID="NEW1")) == 3  # the two merged, and the late one

    # The center comes back: every copy carries the corrected demographics.
    central.start()
    try:
        wait_until(lambda: central.count() == 5, 90, "everything forwarded")
        for source, pid, name in (
            (old[0], "NEW1", "Li^Na"),
            (late[0], "NEW1", "Li^Na"),
            (zhou[0], "P3X", "Zhou^Yiming"),
        ):
            tags = central.tags(source.sop_instance_uid)
            assert tags is not None
            assert (tags["PatientID"], tags["PatientName"]) == (pid, name)
    finally:
        central.stop()
    wait_until(lambda: len(engine.audit("hl7_message")) == 7, 10, "one audit line per message")


def test_a_message_the_handler_fails_on_closes_the_connection_instead_of_hanging() -> None:
    """An unexpected error of ours while applying a message: the HIS's connection is
    closed (it reconnects and resends) rather than left waiting for an ACK."""

    async def failing(text: str, peer: str) -> str:
        raise RuntimeError("a bug")

    async def main() -> bytes:
        tracked: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: MllpConnection(failing, tracked.append), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(START + adt("A08", "C1", "P1").encode() + END)
        try:
            async with asyncio.timeout(10):
                return await reader.read()  # b"" once the edge closes
        finally:
            writer.close()
            server.close()

    assert asyncio.run(main()) == b""
