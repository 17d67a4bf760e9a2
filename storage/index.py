"""The LMDB index of stored objects: instances, series, studies and their totals.

Named databases in one environment (multi-process safe, one writer at a time):

    instances  SOP Instance UID -> instance record (JSON)
    series     Series Instance UID -> series record with its instance count
    studies    Study Instance UID -> study record with instance and byte counts
    objects    BLAKE3 hex -> how many instance records point at that file
    totals     "instances", "bytes" -> integers

`Index.apply` writes one batch in ONE write transaction: that is the group commit
(storage.committer), and the forward jobs of each new instance (storage.queue) go
into that same transaction.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import lmdb

from storage.queue import Job, Queues, Target

log = logging.getLogger(__name__)

OnDuplicate = Literal["replace", "keep", "reject"]


@dataclass(frozen=True)
class Instance:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str
    modality: str
    study_date: str
    study_description: str
    accession_number: str
    series_number: str
    instance_number: str
    transfer_syntax_uid: str
    calling_ae: str
    hash: str
    meta_length: int
    dataset_length: int
    received_at: float

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Instance:
        return cls(**json.loads(raw))


class Outcome(enum.Enum):
    STORED = "stored"  # a new instance
    REPLACED = "replaced"  # same SOP Instance UID, other content, on_duplicate = "replace"
    IDENTICAL = "identical"  # the very same object again: nothing changed
    KEPT = "kept"  # other content, on_duplicate = "keep": the first version stays
    REJECTED = "rejected"  # other content, on_duplicate = "reject"


@dataclass(frozen=True)
class Totals:
    instances: int
    series: int
    studies: int
    bytes: int


def _key(uid: str) -> bytes:
    return uid.encode("ascii", "replace")


class Index:
    def __init__(self, path: Path, map_size: int, durable: bool) -> None:
        # sync/metasync off only with durability = "os": then the OS decides when.
        self._env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=16,
            sync=durable,
            metasync=durable,
            readahead=False,
        )
        self._instances = self._env.open_db(b"instances")
        self._series = self._env.open_db(b"series")
        self._studies = self._env.open_db(b"studies")
        self._objects = self._env.open_db(b"objects")
        self._totals = self._env.open_db(b"totals")
        self.queues = Queues(self._env)

    def close(self) -> None:
        self._env.close()

    def check_readers(self) -> int:
        """Free reader slots of processes that died (a killed worker's)."""
        return int(self._env.reader_check())

    def get(self, sop_instance_uid: str) -> Instance | None:
        with self._env.begin(db=self._instances) as txn:
            raw = txn.get(_key(sop_instance_uid))
        return None if raw is None else Instance.decode(bytes(raw))

    def instances(self) -> Iterator[Instance]:
        with self._env.begin(db=self._instances) as txn:
            for _, raw in txn.cursor():
                yield Instance.decode(bytes(raw))

    def totals(self) -> Totals:
        with self._env.begin() as txn:
            return Totals(
                instances=self._count(txn, b"instances"),
                bytes=self._count(txn, b"bytes"),
                series=txn.stat(self._series)["entries"],
                studies=txn.stat(self._studies)["entries"],
            )

    def _count(self, txn: lmdb.Transaction, name: bytes) -> int:
        raw = txn.get(name, db=self._totals)
        return 0 if raw is None else int(raw)

    def apply(
        self, batch: list[tuple[Instance, list[Target]]], on_duplicate: OnDuplicate
    ) -> tuple[list[Outcome], list[str], list[Job]]:
        """Index a batch, with the forward jobs of what is new, in one durable transaction.

        Returns each instance's outcome, the hashes whose files no record points at
        any more (to delete after the commit) and the jobs queued.
        """
        outcomes: list[Outcome] = []
        unreferenced: list[str] = []
        jobs: list[Job] = []
        with self._env.begin(write=True) as txn:
            for instance, targets in batch:
                outcome, freed = self._apply_one(txn, instance, on_duplicate)
                outcomes.append(outcome)
                unreferenced.extend(freed)
                if outcome in (Outcome.STORED, Outcome.REPLACED) and targets:
                    jobs += self.queues.enqueue(
                        txn,
                        instance.sop_instance_uid,
                        instance.sop_class_uid,
                        instance.study_instance_uid,
                        instance.dataset_length,
                        targets,
                    )
        return outcomes, unreferenced, jobs

    def _apply_one(
        self, txn: lmdb.Transaction, new: Instance, on_duplicate: OnDuplicate
    ) -> tuple[Outcome, list[str]]:
        key = _key(new.sop_instance_uid)
        raw = txn.get(key, db=self._instances)
        if raw is not None:
            old = Instance.decode(bytes(raw))
            if old.hash == new.hash:
                return Outcome.IDENTICAL, []
            if on_duplicate == "keep":
                return Outcome.KEPT, self._unreferenced(txn, new.hash)
            if on_duplicate == "reject":
                return Outcome.REJECTED, self._unreferenced(txn, new.hash)
            self._account(txn, old, -1)
            txn.put(key, new.encode(), db=self._instances)
            self._account(txn, new, +1)
            return Outcome.REPLACED, self._release(txn, old.hash)
        txn.put(key, new.encode(), db=self._instances)
        self._account(txn, new, +1)
        return Outcome.STORED, []

    def _unreferenced(self, txn: lmdb.Transaction, blake3_hex: str) -> list[str]:
        """A file that was written but will not be indexed: delete it unless in use."""
        return [] if txn.get(blake3_hex.encode(), db=self._objects) else [blake3_hex]

    def _release(self, txn: lmdb.Transaction, blake3_hex: str) -> list[str]:
        refs = self._bump(txn, self._objects, blake3_hex.encode(), -1)
        return [blake3_hex] if refs == 0 else []

    def _bump(self, txn: lmdb.Transaction, db: Any, key: bytes, delta: int) -> int:
        raw = txn.get(key, db=db)
        value = (0 if raw is None else int(raw)) + delta
        if value <= 0:
            txn.delete(key, db=db)
        else:
            txn.put(key, str(value).encode(), db=db)
        return value

    def _account(self, txn: lmdb.Transaction, instance: Instance, sign: int) -> None:
        """Add (sign=+1) or remove (-1) an instance from every count it is part of."""
        if sign > 0:
            self._bump(txn, self._objects, instance.hash.encode(), +1)
        self._bump(txn, self._totals, b"instances", sign)
        self._bump(txn, self._totals, b"bytes", sign * instance.dataset_length)
        if not (instance.study_instance_uid and instance.series_instance_uid):
            log.warning(
                "instance %s lacks its study or series UID: stored, not counted in any study",
                instance.sop_instance_uid,
            )
            return
        self._update_group(
            txn,
            self._studies,
            instance.study_instance_uid,
            sign,
            instance.dataset_length,
            patient_id=instance.patient_id,
            patient_name=instance.patient_name,
            study_date=instance.study_date,
            accession_number=instance.accession_number,
            study_description=instance.study_description,
        )
        self._update_group(
            txn,
            self._series,
            instance.series_instance_uid,
            sign,
            instance.dataset_length,
            study_instance_uid=instance.study_instance_uid,
            modality=instance.modality,
            series_number=instance.series_number,
        )

    def _update_group(
        self, txn: lmdb.Transaction, db: Any, uid: str, sign: int, size: int, **fields: str
    ) -> None:
        key = _key(uid)
        raw = txn.get(key, db=db)
        record: dict[str, Any] = json.loads(bytes(raw)) if raw else {"instances": 0, "bytes": 0}
        record["instances"] += sign
        record["bytes"] += sign * size
        if record["instances"] <= 0:
            txn.delete(key, db=db)
            return
        if sign > 0:
            record.update(fields)
        txn.put(key, json.dumps(record, separators=(",", ":")).encode(), db=db)
