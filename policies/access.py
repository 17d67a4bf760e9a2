"""Who may associate: called-AE check, calling-AE allowlist, source network, TLS name.

Decisions return the A-ASSOCIATE-RJ that PS3.8 9.3.4 prescribes (result, source,
reason/diagnostic) or None to accept, never a bare bool, so the reason a modality
sees is the one the audit log records.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from policies.config import Config

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


def protocol_error(message: str) -> Rejection:
    """A request the ACSE cannot answer as sent (PS3.8 Table 9-21: source 2, reason 1)."""
    return Rejection(PERMANENT, PROVIDER_ACSE, 1, message)


def temporary_congestion(message: str) -> Rejection:
    return Rejection(TRANSIENT, PROVIDER_PRESENTATION, 1, message)


def local_limit_exceeded(message: str) -> Rejection:
    return Rejection(TRANSIENT, PROVIDER_PRESENTATION, 2, message)


def calling_ae_refused(calling_ae: str, why: str) -> Rejection:
    """A known AE where it may not be: wrong network, no or wrong TLS certificate."""
    return Rejection(PERMANENT, SERVICE_USER, 3, f"calling AE {calling_ae!r} {why}")


@dataclass(frozen=True)
class Peer:
    """Who is asking, as far as the transport can tell."""

    address: IPv4Address | IPv6Address | None  # the real client (PROXY header resolved)
    tls_names: frozenset[str] | None  # certificate CN/DNS names; None: not over TLS


def check_peer(calling_ae: str, called_ae: str, peer: Peer, config: Config) -> Rejection | None:
    """The static part of the decision: AE titles, source network and certificate
    against the configuration (the association limits are the hub's)."""
    calling_ae, called_ae = calling_ae.strip(), called_ae.strip()
    our_ae = config.node.ae_title
    if config.dicom.check_called_ae and called_ae != our_ae:
        return called_ae_not_recognized(called_ae, our_ae)
    entry = config.calling_ae_entry(calling_ae)
    allowed = config.dicom.allowed_calling_aes
    if entry is None:
        if allowed and calling_ae not in allowed:
            return calling_ae_not_recognized(calling_ae)
        if config.calling_ae and not allowed:
            return calling_ae_refused(calling_ae, "has no [[calling_ae]] entry")
        return None
    if entry.networks and (
        peer.address is None or not any(peer.address in net for net in entry.networks)
    ):
        nets = ", ".join(str(net) for net in entry.networks)
        return calling_ae_refused(calling_ae, f"may not connect from {peer.address} ({nets})")
    if entry.tls_names:
        if peer.tls_names is None:
            return calling_ae_refused(calling_ae, "must use DICOM TLS with a client certificate")
        if not peer.tls_names & set(entry.tls_names):
            names = ", ".join(sorted(peer.tls_names)) or "none"
            return calling_ae_refused(calling_ae, f"presented certificate names {names}")
    return None


def trusted_proxy(address: IPv4Address | IPv6Address | None, config: Config) -> bool:
    """May this address name another client in a PROXY header (dicom.trusted_proxies)?"""
    return address is not None and any(address in net for net in config.dicom.trusted_proxies)


def certificate_names(peercert: dict[str, Any] | None) -> frozenset[str]:
    """Common names and DNS subject-alternative names of a verified certificate."""
    if not peercert:
        return frozenset()
    names = {
        value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"
    }
    names.update(value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS")
    return frozenset(names)
