"""Fixtures the engine's tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.peers import free_port
from tests.engine.test_mpps import RisMpps


@pytest.fixture
def ris_mpps() -> Iterator[RisMpps]:
    """A RIS's MPPS SCP on a free port, down until the test starts it."""
    server = RisMpps(free_port())
    try:
        yield server
    finally:
        server.stop()
