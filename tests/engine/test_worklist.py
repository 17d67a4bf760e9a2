"""The worklist proxy against DCMTK wlmscpfs as the upstream RIS (worklist files made
with dump2dcm, a Chinese name in UTF-8 among them), with DCMTK findscu -W and
pynetdicom as the modalities: answers come from the RIS while it is up, from the
edge's mirror when it is killed, within the source's timeout plus a second, and the
staleness shows in status and /metrics."""

from __future__ import annotations

import datetime
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from bench import worklist as bench_worklist
from bench.peers import free_port, wait_for_port
from tests.engine.test_forward import dicom_destination
from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import AE_TITLE, EngineProcess, wait_until

TODAY = datetime.date.today().strftime("%Y%m%d")
ITEMS = [
    # accession, patient ID, name (UTF-8), modality, station AE, step ID
    ("ACC100", "PID100", "Wang^Fang=王^芳", "CT", "CT1", "SPS100"),
    ("ACC200", "PID200", "Doe^John", "MR", "MR1", "SPS200"),
    ("ACC300", "PID300", "Rezaei^Sara", "CT", "CT2", "SPS300"),
    ("ACC400", "PID400", "张^小明", "US", "US1", "SPS400"),  # no Latin group at all
]


def worklist_file(folder: Path, n: int, item: tuple[str, ...]) -> None:
    accession, pid, name, modality, station, step = item
    bench_worklist.worklist_file(
        f"""(0008,0005) CS [ISO_IR 192]
(0008,0050) SH [{accession}]
(0010,0010) PN [{name}]
(0010,0020) LO [{pid}]
(0010,0030) DA [19800101]
(0010,0040) CS [F]
(0020,000d) UI [1.2.826.0.1.3680043.8.498.{n}]
(0032,1060) LO [{modality} exam]
(0040,0100) SQ
(fffe,e000) -
(0008,0060) CS [{modality}]
(0040,0001) AE [{station}]
(0040,0002) DA [{TODAY}]
(0040,0003) TM [09{n:02d}00]
(0040,0006) PN [Smith^Anna]
(0040,0007) LO [{modality} routine]
(0040,0009) SH [{step}]
(0040,0010) SH [STATION{n}]
(0040,0011) SH [ROOM{n}]
(fffe,e00d) -
(fffe,e0dd) -
(0040,1001) SH [RP{n}]
""",
        folder / f"item{n}.wl",
    )


class Ris:
    """DCMTK wlmscpfs serving a folder of worklist files as AE title RIS."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "RIS").mkdir(parents=True)
        (root / "RIS" / "lockfile").touch()
        for n, item in enumerate(ITEMS, 1):
            worklist_file(root / "RIS", n, item)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["wlmscpfs", "-dfp", str(self.root), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def ris(tmp_path: Path) -> Iterator[Ris]:
    server = Ris(tmp_path / "ris")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def query(port: int, calling_ae: str = "CT1", **keys: str) -> tuple[list[Dataset], float]:
    """A modality's worklist query with pynetdicom: answers and seconds taken."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"):
        setattr(ds, keyword, keys.pop(keyword, ""))
    for keyword in [k for k in keys if k == "PatientMotherBirthName"]:
        setattr(ds, keyword, keys.pop(keyword))
    step = Dataset()
    for keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate"):
        setattr(step, keyword, keys.pop(keyword, ""))
    step.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ModalityWorklistInformationFind)
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    answers = []
    try:
        for status, found in assoc.send_c_find(ds, ModalityWorklistInformationFind):
            assert status is not None
            if status.Status in (0xFF00, 0xFF01):
                answers.append(found)
            else:
                assert status.Status == 0x0000, hex(status.Status)
    finally:
        assoc.release()
    return answers, time.monotonic() - started


def ris_source(ris: Ris) -> dict[str, Any]:
    """The [[worklist_source]] entry for the wlmscpfs RIS."""
    return {
        "name": "ris",
        "host": "127.0.0.1",
        "port": ris.port,
        "called_ae": "RIS",
        "poll_interval": 1.0,
        "timeout": 2.0,
        # wlmscpfs sends no Specific Character Set (its default): say what it sends.
        "character_set": "ISO_IR 192",
    }


