"""Group commit: everything submitted since the last commit goes into one transaction.

Associations `submit_then(...)` (or `await submit(...)`); N parallel associations pay
for one commit instead of N, and each batch's answers are handed back in one call per
event loop. The queue is bounded by the association limit: each association waits for
its commit before it answers, and so before the peer sends the next object.

Where the commit runs depends on what it costs (docs/decisions/0030):
- durability "fsync": a thread owns the write transaction, because its commit syncs
  for milliseconds; while it syncs, the next batch gathers. Before the index commit,
  one filesystem sync makes every object file and rename of the batch durable: the
  objects are not synced one by one (docs/decisions/0031).
- durability "os": the commit only writes to the page cache, so it runs on the event
  loop, once per loop iteration for whatever arrived in it. No thread hop: no futex
  wake-up, no GIL hand-over, no scheduling delay on a busy machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb
from pydantic import ByteSize

import core_rs
from storage.index import Index, Instance, OnDuplicate, Outcome, Recalled
from storage.layout import DataLayout
from storage.queue import Job, Settlement, Target

log = logging.getLogger(__name__)

_EXPLAIN_EVERY = 60.0  # seconds between explanations of a full index in the log


class IndexUnavailable(Exception):
    """The index could not take the record (map full, disk error, a damaged record
    it would have to change): answer 0xA700."""


_VANISHED = "object file vanished before indexing; send again"


@dataclass
class CommitStats:
    batches: int = 0
    instances: int = 0
    largest_batch: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "instances": self.instances,
            "largest_batch": self.largest_batch,
            "failures": self.failures,
        }


Indexed = Callable[[Outcome | IndexUnavailable], None]


@dataclass(eq=False)  # one submission: equal only to itself
class _Pending:
    instance: Instance
    targets: list[Target] | Recalled
    path: str  # the object's file (a str: a Path per object cost ~5 µs of Python)
    deduplicated: bool
    done: Indexed  # called on `loop` with the outcome
    loop: asyncio.AbstractEventLoop = field(repr=False)


@dataclass(eq=False)
class _Settling:
    """The forwarder's record of what destinations answered."""

    settlements: list[Settlement]
    done: Callable[[IndexUnavailable | None], None]
    loop: asyncio.AbstractEventLoop = field(repr=False)


def settle_future(future: asyncio.Future[Any]) -> Callable[[Any], None]:
    """A callback that settles `future` with a result, or with an exception, unless
    its waiter was cancelled: how a coroutine waits for a `done` callback."""

    def settle(result: Any) -> None:
        if future.done():  # the waiting task was cancelled
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)

    return settle


