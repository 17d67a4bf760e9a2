"""The audit log: append-only JSON lines of who sent what, what went where, and
what an admin changed.

One line per event, written with a single O_APPEND write (lines never interleave,
even with several processes). Not fsync'ed: the audit trail follows the index,
whose records are durable. SIGHUP reopens the file, so logrotate can move it away.
Patient identifiers are included unless `audit.patient_identifiers = false` (for
logs shipped to shared systems).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, path: Path, patient_identifiers: bool) -> None:
        self.path = path
        self._patient = patient_identifiers
        self._lock = threading.Lock()
        self._fd = -1
        self.reopen()

    def reopen(self) -> None:
        """(Re)open at the configured path: after logrotate moved the old file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        with self._lock:
            old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def write(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            if self._fd < 0:
                return
            try:
                os.write(self._fd, line)
            except OSError as exc:  # a full disk must not stop ingest; say so loudly
                log.error("audit log %s: cannot write: %s", self.path, exc)

    def set_patient_identifiers(self, include: bool) -> None:
        self._patient = include

    def patient(self, patient_id: str, patient_name: str) -> dict[str, str]:
        """The patient fields of an event, or none when they are switched off."""
        return {"patient_id": patient_id, "patient_name": patient_name} if self._patient else {}
