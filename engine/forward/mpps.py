"""Relaying Modality Performed Procedure Steps to an [[mpps_destination]] (the RIS):
each queued N-CREATE or N-SET (storage.mpps) goes out as it came, in order, with
pynetdicom as the SCU. It is a sender like the C-STORE and STOW-RS ones, so the
forwarder gives it the same queue, backoff, circuit breaker, dead letters and CLI.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from engine.dicom import scu
from engine.dicom.client import PeerUnavailable
from engine.forward.senders import Delivery, Kind, Settle
from policies.config import MppsDestination
from storage.mpps import Message, MppsLog
from storage.queue import Job

log = logging.getLogger(__name__)


def classify(status: int) -> Kind:
    """An N-CREATE-RSP / N-SET-RSP status: 0x0000 and warnings were taken; 0x0111
    (duplicate) to an N-CREATE we resend after a lost answer means it has it."""
    if status in (0x0000, 0x0001, 0x0107, 0x0116, 0x0111):
        return "sent"
    if status & 0xFF00 == 0xA700 or 0xC001 <= status <= 0xC0FF:
        return "retry"
    return "permanent"


class MppsSender:
    def __init__(self, dest: MppsDestination, calling_ae: str, messages: MppsLog) -> None:
        self._dest = dest
        self._calling_ae = calling_ae
        self._messages = messages
        self._assoc: Association | None = None

    async def send(self, jobs: list[Job], settle: Settle) -> None:
        for job in jobs:
            message = await asyncio.to_thread(self._messages.message, job.sop_instance_uid)
            if message is None:
                await settle([Delivery(job, "permanent", "the message is no longer stored")])
                continue
            started = time.perf_counter()
            kind, why = await asyncio.to_thread(self._relay, message)
            await settle([Delivery(job, kind, why, time.perf_counter() - started)])

    def _relay(self, message: Message) -> tuple[Kind, str]:
        """In a thread: one N-CREATE or N-SET on the kept association."""
        assoc = self._association()
        if message.op == "create":
            status, _ = assoc.send_n_create(
                message.dataset, ModalityPerformedProcedureStep, message.uid
            )
        else:
            status, _ = assoc.send_n_set(
                message.dataset, ModalityPerformedProcedureStep, message.uid
            )
        if status is None or "Status" not in status:
            self._drop()
            raise PeerUnavailable(f"{self._dest.name}: no answer to the N-{message.op.upper()}")
        code = int(status.Status)
        return classify(code), f"status {code:#06x}"

    def _association(self) -> Association:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        ae = AE(ae_title=self._calling_ae)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        ae.connection_timeout = self._dest.connect_timeout
        ae.acse_timeout = self._dest.connect_timeout
        ae.dimse_timeout = ae.network_timeout = self._dest.timeout
        dest = self._dest
        assoc = scu.associate(ae, dest.host, dest.port, dest.called_ae)
        if not assoc.is_established:
            raise PeerUnavailable(
                f"{dest.name} ({dest.called_ae}@{dest.host}:{dest.port}) did not accept "
                "an association for MPPS"
            )
        self._assoc = assoc
        return assoc

    def _drop(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.release()
            else:
                self._assoc.abort()
            self._assoc = None

    async def idle(self) -> None:
        await asyncio.to_thread(self._drop)

    async def close(self) -> None:
        await asyncio.to_thread(self._drop)
