"""Who may associate: called-AE check and calling-AE allowlist.

Decisions return the A-ASSOCIATE-RJ that PS3.8 9.3.4 prescribes (result, source,
reason/diagnostic) or None to accept, never a bare bool, so the reason a modality
sees is the one the audit log records.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.config import DicomConfig

PERMANENT, TRANSIENT = 1, 2
SERVICE_USER, PROVIDER_ACSE, PROVIDER_PRESENTATION = 1, 2, 3


@dataclass(frozen=True)
class Rejection:
    result: int
    source: int
    reason: int
    message: str


def no_reason(message: str) -> Rejection:
    return Rejection(PERMANENT, SERVICE_USER, 1, message)


def application_context_not_supported(name: str) -> Rejection:
    return Rejection(PERMANENT, SERVICE_USER, 2, f"application context {name!r} not supported")


def calling_ae_not_recognized(calling_ae: str) -> Rejection:
    return Rejection(
        PERMANENT, SERVICE_USER, 3, f"calling AE {calling_ae!r} is not in allowed_calling_aes"
    )


def called_ae_not_recognized(called_ae: str, ours: str) -> Rejection:
    return Rejection(
        PERMANENT, SERVICE_USER, 7, f"called AE {called_ae!r} is not this node ({ours!r})"
    )


def protocol_version_not_supported(version: int) -> Rejection:
    return Rejection(PERMANENT, PROVIDER_ACSE, 2, f"protocol version {version} not supported")


def temporary_congestion(message: str) -> Rejection:
    return Rejection(TRANSIENT, PROVIDER_PRESENTATION, 1, message)


def local_limit_exceeded(message: str) -> Rejection:
    return Rejection(TRANSIENT, PROVIDER_PRESENTATION, 2, message)


def check_peer(
    calling_ae: str, called_ae: str, our_ae: str, dicom: DicomConfig
) -> Rejection | None:
    """The static part of the decision: AE titles against the configuration."""
    if dicom.check_called_ae and called_ae.strip() != our_ae:
        return called_ae_not_recognized(called_ae.strip(), our_ae)
    allowed = dicom.allowed_calling_aes
    if allowed and calling_ae.strip() not in allowed:
        return calling_ae_not_recognized(calling_ae.strip())
    return None
