"""Bad input gets the answer PS3.8 prescribes, and nothing else breaks: an
association that was open before keeps working, and no spool is left behind."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.process import EngineProcess, wait_until
from tests.support.wire import (
    A_RELEASE_RQ,
    CT_IMAGE,
    EXPLICIT_LE,
    Client,
    associate_rq,
    c_store_rq,
    command_set,
    pdata,
)

PROVIDER = 2
NOT_SPECIFIED, UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0, 1, 2, 6
MAX_PDU = 16384


@pytest.fixture
def node(engine_factory: Callable[..., EngineProcess]) -> EngineProcess:
    return engine_factory(
        {
            "dicom": {
                "max_pdu": MAX_PDU,
                "max_associations": 4,
                "artim_timeout": 2.0,
                "allowed_calling_aes": ["TESTSCU", "BYSTANDER"],
            }
        }
    )


@pytest.fixture
def bystander(node: EngineProcess) -> Iterator[Client]:
    client = Client(node.port)
    assert client.associate(calling="BYSTANDER").type == 2
    yield client
    # The engine still serves the association that was open before the bad input...
    assert client.echo(message_id=99) == 0x0000
    client.close()
    # ...and new ones, and nothing was left half-written.
    fresh = Client(node.port)
    assert fresh.associate().type == 2
    assert fresh.echo() == 0x0000
    fresh.close()
    assert not list((node.data_dir / "spool").iterdir())


def established(node: EngineProcess) -> Client:
    client = Client(node.port)
    assert client.associate().type == 2
    return client


def expect_abort(client: Client, reason: int) -> None:
    pdu = client.read_pdu()
    assert pdu.abort_reason == (PROVIDER, reason)
    client.close()


def test_unknown_pdu_type_before_association(node: EngineProcess, bystander: Client) -> None:
    client = Client(node.port)
    client.send(b"\x09\x00\x00\x00\x00\x04abcd")
    expect_abort(client, UNRECOGNIZED_PDU)


def test_unknown_pdu_type_during_association(node: EngineProcess, bystander: Client) -> None:
    client = established(node)
    client.send(b"\x0a\x00\x00\x00\x00\x00")
    expect_abort(client, UNRECOGNIZED_PDU)


def test_pdata_before_association(node: EngineProcess, bystander: Client) -> None:
    client = Client(node.port)
    client.send(pdata(1, c_store_rq("1.2.3"), command=True))
    expect_abort(client, UNEXPECTED_PDU)


def test_pdata_over_negotiated_max(node: EngineProcess, bystander: Client) -> None:
    client = established(node)
    client.send(struct.pack(">BBI", 4, 0, MAX_PDU + 1) + b"\x00" * 64)
    expect_abort(client, INVALID_PARAMETER)


def test_pdv_longer_than_its_pdu(node: EngineProcess, bystander: Client) -> None:
    client = established(node)
    client.send(struct.pack(">BBIIBB", 4, 0, 20, 500, 1, 3) + b"\x00" * 14)
    expect_abort(client, INVALID_PARAMETER)


def test_pdv_for_unnegotiated_context(node: EngineProcess, bystander: Client) -> None:
    client = established(node)
    client.send(pdata(7, c_store_rq("1.2.3"), command=True))
    expect_abort(client, INVALID_PARAMETER)


def test_garbage_command_set(node: EngineProcess, bystander: Client) -> None:
    client = established(node)
    client.send(pdata(1, b"\x08\x00\x10\x00\x02\x00\x00\x00garbage!", command=True))
    expect_abort(client, NOT_SPECIFIED)


def test_command_set_without_command_field(node: EngineProcess, bystander: Client) -> None:
    client = established(node)
    client.send(pdata(1, command_set(MessageID=1), command=True))
    expect_abort(client, NOT_SPECIFIED)


def test_dataset_without_command(node: EngineProcess, bystander: Client) -> None:
    client = established(node)
    client.send(pdata(3, b"\x08\x00\x18\x00UI\x04\x001.2\x00", command=False))
    expect_abort(client, UNEXPECTED_PDU)


def test_undecodable_associate_request(node: EngineProcess, bystander: Client) -> None:
    client = Client(node.port)
    body = b"\x00\x01\x00\x00" + b"TESTSCU".ljust(16) + b"PACS_EDGE".ljust(16) + b"\xff" * 40
    client.send(struct.pack(">BBI", 1, 0, len(body)) + body)
    pdu = client.read_pdu()
    assert pdu.type == 7  # A-ABORT
    client.close()


def test_truncated_object_then_disconnect(node: EngineProcess, bystander: Client) -> None:
    """The peer dies mid-object: nothing is stored, the spool is cleaned."""
    client = established(node)
    client.send(pdata(3, c_store_rq("1.2.826.0.1.3680043.2.1.99"), command=True))
    client.send(
        pdata(3, b"\x08\x00\x18\x00UI\x04\x001.2\x00" + b"\x00" * 4000, command=False, last=False)
    )
    spool = node.data_dir / "spool"
    wait_until(lambda: bool(list(spool.iterdir())), 5, "the object to be spooling")
    client.send(struct.pack(">BBI", 4, 0, 5000) + b"\x00" * 100)  # PDU cut short
    client.close()
    deadline = time.monotonic() + 10
    while list((node.data_dir / "spool").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.status()["instances"] == 0


def pump_threads(node: EngineProcess) -> list[str]:
    """core_rs's socket-reading threads in the engine (named pump-<association>)."""
    assert node.proc is not None
    names = []
    for task in Path(f"/proc/{node.proc.pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # the thread ended between the listing and the read
            continue
    return [name for name in names if name.startswith("pump-")]


def mid_object(node: EngineProcess) -> tuple[Client, set[str]]:
    """An association half-way through an object, which a pump thread now reads (and
    the names of the pump threads it started)."""
    before = set(pump_threads(node))
    client = established(node)
    client.send(pdata(3, c_store_rq("1.2.826.0.1.3680043.2.1.98"), command=True))
    client.send(
        pdata(3, b"\x08\x00\x18\x00UI\x04\x001.2\x00" + b"\x00" * 4000, command=False, last=False)
    )
    wait_until(lambda: bool(set(pump_threads(node)) - before), 5, "a pump thread to take over")
    return client, set(pump_threads(node)) - before


def test_broken_pdu_mid_object_read_by_the_pump(node: EngineProcess, bystander: Client) -> None:
    """The thread that reads a dataset meets the bad PDU: the same A-ABORT as on the
    loop, and the thread ends with the association (its socket descriptor too)."""
    # The bystander's own pump starts right after its A-ASSOCIATE-AC; it stays.
    wait_until(lambda: bool(pump_threads(node)), 5, "the bystander's pump thread")
    client, threads = mid_object(node)
    client.send(struct.pack(">BBI", 4, 0, MAX_PDU + 1) + b"\x00" * 64)
    expect_abort(client, INVALID_PARAMETER)
    wait_until(lambda: not threads & set(pump_threads(node)), 5, "the pump thread to end")
    assert node.status()["instances"] == 0


def ct_dataset(uid: str, pixels: int) -> bytes:
    """A CT image's key attributes and `pixels` bytes of pixel data, explicit VR
    little endian, in PDVs of at most MAX_PDU."""

    def element(tag: tuple[int, int], vr: str, value: str) -> bytes:
        raw = value.encode() + b"\0" * (len(value) % 2)
        return struct.pack("<HH2sH", *tag, vr.encode(), len(raw)) + raw

    body = (
        element((0x0008, 0x0016), "UI", CT_IMAGE)
        + element((0x0008, 0x0018), "UI", uid)
        + element((0x0010, 0x0020), "LO", "PIPELINED")
        + element((0x0020, 0x000D), "UI", "1.2.826.0.1.3680043.2.1.300")
        + element((0x0020, 0x000E), "UI", "1.2.826.0.1.3680043.2.1.300.1")
        + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixels)
        + bytes(pixels)
    )
    step = MAX_PDU - 12
    pieces = [body[at : at + step] for at in range(0, len(body), step)]
    return b"".join(
        pdata(3, piece, command=False, last=n == len(pieces) - 1) for n, piece in enumerate(pieces)
    )


