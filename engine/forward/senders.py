"""How a batch of queued objects reaches one destination: C-STORE or STOW-RS.

A sender answers for each job it tried with a `Delivery`, handed to the forwarder's
`settle` as soon as it is known: sent; unreachable (no
usable association or HTTP exchange: the destination is down); retry (the
destination answered "not now": out of resources, busy); permanent (it will not
take this object). Jobs it did not get to are left alone; engine.forward.forwarder decides
what each answer costs (docs/decisions/0009).

Objects go as stored, byte for byte, unless a routing rule coerces them, the
destination takes only explicit VR little endian, or it asks for JPEG-LS or HTJ2K
(`transfer_syntax = "jpeg-ls-lossless"` or `"htj2k-lossless"`) or for decoded pixels
(`"uncompressed"`): then the forwarded copy is made with frames encoded and verified,
or decoded, by core_rs (storage.transcode; the slow path, in a worker thread). An
object the codec cannot carry goes as stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import httpx
from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset

import core_rs
from engine.dicom.client import Payload, PeerUnavailable, Requestor, StoreResponse
from engine.dicom.negotiation import MAX_CONTEXTS
from monitoring.metrics import Metrics
from policies.config import DicomDestination, DicomWebDestination
from policies.rules import Coercion, with_values
from storage.index import Index, Instance
from storage.layout import DataLayout
from storage.queue import Job
from storage.tiers import NotLocal, Tiers
from storage.transcode import (
    DECODERS,
    DEFLATED,
    ENCODERS,
    JPEG,
    NATIVE_LITTLE_ENDIAN,
    RLE_LOSSLESS,
    Transcoded,
    decode_to_native,
    encode_lossless,
)

log = logging.getLogger(__name__)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
# A negotiated transfer syntax back to the ENCODERS key that makes it.
_ENCODED_AS = {uid: codec for codec, (uid, _) in ENCODERS.items()}
IMPLICIT_LE = "1.2.840.10008.1.2"
# Stored in these, an object can be re-encoded as explicit VR LE without a codec.
_REENCODABLE = frozenset({IMPLICIT_LE, "1.2.840.10008.1.2.2", DEFLATED})

Kind = Literal["sent", "retry", "unreachable", "permanent"]
Throttle = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    job: Job
    kind: Kind
    message: str = ""
    seconds: float = 0.0  # sending it, until the answer (0: not sent)


# Called with each answer as it comes (engine.forward.forwarder records it durably).
Settle = Callable[[list[Delivery]], Awaitable[None]]


def classify_status(status: int) -> Kind:
    """A C-STORE-RSP status, as the forwarder acts on it (docs/decisions/0009)."""
    if status in (0x0000, 0xB000, 0xB006, 0xB007):
        return "sent"  # Success, or a warning: the destination kept the object
    if status & 0xFF00 == 0xA700 or 0xC001 <= status <= 0xC0FF:
        return "retry"  # out of resources; vendor "busy, try later"
    return "permanent"  # 0xA9xx, 0xC000, 0xCxxx, 0x01xx, 0x02xx, unknown


class ObjectReader:
    """Finds a job's stored object and makes the bytes to forward."""

    def __init__(
        self, index: Index, layout: DataLayout, io_pool: Executor, metrics: Metrics
    ) -> None:
        self._index = index
        self._layout = layout
        self._io_pool = io_pool
        self._metrics = metrics
        self._tiers = Tiers(index, layout, durable=False)

    def locate(self, job: Job) -> Instance | None:
        return self._index.get(job.sop_instance_uid)

    async def _local(self, instance: Instance) -> Path:
        """The object's file as received: the hot file, or a warm one restored into
        the spool (a spool file, so `release` deletes it with the payload)."""
        if instance.tier == "hot":
            return self._layout.object_path(instance.hash)
        if instance.tier != "warm":
            raise NotLocal(f"{instance.sop_instance_uid} was purged: only its destinations have it")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io_pool, self._tiers.restore, instance)

    async def _from_local(
        self, instance: Instance, make: Callable[[Path], Awaitable[Payload]]
    ) -> Payload:
        """`make(path)` on the object's local file; a restored file that did not
        become the payload itself is deleted at once."""
        path = await self._local(instance)
        payload: Payload | None = None
        try:
            payload = await make(path)
            return payload
        finally:
            if path.parent == self._layout.spool and (payload is None or payload.path != path):
                path.unlink(missing_ok=True)

    async def dataset(self, job: Job, instance: Instance, transfer_syntax: str) -> Payload:
        """The dataset (no meta) in `transfer_syntax`, coerced as the job says."""
        return await self._from_local(
            instance, partial(self._dataset, job, instance, transfer_syntax)
        )

    async def _dataset(
        self, job: Job, instance: Instance, transfer_syntax: str, path: Path
    ) -> Payload:
        coerce = _coerce(job, instance)
        if coerce is None and transfer_syntax == instance.transfer_syntax_uid:
            return Payload(path, instance.meta_length, instance.dataset_length)
        if transfer_syntax in _ENCODED_AS:
            return await self._transcoded(job, instance, path, _ENCODED_AS[transfer_syntax])
        if instance.transfer_syntax_uid in DECODERS:
            return await self._decoded(job, instance, path)
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(
            self._io_pool, _rewrite_dataset, path, coerce, transfer_syntax
        )
        return Payload(data=data)

    async def _spool_copy(self, make: Callable[[Path], Transcoded]) -> tuple[Payload, Transcoded]:
        """`make(dest)` in the I/O pool, dest a fresh spool file: the copy as a payload
        that `release` deletes."""
        dest = self._layout.spool / f"{os.getpid()}-transcode-{uuid.uuid4().hex}"
        done = await asyncio.get_running_loop().run_in_executor(self._io_pool, make, dest)
        return Payload(dest, 0, done.size), done

    async def _transcoded(
        self, job: Job, instance: Instance, path: Path, codec: str, part10: bool = False
    ) -> Payload:
        """The object's dataset (or, with `part10`, its file) encoded by `codec` (a
        key of ENCODERS); core_rs.NotRepresentable or VerificationFailed when only the
        stored form can go."""
        make = partial(
            encode_lossless,
            path,
            instance.transfer_syntax_uid,
            codec=codec,
            change=_change(job, instance),
            part10=part10,
        )
        label = codec.removesuffix("-lossless")  # the metric's codec: jpeg-ls, htj2k
        name = label.upper()
        try:
            payload, done = await self._spool_copy(make)
        except core_rs.VerificationFailed as exc:
            self._metrics.transcoded(label, "mismatch")
            log.error(
                "%s: %s copy NOT used, sending as stored: %s", job.sop_instance_uid, name, exc
            )
            raise
        except core_rs.NotRepresentable as exc:
            self._metrics.transcoded(label, "not_representable")
            log.info("%s: sent as stored, not %s: %s", job.sop_instance_uid, name, exc)
            raise
        self._metrics.transcoded(label, "verified")
        log.debug("%s: %s lossless, %.2fx smaller", job.sop_instance_uid, name, done.ratio)
        return payload

    async def _decoded(
        self, job: Job, instance: Instance, path: Path, part10: bool = False
    ) -> Payload:
        """An RLE, JPEG, JPEG 2000 or HTJ2K object with native pixels (explicit VR
        LE); core_rs.CodecError when its stream cannot be decoded, NotRepresentable
        when its samples cannot be given as native pixels faithfully."""
        stored = instance.transfer_syntax_uid
        codec = "rle" if stored == RLE_LOSSLESS else "jpeg" if stored in JPEG else "jpeg2000"
        make = partial(decode_to_native, path, stored, change=_change(job, instance), part10=part10)
        try:
            payload, done = await self._spool_copy(make)
        except core_rs.NotRepresentable as exc:
            self._metrics.transcoded(codec, "not_representable")
            log.info("%s: sent as stored, not decoded: %s", job.sop_instance_uid, exc)
            raise
        except core_rs.CodecError as exc:
            self._metrics.transcoded(codec, "undecodable")
            log.warning(
                "%s: %s cannot be decoded, sent as stored: %s", job.sop_instance_uid, codec, exc
            )
            raise
        self._metrics.transcoded(codec, "decoded")
        log.debug("%s: %s decoded, %d frame(s)", job.sop_instance_uid, codec, done.frames)
        return payload

    async def first_payload(
        self, job: Job, instance: Instance, options: list[tuple[str, int]]
    ) -> tuple[int, Payload]:
        """The first (transfer syntax, context ID) option whose dataset can be made:
        a transcode the codec refuses falls back to the next (the stored syntax is
        among them); core_rs.CodecError when none can."""
        for n, (transfer_syntax, context_id) in enumerate(options):
            try:
                return context_id, await self.dataset(job, instance, transfer_syntax)
            except core_rs.CodecError:
                if n == len(options) - 1:
                    raise
        raise ValueError("no transfer syntax to send in")

    def release(self, payload: Payload) -> None:
        """A copy made for one send (a spool file) is deleted once it went, or did not."""
        if payload.path is not None and payload.path.parent == self._layout.spool:
            payload.path.unlink(missing_ok=True)

    async def part10(self, job: Job, instance: Instance, transfer_syntax: str) -> Payload:
        """The whole Part-10 file, for STOW-RS: as stored, or as JPEG-LS or HTJ2K, or
        decoded, when `transfer_syntax` asks for it and the codec can do it."""
        return await self._from_local(
            instance, partial(self._part10, job, instance, transfer_syntax)
        )

    async def encoded(self, job: Job, instance: Instance, transfer_syntax: str) -> Payload:
        """The Part-10 file re-encoded losslessly in `transfer_syntax` (JPEG-LS or
        HTJ2K, verified), for WADO; core_rs.CodecError when that cannot be made."""
        codec = _ENCODED_AS.get(transfer_syntax)
        if codec is None:
            raise core_rs.NotRepresentable(f"no lossless encoder here for {transfer_syntax}")
        return await self._from_local(
            instance, partial(self._transcoded, job, instance, codec=codec, part10=True)
        )

    async def decoded(self, job: Job, instance: Instance) -> Payload:
        """The Part-10 file with native pixels, for WADO (stored in one of DECODERS);
        core_rs.CodecError (or NotRepresentable) when it cannot be decoded."""
        return await self._from_local(instance, partial(self._decoded, job, instance, part10=True))

    async def _part10(
        self, job: Job, instance: Instance, transfer_syntax: str, path: Path
    ) -> Payload:
        try:
            if transfer_syntax in ENCODERS:
                return await self._transcoded(job, instance, path, transfer_syntax, part10=True)
            if transfer_syntax == "uncompressed" and instance.transfer_syntax_uid in DECODERS:
                return await self._decoded(job, instance, path, part10=True)
        except core_rs.CodecError:
            pass  # counted and logged; the stored form goes
        coerce = _coerce(job, instance)
        if coerce is None:
            return Payload(path, 0, instance.meta_length + instance.dataset_length)
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self._io_pool, _rewrite_file, path, coerce)
        return Payload(data=data)


