"""What DICOMweb reads stored objects through: the instances of a study, series or
instance (recalled from the center first when that is the only copy), each as a
Part-10 payload in the syntax asked for, or as a file with native pixels for frames
and pictures. Payloads are engine.forward's, so WADO reads hot, warm and decoded
objects exactly as forwarding and C-MOVE do; `release` deletes what was made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import core_rs
from engine.dicom.client import Payload
from engine.forward.recall import Recaller
from engine.forward.senders import ObjectReader
from engine.services import Shared
from policies.http_access import Caller
from storage.index import Instance
from storage.query import Query
from storage.query import instances as stored_instances
from storage.queue import Job
from storage.transcode import DECODERS, ENCODERS, EXPLICIT_LE

CHUNK = 1 << 20  # what one read of a stored file hands to the HTTP stream
# Transfer syntaxes a retrieve may ask for that core_rs can make from native pixels.
ENCODABLE = frozenset(uid for uid, _ in ENCODERS.values())
_RECALL_LIMIT = 600.0  # seconds a WADO request waits for its study to come back


class NotFound(LookupError):
    """404: nothing stored under these UIDs."""


class Unavailable(RuntimeError):
    """503: only the center has it, and it could not be recalled (the reason)."""


class Objects:
    def __init__(self, shared: Shared, reader: ObjectReader, recaller: Recaller) -> None:
        self._shared = shared
        self._reader = reader
        self._recaller = recaller

    async def instances(
        self, caller: Caller, study: str, series: str = "", sop: str = ""
    ) -> list[Instance]:
        """The stored instances under these UIDs, in study/series/instance order; a
        study held only at the center is recalled first."""
        found = await asyncio.to_thread(self._locate, study, series, sop)
        if not found:
            raise NotFound(
                f"no instances stored under study {study}"
                + (f" series {series}" if series else "")
                + (f" instance {sop}" if sop else "")
            )
        if any(instance.tier == "central" for instance in found):
            await self._recall(caller, study)
            found = await asyncio.to_thread(self._locate, study, series, sop)
            if any(instance.tier == "central" for instance in found):
                raise Unavailable(f"study {study} is still only at the center after its recall")
        return found

    def _locate(self, study: str, series: str, sop: str) -> list[Instance]:
        index = self._shared.index
        if sop:
            instance = index.get(sop)
            matches = (
                instance is not None
                and instance.study_instance_uid == study
                and (not series or instance.series_instance_uid == series)
            )
            return [instance] if matches and instance is not None else []
        keys = {"StudyInstanceUID": study}
        if series:
            keys["SeriesInstanceUID"] = series
        return list(stored_instances(index, Query("SERIES" if series else "STUDY", keys)))

    async def _recall(self, caller: Caller, study: str) -> None:
        if not self._recaller.available:
            raise Unavailable(
                f"study {study} is only at the center and no destination has recall = true"
            )
        code, body = self._recaller.start(
            study, Caller(f"WADO by {caller.name}", "admin", caller.address)
        )
        if code >= 400:
            raise Unavailable(str(body.get("error", f"recall refused ({code})")))
        try:
            async with asyncio.timeout(_RECALL_LIMIT):
                progress = await self._recaller.wait(study)
        except TimeoutError:
            raise Unavailable(f"study {study} is being recalled; try again shortly") from None
        if progress is None or progress.state != "done":
            why = progress.error if progress else "the recall was forgotten"
            raise Unavailable(f"recall of study {study} failed: {why}")

    async def part10(self, instance: Instance, transfer_syntax: str) -> tuple[Payload, str]:
        """The object's file in `transfer_syntax` when it can be made ("*": as stored),
        and the syntax it is in."""
        job = _job(instance)
        stored = instance.transfer_syntax_uid
        try:
            if transfer_syntax == EXPLICIT_LE and stored in DECODERS:
                return await self._reader.decoded(job, instance), EXPLICIT_LE
            if transfer_syntax in ENCODABLE and stored != transfer_syntax:
                return await self._reader.encoded(job, instance, transfer_syntax), transfer_syntax
        except core_rs.CodecError:
            pass  # counted and logged by the reader; the stored form goes, labelled so
        return await self._reader.part10(job, instance, "as-stored"), instance.transfer_syntax_uid

    async def native(self, instance: Instance) -> Payload:
        """A file of the object with native pixels (decoded when stored compressed)."""
        payload, syntax = await self.part10(instance, EXPLICIT_LE)
        if instance.transfer_syntax_uid in DECODERS and syntax != EXPLICIT_LE:
            self.release(payload)
            raise ValueError(f"{instance.sop_instance_uid}: its pixels cannot be decoded here")
        return payload

    def release(self, payload: Payload) -> None:
        self._reader.release(payload)


def _job(instance: Instance) -> Job:
    return Job(
        seq=0,
        destination="dicomweb",
        priority=1,
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        study_instance_uid=instance.study_instance_uid,
        size=instance.dataset_length,
        enqueued_at=time.time(),
        hash=instance.hash,
    )


def readable(payload: Payload) -> Path | BytesIO:
    """What pydicom reads the payload from: its file, or the bytes made in memory (a
    copy with corrected demographics)."""
    return BytesIO(payload.data) if payload.data is not None else payload_path(payload)


def payload_path(payload: Payload) -> Path:
    if payload.path is None:
        raise ValueError("the object was made in memory, not as a file")
    return payload.path


async def chunks(payload: Payload) -> AsyncIterator[bytes]:
    """The payload's bytes, a megabyte per read in a thread: a slow reader holds one
    chunk, and the event loop never waits on the disk. Opening, seeking and the first
    read are one hop, so an object under a megabyte costs one."""
    if payload.data is not None:
        yield payload.data
        return
    path = payload_path(payload)
    handle, data = await asyncio.to_thread(_open_at, path, payload.offset, payload.length)
    try:
        left = payload.length - len(data)
        yield data
        while left > 0:
            data = await asyncio.to_thread(handle.read, min(CHUNK, left))
            if not data:
                raise OSError(f"{path} is shorter than its index record says")
            left -= len(data)
            yield data
    finally:
        handle.close()


def _open_at(path: Path, offset: int, length: int) -> tuple[BinaryIO, bytes]:
    handle = path.open("rb")
    try:
        handle.seek(offset)
        data = handle.read(min(CHUNK, length))
    except BaseException:
        handle.close()
        raise
    if length and not data:
        handle.close()
        raise OSError(f"{path} is shorter than its index record says")
    return handle, data
