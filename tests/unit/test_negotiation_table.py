"""The negotiation state table (DSP 2025-1 §7.1), both directions, every cell."""

from __future__ import annotations

import pytest

from connector.errors import LocalProtocolError, RemoteProtocolError
from connector.protocol.negotiation import INITIAL, SENDER, TERMINAL, TRANSITIONS, Kind, Role, State, receive, send

C, P = Role.CONSUMER, Role.PROVIDER

# (state, message, sender) -> next state: the spec's transitions, written out by hand.
ALLOWED = {
    (State.REQUESTED, Kind.OFFER, P): State.OFFERED,
    (State.REQUESTED, Kind.AGREEMENT, P): State.AGREED,
    (State.REQUESTED, Kind.TERMINATION, P): State.TERMINATED,
    (State.REQUESTED, Kind.TERMINATION, C): State.TERMINATED,
    (State.OFFERED, Kind.REQUEST, C): State.REQUESTED,
    (State.OFFERED, Kind.ACCEPTED, C): State.ACCEPTED,
    (State.OFFERED, Kind.TERMINATION, P): State.TERMINATED,
    (State.OFFERED, Kind.TERMINATION, C): State.TERMINATED,
    (State.ACCEPTED, Kind.AGREEMENT, P): State.AGREED,
    (State.ACCEPTED, Kind.TERMINATION, P): State.TERMINATED,
    (State.ACCEPTED, Kind.TERMINATION, C): State.TERMINATED,
    (State.AGREED, Kind.VERIFICATION, C): State.VERIFIED,
    (State.AGREED, Kind.TERMINATION, P): State.TERMINATED,
    (State.AGREED, Kind.TERMINATION, C): State.TERMINATED,
    (State.VERIFIED, Kind.FINALIZED, P): State.FINALIZED,
    (State.VERIFIED, Kind.TERMINATION, P): State.TERMINATED,
    (State.VERIFIED, Kind.TERMINATION, C): State.TERMINATED,
}
CELLS = [(s, k, r) for s in State for k in Kind for r in Role]


@pytest.mark.parametrize(("state", "kind", "sender"), CELLS, ids=lambda v: getattr(v, "name", str(v)))
def test_every_cell(state, kind, sender):
    expected = ALLOWED.get((state, kind, sender))
    if expected is None:
        with pytest.raises(RemoteProtocolError):
            receive(state, kind, sender)
        with pytest.raises(LocalProtocolError):
            send(state, kind, sender)
    else:
        assert receive(state, kind, sender) is expected
        assert send(state, kind, sender) is expected


def test_opening_messages():
    assert receive(None, Kind.REQUEST, C) is State.REQUESTED
    assert receive(None, Kind.OFFER, P) is State.OFFERED
    for kind in Kind:
        if kind not in INITIAL:
            with pytest.raises(RemoteProtocolError):
                receive(None, kind, SENDER[kind] or C)
    with pytest.raises(RemoteProtocolError):
        receive(None, Kind.REQUEST, P)


def test_terminal_states_allow_nothing():
    assert {State.FINALIZED, State.TERMINATED} == TERMINAL
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_full_path_back_to_back():
    """Both parties' copies move in step through the six-message path."""
    provider = consumer = None
    path = [(Kind.REQUEST, C), (Kind.OFFER, P), (Kind.ACCEPTED, C), (Kind.AGREEMENT, P),
            (Kind.VERIFICATION, C), (Kind.FINALIZED, P)]
    for kind, sender in path:
        if sender is C:
            consumer = send(consumer, kind, C)
            provider = receive(provider, kind, C)
        else:
            provider = send(provider, kind, P)
            consumer = receive(consumer, kind, P)
        assert provider is consumer
    assert provider is State.FINALIZED
