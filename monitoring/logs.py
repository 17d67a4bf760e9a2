"""Log set-up: one readable line per event, to stderr (journald or a file takes it)."""

from __future__ import annotations

import logging
import sys


def configure(level: str, process: str = "") -> None:
    """`process` names a worker ("ingest-2", "background") in each of its lines."""
    tag = f"[{process}] " if process else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)-7s {tag}%(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs every PDU at INFO (and dumps each PDU at DEBUG), and an
    # unreachable peer as two ERROR lines at every attempt (a worklist poll, an MPPS
    # relay, a recall). Each of those callers logs its own outcome once, with what to
    # do: pynetdicom's warnings and errors show only when we log at DEBUG.
    logging.getLogger("pynetdicom").setLevel(
        logging.WARNING if level == "DEBUG" else logging.CRITICAL
    )
