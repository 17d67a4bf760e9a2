"""Query/Retrieve SCP against real clients: DCMTK findscu and pynetdicom as the
viewers and workstations at the site would use them."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from bench.peers import free_port, wait_for_port
from tests.support.corpus import SourceFile, describe, make_series
from tests.support.dcmtk import storescu
from tests.support.process import AE_TITLE, EngineProcess, wait_until
from tests.support.wire import EXPLICIT_LE, Client, command_set, pdata

STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"


@pytest.fixture(scope="module")
def workstation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp as a workstation at the site (uncompressed only, its default)."""
    received = tmp_path_factory.mktemp("workstation")
    port = free_port()
    scp = subprocess.Popen(
        ["storescp", "+uf", "-od", str(received), "-aet", "WORKSTATION", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, scp)
        yield port, received
    finally:
        scp.terminate()
        scp.wait(timeout=10)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, workstation: tuple[int, Path]
) -> Iterator[tuple[EngineProcess, dict[str, Any]]]:
    """One engine holding four patients' studies, for every test here."""
    tmp = tmp_path_factory.mktemp("qr")
    names = ("STORESCU", "VIEWER", "FINDSCU", "TESTSCU", "MOVESCU", "GETSCU")
    workstation_ae = {"ae_title": "WORKSTATION", "host": "127.0.0.1", "port": workstation[0]}
    limited = {"ae_title": "NOQUERY", "query": False, "retrieve": False}
    calling = [*({"ae_title": name} for name in names), workstation_ae, limited]
    engine = EngineProcess(tmp, {"calling_ae": calling})
    engine.start()
    studies = {
        "ct": make_series(
            tmp / "ct",
            3,
            PatientID="P1",
            PatientName="Doe^Jane",
            StudyDate="20240105",
            AccessionNumber="ACC1",
            PatientSex="F",
        ),
        "mr": make_series(
            tmp / "mr",
            2,
            "MR_small.dcm",
            PatientID="P1",
            PatientName="Doe^Jane",
            StudyDate="20240320",
            AccessionNumber="ACC2",
        ),
        "zh": make_series(
            tmp / "zh",
            2,
            PatientID="P2",
            PatientName="Wang^Xiaoming=王^小明",
            SpecificCharacterSet="ISO_IR 192",
            StudyDate="20231111",
            AccessionNumber="ACC3",
        ),
    }
    jpeg = describe(Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")))
    assert isinstance(jpeg, SourceFile)
    studies["jpeg"] = [jpeg]
    try:
        for files in studies.values():
            syntax = files[0].transfer_syntax_uid if files is studies["jpeg"] else None
            assert storescu(engine.port, [f.path for f in files], syntax).returncode == 0
        yield engine, studies
    finally:
        engine.close()


def study_uid(files: list[SourceFile]) -> str:
    return str(pydicom.dcmread(files[0].path, stop_before_pixels=True).StudyInstanceUID)


def c_find(
    engine: EngineProcess,
    model: Any,
    identifier: Dataset,
    calling_ae: str = "VIEWER",
    extended: list[Any] | None = None,
) -> tuple[list[Dataset], int]:
    """Answers and the final status, with pynetdicom as the SCU (`extended`: its SOP
    Class Extended Negotiation items)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", engine.port, ae_title=AE_TITLE, ext_neg=extended)
    assert assoc.is_established
    answers, final = [], -1
    try:
        for status, found in assoc.send_c_find(identifier, model):
            if status is None:
                raise AssertionError("no C-FIND response")
            if status.Status == 0xFF00:
                answers.append(found)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return answers, final


def study_query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in (
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "InstanceAvailability",
    ):
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_findscu_study_root_by_patient_id(
    site: tuple[EngineProcess, dict[str, Any]], tmp_path: Path
) -> None:
    engine, studies = site
    keys = [
        "QueryRetrieveLevel=STUDY",
        "PatientID=P1",
        "StudyInstanceUID",
        "PatientName",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "InstanceAvailability",
        "RetrieveAETitle",
    ]
    done = subprocess.run(
        [
            "findscu",
            "-S",
            "-aec",
            AE_TITLE,
            "-X",
            "-od",
            str(tmp_path),
            *[arg for key in keys for arg in ("-k", key)],
            "127.0.0.1",
            str(engine.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    by_uid = {str(a.StudyInstanceUID): a for a in answers}
    assert set(by_uid) == {study_uid(studies["ct"]), study_uid(studies["mr"])}
    ct = by_uid[study_uid(studies["ct"])]
    assert ct.PatientName == "Doe^Jane"
    assert ct.StudyDate == "20240105"
    assert ct.ModalitiesInStudy == "CT"
    assert int(ct.NumberOfStudyRelatedInstances) == 3
    assert ct.InstanceAvailability == "ONLINE"
    assert ct.RetrieveAETitle == AE_TITLE


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"StudyDate": "20240101-20241231"}, {"ct", "mr"}),
        ({"StudyDate": "20230101-20231231"}, {"zh"}),
        ({"PatientName": "doe*"}, {"ct", "mr"}),
        ({"AccessionNumber": "ACC3"}, {"zh"}),
        ({"ModalitiesInStudy": "MR"}, {"mr"}),
        ({"PatientID": "P?"}, {"ct", "mr", "zh"}),
    ],
)
def test_pynetdicom_study_matching(
    site: tuple[EngineProcess, dict[str, Any]], keys: dict[str, str], expected: set[str]
) -> None:
    engine, studies = site
    answers, final = c_find(engine, StudyRootQueryRetrieveInformationModelFind, study_query(**keys))
    assert final == 0x0000
    assert {str(a.StudyInstanceUID) for a in answers} == {study_uid(studies[k]) for k in expected}


def test_chinese_names_in_utf8(site: tuple[EngineProcess, dict[str, Any]]) -> None:
    engine, studies = site
    query = study_query(PatientName="王*")
    query.SpecificCharacterSet = "ISO_IR 192"
    answers, final = c_find(engine, StudyRootQueryRetrieveInformationModelFind, query)
    assert final == 0x0000
    [answer] = answers
    assert answer.StudyInstanceUID == study_uid(studies["zh"])
    assert str(answer.PatientName) == "Wang^Xiaoming=王^小明"
    # Asked in Latin-1, the name does not fit: the answer says UTF-8 and keeps it whole.
    latin = study_query(PatientID="P2")
    latin.SpecificCharacterSet = "ISO_IR 100"
    [answer], _ = c_find(engine, StudyRootQueryRetrieveInformationModelFind, latin)
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "Wang^Xiaoming=王^小明"


def test_series_image_and_patient_levels(site: tuple[EngineProcess, dict[str, Any]]) -> None:
    engine, studies = site
    series = Dataset()
    series.QueryRetrieveLevel = "SERIES"
    series.StudyInstanceUID = study_uid(studies["mr"])
    series.SeriesInstanceUID = ""
    series.Modality = ""
    series.NumberOfSeriesRelatedInstances = ""
    [answer], final = c_find(engine, StudyRootQueryRetrieveInformationModelFind, series)
    assert (final, answer.Modality, int(answer.NumberOfSeriesRelatedInstances)) == (0, "MR", 2)
    image = Dataset()
    image.QueryRetrieveLevel = "IMAGE"
    image.StudyInstanceUID = series.StudyInstanceUID
    image.SeriesInstanceUID = answer.SeriesInstanceUID
    image.SOPInstanceUID = ""
    image.SOPClassUID = ""
    images, final = c_find(engine, StudyRootQueryRetrieveInformationModelFind, image)
    assert final == 0
    assert {str(i.SOPInstanceUID) for i in images} == {f.sop_instance_uid for f in studies["mr"]}
    patient = Dataset()
    patient.QueryRetrieveLevel = "PATIENT"
    patient.PatientID = ""
    patient.PatientName = ""
    patient.NumberOfPatientRelatedStudies = ""
    patients, final = c_find(engine, PatientRootQueryRetrieveInformationModelFind, patient)
    found = {str(p.PatientID): int(p.NumberOfPatientRelatedStudies) for p in patients}
    jpeg_patient = str(pydicom.dcmread(studies["jpeg"][0].path).PatientID)
    assert (final, found) == (0, {"P1": 2, "P2": 1, jpeg_patient: 1})


def test_relational_queries_where_the_scu_negotiated_them(
    site: tuple[EngineProcess, dict[str, Any]],
) -> None:
    """SOP Class Extended Negotiation (PS3.4 C.3.4): relational queries granted when
    asked; without them a SERIES query needs its study's UID (0xA900)."""
    engine, studies = site
    series = Dataset()
    series.QueryRetrieveLevel = "SERIES"
    series.PatientID = "P1"
    series.StudyInstanceUID = ""
    series.SeriesInstanceUID = ""
    series.Modality = "MR"
    asked = SOPClassExtendedNegotiation()
    asked.sop_class_uid = StudyRootQueryRetrieveInformationModelFind
    asked.service_class_application_information = b"\x01\x00\x01"  # relational, fuzzy names
    model = StudyRootQueryRetrieveInformationModelFind
    answers, final = c_find(engine, model, series, extended=[asked])
    assert final == 0
    assert [str(a.StudyInstanceUID) for a in answers] == [study_uid(studies["mr"])]
    image = Dataset()
    image.QueryRetrieveLevel = "IMAGE"
    image.PatientID = "P1"
    image.Modality = "CT"
    image.SOPInstanceUID = ""
    images, final = c_find(engine, model, image, extended=[asked])
    assert final == 0
    assert {str(i.SOPInstanceUID) for i in images} == {f.sop_instance_uid for f in studies["ct"]}
    answers, final = c_find(engine, model, series)
    assert (answers, final) == ([], 0xA900)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"QueryRetrieveLevel": "FRAME"}, 0xA900),  # unknown level
        ({"StudyDate": "2024-01-01"}, 0xA900),  # not a DA range
        ({"QueryRetrieveLevel": "SERIES"}, 0xA900),  # no StudyInstanceUID above it
    ],
)
def test_bad_identifiers_get_the_standard_failure(
    site: tuple[EngineProcess, dict[str, Any]], change: dict[str, str], status: int
) -> None:
    engine, _ = site
    query = study_query()
    with warnings.catch_warnings():  # pydicom warns of the bad value we mean to send
        warnings.simplefilter("ignore")
        for keyword, value in change.items():
            setattr(query, keyword, value)
    answers, final = c_find(engine, StudyRootQueryRetrieveInformationModelFind, query)
    assert (answers, final) == ([], status)