class GroupCommitter:
    def __init__(
        self,
        index: Index,
        layout: DataLayout,
        on_duplicate: OnDuplicate,
        on_loop: bool = False,
        sync_files: bool = False,
    ) -> None:
        """`on_loop`: commit on the event loop that `start` runs in (durability "os").
        `sync_files`: make the batch's object files durable before indexing them
        (durability "fsync"); a sync takes milliseconds, so never with `on_loop`."""
        if on_loop and sync_files:
            raise ValueError("a committer that syncs files must not commit on the loop")
        self._sync_files = sync_files
        self._index = index
        self._layout = layout
        self._on_duplicate = on_duplicate
        self._queue: queue.SimpleQueue[_Pending | _Settling | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._on_loop = on_loop
        self._home: asyncio.AbstractEventLoop | None = None  # the loop `start` ran in
        self._home_thread = 0
        self._gathering: list[_Pending | _Settling] = []  # on_loop: this iteration's
        self.stats = CommitStats()
        self._catalog_marked = False  # a damaged catalog record: rebuild at next start
        self._full_explained_at = -_EXPLAIN_EVERY  # when a full index was last explained
        # Called after each commit with the jobs it queued, on the committing thread.
        self.on_jobs: Callable[[list[Job]], None] | None = None

    def start(self) -> None:
        self._home = asyncio.get_running_loop()
        self._home_thread = threading.get_ident()
        # Also on_loop: submissions from another loop or thread still go to the thread.
        self._thread.start()

    def _here(self) -> asyncio.AbstractEventLoop | None:
        """The caller's running loop. The home loop is recognised by thread, without
        asyncio.get_running_loop(): CPython 3.11 makes a getpid syscall in each call."""
        home = self._home
        if home is not None and threading.get_ident() == self._home_thread and home.is_running():
            return home  # one thread runs one loop at a time
        return _running_loop()

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._commit_gathered()
        self._queue.put(None)
        self._thread.join()

    def _put(self, item: _Pending | _Settling) -> None:
        if not self._on_loop or item.loop is not self._home:
            self._queue.put(item)
            return
        self._gathering.append(item)
        if len(self._gathering) == 1:  # the first this iteration: commit after the rest
            item.loop.call_soon(self._commit_gathered)

    def _commit_gathered(self) -> None:
        batch, self._gathering = self._gathering, []
        if batch:
            self._commit(batch, self._here())

    def submit_then(
        self,
        instance: Instance,
        targets: list[Target] | Recalled,
        path: str,
        deduplicated: bool,
        done: Indexed,
    ) -> None:
        """Index the object in the next group commit; then `done` is called once, on
        the caller's event loop, with its outcome or the IndexUnavailable. No task and
        no future per object: a batch's answers go back in one call per loop
        (docs/decisions/0041)."""
        loop = self._here() or asyncio.get_running_loop()
        self._put(_Pending(instance, targets, path, deduplicated, done, loop))

    async def submit(
        self,
        instance: Instance,
        targets: list[Target] | Recalled,
        path: str,
        deduplicated: bool,
    ) -> Outcome:
        """`submit_then` for a coroutine: the outcome, or IndexUnavailable raised."""
        loop = self._here() or asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._put(_Pending(instance, targets, path, deduplicated, settle_future(future), loop))
        return await future

    async def settle(self, settlements: list[Settlement]) -> None:
        """Record forward outcomes in the next group commit; returns once durable,
        so a job the destination acknowledged is not sent again after a crash."""
        loop = self._here() or asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._put(_Settling(settlements, settle_future(future), loop))
        await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch, None)

    def _commit(
        self,
        batch: list[_Pending | _Settling],
        here: asyncio.AbstractEventLoop | None,
        synced: bool = False,
    ) -> None:
        """`here`: the loop running on this thread, if any (its futures settle directly).
        `synced`: the batch's files are durable already (a batch committed again)."""
        settling: list[_Settling] = []
        ready: list[_Pending] = []
        lost: list[_Result] = []
        for item in batch:
            if isinstance(item, _Settling):
                settling.append(item)
            # An identical object found on disk may have been deleted since, by a
            # "replace" of the instance that owned it: then it is not indexed.
            elif item.deduplicated and not os.path.exists(item.path):
                lost.append((item, IndexUnavailable(_VANISHED)))
            else:
                ready.append(item)
        if lost:
            _resolve_all(here, lost)
        if ready and self._sync_files and not synced:
            ready = self._sync(ready)
        try:
            outcomes, unreferenced, jobs = self._index.apply(
                [(p.instance, p.targets) for p in ready],
                self._on_duplicate,
                [settlement for item in settling for settlement in item.settlements],
            )
        except core_rs.RecordError as exc:
            self._damaged([*ready, *settling], here, exc)
            return
        except (lmdb.Error, OSError) as exc:
            self._failed([*ready, *settling], here, exc)
            return
        self.stats.batches += 1
        self.stats.instances += len(ready)
        self.stats.largest_batch = max(self.stats.largest_batch, len(ready))
        _resolve_all(
            here, [*zip(ready, outcomes, strict=True), *((item, None) for item in settling)]
        )
        if jobs and self.on_jobs is not None:
            self.on_jobs(jobs)
        for blake3_hex, tier in unreferenced:
            path = self._layout.tier_path(tier, blake3_hex)
            if path is not None:
                path.unlink(missing_ok=True)
        if self._sync_files:  # answered already: the next batch waits, if any
            self._index.top_up_reserve()

    def _failed(
        self,
        items: list[_Pending | _Settling],
        here: asyncio.AbstractEventLoop | None,
        exc: Exception,
    ) -> None:
        self.stats.failures += 1
        instances = sum(isinstance(item, _Pending) for item in items)
        log.error("index commit of %d instance(s) failed: %s", instances, exc)
        if isinstance(exc, lmdb.MapFullError) and self._explain_full():
            used, size = self._index.space()
            log.error(
                "the index is full: %s used of storage.index_map_size = %s. Every store is "
                "refused (0xA700) and modalities keep their images. Raise "
                "storage.index_map_size (its file grows only as used) and restart",
                ByteSize(used).human_readable(),
                ByteSize(size).human_readable(),
            )
        failed = IndexUnavailable(f"index write failed: {exc}")
        _resolve_all(here, [(item, failed) for item in items])

    def _explain_full(self) -> bool:
        """Whether to say what a full index needs: once a minute, not per store."""
        now = time.monotonic()
        if now - self._full_explained_at < _EXPLAIN_EVERY:
            return False
        self._full_explained_at = now
        return True

    def _damaged(
        self,
        items: list[_Pending | _Settling],
        here: asyncio.AbstractEventLoop | None,
        exc: core_rs.RecordError,
    ) -> None:
        """A catalog record did not read. Its instances cannot be indexed until the
        catalog is rebuilt (at the next start); the rest of the batch must not fail
        with them, so each item commits again on its own. Their files were synced
        before the first try: no item syncs again."""
        if not self._catalog_marked:
            log.error(
                "index: %s. The catalog is rebuilt from the instance records at the next "
                "start: restart the engine. Until then the objects that record counts "
                "are refused (0xA700), and a batch that holds one commits object by object",
                exc,
            )
            self._catalog_marked = self._index.mark_catalog_damaged()
        if len(items) == 1:
            self._failed(items, here, exc)
            return
        for item in items:
            self._commit([item], here, synced=True)

    def _sync(self, ready: list[_Pending]) -> list[_Pending]:
        """One sync for the batch's files and renames, before any index record points
        at them; on failure none of them is indexed, and each sender hears 0xA700."""
        try:
            core_rs.sync_filesystem(self._layout.objects)
        except OSError as exc:  # core_rs.StorageError is one
            self.stats.failures += 1
            log.error("could not make %d object file(s) durable: %s", len(ready), exc)
            failed = IndexUnavailable(f"object files not durable: {exc}")
            _resolve_all(None, [(item, failed) for item in ready])  # from the commit thread
            return []
        return ready


_Result = tuple[_Pending | _Settling, Outcome | IndexUnavailable | None]


def _resolve_all(here: asyncio.AbstractEventLoop | None, results: list[_Result]) -> None:
    """Hand a batch's outcomes back with ONE wake-up per event loop, not one per object."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
    for pending, result in results:
        by_loop.setdefault(pending.loop, []).append((pending, result))

    def settle(batch: list[_Result]) -> None:
        for pending, result in batch:
            try:
                pending.done(result)  # type: ignore[arg-type]
            except Exception:  # one answer's bug must not leave the batch's others unsent
                log.exception("handing back an outcome of a group commit failed")

    for loop, batch in by_loop.items():
        if here is loop:  # committed on the loop itself: no wake-up needed
            settle(batch)
        else:
            loop.call_soon_threadsafe(settle, batch)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # the commit thread
        return None