def test_a_peer_that_does_not_wait_for_answers_gets_each_one(
    node: EngineProcess, bystander: Client
) -> None:
    """Without asynchronous operations negotiated a peer must wait for each answer
    (PS3.7 D.3.3.3.1); this one sends eight objects at once. The engine reads at
    most two ahead of its answers (a pump thread reads on past an object only while
    fewer are open), answers every one, stores them all, and then releases."""
    client = established(node)
    uids = [f"1.2.826.0.1.3680043.2.1.{200 + n}" for n in range(8)]
    for n, uid in enumerate(uids):
        client.send(pdata(3, c_store_rq(uid, message_id=n + 1), command=True))
        client.send(ct_dataset(uid, 60_000))
    answers = {}
    for _ in uids:
        answer = client.read_pdu().command()
        answers[int(answer.MessageIDBeingRespondedTo)] = int(answer.Status)
    assert answers == {n + 1: 0x0000 for n in range(8)}
    client.send(A_RELEASE_RQ)
    assert client.read_pdu().type == 6  # A-RELEASE-RP
    client.close()
    assert node.status()["instances"] == 8


def test_silence_mid_object_meets_the_idle_timeout(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    node = engine_factory({"dicom": {"idle_timeout": 1.0}})
    client, _ = mid_object(node)
    started = time.monotonic()
    assert client.read_pdu().type == 7  # A-ABORT
    assert 0.5 < time.monotonic() - started < 5
    client.close()
    wait_until(lambda: not list((node.data_dir / "spool").iterdir()), 10, "the spool cleaned")
    assert node.status()["instances"] == 0


@pytest.mark.parametrize(
    ("calling", "called", "expected"),
    [
        ("INTRUDER", "PACS_EDGE", (1, 1, 3)),  # calling AE not recognized
        ("TESTSCU", "SOMEONE_ELSE", (1, 1, 7)),  # called AE not recognized
    ],
)
def test_association_rejected_with_reason(
    node: EngineProcess,
    bystander: Client,
    calling: str,
    called: str,
    expected: tuple[int, int, int],
) -> None:
    client = Client(node.port)
    assert client.associate(calling=calling, called=called).reject == expected
    assert client.closed_by_peer()
    client.close()
    assert "association rejected" in node.log()
    assert node.status()["associations"]["rejected_total"] == 1


def test_association_limit_rejects_as_transient(node: EngineProcess, bystander: Client) -> None:
    held = [established(node) for _ in range(3)]  # with the bystander: the limit of 4
    extra = Client(node.port)
    assert extra.associate().reject == (2, 3, 2)  # transient, local limit exceeded
    extra.close()
    for client in held:
        client.close()
    assert node.status()["associations"]["rejected_total"] == 1


def test_silent_connection_is_closed_by_artim(node: EngineProcess, bystander: Client) -> None:
    client = Client(node.port, timeout=10)
    started = time.monotonic()
    assert client.closed_by_peer()
    assert 1.5 < time.monotonic() - started < 9
    client.close()


def test_store_on_context_of_another_sop_class(node: EngineProcess, bystander: Client) -> None:
    """A C-STORE whose SOP class differs from its presentation context: failure
    status 0x0122, the association goes on."""
    client = Client(node.port)
    assert (
        client.associate(
            contexts=[(1, "1.2.840.10008.1.1", [EXPLICIT_LE]), (3, CT_IMAGE, [EXPLICIT_LE])]
        ).type
        == 2
    )
    mr = "1.2.840.10008.5.1.4.1.1.4"
    client.send(pdata(3, c_store_rq("1.2.3.4", sop_class=mr), command=True))
    client.send(pdata(3, b"\x08\x00\x18\x00UI\x08\x001.2.3.4\x00", command=False))
    assert int(client.read_pdu().command().Status) == 0x0122
    assert client.echo() == 0
    client.close()


def test_dataset_with_a_command_that_takes_none(node: EngineProcess, bystander: Client) -> None:
    """A C-ECHO announcing a dataset: the dataset is read and dropped, never spooled,
    the answer is 0x0211 (unrecognized operation), the association goes on."""
    client = established(node)
    echo_with_dataset = command_set(
        AffectedSOPClassUID="1.2.840.10008.1.1",
        CommandField=0x0030,
        MessageID=7,
        CommandDataSetType=0x0001,
    )
    client.send(pdata(1, echo_with_dataset, command=True))
    client.send(pdata(1, b"\x08\x00\x18\x00UI\x08\x001.2.3.4\x00", command=False))
    answer = client.read_pdu().command()
    assert (int(answer.CommandField), int(answer.Status)) == (0x8030, 0x0211)
    assert client.echo() == 0
    client.close()


def test_proxy_header_from_an_untrusted_address(node: EngineProcess, bystander: Client) -> None:
    """Only [dicom] trusted_proxies may name another client address; from anyone
    else the header is an abort, or any host could pass an allowlist."""
    client = Client(node.port)
    client.send(b"PROXY TCP4 10.1.20.7 127.0.0.1 40000 104\r\n")
    expect_abort(client, UNRECOGNIZED_PDU)
    audit = node.data_dir / "audit.jsonl"
    wait_until(lambda: '"event":"proxy_header_refused"' in audit.read_text(), 5, "the audit line")


def _with_context_id(request: bytes, index: int, context_id: int) -> bytes:
    """Overwrite the ID of the `index`-th presentation context item (type 0x20):
    pynetdicom refuses to encode an even one."""
    at, seen = 74, -1  # PDU header (6) + fixed fields (68); then the variable items
    while at < len(request):
        item_type, (length,) = request[at], struct.unpack(">H", request[at + 2 : at + 4])
        if item_type == 0x20:
            seen += 1
            if seen == index:
                return request[: at + 4] + bytes([context_id]) + request[at + 5 :]
        at += 4 + length
    raise AssertionError(f"no presentation context item {index}")


@pytest.mark.parametrize(
    ("case", "ids"),
    [
        ("duplicate", [1, 3, 1]),
        ("even", [1, 2]),
        ("300 wrapping", [(2 * n + 1) % 256 for n in range(300)]),
    ],
)
def test_presentation_context_ids_are_checked(
    node: EngineProcess, bystander: Client, case: str, ids: list[int]
) -> None:
    """PS3.8 9.3.2.2: IDs are odd, 1-255 and unique, so at most 128 contexts.
    An acceptance could not say which of two same-ID contexts it answers, so the
    request is refused whole: permanent, service-provider (ACSE), no reason given."""
    contexts = [(1, CT_IMAGE, [EXPLICIT_LE]) for _ in ids]
    request = associate_rq("TESTSCU", "PACS_EDGE", contexts)
    for index, context_id in enumerate(ids):
        request = _with_context_id(request, index, context_id)
    client = Client(node.port)
    client.send(request)
    assert client.read_pdu().reject == (1, 2, 1), case
    client.close()
    wait_until(lambda: "presentation context" in node.log(), 5, "the reason in the log")


def test_aborted_association_frees_its_slot_at_once(node: EngineProcess, bystander: Client) -> None:
    """After our A-ABORT the peer may keep the connection open until ARTIM; its
    slot under max_associations is free the moment the abort is sent."""
    held = [established(node) for _ in range(2)]  # with the bystander: 3 of 4
    rude = established(node)
    rude.send(b"\x0a\x00\x00\x00\x00\x00")  # unknown PDU type: A-ABORT, socket left open
    assert rude.read_pdu().type == 7
    started = time.monotonic()
    fresh = Client(node.port)
    assert fresh.associate().type == 2, "the aborted association still held a slot"
    assert time.monotonic() - started < 1.5  # long before ARTIM (2 s) closes the socket
    assert fresh.echo() == 0x0000
    for client in (*held, rude, fresh):
        client.close()
