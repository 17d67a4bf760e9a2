"""Storage commitment SCU, push model (PS3.4 Annex J).

After a batch is sent, the forwarder asks the destination to take responsibility
for it: N-ACTION-RQ (action type 1) with a Transaction UID and the SOP instances.
The destination answers with N-EVENT-REPORT, either on the same association
(handled here) or later on an association it opens to our DICOM port (handled by
engine.dicom.association). Only committed instances may ever be purged from the edge.

pynetdicom does the N-ACTION: once per batch, in a worker thread, off the hot path.
"""

from __future__ import annotations

import logging
import queue
import zlib
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import AE, evt
from pynetdicom.events import Event

from engine.dicom import scu
from policies.config import DicomDestination

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
_REQUEST_COMMITMENT = 1  # action type ID


class CommitmentError(Exception):
    """The N-ACTION request itself failed; the instances wait and are sent again."""


@dataclass(frozen=True)
class Report:
    transaction_uid: str
    committed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


def read_event_information(data: bytes, transfer_syntax_uid: str) -> Dataset:
    """The dataset of an N-EVENT-REPORT-RQ, as received in `transfer_syntax_uid`."""
    if transfer_syntax_uid == "1.2.840.10008.1.2.1.99":
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    implicit = transfer_syntax_uid == "1.2.840.10008.1.2"
    little = transfer_syntax_uid != "1.2.840.10008.1.2.2"
    return read_dataset(BytesIO(data), implicit, little)


def parse_report(info: Dataset) -> Report:
    """N-EVENT-REPORT event information: Referenced / Failed SOP Sequence."""
    committed = {
        str(item.ReferencedSOPInstanceUID)
        for item in info.get("ReferencedSOPSequence", [])
        if "ReferencedSOPInstanceUID" in item
    }
    failed = {
        str(item.ReferencedSOPInstanceUID): (
            f"storage commitment failed, reason {int(item.get('FailureReason', 0)):#06x}"
        )
        for item in info.get("FailedSOPSequence", [])
        if "ReferencedSOPInstanceUID" in item
    }
    return Report(str(info.get("TransactionUID", "")), committed, failed)


def request(
    dest: DicomDestination,
    calling_ae: str,
    transaction_uid: str,
    references: list[tuple[str, str]],
    wait: float,
) -> Report | None:
    """Ask for commitment of (SOP class, SOP instance) pairs; blocking.

    Returns the report if it comes on this association within `wait` seconds,
    None if the destination will report later on an association of its own.
    """
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = dest.timeout
    ae.connection_timeout = dest.connect_timeout
    ae.add_requested_context(STORAGE_COMMITMENT)
    reports: queue.SimpleQueue[Report] = queue.SimpleQueue()

    def on_report(event: Event) -> tuple[int, Dataset | None]:
        reports.put(parse_report(event.event_information))
        return 0x0000, None  # (status, event reply)

    assoc = scu.associate(
        ae, dest.host, dest.port, dest.called_ae, [(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    if not assoc.is_established:
        raise CommitmentError(f"no association with {dest.name} for storage commitment")
    try:
        info = Dataset()
        info.TransactionUID = transaction_uid
        info.ReferencedSOPSequence = []
        for sop_class, sop_instance in references:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            info.ReferencedSOPSequence.append(item)
        status, _reply = assoc.send_n_action(
            info, _REQUEST_COMMITMENT, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
        )
        code = int(status.Status) if status is not None and "Status" in status else -1
        if code != 0x0000:
            raise CommitmentError(f"{dest.name} answered N-ACTION with status {code:#06x}")
        try:
            return reports.get(timeout=wait)
        except queue.Empty:
            return None
    finally:
        assoc.release()
