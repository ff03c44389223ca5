"""Protocol errors: our own misuse of the protocol, and a peer's."""

from __future__ import annotations

from connector.errors import LocalProtocolError, PeerError, RemoteProtocolError, TdsError

__all__ = ["AgreementStateError", "InvalidTransition", "LocalProtocolError", "MessageError", "QueryRefused",
           "RemoteProtocolError", "ResultError"]


class AgreementStateError(LocalProtocolError):
    """A move of an agreement that its lifecycle does not allow in its state (``agreement_lifecycle``)."""


class InvalidTransition(RemoteProtocolError):
    """A peer sent a message that the process's current state does not allow (DSP: 400 + error body)."""


class MessageError(RemoteProtocolError):
    """A message that is missing a field, has a wrong one, or is of the wrong type."""


class QueryRefused(TdsError):
    """A data sandbox query that the agreement's terms do not allow (``connector.protocol.sandbox``). ``rule`` is
    a short code of what it broke ("function", "column", "dp-required" …); the message says it in words."""

    status = 422
    code = "query-refused"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ResultError(PeerError):
    """A signed sandbox result whose provider's proof or result hash does not verify."""

    code = "result-unverified"
