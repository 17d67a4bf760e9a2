"""The MPPS relay: a modality (pynetdicom) reports Modality Performed Procedure Steps
to the edge while the RIS's MPPS SCP (pynetdicom, in this process) is down; the
edge acknowledges each once it is durable, keeps them through a restart, and relays
every N-CREATE and N-SET exactly once, in order, when the RIS is back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from tests.engine.test_lifecycle import FAST_RETRIES
from tests.support.process import AE_TITLE, EngineProcess, wait_until


class RisMpps:
    """An MPPS SCP that records what arrives, in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, str, str]] = []  # (operation, uid, status)
        self._lock = threading.Lock()
        self._server: Any = None

    def _created(self, event: Any) -> tuple[int, Dataset]:
        ds = event.attribute_list
        with self._lock:
            self.received.append(
                (
                    "create",
                    str(event.request.AffectedSOPInstanceUID),
                    ds.PerformedProcedureStepStatus,
                )
            )
        return 0x0000, ds

    def _set(self, event: Any) -> tuple[int, Dataset]:
        ds = event.modification_list
        with self._lock:
            self.received.append(
                ("set", str(event.request.RequestedSOPInstanceUID), ds.PerformedProcedureStepStatus)
            )
        return 0x0000, ds

    def start(self) -> None:
        ae = AE(ae_title="RIS")
        ae.add_supported_context(ModalityPerformedProcedureStep)
        handlers = [(evt.EVT_N_CREATE, self._created), (evt.EVT_N_SET, self._set)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def report(port: int, steps: list[tuple[str, str, str]]) -> list[int]:
    """A modality's N-CREATE / N-SET messages on one association: their statuses."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    statuses = []
    try:
        for op, uid, state in steps:
            ds = Dataset()
            ds.PerformedProcedureStepStatus = state
            if op == "create":
                ds.PerformedProcedureStepID = uid[-8:]
                ds.PatientID = "PID100"
                ds.Modality = "CT"
                status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
            else:
                ds.PerformedProcedureStepEndDate = "20261204"
                status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
            statuses.append(int(status.Status))
    finally:
        assoc.release()
    return statuses


def test_mpps_is_relayed_once_in_order_through_an_outage_and_a_restart(
    engine_factory: Callable[..., EngineProcess], ris_mpps: RisMpps
) -> None:
    relay = {"name": "ris-mpps", "host": "127.0.0.1", "port": ris_mpps.port, "called_ae": "RIS"}
    engine = engine_factory({"mpps_destination": [relay], "forward": FAST_RETRIES})
    first, second = str(generate_uid()), str(generate_uid())
    steps = [
        ("create", first, "IN PROGRESS"),
        ("create", second, "IN PROGRESS"),
        ("set", first, "COMPLETED"),
        ("set", second, "DISCONTINUED"),
    ]
    # The RIS is down: every message is acknowledged once it is durable here.
    assert report(engine.port, steps) == [0x0000] * 4
    # What cannot be applied is refused with the standard's status, nothing queued.
    assert report(engine.port, [("set", str(generate_uid()), "COMPLETED")]) == [0x0112]
    assert report(engine.port, [("set", first, "IN PROGRESS")]) == [0x0110]  # COMPLETED
    assert report(engine.port, [("create", first, "IN PROGRESS")]) == [0x0111]
    queue = engine.status()["destinations"]["ris-mpps"]
    assert queue["kind"] == "mpps"
    assert queue["depth"] == 4
    # A restart keeps them.
    assert engine.stop() == 0
    engine.start()
    assert engine.status()["destinations"]["ris-mpps"]["depth"] == 4
    # The RIS is back: each message arrives once, each step's in order.
    ris_mpps.start()
    wait_until(lambda: len(ris_mpps.received) >= 4, 60, "the RIS received the four messages")
    wait_until(
        lambda: engine.status()["destinations"]["ris-mpps"]["depth"] == 0, 30, "queue drained"
    )
    assert sorted(ris_mpps.received) == sorted(steps)
    for uid in (first, second):
        assert [op for op, got, _ in ris_mpps.received if got == uid] == ["create", "set"]
    assert engine.status()["destinations"]["ris-mpps"]["sent"] == 4
    assert len(ris_mpps.received) == 4


def test_mpps_is_not_offered_without_a_destination(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    engine = engine_factory()
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", engine.port, ae_title=AE_TITLE)
    # No relay configured: the context is rejected, and pynetdicom gives up on an
    # association without one.
    assert not assoc.is_established
    wait_until(
        lambda: "association accepted: 0 of 1 presentation contexts" in engine.log(),
        10,
        "the engine accepted the association but not the MPPS context",
    )
