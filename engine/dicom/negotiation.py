"""Association negotiation for the storage SCP (PS3.8 9.3.2-9.3.4, PS3.7 D.3.3).

pynetdicom decodes and encodes the A-ASSOCIATE PDUs and their items; the choice of
transfer syntax is ours: of the syntaxes a context proposes, the FIRST ONE THE
SENDER LISTED that we support is accepted, so a compressed object is stored as the
modality compressed it (pynetdicom would pick in the acceptor's order instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydicom._uid_dict import UID_dictionary  # the registry pydicom.uid itself reads
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_RELEASE_RP
from pynetdicom.pdu_items import PresentationContextItemRQ
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    A_P_ABORT,
    A_RELEASE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
)
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext

import core_rs
from policies.access import Rejection

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
# Accepted only from a peer that takes the SCP role: an archive delivering its
# N-EVENT-REPORT on an association of its own (engine.forward.commitment).
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
# Services an association may carry that write no object to the data disk.
# Query/Retrieve (PS3.4 C.4): FIND, MOVE and GET, Patient Root and Study Root.
PATIENT_ROOT_FIND, STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_GET, STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3"
QR_FIND = frozenset({PATIENT_ROOT_FIND, STUDY_ROOT_FIND})
QR_RETRIEVE = frozenset({PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE})
# C-GET: the images come back on the same association, the requestor as storage SCP.
QR_GET = frozenset({PATIENT_ROOT_GET, STUDY_ROOT_GET})
STUDY_ROOT = frozenset({STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET})  # no PATIENT level
# Modality Worklist (PS3.4 K): offered when [[worklist_source]]s are configured;
# Modality Performed Procedure Step (PS3.4 F.7) when [[mpps_destination]]s are.
MWL_FIND = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"
NEEDS_NO_DISK = (
    frozenset({VERIFICATION, STORAGE_COMMITMENT, MWL_FIND, MPPS}) | QR_FIND | QR_RETRIEVE | QR_GET
)
# Services that carry only command sets and identifiers: no pixel codecs.
_UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")

# What we store, byte for byte, as the sender encoded it.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
_SUPPORTED_TS = frozenset(TRANSFER_SYNTAXES)

# Odd IDs 1-255 (PS3.8 9.3.2.2): no request can carry more distinct contexts.
MAX_CONTEXTS = 128

# Presentation context results (PS3.8 9.3.3.2, Table 9-18).
ACCEPTANCE, ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 0, 3, 4


@cache
def storage_sop_classes() -> frozenset[str]:
    """Every storage SOP class pynetdicom or pydicom knows."""
    from_pynetdicom = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    from_pydicom = {
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name and "Commitment" not in name
    }
    return frozenset(from_pynetdicom | from_pydicom)


def supported_abstract_syntaxes() -> frozenset[str]:
    return storage_sop_classes() | {VERIFICATION}


@dataclass(frozen=True)
class ProposedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class AssociationRequest:
    calling_ae: str
    called_ae: str
    protocol_version: int
    application_context: str
    contexts: tuple[ProposedContext, ...]
    peer_max_pdu: int
    implementation_class_uid: str
    implementation_version_name: str
    role_items: tuple[SCP_SCU_RoleSelectionNegotiation, ...]
    extended: tuple[SOPClassExtendedNegotiation, ...] = ()
    # Why the presentation context list breaks PS3.8 (then `contexts` is empty).
    context_problem: str | None = None


class MalformedRequest(ValueError):
    """An A-ASSOCIATE-RQ PDU that cannot be decoded."""


def parse_request(pdu_bytes: bytes) -> AssociationRequest:
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(pdu_bytes)
        ids = [i.context_id for i in pdu.variable_items if isinstance(i, PresentationContextItemRQ)]
        problem = context_problem(ids)
        if problem is not None:  # pynetdicom's primitive refuses bad IDs: drop the list
            pdu.variable_items = [
                i for i in pdu.variable_items if not isinstance(i, PresentationContextItemRQ)
            ]
        primitive = pdu.to_primitive()
        contexts = tuple(
            ProposedContext(
                cx.context_id or 0,
                str(cx.abstract_syntax),
                tuple(str(ts) for ts in cx.transfer_syntax),
            )
            for cx in primitive.presentation_context_definition_list
        )
    # The bytes are the peer's, the decoder a third party's: it fails with whatever
    # it meets (AssertionError, struct.error, IndexError ...). Any failure means the
    # same thing here - a malformed request, answered with A-ABORT.
    except Exception as exc:
        raise MalformedRequest(f"undecodable A-ASSOCIATE-RQ: {exc!r}") from exc
    peer_max, impl_uid, impl_version, roles, extended = 0, "", "", [], []
    for item in primitive.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max = item.maximum_length_received or 0
        elif isinstance(item, ImplementationClassUIDNotification):
            impl_uid = str(item.implementation_class_uid or "")
        elif isinstance(item, ImplementationVersionNameNotification):
            impl_version = str(item.implementation_version_name or "")
        elif isinstance(item, SCP_SCU_RoleSelectionNegotiation):
            roles.append(item)
        elif isinstance(item, SOPClassExtendedNegotiation):
            extended.append(item)
    return AssociationRequest(
        calling_ae=str(primitive.calling_ae_title).strip(),
        called_ae=str(primitive.called_ae_title).strip(),
        protocol_version=pdu.protocol_version,
        application_context=str(primitive.application_context_name),
        contexts=contexts,
        peer_max_pdu=peer_max,
        implementation_class_uid=impl_uid,
        implementation_version_name=impl_version,
        role_items=tuple(roles),
        extended=tuple(extended),
        context_problem=problem,
    )


def context_problem(ids: list[int | None]) -> str | None:
    """Why a request's presentation context list breaks PS3.8 9.3.2.2, or None:
    IDs are odd integers 1-255, unique within the request, so at most 128 of them.
    An acceptance cannot answer two contexts that share an ID, so the whole request
    is refused rather than guessed at."""
    if not ids:
        return "no presentation context proposed"
    if len(ids) > MAX_CONTEXTS:
        return f"{len(ids)} presentation contexts proposed; at most {MAX_CONTEXTS} fit"
    seen: set[int] = set()
    for cid in ids:
        if cid is None or not 1 <= cid <= 255 or cid % 2 == 0:
            return f"presentation context ID {cid} is not an odd number 1-255"
        if cid in seen:
            return f"presentation context ID {cid} is proposed twice"
        seen.add(cid)
    return None


def choose_transfer_syntax(proposed: tuple[str, ...], storage: bool = True) -> str | None:
    usable = _SUPPORTED_TS if storage else _UNCOMPRESSED
    return next((ts for ts in proposed if ts in usable), None)


def _reporters(role_items: tuple[SCP_SCU_RoleSelectionNegotiation, ...]) -> set[str]:
    return {
        str(item.sop_class_uid)
        for item in role_items
        if item.scp_role and str(item.sop_class_uid) == STORAGE_COMMITMENT
    }


def negotiate(
    contexts: tuple[ProposedContext, ...],
    role_items: tuple[SCP_SCU_RoleSelectionNegotiation, ...] = (),
    services: frozenset[str] = frozenset(),
) -> tuple[list[AcceptedContext], list[PresentationContext]]:
    """Decide every proposed context; returns the accepted ones and all results.
    `services`: the Query/Retrieve SOP classes this calling AE may use."""
    supported = supported_abstract_syntaxes() | _reporters(role_items) | services
    accepted: list[AcceptedContext] = []
    results: list[PresentationContext] = []
    for proposed in contexts:
        result = PresentationContext()
        result.context_id = proposed.context_id
        result.abstract_syntax = proposed.abstract_syntax
        storage = proposed.abstract_syntax not in services
        chosen = choose_transfer_syntax(proposed.transfer_syntaxes, storage)
        if proposed.abstract_syntax not in supported:
            result.result = ABSTRACT_SYNTAX_NOT_SUPPORTED
        elif chosen is None:
            result.result = TRANSFER_SYNTAXES_NOT_SUPPORTED
        else:
            result.result = ACCEPTANCE
            accepted.append(AcceptedContext(proposed.context_id, proposed.abstract_syntax, chosen))
        # PS3.8 9.3.3.2: a rejected context still carries one transfer syntax item.
        result.transfer_syntax = [
            chosen or (proposed.transfer_syntaxes or (TRANSFER_SYNTAXES[0],))[0]
        ]
        results.append(result)
    return accepted, results


def our_user_information(max_pdu: int) -> list[Any]:
    """Maximum length, implementation class UID and version: in every RQ and AC we send."""
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = core_rs.IMPLEMENTATION_CLASS_UID
    impl_version = ImplementationVersionNameNotification()
    impl_version.implementation_version_name = core_rs.IMPLEMENTATION_VERSION_NAME
    return [max_length, impl_uid, impl_version]


def storage_scps(request: AssociationRequest, services: frozenset[str]) -> frozenset[str]:
    """Storage SOP classes the requestor will be SCP for (SCP/SCU Role Selection,
    PS3.7 D.3.3.4), honoured when it may C-GET: ours to send it C-STORE-RQs on."""
    if not services & QR_GET:
        return frozenset()
    storage = storage_sop_classes()
    return frozenset(
        str(item.sop_class_uid)
        for item in request.role_items
        if item.scp_role and str(item.sop_class_uid) in storage
    )


def relational(
    request: AssociationRequest, services: frozenset[str]
) -> tuple[frozenset[str], list[SOPClassExtendedNegotiation]]:
    """Q/R classes on which the SCU asked for relational queries or retrievals
    (SOP Class Extended Negotiation, PS3.4 C.3.4, byte 1), and our replies. Fuzzy
    semantic matching of person names (C-FIND byte 3) is granted when asked: names
    always match case-insensitively here. Combined date-time matching and timezone
    adjustment are declined (0)."""
    granted: set[str] = set()
    replies = []
    for item in request.extended:
        uid = str(item.sop_class_uid)
        asked = bytes(item.service_class_application_information or b"")
        if uid not in services or not asked:
            continue
        if asked[0] == 1:
            granted.add(uid)
        if uid in QR_FIND:
            answer = bytes([asked[0] == 1, 0, len(asked) > 2 and asked[2] == 1])[: len(asked)]
        else:
            answer = bytes([asked[0] == 1])
        reply = SOPClassExtendedNegotiation()
        reply.sop_class_uid = uid
        reply.service_class_application_information = answer
        replies.append(reply)
    return frozenset(granted), replies


def encode_accept(
    request: AssociationRequest,
    results: list[PresentationContext],
    our_max_pdu: int,
    storage_scp: frozenset[str] = frozenset(),
    extended: Sequence[SOPClassExtendedNegotiation] = (),
) -> bytes:
    """`storage_scp`: the classes the requestor is accepted as SCP for (C-GET);
    `extended`: our SOP Class Extended Negotiation replies."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = request.calling_ae
    primitive.called_ae_title = request.called_ae
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = results
    items = our_user_information(our_max_pdu)
    reporters = _reporters(request.role_items)
    for proposed in request.role_items:
        # We are the storage SCP: the requestor may be SCU. For storage commitment
        # the requestor is the SCP reporting to us, the SCU.
        reply = SCP_SCU_RoleSelectionNegotiation()
        reply.sop_class_uid = proposed.sop_class_uid
        reply.scu_role = bool(proposed.scu_role)
        uid = str(proposed.sop_class_uid)
        reply.scp_role = uid in reporters or uid in storage_scp
        items.append(reply)
    items.extend(extended)
    primitive.user_information = items
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def encode_reject(rejection: Rejection) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result = rejection.result
    primitive.result_source = rejection.source
    primitive.diagnostic = rejection.reason
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def encode_abort(reason: int | None) -> bytes:
    """A-ABORT PDU: from the service provider (source 2) with a PS3.8 Table 9-26
    reason, or from the service user (source 0) when `reason` is None."""
    primitive: A_P_ABORT | A_ABORT
    if reason is None:
        primitive = A_ABORT()
        primitive.abort_source = 0x00
    else:
        primitive = A_P_ABORT()
        primitive.provider_reason = reason
    pdu = A_ABORT_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def encode_release_response() -> bytes:
    primitive = A_RELEASE()
    primitive.result = "affirmative"
    pdu = A_RELEASE_RP()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())
