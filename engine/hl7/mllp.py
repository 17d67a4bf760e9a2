"""MLLP (HL7's Minimal Lower Layer Protocol): messages framed as <VT> message <FS><CR>,
each answered with an ACK in the same framing, in order, on the connection it came.

An asyncio protocol per connection; each message is applied in a thread
(engine.hl7.adt writes LMDB) before the next one is read from the buffer, so a HIS
that pipelines messages gets its ACKs in order. A frame over 1 MiB, or bytes outside
a frame, close the connection: that is not an HL7 sender. So does a message the
handler fails on unexpectedly (logged with its traceback), so the HIS resends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

log = logging.getLogger(__name__)
START, END = b"\x0b", b"\x1c\x0d"
MAX_MESSAGE = 1 << 20

Handler = Callable[[str, str], Awaitable[str]]  # (message, peer) -> ACK text


class MllpConnection(asyncio.Protocol):
    def __init__(self, handle: Handler, track: Callable[[asyncio.Task[None]], None]) -> None:
        self._handle = handle
        self._track = track
        self._buffer = bytearray()
        self._messages: asyncio.Queue[bytes] = asyncio.Queue()
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP server's: uvloop's class
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self._worker = asyncio.get_running_loop().create_task(self._answer())
        self._track(self._worker)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            start = self._buffer.find(START)
            if start > 0 and self._buffer[:start].strip():
                self._close("bytes outside an MLLP frame")
                return
            end = self._buffer.find(END, max(start, 0))
            if start < 0 or end < 0:
                if len(self._buffer) > MAX_MESSAGE:
                    self._close(f"a message over {MAX_MESSAGE} bytes")
                return
            self._messages.put_nowait(bytes(self._buffer[start + 1 : end]))
            del self._buffer[: end + len(END)]

    async def _answer(self) -> None:
        while True:
            raw = await self._messages.get()
            text = raw.decode("utf-8", errors="replace")
            try:
                answer = await self._handle(text, self._peer)
            except Exception:  # a bug of ours: say so, and close rather than leave the
                # HIS waiting for an ACK that never comes; it reconnects and resends.
                log.exception("HL7 message from %s not answered", self._peer)
                self._close("the message could not be handled")
                return
            if self._transport is None or self._transport.is_closing():
                return
            self._transport.write(START + answer.encode("utf-8") + END)

    def _close(self, why: str) -> None:
        log.warning("HL7 connection from %s closed: %s", self._peer, why)
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._worker is not None and self._messages.empty():
            self._worker.cancel()
