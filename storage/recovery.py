"""Start-up checks of the index against the object files.

Spool leftovers were never acknowledged and are deleted (DataLayout.clean_spool).
Index records whose file is missing, has the wrong size or (with "hash") the wrong
BLAKE3 are REPORTED, never silently dropped: an admin decides, since the record is
the only trace that the modality was told Success. Warm files are checked by size
(their own trailer holds length and BLAKE3, checked on every restore); purged
("central") records have no local file to check. A tier move a crash interrupted
is finished first (`finish_tier_move`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import core_rs
from storage.index import Index
from storage.layout import DataLayout

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)


def finish_tier_move(index: Index, layout: DataLayout) -> list[Path]:
    """Delete the copy a crash mid-move left behind (Tiers.migrate, Tiers.purge): of
    the move journalled last, the file of each tier its record does not name (and no
    other record counts). Idempotent: a move that finished leaves nothing to delete."""
    move = index.tier_move()
    if move is None:
        return []
    deleted = []
    for tier in (move["from"], move["to"]):
        path = layout.tier_path(tier, move["hash"])
        if path is None or index.holds(move["sop"], move["hash"], tier):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        deleted.append(path)
        log.warning(
            "recovery: deleted %s, the %s copy of %s that a stop mid-move (%s -> %s) left",
            path,
            tier,
            move["sop"],
            move["from"],
            move["to"],
        )
    index.end_tier_move()
    return deleted


def verify(
    index: Index, layout: DataLayout, mode: Literal["none", "size", "hash"]
) -> RecoveryReport:
    report = RecoveryReport()
    finish_tier_move(index, layout)
    if mode == "none":
        return report
    started, last_note = time.monotonic(), time.monotonic()
    for instance in index.instances():
        path = layout.tier_path(instance.tier, instance.hash)
        if path is None:
            continue  # central only: nothing here to check
        report.checked += 1
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            report.missing.append(instance.sop_instance_uid)
            continue
        hot = instance.tier == "hot"
        if size != instance.local_length or (
            hot
            and mode == "hash"
            and core_rs.hash_file(path, instance.meta_length) != instance.hash
        ):
            report.damaged.append(instance.sop_instance_uid)
        if time.monotonic() - last_note > 10:
            last_note = time.monotonic()
            log.info("recovery: checked %d objects so far", report.checked)
    took = time.monotonic() - started
    if report.missing or report.damaged:
        log.error(
            "recovery: %d of %d indexed objects missing, %d damaged (first: %s); "
            "they were acknowledged once - restore them from backup or the central archive",
            len(report.missing),
            report.checked,
            len(report.damaged),
            ", ".join((report.missing + report.damaged)[:5]),
        )
    else:
        log.info(
            "recovery: %d indexed objects checked (%s) in %.1f s, all present",
            report.checked,
            mode,
            took,
        )
    return report
