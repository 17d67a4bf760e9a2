"""The query side of the index: patient, study and series records and the keys that
find them without a scan, written in the index's own transactions.

Named databases beside storage.index's:

    studies      Study Instance UID -> study record (what a STUDY-level answer needs)
    series       Series Instance UID -> series record
    patients     PatientID -> patient record
    study_keys   field NUL value NUL Study Instance UID -> ""
                 fields: pid (PatientID), acc (AccessionNumber), date (StudyDate),
                 name (PatientName, upper case: prefix and case-insensitive search),
                 mod (each modality in the study)
    series_of    Study Instance UID NUL Series Instance UID -> ""
    instances_of Series Instance UID NUL SOP Instance UID -> ""

Each record counts its instances and bytes and how many of them are in each tier
(hot, warm, central), so an answer says where the copy is (Instance Availability)
without reading an instance record. A record goes when its last instance does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

if TYPE_CHECKING:
    from storage.index import Instance

SEP = b"\0"
# The fields of the study record that come from its instances (the latest wins).
STUDY_FIELDS = (
    "patient_id",
    "issuer_of_patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "study_id",
    "accession_number",
    "study_description",
    "referring_physician_name",
)
SERIES_FIELDS = (
    "study_instance_uid",
    "modality",
    "series_number",
    "series_description",
    "series_date",
    "body_part_examined",
)
PATIENT_FIELDS = ("patient_name", "issuer_of_patient_id", "patient_birth_date", "patient_sex")


def name_keys(name: str) -> set[str]:
    """A PatientName as it is searched: each of its component groups (alphabetic,
    ideographic, phonetic), upper case."""
    return {group.upper() for group in name.split("=") if group}


# A study's search keys: its record's field -> the key's prefix in study_keys, then
# the patient name's component groups and the modalities (see _study_keys).
_KEYED = (("patient_id", b"pid"), ("accession_number", b"acc"), ("study_date", b"date"))


def _study_keys(uid: str, record: dict[str, Any]) -> set[bytes]:
    tail = SEP + uid.encode()
    keys = set()
    for name, prefix in _KEYED:
        if value := record.get(name, ""):
            keys.add(prefix + SEP + value.encode() + tail)
    for group in name_keys(record.get("patient_name", "")):
        keys.add(b"name" + SEP + group.encode() + tail)
    for modality in record.get("modalities", {}):
        keys.add(b"mod" + SEP + modality.encode() + tail)
    return keys


def _same_keys(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two records of one study give the same study_keys, without building them."""
    return (
        all(before.get(name) == after.get(name) for name, _ in _KEYED)
        and before.get("patient_name") == after.get("patient_name")
        and before.get("modalities", {}).keys() == after.get("modalities", {}).keys()
    )


