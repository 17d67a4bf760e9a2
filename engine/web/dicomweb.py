"""DICOMweb (PS3.18) under /dicom-web, and WADO-URI at /wado: QIDO-RS searches,
WADO-RS retrieve (instances, metadata, frames, bulk data, rendered pictures and
thumbnails), each request checked by the gate ("read") and audited with who asked
and which patient and study. STOW-RS is engine.web.stow's.

Failures are JSON `{"error": ...}` with 400 (a bad parameter), 404 (nothing stored
under those UIDs), 406 (a media type this server cannot make) or 503 (only the
center has it and it could not be recalled).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
from pydicom import dcmread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from engine.dicom.client import Payload
from engine.services import Shared
from engine.web import qido
from engine.web.dicom_json import metadata
from engine.web.gate import Gate
from engine.web.objects import NotFound, Objects, Unavailable, chunks, readable
from engine.web.ops import refused
from engine.web.render import MEDIA_TYPES, ImageFormat, RenderError, View, parse_window, render
from policies.http_access import Caller, Refusal
from storage.index import Instance
from storage.query import Level, QueryError
from storage.transcode import EXPLICIT_LE

log = logging.getLogger(__name__)
PREFIX = "/dicom-web"
_NATIVE = {"1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
_THUMBNAIL = 128
Endpoint = Callable[[Request, Caller], Awaitable[Response]]


def dicom_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """application/dicom+json, serialized by orjson: a 5,000-study list is ~4 MB of
    JSON, which the standard library takes ~60 ms to write and orjson ~8."""
    return Response(orjson.dumps(body), status, headers, media_type="application/dicom+json")


def failure(status: int, reason: str) -> JSONResponse:
    log.info("DICOMweb answered %d: %s", status, reason)  # what a client was told, for ops
    return JSONResponse({"error": reason}, status)


class DicomWeb:
    def __init__(self, shared: Shared, gate: Gate, objects: Objects) -> None:
        self._shared = shared
        self._gate = gate
        self._objects = objects

    def routes(self) -> list[BaseRoute]:
        s, se, i = "/studies/{study}", "/series/{series}", "/instances/{sop}"
        qidos: list[tuple[str, Level]] = [
            ("/studies", "STUDY"),
            (f"{s}/series", "SERIES"),
            ("/series", "SERIES"),
            (f"{s}{se}/instances", "IMAGE"),
            (f"{s}/instances", "IMAGE"),
            ("/instances", "IMAGE"),
        ]
        routes: list[BaseRoute] = [
            self._route(PREFIX + path, self._qido(level)) for path, level in qidos
        ]
        for path in (s, f"{s}{se}", f"{s}{se}{i}"):
            routes += [
                self._route(PREFIX + path, self._retrieve),
                self._route(PREFIX + path + "/metadata", self._metadata),
                self._route(PREFIX + path + "/thumbnail", self._thumbnail),
            ]
        routes += [
            self._route(f"{PREFIX}{s}{se}{i}/rendered", self._rendered),
            self._route(f"{PREFIX}{s}{se}{i}/frames/{{frames}}", self._frames),
            self._route(f"{PREFIX}{s}{se}{i}/bulk/{{tag}}", self._bulk),
            self._route("/wado", self._wado_uri),
        ]
        return routes

    def _route(self, path: str, endpoint: Endpoint) -> Route:
        async def guarded(request: Request) -> Response:
            caller = self._gate.check(request, "read")
            if isinstance(caller, Refusal):
                return refused(caller)
            log.debug("DICOMweb %s %s by %s", request.method, request.url, caller.name)
            try:
                return await endpoint(request, caller)
            except qido.QidoError as exc:
                return failure(400, str(exc))
            except QueryError as exc:
                return failure(400, str(exc))
            except RenderError as exc:
                return failure(400 if "window" in str(exc) else 404, str(exc))
            except NotFound as exc:
                return failure(404, str(exc))
            except Unavailable as exc:
                return failure(503, str(exc))

        return Route(path, guarded, methods=["GET", "HEAD"])

    # ---- QIDO-RS ------------------------------------------------------------------

    def _qido(self, level: Level) -> Endpoint:
        async def search(request: Request, caller: Caller) -> Response:
            parents = {
                key: request.path_params[name]
                for name, key in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"))
                if name in request.path_params
            }
            found = qido.parse(level, list(request.query_params.multi_items()), parents)
            config = self._shared.config
            recallable = any(d.recall for d in config.destination if d.kind == "dicom")
            base = str(request.base_url).rstrip("/") + PREFIX
            # Search, JSON and serialization in one hop: thousands of answers never
            # hold the event loop.
            body, matches, more = await asyncio.to_thread(
                qido.answer, self._shared.index, found, recallable, base, config.node.ae_title
            )
            self._audit("http_query", caller, level=level, matches=matches, **self._keys(found))
            headers = (
                {"Warning": '299 pacs-edge "There are additional results that can be requested"'}
                if more
                else None
            )
            return Response(body, headers=headers, media_type="application/dicom+json")

        return search

    def _keys(self, found: qido.Search) -> dict[str, Any]:
        patient = self._shared.config.audit.patient_identifiers
        keys = {
            k: v for k, v in found.matches.items() if v and (patient or not k.startswith("Patient"))
        }
        return {"keys": keys}

    # ---- WADO-RS ------------------------------------------------------------------

    async def _found(self, request: Request, caller: Caller) -> list[Instance]:
        p = request.path_params
        return await self._objects.instances(
            caller, p["study"], p.get("series", ""), p.get("sop", "")
        )

    async def _retrieve(self, request: Request, caller: Caller) -> Response:
        accept = _Accept(request.headers.get("accept", ""))
        if not accept.dicom:
            return failure(
                406,
                'instances are sent as multipart/related; type="application/dicom" '
                f"(asked for {request.headers.get('accept')!r})",
            )
        found = await self._found(request, caller)
        self._audit_retrieve(caller, found, "instances")
        boundary = uuid.uuid4().hex
        headers = None
        if accept.transfer_syntax == "*" and not any(i.corrections for i in found):
            # As stored, every part's size is in the index: with a Content-Length the
            # body goes out as it is read, not copied again into chunked encoding.
            size = sum(
                len(_head(boundary, i.transfer_syntax_uid, i.sop_instance_uid))
                + i.meta_length
                + i.dataset_length
                + 2
                for i in found
            )
            headers = {"Content-Length": str(size + len(f"--{boundary}--\r\n"))}
        return StreamingResponse(
            self._multipart(found, accept.transfer_syntax, boundary),
            headers=headers,
            media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        )

    async def _multipart(
        self, found: list[Instance], transfer_syntax: str, boundary: str
    ) -> AsyncIterator[bytes]:
        after = b""  # the CRLF that ends the previous part, sent with the next head
        for instance in found:
            try:
                payload, syntax = await self._objects.part10(instance, transfer_syntax)
            except (OSError, ValueError) as exc:
                # Headers are gone: a part cannot become a 404 any more. The part is left
                # out and logged; the client sees fewer parts than the study has (or,
                # with a Content-Length, a body cut short and the connection closed).
                log.warning("WADO: %s left out: %s", instance.sop_instance_uid, exc)
                continue
            head = _head(boundary, syntax, instance.sop_instance_uid)
            try:
                # Heads go on their own: joining one to a half-megabyte chunk would copy
                # the chunk once more for a hundred bytes.
                yield after + head
                async for chunk in chunks(payload):
                    yield chunk
                after = b"\r\n"
            finally:
                self._objects.release(payload)
        yield after + f"--{boundary}--\r\n".encode()

    async def _metadata(self, request: Request, caller: Caller) -> Response:
        found = await self._found(request, caller)
        self._audit_retrieve(caller, found, "metadata")
        base = str(request.base_url).rstrip("/") + PREFIX
        answers = []
        for instance in found:
            payload, _ = await self._objects.part10(instance, "*")
            try:
                bulk = (
                    f"{base}/studies/{instance.study_instance_uid}/series/"
                    f"{instance.series_instance_uid}/instances/{instance.sop_instance_uid}/bulk"
                )
                compressed = instance.transfer_syntax_uid not in _NATIVE
                answers.append(
                    await asyncio.to_thread(metadata, readable(payload), bulk, compressed)
                )
            finally:
                self._objects.release(payload)
        return dicom_json(answers)

    async def _frames(self, request: Request, caller: Caller) -> Response:
        try:
            numbers = [int(n) for n in request.path_params["frames"].split(",")]
        except ValueError:
            return failure(400, "frames must be numbers separated by commas: /frames/1,2,3")
        (instance,) = await self._found(request, caller)
        self._audit_retrieve(caller, [instance], "frames")
        payload = await self._objects.native(instance)
        try:
            frames = await asyncio.to_thread(_read_frames, readable(payload), numbers)
        finally:
            self._objects.release(payload)
        boundary = uuid.uuid4().hex
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/octet-stream; "
                f"transfer-syntax={EXPLICIT_LE}\r\n\r\n".encode()
                + frame
                + b"\r\n"
                for frame in frames
            )
            + f"--{boundary}--\r\n".encode()
        )
        media = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
        return Response(body, media_type=media)

    async def _bulk(self, request: Request, caller: Caller) -> Response:
        try:
            tag = int(request.path_params["tag"], 16)
        except ValueError:
            return failure(400, "bulk data is named by its tag in hex: /bulk/7FE00010")
        (instance,) = await self._found(request, caller)
        self._audit_retrieve(caller, [instance], "bulk")
        payload, _ = await self._objects.part10(instance, "*")
        try:
            value = await asyncio.to_thread(_read_value, readable(payload), tag)
        finally:
            self._objects.release(payload)
        if value is None:
            return failure(404, f"the object has no element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + value
            + f"\r\n--{boundary}--\r\n".encode()
        )
        media = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
        return Response(body, media_type=media)

    async def _rendered(self, request: Request, caller: Caller) -> Response:
        (instance,) = await self._found(request, caller)
        query = request.query_params
        view = View(
            frame=_int(query.get("frame", "1"), "frame"),
            window=parse_window(query["window"]) if "window" in query else None,
            size=_viewport(query.get("viewport", "")),
            form=_image_form(request.headers.get("accept", "")),
            quality=min(100, max(1, _int(query.get("quality", "90"), "quality"))),
        )
        return await self._picture(caller, instance, view, "rendered")

    async def _thumbnail(self, request: Request, caller: Caller) -> Response:
        found = await self._found(request, caller)
        middle = found[len(found) // 2]  # a series' middle image says most about it
        form = _image_form(request.headers.get("accept", ""))
        return await self._picture(caller, middle, View(size=_THUMBNAIL, form=form), "thumbnail")

    async def _picture(self, caller: Caller, instance: Instance, view: View, what: str) -> Response:
        self._audit_retrieve(caller, [instance], what)
        try:
            payload = await self._objects.native(instance)
        except ValueError as exc:
            return failure(406, f"cannot render: {exc}")
        try:
            picture = await asyncio.to_thread(render, readable(payload), view)
        finally:
            self._objects.release(payload)
        return Response(picture, media_type=MEDIA_TYPES[view.form])

    # ---- WADO-URI (PS3.18 9) ------------------------------------------------------

    async def _wado_uri(self, request: Request, caller: Caller) -> Response:
        query = request.query_params
        if query.get("requestType") != "WADO":
            return failure(400, "requestType=WADO is required")
        missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not query.get(k)]
        if missing:
            return failure(400, f"missing {', '.join(missing)}")
        found = await self._objects.instances(
            caller, query["studyUID"], query["seriesUID"], query["objectUID"]
        )
        content = query.get("contentType", "image/jpeg")  # PS3.18's default
        if content == "application/dicom":
            self._audit_retrieve(caller, found, "wado-uri")
            payload, _ = await self._objects.part10(found[0], query.get("transferSyntax", "*"))
            return StreamingResponse(self._released(payload), media_type="application/dicom")
        if content not in ("image/jpeg", "image/png"):
            return failure(
                406, f"contentType {content!r}: use application/dicom, image/jpeg or image/png"
            )
        window = None
        if "windowCenter" in query and "windowWidth" in query:
            window = parse_window(f"{query['windowCenter']},{query['windowWidth']}")
        view = View(
            frame=_int(query.get("frameNumber", "1"), "frameNumber"),
            window=window,
            size=_int(query["rows"], "rows") if "rows" in query else None,
            form="png" if content == "image/png" else "jpeg",
        )
        return await self._picture(caller, found[0], view, "wado-uri")

    async def _released(self, payload: Payload) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks(payload):
                yield chunk
        finally:
            self._objects.release(payload)

    # ---- audit --------------------------------------------------------------------

    def _audit(self, event: str, caller: Caller, **fields: Any) -> None:
        self._shared.audit.write(event, by=caller.name, client=caller.address, **fields)

    def _audit_retrieve(self, caller: Caller, found: list[Instance], what: str) -> None:
        first = found[0]
        self._audit(
            "http_retrieve",
            caller,
            what=what,
            study_instance_uid=first.study_instance_uid,
            instances=len(found),
            **self._shared.audit.patient(first.patient_id, first.patient_name),
        )


def _head(boundary: str, syntax: str, sop_instance_uid: str) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n"
        f"Content-Location: {sop_instance_uid}\r\n\r\n"
    ).encode()


class _Accept:
    """What a WADO-RS retrieve's Accept header asks for: DICOM or not, and in which
    transfer syntax ("*" or absent: as stored)."""

    def __init__(self, header: str) -> None:
        self.dicom = not header.strip()
        self.transfer_syntax = "*"
        for item in header.split(","):
            media, *params = (part.strip() for part in item.split(";"))
            options = dict(p.split("=", 1) for p in params if "=" in p)
            kind = options.get("type", "").strip('"')
            if media in ("*/*", "multipart/related", "application/dicom") and kind in (
                "",
                "application/dicom",
            ):
                self.dicom = True
                self.transfer_syntax = options.get("transfer-syntax", "*").strip('"')
                return


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise qido.QidoError(f"{name} must be a whole number, not {text!r}") from None


def _viewport(text: str) -> int | None:
    if not text:
        return None
    width, _, height = text.partition(",")
    return max(_int(width, "viewport"), _int(height or width, "viewport"))


def _image_form(accept: str) -> ImageFormat:
    return "png" if "image/png" in accept and "image/jpeg" not in accept else "jpeg"


def _read_frames(path: Path | BytesIO, numbers: list[int]) -> list[bytes]:
    ds = dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    size = len(ds.PixelData) // count
    for n in numbers:
        if not 1 <= n <= count:
            raise RenderError(f"frame {n} asked for; the object has {count}")
    return [bytes(ds.PixelData[(n - 1) * size : n * size]) for n in numbers]


def _read_value(path: Path | BytesIO, tag: int) -> bytes | None:
    ds = dcmread(path)
    if tag not in ds:
        return None
    value = ds[tag].value
    return value if isinstance(value, bytes) else str(value).encode()
