"""The C-STORE service: from a received spool file to a durable, indexed object.

The status it returns is the one the modality sees, so it is Success (0x0000) only
after the object is renamed into the object store, synced with its batch (durability
"fsync"), AND its index record is committed (storage.committer). Every failure maps
to a failure status.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydicom import dcmread
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.errors import InvalidDicomError

import core_rs
from engine.services import Shared
from engine.worklist.coercion import Correction, correction
from policies.rules import CALLING_AE, Router
from storage.committer import IndexUnavailable, settle_future
from storage.index import Instance, Outcome, Recalled
from storage.queue import Target

log = logging.getLogger(__name__)

# DIMSE statuses (PS3.4 B.2.3, PS3.7 C).
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
UNRECOGNIZED_OPERATION = 0x0211
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


@dataclass(slots=True)  # not frozen: its __init__ would call object.__setattr__ a field
class StoreResult:
    status: int
    comment: str = ""
    outcome: Outcome | None = None
    size: int = 0
    modality: str = ""


def _destinations(targets: list[Target] | Recalled) -> tuple[str, ...]:
    """What the record names as routed to; a recalled object's own come from its record."""
    return () if isinstance(targets, Recalled) else tuple(t.destination for t in targets)


def _decode_attributes(stored: core_rs.StoredObject) -> dict[str, str]:
    """Key attribute bytes to text, honouring (0008,0005) Specific Character Set."""
    text = stored.text
    if text is not None:
        # The common case, and every character set's ASCII subset: skip pydicom.
        return text
    values = dict(stored.attributes)
    charset = values.get("SpecificCharacterSet", b"").decode("ascii", "replace")
    terms = [term.strip() for term in charset.split("\\")] if charset.strip() else ["ISO_IR 6"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encodings = convert_encodings(terms)
        text = {
            name: decode_bytes(value, encodings, {0x5C, 0x3D, 0x5E}).strip("\x00 ")
            for name, value in values.items()
        }
    for warning in caught:
        log.debug("character set: %s", warning.message)
    return text


def _read_extra(path: str, keywords: list[str]) -> dict[str, str]:
    """Attributes a routing rule tests that the Rust parser does not read: pydicom,
    on the header only. Costs a file read per object, so only when rules need it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, stop_before_pixels=True, specific_tags=keywords)
    except (InvalidDicomError, OSError, ValueError) as exc:
        log.warning("%s: cannot read %s for routing: %s", path, keywords, exc)
        return {}
    return {k: str(ds[k].value) for k in keywords if k in ds and ds[k].value is not None}


class StoreService:
    def __init__(self, shared: Shared, io_pool: Executor, router: Router) -> None:
        self._shared = shared  # its config, read at each use: a reload swaps it
        self._audit = shared.audit
        self._objects = str(shared.layout.objects)  # per object: no Path to convert
        self._committer = shared.committer
        self._io_pool = io_pool
        self._extra_keywords: list[str] = []
        self.use_router(router)

    def use_router(self, router: Router) -> None:
        """New routing rules, for the next object (hot reload)."""
        known = {*core_rs.KEY_ATTRIBUTES, CALLING_AE}
        self._extra_keywords = sorted(router.keywords - known)
        self._router = router

    @property
    def reads_headers(self) -> bool:
        """Routing rules test attributes core_rs does not decode: each object's header
        is read through pydicom on the I/O pool first (`store`, not `store_then`)."""
        return bool(self._extra_keywords)

    def _targets(
        self, attrs: dict[str, str], extra: dict[str, str], calling_ae: str, sop_class_uid: str
    ) -> tuple[list[Target], Correction | None]:
        """Where the object goes, and the worklist's corrections of its demographics
        when a matching route asks for them (`coerce_from_worklist`)."""
        facts = {**attrs, **extra, CALLING_AE: calling_ae, "SOPClassUID": sop_class_uid}
        routes = self._router.route(facts)
        fix = None
        if any(r.from_worklist for r in routes):
            fix = correction(self._shared.index.worklist, attrs)
        targets = []
        for r in routes:
            coerce = r.coerce
            if fix is not None and r.from_worklist:
                coerce = fix.coerce(coerce)
            targets.append(Target(r.destination, r.priority, coerce))
        return targets, fix

    def _recall_source(self, calling_ae: str, move_originator: str) -> str:
        """The destination a C-STORE comes back from on a C-MOVE this node asked for
        (engine.forward.recall): it names us as Move Originator and comes from an archive
        with `recall = true`. "" for anything else."""
        if move_originator.strip() != self._shared.config.node.ae_title:
            return ""
        for dest in self._shared.config.destination:
            if dest.kind == "dicom" and dest.recall and dest.called_ae == calling_ae.strip():
                return dest.name
        return ""

    async def store(
        self,
        spool: core_rs.SpoolFile,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        move_originator: str = "",
    ) -> StoreResult:
        """Store and index the object; the status for its sender. Any routing rules."""
        received = self._receive(
            spool, sop_class_uid, sop_instance_uid, transfer_syntax_uid, calling_ae, move_originator
        )
        if isinstance(received, StoreResult):
            return received
        loop = asyncio.get_running_loop()
        extra: dict[str, str] = {}
        if self._extra_keywords and not received.source:
            path = received.stored.path
            extra = await loop.run_in_executor(
                self._io_pool, _read_extra, path, self._extra_keywords
            )
        answer: asyncio.Future[StoreResult] = loop.create_future()
        self._submit(received, extra, settle_future(answer))
        return await answer

    def store_then(
        self,
        spool: core_rs.SpoolFile,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        move_originator: str,
        done: Callable[[StoreResult], None],
    ) -> StoreResult | None:
        """`store` without a task, when not `reads_headers`: the status at once if the
        object never reaches the group commit (disk full), else None and `done` gets
        it from the commit, once."""
        received = self._receive(
            spool, sop_class_uid, sop_instance_uid, transfer_syntax_uid, calling_ae, move_originator
        )
        if isinstance(received, StoreResult):
            return received
        self._submit(received, {}, done)
        return None

    def _receive(
        self,
        spool: core_rs.SpoolFile,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        move_originator: str,
    ) -> StoreResult | _Received:
        """The spool file into the object store, and what it says of itself."""
        try:
            # A flush and a rename, on the loop: cheaper than the hop to a thread. With
            # durability "fsync" the group committer syncs the batch's files before it
            # indexes them (docs/decisions/0031), so no object syncs on its own.
            stored = spool.finish(self._objects, False)
        except core_rs.OutOfSpaceError:
            log.error("disk full: refused %s from %s (0xA700)", sop_instance_uid, calling_ae)
            return StoreResult(OUT_OF_RESOURCES, "edge disk is full")
        except core_rs.StorageError as exc:
            log.error("could not store %s from %s: %s", sop_instance_uid, calling_ae, exc)
            return StoreResult(OUT_OF_RESOURCES, "edge storage error")
        if stored.parse_problem:
            log.warning("%s: stored as sent, but %s", sop_instance_uid, stored.parse_problem)
        attrs = _decode_attributes(stored)
        if attrs.get("SOPInstanceUID", sop_instance_uid) != sop_instance_uid:
            log.warning(
                "%s: the dataset says SOP Instance UID %s; indexed under the command's UID",
                sop_instance_uid,
                attrs["SOPInstanceUID"],
            )
        return _Received(
            stored,
            attrs,
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid,
            calling_ae,
            self._recall_source(calling_ae, move_originator),
        )

    def _submit(
        self, received: _Received, extra: dict[str, str], done: Callable[[StoreResult], None]
    ) -> None:
        """Route the object, build its record and hand it to the group committer."""
        stored, attrs = received.stored, received.attrs
        sop_instance_uid, calling_ae = received.sop_instance_uid, received.calling_ae
        targets: list[Target] | Recalled
        fix = None
        if received.source:
            targets = Recalled(received.source)
        else:
            targets, fix = self._targets(attrs, extra, calling_ae, received.sop_class_uid)
        # The record is built once, as the index keeps it (hot, routed), and not
        # through the frozen dataclass's __init__ (Instance.of).
        patient_id = attrs.get("PatientID", "")
        dominant = self._shared.index.patients.merged_into(patient_id)
        instance = Instance.of(
            {
                "sop_instance_uid": sop_instance_uid,
                "sop_class_uid": received.sop_class_uid,
                "study_instance_uid": attrs.get("StudyInstanceUID", ""),
                "series_instance_uid": attrs.get("SeriesInstanceUID", ""),
                # The HIS merged this patient (HL7 A40/A47): attach to the survivor.
                "patient_id": dominant or patient_id,
                "patient_name": attrs.get("PatientName", ""),
                "modality": attrs.get("Modality", ""),
                "study_date": attrs.get("StudyDate", ""),
                "study_description": attrs.get("StudyDescription", ""),
                "accession_number": attrs.get("AccessionNumber", ""),
                "series_number": attrs.get("SeriesNumber", ""),
                "instance_number": attrs.get("InstanceNumber", ""),
                "issuer_of_patient_id": attrs.get("IssuerOfPatientID", ""),
                "patient_birth_date": attrs.get("PatientBirthDate", ""),
                "patient_sex": attrs.get("PatientSex", ""),
                "study_time": attrs.get("StudyTime", ""),
                "study_id": attrs.get("StudyID", ""),
                "referring_physician_name": attrs.get("ReferringPhysicianName", ""),
                "series_description": attrs.get("SeriesDescription", ""),
                "series_date": attrs.get("SeriesDate", ""),
                "body_part_examined": attrs.get("BodyPartExamined", ""),
                "number_of_frames": attrs.get("NumberOfFrames", ""),
                "transfer_syntax_uid": received.transfer_syntax_uid,
                "calling_ae": calling_ae,
                "hash": stored.hash,
                "meta_length": stored.meta_length,
                "dataset_length": stored.dataset_length,
                "received_at": time.time(),
                "tier": "hot",
                "stored_length": stored.meta_length + stored.dataset_length,
                "destinations": _destinations(targets),
                "corrections": {"PatientID": dominant} if dominant else {},
            }
        )
        if dominant:
            self._audit.write(
                "patient_merged_on_arrival",
                sop_instance_uid=sop_instance_uid,
                **self._audit.patient(patient_id, instance.patient_name),
                **({"dominant": dominant} if self._shared.config.audit.patient_identifiers else {}),
            )
        if fix is not None:
            instance = fix.applied(instance)
            self._audit.write(
                "worklist_coerced",
                sop_instance_uid=sop_instance_uid,
                study_instance_uid=instance.study_instance_uid,
                accession_number=instance.accession_number,
                calling_ae=calling_ae,
                keys=sorted(fix.values),
                **(
                    {"before": fix.before, "after": fix.values}
                    if self._shared.config.audit.patient_identifiers
                    else {}
                ),
            )
        self._committer.submit_then(
            instance,
            targets,
            stored.path,
            stored.existed,
            partial(self._indexed, received, instance, targets, done),
        )

    def _indexed(
        self,
        received: _Received,
        instance: Instance,
        targets: list[Target] | Recalled,
        done: Callable[[StoreResult], None],
        outcome: Outcome | IndexUnavailable,
    ) -> None:
        try:
            result = self._result(received, instance, targets, outcome)
        except Exception:  # a bug must not leave the modality waiting for its answer
            log.exception("answering for %s failed", received.sop_instance_uid)
            result = StoreResult(PROCESSING_FAILURE, "the store failed on this node")
        done(result)

    def _result(
        self,
        received: _Received,
        instance: Instance,
        targets: list[Target] | Recalled,
        outcome: Outcome | IndexUnavailable,
    ) -> StoreResult:
        """The group commit's outcome as the sender's status, logged and audited."""
        stored = received.stored
        sop_instance_uid, calling_ae = received.sop_instance_uid, received.calling_ae
        if isinstance(outcome, IndexUnavailable):
            if not stored.existed:  # written by us, never indexed: take it back
                # On the loop, before the answer: the sender's retry must not find
                # its new file deleted by this one's late unlink.
                Path(stored.path).unlink(missing_ok=True)
            return StoreResult(OUT_OF_RESOURCES, str(outcome)[:64])
        size = stored.dataset_length
        if outcome is Outcome.REJECTED:
            log.warning(
                "rejected %s from %s: a different object with this SOP Instance UID "
                "is stored (on_duplicate = reject)",
                sop_instance_uid,
                calling_ae,
            )
            return StoreResult(DUPLICATE_SOP_INSTANCE, "duplicate SOP instance", outcome, size)
        modality = instance.modality
        if outcome in (Outcome.REPLACED, Outcome.KEPT):
            log.warning(
                "%s from %s: a different object with this SOP Instance UID was "
                "stored before; %s it",
                sop_instance_uid,
                calling_ae,
                "replaced" if outcome is Outcome.REPLACED else "kept",
            )
        self._audit.write(
            "instance_stored",
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=received.sop_class_uid,
            study_instance_uid=instance.study_instance_uid,
            calling_ae=calling_ae,
            size=size,
            hash=instance.hash,
            outcome=outcome.value,
            **(
                {"recalled_from": targets.source}
                if isinstance(targets, Recalled)
                else {"destinations": [t.destination for t in targets]}
            ),
            **self._audit.patient(instance.patient_id, instance.patient_name),
        )
        return StoreResult(SUCCESS, "", outcome, size, modality)


@dataclass(slots=True)  # not frozen: its __init__ would call object.__setattr__ a field
class _Received:
    """An object in the object store, between its spool and its record."""

    stored: core_rs.StoredObject
    attrs: dict[str, str]
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    source: str  # the archive it comes back from on a recall, or ""
