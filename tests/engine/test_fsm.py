"""The acceptor state machine follows PS3.8 Table 9-10."""

from __future__ import annotations

import pytest

from engine.dicom.association import Association
from engine.dicom.fsm import TABLE, Action, Event, InvalidTransition, State, next_step


@pytest.mark.parametrize(
    ("state", "event", "action", "after"),
    [
        (State.Sta1, Event.Evt5, Action.AE5, State.Sta2),
        (State.Sta2, Event.Evt6, Action.AE6, State.Sta3),
        (State.Sta2, Event.Evt10, Action.AA1, State.Sta13),  # P-DATA before association
        (State.Sta2, Event.Evt18, Action.AA2, State.Sta1),  # ARTIM: nobody spoke
        (State.Sta3, Event.Evt7, Action.AE7, State.Sta6),
        (State.Sta3, Event.Evt8, Action.AE8, State.Sta13),
        (State.Sta6, Event.Evt10, Action.DT2, State.Sta6),
        (State.Sta6, Event.Evt12, Action.AR2, State.Sta8),
        (State.Sta6, Event.Evt16, Action.AA3, State.Sta1),
        (State.Sta6, Event.Evt19, Action.AA8, State.Sta13),
        (State.Sta8, Event.Evt9, Action.AR7, State.Sta8),  # answer stores still in flight
        (State.Sta8, Event.Evt14, Action.AR4, State.Sta13),
        (State.Sta13, Event.Evt17, Action.AR5, State.Sta1),
        (State.Sta13, Event.Evt10, Action.AA6, State.Sta13),  # ignored
    ],
)
def test_transitions(state: State, event: Event, action: Action, after: State) -> None:
    assert next_step(state, event) == (action, after)


@pytest.mark.parametrize("state", [State.Sta3, State.Sta6, State.Sta8])
@pytest.mark.parametrize("event", [Event.Evt3, Event.Evt4, Event.Evt6, Event.Evt13])
def test_unexpected_pdus_abort(state: State, event: Event) -> None:
    assert next_step(state, event) == (Action.AA8, State.Sta13)


def test_invalid_local_event_is_a_bug() -> None:
    with pytest.raises(InvalidTransition, match="Evt14"):
        next_step(State.Sta2, Event.Evt14)


def test_every_action_is_implemented() -> None:
    actions = {action for action, _ in TABLE.values()} | {Action.AA8}
    for action in actions:
        assert callable(getattr(Association, f"_{action.name.lower()}", None)), action
