"""C-MOVE SCP (PS3.4 C.4.2): what an identifier matches, sent to the AE the request
names, over an association of our own, with pending responses that count it.

Move destinations are `[[calling_ae]]` entries with `host` and `port`; any other AE
gets 0xA801. The sub-operations are the forwarder's C-STORE sender: zero-copy from
the hot file, warm objects restored first, each offered as stored and, where the
destination refuses that, decoded to explicit VR little endian by core_rs. Instances
are walked from index keys a page at a time, so a 10,000-instance study is never in
memory. A study only at the center is recalled first (engine.forward.recall: a
C-MOVE to our own AE from the `recall = true` destination), with pending responses
while it comes; what still is not here is a failed sub-operation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Protocol

from engine.dicom.client import PeerUnavailable
from engine.forward.senders import Delivery, Settle
from policies.config import Config, DicomDestination
from storage.index import Index
from storage.query import Query, instance_uids
from storage.queue import Job

log = logging.getLogger(__name__)

PENDING, SUCCESS, CANCELLED, WARNING = 0xFF00, 0x0000, 0xFE00, 0xB000
DESTINATION_UNKNOWN = 0xA801
SUB_OPERATIONS_FAILED = 0xA702  # out of resources: unable to perform sub-operations
PAGE = 64  # instances handed to the sender at a time
# Recall a study from the center; calls its second argument while it waits; "" or why not.
Recall = Callable[[str, Callable[[], None]], Awaitable[str]]


@dataclass
class Counts:
    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0

    def final_status(self, cancelled: bool) -> int:
        if cancelled:
            return CANCELLED
        if self.failed and not (self.completed or self.warning):
            return SUB_OPERATIONS_FAILED
        return WARNING if self.failed or self.warning else SUCCESS


class MoveFailure(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


def destination(config: Config, move_destination: str) -> DicomDestination:
    """The move destination as a sender's destination; MoveFailure 0xA801 if unknown."""
    ae = move_destination.strip()
    entry = config.calling_ae_entry(ae)
    if entry is None or not entry.host or entry.port is None:
        raise MoveFailure(
            DESTINATION_UNKNOWN,
            f"move destination {ae!r} has no host and port ([[calling_ae]] host, port)",
        )
    return DicomDestination(
        name="move",
        kind="dicom",
        host=entry.host,
        port=entry.port,
        called_ae=ae,
        associations=1,
        transfer_syntax="as-stored-or-uncompressed",
    )


def survey(index: Index, query: Query) -> tuple[int, list[str]]:
    """How many instances the query matches, and the studies of those only at the
    center (one pass; only the study UIDs are kept)."""
    total, central = 0, dict[str, None]()
    for uid in instance_uids(index, query):
        total += 1
        record = index.get(uid)
        if record is not None and record.tier == "central":
            central[record.study_instance_uid] = None
    return total, list(central)


def job_pages(index: Index, query: Query) -> Generator[list[Job]]:
    """The matched instances as sender jobs, a page at a time (run each step in a
    thread: it reads the index)."""
    page: list[Job] = []
    for uid in instance_uids(index, query):
        record = index.get(uid)
        if record is None:
            continue  # removed since the count: counted as failed by the caller
        page.append(
            Job(
                seq=len(page),
                destination="move",
                priority=1,
                sop_instance_uid=uid,
                sop_class_uid=record.sop_class_uid,
                study_instance_uid=record.study_instance_uid,
                size=record.dataset_length,
                enqueued_at=time.time(),
                hash=record.hash,
            )
        )
        if len(page) >= PAGE:
            yield page
            page = []
    if page:
        yield page


class SubOperations(Protocol):
    """Who sends the sub-operations: a DicomSender to the move destination, or the
    requestor's own association for C-GET (engine.dicom.get)."""

    async def send(self, jobs: list[Job], settle: Settle) -> None: ...
    async def close(self) -> None: ...


async def run(
    index: Index,
    sender: SubOperations,
    query: Query,
    report: Callable[[Counts], None],
    cancelled: Callable[[], bool],
    writable: Callable[[], Awaitable[None]],
    recall: Recall | None,
) -> tuple[Counts, bool]:
    """Send everything `query` matches through `sender`; `report` after each
    sub-operation (and every few seconds while a study only at the center is
    recalled first). Returns the counts and whether a C-CANCEL ended it."""
    total, central = await asyncio.to_thread(survey, index, query)
    counts = Counts(remaining=total)
    report(counts)
    for study in central:
        if recall is None:
            break  # nothing can send it back: those instances fail below
        problem = await recall(study, lambda: report(counts))
        if problem:
            log.warning("retrieve: study %s could not be recalled first: %s", study, problem)

    async def settle(deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            counts.remaining -= 1
            if delivery.kind == "sent":
                counts.completed += 1
            else:
                counts.failed += 1
                log.warning(
                    "retrieve: %s not sent: %s", delivery.job.sop_instance_uid, delivery.message
                )
        report(counts)
        await writable()

    pages = job_pages(index, query)
    stopped = False
    try:
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            if cancelled():
                stopped = True
                break
            try:
                await sender.send(page, settle)
            except PeerUnavailable as exc:
                raise MoveFailure(SUB_OPERATIONS_FAILED, str(exc)) from exc
    finally:
        await asyncio.to_thread(pages.close)
        await sender.close()
    counts.failed += counts.remaining if not stopped else 0  # gone since the count
    counts.remaining = counts.remaining if stopped else 0
    return counts, stopped
