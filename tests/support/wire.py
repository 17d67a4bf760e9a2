"""A raw DICOM upper-layer client for protocol tests, written independently of
core_rs: PDUs packed with struct, command sets encoded by pydicom, association
requests by pynetdicom's PDU classes. It can send what no real SCU would."""

from __future__ import annotations

import io
import socket
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"

A_RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"  # PS3.8 9.3.6


def associate_rq(
    calling: str, called: str, contexts: list[tuple[int, str, list[str]]], max_pdu: int = 16384
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    items = []
    for context_id, abstract, syntaxes in contexts:
        cx = PresentationContext()
        cx.context_id = context_id
        cx.abstract_syntax = abstract
        cx.transfer_syntax = syntaxes
        items.append(cx)
    primitive.presentation_context_definition_list = items
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def pdata(context_id: int, data: bytes, command: bool, last: bool = True) -> bytes:
    flags = (1 if command else 0) | (2 if last else 0)
    return struct.pack(">BBIIBB", 4, 0, len(data) + 6, len(data) + 2, context_id, flags) + data


_COMMAND_TAGS = {
    "AffectedSOPClassUID": 0x0002,
    "CommandField": 0x0100,
    "MessageID": 0x0110,
    "MessageIDBeingRespondedTo": 0x0120,
    "Priority": 0x0700,
    "CommandDataSetType": 0x0800,
    "AffectedSOPInstanceUID": 0x1000,
}


def command_set(**elements: object) -> bytes:
    """A command set (PS3.7 E.1): implicit VR little endian, group length first.
    Integers are US, strings UI; that covers every request the tests send."""
    body = b""
    for keyword, value in sorted(elements.items(), key=lambda kv: _COMMAND_TAGS[kv[0]]):
        if isinstance(value, int):
            raw = struct.pack("<H", value)
        else:
            raw = str(value).encode()
            raw += b"\0" * (len(raw) % 2)
        body += struct.pack("<HHI", 0, _COMMAND_TAGS[keyword], len(raw)) + raw
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    return command_set(
        AffectedSOPClassUID=VERIFICATION,
        CommandField=0x0030,
        MessageID=message_id,
        CommandDataSetType=0x0101,
    )


def c_store_rq(sop_instance: str, message_id: int = 1, sop_class: str = CT_IMAGE) -> bytes:
    return command_set(
        AffectedSOPClassUID=sop_class,
        CommandField=0x0001,
        MessageID=message_id,
        Priority=0,
        CommandDataSetType=0x0001,
        AffectedSOPInstanceUID=sop_instance,
    )


@dataclass
class Pdu:
    type: int
    body: bytes

    @property
    def abort_reason(self) -> tuple[int, int]:
        """(source, reason) of an A-ABORT."""
        assert self.type == 7, f"expected A-ABORT, got PDU type {self.type}"
        return self.body[2], self.body[3]

    @property
    def reject(self) -> tuple[int, int, int]:
        """(result, source, reason) of an A-ASSOCIATE-RJ."""
        assert self.type == 3, f"expected A-ASSOCIATE-RJ, got PDU type {self.type}"
        return self.body[1], self.body[2], self.body[3]

    def command(self) -> Dataset:
        """The command set of a P-DATA-TF carrying one complete command PDV."""
        assert self.type == 4, f"expected P-DATA-TF, got PDU type {self.type}"
        (length,) = struct.unpack(">I", self.body[:4])
        data = self.body[6 : 4 + length]
        return read_dataset(io.BytesIO(data), is_implicit_VR=True, is_little_endian=True)


class Client:
    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            got = self.sock.recv(n - len(chunks))
            if not got:
                raise ConnectionError(f"peer closed after {len(chunks)} of {n} bytes")
            chunks += got
        return bytes(chunks)

    def read_pdu(self) -> Pdu:
        pdu_type, _, length = struct.unpack(">BBI", self._exact(6))
        return Pdu(pdu_type, self._exact(length))

    def associate(
        self,
        calling: str = "TESTSCU",
        called: str = "PACS_EDGE",
        contexts: list[tuple[int, str, list[str]]] | None = None,
    ) -> Pdu:
        contexts = contexts or [(1, VERIFICATION, [IMPLICIT_LE]), (3, CT_IMAGE, [EXPLICIT_LE])]
        self.send(associate_rq(calling, called, contexts))
        return self.read_pdu()

    def echo(self, message_id: int = 1) -> int:
        self.send(pdata(1, c_echo_rq(message_id), command=True))
        return int(self.read_pdu().command().Status)

    def closed_by_peer(self) -> bool:
        """True if the server closes the connection (bounded by the socket timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
