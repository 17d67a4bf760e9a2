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
What one instance does to the three records is core_rs's (its `catalog` module);
this module keeps them, their links and keys, and reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

import core_rs

if TYPE_CHECKING:
    from storage.index import Instance

SEP = b"\0"


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


@dataclass
class Catalog:
    env: lmdb.Environment

    def __post_init__(self) -> None:
        # Within `batch`: records read and changed in this transaction, and the
        # studies' records as they were before it (for their keys), written once.
        # Shared by the threads that write, safely: only the holder of LMDB's one write
        # transaction stages, and `batch` ends before that transaction commits.
        self._staged: dict[tuple[bytes, str], bytes | None] | None = None
        self._before: dict[str, bytes | None] = {}
        self._rekey_due: set[str] = set()  # studies whose keys may have changed
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
        self._staged, self._before, self._rekey_due = {}, {}, set()
        try:
            yield
            for (name, uid), raw in self._staged.items():
                self._put(txn, name, uid, raw)
            for uid in self._rekey_due:
                self._rekey(txn, uid, self._before.get(uid), self._staged.get((b"studies", uid)))
        finally:
            self._staged, self._before, self._rekey_due = None, {}, set()

    def _read(self, txn: lmdb.Transaction, name: bytes, uid: str) -> bytes | None:
        """A record as stored (JSON), or as staged in this batch."""
        if self._staged is None:
            return _raw(txn, self._dbs[name], uid)
        key = (name, uid)
        if key not in self._staged:
            self._staged[key] = _raw(txn, self._dbs[name], uid)
            if name == b"studies":
                self._before[uid] = self._staged[key]
        return self._staged[key]

    def _write(self, txn: lmdb.Transaction, name: bytes, uid: str, raw: bytes | None) -> None:
        if self._staged is not None:
            self._staged[(name, uid)] = raw
        else:
            self._put(txn, name, uid, raw)

    def _put(self, txn: lmdb.Transaction, name: bytes, uid: str, raw: bytes | None) -> None:
        if raw is None:
            txn.delete(uid.encode(), db=self._dbs[name])
        else:
            txn.put(uid.encode(), raw, db=self._dbs[name])

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
        """Add (+1) or remove (-1) an instance from its series, study and patient.
        What that does to each record is core_rs's (`catalog_count`): it runs for
        every object stored, so it is not interpreter time."""
        study_uid, series_uid = instance.study_instance_uid, instance.series_instance_uid
        patient_id = instance.patient_id
        series_key = series_uid.encode() + SEP + instance.sop_instance_uid.encode()
        if sign > 0:
            txn.put(series_key, b"", db=self.instances_of)
        else:
            txn.delete(series_key, db=self.instances_of)
        study_before = self._read(txn, b"studies", study_uid)
        try:
            series, study, patient, link, rekey = core_rs.catalog_count(
                self._read(txn, b"series", series_uid),
                study_before,
                self._read(txn, b"patients", patient_id) if patient_id else None,
                instance.__dict__,
                sign,
            )
        except core_rs.RecordError as exc:  # say whose, for the log
            raise core_rs.RecordError(
                f"{exc} (series {series_uid}, study {study_uid}, patient {patient_id!r})"
            ) from exc
        if link:
            key = study_uid.encode() + SEP + series_uid.encode()
            if link > 0:
                txn.put(key, b"", db=self.series_of)
            else:
                txn.delete(key, db=self.series_of)
        self._write(txn, b"series", series_uid, series)
        self._write(txn, b"studies", study_uid, study)
        if patient_id:
            self._write(txn, b"patients", patient_id, patient)
        if not rekey:
            return
        if self._staged is None:
            self._rekey(txn, study_uid, study_before, study)
        else:
            self._rekey_due.add(study_uid)

    def retier(self, txn: lmdb.Transaction, instance: Instance, old_tier: str) -> None:
        """The instance moved from `old_tier` to its tier now."""
        for name, uid in (
            (b"series", instance.series_instance_uid),
            (b"studies", instance.study_instance_uid),
        ):
            found = self._read(txn, name, uid)
            if found is not None:
                self._write(txn, name, uid, core_rs.catalog_retier(found, old_tier, instance.tier))

    def _rekey(
        self, txn: lmdb.Transaction, uid: str, before: bytes | None, after: bytes | None
    ) -> None:
        """Bring a study's search keys from what its record `before` gave to what it
        gives `after` (core_rs said they may differ)."""
        old = _study_keys(uid, orjson.loads(before)) if before else set()
        new = _study_keys(uid, orjson.loads(after)) if after else set()
        for key in old - new:
            txn.delete(key, db=self.study_keys)
        for key in new - old:
            txn.put(key, b"", db=self.study_keys)

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
            yield bytes(key).decode(), orjson.loads(bytes(raw))


def _raw(txn: lmdb.Transaction, db: Any, uid: str) -> bytes | None:
    raw = txn.get(uid.encode(), db=db)
    return None if raw is None else bytes(raw)  # the same object when it is bytes


def _get(txn: lmdb.Transaction, db: Any, uid: str) -> dict[str, Any] | None:
    raw = _raw(txn, db, uid)
    return None if raw is None else dict(orjson.loads(raw))
