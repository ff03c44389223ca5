"""DSP 2025-1 messages as msgspec structs, read from and written to compacted JSON-LD.

Wire form: compacted JSON-LD with ``@context`` an array holding the DSP context
(``https://w3id.org/dspace/2025/1/context.jsonld``, shipped in ``contexts/``; never fetched), and the node's
own context after it when the message carries the node's extension properties to a peer that reads them
(:data:`EXTENDED_CONTEXT`). Messages are open: unknown properties are accepted (the schemas allow them) and
dropped; missing or wrongly typed required properties are a :class:`~connector.protocol.errors.MessageError`
naming the field. Property names written with the ``dspace:`` prefix or as full IRIs (as some connectors do)
are read as the bare terms the DSP context defines. ODRL policies (``offer``, ``agreement``) stay JSON
objects here; the policy engine reads them.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import msgspec

from connector.errors import validation_error_path
from connector.protocol import contexts
from connector.protocol.errors import MessageError

DSP_CONTEXT = contexts.DSP
DSP_NS = "https://w3id.org/dspace/2025/1/"
CONTEXT = [DSP_CONTEXT]
#: The DSP context with the node's own (``connector.protocol.contexts``), for a message carrying the node's
#: extension properties (an agreement proof) to a peer that reads them.
EXTENDED_CONTEXT = [DSP_CONTEXT, contexts.TDS]
MAX_REASONS = 32
#: What a process id keeps unescaped as a path segment: RFC 3986 §3.3 ``pchar`` (besides unreserved).
_PCHAR = ":@!$&'()*+,;="


def path_segment(pid: str) -> str:
    """*pid* as one segment of a DSP URL path (``…/negotiations/:pid/…``, DSP 2025-1 §7.2), percent-encoded
    (RFC 3986 §3.3): a peer's pid holding ``/``, ``?``, spaces or other text can neither change where a
    request goes nor make its URL unsignable. ``urn:uuid:…`` pids come out unchanged."""
    return quote(pid, safe=_PCHAR)


def _ctx() -> list[str]:
    return list(CONTEXT)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    context: list[Any] = msgspec.field(name="@context", default_factory=_ctx)


# -- catalog (DSP 2025-1 §6) -------------------------------------------------------------------------


class CatalogRequestMessage(Message, frozen=True, kw_only=True):
    type: Literal["CatalogRequestMessage"] = msgspec.field(name="@type", default="CatalogRequestMessage")
    filter: list[Any] = []


class DatasetRequestMessage(Message, frozen=True, kw_only=True):
    type: Literal["DatasetRequestMessage"] = msgspec.field(name="@type", default="DatasetRequestMessage")
    dataset: str


class CatalogError(Message, frozen=True, kw_only=True):
    type: Literal["CatalogError"] = msgspec.field(name="@type", default="CatalogError")
    code: str | None = None
    reason: list[str] = []


# -- contract negotiation (DSP 2025-1 §7) ------------------------------------------------------------


class ContractRequestMessage(Message, frozen=True, kw_only=True):
    type: Literal["ContractRequestMessage"] = msgspec.field(name="@type", default="ContractRequestMessage")
    consumerPid: str
    offer: dict[str, Any]
    providerPid: str | None = None
    callbackAddress: str | None = None


class ContractOfferMessage(Message, frozen=True, kw_only=True):
    type: Literal["ContractOfferMessage"] = msgspec.field(name="@type", default="ContractOfferMessage")
    providerPid: str
    offer: dict[str, Any]
    consumerPid: str | None = None
    callbackAddress: str | None = None


#: The project's extension property for an agreement proof, a JSON literal (``@type: @json``) in the node's
#: context: the eddsa-jcs-2022 proof object exactly as signed (``connector.protocol.contexts``).
PROOF = contexts.TDS_NS + "proof"


class ContractAgreementMessage(Message, frozen=True, kw_only=True):
    type: Literal["ContractAgreementMessage"] = msgspec.field(name="@type", default="ContractAgreementMessage")
    providerPid: str
    consumerPid: str
    agreement: dict[str, Any]
    callbackAddress: str | None = None
    #: The provider's eddsa-jcs-2022 proof over ``agreement`` (project extension; see protocol.agreements).
    proof: dict[str, Any] | None = msgspec.field(name=PROOF, default=None)


class ContractAgreementVerificationMessage(Message, frozen=True, kw_only=True):
    type: Literal["ContractAgreementVerificationMessage"] = msgspec.field(
        name="@type", default="ContractAgreementVerificationMessage"
    )
    providerPid: str
    consumerPid: str
    #: The consumer's eddsa-jcs-2022 proof over the agreement it verifies (project extension).
    proof: dict[str, Any] | None = msgspec.field(name=PROOF, default=None)


class ContractNegotiationEventMessage(Message, frozen=True, kw_only=True):
    type: Literal["ContractNegotiationEventMessage"] = msgspec.field(
        name="@type", default="ContractNegotiationEventMessage"
    )
    providerPid: str
    consumerPid: str
    eventType: Literal["ACCEPTED", "FINALIZED"]


class ContractNegotiationTerminationMessage(Message, frozen=True, kw_only=True):
    type: Literal["ContractNegotiationTerminationMessage"] = msgspec.field(
        name="@type", default="ContractNegotiationTerminationMessage"
    )
    providerPid: str
    consumerPid: str
    code: str | None = None
    reason: list[Any] = []


class ContractNegotiation(Message, frozen=True, kw_only=True):
    """The ACK body: a negotiation's pids and state."""

    type: Literal["ContractNegotiation"] = msgspec.field(name="@type", default="ContractNegotiation")
    providerPid: str
    consumerPid: str
    state: str


