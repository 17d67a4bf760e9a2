"""Wakes the associations whose socket a core_rs pump thread has been reading.

Once established, a plain-TCP association hands its receiver to a thread of its own
(`core_rs.Receiver.pump`) and stops reading on the event loop, so associations hash
and spool on every core and the loop wakes once per object instead of once per read.
The threads announce the end of each run through one eventfd per process, which this
object watches (docs/decisions/0033). After a C-STORE a thread reads on without being
handed its receiver again (docs/decisions/0043), so an association's callback stays
registered until it says its receiver is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import core_rs

# A pump that has read nothing for this long (or the idle timeout, if shorter) hands
# the socket back to the loop, whose idle timer then decides about the silence.
QUIET_AFTER = 2.0


class Pumps:
    def __init__(self) -> None:
        self._completions: core_rs.Completions | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, Callable[[], bool]] = {}

    def start(
        self,
        receiver: core_rs.Receiver,
        token: int,
        fd: int,
        buffer_len: int,
        quiet_after: float,
        max_open: int,
        back: Callable[[], bool],
    ) -> None:
        """Hand `receiver` to its pump thread reading `fd`; `back` runs on the loop
        whenever the thread hands something over (then `receiver.collect()`), and
        returns whether the thread is still reading."""
        if self._completions is None:
            self._completions = core_rs.Completions()
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._completions.fileno(), self._wake)
        self._waiting[token] = back
        try:
            receiver.pump(fd, self._completions, token, buffer_len, quiet_after, max_open)
        except BaseException:
            del self._waiting[token]
            raise

    def _wake(self) -> None:
        assert self._completions is not None
        for token in self._completions.take():
            back = self._waiting.get(token)
            if back is not None and not back():
                del self._waiting[token]

    def close(self) -> None:
        """The loop is ending: stop watching (every association has ended first)."""
        if self._completions is not None and self._loop is not None:
            self._loop.remove_reader(self._completions.fileno())
        self._completions = None
