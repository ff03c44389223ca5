"""The settlement statement state table (connector.protocol.statements), both roles, every cell."""

from __future__ import annotations

import pytest

from connector.errors import LocalProtocolError
from connector.protocol.statements import (
    TERMINAL,
    TRANSITIONS,
    StatementEvent,
    StatementState,
    StatementStateError,
    next_state,
)

S, E = StatementState, StatementEvent

# (state, event) -> next state, written out by hand. Provider: ISSUED → DELIVERED → ACCEPTED | DISPUTED, where the
# consumer's answer may overtake the delivery's acknowledgement; consumer: RECEIVED → ACCEPTED | DISPUTED.
MOVES = {
    (S.ISSUED, E.DELIVERED): S.DELIVERED,
    (S.ISSUED, E.ACCEPTED): S.ACCEPTED,
    (S.ISSUED, E.DISPUTED): S.DISPUTED,
    (S.DELIVERED, E.ACCEPTED): S.ACCEPTED,
    (S.DELIVERED, E.DISPUTED): S.DISPUTED,
    (S.RECEIVED, E.ACCEPTED): S.ACCEPTED,
    (S.RECEIVED, E.DISPUTED): S.DISPUTED,
}
# Events that change nothing: the same answer again, and a late or repeated delivery acknowledgement.
UNCHANGED = {
    (S.ACCEPTED, E.ACCEPTED),
    (S.DISPUTED, E.DISPUTED),
    (S.ACCEPTED, E.DELIVERED),
    (S.DISPUTED, E.DELIVERED),
    (S.DELIVERED, E.DELIVERED),
}
CELLS = [(s, e) for s in S for e in E]


@pytest.mark.parametrize(("state", "event"), CELLS, ids=lambda v: v.name)
def test_every_cell(state, event):
    if (state, event) in MOVES:
        assert next_state(state, event) is MOVES[state, event]
    elif (state, event) in UNCHANGED:
        assert next_state(state, event) is state
    else:
        with pytest.raises(StatementStateError):
            next_state(state, event)


def test_the_modules_table_is_the_moves_written_out():
    assert {(s, e): n for s, row in TRANSITIONS.items() for e, n in row.items()} == MOVES


def test_the_table_has_a_row_for_every_state():
    assert set(TRANSITIONS) == set(S)


def test_terminal_states_allow_no_move():
    assert {S.ACCEPTED, S.DISPUTED} == TERMINAL
    assert all(not TRANSITIONS[s] for s in TERMINAL)


@pytest.mark.parametrize(("state", "event"), [(S.ACCEPTED, E.DISPUTED), (S.DISPUTED, E.ACCEPTED),
                                              (S.RECEIVED, E.DELIVERED)])
def test_a_refused_move_names_the_state_and_the_event(state, event):
    with pytest.raises(StatementStateError, match=f"a statement that is {state.value} cannot be {event.value}"):
        next_state(state, event)


def test_a_refused_move_is_our_own_misuse_answered_with_a_conflict():
    assert issubclass(StatementStateError, LocalProtocolError) and StatementStateError.status == 409


def test_the_wire_string_of_a_state_is_read():
    assert next_state("received", E.ACCEPTED) is S.ACCEPTED


def test_both_copies_end_in_the_same_state_back_to_back():
    provider = next_state(S.ISSUED, E.DELIVERED)
    consumer = next_state(S.RECEIVED, E.DISPUTED)
    provider = next_state(provider, E.DISPUTED)
    assert provider is consumer is S.DISPUTED


def test_an_answer_that_overtakes_the_delivery_acknowledgement_stands():
    provider = next_state(S.ISSUED, E.ACCEPTED)
    assert next_state(provider, E.DELIVERED) is S.ACCEPTED