def _read(path: Path, coerce: dict[str, Any] | None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a modality's odd encoding is forwarded as it is
        ds = dcmread(path)
    if coerce:
        Coercion.model_validate(coerce).apply(ds)
    return ds


def _rewrite_dataset(path: Path, coerce: dict[str, Any] | None, transfer_syntax: str) -> bytes:
    ds = _read(path, coerce)
    out = DicomBytesIO()
    out.is_little_endian = transfer_syntax != "1.2.840.10008.1.2.2"
    out.is_implicit_VR = transfer_syntax == IMPLICIT_LE
    write_dataset(out, ds)
    return out.getvalue()


def _coerce(job: Job, instance: Instance) -> dict[str, Any] | None:
    """What changes in the copy that leaves: the record's corrected demographics
    (HL7 ADT), then the routing rule's coercion."""
    return with_values(job.coerce, instance.corrections)


def _change(job: Job, instance: Instance) -> Callable[[Dataset], None] | None:
    """What a routing rule's coercion (and the record's corrections) do to the copy."""
    coerce = _coerce(job, instance)
    return Coercion.model_validate(coerce).apply if coerce else None


def _rewrite_file(path: Path, coerce: dict[str, Any] | None) -> bytes:
    ds = _read(path, coerce)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


class DicomSender:
    """C-STORE over one association, kept open from batch to batch while it fits."""

    def __init__(
        self,
        dest: DicomDestination,
        calling_ae: str,
        objects: ObjectReader,
        throttle: Throttle | None,
        move_originator: tuple[str, int] | None = None,
    ) -> None:
        """`move_originator`: sending a C-MOVE's sub-operations for this AE and message."""
        self._dest = dest
        self._calling_ae = calling_ae
        self._move_originator = move_originator
        self._objects = objects
        self._throttle = throttle
        self._assoc: Requestor | None = None
        self._proposed: set[tuple[str, str]] = set()  # what self._assoc was opened with

    async def send(self, jobs: list[Job], settle: Settle) -> None:
        plans: list[tuple[Job, Instance, list[str]]] = []
        for job in jobs:
            instance = self._objects.locate(job)
            if instance is None:
                await settle([Delivery(job, "permanent", "object no longer stored on edge")])
                continue
            plans.append((job, instance, _wire_syntaxes(job, instance, self._dest)))
        needed = list(dict.fromkeys((j.sop_class_uid, ts) for j, _, tss in plans for ts in tss))
        if not plans:
            return
        wanted = [[(job.sop_class_uid, ts) for ts in tss] for job, _, tss in plans]
        assoc = await self._association(needed[:MAX_CONTEXTS], wanted)
        # Each answer is being settled while the next object goes out, but that
        # object's final PDU waits until it is durable: a crash can then leave at
        # most one object the destination stored and we did not record.
        settling: asyncio.Task[None] | None = None
        try:
            for job, instance, syntaxes in plans:
                delivery = await self._send_one(assoc, job, instance, syntaxes, settling)
                if settling is not None:
                    await settling  # done already unless the object never went
                settling = asyncio.ensure_future(settle([delivery]))
                if delivery.kind in ("retry", "unreachable"):
                    break
        finally:
            if settling is not None:
                await settling

    async def _send_one(
        self,
        assoc: Requestor,
        job: Job,
        instance: Instance,
        syntaxes: list[str],
        before_last: Awaitable[None] | None,
    ) -> Delivery:
        options = [
            (ts, assoc.accepted[(job.sop_class_uid, ts)])
            for ts in syntaxes
            if (job.sop_class_uid, ts) in assoc.accepted
        ]
        if not options:
            return Delivery(
                job,
                "permanent",
                f"destination accepts no presentation context for SOP class "
                f"{job.sop_class_uid} in {', '.join(syntaxes)}",
            )
        try:
            context_id, payload = await self._objects.first_payload(job, instance, options)
        except (OSError, ValueError) as exc:
            return Delivery(job, "permanent", f"cannot read stored object: {exc}")
        started = time.perf_counter()
        try:
            response = await assoc.store(
                context_id,
                job.sop_class_uid,
                job.sop_instance_uid,
                payload,
                job.priority,
                self._throttle,
                before_last,
                self._move_originator,
            )
        except asyncio.CancelledError:
            assoc.broken = True  # cut mid-message: only an A-ABORT can end it now
            raise
        except PeerUnavailable as exc:
            self._assoc = None
            return Delivery(job, "unreachable", str(exc))
        finally:
            self._objects.release(payload)
        seconds = time.perf_counter() - started
        return Delivery(job, classify_status(response.status), _describe(response), seconds)

    async def _association(
        self, needed: list[tuple[str, str]], wanted: list[list[tuple[str, str]]]
    ) -> Requestor:
        if self._assoc is not None and self._assoc.usable:
            if all(self._best_on_reuse(options) for options in wanted):
                return self._assoc
            await self._assoc.release()
        self._assoc = None
        self._proposed = set(needed)
        dest = self._dest
        self._assoc = await Requestor.open(
            dest.host,
            dest.port,
            self._calling_ae,
            dest.called_ae,
            needed,
            dest.max_pdu,
            dest.connect_timeout,
            dest.timeout,
        )
        return self._assoc

    def _best_on_reuse(self, options: list[tuple[str, str]]) -> bool:
        """Would the open association carry this object as a new one could? Every
        option must have been offered on it: the later ones are the fallbacks (the
        stored syntax when a transcode is refused). Options it refused stay refused
        until a new association, when the destination's configuration may be fixed."""
        assert self._assoc is not None
        accepted = self._assoc.accepted.keys()
        refused = self._proposed - accepted
        best = next((option for option in options if option not in refused), None)
        return best is not None and best in accepted and set(options) <= self._proposed

    async def idle(self) -> None:
        """Nothing to send for a while: give the destination its association back."""
        await self.close()

    async def close(self) -> None:
        if self._assoc is not None:
            assoc, self._assoc = self._assoc, None
            await assoc.release()


def _wire_syntaxes(job: Job, instance: Instance, dest: DicomDestination) -> list[str]:
    """Transfer syntaxes to offer, best first: JPEG-LS or HTJ2K when the destination
    asks for it and the pixels are native; explicit VR LE first when it asks for
    uncompressed and core_rs can decode the stored syntax (storage.transcode.DECODERS);
    as stored; then explicit VR LE when we can re-encode to it without a codec, or (for
    "as-stored-or-uncompressed") decode it (`fallback_syntaxes`)."""
    stored = instance.transfer_syntax_uid
    first = []
    if dest.transfer_syntax in ENCODERS and stored in NATIVE_LITTLE_ENDIAN:
        first = [ENCODERS[dest.transfer_syntax][0]]
    if dest.transfer_syntax == "uncompressed" and stored in DECODERS:
        return [EXPLICIT_LE, stored]
    if stored == DEFLATED and _coerce(job, instance) is not None:
        return [*first, EXPLICIT_LE]  # a coerced copy is not re-deflated
    if stored in _REENCODABLE or dest.transfer_syntax == "as-stored-or-uncompressed":
        return [*first, stored, *fallback_syntaxes(instance)]
    return [*first, stored]


def fallback_syntaxes(instance: Instance) -> list[str]:
    """What an object can go as when its stored syntax is refused: explicit VR LE,
    decoded (what core_rs decodes) or re-encoded (implicit, big endian, deflated)."""
    stored = instance.transfer_syntax_uid
    if stored != EXPLICIT_LE and (stored in DECODERS or stored in _REENCODABLE):
        return [EXPLICIT_LE]
    return []


def _describe(response: StoreResponse) -> str:
    text = f"status {response.status:#06x}"
    return f"{text}: {response.comment}" if response.comment else text


class StowSender:
    """STOW-RS (PS3.18 10.5): one multipart POST per batch, streamed from disk."""

    def __init__(
        self, dest: DicomWebDestination, objects: ObjectReader, throttle: Throttle | None
    ) -> None:
        self._dest = dest
        self._objects = objects
        self._throttle = throttle
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(dest.timeout, connect=dest.connect_timeout),
            headers=dest.headers,
        )

    async def send(self, jobs: list[Job], settle: Settle) -> None:
        """One request carries the batch: its answers are settled together (a
        crash mid-request sends the whole batch again)."""
        deliveries: list[Delivery] = []
        parts: list[tuple[Job, Payload]] = []
        for job in jobs:
            instance = self._objects.locate(job)
            if instance is None:
                deliveries.append(Delivery(job, "permanent", "object no longer stored on edge"))
                continue
            try:
                parts.append(
                    (job, await self._objects.part10(job, instance, self._dest.transfer_syntax))
                )
            except (OSError, ValueError) as exc:
                deliveries.append(Delivery(job, "permanent", f"cannot read stored object: {exc}"))
        if parts:
            deliveries += await self._post(parts)
        await settle(deliveries)

    async def _post(self, parts: list[tuple[Job, Payload]]) -> list[Delivery]:
        boundary = uuid.uuid4().hex
        url = self._dest.url.rstrip("/") + "/studies"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        started = time.perf_counter()
        try:
            response = await self._client.post(
                url, content=self._body(parts, boundary), headers=headers
            )
        except httpx.HTTPError as exc:
            message = f"STOW-RS to {url} failed: {exc!r}"
            return [Delivery(job, "unreachable", message) for job, _ in parts]
        finally:
            for _job, payload in parts:
                self._objects.release(payload)
        each = (time.perf_counter() - started) / len(parts)  # one request carries them all
        outcome = _stow_outcome(response, [job for job, _ in parts])
        return [replace(d, seconds=each) for d in outcome]

    async def _body(self, parts: list[tuple[Job, Payload]], boundary: str) -> AsyncIterator[bytes]:
        for _job, payload in parts:
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            for window, _last in payload.windows():
                if self._throttle is not None:
                    await self._throttle(len(window))
                yield window
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    async def idle(self) -> None:
        return None  # HTTP keep-alive connections time out by themselves

    async def close(self) -> None:
        await self._client.aclose()


