"""An asyncio DICOM association requestor: the forwarder's C-STORE SCU.

Every byte of every forwarded object goes through here, so it is built like the
SCP side: pynetdicom encodes and decodes the A-ASSOCIATE PDUs (once per
association), Rust frames P-DATA and decodes responses with the same sans-IO
decoder the SCP uses, and a stored object is read from disk in windows of about
1 MiB, so memory per association stays flat whatever the object's size.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

import core_rs
from engine.dicom.negotiation import APPLICATION_CONTEXT, encode_abort, our_user_information

log = logging.getLogger(__name__)

_A_ASSOCIATE_AC, _A_ASSOCIATE_RJ, _A_RELEASE_RP, _A_ABORT = 0x02, 0x03, 0x06, 0x07
_RELEASE_RQ = bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])
_WINDOW = 1 << 20  # bytes of dataset read and framed at a time
_ACCEPTED = 0
# C-STORE priority (0000,0700): the queue's high/normal/low as DICOM's HIGH/MEDIUM/LOW.
_DIMSE_PRIORITY = {0: 0x0001, 1: 0x0000, 2: 0x0002}

Throttle = Callable[[int], Awaitable[None]]


class PeerUnavailable(Exception):
    """No usable association: refused, unreachable, timed out, aborted. Transient:
    the destination as a whole backs off, the objects wait in their queue."""


# PS3.8 9.3.4, A-ASSOCIATE-RJ (source, reason): what it means, what to do about it.
_REJECT_REASONS = {
    (1, 2): "application context not supported",
    (1, 3): "calling AE title not recognized: check calling_ae against the peer's list",
    (1, 7): "called AE title not recognized: check called_ae",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion at the peer",
    (3, 2): "the peer's association limit is reached (local limit exceeded)",
}


class AssociationRejected(PeerUnavailable):
    def __init__(self, result: int, source: int, reason: int) -> None:
        kind = "permanently" if result == 1 else "transiently"
        meaning = _REJECT_REASONS.get((source, reason), "no reason given")
        super().__init__(
            f"association rejected {kind} (source {source}, reason {reason}): {meaning}"
        )


@dataclass(frozen=True)
class Payload:
    """A dataset to send: a region of a stored file, or bytes made for this send."""

    path: Path | None = None
    offset: int = 0
    length: int = 0
    data: bytes | None = None

    def windows(self) -> Iterable[tuple[bytes, bool]]:
        if self.data is not None:
            yield self.data, True
            return
        assert self.path is not None
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            left = self.length
            while True:
                # Objects just received are in the page cache: a read is a memcpy.
                chunk = handle.read(min(_WINDOW, left))
                left -= len(chunk)
                if left > 0 and not chunk:
                    raise OSError(f"{self.path} is {left} bytes shorter than indexed")
                yield chunk, left <= 0
                if left <= 0:
                    return


@dataclass(frozen=True)
class StoreResponse:
    status: int
    comment: str


class Requestor:
    """One established association. Not reentrant: one C-STORE at a time."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        receiver: core_rs.Receiver,
        accepted: dict[tuple[str, str], int],
        peer_max_pdu: int,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._receiver = receiver
        # Events read past the response awaited (several answers can share a read).
        self._unread: deque[core_rs.ControlPdu | core_rs.Command | core_rs.DatasetReceived] = (
            deque()
        )
        self.accepted = accepted  # (abstract syntax, transfer syntax) -> context ID
        self._peer_max_pdu = peer_max_pdu
        self._timeout = timeout
        self._message_ids = itertools.count(1)
        self.broken = False

    @property
    def usable(self) -> bool:
        """Not broken, and the peer has not closed it while it sat idle."""
        return not (self.broken or self._reader.at_eof() or self._writer.is_closing())

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        calling_ae: str,
        called_ae: str,
        contexts: list[tuple[str, str]],
        max_pdu: int,
        connect_timeout: float,
        response_timeout: float,
    ) -> Requestor:
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise PeerUnavailable(f"cannot connect to {host}:{port}: {exc!r}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Room for a few windows: the socket keeps sending while the next is read.
        writer.transport.set_write_buffer_limits(high=_WINDOW * 4, low=_WINDOW)
        receiver = core_rs.Receiver("/nonexistent-no-datasets-expected", "scu", max_pdu)
        writer.write(_encode_request(calling_ae, called_ae, contexts, max_pdu))
        try:
            async with asyncio.timeout(response_timeout):
                pdu = await _next_control(reader, receiver)
        except (OSError, TimeoutError, core_rs.CoreError) as exc:
            writer.close()
            raise PeerUnavailable(f"no A-ASSOCIATE answer from {host}:{port}: {exc!r}") from exc
        if pdu.pdu_type == _A_ASSOCIATE_RJ:
            writer.close()
            rj = A_ASSOCIATE_RJ()
            rj.decode(pdu.data)
            raise AssociationRejected(rj.result or 0, rj.source or 0, rj.reason_diagnostic or 0)
        if pdu.pdu_type != _A_ASSOCIATE_AC:
            writer.close()
            raise PeerUnavailable(f"{host}:{port} answered A-ASSOCIATE-RQ with PDU {pdu.pdu_type}")
        accepted, peer_max = _parse_accept(pdu.data, contexts)
        receiver.establish(called_ae, [(cid, ab, ts) for (ab, ts), cid in accepted.items()])
        return cls(reader, writer, receiver, accepted, peer_max, response_timeout)

    async def store(
        self,
        context_id: int,
        sop_class_uid: str,
        sop_instance_uid: str,
        payload: Payload,
        priority: int,
        throttle: Throttle | None,
        before_last: Awaitable[None] | None = None,
        move_originator: tuple[str, int] | None = None,
    ) -> StoreResponse:
        """`before_last` is awaited before the PDU that completes the object goes:
        once it has, the destination may store it, so whatever must be settled
        before that (the previous object's record) overlaps with the rest.
        `move_originator`: (AE title, message ID) of the C-MOVE this sub-operation serves."""
        message_id = next(self._message_ids) & 0xFFFF
        originator_ae, originator_id = move_originator or ("", 0)
        command = core_rs.encode_store_request(
            message_id,
            sop_class_uid,
            sop_instance_uid,
            _DIMSE_PRIORITY.get(priority, 0),
            originator_ae,
            originator_id,
        )
        try:
            async with asyncio.timeout(self._timeout):
                self._writer.write(
                    core_rs.encode_message(context_id, True, command, self._peer_max_pdu)
                )
                for window, last in payload.windows():
                    if throttle is not None:
                        await throttle(len(window))
                    pdus = frames(context_id, window, self._peer_max_pdu, last)
                    if last and before_last is not None:
                        self._writer.writelines(pdus[:-2])  # all but the final PDU
                        await before_last
                        pdus = pdus[-2:]
                    self._writer.writelines(pdus)
                    await self._writer.drain()
                response = await self._response(message_id)
        except (OSError, TimeoutError, core_rs.CoreError) as exc:
            self.broken = True
            raise PeerUnavailable(f"C-STORE of {sop_instance_uid} failed: {exc!r}") from exc
        return StoreResponse(response.status or 0, response.error_comment)

    async def exchange(self, context_id: int, command: bytes, dataset: bytes) -> list[int]:
        """Send a request (command set and dataset, one write) and read its responses
        until the final one; their statuses. For requests that answer with pending
        responses (C-FIND), whose identifiers are read and dropped."""
        (message_id,) = struct.unpack_from("<H", command, _message_id_offset(command))
        self._writer.write(
            core_rs.encode_message(context_id, True, command, self._peer_max_pdu)
            + core_rs.encode_message(context_id, False, dataset, self._peer_max_pdu)
        )
        statuses = []
        async with asyncio.timeout(self._timeout):
            while True:
                response = await self._response(message_id)
                statuses.append(response.status or 0)
                if response.status not in (0xFF00, 0xFF01):
                    return statuses

    async def _response(self, message_id: int) -> core_rs.Command:
        while True:
            while self._unread:
                event = self._unread.popleft()
                if isinstance(event, core_rs.Command):
                    if event.message_id_being_responded_to == message_id:
                        return event
                    log.debug("ignoring unexpected %r", event)
                elif isinstance(event, core_rs.ControlPdu):
                    what = "A-ABORT" if event.pdu_type == _A_ABORT else f"PDU {event.pdu_type}"
                    raise ConnectionError(f"destination sent {what} during a request")
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("destination closed the connection")
            self._unread.extend(self._receiver.feed(data))

    async def release(self) -> None:
        """A-RELEASE, waiting (briefly) for the answer; aborts if none comes."""
        if self.broken:
            self.abort()
            return
        try:
            async with asyncio.timeout(min(self._timeout, 10)):
                self._writer.write(_RELEASE_RQ)
                pdu = await _next_control(self._reader, self._receiver)
            if pdu.pdu_type != _A_RELEASE_RP:
                log.debug("release answered with PDU %d", pdu.pdu_type)
        except (OSError, TimeoutError, core_rs.CoreError) as exc:
            log.debug("release failed: %r", exc)
        self._writer.close()

    def abort(self) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode_abort(None))
            self._writer.close()


