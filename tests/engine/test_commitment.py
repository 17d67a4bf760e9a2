"""Storage commitment: an instance counts as safe (and may one day be purged from
the edge) only once the destination committed it. Against pynetdicom's SCP, which
reports on the N-ACTION's association, and Orthanc, which reports on one of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

from bench.peers import free_port
from tests.engine.test_forward import dicom_destination, drained
from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.orthanc import OrthancProcess
from tests.support.process import AE_TITLE, EngineProcess, wait_until

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"


class CommitmentScp:
    """pynetdicom storage + storage commitment SCP. It fails the first request for
    one chosen instance (FailedSOPSequence), to prove a failure is sent again."""

    def __init__(self, fail_once: str | None) -> None:
        self.port = free_port()
        self.stored: dict[str, int] = {}
        self.fail_once = fail_once
        self.requests = 0
        ae = AE(ae_title="ARCHIVE")
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(STORAGE_COMMITMENT)
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_N_ACTION, self._action)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _store(self, event: Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.stored[uid] = self.stored.get(uid, 0) + 1
        return 0x0000

    def _action(self, event: Event) -> tuple[int, Dataset | None]:
        self.requests += 1
        request = event.action_information
        report = Dataset()
        report.TransactionUID = request.TransactionUID
        report.ReferencedSOPSequence = []
        report.FailedSOPSequence = []
        for ref in request.ReferencedSOPSequence:
            item = Dataset()
            item.ReferencedSOPClassUID = ref.ReferencedSOPClassUID
            item.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID
            uid = str(ref.ReferencedSOPInstanceUID)
            if uid == self.fail_once or uid not in self.stored:
                self.fail_once = None
                item.FailureReason = 0x0110
                report.FailedSOPSequence.append(item)
            else:
                report.ReferencedSOPSequence.append(item)
        event_type = 2 if report.FailedSOPSequence else 1
        assoc = event.assoc

        def send_report() -> None:
            time.sleep(0.2)  # after the N-ACTION-RSP, as PS3.4 J.3.3 has it
            assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT, WELL_KNOWN)

        threading.Thread(target=send_report, daemon=True).start()
        return 0x0000, None

    def close(self) -> None:
        self._server.shutdown()


WELL_KNOWN = "1.2.840.10008.1.20.1.1"


@pytest.fixture
def commitment_scp() -> Iterator[Callable[[str | None], CommitmentScp]]:
    made: list[CommitmentScp] = []

    def make(fail_once: str | None) -> CommitmentScp:
        made.append(CommitmentScp(fail_once))
        return made[-1]

    yield make
    for scp in made:
        scp.close()


def committed(engine: EngineProcess, name: str) -> dict[str, Any]:
    return dict(engine.status()["destinations"][name])


def test_commitment_on_the_same_association(
    engine_factory: Callable[..., EngineProcess],
    commitment_scp: Callable[[str | None], CommitmentScp],
    tmp_path: Path,
) -> None:
    files = make_series(tmp_path / "s", 12)
    scp = commitment_scp(files[3].sop_instance_uid)
    destination = {
        "name": "archive",
        "kind": "dicom",
        "host": "127.0.0.1",
        "port": scp.port,
        "called_ae": "ARCHIVE",
        "commitment": True,
    }
    engine = engine_factory({"destination": [destination]})
    assert storescu(engine.port, [f.path for f in files]).returncode == 0
    wait_until(
        lambda: committed(engine, "archive")["committed"] == 12, 60, "12 instances committed"
    )
    dest = committed(engine, "archive")
    assert dest["awaiting_commitment"] == 0
    assert dest["depth"] == 0
    # The failed one was sent again, then committed: twice at the archive.
    assert scp.stored[files[3].sop_instance_uid] == 2
    assert all(scp.stored[f.sop_instance_uid] == 1 for f in files if f is not files[3])
    _, detail = engine.get("/api/v1/queues/archive")
    assert detail["committed"] == 12


def test_commitment_reported_later_by_orthanc(
    engine_factory: Callable[..., EngineProcess], tmp_path: Path
) -> None:
    engine = engine_factory({}, start=False)
    orthanc = OrthancProcess(
        tmp_path / "orthanc", modalities={"edge": (AE_TITLE, "127.0.0.1", engine.port)}
    ).start()
    try:
        engine.settings["destination"] = [
            dicom_destination(orthanc, commitment=True, commitment_wait=0.5)
        ]
        engine.start()
        files = make_series(tmp_path / "s", 6)
        assert storescu(engine.port, [f.path for f in files]).returncode == 0
        wait_until(lambda: drained(engine), 60, "the queue to drain")
        wait_until(
            lambda: committed(engine, "central")["committed"] == 6,
            60,
            "Orthanc's N-EVENT-REPORT on its own association",
        )
        assert committed(engine, "central")["awaiting_commitment"] == 0
        assert "reported later, on association" in engine.log()
        assert "reported on the N-ACTION's association" not in engine.log()
    finally:
        orthanc.stop()
        print(orthanc.log()[-3000:])
