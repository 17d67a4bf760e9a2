"""The HL7 listener of a node: MLLP connections in, each message applied
(engine.hl7.adt), audited, and acknowledged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine.hl7 import adt
from engine.hl7.mllp import MllpConnection
from engine.services import Shared

log = logging.getLogger(__name__)


async def listen(
    shared: Shared, track: Callable[[asyncio.Task[None]], None]
) -> Callable[[], Awaitable[None]]:
    """Start listening on [hl7] host:port (OSError when it cannot); returns the closer."""

    async def handle(text: str, peer: str) -> str:
        outcome = await asyncio.to_thread(adt.apply, shared.index, text)
        config = shared.config
        shared.audit.write(
            "hl7_message",
            trigger=outcome.event,
            control_id=outcome.control_id,
            ack=outcome.ack,
            reason=outcome.reason,
            changed=outcome.changed,
            client=peer,
            **({"patient_id": outcome.patient_id} if config.audit.patient_identifiers else {}),
        )
        level = logging.INFO if outcome.ack == "AA" else logging.WARNING
        log.log(
            level,
            "HL7 %s %s from %s: %s %s",
            outcome.event,
            outcome.control_id,
            peer,
            outcome.ack,
            outcome.reason,
        )
        return adt.ack(outcome, text, config.node.ae_title, config.node.site or "PACS_EDGE")

    hl7 = shared.config.hl7
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MllpConnection(handle, track), hl7.host, hl7.port, reuse_address=True
    )

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return close