class ContractNegotiationError(Message, frozen=True, kw_only=True):
    type: Literal["ContractNegotiationError"] = msgspec.field(name="@type", default="ContractNegotiationError")
    providerPid: str | None = None
    consumerPid: str | None = None
    code: str | None = None
    reason: list[str] = []


# -- transfer process (DSP 2025-1 §8) ---------------------------------------------------------------


class TransferRequestMessage(Message, frozen=True, kw_only=True):
    type: Literal["TransferRequestMessage"] = msgspec.field(name="@type", default="TransferRequestMessage")
    consumerPid: str
    agreementId: str
    format: str
    callbackAddress: str
    dataAddress: dict[str, Any] | None = None


class TransferStartMessage(Message, frozen=True, kw_only=True):
    type: Literal["TransferStartMessage"] = msgspec.field(name="@type", default="TransferStartMessage")
    providerPid: str
    consumerPid: str
    #: For a pull transfer: where and how the consumer fetches the data (DSP 2025-1 §8.2.3).
    dataAddress: dict[str, Any] | None = None


class TransferSuspensionMessage(Message, frozen=True, kw_only=True):
    type: Literal["TransferSuspensionMessage"] = msgspec.field(name="@type", default="TransferSuspensionMessage")
    providerPid: str
    consumerPid: str
    code: str | None = None
    reason: list[Any] = []


class TransferCompletionMessage(Message, frozen=True, kw_only=True):
    type: Literal["TransferCompletionMessage"] = msgspec.field(name="@type", default="TransferCompletionMessage")
    providerPid: str
    consumerPid: str


class TransferTerminationMessage(Message, frozen=True, kw_only=True):
    type: Literal["TransferTerminationMessage"] = msgspec.field(name="@type", default="TransferTerminationMessage")
    providerPid: str
    consumerPid: str
    code: str | None = None
    reason: list[Any] = []


class TransferProcess(Message, frozen=True, kw_only=True):
    """The ACK body: a transfer process's pids and state."""

    type: Literal["TransferProcess"] = msgspec.field(name="@type", default="TransferProcess")
    providerPid: str
    consumerPid: str
    state: str


class TransferError(Message, frozen=True, kw_only=True):
    type: Literal["TransferError"] = msgspec.field(name="@type", default="TransferError")
    # Both pids are required (transfer-error-schema.json) and are IRIs (the DSP context types them @id).
    providerPid: str
    consumerPid: str
    code: str | None = None
    reason: list[str] = []


M = TypeVar("M", bound=Message)


def _bare(key: str) -> str:
    if key.startswith("dspace:"):
        return key[len("dspace:") :]
    if key.startswith(DSP_NS):
        return key[len(DSP_NS) :]
    return key


def normalise(obj: dict[str, Any]) -> dict[str, Any]:
    """Read ``dspace:x`` and full-IRI property names and ``@type`` values as the bare DSP terms."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        bare = _bare(key)
        if bare in ("@type", "eventType", "state") and isinstance(value, str):
            value = _bare(value)
        out[bare] = value
    return out


@functools.cache
def _field_names(kind: type[Message]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(kind))


def decode(obj: Any, kind: type[M]) -> M:
    """Read a DSP message of type *kind* from parsed JSON; raise :class:`MessageError` naming the field."""
    if not isinstance(obj, dict):
        raise MessageError("message must be a JSON object")
    data = normalise(obj)
    type_name = kind.__name__
    if data.get("@type") != type_name:
        raise MessageError(f"@type must be {type_name!r}, not {data.get('@type')!r}", path="@type")
    context = data.get("@context")
    contexts = context if isinstance(context, list) else [context]
    if DSP_CONTEXT not in contexts:
        raise MessageError(f"@context must be an array containing {DSP_CONTEXT}", path="@context")
    known = _field_names(kind)
    try:
        return msgspec.convert({k: v for k, v in data.items() if k in known}, kind)
    except msgspec.ValidationError as exc:
        path, message = validation_error_path(str(exc))
        raise MessageError(f"{path}: {message}" if path else message, path=path) from exc


def encode(message: Message) -> dict[str, Any]:
    """The compacted JSON-LD form of a message (absent optional properties are left out)."""
    out: dict[str, Any] = msgspec.to_builtins(message)
    return {k: v for k, v in out.items() if v is not None}
