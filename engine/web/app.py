"""The HTTP port's one ASGI app: the ops API (engine.ops routes), DICOMweb (QIDO,
WADO, STOW), WADO-URI and the site console, sharing one access gate and one
session table. Paths nobody serves get a JSON 404 that lists the API's paths."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from engine.dicom.store import StoreService
from engine.forward.recall import Recaller
from engine.forward.senders import ObjectReader
from engine.ops import status
from engine.ops.http import Route
from engine.web.console import Console
from engine.web.dicomweb import DicomWeb
from engine.web.gate import Gate
from engine.web.objects import Objects
from engine.web.ops import asgi_routes, json_response
from engine.web.sessions import Sessions
from engine.web.stow import Stow


def build(
    node: status.Node,
    ops_routes: Sequence[Route],
    recaller: Recaller,
    store: StoreService,
    reader: ObjectReader,
) -> Starlette:
    shared = node.shared
    gate = Gate(shared, Sessions())
    dicomweb = DicomWeb(shared, gate, Objects(shared, reader, recaller))
    known = sorted(f"{r.method} {r.pattern}" for r in ops_routes)

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        if code == 405:
            return json_response(
                405, {"error": f"{request.method} not allowed on {request.url.path}"}
            )
        return json_response(
            code, {"error": f"no such path {request.url.path}", "paths": [*known, "/dicom-web/..."]}
        )

    return Starlette(
        routes=[
            *asgi_routes(ops_routes, gate),
            *dicomweb.routes(),
            *Stow(shared, gate, store).routes(),
            *Console(node, gate, recaller).routes(),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
