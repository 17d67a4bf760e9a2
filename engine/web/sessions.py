"""Console logins: a random session ID in a cookie, the user it stands for kept in
memory by the one process that serves HTTP.

Kept in memory on purpose: a restart logs people out (they log in again), and no
session secret has to be stored or rotated. The user's name is looked up in the
running config at each request, so removing a user or lowering their role by a
reload takes effect on their open sessions at once.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

COOKIE = "pacs_edge_session"
_MAX_SESSIONS = 10_000  # a login flood cannot grow the table without bound


@dataclass(frozen=True)
class Session:
    user: str
    expires: float


class Sessions:
    def __init__(self) -> None:
        self._open: dict[str, Session] = {}

    def open(self, user: str, hours: float) -> str:
        now = time.time()
        if len(self._open) >= _MAX_SESSIONS:
            self._open = {k: s for k, s in self._open.items() if s.expires > now}
            while len(self._open) >= _MAX_SESSIONS:  # the oldest go first
                self._open.pop(next(iter(self._open)))
        session_id = secrets.token_urlsafe(32)
        self._open[session_id] = Session(user, now + hours * 3600)
        return session_id

    def user(self, session_id: str) -> str | None:
        session = self._open.get(session_id)
        if session is None:
            return None
        if session.expires <= time.time():
            del self._open[session_id]
            return None
        return session.user

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)
