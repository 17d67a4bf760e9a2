"""The LMDB index of stored objects: instances, series, studies and their totals.

Named databases in one environment (multi-process safe, one writer at a time):

    instances  SOP Instance UID -> instance record (JSON)
    objects    BLAKE3 hex -> how many instance records point at that file
    totals     "counts" -> instances, bytes and each tier's objects and bytes, as
               eight little-endian int64 (one record: decision 42);
               "schema"; "catalog_damaged" while a rebuild of the catalog is due,
               "recount_due" while the counts are one object off (a damaged record
               was replaced)
    by_age     tier NUL received_at (µs, 8 bytes big-endian) SOP Instance UID -> ""
               the objects kept on this node, oldest first per tier (storage.tiers)

An instance lives in one tier: "hot" (objects/, as received), "warm" (warm/, a
compressed file that restores byte for byte) or "central" (purged here once every
destination it was routed to committed it; the record stays, so it can be recalled).

Studies, series, patients and the keys that find them are storage.catalog's, kept
in the same transactions.

`Index.apply` writes one batch in ONE write transaction: that is the group commit
(storage.committer), and the forward jobs of each new instance (storage.queue) go
into that same transaction.
"""

from __future__ import annotations

import enum
import logging
import operator
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Literal

import lmdb
import orjson
from pydantic import ByteSize

from storage.catalog import Catalog
from storage.mpps import MppsLog
from storage.patients import PatientLog
from storage.queue import Job, Queues, Settlement, Target
from storage.reserve import Reserve, used_bytes
from storage.worklist import WorklistCache

log = logging.getLogger(__name__)

OnDuplicate = Literal["replace", "keep", "reject"]
# A share of its map the index may fill before `pacs-edge status` warns (the alerts in
# monitoring/prometheus/alerts.yml ticket at this share and page at 0.95).
INDEX_FILLING = 0.8


class IndexOpenError(RuntimeError):
    """The index cannot be opened: why, and what to do, for the operator."""


class DamagedRecord(ValueError):
    """An instance record that does not decode. Only its own instance needs it: the
    next copy of that object to arrive takes its place (`Index._apply_one`)."""


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
    tier: str = "hot"  # "hot", "warm" or "central" (see the module docstring)
    stored_length: int = 0  # bytes of its file on this node; 0 for "central"
    destinations: tuple[str, ...] = ()  # where it was routed when it was indexed
    # What queries answer with besides the above (records older than Q/R lack them).
    issuer_of_patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_time: str = ""
    study_id: str = ""
    referring_physician_name: str = ""
    series_description: str = ""
    series_date: str = ""
    body_part_examined: str = ""
    number_of_frames: str = ""
    # Demographics corrected since it was stored (HL7 ADT: storage.patients), keyword ->
    # value: applied to every copy that leaves (forwarding, C-MOVE, C-GET, WADO); the
    # stored bytes stay as the device sent them.
    corrections: dict[str, str] = dataclass_field(default_factory=dict)

    @property
    def local_length(self) -> int:
        """Bytes its file takes here (records older than tiers lack stored_length)."""
        if self.tier == "central":
            return 0
        return self.stored_length or self.meta_length + self.dataset_length

    def encode(self) -> bytes:
        # Its fields are strings, numbers, a tuple and a flat dict: the shallow
        # __dict__ serializes as asdict() would, without its deep copy (29 us of the
        # 37 us this took per object with json; ~2 us now).
        return orjson.dumps(self.__dict__)

    @classmethod
    def of(cls, values: dict[str, Any]) -> Instance:
        """The record of `values` (field -> value), built as the dataclass would build
        it but ~3x faster: a frozen dataclass's __init__ takes every field as a keyword
        and sets each through object.__setattr__ (14 µs per decoded record, 5 this
        way), and records are built per stored object and per instance a query reads.
        Values with a field missing or unknown go through __init__, for its error."""
        if not (_REQUIRED <= values.keys() <= _FIELDS):
            return cls(**values)
        made = object.__new__(cls)
        own = made.__dict__
        own.update(_DEFAULTS)
        own["corrections"] = {}  # its default_factory: a dict of its own
        own.update(values)
        return made

    @classmethod
    def decode(cls, raw: bytes) -> Instance:
        try:
            values = orjson.loads(raw)
            values["destinations"] = tuple(values.get("destinations", ()))
            return cls.of(values)
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            raise DamagedRecord(f"instance record {bytes(raw[:60])!r}: {exc}") from exc


