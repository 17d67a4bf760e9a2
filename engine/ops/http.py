"""The ops HTTP port: a deliberately tiny HTTP/1.1 server for health and status.

Load balancers and Prometheus make a handful of small GET requests a minute, and
admins the odd POST (retry a queue, requeue dead letters); this needs no framework.
Each request is read with a size limit and a timeout, checked against the route's
role (policies.http_access), answered with JSON, and the connection closed. Request
bodies are not read: every parameter is in the path or the query string.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote

from monitoring.audit import AuditLog
from policies.http_access import Refusal, Role, TokenConfig, authorize

log = logging.getLogger(__name__)

Answer = tuple[int, Any]
Handler = Callable[..., Answer | Awaitable[Answer]]
_REASONS = {
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}
_MAX_REQUEST = 8192


@dataclass(frozen=True)
class Raw:
    """A body that is not JSON (Prometheus' text format)."""

    content_type: str
    body: bytes


@dataclass(frozen=True)
class Route:
    """`GET /api/v1/queues/{name}`: path parameters go to the handler as keywords,
    and so does the query string, as `query`. Handlers of "admin" routes also get
    the `caller`, for their audit lines. Routes change nothing unless they are POST,
    and every POST route needs "admin"."""

    method: str
    pattern: str
    handler: Handler
    role: Role = "read"

    def __post_init__(self) -> None:
        if self.method == "POST" and self.role != "admin":
            raise ValueError(f"POST {self.pattern} changes state: it needs role 'admin'")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method and not (method == "HEAD" and self.method == "GET"):
            return None
        found = _compile(self.pattern).fullmatch(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


def _headers(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            found[name.strip().lower()] = value.strip()
    return found


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)))


class OpsHttp:
    def __init__(
        self,
        routes: list[Route],
        tokens: Callable[[], Sequence[TokenConfig]],
        audit: AuditLog,
    ) -> None:
        self._routes = routes
        self._tokens = tokens  # read per request: a reload may change them
        self._audit = audit
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        try:
            status, body = await asyncio.wait_for(self._answer(reader, address), timeout=10)
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            status, body = 400, {"error": "bad or incomplete request"}
        if isinstance(body, Raw):
            payload, content_type = body.body, body.content_type
        else:
            payload, content_type = json.dumps(body, indent=1).encode() + b"\n", "application/json"
        challenge = 'WWW-Authenticate: Bearer realm="pacs-edge"\r\n' if status == 401 else ""
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            f"Content-Type: {content_type}\r\n{challenge}"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + payload)
            await writer.drain()
        except ConnectionError:
            log.debug("ops HTTP client went away before the answer")
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, address: str) -> tuple[int, Any]:
        request = await reader.readuntil(b"\r\n\r\n")
        if len(request) > _MAX_REQUEST:
            return 400, {"error": "request too large"}
        line, *header_lines = request.decode("latin-1").split("\r\n")
        method, _, rest = line.partition(" ")
        target = rest.split(" ", 1)[0]
        path, _, query_string = target.partition("?")
        query = {k: v[-1] for k, v in parse_qs(query_string).items()}
        headers = _headers(header_lines)
        allowed = []
        for route in self._routes:
            params = route.match(method, path)
            if params is None:
                if route.match(route.method, path) is not None:
                    allowed.append(route.method)
                continue
            caller = authorize(route.role, headers.get("authorization"), address, self._tokens())
            if isinstance(caller, Refusal):
                self._audit.write(
                    "http_refused", method=method, path=path, client=address, why=caller.reason
                )
                return caller.status, {"error": caller.reason}
            extra: dict[str, Any] = {"caller": caller} if route.role == "admin" else {}
            answer = route.handler(**params, **extra, query=query)
            return await answer if inspect.isawaitable(answer) else answer
        if allowed:
            return 405, {"error": f"{method} not allowed on {path}; use {' or '.join(allowed)}"}
        known = sorted(f"{r.method} {r.pattern}" for r in self._routes)
        return 404, {"error": f"no such path {path}", "paths": known}
