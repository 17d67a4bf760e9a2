"""Patient updates from the HIS (HL7 ADT, engine.hl7), as the index keeps them.

Named databases beside storage.index's:
    hl7_messages   "<time> <control ID>" -> {"message": the HL7 text, "ack": AA|AE|AR,
                   "reason", "changed": instances}: every message received, the
                   rejected ones too (what the HIS sent is never lost)
    hl7_merges     merged PatientID -> the dominant PatientID (A40, A47): images that
                   arrive later under the old ID are attached to the dominant patient
The instance records' changes themselves go through Index.correct, in the same
transaction as the message's log entry and merge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import lmdb

_MAX_CHAIN = 16  # A merged into B merged into C ...: followed this far


class PatientLog:
    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self._messages = env.open_db(b"hl7_messages")
        self._merges = env.open_db(b"hl7_merges")

    def logged(
        self, control_id: str, message: str, ack: str, reason: str, changed: int
    ) -> Callable[[lmdb.Transaction], None]:
        """A write of the message's log entry, for Index.correct's transaction."""
        key = f"{time.time():.6f} {control_id}".encode()
        record = {"message": message, "ack": ack, "reason": reason, "changed": changed}

        def write(txn: lmdb.Transaction) -> None:
            txn.put(key, orjson.dumps(record), db=self._messages)

        return write

    def log(self, control_id: str, message: str, ack: str, reason: str) -> None:
        """A message that changed nothing (refused, or a repeat), logged on its own."""
        with self._env.begin(write=True) as txn:
            self.logged(control_id, message, ack, reason, 0)(txn)

    def merge(self, old: str, new: str) -> Callable[[lmdb.Transaction], None]:
        def write(txn: lmdb.Transaction) -> None:
            txn.put(old.encode(), new.encode(), db=self._merges)

        return write

    def merged_into(self, patient_id: str) -> str | None:
        """The dominant patient an old ID was merged into (followed to the last), or None."""
        if not patient_id:
            return None
        found: str | None = None
        with self._env.begin(db=self._merges) as txn:
            current = patient_id
            for _ in range(_MAX_CHAIN):
                raw = txn.get(current.encode())
                if raw is None:
                    break
                current = bytes(raw).decode()
                found = current
        return found

    def prune(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest messages, those received before `before`
        (Unix time), in one transaction; how many went. Their changes stay in the
        instance records and the audit log; the merges stay for good."""
        gone = 0
        with self._env.begin(write=True, db=self._messages) as txn:
            cursor = txn.cursor()
            cursor.first()
            while gone < limit:
                key = bytes(cursor.key())  # b"" once the last one went
                # "<time> <control ID>": in time order while times have ten digits
                # (until 2286); compared as numbers all the same.
                if not key or float(key.split(b" ", 1)[0]) >= before:
                    break
                cursor.delete()  # and on to the next
                gone += 1
        return gone

    def messages(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest messages, newest first."""
        out: list[dict[str, Any]] = []
        with self._env.begin(db=self._messages) as txn:
            cursor = txn.cursor()
            if cursor.last():
                for key, raw in cursor.iterprev():
                    out.append({"key": bytes(key).decode(), **orjson.loads(raw)})
                    if len(out) >= limit:
                        break
        return out
