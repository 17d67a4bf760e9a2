"""Modality Performed Procedure Steps received from modalities, kept until every
[[mpps_destination]] has them: each N-CREATE and N-SET is one message, written with
its relay jobs (storage.queue) in one transaction, so an acknowledged message is
never lost and its jobs are never orphaned.

Named databases beside storage.index's:
    mpps_messages   message ID -> {"op": "create"|"set", "uid", "dataset": DICOM JSON,
                    "calling_ae", "at"}
    mpps_steps      MPPS SOP Instance UID -> {"status": Performed Procedure Step
                    Status, "messages": n}
A message ID is `<MPPS SOP Instance UID>#<n>`; the relay job carries it where an
object's job carries its SOP Instance UID, and the MPPS UID where it carries the
study's, so one step's messages go out in order on one association.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydicom import Dataset

from storage.queue import Job, Queues, Target

if TYPE_CHECKING:
    import lmdb

MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
Op = Literal["create", "set"]
FINAL = ("COMPLETED", "DISCONTINUED")


class MppsRefused(ValueError):
    """The message cannot be accepted: `status` is the DIMSE status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Message:
    op: Op
    uid: str
    dataset: Dataset
    calling_ae: str


class MppsLog:
    def __init__(self, env: lmdb.Environment, queues: Queues) -> None:
        self._env = env
        self._queues = queues
        self._messages = env.open_db(b"mpps_messages")
        self._steps = env.open_db(b"mpps_steps")

    def accept(
        self, op: Op, uid: str, ds: Dataset, calling_ae: str, destinations: list[str]
    ) -> list[Job]:
        """Durable once it returns (in "fsync" mode); MppsRefused for an N-CREATE of
        a known step (0x0111), an N-SET of an unknown one (0x0112) or of one already
        COMPLETED or DISCONTINUED (0x0110, PS3.4 F.7.2.2)."""
        status = str(ds.get("PerformedProcedureStepStatus", "") or "").strip()
        body = ds.to_json_dict()
        with self._env.begin(write=True) as txn:
            raw = txn.get(uid.encode(), db=self._steps)
            step: dict[str, Any] = orjson.loads(raw) if raw else {}
            if op == "create" and step:
                raise MppsRefused(0x0111, f"MPPS {uid} was created before")
            if op == "set" and not step:
                raise MppsRefused(0x0112, f"no MPPS {uid} was created here")
            if step.get("status") in FINAL:
                raise MppsRefused(0x0110, f"MPPS {uid} is {step['status']}: no more changes")
            count = step.get("messages", 0) + 1
            message_id = f"{uid}#{count}"
            record = {"op": op, "uid": uid, "dataset": body, "calling_ae": calling_ae}
            txn.put(
                message_id.encode(), orjson.dumps({**record, "at": time.time()}), db=self._messages
            )
            new_status = status or step.get("status", "")
            txn.put(
                uid.encode(),
                orjson.dumps({"status": new_status, "messages": count}),
                db=self._steps,
            )
            targets = [Target(name, 1) for name in destinations]
            size = len(orjson.dumps(body))
            return self._queues.enqueue(txn, message_id, MPPS_CLASS, uid, size, message_id, targets)

    def prune(self, before: float, destinations: list[str], limit: int) -> int:
        """Delete up to `limit` messages received before `before` (Unix time) that no
        job of `destinations` (the [[mpps_destination]] names) still waits to relay or
        holds as a dead letter, with their delivery records; and each step whose last
        message went. One write transaction; how many messages went."""
        keep = set().union(*(self._queues.waiting_ids(dest) for dest in destinations))
        due: list[str] = []
        # Chosen in a read transaction: the write lock, which ingest's commits share,
        # is held only for the deletes. A message never changes once written.
        with self._env.begin(db=self._messages) as txn:
            for key, raw in txn.cursor():
                message_id = bytes(key).decode()
                if message_id not in keep and orjson.loads(raw).get("at", 0.0) < before:
                    due.append(message_id)
                    if len(due) >= limit:
                        break
        gone = 0
        with self._env.begin(write=True) as txn:
            for message_id in due:
                txn.delete(message_id.encode(), db=self._messages)
                self._queues.forget_delivered(txn, destinations, message_id)
                uid, _, number = message_id.rpartition("#")
                raw_step = txn.get(uid.encode(), db=self._steps)
                if raw_step is not None and orjson.loads(raw_step)["messages"] == int(number):
                    txn.delete(uid.encode(), db=self._steps)
                gone += 1
        return gone

    def message(self, message_id: str) -> Message | None:
        with self._env.begin() as txn:
            raw = txn.get(message_id.encode(), db=self._messages)
        if raw is None:
            return None
        record = orjson.loads(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = Dataset.from_json(record["dataset"])
        return Message(record["op"], record["uid"], ds, record["calling_ae"])
