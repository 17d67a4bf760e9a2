"""Send DICOM files from disk to a DICOM node: `pacs-edge store` (any node) and
`pacs-edge import` (a folder, a DICOMDIR's folder or a mounted CD into this edge,
through the same durable path as a modality: index, then forward jobs).

Files go as they are on disk, through the forwarder's SCU (engine/dicom_client):
the dataset bytes are never decoded. Files are found and checked first, so the
progress line can say how much is left (count, MB/s, ETA); what is not DICOM
Part-10 is skipped and listed at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pynetdicom.dsutils import split_dataset

from engine.dicom.client import Payload, PeerUnavailable, Requestor
from engine.dicom.negotiation import MAX_CONTEXTS

_DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory (DICOMDIR)
_OK = (0x0000, 0xB000, 0xB006, 0xB007)
_DICOMDIR = "DICOMDIR (an index: the images it lists are in its folder)"


@dataclass(frozen=True)
class DicomFile:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    offset: int
    length: int


@dataclass
class Summary:
    sent: int = 0
    bytes: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def find(paths: Iterable[Path], summary: Summary) -> list[DicomFile]:
    found = []
    for root in paths:
        if root.is_file() and _describe(root) == _DICOMDIR:
            root = root.parent  # a DICOMDIR given: the files it lists are below it
        candidates = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in candidates:
            described = _describe(path)
            if isinstance(described, str):
                summary.skipped.append((path, described))
            else:
                found.append(described)
    return found


def _describe(path: Path) -> DicomFile | str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta, offset = split_dataset(path)
        size = path.stat().st_size
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        return f"not DICOM Part-10 ({exc.__class__.__name__})"
    sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID", ""))
    syntax = str(meta.get("TransferSyntaxUID", ""))
    if sop_class == _DIRECTORY:
        return _DICOMDIR
    if not (sop_class and sop_instance and syntax) or offset <= 0:
        return "not DICOM Part-10 (no file meta information)"
    return DicomFile(path, sop_class, sop_instance, syntax, offset, size - offset)


def _batches(files: list[DicomFile]) -> Iterator[list[DicomFile]]:
    """Split so that no association needs more than 128 presentation contexts."""
    batch: list[DicomFile] = []
    contexts: set[tuple[str, str]] = set()
    for f in files:
        key = (f.sop_class_uid, f.transfer_syntax_uid)
        if key not in contexts and len(contexts) == MAX_CONTEXTS:
            yield batch
            batch, contexts = [], set()
        contexts.add(key)
        batch.append(f)
    if batch:
        yield batch


class Progress:
    """One status line on stderr: count, MB/s, ETA; at most ten updates a second."""

    def __init__(self, total_files: int, total_bytes: int, enabled: bool) -> None:
        self._files = total_files
        self._bytes = total_bytes
        self._enabled = enabled and total_files > 0
        self._started = time.monotonic()
        self._shown = 0.0

    def update(self, summary: Summary, force: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled or (not force and now - self._shown < 0.1):
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-6)
        rate = summary.bytes / elapsed
        left = max(self._bytes - summary.bytes, 0)
        eta = left / rate if rate > 0 else 0.0
        done = summary.sent + len(summary.failed)
        print(
            f"\r  {done}/{self._files} files  {rate / 1e6:6.1f} MB/s  "
            f"ETA {int(eta) // 60:02d}:{int(eta) % 60:02d}  {len(summary.failed)} failed",
            end="\n" if force else "",
            file=sys.stderr,
            flush=True,
        )


async def _send(
    host: str,
    port: int,
    calling_ae: str,
    called_ae: str,
    files: list[DicomFile],
    summary: Summary,
    progress: Progress,
    seconds: float,
) -> None:
    for batch in _batches(files):
        contexts = list(dict.fromkeys((f.sop_class_uid, f.transfer_syntax_uid) for f in batch))
        try:
            assoc = await Requestor.open(
                host, port, calling_ae, called_ae, contexts, 262144, seconds, seconds
            )
        except PeerUnavailable as exc:
            summary.failed.extend((f.path, str(exc)) for f in batch)
            continue
        try:
            for f in batch:
                context = assoc.accepted.get((f.sop_class_uid, f.transfer_syntax_uid))
                if context is None:
                    summary.failed.append((f.path, "the node accepts no context for it"))
                    continue
                payload = Payload(f.path, f.offset, f.length)
                response = await assoc.store(
                    context, f.sop_class_uid, f.sop_instance_uid, payload, 1, None
                )
                if response.status in _OK:
                    summary.sent += 1
                    summary.bytes += f.length
                else:
                    why = f"status {response.status:#06x} {response.comment}".strip()
                    summary.failed.append((f.path, why))
                progress.update(summary)
        except PeerUnavailable as exc:
            summary.failed.append((f.path, str(exc)))
            assoc.abort()
            continue
        await assoc.release()


def send(
    host: str,
    port: int,
    paths: list[Path],
    calling_ae: str,
    called_ae: str,
    progress: bool = True,
    timeout: float = 60,
) -> Summary:
    summary = Summary()
    files = find(paths, summary)
    bar = Progress(len(files), sum(f.length for f in files), progress)
    asyncio.run(_send(host, port, calling_ae, called_ae, files, summary, bar, timeout))
    bar.update(summary, force=True)
    return summary
