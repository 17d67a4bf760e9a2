"""What an association's requests do beyond storing an object: storage commitment
reports, C-FIND, C-MOVE and C-GET, Modality Worklist queries and MPPS messages.

The association (engine.dicom.association) owns the socket, the PS3.8 state and the
C-STORE path; it hands each of these requests here with its dataset spooled, as a
tracked task, and offers the narrow `Link` this module answers through.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import lmdb
from pydicom.uid import generate_uid

import core_rs
from engine.dicom import dimse, find, get, move
from engine.dicom import negotiation as neg
from engine.dicom.client import Payload
from engine.dicom.negotiation import AcceptedContext
from engine.dicom.store import PROCESSING_FAILURE, SUCCESS
from engine.forward import commitment
from engine.forward.commitment import read_event_information
from engine.forward.senders import DicomSender, ObjectReader
from engine.worklist import scp as wl_scp
from policies.http_access import Caller
from storage.mpps import MppsRefused

if TYPE_CHECKING:
    from engine.forward.recall import Recaller
    from engine.services import Shared
    from engine.worklist.mirror import Mirror

log = logging.getLogger(__name__)

C_GET_RQ, N_CREATE_RQ = 0x0010, 0x0140
_MAX_REPORT = 16 * 2**20  # event information of a commitment report, read into memory
_RECALL_HEARTBEAT = 5.0  # seconds between pending C-MOVE responses while recalling


class Link(Protocol):
    """The association, as these requests use it."""

    calling_ae: str
    peer: str
    contexts: dict[tuple[str, str], int]  # C-GET sub-operations' storage contexts

    @property
    def host(self) -> str: ...
    @property
    def open(self) -> bool: ...  # established, or releasing: responses can still go
    @property
    def peer_max_pdu(self) -> int: ...
    @property
    def relational(self) -> frozenset[str]: ...
    def respond(
        self,
        command: core_rs.Command,
        field: int,
        status: int,
        sop_class: str | None = None,
        comment: str = "",
        instance: str | None = None,
    ) -> None: ...
    def send(self, command: core_rs.Command, pdus: bytes, dataset: bytes = b"") -> None: ...
    def cancelled(self, message_id: int) -> bool: ...
    def forget_cancel(self, message_id: int) -> None: ...
    async def writable(self) -> None: ...
    async def store(
        self, context_id: int, sop_class_uid: str, sop_instance_uid: str, payload: Payload
    ) -> int: ...


class Requests:
    def __init__(
        self,
        link: Link,
        shared: Shared,
        report: Callable[[commitment.Report, str], Awaitable[None]],
        objects: ObjectReader,
        recaller: Recaller,
        worklist: Mirror,
    ) -> None:
        self._link = link
        self._shared = shared
        self._report = report
        self._objects = objects
        self._recaller = recaller
        self._worklist = worklist

    async def commitment_report(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> None:
        """An archive reports storage commitment on an association of its own."""
        try:
            info = read_event_information(spool.read_dataset(_MAX_REPORT), context.transfer_syntax)
            report = commitment.parse_report(info)
        except (core_rs.CoreError, ValueError, EOFError) as exc:
            log.error("[%s] unreadable N-EVENT-REPORT: %s", self._link, exc)
            self._link.respond(command, 0x8100, PROCESSING_FAILURE, comment="unreadable report")
            return
        await self._report(report, f"later, on association {self._link}")
        self._link.respond(command, 0x8100, SUCCESS)

    async def find(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> None:
        """C-FIND SCP: pending answers a page at a time, made in a thread, sent as
        fast as the SCU reads them; a C-CANCEL ends it with 0xFE00."""
        shared = self._shared
        config = shared.config
        try:
            request = find.parse(
                spool.read_dataset(find.MAX_IDENTIFIER),
                context.transfer_syntax,
                context.abstract_syntax,
                context.abstract_syntax in self._link.relational,
            )
        except (find.FindFailure, core_rs.CoreError) as exc:
            status = exc.status if isinstance(exc, find.FindFailure) else find.UNABLE_TO_PROCESS
            self._link.respond(command, 0x8020, status, comment=str(exc))
            return
        recallable = any(d.kind == "dicom" and d.recall for d in config.destination)
        encoder = find.Encoder(request, context.transfer_syntax, config.node.ae_title, recallable)
        found = find.answers(shared.index, request.query)

        def next_page() -> tuple[list[bytes], bool]:
            """Up to a page of encoded answers, and whether that was the last (then
            the read transaction is closed in the same hop to the thread)."""
            page = [encoder(answer) for answer in itertools.islice(found, find.PAGE)]
            done = len(page) < find.PAGE
            if done:
                found.close()
            return page, done

        pending = core_rs.encode_message(
            command.context_id,
            True,
            dimse.response(
                0x8020, command.message_id, find.PENDING, context.abstract_syntax, dataset=True
            ),
            self._link.peer_max_pdu,
        )
        answered, status, comment, done = 0, find.SUCCESS, "", False
        try:
            while not done:
                page, done = await asyncio.to_thread(next_page)
                for identifier in page:
                    if self._link.cancelled(command.message_id):
                        break
                    self._link.send(command, pending, identifier)
                    answered += 1
                if self._link.cancelled(command.message_id):
                    status = find.CANCELLED
                    break
                await self._link.writable()  # the SCU reads slower than we answer
                if not self._link.open:
                    return
        except find.FindFailure as exc:
            status, comment = exc.status, exc.comment
        except Exception:  # a bug must not leave the SCU waiting for a final status
            log.exception("[%s] C-FIND failed after %d answer(s)", self._link, answered)
            status, comment = find.UNABLE_TO_PROCESS, "the query failed on this node"
        finally:
            self._link.forget_cancel(command.message_id)
            if not done:
                await asyncio.to_thread(found.close)
        self._link.respond(
            command, 0x8020, status, sop_class=context.abstract_syntax, comment=comment
        )
        keys = find.audited_keys(request, config.audit.patient_identifiers)
        shared.audit.write(
            "query",
            calling_ae=self._link.calling_ae,
            peer=self._link.peer,
            level=request.query.level,
            keys=keys,
            answers=answered,
            status=f"{status:#06x}",
        )

    async def mpps(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> None:
        """MPPS N-CREATE / N-SET: Success once the message and its relay jobs are
        durable (storage.mpps); the forwarder relays it to the [[mpps_destination]]s."""
        create = command.command_field == N_CREATE_RQ
        field = 0x8140 if create else 0x8120
        uid = command.affected_sop_instance_uid if create else command.requested_sop_instance_uid
        if create and not uid:
            uid = str(generate_uid())  # PS3.7 10.1.5.1: the SCP names it, in the response
        if not uid:
            self._link.respond(command, field, 0x0117, neg.MPPS, "no Requested SOP Instance UID")
            return
        try:
            dataset = wl_scp.read_identifier(
                spool.read_dataset(wl_scp.MAX_IDENTIFIER), context.transfer_syntax
            )
            jobs = await asyncio.to_thread(
                self._shared.index.mpps.accept,
                "create" if create else "set",
                uid,
                dataset,
                self._link.calling_ae,
                [d.name for d in self._shared.config.mpps_destination],
            )
        except MppsRefused as exc:
            self._link.respond(command, field, exc.status, neg.MPPS, str(exc)[:64], uid)
            return
        except (ValueError, core_rs.CoreError, lmdb.Error) as exc:
            log.error("[%s] MPPS %s not kept: %s", self._link, uid, exc)
            self._link.respond(command, field, 0x0110, neg.MPPS, str(exc)[:64], uid)
            return
        if self._shared.committer.on_jobs is not None:
            self._shared.committer.on_jobs(jobs)
        self._link.respond(command, field, SUCCESS, neg.MPPS, instance=uid)
        self._shared.audit.write(
            "mpps_received",
            operation="N-CREATE" if create else "N-SET",
            mpps_instance_uid=uid,
            status=str(dataset.get("PerformedProcedureStepStatus", "") or ""),
            calling_ae=self._link.calling_ae,
            peer=self._link.peer,
        )

    async def worklist_find(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> None:
        """Modality Worklist C-FIND: the RIS's answers, or its mirror's (engine.worklist)."""
        sop_class = context.abstract_syntax
        try:
            identifier = wl_scp.read_identifier(
                spool.read_dataset(wl_scp.MAX_IDENTIFIER), context.transfer_syntax
            )
        except (ValueError, core_rs.CoreError) as exc:
            self._link.respond(command, 0x8020, wl_scp.UNABLE_TO_PROCESS, comment=str(exc)[:64])
            return
        answers, mirrored = await self._worklist.query(identifier)
        pending = core_rs.encode_message(
            command.context_id,
            True,
            dimse.response(0x8020, command.message_id, wl_scp.PENDING, sop_class, dataset=True),
            self._link.peer_max_pdu,
        )
        entry = self._shared.config.calling_ae_entry(self._link.calling_ae.strip())
        pinyin = entry is not None and entry.worklist_names == "pinyin"
        sent = 0
        for answer in answers:
            if self._link.cancelled(command.message_id) or not self._link.open:
                break
            encoded = await asyncio.to_thread(
                wl_scp.encode, answer, context.transfer_syntax, pinyin
            )
            self._link.send(command, pending, encoded)
            sent += 1
            await self._link.writable()
        cancelled = self._link.cancelled(command.message_id)
        self._link.forget_cancel(command.message_id)
        if not self._link.open:
            return
        self._link.respond(
            command, 0x8020, find.CANCELLED if cancelled else wl_scp.SUCCESS, sop_class=sop_class
        )
        self._shared.audit.write(
            "worklist_query",
            calling_ae=self._link.calling_ae,
            peer=self._link.peer,
            answers=sent,
            **({"from_mirror": mirrored} if mirrored else {}),
        )

    async def retrieve(
        self, command: core_rs.Command, context: AcceptedContext, spool: core_rs.SpoolFile
    ) -> None:
        """C-MOVE SCP (sub-operations over our own association to the destination)
        and C-GET SCP (on this one), a pending response with the counts after each."""
        shared = self._shared
        sop_class = context.abstract_syntax
        is_get = command.command_field == C_GET_RQ
        field = 0x8010 if is_get else 0x8021

        def respond(status: int, counts: move.Counts, comment: str = "") -> None:
            rsp = dimse.response(
                field,
                command.message_id,
                status,
                sop_class,
                comment=comment,
                counts=dimse.as_dict(counts),
            )
            self._link.send(
                command,
                core_rs.encode_message(command.context_id, True, rsp, self._link.peer_max_pdu),
            )

        try:
            request = find.parse(
                spool.read_dataset(find.MAX_IDENTIFIER),
                context.transfer_syntax,
                sop_class,
                sop_class in self._link.relational,
            )
            dest = None if is_get else move.destination(shared.config, command.move_destination)
        except (find.FindFailure, move.MoveFailure, core_rs.CoreError) as exc:
            status = getattr(exc, "status", find.UNABLE_TO_PROCESS)
            self._link.respond(command, field, status, sop_class=sop_class, comment=str(exc))
            return

        async def writable() -> None:
            await self._link.writable()

        started = time.monotonic()
        counts, comment, stopped = move.Counts(), "", False
        try:
            sender: move.SubOperations = (
                get.ReturnSender(self._link, self._objects)
                if dest is None
                else DicomSender(
                    dest,
                    shared.config.node.ae_title,
                    self._objects,
                    None,
                    move_originator=(self._link.calling_ae, command.message_id),
                )
            )
            counts, stopped = await move.run(
                shared.index,
                sender,
                request.query,
                lambda now: respond(move.PENDING, now),
                lambda: self._link.cancelled(command.message_id),
                writable,
                self._recall if self._recaller.available else None,
            )
            status = counts.final_status(stopped)
        except (move.MoveFailure, find.FindFailure) as exc:
            status, comment = exc.status, exc.comment
        finally:
            self._link.forget_cancel(command.message_id)
        respond(status, counts, comment)
        destination = "the requestor (C-GET)" if dest is None else dest.called_ae
        log.info(
            "[%s] retrieve to %s: %d sent, %d failed in %.1f s (status %#06x)",
            self,
            destination,
            counts.completed,
            counts.failed,
            time.monotonic() - started,
            status,
        )
        keys = find.audited_keys(request, shared.config.audit.patient_identifiers)
        shared.audit.write(
            "retrieve",
            calling_ae=self._link.calling_ae,
            peer=self._link.peer,
            destination=destination,
            level=request.query.level,
            keys=keys,
            completed=counts.completed,
            failed=counts.failed,
            status=f"{status:#06x}",
        )

    async def _recall(self, study_uid: str, waiting: Callable[[], None]) -> str:
        """A study a C-MOVE needs back from the center first; "" once it is here."""
        caller = Caller(f"C-MOVE from {self._link.calling_ae}", "admin", self._link.host)
        code, body = self._recaller.start(study_uid, caller)
        if code >= 400:
            return str(body.get("error", f"recall refused ({code})"))
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RECALL_HEARTBEAT):
                    await self._recaller.wait(study_uid)
            progress = self._recaller.progress(study_uid)
            if progress is None:
                return "the recall was forgotten"
            if progress.state != "running":
                return "" if progress.state == "done" else progress.error or progress.state
            waiting()
