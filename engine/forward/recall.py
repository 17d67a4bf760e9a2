"""Recall: bring a study back from central storage after it was purged here.

`POST /api/v1/recalls/<Study Instance UID>` (and `pacs-edge recall`) starts a C-MOVE
at the first DICOM destination with `recall = true`, moving the study to our own AE
title. The archive connects to our DICOM port and stores every instance through the
normal ingest path (durable, indexed), each C-STORE naming us as Move Originator, so
engine.dicom.store knows it for a recall: what comes back is the local copy again, is not
forwarded again, and counts as committed at the archive (storage.index.Recalled).

pynetdicom is the C-MOVE SCU (control plane: a few responses per study), in a thread;
the images themselves arrive on our Rust data plane. Progress comes from the pending
C-MOVE responses; `GET /api/v1/recalls/<uid>` reports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from engine.dicom import scu
from engine.ops.http import Answer, Route
from policies.config import DicomDestination
from policies.http_access import Caller

if TYPE_CHECKING:
    from engine.services import Shared

log = logging.getLogger(__name__)
_MAX_KEPT = 200  # finished recalls remembered for GET


@dataclass
class Progress:
    study_instance_uid: str
    source: str
    state: str = "running"  # running, done, failed
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    status: str = ""  # the final C-MOVE status, hex
    error: str = ""
    started_at: float = 0.0
    seconds: float = 0.0


class Recaller:
    def __init__(self, shared: Shared, track: Callable[[asyncio.Task[None]], None]) -> None:
        """`track`: the hub's, so that shutdown waits for a recall's objects."""
        self._shared = shared
        self._track = track
        self._recalls: dict[str, Progress] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended: dict[str, asyncio.Event] = {}  # set when that recall ends

    def _source(self) -> DicomDestination | None:
        for dest in self._shared.config.destination:
            if isinstance(dest, DicomDestination) and dest.recall:
                return dest
        return None

    def start(self, study_uid: str, caller: Caller) -> Answer:
        running = self._recalls.get(study_uid)
        if running is not None and running.state == "running":
            return 202, asdict(running)
        source = self._source()
        if source is None:
            return 409, {
                "error": "no destination has recall = true: set it on the [[destination]] "
                "that archives this node's studies (it must know our AE title's address)"
            }
        progress = Progress(study_uid, source.name, started_at=time.time())
        self._recalls[study_uid] = progress
        while len(self._recalls) > _MAX_KEPT:
            self._recalls.pop(next(iter(self._recalls)))
        self._ended[study_uid] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._run(progress, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._track(task)
        self._shared.audit.write(
            "recall_started",
            study_instance_uid=study_uid,
            source=source.name,
            **caller.audit_fields(),
        )
        return 202, asdict(progress)

    def get(self, study_uid: str) -> Answer:
        progress = self._recalls.get(study_uid)
        if progress is None:
            return 404, {"error": f"no recall of {study_uid} since the engine started"}
        return 200, asdict(progress)

    async def _run(self, progress: Progress, source: DicomDestination) -> None:
        try:
            await asyncio.to_thread(self._move, progress, source)
        except (OSError, RuntimeError, ValueError) as exc:
            progress.state, progress.error = "failed", str(exc)
        progress.seconds = round(time.time() - progress.started_at, 2)
        level = logging.INFO if progress.state == "done" else logging.ERROR
        log.log(
            level,
            "recall of study %s from %s %s: %d instance(s) in %.1f s, %d failed%s",
            progress.study_instance_uid,
            source.name,
            progress.state,
            progress.completed,
            progress.seconds,
            progress.failed,
            f": {progress.error}" if progress.error else "",
        )
        self._shared.audit.write("recall_ended", **asdict(progress))
        ended = self._ended.pop(progress.study_instance_uid, None)
        if ended is not None:
            ended.set()

    async def wait(self, study_uid: str) -> Progress | None:
        """The recall of `study_uid` once it ended; None when there is none. Bound it
        with asyncio.timeout to do something meanwhile (it is then still running)."""
        ended = self._ended.get(study_uid)
        if ended is not None:
            await ended.wait()
        return self._recalls.get(study_uid)

    def progress(self, study_uid: str) -> Progress | None:
        return self._recalls.get(study_uid)

    @property
    def available(self) -> bool:
        """Whether a destination can send studies back (`recall = true`)."""
        return self._source() is not None

    def _move(self, progress: Progress, dest: DicomDestination) -> None:
        ours = self._shared.config.node.ae_title
        ae = AE(ae_title=dest.calling_ae or ours)
        ae.acse_timeout = ae.network_timeout = dest.connect_timeout
        ae.dimse_timeout = max(dest.timeout, 600.0)  # a study's last response comes at its end
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = scu.associate(ae, dest.host, dest.port, dest.called_ae)
        if not assoc.is_established:
            raise RuntimeError(f"{dest.name} ({dest.host}:{dest.port}) refused the association")
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = progress.study_instance_uid
            responses = assoc.send_c_move(query, ours, StudyRootQueryRetrieveInformationModelMove)
            for status, _identifier in responses:
                if not status:  # no answer in time, or the association went
                    raise RuntimeError(f"{dest.name} stopped answering the C-MOVE")
                self._count(progress, status)
                code = int(status.Status)
                if code not in (0xFF00, 0xFF01):
                    progress.status = f"{code:#06x}"
                    ok = code == 0x0000 or (code == 0xB000 and progress.completed)
                    progress.state = "done" if ok and not progress.failed else "failed"
                    if progress.state == "failed" and not progress.error:
                        progress.error = _describe(code, status)
        finally:
            assoc.release()
        if progress.state == "running":
            progress.state, progress.error = "failed", "the C-MOVE ended without a final status"

    @staticmethod
    def _count(progress: Progress, status: Dataset) -> None:
        for field, keyword in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failed", "NumberOfFailedSuboperations"),
            ("warning", "NumberOfWarningSuboperations"),
            ("remaining", "NumberOfRemainingSuboperations"),
        ):
            value = status.get(keyword)
            if value is not None:
                setattr(progress, field, int(value))


def _describe(code: int, status: Dataset) -> str:
    """PS3.4 C.4.2.1.5's C-MOVE statuses, as an admin can act on them."""
    known = {
        0xA701: "the archive is out of resources to count the matches",
        0xA702: "the archive is out of resources for the sub-operations",
        0xA801: "the archive does not know our AE title as a move destination: add it "
        "(with this node's host and DICOM port) to the archive's modalities",
        0xA900: "the archive says the query does not match its model",
        0xB000: "some instances failed to come back",
        0xC000: "the archive could not process the request",
    }
    comment = str(status.get("ErrorComment", "") or "")
    return known.get(code, f"C-MOVE status {code:#06x}") + (f" ({comment})" if comment else "")


def routes(shared: Shared, recaller: Recaller) -> list[Route]:
    def start(uid: str, caller: Caller, query: dict[str, str]) -> Answer:
        if shared.index.study(uid) is None:
            return 404, {"error": f"study {uid} was never stored on this node"}
        return recaller.start(uid, caller)

    return [
        Route("POST", "/api/v1/recalls/{uid}", start, "admin"),
        Route("GET", "/api/v1/recalls/{uid}", lambda uid, query: recaller.get(uid)),
    ]
