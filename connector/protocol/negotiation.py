"""The contract negotiation state machine (DSP 2025-1 §7.1), role-neutral, in one table.

Theory of operation
-------------------
A negotiation has two parties, a provider and a consumer, that each keep their own copy of the state.
A message moves both copies: the sender commits the new state before sending (persist before send), the
receiver checks the move against the same table and commits it before answering. Which party may send
which message is fixed by the protocol (:data:`SENDER`), and which message is allowed in which state by
:data:`TRANSITIONS`. Two messages open a negotiation (:data:`INITIAL`): the consumer's first request and
the provider's first offer.

The table is used both ways. :func:`receive` checks a peer's message: a violation is the *peer's* fault
(:class:`RemoteProtocolError`, answered 400 with the state unchanged). :func:`send` checks a message we
are about to send: a violation is *our* fault (:class:`LocalProtocolError`). Pure: no I/O, no clock.

:class:`State` and :class:`Role` are ``StrEnum``s whose values are the wire strings (DSP's states, and the
roles as the store and the management API write them): a stored record holds the members, and JSON shows
the values unchanged.
"""

from __future__ import annotations

import enum

from connector.protocol.errors import InvalidTransition, LocalProtocolError


class State(enum.StrEnum):
    REQUESTED = "REQUESTED"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    AGREED = "AGREED"
    VERIFIED = "VERIFIED"
    FINALIZED = "FINALIZED"
    TERMINATED = "TERMINATED"


TERMINAL = frozenset({State.FINALIZED, State.TERMINATED})


class Role(enum.StrEnum):
    PROVIDER = "provider"
    CONSUMER = "consumer"

    @property
    def other(self) -> Role:
        return Role.CONSUMER if self is Role.PROVIDER else Role.PROVIDER


class Kind(enum.Enum):
    """Message kinds, named by what they do (the wire type is in ``connector.protocol.messages``)."""

    REQUEST = "ContractRequestMessage"
    OFFER = "ContractOfferMessage"
    ACCEPTED = "ContractNegotiationEventMessage:ACCEPTED"
    AGREEMENT = "ContractAgreementMessage"
    VERIFICATION = "ContractAgreementVerificationMessage"
    FINALIZED = "ContractNegotiationEventMessage:FINALIZED"
    TERMINATION = "ContractNegotiationTerminationMessage"


#: Who may send each message (None: either party).
SENDER: dict[Kind, Role | None] = {
    Kind.REQUEST: Role.CONSUMER,
    Kind.OFFER: Role.PROVIDER,
    Kind.ACCEPTED: Role.CONSUMER,
    Kind.AGREEMENT: Role.PROVIDER,
    Kind.VERIFICATION: Role.CONSUMER,
    Kind.FINALIZED: Role.PROVIDER,
    Kind.TERMINATION: None,
}

#: Messages that open a negotiation, and the state they open it in.
INITIAL: dict[Kind, State] = {Kind.REQUEST: State.REQUESTED, Kind.OFFER: State.OFFERED}

#: state -> {message -> next state}. Terminal states allow nothing.
TRANSITIONS: dict[State, dict[Kind, State]] = {
    State.REQUESTED: {Kind.OFFER: State.OFFERED, Kind.AGREEMENT: State.AGREED, Kind.TERMINATION: State.TERMINATED},
    State.OFFERED: {Kind.REQUEST: State.REQUESTED, Kind.ACCEPTED: State.ACCEPTED, Kind.TERMINATION: State.TERMINATED},
    State.ACCEPTED: {Kind.AGREEMENT: State.AGREED, Kind.TERMINATION: State.TERMINATED},
    State.AGREED: {Kind.VERIFICATION: State.VERIFIED, Kind.TERMINATION: State.TERMINATED},
    State.VERIFIED: {Kind.FINALIZED: State.FINALIZED, Kind.TERMINATION: State.TERMINATED},
    State.FINALIZED: {},
    State.TERMINATED: {},
}


def _next(state: State, kind: Kind, sender: Role) -> State | str:
    allowed_sender = SENDER[kind]
    if allowed_sender is not None and allowed_sender is not sender:
        return f"a {sender.value} cannot send {kind.value}"
    nxt = TRANSITIONS[state].get(kind)
    if nxt is None:
        return f"{kind.value} is not allowed in state {state.value}"
    return nxt


def receive(state: State | None, kind: Kind, sender: Role) -> State:
    """The state after receiving *kind* from *sender*; ``state`` None means a new negotiation."""
    if state is None:
        if kind not in INITIAL or SENDER[kind] is not sender:
            raise InvalidTransition(f"{kind.value} cannot open a negotiation")
        return INITIAL[kind]
    nxt = _next(state, kind, sender)
    if not isinstance(nxt, State):
        raise InvalidTransition(nxt)
    return nxt


def send(state: State | None, kind: Kind, sender: Role) -> State:
    """The state after *sender* (this node) sends *kind*; raise :class:`LocalProtocolError` if not allowed."""
    if state is None:
        if kind not in INITIAL or SENDER[kind] is not sender:
            raise LocalProtocolError(f"{kind.value} cannot open a negotiation")
        return INITIAL[kind]
    nxt = _next(state, kind, sender)
    if not isinstance(nxt, State):
        raise LocalProtocolError(nxt)
    return nxt
