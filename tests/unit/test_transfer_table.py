"""The transfer process state table (DSP 2025-1 §8.1), both directions, every cell."""

from __future__ import annotations

import pytest

from connector.errors import LocalProtocolError, RemoteProtocolError
from connector.protocol.transfer import Kind, Role, State, receive, send

C, P = Role.CONSUMER, Role.PROVIDER

# (state, message, sender) -> next state: the spec's transitions, written out by hand.
ALLOWED = {
    (State.REQUESTED, Kind.START, P): State.STARTED,
    (State.REQUESTED, Kind.TERMINATION, P): State.TERMINATED,
    (State.REQUESTED, Kind.TERMINATION, C): State.TERMINATED,
    (State.STARTED, Kind.SUSPENSION, P): State.SUSPENDED,
    (State.STARTED, Kind.SUSPENSION, C): State.SUSPENDED,
    (State.STARTED, Kind.COMPLETION, P): State.COMPLETED,
    (State.STARTED, Kind.COMPLETION, C): State.COMPLETED,
    (State.STARTED, Kind.TERMINATION, P): State.TERMINATED,
    (State.STARTED, Kind.TERMINATION, C): State.TERMINATED,
    (State.SUSPENDED, Kind.START, P): State.STARTED,
    (State.SUSPENDED, Kind.START, C): State.STARTED,
    (State.SUSPENDED, Kind.TERMINATION, P): State.TERMINATED,
    (State.SUSPENDED, Kind.TERMINATION, C): State.TERMINATED,
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


def test_only_the_consumer_opens_a_transfer():
    assert receive(None, Kind.REQUEST, C) is State.REQUESTED
    assert send(None, Kind.REQUEST, C) is State.REQUESTED
    for kind in Kind:
        with pytest.raises(RemoteProtocolError):
            receive(None, kind, P)
    with pytest.raises(LocalProtocolError):
        send(None, Kind.START, P)
