"""The lifecycle worker: purge what central has, pack what has gone cold.

One task in the process that forwards (role "all" or "background"). Every
`lifecycle.interval` seconds it runs a pass in a thread (storage.tiers does the work,
core_rs the bytes, with the GIL released):

1. Purge, oldest first, the local copies of objects whose destinations all committed
   them: those past their rule's `keep_days`, and while the data disk is above
   `high_watermark`, as many as it takes to get below `low_watermark`. An object that
   is not yet committed somewhere is never purged; if that leaves the disk full,
   ingest refuses new associations (engine.dicom.hub) rather than drop anything.
2. Within the schedule window, pack hot objects past their rule's `hot_days` into
   the warm tier (verified before the hot file goes).
3. Hourly, delete the HL7 messages received and the MPPS messages relayed more than
   `lifecycle.message_keep_days` ago, so the index does not grow with them for good.
   An MPPS message a destination has not taken yet (queued, or a dead letter) stays.

Each pass is bounded in time and stops between two objects when the engine stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import lmdb

import core_rs
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from policies.config import Config
from policies.lifecycle import Lifecycle
from storage.index import DamagedRecord, Index, Instance
from storage.layout import DataLayout
from storage.tiers import Tiers

log = logging.getLogger(__name__)

_PASS_SECONDS = 50.0  # at most per pass, so a reload or a stop is never kept waiting long
# Objects a purge pass looks at: behind a dead destination the oldest ones all wait,
# and walking a million of them every pass would only burn CPU.
_MAX_EXAMINED = 20_000
_DAY = 86400.0
_WARN_EVERY = 600.0  # seconds between two warnings that the disk stays too full
_PRUNE_EVERY = 3600.0  # seconds between two prunings of the message logs, at most
_PRUNE_BATCH = 1000  # messages deleted per write transaction (ingest shares the lock)


@dataclass
class PassReport:
    started_at: float = 0.0
    seconds: float = 0.0
    disk_used_before: float = 0.0
    disk_used_after: float = 0.0
    purged: int = 0
    purged_bytes: int = 0
    migrated: int = 0
    migrated_bytes_before: int = 0
    migrated_bytes_after: int = 0
    failed: int = 0
    # Objects the disk or their rule wanted gone that are not committed everywhere.
    kept_uncommitted: int = 0
    first_kept: str = ""
    window_open: bool = False
    hl7_pruned: int = 0  # HL7 messages past lifecycle.message_keep_days, deleted
    mpps_pruned: int = 0  # relayed MPPS messages past it, deleted
    notes: list[str] = field(default_factory=list)


class LifecycleWorker:
    def __init__(
        self, config: Config, index: Index, layout: DataLayout, metrics: Metrics, audit: AuditLog
    ) -> None:
        self._index = index
        self._layout = layout
        self._metrics = metrics
        self._audit = audit
        self._tiers = Tiers(index, layout, config.durable)
        self._lifecycle = Lifecycle(config.lifecycle)
        self._mpps_destinations = [d.name for d in config.mpps_destination]
        self._pruned_at: float | None = None  # time.monotonic() of the last pruning
        self._stopping = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last: PassReport | None = None
        self._warned_at: float | None = None  # set while the disk stays over the mark

    def use(self, config: Config) -> None:
        """New lifecycle settings, from the next pass on (hot reload)."""
        self._lifecycle = Lifecycle(config.lifecycle)
        self._mpps_destinations = [d.name for d in config.mpps_destination]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lifecycle")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.last = await asyncio.to_thread(self.run_pass)
            except (OSError, lmdb.Error, core_rs.CoreError, DamagedRecord) as exc:
                log.error("lifecycle pass failed, next one in %.0f s: %s", self._interval, exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)

    @property
    def _interval(self) -> float:
        return self._lifecycle.config.interval

    def run_pass(self, now: float | None = None) -> PassReport:
        """One pass (see the module docstring); `now` as Unix time, for tests."""
        now = time.time() if now is None else now
        disk = shutil.disk_usage(self._layout.root)
        report = PassReport(started_at=now, disk_used_before=1 - disk.free / disk.total)
        deadline = time.monotonic() + _PASS_SECONDS
        self._purge(report, disk.total, now, deadline)
        report.window_open = self._lifecycle.in_window(datetime.fromtimestamp(now))
        if self._lifecycle.packs and report.window_open:
            self._pack(report, now, deadline)
        self._prune_messages(report, now, deadline)
        report.disk_used_after = self._layout.disk_used()
        report.seconds = round(time.monotonic() - (deadline - _PASS_SECONDS), 3)
        self._log(report)
        return report

    def _purge(self, report: PassReport, disk_total: int, now: float, deadline: float) -> None:
        config = self._lifecycle.config
        need = 0
        if report.disk_used_before > config.high_watermark:
            need = int((report.disk_used_before - config.low_watermark) * disk_total)
        youngest_due = self._lifecycle.shortest_keep_days
        for examined, instance in enumerate(self._oldest_local()):
            if self._stopping.is_set() or time.monotonic() > deadline:
                report.notes.append("purge pass ended by its time limit")
                break
            if examined >= _MAX_EXAMINED:
                report.notes.append(f"purge pass looked at its {_MAX_EXAMINED} oldest objects")
                break
            age_days = (now - instance.received_at) / _DAY
            if need <= 0 and (youngest_due is None or age_days < youngest_due):
                break  # younger objects are neither due nor needed
            policy = self._lifecycle.policy(instance)
            due = policy.keep_days is not None and age_days >= policy.keep_days
            if not policy.purge or not (due or need > 0):
                continue
            why = self._tiers.unsafe_to_purge(instance, config.purge_when)
            if why:
                report.kept_uncommitted += 1
                report.first_kept = report.first_kept or f"{instance.sop_instance_uid}: {why}"
                continue
            size = instance.local_length
            if self._tiers.purge(instance) is None:
                continue  # changed meanwhile: the next pass sees it as it is now
            need -= size
            report.purged += 1
            report.purged_bytes += size
            self._metrics.lifecycle("purged", size)
            self._audit.write(
                "instance_purged",
                sop_instance_uid=instance.sop_instance_uid,
                study_instance_uid=instance.study_instance_uid,
                tier=instance.tier,
                size=size,
                destinations=list(instance.destinations),
                why=f"rule {policy.name!r} keep_days" if due else "disk above high watermark",
            )

    def _oldest_local(self) -> Iterator[Instance]:
        """Hot and warm objects together, oldest received first."""
        return heapq.merge(
            self._index.by_age("hot"),
            self._index.by_age("warm"),
            key=lambda instance: instance.received_at,
        )

    def _pack(self, report: PassReport, now: float, deadline: float) -> None:
        level = self._lifecycle.config.zstd_level
        soonest = self._lifecycle.shortest_hot_days
        for instance in self._index.by_age("hot"):
            if self._stopping.is_set() or time.monotonic() > deadline:
                report.notes.append("packing ended by its time limit; it goes on next pass")
                break
            age_days = (now - instance.received_at) / _DAY
            if soonest is None or age_days < soonest:
                break
            policy = self._lifecycle.policy(instance)
            codec = policy.warm_codec
            if codec == "none" or age_days < policy.hot_days:
                continue
            try:
                moved = self._tiers.migrate(instance, codec, level)
            except core_rs.VerificationFailed as exc:
                report.failed += 1
                self._metrics.lifecycle("mismatch", 0)
                log.error("%s: warm copy NOT used, kept hot: %s", instance.sop_instance_uid, exc)
                continue
            except core_rs.OutOfSpaceError as exc:
                report.failed += 1
                report.notes.append(f"packing stopped, no space for the warm copy: {exc}")
                break
            except (core_rs.CoreError, OSError) as exc:
                report.failed += 1
                self._metrics.lifecycle("failed", 0)
                log.warning("%s: not packed, kept hot: %s", instance.sop_instance_uid, exc)
                continue
            if moved is None:
                continue
            packed = moved.packed
            report.migrated += 1
            report.migrated_bytes_before += packed.original
            report.migrated_bytes_after += packed.stored
            self._metrics.lifecycle("migrated", packed.original - packed.stored)
            if packed.fallback_frames:
                log.info(
                    "%s: %d frame(s) packed with zstd, not JPEG-LS: %s",
                    instance.sop_instance_uid,
                    packed.fallback_frames,
                    packed.fallback_reason,
                )

    def _prune_messages(self, report: PassReport, now: float, deadline: float) -> None:
        """Step 3: hourly, or 24 times per keep period when that is shorter."""
        keep_seconds = self._lifecycle.config.message_keep_days * _DAY
        if not keep_seconds:
            return  # kept for good
        clock = time.monotonic()
        if self._pruned_at is not None and clock - self._pruned_at < min(
            _PRUNE_EVERY, keep_seconds / 24
        ):
            return
        self._pruned_at = clock
        before = now - keep_seconds
        index, destinations = self._index, self._mpps_destinations
        report.hl7_pruned += self._in_batches(
            lambda: index.patients.prune(before, _PRUNE_BATCH), deadline
        )
        report.mpps_pruned += self._in_batches(
            lambda: index.mpps.prune(before, destinations, _PRUNE_BATCH), deadline
        )

    def _in_batches(self, prune: Callable[[], int], deadline: float) -> int:
        """`prune` again while it deletes whole batches, within the pass's time."""
        total = 0
        while not self._stopping.is_set() and time.monotonic() < deadline:
            gone = prune()
            total += gone
            if gone < _PRUNE_BATCH:
                break
        return total

    def _log(self, report: PassReport) -> None:
        did = []
        if report.purged:
            did.append(
                f"purged {report.purged} object(s) ({report.purged_bytes / 1e6:.1f} MB) "
                "their destinations committed"
            )
        if report.migrated:
            before, after = report.migrated_bytes_before, report.migrated_bytes_after
            did.append(
                f"packed {report.migrated} into the warm tier ({before / 1e6:.1f} MB -> "
                f"{after / 1e6:.1f} MB, {before / max(after, 1):.2f}x)"
            )
        if report.failed:
            did.append(f"{report.failed} failed (kept as they were)")
        if report.hl7_pruned or report.mpps_pruned:
            did.append(
                f"deleted {report.hl7_pruned} HL7 and {report.mpps_pruned} MPPS message(s) "
                f"older than lifecycle.message_keep_days "
                f"({self._lifecycle.config.message_keep_days:g})"
            )
        if did:
            log.info(
                "lifecycle: %s; disk %.1f%% -> %.1f%% used in %.1f s",
                "; ".join(did),
                report.disk_used_before * 100,
                report.disk_used_after * 100,
                report.seconds,
            )
        self._warn_over_watermark(report)

    def _warn_over_watermark(self, report: PassReport) -> None:
        """Once when the disk stays over the high watermark, again every ten minutes
        while it does, and once when it is back below."""
        high = self._lifecycle.config.high_watermark
        now = time.monotonic()
        if report.disk_used_after <= high:
            if self._warned_at is not None:
                log.info("lifecycle: data disk back below lifecycle.high_watermark")
            self._warned_at = None
            return
        if self._warned_at is not None and now - self._warned_at < _WARN_EVERY:
            return
        self._warned_at = now
        log.warning(
            "lifecycle: data disk %.1f%% used, above lifecycle.high_watermark %.0f%%; "
            "%d object(s) cannot be purged until their destinations commit them "
            "(first: %s). New associations are refused above "
            "storage.disk_high_watermark: check the forward queues (pacs-edge status)",
            report.disk_used_after * 100,
            high * 100,
            report.kept_uncommitted,
            report.first_kept or "none",
        )

    def status(self) -> dict[str, Any]:
        config = self._lifecycle.config
        return {
            "high_watermark": config.high_watermark,
            "low_watermark": config.low_watermark,
            "window": config.window or "any time",
            "rules": [rule.name for rule in config.rule],
            "last_pass": asdict(self.last) if self.last else None,
        }
