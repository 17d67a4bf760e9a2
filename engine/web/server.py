"""uvicorn inside the engine's own event loop: the HTTP port starts and stops as one
step of engine.server's start-up and shutdown, never as a process of its own.

uvicorn.Server.serve() would install its own SIGINT/SIGTERM handlers over the
engine's; its startup/main_loop/shutdown steps are public and run here instead, on a
socket bound by us so that a busy port is a readable StartupError, not sys.exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from starlette.types import ASGIApp

from policies.config import HttpConfig

log = logging.getLogger(__name__)


class HttpServer:
    def __init__(self, app: ASGIApp, http: HttpConfig) -> None:
        tls = http.tls
        self._config = uvicorn.Config(
            app,
            host=http.host,
            port=http.port,
            lifespan="off",
            log_config=None,  # the engine's logging, not uvicorn's
            access_log=False,  # requests that matter are audited (monitoring.audit)
            server_header=False,
            timeout_keep_alive=15,
            timeout_graceful_shutdown=5,
            limit_concurrency=512,  # beyond it 503, not an unbounded pile of tasks
            h11_max_incomplete_event_size=64 * 1024,
            ssl_certfile=tls.certificate if tls.enabled else None,
            ssl_keyfile=tls.private_key if tls.enabled else None,
        )
        self._server = uvicorn.Server(self._config)
        self._socket: socket.socket | None = None
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """OSError when the port cannot be bound."""
        config = self._config
        config.load()
        self._server.lifespan = config.lifespan_class(config)  # "off": a no-op
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.host, config.port))
            sock.listen(256)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._socket = sock
        await self._server.startup(sockets=[sock])
        self._loop_task = asyncio.get_running_loop().create_task(self._server.main_loop())

    async def close(self) -> None:
        """Stop accepting, let requests in flight finish (at most 5 s), then close."""
        if self._loop_task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        await self._server.shutdown(sockets=[self._socket] if self._socket else None)
