"""The ops API (engine.ops: status, queues, recalls, reload, health, metrics) served
on the ASGI app, with the paths, roles and JSON documents it has always had."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as AsgiRoute

from engine.ops.http import Raw, Route
from engine.web.gate import Gate
from policies.http_access import Refusal


def json_response(status: int, body: Any) -> Response:
    """Indented JSON with a final newline: what curl users and the docs have seen."""
    headers = {"WWW-Authenticate": 'Bearer realm="pacs-edge"'} if status == 401 else None
    payload = json.dumps(body, indent=1).encode() + b"\n"
    return Response(payload, status, headers, media_type="application/json")


def refused(refusal: Refusal) -> Response:
    return json_response(refusal.status, {"error": refusal.reason})


def asgi_routes(routes: Sequence[Route], gate: Gate) -> list[AsgiRoute]:
    return [_adapt(route, gate) for route in routes]


def _adapt(route: Route, gate: Gate) -> AsgiRoute:
    async def endpoint(request: Request) -> Response:
        caller = gate.check(request, route.role)
        if isinstance(caller, Refusal):
            return refused(caller)
        extra: dict[str, Any] = {"caller": caller} if route.role == "admin" else {}
        query = dict(request.query_params)
        answer = route.handler(**request.path_params, **extra, query=query)
        status, body = await answer if inspect.isawaitable(answer) else answer
        if isinstance(body, Raw):
            return Response(body.body, status, media_type=body.content_type)
        return json_response(status, body)

    methods = ["GET", "HEAD"] if route.method == "GET" else [route.method]
    return AsgiRoute(route.pattern, endpoint, methods=methods)
