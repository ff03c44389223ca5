"""The agreement lifecycle table, both directions, every cell."""

from __future__ import annotations

import pytest

from connector.errors import LocalProtocolError
from connector.protocol.agreement_lifecycle import (
    EVER_IN_FORCE,
    IN_FORCE,
    INITIAL,
    NEVER_IN_FORCE,
    TERMINAL,
    TRANSITIONS,
    AgreementEvent,
    AgreementState,
    AgreementStateError,
    next_state,
)

S, E = AgreementState, AgreementEvent

# (state, event) -> next state: the lifecycle, written out by hand. None: no copy of the agreement yet.
ALLOWED = {
    (None, E.SIGNED): S.AGREED,
    (S.AGREED, E.VERIFIED): S.VERIFIED,
    (S.AGREED, E.REVOCATION_RECEIVED): S.REVOKED,
    (S.VERIFIED, E.FINALIZED): S.FINALIZED,
    (S.VERIFIED, E.REVOCATION_RECEIVED): S.REVOKED,
    (S.FINALIZED, E.REVOKED): S.REVOKED,
    (S.FINALIZED, E.REVOCATION_RECEIVED): S.REVOKED,
    (S.REVOKED, E.VERIFIED): S.REVOKED,
    (S.REVOKED, E.FINALIZED): S.REVOKED,
    (S.REVOKED, E.REVOKED): S.REVOKED,
    (S.REVOKED, E.REVOCATION_RECEIVED): S.REVOKED,
}
CELLS = [(s, e) for s in [None, *AgreementState] for e in AgreementEvent]


@pytest.mark.parametrize(("state", "event"), CELLS, ids=lambda v: getattr(v, "name", str(v)))
def test_every_cell(state, event):
    expected = ALLOWED.get((state, event))
    if expected is None:
        with pytest.raises(AgreementStateError):
            next_state(state, event)
    else:
        assert next_state(state, event) is expected


def test_the_module_table_is_the_written_one():
    written = {(s, e): n for (s, e), n in ALLOWED.items() if s is not None}
    assert {(s, e): n for s, moves in TRANSITIONS.items() for e, n in moves.items()} == written
    assert {(None, e): n for e, n in INITIAL.items()} == {k: v for k, v in ALLOWED.items() if k[0] is None}
    assert set(TRANSITIONS) == set(AgreementState)


def test_a_stored_state_moves_as_its_member():
    for (state, event), expected in ALLOWED.items():
        if state is not None:
            assert next_state(str(state.value), event) is expected


def test_an_unknown_stored_state_is_refused():
    with pytest.raises(AgreementStateError, match="'DELETED' is not an agreement state"):
        next_state("DELETED", E.REVOKED)


def test_a_refused_move_is_our_own_misuse_and_names_the_state():
    with pytest.raises(LocalProtocolError, match="revocation by the provider is not allowed in agreement state AGREED"):
        next_state(S.AGREED, E.REVOKED)


def test_revoked_is_final():
    assert {S.REVOKED} == TERMINAL
    for state in TERMINAL:
        assert set(TRANSITIONS[state].values()) == {state}


def test_only_a_finalized_agreement_is_in_force():
    assert {S.FINALIZED} == IN_FORCE
    assert {S.FINALIZED, S.REVOKED} == EVER_IN_FORCE
    assert {S.AGREED, S.VERIFIED} == NEVER_IN_FORCE


@pytest.mark.parametrize("state", list(AgreementState), ids=lambda s: s.name)
def test_stored_strings_are_the_wire_values_and_compare_as_their_members(state):
    # The store keeps the plain string; the services compare it against members and the sets above.
    stored = str(state.value)
    assert state.name == stored and stored == state
    assert (stored in IN_FORCE) is (state in IN_FORCE)
    assert (stored in EVER_IN_FORCE) is (state in EVER_IN_FORCE)


def test_the_path_to_revocation_on_both_sides():
    """The provider's copy and the consumer's move in step, from the signature to the revocation."""
    provider = consumer = next_state(None, E.SIGNED)
    for event in (E.VERIFIED, E.FINALIZED):
        provider, consumer = next_state(provider, event), next_state(consumer, event)
    assert provider is consumer is S.FINALIZED
    provider = next_state(provider, E.REVOKED)
    consumer = next_state(consumer, E.REVOCATION_RECEIVED)
    assert provider is consumer is S.REVOKED
