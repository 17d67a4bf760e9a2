"""The forwarder's workers in-process against a real DCMTK storescp: a failure of the
edge's own (the index refusing a settlement, a bug in a sender, a damaged job record)
must not stop a destination's queue; before, each ended that association's worker for
good and the queue stopped moving with nothing logged until shutdown."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.peers import free_port, wait_for_port
from engine.forward.forwarder import Forwarder
from engine.forward.senders import DicomSender
from policies.config import load_config
from policies.rules import Router
from storage.committer import GroupCommitter, IndexUnavailable
from tests.engine.test_forward import FAST_RETRY
from tests.engine.test_protocol import Node, associate, feed, store_pdus, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    scp = subprocess.Popen(
        ["storescp", "-od", str(received), "-aet", "ARCHIVE", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, scp)
    yield port, received
    scp.terminate()
    scp.wait(timeout=10)


@pytest.fixture
async def forwarding(
    tmp_path: Path, archive: tuple[int, Path]
) -> AsyncIterator[tuple[Node, Forwarder]]:
    """A node that routes everything to the archive, one object stored and queued for
    it, and its forwarder, not yet started."""
    config = load_config(
        overrides={
            "node": {"data_dir": str(tmp_path / "data"), "workers": 1},
            "dicom": {"check_called_ae": False},
            "forward": FAST_RETRY,
            "destination": [
                {
                    "name": "archive",
                    "kind": "dicom",
                    "host": "127.0.0.1",
                    "port": archive[0],
                    "called_ae": "ARCHIVE",
                    "associations": 1,
                }
            ],
        }
    )
    node = Node(tmp_path / "n", config, Router([], ["archive"]))
    association, _ = associate(node)
    feed(association, store_pdus("1.2.3.1", 1))
    await until(lambda: association.stored == 1)
    shared = node.shared
    forwarder = Forwarder(
        config,
        shared.index,
        shared.committer,
        shared.layout,
        node.pool,
        shared.metrics,
        shared.audit,
    )
    try:
        yield node, forwarder
    finally:
        await forwarder.stop()
        node.close()


def queued(node: Node) -> int:
    return node.shared.index.queues.stats("archive").queued


def received(archive: tuple[int, Path]) -> list[str]:
    """The SOP Instance UIDs storescp wrote (its files are named MODALITY.UID)."""
    return [path.name.split(".", 1)[1] for path in archive[1].iterdir()]


async def test_a_settlement_the_index_refuses_pauses_and_the_job_goes_again(
    forwarding: tuple[Node, Forwarder],
    archive: tuple[int, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused: list[int] = []
    original = GroupCommitter.settle

    async def refusing_once(self: GroupCommitter, settlements: list[Any]) -> None:
        if not refused:
            refused.append(len(settlements))
            raise IndexUnavailable("index map full")
        await original(self, settlements)

    monkeypatch.setattr(GroupCommitter, "settle", refusing_once)
    node, forwarder = forwarding
    forwarder.start()
    with caplog.at_level(logging.ERROR, "engine.forward.forwarder"):
        await until(lambda: bool(refused) and queued(node) == 0, 20)
    assert "association 0 failed on this edge" in caplog.text
    assert "index map full" in caplog.text
    # Sent, its answer not recorded, so sent again: at least once, never lost.
    assert len(list(archive[1].iterdir())) >= 1
    stats = node.shared.index.queues.stats("archive")
    assert stats.dead == 0, "an index failure spends no attempt"


async def test_a_bug_in_the_sender_spends_an_attempt_and_the_queue_moves_on(
    forwarding: tuple[Node, Forwarder],
    archive: tuple[int, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed: list[str] = []
    original = DicomSender.send

    async def failing_once(self: DicomSender, jobs: list[Any], settle: Any) -> None:
        if not failed:
            failed.append(jobs[0].sop_instance_uid)
            raise RuntimeError("a bug")
        await original(self, jobs, settle)

    monkeypatch.setattr(DicomSender, "send", failing_once)
    node, forwarder = forwarding
    forwarder.start()
    with caplog.at_level(logging.ERROR, "engine.forward.forwarder"):
        await until(lambda: queued(node) == 0 and bool(failed), 20)
    assert failed == ["1.2.3.1"]
    assert "RuntimeError: a bug" in caplog.text
    assert received(archive) == ["1.2.3.1"]
    delivery = node.shared.index.queues.delivery("archive", "1.2.3.1")
    assert delivery is not None


async def test_a_damaged_job_record_is_passed_by_and_the_rest_is_forwarded(
    forwarding: tuple[Node, Forwarder],
    archive: tuple[int, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    node, forwarder = forwarding
    association, _ = associate(node)
    feed(association, store_pdus("1.2.3.2", 1))
    await until(lambda: association.stored == 1)
    queues = node.shared.index.queues
    (damaged,) = [job for job in queues.jobs("archive", 10) if job.sop_instance_uid == "1.2.3.1"]
    with node.shared.index._env.begin(write=True) as txn:
        txn.put(damaged.key, b"\x00\x17 not a record", db=queues._queue)
    forwarder.start()
    with caplog.at_level(logging.ERROR, "storage.queue"):
        await until(lambda: queues.delivery("archive", "1.2.3.2") is not None, 20)
    assert received(archive) == ["1.2.3.2"]
    assert "is damaged and cannot be read" in caplog.text
    assert queues.stats("archive").queued == 1, "kept until an admin purges it"
    assert forwarder.status()["archive"]["circuit"] == "closed"
