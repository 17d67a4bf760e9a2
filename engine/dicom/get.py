"""C-GET SCP (PS3.4 C.4.3): the matched instances come back on the requestor's own
association, as C-STORE sub-operations on the storage contexts it accepted to be
SCP for (SCP/SCU Role Selection). No address is needed, so it works where a viewer
sits behind NAT or has no AE configured here.

The walk, counts, recall and cancel are engine.dicom.move's; this module is only the
sender: for each instance the stored syntax when the requestor accepted it, else
explicit VR little endian made by core_rs (decoded or re-encoded), else a failed
sub-operation that says which context was missing.
"""

from __future__ import annotations

from typing import Protocol

from engine.dicom.client import Payload
from engine.forward.senders import (
    EXPLICIT_LE,
    Delivery,
    ObjectReader,
    Settle,
    classify_status,
    fallback_syntaxes,
)
from storage.index import Instance
from storage.queue import Job


class Outgoing(Protocol):
    """The association's side of a sub-operation (engine.dicom.association)."""

    contexts: dict[tuple[str, str], int]  # (SOP class, transfer syntax) -> context ID

    async def store(
        self, context_id: int, sop_class_uid: str, sop_instance_uid: str, payload: Payload
    ) -> int: ...


class ReturnSender:
    """C-STORE sub-operations of a C-GET, on the association it came on."""

    def __init__(self, outgoing: Outgoing, objects: ObjectReader) -> None:
        self._out = outgoing
        self._objects = objects

    async def send(self, jobs: list[Job], settle: Settle) -> None:
        for job in jobs:
            instance = self._objects.locate(job)
            if instance is None:
                await settle([Delivery(job, "permanent", "object no longer stored on edge")])
                continue
            await settle([await self._send_one(job, instance)])

    async def _send_one(self, job: Job, instance: Instance) -> Delivery:
        options = [
            (ts, self._out.contexts[(job.sop_class_uid, ts)])
            for ts in [instance.transfer_syntax_uid, *fallback_syntaxes(instance)]
            if (job.sop_class_uid, ts) in self._out.contexts
        ]
        if not options:
            return Delivery(
                job,
                "permanent",
                f"the requestor took no storage context for {job.sop_class_uid} in "
                f"{instance.transfer_syntax_uid} or {EXPLICIT_LE} (SCP role)",
            )
        try:
            context_id, payload = await self._objects.first_payload(job, instance, options)
        except (OSError, ValueError) as exc:  # core_rs.CodecError is a ValueError
            return Delivery(job, "permanent", f"cannot read stored object: {exc}")
        try:
            status = await self._out.store(
                context_id, job.sop_class_uid, job.sop_instance_uid, payload
            )
        finally:
            self._objects.release(payload)
        return Delivery(job, classify_status(status), f"status {status:#06x}")

    async def close(self) -> None:
        return None  # the association is the requestor's
