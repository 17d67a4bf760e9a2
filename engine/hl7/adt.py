"""What an ADT message changes (IHE PIR): A08/A31 update a patient's demographics,
A40 merges the MRG patient into the PID one (the PID patient is dominant), A47
changes a patient's identifier. The instance records (and so the catalog: queries
see the change) are rewritten in one transaction with the message's log entry; the
stored objects are not: every copy that leaves gets the corrections (Instance
.corrections, engine.forward.senders).

Every message is answered: AA once the change is durable (or when a repeated merge
has nothing left to do), AE for a patient this node does not know, AR for a message
that cannot be applied as sent (wrong version, missing PID or MRG, unknown event) and
for one the index could not take (full, failing, or a damaged record: HL7's "reason
unrelated to content", which the HIS sends again later).
The message is parsed by the `hl7` library; framing is engine.hl7.mllp's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import hl7
import lmdb

import core_rs
from storage.index import DamagedRecord, Index, Instance, with_demographics
from storage.query import Query, instances

log = logging.getLogger(__name__)
UPDATES = ("A08", "A31")
MERGES = ("A40", "A47")


@dataclass(frozen=True)
class Outcome:
    ack: str  # AA, AE or AR
    reason: str
    control_id: str
    changed: int = 0
    event: str = ""
    patient_id: str = ""


def _field(message: hl7.Message, path: str) -> str:
    try:
        return str(message[path]).strip()
    except (KeyError, IndexError):
        return ""


def _person_name(message: hl7.Message) -> str:
    """PID-5 (XPN: family^given^middle^suffix^prefix) as a DICOM PN
    (family^given^middle^prefix^suffix), trailing empty components dropped."""
    parts = [_field(message, f"PID.F5.R1.C{n}") for n in (1, 2, 3, 5, 4)]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def demographics(message: hl7.Message) -> dict[str, str]:
    values = {
        "PatientName": _person_name(message),
        "PatientBirthDate": _field(message, "PID.F7")[:8],
        "PatientSex": _field(message, "PID.F8")[:1],
        "IssuerOfPatientID": _field(message, "PID.F3.R1.C4"),
    }
    return {k: v for k, v in values.items() if v}


def apply(index: Index, text: str) -> Outcome:
    """Parse and apply one ADT message; in a thread (it writes LMDB)."""
    try:
        message = hl7.parse(text)
        control_id = _field(message, "MSH.F10")
    except (hl7.ParseException, ValueError, KeyError, IndexError) as exc:
        return Outcome("AR", f"not an HL7 v2 message: {exc}", "")
    try:
        outcome = _decide(index, message, control_id)
        if outcome.changed == 0:
            index.patients.log(control_id, text, outcome.ack, outcome.reason)
    except core_rs.RecordError as exc:
        # As the group committer does (decision 40): the rebuild at the next start
        # mends the catalog; until then this patient's updates are refused.
        log.error("HL7 %s: %s; restart the engine to rebuild the catalog", control_id, exc)
        index.mark_catalog_damaged()
        return Outcome("AR", "damaged index record; edge restart needed", control_id)
    except (lmdb.Error, OSError, DamagedRecord) as exc:
        log.error("HL7 %s: the index could not take it: %s", control_id, exc)
        return Outcome("AR", f"edge index unavailable: {exc}", control_id)
    return outcome


def _decide(index: Index, message: hl7.Message, control_id: str) -> Outcome:
    version = _field(message, "MSH.F12")
    if not version.startswith("2."):
        return Outcome("AR", f"HL7 version {version or '(none)'} is not 2.x", control_id)
    kind, event = _field(message, "MSH.F9.R1.C1"), _field(message, "MSH.F9.R1.C2")
    if kind != "ADT" or event not in UPDATES + MERGES:
        return Outcome("AR", f"{kind}^{event} is not handled (ADT A08, A31, A40, A47)", control_id)
    try:
        message.segment("PID")
    except KeyError:
        return Outcome("AR", "the message has no PID segment", control_id, event=event)
    patient = _field(message, "PID.F3.R1.C1")
    if not patient:
        return Outcome("AR", "PID-3 names no patient identifier", control_id, event=event)
    values = demographics(message)
    if event in UPDATES:
        found = _instances(index, patient)
        if not found:
            return Outcome("AE", f"unknown patient {patient}", control_id, event=event)
        changed = _write(index, message, control_id, found, values, None)
        return Outcome("AA", f"{changed} instance(s) updated", control_id, changed, event, patient)
    old = _field(message, "MRG.F1.R1.C1")
    if not old:
        return Outcome("AR", "MRG-1 names no prior patient identifier", control_id, event=event)
    found = _instances(index, old)
    if not found:
        if index.patients.merged_into(old) == patient:
            return Outcome("AA", f"{old} was merged into {patient} before", control_id, 0, event)
        return Outcome("AE", f"unknown patient {old}", control_id, event=event)
    values["PatientID"] = patient
    changed = _write(index, message, control_id, found, values, (old, patient))
    return Outcome(
        "AA",
        f"{changed} instance(s) moved from {old} to {patient}",
        control_id,
        changed,
        event,
        patient,
    )


def _instances(index: Index, patient_id: str) -> list[Instance]:
    return list(instances(index, Query("PATIENT", {"PatientID": patient_id})))


def _write(
    index: Index,
    message: hl7.Message,
    control_id: str,
    found: list[Instance],
    values: dict[str, str],
    merge: tuple[str, str] | None,
) -> int:
    changes = [(old, with_demographics(old, values, correct=True)) for old in found]
    log_entry = index.patients.logged(control_id, str(message), "AA", "", len(changes))

    def also(txn: lmdb.Transaction) -> None:
        log_entry(txn)
        if merge is not None:
            index.patients.merge(*merge)(txn)

    index.correct(changes, also)
    return len(changes)


def ack(outcome: Outcome, text: str, our_application: str, our_facility: str) -> str:
    """The ACK to send back (MSA-1 the code, MSA-3 the reason), or a minimal one when
    the message could not be parsed at all."""
    reason = outcome.reason.replace("|", " ").replace("^", " ").replace("\\", " ")[:80]
    try:
        message = hl7.parse(text)
        answer = message.create_ack(
            outcome.ack,
            message_id=f"ACK{outcome.control_id}"[:20] or "ACK",
            application=our_application,
            facility=our_facility,
        )
        lines = str(answer).rstrip("\r").split("\r")
    except (hl7.ParseException, ValueError, KeyError, IndexError):
        lines = [
            f"MSH|^~\\&|{our_application}|{our_facility}|||||ACK|ACK|P|2.5",
            f"MSA|{outcome.ack}|",
        ]
    lines = [line + f"|{reason}" if line.startswith("MSA|") else line for line in lines]
    return "\r".join(lines) + "\r"
