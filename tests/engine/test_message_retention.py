"""Message retention (`lifecycle.message_keep_days`): the HL7 messages a HIS sent
(mllp_send) and the MPPS messages a modality reported (pynetdicom) leave the index
once past it, and what they changed stays; an MPPS message the RIS has not taken yet
stays until it has, however old."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid

from bench.peers import free_port
from storage.index import Index
from tests.engine.test_hl7 import adt, msa, send
from tests.engine.test_lifecycle import FAST_RETRIES
from tests.engine.test_mpps import RisMpps, report
from tests.support.corpus import make_series
from tests.support.dcmtk import storescu
from tests.support.process import EngineProcess, wait_until

KEEP_SECONDS = 2.0


def _deleted(engine: EngineProcess) -> tuple[int, int]:
    """HL7 and MPPS messages the lifecycle passes say they deleted, so far."""
    found = re.findall(r"deleted (\d+) HL7 and (\d+) MPPS message", engine.log())
    return sum(int(hl7) for hl7, _ in found), sum(int(mpps) for _, mpps in found)


def _entries(index: Index, name: bytes) -> int:
    with index.reading() as txn:
        return int(txn.stat(index._env.open_db(name, txn=txn))["entries"])


def test_old_messages_leave_the_index_but_not_an_mpps_message_still_to_relay(
    engine_factory: Callable[..., EngineProcess], ris_mpps: RisMpps, tmp_path: Path
) -> None:
    hl7_port = free_port()
    relay = {"name": "ris-mpps", "host": "127.0.0.1", "port": ris_mpps.port, "called_ae": "RIS"}
    engine = engine_factory(
        {
            "mpps_destination": [relay],
            "forward": FAST_RETRIES,
            "hl7": {"enabled": True, "host": "127.0.0.1", "port": hl7_port},
            "lifecycle": {"interval": 1.0, "message_keep_days": KEEP_SECONDS / 86400},
        }
    )
    (image,) = make_series(tmp_path / "zhou", 1, PatientID="P3", PatientName="Zhou^Yi")
    assert storescu(engine.port, [image.path]).returncode == 0
    answer = send(hl7_port, adt("A08", "C1", "P3", "Zhou^Yiming"), tmp_path)
    assert msa(answer)[1:3] == ["AA", "C1"]
    # The RIS is down: both messages wait in its queue.
    step = str(generate_uid())
    assert report(engine.port, [("create", step, "IN PROGRESS"), ("set", step, "COMPLETED")]) == [
        0x0000,
        0x0000,
    ]

    wait_until(lambda: _deleted(engine)[0] == 1, 30, "the HL7 message deleted")
    # Past the keep period several passes over, the MPPS messages are still there.
    time.sleep(3 * KEEP_SECONDS)
    assert _deleted(engine) == (1, 0), "an MPPS message the RIS has not taken was deleted"
    assert engine.status()["destinations"]["ris-mpps"]["depth"] == 2
    record = engine.instance(image.sop_instance_uid)
    assert record is not None
    assert record["patient_name"] == "Zhou^Yiming"  # the change outlives its message

    # The RIS is back: both relayed, in order, then deleted.
    ris_mpps.start()
    wait_until(lambda: len(ris_mpps.received) == 2, 60, "the RIS received both messages")
    assert [op for op, _, _ in ris_mpps.received] == ["create", "set"]
    wait_until(lambda: _deleted(engine) == (1, 2), 30, "the relayed MPPS messages deleted")
    assert engine.stop() == 0

    index = Index(engine.data_dir / "index.lmdb", 2**30, durable=True)
    try:
        for name in (b"hl7_messages", b"mpps_messages", b"mpps_steps"):
            assert _entries(index, name) == 0, name
        assert index.queues.delivery("ris-mpps", f"{step}#1") is None
        assert index.queues.stats("ris-mpps").sent == 2  # the counts stay
    finally:
        index.close()