def _message_id_offset(command: bytes) -> int:
    """Where (0000,0110) Message ID's value is in an implicit VR LE command set."""
    at = 0
    while at + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, at)
        if (group, element) == (0x0000, 0x0110):
            return at + 8
        at += 8 + length
    raise ValueError("command set without a Message ID")


def frames(context_id: int, window: bytes, max_pdu: int, last: bool) -> list[bytes | memoryview]:
    """P-DATA-TF PDUs around a dataset window, zero-copy: each PDU is a 12-byte
    header (PS3.8 9.3.5) and a slice of the bytes read from disk, handed to the
    transport as they are (measured: framing into a new buffer, in Rust, cost
    more than the rest of the send path together)."""
    per_pdu = max(1, max_pdu - 6) if max_pdu else max(1, len(window))
    view = memoryview(window)
    parts: list[bytes | memoryview] = []
    for start in range(0, max(len(window), 1), per_pdu):
        piece = view[start : start + per_pdu]
        final = last and start + per_pdu >= len(window)
        header = 0x02 if final else 0x00  # bit 0: command (never here), bit 1: last
        parts.append(_PDV_HEADER.pack(0x04, 0, len(piece) + 6, len(piece) + 2, context_id, header))
        parts.append(piece)
    return parts


_PDV_HEADER = struct.Struct(">BBIIBB")  # PDU type, reserved, PDU length, PDV length, PC, flags