def test_unreadable_identifier_is_0xc000_and_the_association_goes_on(
    site: tuple[EngineProcess, dict[str, Any]],
) -> None:
    engine, _ = site
    client = Client(engine.port)
    assert client.associate(contexts=[(1, STUDY_ROOT, [EXPLICIT_LE])]).type == 2
    rq = command_set(
        AffectedSOPClassUID=STUDY_ROOT,
        CommandField=0x0020,
        MessageID=7,
        Priority=0,
        CommandDataSetType=0x0000,
    )
    client.send(
        pdata(1, rq, command=True) + pdata(1, b"\x08\x00\x52\x00XX\x04\x00ABCD", command=False)
    )
    rsp = client.read_pdu().command()
    assert (rsp.CommandField, rsp.Status) == (0x8020, 0xC000)
    client.send(pdata(1, rq, command=True) + pdata(1, b"", command=False))  # empty: no level
    assert client.read_pdu().command().Status == 0xA900
    client.close()


def test_an_ae_without_query_rights_gets_no_find_context(
    site: tuple[EngineProcess, dict[str, Any]],
) -> None:
    engine, _ = site
    ae = AE(ae_title="NOQUERY")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", engine.port, ae_title=AE_TITLE)
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {"1.2.840.10008.1.1"}


def test_every_query_is_audited(site: tuple[EngineProcess, dict[str, Any]]) -> None:
    from tests.monitoring.test_audit_and_reload import audit_events

    engine, _ = site
    c_find(engine, StudyRootQueryRetrieveInformationModelFind, study_query(PatientID="P2"))
    queries = [e for e in audit_events(engine) if e["event"] == "query"]
    last = queries[-1]
    assert last["calling_ae"] == "VIEWER"
    assert last["keys"]["PatientID"] == "P2"
    assert (last["level"], last["answers"]) == ("STUDY", 1)
    assert last["peer"].startswith("127.0.0.1:")


