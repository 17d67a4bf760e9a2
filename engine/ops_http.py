"""The ops HTTP port: a deliberately tiny HTTP/1.1 server for health and status.

Load balancers and Prometheus make a handful of small GET requests a minute;
this needs no framework. Each request is read with a size limit and a timeout,
answered with JSON, and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Route = Callable[[], tuple[int, Any]]
PrefixRoute = Callable[[str], tuple[int, Any]]
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}
_MAX_REQUEST = 8192


class OpsHttp:
    def __init__(
        self, routes: dict[str, Route], prefix_routes: dict[str, PrefixRoute] | None = None
    ) -> None:
        self._routes = routes
        self._prefix_routes = prefix_routes or {}
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._answer(reader), timeout=10)
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            status, body = 400, {"error": "bad or incomplete request"}
        payload = json.dumps(body, indent=1).encode() + b"\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + payload)
            await writer.drain()
        except ConnectionError:
            log.debug("ops HTTP client went away before the answer")
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        request = await reader.readuntil(b"\r\n\r\n")
        if len(request) > _MAX_REQUEST:
            return 400, {"error": "request too large"}
        method, _, rest = request.decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"{method} not allowed on {path}"}
        route = self._routes.get(path)
        if route is not None:
            return route()
        for prefix, handler in self._prefix_routes.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                return handler(path[len(prefix) :])
        known = sorted([*self._routes, *(f"{p}<id>" for p in self._prefix_routes)])
        return 404, {"error": f"no such path {path}", "paths": known}
