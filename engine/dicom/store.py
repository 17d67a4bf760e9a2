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
from storage.committer import IndexUnavailable
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


@dataclass(frozen=True)
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

    async def _targets(
        self, path: str, attrs: dict[str, str], calling_ae: str, sop_class_uid: str
    ) -> tuple[list[Target], Correction | None]:
        """Where the object goes, and the worklist's corrections of its demographics
        when a matching route asks for them (`coerce_from_worklist`)."""
        facts = {**attrs, CALLING_AE: calling_ae, "SOPClassUID": sop_class_uid}
        if self._extra_keywords:
            loop = asyncio.get_running_loop()
            facts |= await loop.run_in_executor(
                self._io_pool, _read_extra, path, self._extra_keywords
            )
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
        source = self._recall_source(calling_ae, move_originator)
        targets: list[Target] | Recalled
        fix = None
        if source:
            targets = Recalled(source)
        else:
            targets, fix = await self._targets(stored.path, attrs, calling_ae, sop_class_uid)
        # The record is built once, as the index keeps it (hot, routed), and not
        # through the frozen dataclass's __init__ (Instance.of).
        patient_id = attrs.get("PatientID", "")
        dominant = self._shared.index.patients.merged_into(patient_id)
        instance = Instance.of(
            {
                "sop_instance_uid": sop_instance_uid,
                "sop_class_uid": sop_class_uid,
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
                "transfer_syntax_uid": transfer_syntax_uid,
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
        try:
            outcome = await self._committer.submit(instance, targets, stored.path, stored.existed)
        except IndexUnavailable as exc:
            if not stored.existed:  # written by us, never indexed: take it back
                await asyncio.get_running_loop().run_in_executor(
                    self._io_pool, partial(Path(stored.path).unlink, missing_ok=True)
                )
            return StoreResult(OUT_OF_RESOURCES, str(exc)[:64])
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
            sop_class_uid=sop_class_uid,
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
