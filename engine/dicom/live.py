"""The node's established associations, across its worker processes.

Limits are per node, not per process: `dicom.max_associations` and a calling
AE's `max_associations` must hold however the kernel spreads connections over the
workers sharing the port. Each worker keeps its own associations in memory and
publishes them to `<data_dir>/run/live-<pid>.json`; admission takes a file lock,
counts everyone's, and publishes its own before releasing it, so two workers never
admit past a limit together. The background process reads the same files for
`status`. With one process (no run folder) it is all in memory.

Associations start and end at human speed (seconds to hours), so a small file
write per change costs nothing next to the objects they carry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveAssociation:
    key: str  # "<pid>-<association id>"
    calling_ae: str
    peer: str  # the real client, after any PROXY header
    via: str  # the load balancer's address, or ""
    tls: bool
    since: float


class LiveAssociations:
    def __init__(self, run_dir: Path | None) -> None:
        self._run = run_dir
        self._mine: dict[str, LiveAssociation] = {}
        self._file = run_dir / f"live-{os.getpid()}.json" if run_dir else None

    def start(self) -> None:
        """An ingest worker is up: its (empty) file tells the background process."""
        with self._locked():
            self._publish()

    def stop(self) -> None:
        if self._file is not None:
            with contextlib.suppress(FileNotFoundError):
                self._file.unlink()

    def workers(self) -> int:
        """Ingest workers running (each has its file from start-up to its end)."""
        return len(self.worker_pids())

    def worker_pids(self) -> list[int]:
        if self._run is None:
            return []
        return [int(p.stem.removeprefix("live-")) for p in self._run.glob("live-*.json")]

    def admit(
        self, association: LiveAssociation, node_limit: int, ae_limit: int | None
    ) -> str | None:
        """Record `association` unless a limit is reached; else say which."""
        with self._locked():
            everyone = self._others() + list(self._mine.values())
            if len(everyone) >= node_limit:
                return f"{node_limit} associations already active (dicom.max_associations)"
            if ae_limit is not None:
                same = sum(1 for a in everyone if a.calling_ae == association.calling_ae)
                if same >= ae_limit:
                    return (
                        f"calling AE {association.calling_ae!r} already has {same} "
                        "association(s) (calling_ae.max_associations)"
                    )
            self._mine[association.key] = association
            self._publish()
        return None

    def remove(self, key: str) -> None:
        if key not in self._mine:
            return
        with self._locked():
            del self._mine[key]
            self._publish()

    def all(self) -> list[LiveAssociation]:
        return sorted(self._others() + list(self._mine.values()), key=lambda a: a.since)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._run is None:
            yield
            return
        with open(self._run / "live.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _others(self) -> list[LiveAssociation]:
        if self._run is None:
            return []
        found: list[LiveAssociation] = []
        for path in self._run.glob("live-*.json"):
            if path == self._file:
                continue
            try:
                found += [LiveAssociation(**item) for item in json.loads(path.read_bytes())]
            except FileNotFoundError:
                continue  # its worker just ended
            except (ValueError, TypeError) as exc:
                log.warning("ignoring unreadable %s: %s", path, exc)
        return found

    def _publish(self) -> None:
        if self._file is None:
            return
        temporary = self._file.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(a) for a in self._mine.values()]))
        temporary.replace(self._file)  # readers see the old list or the new one


def forget_process(run_dir: Path, pid: int) -> None:
    """A worker ended: its associations ended with it."""
    with contextlib.suppress(FileNotFoundError):
        (run_dir / f"live-{pid}.json").unlink()
