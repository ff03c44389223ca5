"""The lifecycle of a contract agreement, from the provider's signature to its revocation, in one table.

Theory of operation
-------------------
An agreement is made by a contract negotiation (DSP 2025-1 §7.1) and outlives it. Each party keeps its own
copy (a row of the ``agreements`` table, its state column holding the wire values of :class:`AgreementState`),
and :data:`TRANSITIONS` says which :class:`AgreementEvent` moves it where:

- ``SIGNED``: the provider signs the agreement and sends it (``ContractAgreementMessage``); the provider
  commits its copy as it sends, the consumer as it receives. This opens the agreement (:data:`INITIAL`): AGREED.
- ``VERIFIED``: the consumer verifies it with its own proof (``ContractAgreementVerificationMessage``): VERIFIED.
- ``FINALIZED``: the provider's ``ContractNegotiationEventMessage:FINALIZED``: FINALIZED. From here on the
  agreement is in force (:data:`IN_FORCE`): its data may be transferred and used.
- ``REVOKED``: the provider's operator revokes the agreement on the provider's node. Only an agreement in
  force can be revoked (DSP termination is not allowed after FINALIZED, so this is the project's own
  extension); revoking a revoked agreement again is allowed and gives the same answer.
- ``REVOCATION_RECEIVED``: the provider's revocation reaches the consumer's node. It is accepted in every
  state: the consumer's copy may lag the provider's (the finalization and the revocation are delivered
  and retried apart, so the revocation can arrive first), and blocking use is never unsafe.

REVOKED is final (:data:`TERMINAL`): every later event leaves it REVOKED, so a finalization that arrives
after the revocation does not put the agreement back in force. An agreement that reached FINALIZED
(:data:`EVER_IN_FORCE`, REVOKED ones included) makes its counterparty a known peer; one that never did
(:data:`NEVER_IN_FORCE`) belongs to a negotiation that ended before FINALIZED.

What the lifecycle does not record: deleting an agreement's *data*. After a revocation, or when a deletion
duty falls due, the consumer's node destroys the data's key and files in its vault and logs a signed
``delete`` entry in the usage log; the agreement itself stays, in its state, as the record of what was
agreed. The only rows that go are those of agreements never in force, deleted with the ended negotiation
of a peer that stays unknown; so there is no DELETED state.

The members' names are their wire values and :class:`AgreementState` is a ``StrEnum``, so a state read
from the store compares equal to its member. A move the table does not allow raises
:class:`AgreementStateError` (the node's own misuse: peers' messages are checked by the negotiation table
first). Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

from connector.protocol.errors import AgreementStateError

__all__ = [
    "EVER_IN_FORCE",
    "INITIAL",
    "IN_FORCE",
    "NEVER_IN_FORCE",
    "TERMINAL",
    "TRANSITIONS",
    "AgreementEvent",
    "AgreementState",
    "AgreementStateError",
    "next_state",
]


class AgreementState(enum.StrEnum):
    AGREED = "AGREED"
    VERIFIED = "VERIFIED"
    FINALIZED = "FINALIZED"
    REVOKED = "REVOKED"


class AgreementEvent(enum.Enum):
    """What happens to an agreement (the value says it in words, for error messages)."""

    SIGNED = "signature by the provider"
    VERIFIED = "verification by the consumer"
    FINALIZED = "finalization by the provider"
    REVOKED = "revocation by the provider"
    REVOCATION_RECEIVED = "receipt of the provider's revocation"


#: The event that opens an agreement (no copy of it yet), and the state it opens it in.
INITIAL: dict[AgreementEvent, AgreementState] = {AgreementEvent.SIGNED: AgreementState.AGREED}

#: state -> {event -> next state}.
TRANSITIONS: dict[AgreementState, dict[AgreementEvent, AgreementState]] = {
    AgreementState.AGREED: {
        AgreementEvent.VERIFIED: AgreementState.VERIFIED,
        AgreementEvent.REVOCATION_RECEIVED: AgreementState.REVOKED,
    },
    AgreementState.VERIFIED: {
        AgreementEvent.FINALIZED: AgreementState.FINALIZED,
        AgreementEvent.REVOCATION_RECEIVED: AgreementState.REVOKED,
    },
    AgreementState.FINALIZED: {
        AgreementEvent.REVOKED: AgreementState.REVOKED,
        AgreementEvent.REVOCATION_RECEIVED: AgreementState.REVOKED,
    },
    AgreementState.REVOKED: {
        AgreementEvent.VERIFIED: AgreementState.REVOKED,
        AgreementEvent.FINALIZED: AgreementState.REVOKED,
        AgreementEvent.REVOKED: AgreementState.REVOKED,
        AgreementEvent.REVOCATION_RECEIVED: AgreementState.REVOKED,
    },
}

#: States no event leaves.
TERMINAL = frozenset({AgreementState.REVOKED})
#: States in which the agreement's data may be transferred and used.
IN_FORCE = frozenset({AgreementState.FINALIZED})
#: States of an agreement that reached FINALIZED (it may since have been revoked).
EVER_IN_FORCE = frozenset({AgreementState.FINALIZED, AgreementState.REVOKED})
#: States of an agreement whose negotiation has not (or never) reached FINALIZED.
NEVER_IN_FORCE = frozenset(AgreementState) - EVER_IN_FORCE


def next_state(state: AgreementState | str | None, event: AgreementEvent) -> AgreementState:
    """The state *event* moves an agreement in *state* to (a stored value, or None for one not yet made).

    Raise :class:`AgreementStateError` if the table does not allow the move."""
    if state is None:
        opened = INITIAL.get(event)
        if opened is None:
            raise AgreementStateError(f"{event.value} is not allowed before the agreement is signed")
        return opened
    try:
        current = AgreementState(state)
    except ValueError:
        raise AgreementStateError(f"{state!r} is not an agreement state") from None
    nxt = TRANSITIONS[current].get(event)
    if nxt is None:
        raise AgreementStateError(f"{event.value} is not allowed in agreement state {current.value}")
    return nxt
