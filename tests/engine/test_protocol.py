"""The association protocol object in-process, on a fake transport (as uvicorn tests
its protocols): flow control, drain, idle timeout, PROXY header and the pending-
connection cap, with the real storage below it and no socket. Seconds of the
socket tests' waiting become milliseconds here."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from engine.dicom.association import Acceptor, Association
from engine.dicom.fsm import State
from engine.dicom.hub import AssociationHub
from engine.dicom.live import LiveAssociations
from engine.dicom.store import StoreService
from engine.forward.commitment import Report
from engine.forward.recall import Recaller
from engine.forward.senders import ObjectReader
from engine.services import Shared
from engine.worklist.mirror import Mirror
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from policies.config import Config, load_config
from policies.rules import Router
from storage.committer import GroupCommitter
from storage.index import Index
from storage.layout import DataLayout
from tests.support.wire import (
    A_RELEASE_RQ,
    CT_IMAGE,
    EXPLICIT_LE,
    VERIFICATION,
    associate_rq,
    c_store_rq,
    pdata,
)

pytestmark = pytest.mark.anyio
PEER = ("10.9.8.7", 40000)
BALANCER = ("10.0.0.2", 51000)


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int] = PEER) -> None:
        super().__init__()
        self.peer = peer
        self.written = bytearray()
        self.paused = False
        self.closed = False
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def pdus(self) -> list[tuple[int, bytes]]:
        """The PDUs written so far, (type, body), and forget them."""
        found, data = [], bytes(self.written)
        while len(data) >= 6:
            kind, _, length = struct.unpack(">BBI", data[:6])
            found.append((kind, data[6 : 6 + length]))
            data = data[6 + length :]
        self.written.clear()
        return found


class Node:
    """One engine process's parts, without listeners."""

    def __init__(self, tmp: Path, config: Config, router: Router | None = None) -> None:
        layout = DataLayout(tmp / "data")
        layout.prepare()
        index = Index(layout.index, 2**30, durable=False)
        committer = GroupCommitter(index, layout, "replace")
        committer.start()
        self.pool = ThreadPoolExecutor(4)
        audit = AuditLog(tmp / "audit.jsonl", True)
        metrics = Metrics()
        self.shared = Shared(config, layout, index, committer, metrics, audit, ready=True)
        self.hub = AssociationHub(
            config.dicom.max_associations,
            config.dicom.max_pending_connections,
            metrics,
            audit,
            LiveAssociations(None),
        )
        store = StoreService(self.shared, self.pool, router or Router([], []))
        self.reports: list[tuple[Report, str]] = []
        objects = ObjectReader(index, layout, self.pool, metrics)
        recaller = Recaller(self.shared, self.hub.track)
        self.acceptor = Acceptor(
            self.shared, self.hub, store, self._report, objects, recaller, Mirror(self.shared)
        )

    async def _report(self, report: Report, via: str) -> None:
        self.reports.append((report, via))

    def connect(self, peer: tuple[str, int] = PEER) -> tuple[Association, FakeTransport]:
        association = Association(self.acceptor)
        transport = FakeTransport(peer)
        association.connection_made(transport)
        return association, transport

    def close(self) -> None:
        self.shared.committer.close()
        self.pool.shutdown()
        self.shared.index.close()
        self.shared.audit.close()


def feed(association: Association, data: bytes) -> None:
    """What the loop does with bytes from the socket."""
    while data:
        buffer = association.get_buffer(len(data))
        n = min(len(buffer), len(data))
        buffer[:n] = data[:n]
        association.buffer_updated(n)
        data = data[n:]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(**dicom: Any) -> Node:
        config = load_config(
            overrides={
                "node": {"data_dir": str(tmp_path / "data"), "workers": 1},
                "dicom": {"check_called_ae": False, **dicom},
            }
        )
        made.append(Node(tmp_path / f"n{len(made)}", config))
        return made[-1]

    yield make
    for node in made:
        node.close()


def associate(node: Node, contexts: list[tuple[int, str, list[str]]] | None = None) -> Any:
    association, transport = node.connect()
    contexts = contexts or [(1, VERIFICATION, [EXPLICIT_LE]), (3, CT_IMAGE, [EXPLICIT_LE])]
    feed(association, associate_rq("SCU", "PACS_EDGE", contexts))
    assert [kind for kind, _ in transport.pdus()] == [2], "A-ASSOCIATE-AC"
    return association, transport