def test_modalities_get_the_worklist_through_a_ris_outage(
    engine_factory: Callable[..., EngineProcess], ris: Ris, tmp_path: Path
) -> None:
    source = ris_source(ris)
    # An old CT that cannot show Chinese gets pinyin; the others get names as they are.
    calling = [
        {"ae_title": "CT1"},
        {"ae_title": "CT2"},
        {"ae_title": "OLDCT", "worklist_names": "pinyin"},
    ]
    engine = engine_factory({"worklist_source": [source], "calling_ae": calling})
    wait_until(
        lambda: engine.status().get("worklist", {}).get("ris", {}).get("items") == len(ITEMS),
        30,
        "the first poll mirrored the RIS's items",
    )
    # RIS up: the answer is the RIS's, matched by it.
    answers, _ = query(engine.port, Modality="CT")
    assert sorted(str(a.AccessionNumber) for a in answers) == ["ACC100", "ACC300"]
    wang = next(a for a in answers if a.AccessionNumber == "ACC100")
    assert str(wang.PatientName) == "Wang^Fang=王^芳"
    old, _ = query(engine.port, calling_ae="OLDCT", AccessionNumber="ACC100")
    assert [str(a.PatientName) for a in old] == ["Wang^Fang"]
    assert old[0].SpecificCharacterSet == "ISO_IR 100"
    # DCMTK findscu -W as a modality, its answers written as files.
    out = tmp_path / "findscu"
    out.mkdir()
    done = subprocess.run(
        [
            "findscu",
            "-W",
            "-X",
            "-od",
            str(out),
            "-aet",
            "CT2",
            "-aec",
            AE_TITLE,
            "-k",
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT2",
            "-k",
            "PatientName",
            "-k",
            "AccessionNumber",
            "127.0.0.1",
            str(engine.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert [str(f.AccessionNumber) for f in found] == ["ACC300"]

    # The RIS hangs (accepts, never answers): the mirror answers within timeout + 1 s;
    # the next query is not sent to the RIS, known down, and does not wait for it.
    assert ris.proc is not None
    ris.proc.send_signal(signal.SIGSTOP)
    try:
        answers, seconds = query(engine.port, Modality="CT")
        again, seconds_again = query(engine.port, Modality="CT")
    finally:
        ris.proc.send_signal(signal.SIGCONT)
    assert sorted(str(a.AccessionNumber) for a in answers) == ["ACC100", "ACC300"]
    assert seconds < 2.0 + 1.0, seconds
    assert sorted(str(a.AccessionNumber) for a in again) == ["ACC100", "ACC300"]
    assert seconds_again < 2.0, "the RIS was asked again although known down"
    assert "until a poll gets its answer" in engine.log()
    # Back (SIGCONT): the next poll clears it, and queries go to the RIS again.
    wait_until(
        lambda: engine.status()["worklist"]["ris"]["last_error"] == "", 30, "the RIS polled again"
    )

    # The RIS dies: the same queries are answered from the mirror, within timeout + 1 s.
    ris.kill()
    answers, seconds = query(engine.port, Modality="CT")
    assert sorted(str(a.AccessionNumber) for a in answers) == ["ACC100", "ACC300"]
    assert seconds < 2.0 + 1.0, seconds
    wang = next(a for a in answers if a.AccessionNumber == "ACC100")
    assert str(wang.PatientName) == "Wang^Fang=王^芳"
    assert wang.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "SPS100"
    # Matching on the mirror: a name prefix, case-insensitively; a station; a date range.
    by_name, _ = query(engine.port, PatientName="doe*")
    assert [str(a.AccessionNumber) for a in by_name] == ["ACC200"]
    by_station, _ = query(engine.port, ScheduledStationAETitle="MR1")
    assert [str(a.PatientID) for a in by_station] == ["PID200"]
    none_tomorrow, _ = query(engine.port, ScheduledProcedureStepStartDate="20990101-20991231")
    assert none_tomorrow == []
    # A key the mirror's items do not have is answered empty (PS3.4 K.6.1.2.2).
    (with_unknown,), _ = query(engine.port, PatientID="PID200", PatientMotherBirthName="")
    assert "PatientMotherBirthName" in with_unknown
    assert not with_unknown.PatientMotherBirthName
    old, _ = query(engine.port, calling_ae="OLDCT", PatientID="PID100")
    assert [str(a.PatientName) for a in old] == ["Wang^Fang"]
    old, _ = query(engine.port, calling_ae="OLDCT", PatientID="PID400")
    assert [str(a.PatientName) for a in old] == ["ZHANG^XIAOMING"]
    as_is, _ = query(engine.port, PatientID="PID400")
    assert [str(a.PatientName) for a in as_is] == ["张^小明"]

    # The outage is visible: status says why, the age grows, /metrics has it.
    wait_until(
        lambda: (
            "ris" in str(engine.status()["worklist"]["ris"]["last_error"]).lower()
            or bool(engine.status()["worklist"]["ris"]["last_error"])
        ),
        30,
        "status shows the poll's error",
    )
    time.sleep(1.5)
    state = engine.status()["worklist"]["ris"]
    assert state["items"] == len(ITEMS), state
    assert state["age_seconds"] >= 1.0, state
    console = httpx.get(f"http://127.0.0.1:{engine.http_port}/").text
    assert "Worklist ris: the RIS cannot be asked" in console
    metrics = engine.get_text("/metrics")
    line = next(m for m in metrics.splitlines() if m.startswith("pacs_edge_worklist_age_seconds"))
    assert 'source="ris"' in line
    assert float(line.split()[-1]) >= 1.0

    # The RIS comes back: the mirror is fresh again.
    ris.start()
    engine_status = lambda: engine.status()["worklist"]["ris"]  # noqa: E731
    wait_until(lambda: engine_status()["last_error"] == "", 30, "the poll succeeds again")
    assert engine_status()["age_seconds"] < 5


def test_a_forwarded_answer_refreshes_the_mirror_between_polls(
    engine_factory: Callable[..., EngineProcess], ris: Ris
) -> None:
    """The RIS renames a patient after the last poll: a modality's query gets the new
    name from the RIS, and the mirror keeps it (merged once the answer is sent), so
    after the RIS dies the mirror answers with it too, long before the next poll."""
    engine = engine_factory({"worklist_source": [{**ris_source(ris), "poll_interval": 600}]})
    wait_until(
        lambda: engine.status().get("worklist", {}).get("ris", {}).get("items") == len(ITEMS),
        30,
        "the first poll mirrored the RIS's items",
    )
    renamed = ("ACC200", "PID200", "Doe^Johnny", "MR", "MR1", "SPS200")
    worklist_file(ris.root / "RIS", 2, renamed)  # over item 2's file
    answers, _ = query(engine.port, AccessionNumber="ACC200")
    assert [str(a.PatientName) for a in answers] == ["Doe^Johnny"]
    ris.kill()
    from_mirror, _ = query(engine.port, AccessionNumber="ACC200")
    assert [str(a.PatientName) for a in from_mirror] == ["Doe^Johnny"]
    assert "answered from its mirror" in engine.log()
    assert engine.stop() == 0


def test_images_typed_in_pinyin_get_the_worklist_names(
    engine_factory: Callable[..., EngineProcess], ris: Ris, tmp_path: Path
) -> None:
    """A device that typed the name in pinyin and a wrong ID: the index record and the
    copy central Orthanc receives carry the worklist's; the stored bytes do not change."""
    source = ris_source(ris)
    engine = engine_factory(start=False)
    central = OrthancProcess(tmp_path / "orthanc").start()
    try:
        engine.settings["worklist_source"] = [source]
        engine.settings["destination"] = [dicom_destination(central)]
        engine.settings["route"] = [
            {"name": "all", "destinations": ["central"], "coerce_from_worklist": True}
        ]
        engine.start()
        wait_until(
            lambda: engine.status().get("worklist", {}).get("ris", {}).get("items") == len(ITEMS),
            30,
            "the RIS mirrored",
        )
        typed = make_series(
            tmp_path / "ct",
            2,
            PatientName="WANG^FANG",
            PatientID="TYPED1",
            AccessionNumber="ACC100",
        )
        other = make_series(tmp_path / "other", 1, PatientName="NOBODY", AccessionNumber="NOPE")
        assert storescu(engine.port, [f.path for f in [*typed, *other]]).returncode == 0
        for source_file in typed:
            record = engine.instance(source_file.sop_instance_uid)
            assert record is not None
            assert (record["patient_name"], record["patient_id"]) == ("Wang^Fang=王^芳", "PID100")
            stored = pydicom.dcmread(engine.object_path(record["hash"]))
            assert str(stored.PatientName) == "WANG^FANG"  # the bytes stay as the device sent
        untouched = engine.instance(other[0].sop_instance_uid)
        assert untouched is not None
        assert untouched["patient_name"] == "NOBODY"
        wait_until(lambda: central.count() == 3, 60, "forwarded to central")
        tags = central.tags(typed[0].sop_instance_uid)
        assert tags is not None
        assert (tags["PatientName"], tags["PatientID"]) == ("Wang^Fang=王^芳", "PID100")
        wait_until(lambda: len(engine.audit("worklist_coerced")) == 2, 10, "both audited")
        coerced = engine.audit("worklist_coerced")
        assert coerced[0]["before"]["PatientID"] == "TYPED1"
        # Queries see the worklist's patient.
        code, _ = engine.get("/readyz")
        assert code == 200
        found = httpx.get(
            f"http://127.0.0.1:{engine.http_port}/dicom-web/studies", params={"PatientID": "PID100"}
        ).json()
        assert len(found) == 1
    finally:
        central.stop()


def gb18030_worklist(folder: Path) -> None:
    """A worklist file written in GB18030, as a Chinese RIS may keep them."""
    folder.mkdir(parents=True)
    ds = Dataset()
    ds.SpecificCharacterSet = "GB18030"
    ds.AccessionNumber = "ACC500"
    ds.PatientName = "Liu^Yang=刘^洋"
    ds.PatientID = "PID500"
    ds.PatientBirthDate = "19850505"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.500"
    ds.RequestedProcedureID = "RP500"
    ds.RequestedProcedureDescription = "MR knee"
    step = Dataset()
    step.Modality = "MR"
    step.ScheduledStationAETitle = "MR2"
    step.ScheduledProcedureStepStartDate = TODAY
    step.ScheduledProcedureStepStartTime = "100000"
    step.ScheduledProcedureStepID = "SPS500"
    step.ScheduledProcedureStepDescription = "MR routine"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.5001"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.save_as(folder / "item500.wl", enforce_file_format=True)


def test_two_sources_orthanc_worklist_plugin_and_gb18030(
    engine_factory: Callable[..., EngineProcess], ris: Ris, tmp_path: Path
) -> None:
    """wlmscpfs and Orthanc's worklist plugin as two sources: a modality gets both
    sources' items, a GB18030 name intact, and Orthanc's from the mirror once it is gone."""
    gb18030_worklist(tmp_path / "orthanc-worklists")
    orthanc = OrthancProcess(tmp_path / "orthanc", worklists=tmp_path / "orthanc-worklists")
    orthanc.start()
    try:
        sources = [
            ris_source(ris),
            {
                "name": "orthanc",
                "host": "127.0.0.1",
                "port": orthanc.port,
                "called_ae": orthanc.ae_title,
                "poll_interval": 1.0,
                "timeout": 2.0,
            },
        ]
        engine = engine_factory({"worklist_source": sources})
        wait_until(
            lambda: engine.status().get("worklist", {}).get("orthanc", {}).get("items") == 1,
            30,
            "Orthanc's worklist mirrored",
        )
        answers, _ = query(engine.port, Modality="MR")
        assert sorted(str(a.AccessionNumber) for a in answers) == ["ACC200", "ACC500"]
        liu = next(a for a in answers if a.AccessionNumber == "ACC500")
        assert str(liu.PatientName) == "Liu^Yang=刘^洋"
        orthanc.stop()
        answers, seconds = query(engine.port, Modality="MR")
        assert sorted(str(a.AccessionNumber) for a in answers) == ["ACC200", "ACC500"]
        assert seconds < 3.0
        liu = next(a for a in answers if a.AccessionNumber == "ACC500")
        assert str(liu.PatientName) == "Liu^Yang=刘^洋"
    finally:
        orthanc.stop()


def test_the_pinyin_dictionaries_load_only_when_a_name_needs_them() -> None:
    """pypinyin takes ~53 MB in each process that imports it: a site that never asks
    for pinyin must not carry it (the bench's memory goal is 150 MB in all)."""
    script = (
        "import sys, engine.cli, engine.worklist.names as names\n"
        "assert 'pypinyin' not in sys.modules, 'loaded at start-up'\n"
        "assert names.pinyin_name('Wang^Fang=王^芳') == 'Wang^Fang'\n"
        "assert 'pypinyin' not in sys.modules, 'loaded for a name with a Latin group'\n"
        "print(names.pinyin_name('张^小明'))\n"
        "assert 'pypinyin' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ZHANG^XIAOMING"
