"""Rows of the business tables as frozen structs (JSON columns decoded, states and roles typed).

A process's state and role are the protocol's enums (``StrEnum``s whose values are the stored strings):
:func:`to_row` writes their values, and :func:`from_row` reads a row back through ``msgspec.convert``, so a
stored string becomes its member and a value no enum knows fails loudly (:class:`StorageError`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from connector.errors import StorageError
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.negotiation import State as NegotiationState
from connector.protocol.transfer import State as TransferState

T = TypeVar("T", bound=msgspec.Struct)


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str = ""
    description: str = ""
    content_type: str = "application/octet-stream"
    data_class: str = "general"
    keywords: list[str] = []
    data_address: dict[str, Any] = {}
    created_at: str = ""
    #: Offered for computation only (the data sandbox): ``{"table": file name, "schema": TableSchema}``, the
    #: read-only table imported from the data address's CSV (``connector.services.sandbox``); None otherwise.
    sandbox: dict[str, Any] | None = None


class PolicyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    policy: dict[str, Any]
    created_at: str = ""


class ContractDefinition(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    access_policy_id: str
    contract_policy_id: str
    assets: list[str]
    created_at: str = ""


class NegotiationRecord(msgspec.Struct, frozen=True, kw_only=True):
    participant_id: str
    id: str
    role: Role
    state: NegotiationState
    counterparty_did: str
    provider_pid: str | None = None
    consumer_pid: str | None = None
    counterparty_address: str = ""
    asset_id: str = ""
    offer_id: str = ""
    offer: dict[str, Any] = {}
    requested: dict[str, Any] = {}
    agreement: dict[str, Any] | None = None
    reason: str = ""
    #: The message committed but not yet acknowledged by the peer: {"kind", "url", "body"}.
    pending: dict[str, Any] | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    deliver_by: float | None = None
    #: When the negotiation is terminated if nothing happens (the peer's or the operator's move).
    expires_at: float | None = None
    created_at: str = ""
    updated_at: str = ""


class NegotiationEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    at: str
    kind: str
    detail: str = ""


class AgreementRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    negotiation_id: str
    role: Role
    provider_did: str
    consumer_did: str
    asset_id: str
    agreement: dict[str, Any]
    state: AgreementState
    provider_proof: dict[str, Any] | None = None
    consumer_proof: dict[str, Any] | None = None
    #: The parties' DID documents as resolved when their proofs were checked (offline evidence).
    did_documents: dict[str, Any] = {}
    created_at: str = ""


class TransferRecord(msgspec.Struct, frozen=True, kw_only=True):
    participant_id: str
    id: str
    role: Role
    state: TransferState
    counterparty_did: str
    agreement_id: str
    provider_pid: str | None = None
    consumer_pid: str | None = None
    #: The provider's DSP base (we are consumer) or the consumer's callback address (we are provider).
    counterparty_address: str = ""
    asset_id: str = ""
    format: str = ""
    #: Consumer: the data address the provider's start message gave (holds the transfer token; never shown).
    data_address: dict[str, Any] | None = None
    #: Provider: SHA-256 of the transfer token it issued, and when that token expires.
    token_hash: str | None = None
    token_expires_at: float | None = None
    manifest: dict[str, Any] | None = None
    envelope: dict[str, Any] | None = None
    size: int | None = None
    #: Consumer: bytes received and verified so far (the resume point).
    received: int = 0
    #: Consumer: the payload's file in the vault, once complete (relative to the data folder).
    vault_path: str = ""
    reason: str = ""
    #: The message committed but not yet acknowledged by the peer: {"kind", "url", "body"}.
    pending: dict[str, Any] | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    deliver_by: float | None = None
    #: Consumer: when a REQUESTED transfer the provider has not started is terminated.
    expires_at: float | None = None
    created_at: str = ""
    updated_at: str = ""


JSON_COLUMNS = frozenset({
    "keywords", "data_address", "policy", "assets", "offer", "requested", "agreement", "pending", "provider_proof",
    "consumer_proof", "did_documents", "manifest", "envelope", "sandbox",
})


def to_row(record: msgspec.Struct, **extra: Any) -> dict[str, Any]:
    """The row of *record*: enums as their values, JSON columns encoded; *extra* columns added."""
    row: dict[str, Any] = msgspec.to_builtins(record)
    for key in JSON_COLUMNS & row.keys():
        if row[key] is not None:
            row[key] = msgspec.json.encode(row[key]).decode()
    row.update(extra)
    return row


def from_row(kind: type[T], row: dict[str, Any]) -> T:
    """The record of *kind* stored in *row* (columns *kind* does not have are ignored).

    Every field is checked against its type: a state or role no enum knows, say, raises
    :class:`StorageError` naming the table's record, the row and the field, rather than handing on a value
    the state tables cannot read."""
    names = kind.__struct_fields__  # (``msgspec.structs.fields`` evaluates the annotations on every call)
    data = {}
    for key, value in row.items():
        if key not in names:
            continue
        if key in JSON_COLUMNS and isinstance(value, str):
            value = msgspec.json.decode(value)
        data[key] = value
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise StorageError(f"a stored {kind.__name__} ({data.get('id')!r}) is unreadable: {exc}") from exc