def dcmtk_retrieve(
    tool: str, engine: EngineProcess, study: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """DCMTK movescu or getscu, Study Root, for one study."""
    return subprocess.run(
        [
            tool,
            "-S",
            "-aet",
            tool.upper(),
            "-aec",
            AE_TITLE,
            *options,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(engine.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def received_by_workstation(received: Path) -> dict[str, Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in received.iterdir())}


def test_movescu_moves_a_study_to_a_workstation_byte_for_byte(
    site: tuple[EngineProcess, dict[str, Any]], workstation: tuple[int, Path]
) -> None:
    from tests.engine.test_forward import edge_dataset

    engine, studies = site
    _, received = workstation
    done = dcmtk_retrieve("movescu", engine, study_uid(studies["ct"]), "-aem", "WORKSTATION")
    assert done.returncode == 0, done.stderr
    got = received_by_workstation(received)
    for f in studies["ct"]:
        assert f.sop_instance_uid in got
        path = next(
            p for p in received.iterdir() if pydicom.dcmread(p).SOPInstanceUID == f.sop_instance_uid
        )
        from pynetdicom.dsutils import split_dataset

        _, offset = split_dataset(path)
        assert path.read_bytes()[offset:] == edge_dataset(engine, f.sop_instance_uid)


def c_move(engine: EngineProcess, identifier: Dataset, destination: str) -> list[Dataset]:
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", engine.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [
            status
            for status, _ in assoc.send_c_move(
                identifier, destination, StudyRootQueryRetrieveInformationModelMove
            )
        ]
    finally:
        assoc.release()


def test_move_counts_and_decodes_what_the_destination_refuses(
    site: tuple[EngineProcess, dict[str, Any]], workstation: tuple[int, Path]
) -> None:
    engine, studies = site
    _, received = workstation
    series = Dataset()
    series.QueryRetrieveLevel = "STUDY"
    series.StudyInstanceUID = study_uid(studies["jpeg"])
    statuses = c_move(engine, series, "WORKSTATION")
    final = statuses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 1)
    assert final.NumberOfFailedSuboperations == 0
    assert [s.Status for s in statuses[:-1]] == [0xFF00] * (len(statuses) - 1)
    copy = received_by_workstation(received)[studies["jpeg"][0].sop_instance_uid]
    # The workstation takes no JPEG: it got the pixels decoded, explicit VR LE.
    assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    original = pydicom.dcmread(studies["jpeg"][0].path)
    assert copy.pixel_array.shape == original.pixel_array.shape


def test_move_to_an_unknown_ae_is_0xa801(site: tuple[EngineProcess, dict[str, Any]]) -> None:
    engine, studies = site
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid(studies["mr"])
    [final] = c_move(engine, query, "NOWHERE")
    assert final.Status == 0xA801


def test_the_site_keeps_working_through_a_central_outage(
    engine_factory: Callable[..., EngineProcess],
    workstation: tuple[int, Path],
    tmp_path: Path,
) -> None:
    """The outage story end to end: a study purged to the center comes back inside a
    workstation's C-MOVE (recalled first); with the center down, a new study is
    stored, found and moved to the workstation from the edge alone; the center comes
    back and the queue drains by itself."""
    from tests.engine.test_forward import FAST_RETRY, central_dataset, dicom_destination, drained
    from tests.engine.test_lifecycle import orthanc_for, tiers
    from tests.engine.test_recall import PURGE_WHEN_COMMITTED, reload_lifecycle

    scp_port, received = workstation
    engine = engine_factory({"lifecycle": PURGE_WHEN_COMMITTED, "forward": FAST_RETRY}, start=False)
    central = orthanc_for(engine, tmp_path / "orthanc").start()
    try:
        engine.settings["destination"] = [
            dicom_destination(central, commitment=True, commitment_wait=0, recall=True)
        ]
        engine.settings["calling_ae"] = [
            *({"ae_title": ae} for ae in ("STORESCU", "VIEWER", central.ae_title)),
            {"ae_title": "WORKSTATION", "host": "127.0.0.1", "port": scp_port},
        ]
        engine.start()
        old = make_series(tmp_path / "old", 5, PatientID="OUT1")
        assert storescu(engine.port, [f.path for f in old]).returncode == 0
        wait_until(lambda: tiers(engine)["central"] == 5, 120, "the old study purged")
        reload_lifecycle(engine, {"window": "", "interval": 1.0, "rule": []})
        [answer], _ = c_find(
            engine, StudyRootQueryRetrieveInformationModelFind, study_query(PatientID="OUT1")
        )
        assert answer.InstanceAvailability == "NEARLINE"  # at the center, recallable
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = answer.StudyInstanceUID
        final = c_move(engine, query, "WORKSTATION")[-1]
        assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 5)
        got = received_by_workstation(received)
        assert {f.sop_instance_uid for f in old} <= set(got)
        assert tiers(engine)["hot"] == 5
        # The WAN goes: the site still stores, finds and moves.
        central.stop()
        new = make_series(tmp_path / "new", 3, PatientID="OUT2")
        assert storescu(engine.port, [f.path for f in new]).returncode == 0
        [answer], _ = c_find(
            engine, StudyRootQueryRetrieveInformationModelFind, study_query(PatientID="OUT2")
        )
        assert answer.InstanceAvailability == "ONLINE"
        query.StudyInstanceUID = answer.StudyInstanceUID
        final = c_move(engine, query, "WORKSTATION")[-1]
        assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 3)
        assert {f.sop_instance_uid for f in new} <= set(received_by_workstation(received))
        # The center is back: the backlog moves by itself.
        central.start()
        wait_until(lambda: drained(engine), 120, "the queue to drain after the outage")
        for f in new:
            assert central_dataset(central, f.sop_instance_uid) is not None
    finally:
        central.stop()


