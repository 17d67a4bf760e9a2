"""A pynetdicom storage SCU in a process of its own, for tests that run many at once.

pynetdicom 3.0's reactor can take a C-STORE-RSP that arrives within a millisecond for
an unsolicited request and drop it, so the sender times out: the reactor sets
`_is_paused = True` before its `_reactor_checkpoint.wait()` returns at once and
resets it (association.py:723-725), and `send_c_store` may see that stale True, send,
and leave the reactor running (1958-1961). Sixteen associations as threads of one
process (48 threads on one GIL) hit that window now and then; one association per
process rarely gives the reactor a switch there. The engine answered every object
when it happened (its log had one C-STORE-RSP per object).
"""

from __future__ import annotations

from pynetdicom import AE


def store_series(
    port: int, called_ae: str, sop_class_uid: str, transfer_syntax_uid: str, paths: list[str]
) -> list[str]:
    """Store `paths` over one association; what failed, as text (empty: all Success)."""
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(sop_class_uid, [transfer_syntax_uid])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return ["association refused"]
    failures = []
    for path in paths:
        status = assoc.send_c_store(path).get("Status", -1)
        if status != 0:
            failures.append(f"{path}: {status}")
    assoc.release()
    return failures
