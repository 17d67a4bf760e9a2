"""The admin's small SCU behind `pacs-edge echo` and `pacs-edge store`.

pynetdicom is right here: this is the control plane, run by a person, not the
ingest path. Files are sent as they are on disk (chunked, not re-encoded).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pynetdicom._config as pynetdicom_config
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE

# Send each file's dataset bytes exactly as stored instead of decoding and re-encoding.
pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
_MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts per association


def echo(host: str, port: int, calling_ae: str, called_ae: str, timeout: float = 10) -> int:
    """Returns the C-ECHO status, or -1 when no association could be made."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = timeout
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return -1
    try:
        rsp = assoc.send_c_echo()
        return int(rsp.Status) if "Status" in rsp else -1
    finally:
        assoc.release()


@dataclass(frozen=True)
class DicomFile:
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass
class StoreSummary:
    sent: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def find_files(paths: Iterable[Path], summary: StoreSummary) -> Iterator[DicomFile]:
    for root in paths:
        candidates = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in candidates:
            try:
                ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
                yield DicomFile(path, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
            except (InvalidDicomError, AttributeError, OSError, ValueError, KeyError):
                summary.skipped.append(path)


def store(
    host: str,
    port: int,
    paths: list[Path],
    calling_ae: str,
    called_ae: str,
    timeout: float = 30,
    progress: bool = True,
) -> StoreSummary:
    summary = StoreSummary()
    files = list(find_files(paths, summary))
    total = len(files)
    done = 0
    for batch in _batches(files):
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        for sop_class, ts in sorted({(f.sop_class_uid, f.transfer_syntax_uid) for f in batch}):
            ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            summary.failed.extend((f.path, "association not accepted") for f in batch)
            continue
        try:
            for f in batch:
                rsp = assoc.send_c_store(f.path)
                status = int(rsp.Status) if "Status" in rsp else -1
                if status in (0x0000, 0xB000, 0xB006, 0xB007):
                    summary.sent += 1
                else:
                    summary.failed.append(
                        (f.path, f"status {status:#06x}" if status >= 0 else "no response")
                    )
                done += 1
                if progress:
                    print(
                        f"\r  {done}/{total} sent, {len(summary.failed)} failed",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            assoc.release()
    if progress and total:
        print(file=sys.stderr)
    return summary


def _batches(files: list[DicomFile]) -> Iterator[list[DicomFile]]:
    """Split so that no association needs more than 128 presentation contexts."""
    batch: list[DicomFile] = []
    contexts: set[tuple[str, str]] = set()
    for f in files:
        key = (f.sop_class_uid, f.transfer_syntax_uid)
        if key not in contexts and len(contexts) == _MAX_CONTEXTS:
            yield batch
            batch, contexts = [], set()
        contexts.add(key)
        batch.append(f)
    if batch:
        yield batch
