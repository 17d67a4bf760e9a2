"""The audit log: append-only JSON lines of who sent what, what went where, and
what an admin changed.

Lines gather in memory and go to the file twice a second (or at 64 KiB) in one
O_APPEND write, so lines never interleave, even with several processes, and the
hot path makes no syscall for them. Not fsync'ed: the audit trail follows the
index, whose records are durable; a crash loses at most the last half second.
SIGHUP reopens the file, so logrotate can move it away.
Patient identifiers are included unless `audit.patient_identifiers = false` (for
logs shipped to shared systems).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


_FLUSH_SECONDS = 0.5
_FLUSH_BYTES = 64 * 1024


class AuditLog:
    def __init__(self, path: Path, patient_identifiers: bool, site: str = "") -> None:
        self.path = path
        self._stamp = {"site": site} if site else {}  # several sites' logs in one SIEM
        self._patient = patient_identifiers
        self._lock = threading.Lock()
        self._fd = -1
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._closed = threading.Event()
        self.reopen()
        self._flusher = threading.Thread(target=self._flush_often, name="audit", daemon=True)
        self._flusher.start()

    def _flush_often(self) -> None:
        while not self._closed.wait(_FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._pending or self._fd < 0:
                return
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            try:
                os.write(self._fd, data)
            except OSError as exc:  # a full disk must not stop ingest; say so loudly
                log.error("audit log %s: cannot write %d bytes: %s", self.path, len(data), exc)

    def reopen(self) -> None:
        """(Re)open at the configured path: after logrotate moved the old file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.flush()  # what was written before the rotation goes to the old file
        with self._lock:
            old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        self._closed.set()
        self.flush()
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def write(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), **self._stamp, "event": event, **fields}
        options = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
        line = orjson.dumps(record, default=str, option=options)
        with self._lock:
            self._pending.append(line)
            self._pending_bytes += len(line)
            full = self._pending_bytes >= _FLUSH_BYTES
        if full:
            self.flush()

    def set_patient_identifiers(self, include: bool) -> None:
        self._patient = include

    def patient(self, patient_id: str, patient_name: str) -> dict[str, str]:
        """The patient fields of an event, or none when they are switched off."""
        return {"patient_id": patient_id, "patient_name": patient_name} if self._patient else {}
