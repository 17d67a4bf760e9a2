"""The mirrored Modality Worklist: items from upstream RIS sources, kept in LMDB so
every process of the node answers from the same copy, and matched locally with the
worklist's keys (PS3.4 K.6.1.2) when the RIS cannot be asked.

Named databases beside storage.index's:
    worklist       source NUL item key -> {"dataset": DICOM JSON, "at": time}
    worklist_meta  source -> {"refreshed_at": time, "error": last poll error}
    worklist_find  "acc" NUL Accession Number -> source NUL item key
                   "study" NUL Study Instance UID -> source NUL item key
                   (arriving images find their item without a scan)
An item's key is its Accession Number and Scheduled Procedure Step ID (or, without
them, its Study Instance UID): one entry per scheduled step, replaced when the RIS
sends it again. Items are kept as DICOM JSON (pydicom's), so what a modality gets
back from the cache is what the RIS sent, character set included.

Each process keeps the items it has decoded (`items`), by their LMDB key and bytes,
and decodes again only what changed: decoding all of a site's items per query
(pydicom's from_json, ~0.4 ms an item) cost 340 ms a query with 900 items. A query's
keys are compiled once (`match`), not per item.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydicom import DataElement, Dataset
from pydicom.datadict import dictionary_VR
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from storage.query import matcher

if TYPE_CHECKING:
    import lmdb

SEP = b"\0"
SPS = "ScheduledProcedureStepSequence"
_KINDS = {"PN": "name", "DA": "date", "TM": "time", "DT": "time", "UI": "uid"}


@dataclass(frozen=True)
class SourceState:
    items: int
    refreshed_at: float | None  # the last successful poll or forwarded query
    error: str


def item_key(ds: Dataset) -> str:
    accession = str(ds.get("AccessionNumber", "") or "")
    steps = ds.get(SPS) or []
    step = str(steps[0].get("ScheduledProcedureStepID", "") or "") if steps else ""
    if accession or step:
        return f"{accession}\\{step}"
    return str(ds.get("StudyInstanceUID", "") or "")


class WorklistCache:
    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self._items = env.open_db(b"worklist")
        self._meta = env.open_db(b"worklist_meta")
        self._find = env.open_db(b"worklist_find")
        # LMDB key -> (the bytes it was decoded from, the item): see the docstring.
        self._decoded: dict[bytes, tuple[bytes, Dataset]] = {}

    def replace(self, source: str, items: list[Dataset]) -> None:
        """A full poll's answer: the source's mirror becomes exactly `items`."""
        prefix = source.encode() + SEP
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor(db=self._items)
            if cursor.set_range(prefix):
                while bytes(cursor.key()).startswith(prefix):
                    for lookup in _lookups(_dataset(bytes(cursor.value()))):
                        txn.delete(lookup, db=self._find)
                    if not cursor.delete():
                        break
            self._put(txn, prefix, items)
            self._mark(txn, source, "")

    def merge(self, source: str, items: list[Dataset]) -> None:
        """A forwarded query's answers: new items added, known ones updated with the
        values the answer has (a modality asks for fewer keys than a poll does, so an
        answer must not replace the mirrored item whole)."""
        prefix = source.encode() + SEP
        with self._env.begin(write=True) as txn:
            merged = []
            for ds in items:
                raw = txn.get(prefix + item_key(ds).encode(), db=self._items)
                if raw is None:
                    merged.append(ds)
                    continue
                known = _dataset(bytes(raw))
                for element in ds:
                    if element.VR == "SQ" and element.keyword in known:
                        continue  # the poll's steps carry every key; keep them
                    if element.value not in (None, "", b"") or element.keyword not in known:
                        known[element.tag] = element
                merged.append(known)
            self._put(txn, prefix, merged)
            self._mark(txn, source, "")

    def failed(self, source: str, error: str) -> None:
        with self._env.begin(write=True) as txn:
            raw = txn.get(source.encode(), db=self._meta)
            meta = orjson.loads(raw) if raw else {"refreshed_at": None}
            meta["error"] = error[:500]
            txn.put(source.encode(), orjson.dumps(meta), db=self._meta)

    def error(self, source: str) -> str:
        """Why the source's last poll or forwarded query failed; "" once one answered."""
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(source.encode())
        return str(orjson.loads(raw).get("error", "")) if raw else ""

    def _put(self, txn: lmdb.Transaction, prefix: bytes, items: list[Dataset]) -> None:
        now = time.time()
        for ds in items:
            key = prefix + item_key(ds).encode()
            txn.put(key, orjson.dumps({"dataset": ds.to_json_dict(), "at": now}), db=self._items)
            for lookup in _lookups(ds):
                txn.put(lookup, key, db=self._find)

    def item_for(self, accession: str, study_uid: str) -> Dataset | None:
        """The mirrored item an arriving image belongs to: by its Accession Number,
        else its Study Instance UID."""
        with self._env.begin() as txn:
            for field, value in ((b"acc", accession), (b"study", study_uid)):
                if not value:
                    continue
                key = txn.get(field + SEP + value.encode(), db=self._find)
                if key is not None:
                    raw = txn.get(bytes(key), db=self._items)
                    if raw is not None:
                        return _dataset(bytes(raw))
        return None

    def _mark(self, txn: lmdb.Transaction, source: str, error: str) -> None:
        meta = {"refreshed_at": time.time(), "error": error}
        txn.put(source.encode(), orjson.dumps(meta), db=self._meta)

    def state(self, source: str) -> SourceState:
        prefix = source.encode() + SEP
        with self._env.begin() as txn:
            raw = txn.get(source.encode(), db=self._meta)
            meta: dict[str, Any] = orjson.loads(raw) if raw else {}
            count = 0
            cursor = txn.cursor(db=self._items)
            if cursor.set_range(prefix):
                for key in cursor.iternext(values=False):
                    if not bytes(key).startswith(prefix):
                        break
                    count += 1
        return SourceState(count, meta.get("refreshed_at"), meta.get("error", ""))

    def items(self, sources: list[str] | None = None) -> Iterator[Dataset]:
        """The mirrored items of `sources` (None: all), from one read snapshot."""
        prefixes = None if sources is None else tuple(s.encode() + SEP for s in sources)
        decoded, seen = self._decoded, set()
        with self._env.begin() as txn:
            for key_view, raw_view in txn.cursor(db=self._items):
                key = bytes(key_view)
                if prefixes is not None and not key.startswith(prefixes):
                    continue
                raw = bytes(raw_view)
                known = decoded.get(key)
                if known is None or known[0] != raw:
                    known = decoded[key] = (raw, _dataset(raw))
                seen.add(key)
                yield known[1]
        # A whole pass over these sources: forget what is gone from them. Queries run
        # on threads: list() copies the keys in one step under the GIL.
        for key in list(decoded):
            if key not in seen and (prefixes is None or key.startswith(prefixes)):
                decoded.pop(key, None)