async def _next_control(
    reader: asyncio.StreamReader, receiver: core_rs.Receiver
) -> core_rs.ControlPdu:
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("connection closed by the destination")
        for event in receiver.feed(data):
            if isinstance(event, core_rs.ControlPdu):
                return event


def _encode_request(
    calling_ae: str, called_ae: str, contexts: list[tuple[str, str]], max_pdu: int
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = calling_ae
    primitive.called_ae_title = called_ae
    proposed = []
    for n, (abstract, transfer) in enumerate(contexts):
        cx = PresentationContext()
        cx.context_id = 2 * n + 1
        cx.abstract_syntax = abstract
        cx.transfer_syntax = [transfer]
        proposed.append(cx)
    primitive.presentation_context_definition_list = proposed
    primitive.user_information = our_user_information(max_pdu)
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _parse_accept(
    data: bytes, contexts: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], int], int]:
    pdu = A_ASSOCIATE_AC()
    pdu.decode(data)
    primitive = pdu.to_primitive()
    accepted: dict[tuple[str, str], int] = {}
    for result in primitive.presentation_context_definition_results_list:
        cid = result.context_id
        if result.result != _ACCEPTED or cid is None or not 1 <= cid <= 2 * len(contexts):
            continue
        accepted[contexts[(cid - 1) // 2]] = cid
    peer_max = 0
    for item in primitive.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max = item.maximum_length_received or 0
    return accepted, peer_max