_FIELDS = frozenset(f.name for f in fields(Instance))
_DEFAULTS = {f.name: f.default for f in fields(Instance) if f.default is not MISSING}
_REQUIRED = _FIELDS - _DEFAULTS.keys() - {"corrections"}


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
    catalog_damaged: bool = False  # a rebuild at the next start is due (decision 40)


TIERS = ("hot", "warm", "central")
LOCAL_TIERS = ("hot", "warm")
# In totals: what the instance records sum to, as ONE record read and written once
# per write transaction (decision 42): instances, bytes, then each tier's instances
# and bytes (on this node; for "central", dataset bytes).
_COUNTS = b"counts"
_COUNTS_RECORD = struct.Struct("<8q")
_NO_COUNTS = (0,) * 8
_TIER_SLOT = {tier: 2 + 2 * n for n, tier in enumerate(TIERS)}  # its objects; +1 its bytes
# Schema 3 kept each of those counts under a key of its own, in this order.
_SCHEMA_3_COUNTERS = (
    b"instances",
    b"bytes",
    *(f"tier:{tier}:{what}".encode() for tier in TIERS for what in ("objects", "bytes")),
)
_SCHEMA = b"schema"  # in totals: 2 by_age and tier counts, 3 the catalog, 4 one counts record
_SCHEMA_NOW = 4
_CATALOG_DAMAGED = b"catalog_damaged"  # in totals: rebuild the catalog at the next start
# In totals: a damaged instance record was replaced, so its tier, size and catalog
# counts could not be taken out; the next start counts everything again.
_RECOUNT_DUE = b"recount_due"


_MOVE = b"tier_move"


class _Counting:
    """Gathers a write transaction's changes to the counts (`Index._deltas`) and
    writes them once, at its end: one read and one write of one record per group
    commit, where a key per count cost eight LMDB calls per object (decision 42).
    A class, not a @contextmanager generator: it runs per commit."""

    __slots__ = ("_index", "_txn")

    def __init__(self, index: Index, txn: lmdb.Transaction) -> None:
        self._index, self._txn = index, txn

    def __enter__(self) -> None:
        self._index._deltas = [0] * len(_NO_COUNTS)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        index = self._index
        deltas, index._deltas = index._deltas, []
        if kind is None:
            index._write_counts(self._txn, deltas)


def with_demographics(instance: Instance, values: dict[str, str], correct: bool) -> Instance:
    """The record with new patient demographics (keyword -> value: PatientName,
    PatientID, IssuerOfPatientID, PatientBirthDate, PatientSex); with `correct`, they
    also join the corrections every copy that leaves gets."""
    return replace(
        instance,
        patient_name=values.get("PatientName", instance.patient_name),
        patient_id=values.get("PatientID", instance.patient_id),
        issuer_of_patient_id=values.get("IssuerOfPatientID", instance.issuer_of_patient_id),
        patient_birth_date=values.get("PatientBirthDate", instance.patient_birth_date),
        patient_sex=values.get("PatientSex", instance.patient_sex),
        corrections={**instance.corrections, **values} if correct else instance.corrections,
    )


def _key(uid: str) -> bytes:
    return uid.encode("ascii", "replace")


def _age_key(instance: Instance) -> bytes:
    micros = max(0, int(instance.received_at * 1e6))
    return (
        instance.tier.encode() + b"\0" + struct.pack(">Q", micros) + _key(instance.sop_instance_uid)
    )


def _as_stored(received: Instance, destinations: tuple[str, ...]) -> Instance:
    """A just-received instance as its record starts: hot, its whole file local."""
    stored_length = received.meta_length + received.dataset_length
    if (
        received.tier == "hot"
        and received.stored_length == stored_length
        and received.destinations == destinations
    ):
        return received  # built that way (engine.dicom.store): no 32-field copy
    return replace(
        received,
        tier="hot",
        stored_length=received.meta_length + received.dataset_length,
        destinations=destinations,
    )


_REPLACED = "replaced by the copy just received; the counts are redone at the next start"
_UNREADABLE = "read as absent until the object, sent again, replaces it"


