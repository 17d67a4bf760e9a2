"""The DICOM TLS port: a balancer's PROXY header is read in clear, then TLS.

A load balancer in TCP mode writes its PROXY header before the modality's TLS
ClientHello. asyncio's TLS server would feed that header to the handshake, and
`start_tls` cannot take bytes already read, so this listener accepts sockets
itself: it peeks at the first bytes, consumes exactly the header (from
`dicom.trusted_proxies` only; from anyone else a header closes the connection),
and hands the socket to asyncio with TLS. The association then knows the real
client, as on the plain port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from engine.dicom.association import Acceptor, Association, Resolved
from engine.dicom.proxy_protocol import (
    ClientAddress,
    ProxyHeaderError,
    ProxyHeaderParser,
    looks_like_header,
)
from policies import access

log = logging.getLogger(__name__)
_PEEK = 16 + 4096  # the longest PROXY header we accept
_RETRY = 0.01  # seconds between peeks while a header is incomplete


async def serve(
    acceptor: Acceptor, context: ssl.SSLContext, host: str, port: int, reuse_port: bool
) -> Callable[[], Awaitable[None]]:
    """Listen on `port`; returns the closer. Raises OSError if the port is taken."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server((host, port), backlog=256, reuse_port=reuse_port)
    listener.setblocking(False)
    handshakes: set[asyncio.Task[None]] = set()

    async def accept() -> None:
        while True:
            conn, address = await loop.sock_accept(listener)
            task = loop.create_task(_connect(acceptor, context, conn, address[0]))
            handshakes.add(task)
            task.add_done_callback(handshakes.discard)

    accepting = loop.create_task(accept())

    async def close() -> None:
        accepting.cancel()
        for task in list(handshakes):
            task.cancel()
        await asyncio.gather(accepting, *handshakes, return_exceptions=True)
        listener.close()

    return close


async def _connect(
    acceptor: Acceptor, context: ssl.SSLContext, conn: socket.socket, host: str
) -> None:
    loop = asyncio.get_running_loop()
    shared = acceptor.shared
    config = shared.config.dicom
    conn.setblocking(False)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = f"{host}:{conn.getpeername()[1]}"
    trusted = access.trusted_proxy(ipaddress.ip_address(host), shared.config)
    try:
        async with asyncio.timeout(config.artim_timeout):
            client = await _take_proxy_header(conn, trusted)
    except (ProxyHeaderError, TimeoutError, OSError) as exc:
        if isinstance(exc, ProxyHeaderError) and not trusted:
            shared.audit.write("proxy_header_refused", peer=peer)
        log.warning("DICOM TLS connection from %s closed before the handshake: %s", peer, exc)
        conn.close()
        return
    resolved = Resolved(client, via=peer) if trusted else None
    try:
        await loop.connect_accepted_socket(
            lambda: Association(acceptor, resolved),
            conn,
            ssl=context,
            ssl_handshake_timeout=config.artim_timeout,
        )
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        # A client without a valid certificate ends here (and learns it from TLS).
        log.warning("DICOM TLS handshake with %s failed: %s", resolved or peer, exc)
        with contextlib.suppress(OSError):
            conn.close()


async def _take_proxy_header(conn: socket.socket, trusted: bool) -> ClientAddress | None:
    """Consume exactly the PROXY header, if one is due; leave the TLS bytes unread."""
    while True:
        await _readable(conn)
        data = conn.recv(_PEEK, socket.MSG_PEEK)
        if not data:
            raise ConnectionError("closed by the peer")
        if not trusted:
            if looks_like_header(data[:12]):
                raise ProxyHeaderError("PROXY header from an address not in dicom.trusted_proxies")
            return None
        parser = ProxyHeaderParser()
        rest = parser.feed(data)
        if rest is not None:
            conn.recv(len(data) - len(rest))  # peeked, so all there
            return parser.client
        await asyncio.sleep(_RETRY)  # the rest of the header is on its way


async def _readable(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