def test_getscu_gets_a_study_on_its_own_association(
    site: tuple[EngineProcess, dict[str, Any]], tmp_path: Path
) -> None:
    from pynetdicom.dsutils import split_dataset

    from tests.engine.test_forward import edge_dataset

    engine, studies = site
    done = dcmtk_retrieve("getscu", engine, study_uid(studies["mr"]), "-od", str(tmp_path))
    assert done.returncode == 0, done.stderr
    files = list(tmp_path.iterdir())
    assert len(files) == len(studies["mr"])
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        _, offset = split_dataset(path)
        assert path.read_bytes()[offset:] == edge_dataset(engine, uid)


def test_c_get_counts_and_decodes_for_an_uncompressed_only_requestor(
    site: tuple[EngineProcess, dict[str, Any]],
) -> None:
    from pynetdicom import build_role, evt
    from pynetdicom.events import Event

    engine, studies = site
    storage = ["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2"]  # SC, CT
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in storage:
        ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    got: dict[str, str] = {}

    def on_store(event: Event) -> int:
        got[str(event.request.AffectedSOPInstanceUID)] = str(event.context.transfer_syntax)
        return 0x0000

    roles = [build_role(sop_class, scp_role=True) for sop_class in storage]
    assoc = ae.associate(
        "127.0.0.1",
        engine.port,
        ae_title=AE_TITLE,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = [study_uid(studies["jpeg"]), study_uid(studies["ct"])]
    try:
        statuses = [
            s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    final = statuses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 4)
    assert final.NumberOfFailedSuboperations == 0
    jpeg = studies["jpeg"][0].sop_instance_uid
    assert got[jpeg] == "1.2.840.10008.1.2.1"  # decoded: the requestor takes no JPEG
    assert {f.sop_instance_uid for f in studies["ct"]} <= set(got)