def ct_dataset(uid: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = uid
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return bytes(buffer.getvalue())


def store_pdus(uid: str, message_id: int) -> bytes:
    return pdata(3, c_store_rq(uid, message_id), command=True) + pdata(
        3, ct_dataset(uid), command=False
    )


async def until(predicate: Callable[[], bool], seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - state of a protocol object, no event to await
            await asyncio.sleep(0.005)


async def test_reading_pauses_with_two_stores_in_flight_and_resumes(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory()
    association, transport = associate(node)
    feed(association, store_pdus("1.2.3.1", 1) + store_pdus("1.2.3.2", 2))
    assert transport.paused, "two objects waiting for their commit: stop reading"
    await until(lambda: not transport.paused)
    await until(lambda: len(transport.written) > 0)
    await until(lambda: association.stored == 2)
    feed(association, A_RELEASE_RQ)
    await until(lambda: any(kind == 6 for kind, _ in transport.pdus()))  # A-RELEASE-RP
    assert node.shared.index.get("1.2.3.2") is not None


async def test_drain_ends_an_idle_association_and_waits_for_one_mid_object(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory()
    idle, idle_transport = associate(node)
    busy, busy_transport = associate(node)
    whole = store_pdus("1.2.3.9", 1)
    feed(busy, whole[:-100])  # mid-object
    idle.drain()
    busy.drain()
    assert [kind for kind, _ in idle_transport.pdus()] == [7], "A-ABORT for the idle one"
    assert busy_transport.pdus() == [], "the busy one finishes its object first"
    feed(busy, whole[-100:])
    await until(lambda: busy.stored == 1)
    busy.drain()
    assert [kind for kind, _ in busy_transport.pdus()][-1] == 7


async def test_idle_timeout_aborts_a_silent_association(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory(idle_timeout=0.1)
    association, transport = associate(node)
    await until(lambda: association.state is State.Sta13, 2)
    assert [kind for kind, _ in transport.pdus()] == [7]


async def test_proxy_header_from_a_trusted_balancer_names_the_client(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory(trusted_proxies=["10.0.0.2/32"])
    association, transport = node.connect(BALANCER)
    header = b"PROXY TCP4 192.0.2.44 10.0.0.5 40404 11112\r\n"
    contexts = [(1, VERIFICATION, [EXPLICIT_LE])]
    feed(association, header + associate_rq("SCU", "PACS_EDGE", contexts))
    assert [kind for kind, _ in transport.pdus()] == [2]
    assert association.peer == "192.0.2.44:40404"
    assert association.via == "10.0.0.2:51000"


async def test_pending_connections_beyond_the_cap_are_aborted_at_once(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory(max_pending_connections=2)
    held = [node.connect() for _ in range(2)]
    _, refused = node.connect()
    assert refused.aborted
    feed(held[0][0], associate_rq("SCU", "PACS_EDGE", [(1, VERIFICATION, [EXPLICIT_LE])]))
    assert node.hub.pending == 1, "an accepted association is no longer pending"
    _, accepted = node.connect()
    assert not accepted.aborted


async def test_c_cancel_ends_a_find_with_0xfe00(node_factory: Callable[..., Node]) -> None:
    from storage.index import Instance
    from tests.storage.test_query import make
    from tests.support.wire import command_set

    node = node_factory()
    made: list[tuple[Instance, list[Any]]] = [
        (make(f"9.{n}", f"S{n}", f"S{n}.1", patient_id="P"), []) for n in range(450)
    ]
    node.shared.index.apply(made, "replace")
    study_root = "1.2.840.10008.5.1.4.1.2.2.1"
    association, transport = associate(node, [(1, study_root, [EXPLICIT_LE])])
    rq = command_set(
        AffectedSOPClassUID=study_root,
        CommandField=0x0020,
        MessageID=5,
        Priority=0,
        CommandDataSetType=0x0000,
    )
    identifier = b"\x08\x00\x52\x00CS\x06\x00STUDY " + b"\x20\x00\x0d\x00UI\x00\x00"
    cancel = command_set(
        CommandField=0x0FFF, MessageIDBeingRespondedTo=5, CommandDataSetType=0x0101
    )
    feed(association, pdata(1, rq, command=True) + pdata(1, identifier, command=False))
    feed(association, pdata(1, cancel, command=True))
    cancelled = b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\xfe"  # (0000,0900) Status FE00
    await until(lambda: cancelled in transport.written)
    statuses = [body for kind, body in transport.pdus() if kind == 4]
    assert len(statuses) < 450, "the cancel stopped it before all 450 answers"


async def test_response_command_sets_read_back_with_pydicom() -> None:
    """engine.dicom.dimse writes command sets by hand: pydicom must read them as meant."""
    from io import BytesIO

    from pydicom.filereader import read_dataset

    from engine.dicom import dimse

    counts = {
        "NumberOfRemainingSuboperations": 3,
        "NumberOfCompletedSuboperations": 70000,  # more than US holds
        "NumberOfFailedSuboperations": 1,
        "NumberOfWarningSuboperations": 0,
    }
    raw = dimse.response(
        0x8021, 7, 0xB000, "1.2.840.10008.5.1.4.1.2.2.2", comment="odd", counts=counts
    )
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8021, 7, 0xB000)
    assert (ds.AffectedSOPClassUID, ds.CommandDataSetType) == (
        "1.2.840.10008.5.1.4.1.2.2.2",
        0x0101,
    )
    assert ds.ErrorComment == "odd"
    assert (ds.NumberOfRemainingSuboperations, ds.NumberOfFailedSuboperations) == (3, 1)
    assert ds.NumberOfCompletedSuboperations == 65535
    with_dataset = dimse.response(0x8020, 1, 0xFF00, "1.2.3", dataset=True)
    assert read_dataset(BytesIO(with_dataset), True, True).CommandDataSetType == 0x0000


@pytest.mark.parametrize("stage", ["_submit", "_result"])
async def test_a_store_that_fails_unexpectedly_is_answered_0x0110(
    node_factory: Callable[..., Node], monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """A bug below the association, before the object reaches the group commit
    (`_submit`) or after it was indexed (`_result`), gets the modality a failure
    status and the association goes on; before, no C-STORE-RSP came."""
    original = getattr(StoreService, stage)

    def failing_once(self: StoreService, received: Any, *args: Any) -> Any:
        if received.sop_instance_uid == "1.2.3.1":
            raise RuntimeError("a bug")
        return original(self, received, *args)

    monkeypatch.setattr(StoreService, stage, failing_once)
    node = node_factory()
    association, transport = associate(node)
    feed(association, store_pdus("1.2.3.1", 1))
    processing_failure = b"\x00\x00\x00\x09\x02\x00\x00\x00\x10\x01"  # (0000,0900) 0110
    await until(lambda: processing_failure in transport.written)
    feed(association, store_pdus("1.2.3.2", 2))
    await until(lambda: association.stored == 1)
    assert node.shared.index.get("1.2.3.2") is not None
    # Indexed or not, it was never answered Success: the modality sends it again.
    assert (node.shared.index.get("1.2.3.1") is None) == (stage == "_submit")


async def test_a_route_on_an_attribute_core_rs_does_not_decode_reads_the_header(
    tmp_path: Path,
) -> None:
    """Routing rules on other attributes take the task path: the header is read
    through pydicom on the I/O pool before the object is routed and indexed."""
    config = load_config(
        overrides={
            "node": {"data_dir": str(tmp_path / "data"), "workers": 1},
            "dicom": {"check_called_ae": False},
            "destination": [
                {"name": n, "kind": "dicom", "host": "127.0.0.1", "port": 1, "called_ae": n}
                for n in ("JFK", "OTHER")
            ],
            "route": [
                {
                    "name": "jfk",
                    "destinations": ["JFK"],
                    "match": {"InstitutionName": {"regex": "^JFK "}},
                    "stop": True,
                },
                {"name": "rest", "destinations": ["OTHER"], "match": {}},
            ],
        }
    )
    node = Node(tmp_path / "n", config, Router(config.route, ["JFK", "OTHER"]))
    try:
        association, _ = associate(node)
        feed(association, store_pdus("1.2.3.1", 1))
        await until(lambda: association.stored == 1)
        instance = node.shared.index.get("1.2.3.1")
        assert instance is not None
        assert instance.destinations == ("JFK",)
    finally:
        node.close()
