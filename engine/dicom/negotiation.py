"""Association negotiation for the storage SCP (PS3.8 9.3.2-9.3.4, PS3.7 D.3.3).

core_rs decodes the A-ASSOCIATE-RQ and encodes the A-ASSOCIATE-AC (through
pynetdicom's PDU classes that cost ~12 ms of the event loop for a 120-context request);
pynetdicom still encodes the rare ones (RJ, abort, release) and the SCU's request.
The choice of transfer syntax is ours: of the syntaxes a context proposes, the FIRST
ONE THE SENDER LISTED that we support is accepted, so a compressed object is stored as
the modality compressed it (pynetdicom would pick in the acceptor's order instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from pydicom._uid_dict import UID_dictionary  # the registry pydicom.uid itself reads
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ, A_RELEASE_RP
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    A_P_ABORT,
    A_RELEASE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import AllStoragePresentationContexts

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
class RoleSelection:
    """SCP/SCU Role Selection for one SOP class (PS3.7 D.3.3.4)."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True)
class ExtendedNegotiation:
    """SOP Class Extended Negotiation (PS3.7 D.3.3.5): the class and its service-class
    application information."""

    sop_class_uid: str
    info: bytes


class ContextResult(NamedTuple):
    """One presentation context's answer (PS3.8 9.3.3.2): a tuple, as core_rs takes it."""

    context_id: int
    result: int
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
    role_items: tuple[RoleSelection, ...]
    extended: tuple[ExtendedNegotiation, ...] = ()
    # Why the presentation context list breaks PS3.8 (then `contexts` is empty).
    context_problem: str | None = None


class MalformedRequest(ValueError):
    """An A-ASSOCIATE-RQ PDU that cannot be decoded."""


def parse_request(pdu_bytes: bytes) -> AssociationRequest:
    try:
        (
            protocol_version,
            called_ae,
            calling_ae,
            application_context,
            proposed,
            peer_max,
            implementation_class_uid,
            implementation_version_name,
            roles,
            extended,
        ) = core_rs.decode_associate_rq(pdu_bytes)
    except core_rs.ProtocolError as exc:
        raise MalformedRequest(str(exc)) from exc
    problem = context_problem([context_id for context_id, _, _ in proposed])
    contexts = tuple(
        ProposedContext(context_id, abstract, tuple(syntaxes))
        for context_id, abstract, syntaxes in proposed
    )
    return AssociationRequest(
        calling_ae=calling_ae,
        called_ae=called_ae,
        protocol_version=protocol_version,
        application_context=application_context,
        contexts=() if problem is not None else contexts,  # refused whole (context_problem)
        peer_max_pdu=peer_max,
        implementation_class_uid=implementation_class_uid,
        implementation_version_name=implementation_version_name,
        role_items=tuple(RoleSelection(*role) for role in roles),
        extended=tuple(ExtendedNegotiation(*item) for item in extended),
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


def _reporters(role_items: tuple[RoleSelection, ...]) -> set[str]:
    return {
        item.sop_class_uid
        for item in role_items
        if item.scp_role and item.sop_class_uid == STORAGE_COMMITMENT
    }


def negotiate(
    contexts: tuple[ProposedContext, ...],
    role_items: tuple[RoleSelection, ...] = (),
    services: frozenset[str] = frozenset(),
) -> tuple[list[AcceptedContext], list[ContextResult]]:
    """Decide every proposed context; returns the accepted ones and all results.
    `services`: the Query/Retrieve SOP classes this calling AE may use."""
    supported = supported_abstract_syntaxes() | _reporters(role_items) | services
    accepted: list[AcceptedContext] = []
    results: list[ContextResult] = []
    for proposed in contexts:
        storage = proposed.abstract_syntax not in services
        chosen = choose_transfer_syntax(proposed.transfer_syntaxes, storage)
        if proposed.abstract_syntax not in supported:
            result = ABSTRACT_SYNTAX_NOT_SUPPORTED
        elif chosen is None:
            result = TRANSFER_SYNTAXES_NOT_SUPPORTED
        else:
            result = ACCEPTANCE
            accepted.append(AcceptedContext(proposed.context_id, proposed.abstract_syntax, chosen))
        # PS3.8 9.3.3.2: a rejected context still carries one transfer syntax item.
        syntax = chosen or (proposed.transfer_syntaxes or (TRANSFER_SYNTAXES[0],))[0]
        results.append(ContextResult(proposed.context_id, result, syntax))
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
        item.sop_class_uid
        for item in request.role_items
        if item.scp_role and item.sop_class_uid in storage
    )


def relational(
    request: AssociationRequest, services: frozenset[str]
) -> tuple[frozenset[str], list[ExtendedNegotiation]]:
    """Q/R classes on which the SCU asked for relational queries or retrievals
    (SOP Class Extended Negotiation, PS3.4 C.3.4, byte 1), and our replies. Fuzzy
    semantic matching of person names (C-FIND byte 3) is granted when asked: names
    always match case-insensitively here. Combined date-time matching and timezone
    adjustment are declined (0)."""
    granted: set[str] = set()
    replies = []
    for item in request.extended:
        uid, asked = item.sop_class_uid, item.info
        if uid not in services or not asked:
            continue
        if asked[0] == 1:
            granted.add(uid)
        if uid in QR_FIND:
            answer = bytes([asked[0] == 1, 0, len(asked) > 2 and asked[2] == 1])[: len(asked)]
        else:
            answer = bytes([asked[0] == 1])
        replies.append(ExtendedNegotiation(uid, answer))
    return frozenset(granted), replies


def encode_accept(
    request: AssociationRequest,
    results: list[ContextResult],
    our_max_pdu: int,
    storage_scp: frozenset[str] = frozenset(),
    extended: Sequence[ExtendedNegotiation] = (),
) -> bytes:
    """`storage_scp`: the classes the requestor is accepted as SCP for (C-GET);
    `extended`: our SOP Class Extended Negotiation replies."""
    reporters = _reporters(request.role_items)
    # We are the storage SCP: the requestor may be SCU. For storage commitment the
    # requestor is the SCP reporting to us, the SCU.
    roles = [
        (
            item.sop_class_uid,
            item.scu_role,
            item.sop_class_uid in reporters or item.sop_class_uid in storage_scp,
        )
        for item in request.role_items
    ]
    return core_rs.encode_associate_ac(
        request.called_ae,
        request.calling_ae,
        list(results),
        our_max_pdu,
        roles,
        [(reply.sop_class_uid, reply.info) for reply in extended],
    )


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
