"""A process state table checked both ways: what the negotiation and transfer state machines share.

A table says who may send each message (``sender``), which messages open a process (``initial``) and
which message moves which state where (``transitions``); a process may add one rule of its own
(``extra``: a reason to refuse a move the table allows). :meth:`StateTable.receive` checks a peer's
message, and a violation is the peer's fault (:class:`InvalidTransition`); :meth:`StateTable.send` checks
a message this node is about to send, and a violation is ours (:class:`LocalProtocolError`). Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import msgspec

from connector.protocol.errors import InvalidTransition, LocalProtocolError

S = TypeVar("S", bound=enum.Enum)
K = TypeVar("K", bound=enum.Enum)
R = TypeVar("R", bound=enum.Enum)


def _no_extra_rule(state: object, kind: object, sender: object) -> str | None:
    return None


class StateTable(msgspec.Struct, Generic[S, K, R], frozen=True):
    #: What the process is called in an error ("negotiation", "transfer process").
    process: str
    #: Who may send each message (None: either party).
    sender: Mapping[K, R | None]
    #: Messages that open a process, and the state they open it in.
    initial: Mapping[K, S]
    #: state -> {message -> next state}; terminal states allow nothing.
    transitions: Mapping[S, Mapping[K, S]]
    #: A rule the table cannot say: the reason a move it allows is refused, or None.
    extra: Callable[[S, K, R], str | None] = _no_extra_rule

    def _refusal(self, state: S, kind: K, sender: R) -> str | None:
        """Why *sender* may not send *kind* in *state*, or None when it may."""
        allowed = self.sender[kind]
        if allowed is not None and allowed is not sender:
            return f"a {sender.value} cannot send {kind.value}"
        if kind not in self.transitions[state]:
            return f"{kind.value} is not allowed in state {state.value}"
        return self.extra(state, kind, sender)

    def _move(self, state: S | None, kind: K, sender: R, error: type[Exception]) -> S:
        if state is None:
            if kind not in self.initial or self.sender[kind] is not sender:
                raise error(f"{kind.value} cannot open a {self.process}")
            return self.initial[kind]
        refused = self._refusal(state, kind, sender)
        if refused is not None:
            raise error(refused)
        return self.transitions[state][kind]

    def receive(self, state: S | None, kind: K, sender: R) -> S:
        """The state after receiving *kind* from *sender*; ``state`` None means a new process."""
        return self._move(state, kind, sender, InvalidTransition)

    def send(self, state: S | None, kind: K, sender: R) -> S:
        """The state after *sender* (this node) sends *kind*; raise :class:`LocalProtocolError` if not allowed."""
        return self._move(state, kind, sender, LocalProtocolError)