def _readable(key: bytes, raw: bytes | memoryview, then: str) -> Instance | None:
    """The instance record under `key` (its SOP Instance UID), or None when it is
    damaged (decision 40): logged with `then`, what the caller does with it instead."""
    try:
        return Instance.decode(bytes(raw))
    except DamagedRecord as exc:
        log.error("index: instance %s: %s; %s", key.decode("ascii", "replace"), exc, then)
        return None


# Files to delete once a commit is durable: (BLAKE3 hex, tier it is in).
Unreferenced = list[tuple[str, str]]


@dataclass(frozen=True)
class Recalled:
    """In place of routing targets: the object came back from `source` on a C-MOVE
    we asked for (engine.forward.recall). It is the local copy now, is not forwarded again,
    and counts as committed at `source`, which just sent it."""

    source: str


class Index:
    def __init__(self, path: Path, map_size: int, durable: bool) -> None:
        # sync/metasync off only with durability = "os": then the OS decides when.
        try:
            self._env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=48,  # 24 in use: catalog, queues, worklist, MPPS, HL7 (room to grow)
                sync=durable,
                metasync=durable,
                readahead=False,
            )
        except lmdb.MemoryError as exc:
            raise IndexOpenError(
                f"cannot map the index ({exc}) with storage.index_map_size = "
                f"{ByteSize(map_size).human_readable()}: this process may not take that "
                "much address space "
                "(ulimit -v, a container's limit). Lift the limit, or lower "
                "storage.index_map_size (it must stay above the index's size)"
            ) from exc
        except lmdb.Error as exc:
            raise IndexOpenError(f"cannot open the index: {exc}") from exc
        self._page = int(self._env.stat()["psize"])
        self._instances = self._env.open_db(b"instances")
        self.catalog = Catalog(self._env)
        self._objects = self._env.open_db(b"objects")
        self._totals = self._env.open_db(b"totals")
        self._by_age = self._env.open_db(b"by_age")
        # The tier move in flight (at most one: the lifecycle worker moves one object
        # at a time), so start-up can delete the file a crash left behind.
        self._moves = self._env.open_db(b"tier_moves")
        self.queues = Queues(self._env)
        self.worklist = WorklistCache(self._env)
        self.mpps = MppsLog(self._env, self.queues)
        self.patients = PatientLog(self._env)
        # Inside `_Counting`: this write transaction's changes to the counts, by slot
        # of _COUNTS_RECORD. Empty outside one, so a count changed outside fails loudly.
        # Shared by the threads that write, safely: only the holder of LMDB's one
        # write transaction counts, and `_Counting` ends before it commits.
        self._deltas: list[int] = []
        # Only a durable index syncs its commits; the OS writes the other's in its time.
        self._reserve = Reserve(self._env, path / "data.mdb", map_size) if durable else None
        self.top_up_reserve()

    def top_up_reserve(self) -> None:
        """Keep zeros written ahead of LMDB's last page (durable only): after a
        commit, off the path of the stores it answered (storage.reserve)."""
        if self._reserve is not None:
            self._reserve.top_up()

    def close(self) -> None:
        self._env.close()

    def space(self) -> tuple[int, int]:
        """(bytes up to LMDB's last page, the map's size): once the first would pass
        the second, every write is refused (storage.index_map_size). Pages freed below
        the last are reused first, so the first is a high-water mark, never an
        underestimate."""
        return used_bytes(self._env, self._page), int(self._env.info()["map_size"])

    def check_readers(self) -> int:
        """Free reader slots of processes that died (a killed worker's)."""
        return int(self._env.reader_check())

    def get(self, sop_instance_uid: str) -> Instance | None:
        with self._env.begin() as txn:
            return self.get_in(txn, sop_instance_uid)

    def get_in(self, txn: lmdb.Transaction, sop_instance_uid: str) -> Instance | None:
        """The record, or None, also for a damaged one (logged): every reader then
        treats it as gone (a query leaves it out, a retrieve or a forward job counts it
        failed) rather than failing on it (decision 40)."""
        key = _key(sop_instance_uid)
        raw = txn.get(key, db=self._instances)
        return None if raw is None else _readable(key, raw, _UNREADABLE)

    def instances(self) -> Iterator[Instance]:
        """Every readable record; a damaged one is logged and passed by."""
        with self._env.begin(db=self._instances) as txn:
            for key, raw in txn.cursor():
                instance = _readable(
                    bytes(key), raw, "passed by; the object, sent again, replaces it"
                )
                if instance is not None:
                    yield instance

    def upgrade(self) -> int:
        """Bring an index written by an older version up to date; start-up only, before
        workers start. Schema 2 added by-age keys and tier counts (every object then
        hot); schema 3 the query catalog (storage.catalog). Both are rebuilt from the
        instance records, with every total, as they are when a damaged catalog record
        was found (`mark_catalog_damaged`) or a damaged instance record replaced.
        Schema 4 gathered the counts into one record: moved, not recounted."""
        with self._env.begin(write=True) as txn, _Counting(self, txn):
            schema = int(txn.get(_SCHEMA, b"1", db=self._totals))
            damaged = txn.get(_CATALOG_DAMAGED, db=self._totals) is not None
            recount = txn.get(_RECOUNT_DUE, db=self._totals) is not None
            if schema == 3 and not damaged and not recount:
                self._gather_schema_3_counts(txn)
                return 0
            if schema >= _SCHEMA_NOW and not damaged and not recount:
                return 0
            total = txn.stat(self._instances)["entries"]
            if total:
                why = (
                    "a damaged catalog record was found"
                    if damaged
                    else "a damaged instance record was replaced"
                    if recount
                    else f"schema {schema}"
                )
                log.warning(
                    "index: rebuilding the catalog and the counts from %d instance record(s) (%s)",
                    total,
                    why,
                )
            self._clear_counts(txn)
            count = skipped = 0
            for key, raw in txn.cursor(db=self._instances):
                instance = _readable(bytes(key), raw, "left out of the catalog and the counts")
                if instance is None:
                    skipped += 1
                    continue
                self._total(txn, instance, +1)
                if instance.study_instance_uid and instance.series_instance_uid:
                    self.catalog.account(txn, instance, +1)
                count += 1
                if count % 100_000 == 0:
                    log.info("index: %d of %d instance record(s) done", count, total)
            txn.put(_SCHEMA, str(_SCHEMA_NOW).encode(), db=self._totals)
        if total:
            log.info(
                "index: catalog and counts rebuilt from %d instance(s), schema %d",
                count,
                _SCHEMA_NOW,
            )
        if skipped:
            log.error(
                "index: %d damaged instance record(s) left out of the catalog; an object "
                "sent again replaces its damaged record",
                skipped,
            )
        return count

    def _gather_schema_3_counts(self, txn: lmdb.Transaction) -> None:
        """Schema 3 -> 4: the counts, each under a key of its own, into one record."""
        counts = [int(txn.get(name, b"0", db=self._totals)) for name in _SCHEMA_3_COUNTERS]
        for name in _SCHEMA_3_COUNTERS:
            txn.delete(name, db=self._totals)
        txn.put(_COUNTS, _COUNTS_RECORD.pack(*counts), db=self._totals)
        txn.put(_SCHEMA, str(_SCHEMA_NOW).encode(), db=self._totals)
        log.info("index: counts gathered into one record (schema %d)", _SCHEMA_NOW)

    def _clear_counts(self, txn: lmdb.Transaction) -> None:
        """Everything the instance records are summed into, but the file reference
        counts: a damaged record's file keeps its count, so it is never deleted."""
        self.catalog.clear(txn)
        txn.drop(self._by_age, delete=False)
        for name in (_COUNTS, *_SCHEMA_3_COUNTERS, _CATALOG_DAMAGED, _RECOUNT_DUE):
            txn.delete(name, db=self._totals)

    def mark_catalog_damaged(self) -> bool:
        """A catalog record did not read: rebuild the catalog at the next start
        (`upgrade`), from the instance records, which it only summarises. False (and
        logged) when the mark itself could not be written."""
        try:
            with self._env.begin(write=True) as txn:
                txn.put(_CATALOG_DAMAGED, b"1", db=self._totals)
        except lmdb.Error as exc:
            log.error("index: could not mark the catalog for a rebuild: %s", exc)
            return False
        return True

    def by_age(self, tier: str, page: int = 256) -> Iterator[Instance]:
        """A local tier's instances, oldest received first. Read a page at a time,
        each in a short read transaction, so a long walk never pins old pages."""
        prefix = tier.encode() + b"\0"
        start = prefix
        damaged = f"the {tier} tier's walk passes it by"
        while True:
            found: list[Instance] = []
            walked = 0
            with self._env.begin() as txn:
                cursor = txn.cursor(db=self._by_age)
                if not cursor.set_range(start):
                    return
                for raw_key in cursor.iternext(values=False):
                    key = bytes(raw_key)
                    if not key.startswith(prefix):
                        break
                    if key == start and start != prefix:
                        continue  # the last key of the page before
                    if walked >= page:
                        break
                    start = key
                    walked += 1
                    uid = key[len(prefix) + 8 :]
                    raw = txn.get(uid, db=self._instances)
                    instance = None if raw is None else _readable(uid, raw, damaged)
                    if instance is not None:
                        found.append(instance)
            if not walked:
                return
            yield from found

    def begin_tier_move(self, instance: Instance, tier: str) -> None:
        """Journal a move of `instance` to `tier` before its first file is written (a
        warm copy): a crash between that file and `set_tier` leaves it behind, and
        `tier_move` tells start-up which it is. A durable transaction of its own."""
        with self._env.begin(write=True) as txn:
            self._journal(txn, instance, tier)

    def _journal(self, txn: lmdb.Transaction, instance: Instance, tier: str) -> None:
        move = {
            "sop": instance.sop_instance_uid,
            "hash": instance.hash,
            "from": instance.tier,
            "to": tier,
        }
        txn.put(_MOVE, orjson.dumps(move), db=self._moves)

    def tier_move(self) -> dict[str, str] | None:
        """The last tier move journalled: {"sop", "hash", "from", "to"}, or None."""
        with self._env.begin(db=self._moves) as txn:
            raw = txn.get(_MOVE)
        return None if raw is None else dict(orjson.loads(raw))

    def end_tier_move(self) -> None:
        with self._env.begin(write=True, db=self._moves) as txn:
            txn.delete(_MOVE)

    def holds(self, sop_instance_uid: str, blake3_hex: str, tier: str) -> bool:
        """Whether the file of `blake3_hex` in `tier` is still needed: the instance's
        record is that version in that tier, or (its record gone or another version)
        any record still counts the file."""
        with self._env.begin() as txn:
            raw = txn.get(_key(sop_instance_uid), db=self._instances)
            record = None if raw is None else Instance.decode(bytes(raw))
            if record is not None and record.hash == blake3_hex:
                return record.tier == tier
            return int(txn.get(blake3_hex.encode(), b"0", db=self._objects)) > 0

    def set_tier(
        self, sop_instance_uid: str, blake3_hex: str, tier: str, stored_length: int
    ) -> Instance | None:
        """Move an instance to another tier, in one durable transaction that also
        journals the move (see `begin_tier_move`: the old tier's file is deleted after
        it). None (nothing changed) if its record is gone, holds another version, is
        already there, or shares its file with another record."""
        with self._env.begin(write=True) as txn, _Counting(self, txn):
            raw = txn.get(_key(sop_instance_uid), db=self._instances)
            if raw is None:
                return None
            old = Instance.decode(bytes(raw))
            refs = int(txn.get(blake3_hex.encode(), b"0", db=self._objects))
            if old.hash != blake3_hex or old.tier == tier or refs > 1:
                return None
            self._journal(txn, old, tier)
            return self._retier(txn, old, replace(old, tier=tier, stored_length=stored_length))

    def tier_totals(self) -> dict[str, tuple[int, int]]:
        """Per tier: (instances, bytes on this node; for "central", dataset bytes)."""
        with self._env.begin() as txn:
            counts = self._counts(txn)
        return {tier: (counts[slot], counts[slot + 1]) for tier, slot in _TIER_SLOT.items()}

    def totals(self) -> Totals:
        with self._env.begin() as txn:
            counts = self._counts(txn)
            return Totals(
                instances=counts[0],
                bytes=counts[1],
                series=txn.stat(self.catalog.series)["entries"],
                studies=txn.stat(self.catalog.studies)["entries"],
                catalog_damaged=txn.get(_CATALOG_DAMAGED, db=self._totals) is not None,
            )

    def _counts(self, txn: lmdb.Transaction) -> tuple[int, ...]:
        raw = txn.get(_COUNTS, db=self._totals)
        return _NO_COUNTS if raw is None else _COUNTS_RECORD.unpack(raw)

    def _write_counts(self, txn: lmdb.Transaction, deltas: list[int]) -> None:
        if any(deltas):
            updated = _COUNTS_RECORD.pack(*map(operator.add, self._counts(txn), deltas))
            txn.put(_COUNTS, updated, db=self._totals)

    def apply(
        self,
        batch: list[tuple[Instance, list[Target] | Recalled]],
        on_duplicate: OnDuplicate,
        settlements: Sequence[Settlement] = (),
    ) -> tuple[list[Outcome], Unreferenced, list[Job]]:
        """Index a batch, with the forward jobs of what is new, and record the
        forwarder's `settlements`, in one durable transaction.

        Returns each instance's outcome, the files no record points at any more (to
        delete after the commit) and the jobs queued.
        """
        outcomes: list[Outcome] = []
        unreferenced: Unreferenced = []
        jobs: list[Job] = []
        with (
            self._env.begin(write=True) as txn,
            self.catalog.batch(txn),
            _Counting(self, txn),
        ):
            self.queues.settle_in(txn, list(settlements))
            for received, targets in batch:
                if isinstance(targets, Recalled):
                    outcome, freed = self._apply_recalled(txn, received, targets.source)
                    outcomes.append(outcome)
                    unreferenced.extend(freed)
                    continue
                instance = _as_stored(received, tuple(t.destination for t in targets))
                key = _key(instance.sop_instance_uid)
                old = self._stored(txn, key)
                outcome, freed = self._apply_one(txn, key, instance, old, on_duplicate)
                outcomes.append(outcome)
                unreferenced.extend(freed)
                if outcome in (Outcome.STORED, Outcome.REPLACED) and targets:
                    jobs += self.queues.enqueue(
                        txn,
                        instance.sop_instance_uid,
                        instance.sop_class_uid,
                        instance.study_instance_uid,
                        instance.dataset_length,
                        instance.hash,
                        targets,
                    )
        return outcomes, unreferenced, jobs

    def _apply_one(
        self,
        txn: lmdb.Transaction,
        key: bytes,
        new: Instance,
        old: Instance | None,
        on_duplicate: OnDuplicate,
        renew: bool = False,
    ) -> tuple[Outcome, Unreferenced]:
        """Index `new` under `key` over `old`, the record `_stored` read there.
        `renew`: an identical object makes the record young again (a recall)."""
        if old is not None:
            if old.hash == new.hash:
                if old.tier == "hot" and not renew:
                    return Outcome.IDENTICAL, []
                # Sent again after it went warm or central: the fresh hot file is
                # the copy now, and the warm one goes.
                received_at = new.received_at if renew else old.received_at
                restored = replace(
                    old, tier="hot", stored_length=new.stored_length, received_at=received_at
                )
                self._retier(txn, old, restored)
                return Outcome.IDENTICAL, [(old.hash, "warm")] if old.tier == "warm" else []
            if on_duplicate == "keep":
                return Outcome.KEPT, self._unreferenced(txn, new.hash)
            if on_duplicate == "reject":
                return Outcome.REJECTED, self._unreferenced(txn, new.hash)
            self._account(txn, old, -1)
            txn.put(key, new.encode(), db=self._instances)
            self._account(txn, new, +1)
            return Outcome.REPLACED, self._release(txn, old)
        txn.put(key, new.encode(), db=self._instances)
        self._account(txn, new, +1)
        return Outcome.STORED, []

    def _stored(self, txn: lmdb.Transaction, key: bytes) -> Instance | None:
        """The record a new copy is indexed over. A damaged one reads as None: the
        copy takes its place (sending an object again mends its record), and its part
        stays in the counts, which cannot read it, until the next start redoes them."""
        raw = txn.get(key, db=self._instances)
        if raw is None:
            return None
        old = _readable(key, raw, _REPLACED)
        if old is None:
            txn.put(_RECOUNT_DUE, b"1", db=self._totals)
        return old

    def _apply_recalled(
        self, txn: lmdb.Transaction, received: Instance, source: str
    ) -> tuple[Outcome, Unreferenced]:
        """What the archive sent back replaces (or renews) the record, as the archive
        holds it: routed where the record was, committed at `source`, no new jobs."""
        key = _key(received.sop_instance_uid)
        old = self._stored(txn, key)
        new = _as_stored(received, old.destinations if old and old.destinations else (source,))
        outcome, freed = self._apply_one(txn, key, new, old, "replace", renew=True)
        self.queues.mark_delivered(txn, source, new.sop_instance_uid, new.hash, "committed")
        return outcome, freed

    def correct(
        self,
        changes: list[tuple[Instance, Instance]],
        also: Callable[[lmdb.Transaction], None] | None = None,
    ) -> None:
        """Replace instance records (demographics changed) and their catalog entries,
        with `also`'s writes, in one transaction: all of it is durable, or none."""
        with self._env.begin(write=True) as txn, self.catalog.batch(txn):
            for old, new in changes:
                self.catalog.account(txn, old, -1)
                self.catalog.account(txn, new, +1)
                txn.put(_key(new.sop_instance_uid), new.encode(), db=self._instances)
            if also is not None:
                also(txn)

    def study(self, study_instance_uid: str) -> dict[str, Any] | None:
        with self._env.begin() as txn:
            return self.catalog.study(txn, study_instance_uid)

    def reading(self) -> lmdb.Transaction:
        """A read transaction (a context manager) for queries: one snapshot."""
        return self._env.begin()

    def _unreferenced(self, txn: lmdb.Transaction, blake3_hex: str) -> Unreferenced:
        """A file that was written but will not be indexed: delete it unless in use."""
        return [] if txn.get(blake3_hex.encode(), db=self._objects) else [(blake3_hex, "hot")]

    def _release(self, txn: lmdb.Transaction, old: Instance) -> Unreferenced:
        refs = self._bump(txn, self._objects, old.hash.encode(), -1)
        return [(old.hash, old.tier)] if refs == 0 and old.tier != "central" else []

    def _bump(self, txn: lmdb.Transaction, db: Any, key: bytes, delta: int) -> int:
        raw = txn.get(key, db=db)
        value = (0 if raw is None else int(raw)) + delta
        if value <= 0:
            txn.delete(key, db=db)
        else:
            txn.put(key, str(value).encode(), db=db)
        return value

    def _retier(self, txn: lmdb.Transaction, old: Instance, new: Instance) -> Instance:
        """Write `new` over `old` (same instance, same file) with its tier's accounting."""
        self._tier_account(txn, old, -1)
        self._tier_account(txn, new, +1)
        if old.tier != new.tier and old.study_instance_uid and old.series_instance_uid:
            self.catalog.retier(txn, new, old.tier)
        txn.put(_key(new.sop_instance_uid), new.encode(), db=self._instances)
        return new

    def _tier_account(self, txn: lmdb.Transaction, instance: Instance, sign: int) -> None:
        """Add or remove an instance's by-age key and its tier's counts."""
        if instance.tier in LOCAL_TIERS:
            if sign > 0:
                txn.put(_age_key(instance), b"", db=self._by_age)
            else:
                txn.delete(_age_key(instance), db=self._by_age)
        size = instance.local_length if instance.tier != "central" else instance.dataset_length
        slot = _TIER_SLOT[instance.tier]
        deltas = self._deltas
        deltas[slot] += sign
        deltas[slot + 1] += sign * size

    def _account(self, txn: lmdb.Transaction, instance: Instance, sign: int) -> None:
        """Add (sign=+1) or remove (-1) an instance from every count it is part of."""
        self._total(txn, instance, sign)
        if sign > 0:
            self._bump(txn, self._objects, instance.hash.encode(), +1)
        if not (instance.study_instance_uid and instance.series_instance_uid):
            log.warning(
                "instance %s lacks its study or series UID: stored, not counted in any study",
                instance.sop_instance_uid,
            )
            return
        self.catalog.account(txn, instance, sign)

    def _total(self, txn: lmdb.Transaction, instance: Instance, sign: int) -> None:
        """An instance's part of the totals: its tier's, the node's and its by-age key."""
        self._tier_account(txn, instance, sign)
        deltas = self._deltas
        deltas[0] += sign
        deltas[1] += sign * instance.dataset_length