def _dataset(raw: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Dataset.from_json(orjson.loads(raw)["dataset"])


def _lookups(ds: Dataset) -> list[bytes]:
    found = []
    for field, keyword in ((b"acc", "AccessionNumber"), (b"study", "StudyInstanceUID")):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            found.append(field + SEP + value.encode())
    return found


# ---- matching (PS3.4 K.6.1.2, C.2.2.2) -------------------------------------------------


_Tests = list[tuple[str, Callable[[str], bool]]]  # keyword, what its text must pass


def match(identifier: Dataset) -> Callable[[Dataset], bool]:
    """Whether an item answers `identifier`: every non-empty key matches, and the
    Scheduled Procedure Step Sequence's keys match one of the item's steps. The keys
    are compiled once per query, then tested per item."""
    top: _Tests = []
    sequences: list[tuple[str, _Tests]] = []
    for element in identifier:
        if element.tag.group in (0x0000, 0x0002, 0x0008) and element.keyword in (
            "SpecificCharacterSet",
            "",
        ):
            continue
        if element.VR == "SQ":
            wanted = element.value[0] if element.value else None
            keys = [e for e in wanted if e.VR != "SQ" and _text(e.value)] if wanted else []
            if keys:  # then the item needs a step that matches, if only universally
                sequences.append((element.keyword, _tests(keys)))
        else:
            top += _tests([element])

    def answers(item: Dataset) -> bool:
        if not _passes(top, item):
            return False
        return all(
            any(_passes(tests, step) for step in item.get(keyword) or [])
            for keyword, tests in sequences
        )

    return answers


def _tests(elements: Iterable[DataElement]) -> _Tests:
    tests: _Tests = []
    for element in elements:
        wanted, keyword = _text(element.value), element.keyword
        if not wanted or wanted == "*" or not keyword:
            continue  # universal matching
        try:
            kind = _KINDS.get(dictionary_VR(keyword), "text")
        except KeyError:
            continue  # a key this dictionary does not know is returned empty, not matched
        tests.append((keyword, matcher(kind, wanted)))
    return tests


def _passes(tests: _Tests, item: Dataset) -> bool:
    return all(test(_text(item.get(keyword, ""))) for keyword, test in tests)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def answer(identifier: Dataset, item: Dataset) -> Dataset:
    """The keys the identifier asks for, with the item's values (empty when the item
    has none: PS3.4 K.6.1.2.2), sequences item by item; the item's character set."""
    out = Dataset()
    if "SpecificCharacterSet" in item:
        out.SpecificCharacterSet = item.SpecificCharacterSet
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword == "SpecificCharacterSet" or element.tag.group == 0x0000:
            continue
        if element.VR == "SQ":
            template = element.value[0] if element.value else Dataset()
            have = item.get(keyword) or []
            out.add_new(element.tag, "SQ", Sequence([answer(template, one) for one in have]))
        elif keyword in item:
            out.add(copy.copy(item[keyword]))  # the item is kept decoded: never share
        else:
            out.add_new(element.tag, element.VR, None)
    return out
