"""STOW-RS (PS3.18 10.5): `POST /dicom-web/studies` with multipart/related DICOM
parts, stored exactly as a C-STORE is (engine.dicom.store: the same spool, hash,
durability, index commit, routing and forwarding).

The body is parsed as it streams (python-multipart) and each part's bytes go
straight into a core_rs Part10Upload, so memory stays one chunk whatever the study's
size. A part is reported in ReferencedSOPSequence only after its object and index
record are durable; anything else is in FailedSOPSequence with the DIMSE status a
C-STORE would have had. The answer is 200 (all stored), 202 (some) or 409 (none).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import core_rs
from engine.dicom.store import CANNOT_UNDERSTAND, SUCCESS, StoreResult, StoreService
from engine.services import Shared
from engine.web.dicomweb import PREFIX, dicom_json, failure
from engine.web.gate import Gate
from engine.web.ops import refused
from policies.http_access import Caller, Refusal

log = logging.getLogger(__name__)
CALLING_AE = "STOW-RS"  # what routing rules and index records see as the sender
_WRONG_STUDY = 0xA900  # PS3.18 Table 10.5.3-1 via PS3.4: does not match the request


@dataclass
class _Part:
    upload: core_rs.Part10Upload
    header: list[bytes] = field(default_factory=lambda: [b"", b""])  # the one being read
    error: str = ""


class Stow:
    def __init__(self, shared: Shared, gate: Gate, store: StoreService) -> None:
        self._shared = shared
        self._gate = gate
        self._store = store

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{PREFIX}/studies", self._stow, methods=["POST"]),
            Route(f"{PREFIX}/studies/{{study}}", self._stow, methods=["POST"]),
        ]

    async def _stow(self, request: Request) -> Response:
        caller = self._gate.check(request, "admin")
        if isinstance(caller, Refusal):
            return refused(caller)
        media, options = parse_options_header(request.headers.get("content-type", ""))
        kind = options.get(b"type", b"application/dicom").strip(b'"')
        if media != b"multipart/related" or b"boundary" not in options:
            return failure(415, 'send multipart/related; type="application/dicom"; boundary=...')
        if kind != b"application/dicom":
            return failure(415, f"parts of type {kind.decode()!r}: only application/dicom is taken")
        full = self._shared.layout.disk_full(self._shared.config.storage.disk_high_watermark)
        if full:
            return failure(503, f"not storing: {full}")
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        done: list[_Part] = []
        current: list[_Part] = []

        def begin() -> None:
            path = self._shared.layout.spool / f"{os.getpid()}-stow-{uuid.uuid4().hex}"
            upload = core_rs.Part10Upload(path, CALLING_AE, self._shared.config.durable)
            current[:] = [_Part(upload)]

        def header_field(data: bytes, start: int, end: int) -> None:
            current[0].header[0] += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            current[0].header[1] += data[start:end]

        def header_end() -> None:
            part = current[0]
            name, value = part.header
            part.header = [b"", b""]
            if name.strip().lower() == b"content-type":
                part_media, _ = parse_options_header(value.strip())
                if part_media != b"application/dicom":
                    part.error = f"a part of type {part_media.decode('latin-1')!r}"

        def data(chunk: bytes, start: int, end: int) -> None:
            part = current[0]
            if part.error:
                return
            try:
                part.upload.write(chunk[start:end])
            except core_rs.DatasetError as exc:
                part.error = str(exc)

        def end() -> None:
            done.append(current.pop())

        parser = MultipartParser(
            options[b"boundary"],
            {
                "on_part_begin": begin,
                "on_header_field": header_field,
                "on_header_value": header_value,
                "on_header_end": header_end,
                "on_part_data": data,
                "on_part_end": end,
            },
        )
        study = request.path_params.get("study", "")
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                while done:
                    await self._one(done.pop(0), caller, study, stored, failed)
            parser.finalize()
        except ParseError as exc:
            # Parts complete before the error are stored; the one it cut off is dropped
            # (its spool goes with it). The answer says which were stored.
            while done:
                await self._one(done.pop(0), caller, study, stored, failed)
            stored_uids = [s["sop_instance"] for s in stored]
            log.warning(
                "STOW-RS from %s: malformed body after %d stored: %s",
                caller.name,
                len(stored_uids),
                exc,
            )
            return JSONResponse(
                {"error": f"malformed multipart body: {exc}", "stored": stored_uids}, 400
            )
        while done:
            await self._one(done.pop(0), caller, study, stored, failed)
        if not stored and not failed:
            return failure(400, "the request held no parts")
        return self._answer(request, stored, failed)

    async def _one(
        self,
        part: _Part,
        caller: Caller,
        study: str,
        stored: list[dict[str, Any]],
        failed: list[dict[str, Any]],
    ) -> None:
        if part.error:
            failed.append(_failed("", "", CANNOT_UNDERSTAND))
            log.warning("STOW-RS from %s: a part was refused: %s", caller.name, part.error)
            return
        try:
            spool, sop_class, sop_instance, syntax = part.upload.finish()
        except core_rs.DatasetError as exc:
            failed.append(_failed("", "", CANNOT_UNDERSTAND))
            log.warning("STOW-RS from %s: a part was refused: %s", caller.name, exc)
            return
        result: StoreResult = await self._store.store(
            spool, sop_class, sop_instance, syntax, CALLING_AE
        )
        if result.status != SUCCESS:
            failed.append(_failed(sop_class, sop_instance, result.status))
            return
        record = self._shared.index.get(sop_instance)
        study_uid = record.study_instance_uid if record else ""
        if study and study_uid != study:
            # Stored (it is durable and indexed), but not what the request promised.
            failed.append(_failed(sop_class, sop_instance, _WRONG_STUDY))
            return
        stored.append(
            {
                "sop_class": sop_class,
                "sop_instance": sop_instance,
                "study": study_uid,
                "series": record.series_instance_uid if record else "",
            }
        )

    def _answer(
        self, request: Request, stored: list[dict[str, Any]], failed: list[dict[str, Any]]
    ) -> Response:
        base = str(request.base_url).rstrip("/") + PREFIX
        body: dict[str, Any] = {}
        if stored:
            body["00081199"] = {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": {"vr": "UI", "Value": [s["sop_class"]]},
                        "00081155": {"vr": "UI", "Value": [s["sop_instance"]]},
                        "00081190": {
                            "vr": "UR",
                            "Value": [
                                f"{base}/studies/{s['study']}/series/{s['series']}"
                                f"/instances/{s['sop_instance']}"
                            ],
                        },
                    }
                    for s in stored
                ],
            }
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else 202 if stored else 409
        return dicom_json(body, status)


def _failed(sop_class: str, sop_instance: str, reason: int) -> dict[str, Any]:
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return item