@dataclass
class Catalog:
    env: lmdb.Environment

    def __post_init__(self) -> None:
        # Within `batch`: records read and changed in this transaction, and the
        # studies' records as they were before it (for their keys), written once.
        # Shared by the threads that write, safely: only the holder of LMDB's one write
        # transaction stages, and `batch` ends before that transaction commits.
        self._staged: dict[tuple[bytes, str], dict[str, Any] | None] | None = None
        self._before: dict[str, dict[str, Any] | None] = {}
        self.studies = self.env.open_db(b"studies")
        self.series = self.env.open_db(b"series")
        self.patients = self.env.open_db(b"patients")
        self.study_keys = self.env.open_db(b"study_keys")
        self.series_of = self.env.open_db(b"series_of")
        self.instances_of = self.env.open_db(b"instances_of")
        self._dbs = {b"studies": self.studies, b"series": self.series, b"patients": self.patients}

    # ---- writing (inside the index's write transaction) -----------------------------

    @contextmanager
    def batch(self, txn: lmdb.Transaction) -> Iterator[None]:
        """Stage record changes for the rest of this transaction and write each
        record (and a study's keys) once at the end: a group commit's instances
        mostly share their series, study and patient."""
        self._staged, self._before = {}, {}
        try:
            yield
            for (name, uid), record in self._staged.items():
                db = self._dbs[name]
                if record is None:
                    txn.delete(uid.encode(), db=db)
                else:
                    _put(txn, db, uid, record)
            for uid, before in self._before.items():
                self._rekey(txn, uid, before, self._staged.get((b"studies", uid)))
        finally:
            self._staged, self._before = None, {}

    def _read(self, txn: lmdb.Transaction, name: bytes, uid: str) -> dict[str, Any] | None:
        if self._staged is None:
            return _get(txn, self._dbs[name], uid)
        key = (name, uid)
        if key not in self._staged:
            self._staged[key] = _get(txn, self._dbs[name], uid)
            if name == b"studies":
                self._before[uid] = self._staged[key]
        return self._staged[key]

    def _write(
        self, txn: lmdb.Transaction, name: bytes, uid: str, record: dict[str, Any] | None
    ) -> None:
        if self._staged is not None:
            self._staged[(name, uid)] = record
        elif record is None:
            txn.delete(uid.encode(), db=self._dbs[name])
        else:
            _put(txn, self._dbs[name], uid, record)

    def clear(self, txn: lmdb.Transaction) -> None:
        """Empty every catalog database (before a rebuild from the instances)."""
        for db in (
            self.studies,
            self.series,
            self.patients,
            self.study_keys,
            self.series_of,
            self.instances_of,
        ):
            txn.drop(db, delete=False)

    def account(self, txn: lmdb.Transaction, instance: Instance, sign: int) -> None:
        """Add (+1) or remove (-1) an instance from its series, study and patient."""
        study_uid, series_uid = instance.study_instance_uid, instance.series_instance_uid
        series_key = series_uid.encode() + SEP + instance.sop_instance_uid.encode()
        if sign > 0:
            txn.put(series_key, b"", db=self.instances_of)
        else:
            txn.delete(series_key, db=self.instances_of)
        series_before, series_after = self._update(
            txn, b"series", series_uid, instance, sign, SERIES_FIELDS
        )
        if (series_before is None) != (series_after is None):
            link = study_uid.encode() + SEP + series_uid.encode()
            if series_after is not None:
                txn.put(link, b"", db=self.series_of)
            else:
                txn.delete(link, db=self.series_of)
        series_change = (series_after is not None) - (series_before is not None)
        before, after = self._update(
            txn, b"studies", study_uid, instance, sign, STUDY_FIELDS, series_change
        )
        if self._staged is None:
            self._rekey(txn, study_uid, before, after)
        self._patient(txn, instance, sign, (after is not None) - (before is not None))

    def retier(self, txn: lmdb.Transaction, instance: Instance, old_tier: str) -> None:
        """The instance moved from `old_tier` to its tier now."""
        for name, uid in (
            (b"series", instance.series_instance_uid),
            (b"studies", instance.study_instance_uid),
        ):
            found = self._read(txn, name, uid)
            if found is None:
                continue
            record = dict(found)
            tiers = dict(record.get("tiers", {}))
            tiers[old_tier] = tiers.get(old_tier, 0) - 1
            tiers[instance.tier] = tiers.get(instance.tier, 0) + 1
            record["tiers"] = tiers
            self._write(txn, name, uid, record)

    def _update(
        self,
        txn: lmdb.Transaction,
        name: bytes,
        uid: str,
        instance: Instance,
        sign: int,
        fields: tuple[str, ...],
        series_change: int = 0,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Count the instance in (or out of) the record of `uid`: (before, after)."""
        before = self._read(txn, name, uid)
        record: dict[str, Any] = (
            dict(before) if before else {"instances": 0, "bytes": 0, "series": 0}
        )
        record["tiers"] = dict(record.get("tiers", {}))
        record["instances"] += sign
        record["bytes"] += sign * instance.dataset_length
        record["series"] = record.get("series", 0) + series_change
        record["tiers"][instance.tier] = record["tiers"].get(instance.tier, 0) + sign
        if name == b"studies" and instance.modality:
            modalities = dict(record.get("modalities", {}))
            modalities[instance.modality] = modalities.get(instance.modality, 0) + sign
            record["modalities"] = {m: n for m, n in modalities.items() if n > 0}
        if record["instances"] <= 0:
            self._write(txn, name, uid, None)
            return before, None
        if sign > 0:  # what the newest instance says, where it says anything
            given = instance.__dict__  # these fields are all strings: no field() per key
            record.update({key: value for key in fields if (value := given.get(key))})
        self._write(txn, name, uid, record)
        return before, record

    def _rekey(
        self,
        txn: lmdb.Transaction,
        uid: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        if before and after and _same_keys(before, after):
            return  # the usual case: one more instance of a study, its keys unchanged
        old = _study_keys(uid, before) if before else set()
        new = _study_keys(uid, after) if after else set()
        for key in old - new:
            txn.delete(key, db=self.study_keys)
        for key in new - old:
            txn.put(key, b"", db=self.study_keys)

    def _patient(self, txn: lmdb.Transaction, instance: Instance, sign: int, studies: int) -> None:
        if not instance.patient_id:
            return
        found = self._read(txn, b"patients", instance.patient_id)
        record: dict[str, Any] = dict(found) if found else {"studies": 0, "instances": 0}
        record["studies"] += studies
        record["instances"] += sign
        if record["instances"] <= 0:
            self._write(txn, b"patients", instance.patient_id, None)
            return
        if sign > 0:
            given = instance.__dict__
            record.update({name: value for name in PATIENT_FIELDS if (value := given.get(name))})
        self._write(txn, b"patients", instance.patient_id, record)

    # ---- reading ----------------------------------------------------------------------

    def study(self, txn: lmdb.Transaction, uid: str) -> dict[str, Any] | None:
        return _get(txn, self.studies, uid)

    def series_record(self, txn: lmdb.Transaction, uid: str) -> dict[str, Any] | None:
        return _get(txn, self.series, uid)

    def patient(self, txn: lmdb.Transaction, patient_id: str) -> dict[str, Any] | None:
        return _get(txn, self.patients, patient_id)

    def studies_by(
        self, txn: lmdb.Transaction, field: bytes, low: str, high: str | None = None
    ) -> Iterator[str]:
        """Study UIDs whose `field` key is `low` (high None), starts with `low`
        (high ""), or lies in [low, high] (as text: dates compare as text)."""
        prefix = field + SEP
        start = prefix + low.encode()
        cursor = txn.cursor(db=self.study_keys)
        if not cursor.set_range(start):
            return
        for raw in cursor.iternext(values=False):
            key = bytes(raw)
            if not key.startswith(prefix):
                return
            value, _, uid = key[len(prefix) :].rpartition(SEP)
            text = value.decode("utf-8", "replace")
            if high is None:
                if text != low:
                    return
            elif high == "":
                if not text.startswith(low):
                    return
            elif text > high:
                return
            yield uid.decode()

    def children(self, txn: lmdb.Transaction, db: Any, parent: str) -> Iterator[str]:
        """UIDs under `parent` in series_of or instances_of."""
        prefix = parent.encode() + SEP
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        for raw in cursor.iternext(values=False):
            key = bytes(raw)
            if not key.startswith(prefix):
                return
            yield key[len(prefix) :].decode()

    def all_studies(self, txn: lmdb.Transaction) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, raw in txn.cursor(db=self.studies):
            yield bytes(key).decode(), orjson.loads(bytes(raw))

    def all_study_uids(self, txn: lmdb.Transaction) -> Iterator[str]:
        """Keys only: the caller reads the records it keeps (a page, not all of them)."""
        for key in txn.cursor(db=self.studies).iternext(values=False):
            yield bytes(key).decode()

    def all_patients(self, txn: lmdb.Transaction) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, raw in txn.cursor(db=self.patients):
            yield bytes(key).decode(), json.loads(bytes(raw))


def _get(txn: lmdb.Transaction, db: Any, uid: str) -> dict[str, Any] | None:
    raw = txn.get(uid.encode(), db=db)
    return None if raw is None else dict(orjson.loads(raw))


def _put(txn: lmdb.Transaction, db: Any, uid: str, record: dict[str, Any]) -> None:
    txn.put(uid.encode(), orjson.dumps(record), db=db)
