"""The worklist proxy's two jobs: keep a mirror of each [[worklist_source]] (a poll
every `poll_interval`, in the process that forwards), and answer a modality's
Modality Worklist C-FIND (in whichever process holds its association).

A query goes to every source at once. A source that answers within its `timeout`
gives its answers (and they refresh the mirror); one that does not, refuses, or
fails is answered for by its mirror, matched here with the worklist keys
(storage.worklist). So a modality waits at most the longest timeout, plus the
local match, whatever the RIS does. Once a source failed (a poll or a query), it is
not asked again until a poll gets its answer: while it is down every query is
answered from the mirror at once, and the poll tries again every `_RETRY_DOWN`
seconds (or `poll_interval`, if shorter). The failure is kept in the index, so the
ingest workers' queries see it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable

from pydicom import Dataset
from pydicom.sequence import Sequence

from engine.services import Shared
from engine.worklist import upstream
from policies.config import WorklistSourceConfig
from storage import worklist

log = logging.getLogger(__name__)
MAX_ANSWERS = 2000  # a worklist longer than this is a query that asked for too little
_RETRY_DOWN = 10.0  # seconds between polls of a source that failed

# What a poll asks the RIS for: every key a modality's query may match or return.
_PATIENT_KEYS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDs",
    "PatientWeight",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "ReferringPhysicianName",
    "AdmissionID",
)
_STEP_KEYS = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
)


def poll_identifier(source: WorklistSourceConfig, today: datetime.date) -> Dataset:
    """Every scheduled step from `days_behind` before today to `days_ahead` after."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # answer in UTF-8 if you can
    for keyword in _PATIENT_KEYS:
        setattr(ds, keyword, "")
    step = Dataset()
    for keyword in _STEP_KEYS:
        setattr(step, keyword, "")
    first = today - datetime.timedelta(days=source.days_behind)
    last = today + datetime.timedelta(days=source.days_ahead)
    step.ScheduledProcedureStepStartDate = f"{first:%Y%m%d}-{last:%Y%m%d}"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


class Mirror:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared  # its config is read at each use: a reload swaps sources
        self._cache = shared.index.worklist
        self._task: asyncio.Task[None] | None = None
        self._failing: dict[str, str] = {}  # source -> the error last logged

    # ---- the poll (background process) ---------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll_forever(self) -> None:
        due: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for source in self._shared.config.worklist_source:
                if due.get(source.name, 0.0) <= now:
                    answered = await self.poll(source)
                    wait = source.poll_interval
                    due[source.name] = now + (wait if answered else min(wait, _RETRY_DOWN))
            await asyncio.sleep(0.5)

    async def poll(self, source: WorklistSourceConfig) -> bool:
        identifier = poll_identifier(source, datetime.date.today())
        our_ae = self._shared.config.node.ae_title
        try:
            items = await asyncio.wait_for(
                asyncio.to_thread(upstream.find, source, our_ae, identifier),
                source.timeout * 4 + 5,  # a full poll may be longer than one modality's query
            )
        except (upstream.UpstreamError, TimeoutError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            await asyncio.to_thread(self._cache.failed, source.name, why)
            if self._failing.get(source.name) != why:
                log.warning(
                    "worklist source %s cannot be polled (%s): modalities get the mirror of %s",
                    source.name,
                    why,
                    self._age_text(source.name),
                )
            self._failing[source.name] = why
            return False
        await asyncio.to_thread(self._cache.replace, source.name, items)
        if self._failing.pop(source.name, None) is not None:
            log.info("worklist source %s answers again: %d item(s)", source.name, len(items))
        else:
            log.debug("worklist source %s polled: %d item(s)", source.name, len(items))
        return True

    def _age_text(self, source: str) -> str:
        refreshed = self._cache.state(source).refreshed_at
        if refreshed is None:
            return "never (empty)"
        return f"{time.time() - refreshed:.0f} s ago"

    # ---- a modality's query (any process) ----------------------------------------------

    async def query(self, identifier: Dataset) -> tuple[list[Dataset], list[str]]:
        """The answers, and the sources answered for by their mirror."""
        sources = self._shared.config.worklist_source
        if not sources:
            return await asyncio.to_thread(self._from_mirror, identifier, None), []
        asked = [self._ask(source, identifier) for source in sources]
        results = await asyncio.gather(*asked)
        answers: list[Dataset] = []
        mirrored = [s.name for s, found in zip(sources, results, strict=True) if found is None]
        for found in results:
            answers.extend(found or [])
        if mirrored:
            answers.extend(await asyncio.to_thread(self._from_mirror, identifier, mirrored))
        return answers[:MAX_ANSWERS], mirrored

    async def _ask(self, source: WorklistSourceConfig, identifier: Dataset) -> list[Dataset] | None:
        """The source's answers, or None for its mirror's: when it fails now, or failed
        before and no poll has got an answer since (see the module docstring)."""
        if self._cache.error(source.name):
            return None
        our_ae = self._shared.config.node.ae_title
        try:
            found = await asyncio.wait_for(
                asyncio.to_thread(upstream.find, source, our_ae, identifier), source.timeout
            )
        except (upstream.UpstreamError, TimeoutError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            log.info(
                "worklist source %s not used for this query (%s): answered from its mirror "
                "until a poll gets its answer",
                source.name,
                why,
            )
            await asyncio.to_thread(self._cache.failed, source.name, why)
            return None
        await asyncio.to_thread(self._cache.merge, source.name, _complete(found, identifier))
        return found

    def _from_mirror(self, identifier: Dataset, sources: list[str] | None) -> list[Dataset]:
        found = []
        answers = worklist.match(identifier)
        for item in self._cache.items(sources):
            if answers(item):
                found.append(worklist.answer(identifier, item))
                if len(found) >= MAX_ANSWERS:
                    break
        return found

    def ages(self, now: Callable[[], float] = time.time) -> dict[str, float | None]:
        """Seconds since each source's mirror was refreshed (None: never)."""
        ages: dict[str, float | None] = {}
        for source in self._shared.config.worklist_source:
            refreshed = self._cache.state(source.name).refreshed_at
            ages[source.name] = None if refreshed is None else round(now() - refreshed, 1)
        return ages

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for source in self._shared.config.worklist_source:
            state = self._cache.state(source.name)
            out[source.name] = {
                "items": state.items,
                "age_seconds": None
                if state.refreshed_at is None
                else round(time.time() - state.refreshed_at, 1),
                "last_error": state.error,
            }
        return out


def _complete(found: list[Dataset], identifier: Dataset) -> list[Dataset]:
    """Forwarded answers worth keeping: those that carry both keys naming a mirrored
    item (Accession Number and Scheduled Procedure Step ID). A query that did not ask
    for them cannot be told apart from another item, so it refreshes nothing."""
    kept = []
    for ds in found:
        steps = ds.get(worklist.SPS) or []
        step_id = steps[0].get("ScheduledProcedureStepID", "") if steps else ""
        if ds.get("AccessionNumber", "") and step_id:
            kept.append(ds)
    return kept
