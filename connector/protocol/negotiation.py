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

from connector.protocol.table import StateTable


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


#: The table, checked both ways: :func:`receive` for a peer's message, :func:`send` for ours.
TABLE: StateTable[State, Kind, Role] = StateTable("negotiation", SENDER, INITIAL, TRANSITIONS)
receive = TABLE.receive
send = TABLE.send
