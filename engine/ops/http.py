"""The ops API's routes as plain data: a method, a path, a handler and the role it
needs (policies.http_access). engine.web.ops serves them on the HTTP port's ASGI app;
keeping them free of the web framework keeps queue_api, recall and status testable
as functions, and their JSON documents the same whatever serves them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from policies.http_access import Role

Answer = tuple[int, Any]
Handler = Callable[..., Answer | Awaitable[Answer]]


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
