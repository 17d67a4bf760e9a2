"""PROXY v1/v2 header decoding (sans-IO), and who may associate from where."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.dicom.proxy_protocol import (
    V2_SIGNATURE,
    ClientAddress,
    ProxyHeaderError,
    ProxyHeaderParser,
    looks_like_header,
)
from policies import access
from policies.config import Config, ConfigError, load_config

DICOM = b"\x01\x00\x00\x00\x00\x44rest-of-an-A-ASSOCIATE-RQ"


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack(">BBH", 0x20 | command, family, len(body)) + body


def tcp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack(">HH", sport, dport)
    )


def feed_in_pieces(data: bytes, size: int) -> tuple[ProxyHeaderParser, bytes]:
    parser = ProxyHeaderParser()
    for start in range(0, len(data), size):
        rest = parser.feed(data[start : start + size])
        if rest is not None:
            return parser, rest + data[start + size :]
    raise AssertionError("header never completed")


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_v1_tcp4_names_the_client_and_keeps_the_dicom_bytes(piece: int) -> None:
    header = b"PROXY TCP4 10.1.20.7 10.0.0.5 40112 11112\r\n"
    parser, rest = feed_in_pieces(header + DICOM, piece)
    assert parser.client == ClientAddress("10.1.20.7", 40112)
    assert rest == DICOM


def test_v1_tcp6_and_unknown() -> None:
    parser, rest = feed_in_pieces(b"PROXY TCP6 2001:db8::7 2001:db8::1 5000 104\r\n" + DICOM, 9)
    assert parser.client == ClientAddress("2001:db8::7", 5000)
    parser, rest = feed_in_pieces(b"PROXY UNKNOWN\r\n" + DICOM, 5)
    assert parser.client is None
    assert rest == DICOM


@pytest.mark.parametrize("piece", [1, 13, 4096])
def test_v2_proxy_tcp4(piece: int) -> None:
    header = v2(0x1, 0x11, tcp4("10.1.20.7", "10.0.0.5", 40112, 11112) + b"\x04\x00\x01x")
    parser, rest = feed_in_pieces(header + DICOM, piece)
    assert parser.client == ClientAddress("10.1.20.7", 40112)
    assert rest == DICOM


def test_v2_tcp6_and_local() -> None:
    body = (
        ipaddress.IPv6Address("2001:db8::7").packed
        + ipaddress.IPv6Address("2001:db8::1").packed
        + struct.pack(">HH", 6000, 104)
    )
    parser, _ = feed_in_pieces(v2(0x1, 0x21, body) + DICOM, 10)
    assert parser.client == ClientAddress("2001:db8::7", 6000)
    parser, rest = feed_in_pieces(v2(0x0, 0x00, b"") + DICOM, 10)  # the balancer's own check
    assert parser.client is None
    assert rest == DICOM


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (DICOM, "does not start"),
        (b"PROXY TCP4 10.1.20.7 10.0.0.5 40112\r\n", "malformed PROXY v1 header"),
        (b"PROXY TCP4 2001:db8::1 10.0.0.5 1 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP4 10.1.20.7 10.0.0.5 99999 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY " + b"X" * 200, "longer than 107"),
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "too long"),
        (v2(0x1, 0x11, bytes(4)), "address family 1 with 4 bytes"),
        (v2(0x3, 0x11, bytes(12)), "command 3"),
    ],
)
def test_malformed_headers_are_errors(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        ProxyHeaderParser().feed(data)


def test_a_dicom_stream_does_not_look_like_a_header() -> None:
    assert not looks_like_header(DICOM[:12])
    assert looks_like_header(b"PROXY TCP4 1")
    assert looks_like_header(V2_SIGNATURE)
    assert looks_like_header(b"\r\n\r")  # a prefix is enough to refuse early


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_fuzz_any_bytes_end_in_a_header_an_error_or_need_more(data: bytes, piece: int) -> None:
    """No input may raise anything but ProxyHeaderError or buffer without bound."""
    parser = ProxyHeaderParser()
    for start in range(0, len(data), piece):
        try:
            rest = parser.feed(data[start : start + piece])
        except ProxyHeaderError:
            return
        if rest is not None:
            return
    assert len(data) < 16 + 4096


@settings(max_examples=500, deadline=None)
@given(st.ip_addresses(v=4), st.integers(0, 65535), st.binary(max_size=40))
def test_fuzz_v2_round_trip(address: ipaddress.IPv4Address, port: int, tlvs: bytes) -> None:
    body = address.packed + bytes(4) + struct.pack(">HH", port, 104) + tlvs
    parser, rest = feed_in_pieces(v2(0x1, 0x11, body) + DICOM, 11)
    assert parser.client == ClientAddress(str(address), port)
    assert rest == DICOM


def _config(tmp_path: Path, toml: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    return load_config(path)


def test_calling_ae_rules(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        """
[[calling_ae]]
ae_title = "CT1"
networks = ["10.1.20.0/24"]
max_associations = 2

[[calling_ae]]
ae_title = "MG1"
tls_names = ["mg1.site1.example"]
""",
    )
    here = access.Peer(ipaddress.ip_address("10.1.20.7"), None)
    elsewhere = access.Peer(ipaddress.ip_address("10.9.9.9"), None)
    tls = access.Peer(ipaddress.ip_address("10.9.9.9"), frozenset({"mg1.site1.example"}))
    wrong_cert = access.Peer(ipaddress.ip_address("10.9.9.9"), frozenset({"ct9.example"}))

    def decide(ae: str, peer: access.Peer) -> access.Rejection | None:
        return access.check_peer(ae, "PACS_EDGE", peer, config)

    assert decide("CT1", here) is None
    refused = decide("CT1", elsewhere)
    assert refused is not None
    assert (refused.result, refused.source, refused.reason) == (1, 1, 3)
    assert "10.9.9.9" in refused.message
    assert "10.1.20.0/24" in refused.message
    assert decide("MG1", tls) is None
    no_tls = decide("MG1", here)
    assert no_tls is not None
    assert "must use DICOM TLS" in no_tls.message
    wrong = decide("MG1", wrong_cert)
    assert wrong is not None
    assert "ct9.example" in wrong.message
    stranger = decide("XR9", here)  # entries exist: AEs named nowhere are refused
    assert stranger is not None
    assert stranger.reason == 3
    called = access.check_peer("CT1", "OTHER", here, config)
    assert called is not None
    assert called.reason == 7


def test_certificate_names_from_a_peer_certificate() -> None:
    peercert = {
        "subject": ((("countryName", "NO"),), (("commonName", "ct1.site1.example"),)),
        "subjectAltName": (("DNS", "ct1"), ("IP Address", "10.1.20.7")),
    }
    assert access.certificate_names(peercert) == frozenset({"ct1.site1.example", "ct1"})
    assert access.certificate_names(None) == frozenset()


def test_config_errors_name_the_network_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"calling_ae\.0\.networks\.0"):
        _config(tmp_path, '[[calling_ae]]\nae_title = "CT1"\nnetworks = ["10.1.20.300/24"]\n')
    with pytest.raises(ConfigError, match=r"dicom\.tls.*certificate, private_key not set"):
        _config(tmp_path, "[dicom.tls]\nenabled = true\n")
