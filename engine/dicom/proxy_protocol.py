"""PROXY protocol v1 and v2 headers (HAProxy's spec), decoded sans-IO.

A load balancer in TCP mode hides the modality's address; with `send-proxy` or
`send-proxy-v2` it writes one header before the first DICOM byte naming the real
client. `ProxyHeaderParser.feed(bytes)` returns None until the header is complete,
then the bytes that followed it (the start of the DICOM stream). Whether to expect a
header at all is the caller's decision: only from `dicom.trusted_proxies`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
_V1_MAX = 107  # the spec's bound, CRLF included
_V2_MAX = 16 + 4096  # addresses plus TLVs; HAProxy's TLVs are far below this
_LOCAL, _PROXY = 0x0, 0x1
_INET, _INET6, _UNSPEC = 0x1, 0x2, 0x0


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header we can use."""


@dataclass(frozen=True)
class ClientAddress:
    host: str
    port: int


def looks_like_header(first: bytes) -> bool:
    """Do the first bytes of a connection start a PROXY header (of any version)?"""
    n = min(len(first), 12)
    return n > 0 and (first[:n] == V2_SIGNATURE[:n] or first[: min(n, 6)] == V1_PREFIX[:n])


class ProxyHeaderParser:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self.client: ClientAddress | None = None  # None: LOCAL/UNKNOWN (the proxy itself)

    def feed(self, data: bytes | memoryview) -> bytes | None:
        self._buffer += data
        head = bytes(self._buffer[:12])
        if not looks_like_header(head):
            raise ProxyHeaderError("the connection does not start with a PROXY header")
        if len(head) < 12:
            return None
        if head == V2_SIGNATURE:
            return self._v2()
        return self._v1()

    def _v1(self) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) >= _V1_MAX:
                raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
            return None
        line = self._buffer[:end].decode("ascii", "replace").split(" ")
        rest = bytes(self._buffer[end + 2 :])
        if len(line) >= 2 and line[1] == "UNKNOWN":
            return rest
        if len(line) != 6 or line[1] not in ("TCP4", "TCP6"):
            raise ProxyHeaderError(f"malformed PROXY v1 header {' '.join(line)[:107]!r}")
        try:
            address = ipaddress.ip_address(line[2])
            port = int(line[4])
        except ValueError as exc:
            raise ProxyHeaderError(f"malformed PROXY v1 address: {exc}") from None
        if address.version != (4 if line[1] == "TCP4" else 6) or not 0 <= port <= 65535:
            raise ProxyHeaderError(f"malformed PROXY v1 address {line[2]}:{line[4]}")
        self.client = ClientAddress(str(address), port)
        return rest

    def _v2(self) -> bytes | None:
        if len(self._buffer) < 16:
            return None
        version_command, family_protocol, length = struct.unpack_from(">BBH", self._buffer, 12)
        if version_command >> 4 != 2:
            raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
        if 16 + length > _V2_MAX:
            raise ProxyHeaderError(f"PROXY v2 header of {16 + length} bytes is too long")
        if len(self._buffer) < 16 + length:
            return None
        body = bytes(self._buffer[16 : 16 + length])
        rest = bytes(self._buffer[16 + length :])
        command, family = version_command & 0x0F, family_protocol >> 4
        if command == _LOCAL or family == _UNSPEC:
            return rest  # the proxy's own connection (a health check): no client
        if command != _PROXY:
            raise ProxyHeaderError(f"PROXY v2 command {command} is not LOCAL or PROXY")
        if family == _INET and length >= 12:
            host = str(ipaddress.IPv4Address(body[:4]))
            (port,) = struct.unpack_from(">H", body, 8)
        elif family == _INET6 and length >= 36:
            host = str(ipaddress.IPv6Address(body[:16]))
            (port,) = struct.unpack_from(">H", body, 32)
        else:
            raise ProxyHeaderError(f"PROXY v2 address family {family} with {length} bytes")
        self.client = ClientAddress(host, port)
        return rest
