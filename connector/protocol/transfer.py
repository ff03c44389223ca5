"""The transfer process state machine (DSP 2025-1 §8.1), role-neutral, in one table.

Theory of operation
-------------------
Like a negotiation, a transfer process has a provider and a consumer that each keep their own copy of
the state, and every message moves both copies: the sender commits the new state before sending, the
receiver checks the move against the same table and commits it before answering.

Only the consumer opens a transfer (``TransferRequestMessage`` → REQUESTED). The provider starts it
(``TransferStartMessage`` → STARTED). While STARTED either party may suspend it (→ SUSPENDED) or complete
it (→ COMPLETED); a suspended transfer is resumed with a new ``TransferStartMessage``, which either party
may send (DSP 2025-1 §8.1.2: "the consumer can send a start message to resume a suspended transfer";
only the provider starts a REQUESTED one, see :data:`START_FROM_REQUESTED`). Either party may terminate a
transfer that is not over (→ TERMINATED). COMPLETED and TERMINATED are final.

:func:`receive` checks a peer's message: a violation is the *peer's* fault (:class:`RemoteProtocolError`,
answered 400 with a ``TransferError`` and the state unchanged). :func:`send` checks a message we are
about to send: a violation is *our* fault (:class:`LocalProtocolError`). Pure: no I/O, no clock.
:class:`State` is a ``StrEnum`` whose values are DSP's wire states; :class:`Role` is the negotiation's.
"""

from __future__ import annotations

import enum

from connector.protocol.negotiation import Role
from connector.protocol.table import StateTable

__all__ = ["INITIAL", "SENDER", "TABLE", "TERMINAL", "TRANSITIONS", "Kind", "Role", "State", "receive", "send"]


class State(enum.StrEnum):
    REQUESTED = "REQUESTED"
    STARTED = "STARTED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"


TERMINAL = frozenset({State.COMPLETED, State.TERMINATED})


class Kind(enum.Enum):
    """Message kinds (the wire type names, DSP 2025-1 §8.2)."""

    REQUEST = "TransferRequestMessage"
    START = "TransferStartMessage"
    SUSPENSION = "TransferSuspensionMessage"
    COMPLETION = "TransferCompletionMessage"
    TERMINATION = "TransferTerminationMessage"


#: Who may send each message (None: either party).
SENDER: dict[Kind, Role | None] = {
    Kind.REQUEST: Role.CONSUMER,
    Kind.START: None,
    Kind.SUSPENSION: None,
    Kind.COMPLETION: None,
    Kind.TERMINATION: None,
}

#: The one message that opens a transfer, and the state it opens it in.
INITIAL: dict[Kind, State] = {Kind.REQUEST: State.REQUESTED}

#: Starting a REQUESTED transfer is the provider's alone; resuming a SUSPENDED one is either party's.
START_FROM_REQUESTED = Role.PROVIDER

#: state -> {message -> next state}. Terminal states allow nothing.
TRANSITIONS: dict[State, dict[Kind, State]] = {
    State.REQUESTED: {Kind.START: State.STARTED, Kind.TERMINATION: State.TERMINATED},
    State.STARTED: {Kind.SUSPENSION: State.SUSPENDED, Kind.COMPLETION: State.COMPLETED,
                    Kind.TERMINATION: State.TERMINATED},
    State.SUSPENDED: {Kind.START: State.STARTED, Kind.TERMINATION: State.TERMINATED},
    State.COMPLETED: {},
    State.TERMINATED: {},
}


def _start_rule(state: State, kind: Kind, sender: Role) -> str | None:
    if state is State.REQUESTED and kind is Kind.START and sender is not START_FROM_REQUESTED:
        return f"only the provider starts a {state.value} transfer"
    return None


#: The table, checked both ways: :func:`receive` for a peer's message, :func:`send` for ours.
TABLE: StateTable[State, Kind, Role] = StateTable("transfer process", SENDER, INITIAL, TRANSITIONS, _start_rule)
receive = TABLE.receive
send = TABLE.send
