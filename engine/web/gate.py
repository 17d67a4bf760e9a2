"""Every HTTP request's access check: a bearer token, a console session cookie, or
loopback when no credential is configured (policies.http_access); refusals audited.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from engine.services import Shared
from engine.web.sessions import COOKIE, Sessions
from policies.http_access import Caller, Refusal, Role, authorize, outranks


class Gate:
    def __init__(self, shared: Shared, sessions: Sessions) -> None:
        self._shared = shared  # its config is read per request: a reload changes tokens
        self.sessions = sessions

    def check(self, request: HTTPConnection, needed: Role) -> Caller | Refusal:
        http = self._shared.config.http
        address = request.client.host if request.client else ""
        session_id = request.cookies.get(COOKIE)
        name = self.sessions.user(session_id) if session_id else None
        user = next((u for u in http.user if u.name == name), None) if name else None
        if user is not None:
            decision: Caller | Refusal = (
                Caller(user.name, user.role, address)
                if outranks(user.role, needed)
                else Refusal(
                    403, f"user {user.name!r} has role {user.role!r}; this needs {needed!r}"
                )
            )
        else:
            decision = authorize(
                needed,
                request.headers.get("authorization"),
                address,
                http.token,
                users=bool(http.user),
            )
        if isinstance(decision, Refusal):
            self._shared.audit.write(
                "http_refused",
                method=request.scope.get("method", ""),
                path=request.url.path,
                client=address,
                why=decision.reason,
            )
        return decision
