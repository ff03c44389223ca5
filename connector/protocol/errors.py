"""Protocol errors: our own misuse of the protocol, and a peer's."""

from __future__ import annotations

from connector.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["AgreementStateError", "InvalidTransition", "LocalProtocolError", "MessageError", "RemoteProtocolError"]


class AgreementStateError(LocalProtocolError):
    """A move of an agreement that its lifecycle does not allow in its state (``agreement_lifecycle``)."""


class InvalidTransition(RemoteProtocolError):
    """A peer sent a message that the process's current state does not allow (DSP: 400 + error body)."""


class MessageError(RemoteProtocolError):
    """A message that is missing a field, has a wrong one, or is of the wrong type."""
