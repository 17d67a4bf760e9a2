"""The DICOM upper-layer state machine for the acceptor (PS3.8 9.2, Table 9-10).

States, events and actions keep the standard's names (Sta2, Evt6, AE-6 ...) so the
table below can be read against PS3.8 side by side. Only the acceptor's part is
here: pacs-edge never requests associations on this port. `next_step` is pure; the
association object runs the named action.
"""

from __future__ import annotations

import enum


class _Named(enum.Enum):
    """Members hash by identity, in C: Enum's own __hash__ is Python code (hash of the
    name), and every event looks up its step and action by member, three per object."""

    __hash__ = object.__hash__


class State(_Named):
    Sta1 = "Idle"
    Sta2 = "Transport connection open (awaiting A-ASSOCIATE-RQ PDU)"
    Sta3 = "Awaiting local A-ASSOCIATE response primitive"
    Sta6 = "Association established and ready for data transfer"
    Sta8 = "Awaiting local A-RELEASE response primitive"
    Sta13 = "Awaiting transport connection close indication"


class Event(_Named):
    Evt3 = "A-ASSOCIATE-AC PDU received"
    Evt4 = "A-ASSOCIATE-RJ PDU received"
    Evt5 = "Transport connection indication"
    Evt6 = "A-ASSOCIATE-RQ PDU received"
    Evt7 = "A-ASSOCIATE response primitive (accept)"
    Evt8 = "A-ASSOCIATE response primitive (reject)"
    Evt9 = "P-DATA request primitive"
    Evt10 = "P-DATA-TF PDU received"
    Evt12 = "A-RELEASE-RQ PDU received"
    Evt13 = "A-RELEASE-RP PDU received"
    Evt14 = "A-RELEASE response primitive"
    Evt15 = "A-ABORT request primitive"
    Evt16 = "A-ABORT PDU received"
    Evt17 = "Transport connection closed indication"
    Evt18 = "ARTIM timer expired"
    Evt19 = "Unrecognized or invalid PDU received"


class Action(_Named):
    AE5 = "AE-5: issue transport connection response, start ARTIM"
    AE6 = "AE-6: stop ARTIM, issue A-ASSOCIATE indication"
    AE7 = "AE-7: send A-ASSOCIATE-AC PDU"
    AE8 = "AE-8: send A-ASSOCIATE-RJ PDU, start ARTIM"
    DT1 = "DT-1: send P-DATA-TF PDU"
    DT2 = "DT-2: send P-DATA indication"
    AR2 = "AR-2: issue A-RELEASE indication"
    AR4 = "AR-4: send A-RELEASE-RP PDU, start ARTIM"
    AR5 = "AR-5: stop ARTIM"
    AR7 = "AR-7: send P-DATA-TF PDU"
    AA1 = "AA-1: send A-ABORT PDU (service-user), start ARTIM"
    AA2 = "AA-2: stop ARTIM, close transport"
    AA3 = "AA-3: issue A-ABORT indication, close transport"
    AA4 = "AA-4: issue A-P-ABORT indication"
    AA5 = "AA-5: stop ARTIM"
    AA6 = "AA-6: ignore PDU"
    AA7 = "AA-7: send A-ABORT PDU"
    AA8 = "AA-8: send A-ABORT PDU (service-provider), issue A-P-ABORT, start ARTIM"


S, E, A = State, Event, Action

# (state, event) -> (action, next state), from PS3.8 Table 9-10.
TABLE: dict[tuple[State, Event], tuple[Action, State]] = {
    (S.Sta1, E.Evt5): (A.AE5, S.Sta2),
    # Sta2: only an A-ASSOCIATE-RQ is acceptable.
    (S.Sta2, E.Evt3): (A.AA1, S.Sta13),
    (S.Sta2, E.Evt4): (A.AA1, S.Sta13),
    (S.Sta2, E.Evt6): (A.AE6, S.Sta3),
    (S.Sta2, E.Evt10): (A.AA1, S.Sta13),
    (S.Sta2, E.Evt12): (A.AA1, S.Sta13),
    (S.Sta2, E.Evt13): (A.AA1, S.Sta13),
    (S.Sta2, E.Evt16): (A.AA2, S.Sta1),
    (S.Sta2, E.Evt17): (A.AA5, S.Sta1),
    (S.Sta2, E.Evt18): (A.AA2, S.Sta1),
    (S.Sta2, E.Evt19): (A.AA1, S.Sta13),
    # Sta3: we are deciding; the peer must wait.
    (S.Sta3, E.Evt7): (A.AE7, S.Sta6),
    (S.Sta3, E.Evt8): (A.AE8, S.Sta13),
    (S.Sta3, E.Evt15): (A.AA1, S.Sta13),
    (S.Sta3, E.Evt16): (A.AA3, S.Sta1),
    (S.Sta3, E.Evt17): (A.AA4, S.Sta1),
    # Sta6: data transfer.
    (S.Sta6, E.Evt9): (A.DT1, S.Sta6),
    (S.Sta6, E.Evt10): (A.DT2, S.Sta6),
    (S.Sta6, E.Evt12): (A.AR2, S.Sta8),
    (S.Sta6, E.Evt15): (A.AA1, S.Sta13),
    (S.Sta6, E.Evt16): (A.AA3, S.Sta1),
    (S.Sta6, E.Evt17): (A.AA4, S.Sta1),
    # Sta8: the peer asked to release; responses to stores in flight may still go out.
    (S.Sta8, E.Evt9): (A.AR7, S.Sta8),
    (S.Sta8, E.Evt14): (A.AR4, S.Sta13),
    (S.Sta8, E.Evt15): (A.AA1, S.Sta13),
    (S.Sta8, E.Evt16): (A.AA3, S.Sta1),
    (S.Sta8, E.Evt17): (A.AA4, S.Sta1),
    # Sta13: we are done; wait for the peer to close, ignore what it still sends.
    (S.Sta13, E.Evt3): (A.AA6, S.Sta13),
    (S.Sta13, E.Evt4): (A.AA6, S.Sta13),
    (S.Sta13, E.Evt6): (A.AA7, S.Sta13),
    (S.Sta13, E.Evt10): (A.AA6, S.Sta13),
    (S.Sta13, E.Evt12): (A.AA6, S.Sta13),
    (S.Sta13, E.Evt13): (A.AA6, S.Sta13),
    (S.Sta13, E.Evt16): (A.AA2, S.Sta1),
    (S.Sta13, E.Evt17): (A.AR5, S.Sta1),
    (S.Sta13, E.Evt18): (A.AA2, S.Sta1),
    (S.Sta13, E.Evt19): (A.AA7, S.Sta13),
}

# Any other PDU in Sta3, Sta6 or Sta8 is unexpected: AA-8 (PS3.8 Table 9-10).
_PDU_EVENTS = {E.Evt3, E.Evt4, E.Evt6, E.Evt10, E.Evt12, E.Evt13, E.Evt19}


class InvalidTransition(RuntimeError):
    """A local event the current state does not allow: a bug in pacs-edge itself."""


def next_step(state: State, event: Event) -> tuple[Action, State]:
    step = TABLE.get((state, event))
    if step is not None:
        return step
    if state in (S.Sta3, S.Sta6, S.Sta8) and event in _PDU_EVENTS:
        return A.AA8, S.Sta13
    raise InvalidTransition(f"{event.name} ({event.value}) is not valid in {state.name}")