def _stow_outcome(response: httpx.Response, jobs: list[Job]) -> list[Delivery]:
    """PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored."""
    code = response.status_code
    if code in (401, 403, 404, 408, 429) or code >= 500:
        # Credentials, URL, overload, outage: the destination's problem, not the object's.
        why = f"HTTP {code} {response.reason_phrase}"
        return [Delivery(job, "unreachable", why) for job in jobs]
    failed: dict[str, str] = {}
    try:
        body = response.json() if response.content else {}
        for item in body.get("00081198", {}).get("Value", []):
            uid = item.get("00081155", {}).get("Value", [""])[0]
            reason = item.get("00081197", {}).get("Value", [0])[0]
            failed[uid] = f"STOW-RS failure reason {int(reason):#06x}"
    except (ValueError, AttributeError, TypeError, IndexError, json.JSONDecodeError):
        failed = {}
    if code not in (200, 202) and not failed:
        text = f"HTTP {code} {response.reason_phrase}: {response.text[:120]}"
        return [Delivery(job, "permanent", text) for job in jobs]
    none_stored = f"HTTP {code}: destination stored none of the batch"
    return [
        Delivery(job, "permanent", failed[job.sop_instance_uid])
        if job.sop_instance_uid in failed
        else Delivery(job, "permanent", none_stored)
        if code == 409
        else Delivery(job, "sent")
        for job in jobs
    ]
