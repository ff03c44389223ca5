"""The management API (``/api/management/v1``) for operators and applications.

Listens on its own port (127.0.0.1 by default). Every route needs ``Authorization: Bearer <token>``; the
token decides the participant, never the request body. A participant's resource that does not exist for
the token's participant is 404, whether or not another participant has one by that id. The node's admin
token reaches only the admin routes (``Route.admin``: hosting participants, metrics tokens); it reads no
participant's data (404 on those routes), and a participant's token on an admin route is 403. The node's
Prometheus metrics are at ``/metrics`` on this listener (:func:`metrics_routes`), for the admin token and
metrics tokens only. Request bodies are msgspec structs that forbid unknown fields, so a typo is a 400
naming the field.
"""

from __future__ import annotations

import asyncio
import enum
import math
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, NamedTuple, TypeVar

import msgspec
from aiohttp import web

from connector import jsonbound
from connector.config import NAME_RE, REGION_RE
from connector.errors import BadRequest, Forbidden, NotFound, StorageError, pattern_rule, validation_error_path
from connector.http.auth import TOKEN, authenticate_token
from connector.http.calls import body_of, path_param
from connector.http.middleware import query_int
from connector.identity.credentials import Subject
from connector.logging import get_logger
from connector.protocol import agreements
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.negotiation import State as NegotiationState
from connector.protocol.transfer import State as TransferState
from connector.services import vault
from connector.services.tokens import MAX_TOKENS, NewToken
from connector.store.records import (
    AgreementRecord,
    Asset,
    ContractDefinition,
    NegotiationEvent,
    NegotiationRecord,
    PolicyRecord,
    TransferRecord,
)
from connector.store.repository import Peer, TokenInfo

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.credentials import CredentialService
    from connector.services.federation import FederationService
    from connector.services.gossip import Gossip
    from connector.services.negotiation import NegotiationService
    from connector.services.participants import ParticipantRegistry
    from connector.services.process_shell import ProcessShell
    from connector.services.publishing import Publishing
    from connector.services.receipts import ReceiptService
    from connector.services.sandbox import SandboxService
    from connector.services.search import SearchService
    from connector.services.settlement import SettlementService
    from connector.services.tokens import TokenService
    from connector.services.transfer import TransferService
    from connector.services.usage import UsageService
    from connector.services.vault import Vault

PREFIX = "/api/management/v1"
log = get_logger(component="management")
#: The API's own description needs no token: it holds no data.
PUBLIC_PATHS = frozenset({f"{PREFIX}/openapi.json", f"{PREFIX}/docs"})
S = TypeVar("S", bound=msgspec.Struct)
R = TypeVar("R", NegotiationRecord, TransferRecord)
E = TypeVar("E", bound=enum.Enum)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


ID_PATTERN = pattern_rule("^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$",
                          "1-128 letters, digits, '.', '_', '~' or '-', starting with a letter or digit")
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
DataClass = Literal["general", "important", "core", "personal"]
ColumnName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class VerifyPeerRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    peer: Annotated[str, msgspec.Meta(max_length=2048)]


class AssetIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    id: Id
    title: Annotated[str, msgspec.Meta(max_length=500)] = ""
    description: Annotated[str, msgspec.Meta(max_length=5000)] = ""
    content_type: Annotated[str, msgspec.Meta(max_length=200)] = "application/octet-stream"
    data_class: DataClass = "general"
    keywords: Annotated[list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=50)] = []
    data_address: dict[str, Any] = {}
    #: Offered for computation only (the data sandbox): a File asset's CSV is imported once into a read-only table
    #: that aggregate queries under an agreement run against; its data is never transferred.
    sandbox: bool = False
    #: Sandbox only: bounds the provider declares for numeric columns, ``{"defect_rate": [0, 1]}`` (values are
    #: clipped to them; sums and averages under a privacy budget need them).
    sandbox_bounds: Annotated[dict[ColumnName, Annotated[list[float], msgspec.Meta(min_length=2, max_length=2)]],
                              msgspec.Meta(max_length=200)] = {}
    #: Sandbox only: the columns a query may reference (default: all).
    sandbox_columns: Annotated[list[ColumnName], msgspec.Meta(min_length=1, max_length=200)] | None = None


class PolicyIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Id
    policy: dict[str, Any]


class ContractDefinitionIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    id: Id
    access_policy_id: Id
    contract_policy_id: Id
    assets: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=10000)]


class CatalogQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    peer: Annotated[str, msgspec.Meta(max_length=2048)]


class NegotiationStart(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    offer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    #: Left out: the provider of the offer in the participant's catalog cache (a search result's offer id).
    peer: Annotated[str, msgspec.Meta(max_length=2048)] = ""


class TerminateIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class ParticipantIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    name: Annotated[str, msgspec.Meta(pattern=NAME_RE.pattern)]
    legal_name: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    region: Annotated[str, msgspec.Meta(pattern=REGION_RE.pattern, max_length=20)]
    industry: Annotated[str, msgspec.Meta(max_length=200)] = ""
    contact: Annotated[str, msgspec.Meta(max_length=500)] = ""
    #: A did:web the participant already controls; it must publish the DID document the node serves.
    did: Annotated[str, msgspec.Meta(pattern=pattern_rule(
        "^did:web:[A-Za-z0-9.%:_~-]+$", "a did:web DID: did:web: then letters, digits, '.', '%', ':', '_', '~' or '-'"),
        max_length=512)] | None = None


class ParticipantAdded(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    did: str
    dsp_endpoint: str
    did_document: str
    created_at: str
    #: The participant's first management token, shown only here. Hand it to the participant, who should
    #: create its own tokens and revoke this one.
    token: str


class ParticipantSummary(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    did: str
    legal_name: str
    region: str
    industry: str
    dsp_endpoint: str
    created_at: str
    #: ``active``, or ``suspended`` (not served, its tokens refused; nothing deleted).
    state: str = "active"
    suspended_at: str | None = None
    suspended_reason: str = ""
    #: Listing only: bytes the participant holds in the vault (what ``node.vault_quota_bytes`` bounds).
    vault_bytes: int | None = None
    #: The host's share, in percent, of what the participant earns as a provider (None: none).
    platform_share: str | None = None


class SuspendIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Why (shown to the participant's own tokens, never to peers).
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ParticipantState(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    did: str
    state: str
    suspended_at: str | None = None
    reason: str = ""


class KeysRotated(msgspec.Struct, frozen=True, rename="camel"):
    """A participant's keys after a rotation."""

    name: str
    did: str
    #: The DID URL of the new signing key (authentication, assertionMethod).
    signing_key: str
    #: The DID URL of the new X25519 key-agreement key.
    agreement_key: str
    #: Keys used before, still listed in the DID document so that what they signed keeps verifying.
    retired_keys: list[str]
    fingerprints: dict[str, str]
    #: Vault data keys that opened under none of the participant's keys (0 when all were re-wrapped).
    unopened_data_keys: int
    #: Old key-agreement keys still kept (until every data key under them is re-wrapped): normally none.
    old_key_agreement_keys_kept: list[str]


class ParticipantRemoved(msgspec.Struct, frozen=True, rename="camel"):
    """What removing a participant deleted."""

    name: str
    did: str
    #: Rows deleted from the node's database (tokens, catalog, processes, agreements, usage log, ...).
    removed_rows: int
    #: Folders deleted, relative to the data folder (keys, data root, vault).
    removed_folders: list[str]


class TokenIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    application: Annotated[str, msgspec.Meta(pattern=pattern_rule(
        "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"))]


TokenCreated = NewToken
#: Most rows one listing returns (``?limit=``), and the longest long-poll (``?wait=``) in seconds.
MAX_LIMIT = 1000
MAX_WAIT_S = 120


class TransferStart(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    agreement_id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    #: The provider's URL or DSP base; default: where the agreement was negotiated.
    peer: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    #: Have the provider push the data to this node (``HttpData-PUSH``) instead of pulling it.
    push: bool = False


class ReasonIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class TransferOut(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A transfer process as the management API shows it (never its token or data address)."""

    id: str
    role: Role
    state: TransferState
    counterparty_did: str
    agreement_id: str
    provider_pid: str | None = None
    consumer_pid: str | None = None
    counterparty_address: str = ""
    asset_id: str = ""
    format: str = ""
    token_expires_at: float | None = None
    manifest: dict[str, Any] | None = None
    size: int | None = None
    received: int = 0
    vault_path: str = ""
    reason: str = ""
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""
    history: list[NegotiationEvent] = []


#: What the management API never shows of a transfer: the token (in the data address and in a pending
#: start message), its hash, and internal delivery bookkeeping.
TRANSFER_HIDDEN = ("participant_id", "data_address", "token_hash", "pending", "envelope", "next_attempt_at",
                   "deliver_by")


def camel(record: msgspec.Struct, drop: tuple[str, ...] = ("participant_id",)) -> dict[str, Any]:
    """A record as management-API JSON: camelCase top-level keys; nested JSON left as it is."""
    out = {}
    for key, value in msgspec.structs.asdict(record).items():
        if key in drop:
            continue
        head, *rest = key.split("_")
        out[head + "".join(w.title() for w in rest)] = msgspec.to_builtins(value)
    return out


def decode_body(raw: bytes, kind: type[S]) -> S:
    if not raw:
        raise BadRequest("request body is empty; a JSON object is required")
    try:
        value = jsonbound.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from exc
    try:
        return msgspec.convert(value, type=kind)
    except msgspec.ValidationError as exc:
        path, message = validation_error_path(str(exc))
        raise BadRequest(f"{path}: {message}" if path else message, path=f"$.{path}" if path else "$") from exc


class FlatBody(Generic[S]):
    """:func:`decode_body` into *kind*, a struct whose fields are all strings or booleans, for a route called often.

    msgspec reads such a body straight into the struct, with the same checks, lengths, unknown fields and a
    nested value (which no field takes) included. Whatever it does not take as it is goes through
    :func:`decode_body`, so that the answer is the same, only sooner: an error (named as there), a byte order mark,
    and any backslash escape (``\\ud800``, a lone surrogate, is refused there)."""

    def __init__(self, kind: type[S]) -> None:
        info = msgspec.inspect.type_info(kind)
        for field in info.fields if isinstance(info, msgspec.inspect.StructType) else ():
            if not isinstance(field.type, (msgspec.inspect.StrType, msgspec.inspect.BoolType)):
                raise TypeError(f"{kind.__name__}.{field.name} is neither a string nor a boolean")
        self.kind = kind
        self._decoder = msgspec.json.Decoder(kind)

    def __call__(self, raw: bytes) -> S:
        if raw and b"\\" not in raw:
            try:
                return self._decoder.decode(raw)
            except msgspec.DecodeError:
                pass  # decode_body says what is wrong, in its own words
        return decode_body(raw, self.kind)


def json_struct(value: msgspec.Struct, status: int = 200) -> web.Response:
    """*value* as a JSON answer (what ``web.json_response(msgspec.to_builtins(value))`` answers, encoded once)."""
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json",
                        charset="utf-8")


@dataclass(frozen=True)
class ManagementSite:
    """What the management routes call: the services, never a store."""

    participants: ParticipantRegistry
    tokens: TokenService
    federation: FederationService
    publishing: Publishing
    negotiations: NegotiationService
    transfers: TransferService
    usage: UsageService
    receipts: ReceiptService
    #: Received data, opened for a permitted use.
    vault: Vault
    #: Memberships and verified attributes: issued, held, trusted (routes in ``connector.http.credentials``).
    credentials: CredentialService | None = None
    #: Federated search: the participant's catalog cache (routes in ``connector.http.search``).
    search: SearchService | None = None
    #: The peer directory and its gossip (routes in ``connector.http.directory``).
    gossip: Gossip | None = None
    #: The data sandbox: queries to a provider's sandbox (routes in ``connector.http.sandbox``).
    sandbox: SandboxService | None = None
    #: Statements of agreements' post-paid prices (routes in ``connector.http.statements``).
    settlement: SettlementService | None = None


def metrics_routes(tokens: TokenService, scrape: Callable[[], Awaitable[tuple[bytes, str]]]) -> list[web.RouteDef]:
    """``GET /metrics``: the node's Prometheus metrics, for the admin token or a metrics token (401 without a
    token; 403 for a participant's token: the metrics are the whole node's)."""

    async def metrics(request: web.Request) -> web.Response:
        token = await authenticate_token(tokens, request)
        request[TOKEN] = token
        if not (token.admin or token.metrics_only):
            raise Forbidden("the node's metrics need the node's admin token or a metrics token "
                            "(tds token create --scope metrics)")
        body, content_type = await scrape()
        return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    return [web.get("/metrics", metrics)]


def token_middleware(tokens: TokenService) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PREFIX) and request.path not in PUBLIC_PATHS:
            token = await authenticate_token(tokens, request)
            request[TOKEN] = token
        return await handler(request)

    return middleware


class Route(NamedTuple):
    """A management route and what the OpenAPI document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str = ""
    body: type[Any] | None = None
    response: Any = None
    status: int = 200
    query: dict[str, Query] = {}
    example: dict[str, Any] | None = None
    #: Other answers a caller must expect: status -> what it means.
    answers: dict[int, str] = {}
    #: Only the node's admin token may call it (a participant's token gets 403).
    admin: bool = False
    #: False: the body may be left out (the handler then uses the struct's defaults).
    body_required: bool = True
    #: The success answer may be the data itself instead of JSON: the headers that come with it.
    data_headers: dict[str, str] = {}
    #: Other media types the success answer may come as, as text (``text/csv``).
    media: tuple[str, ...] = ()


#: Catalog entries: what deleting one says, and its refusals (each names what still needs the entry, in the
#: message and under "references").
DELETING: dict[str, tuple[str, dict[int, str]]] = {
    "assets": (" (refused while an offer lists it, or an agreement not revoked or a negotiation not yet agreed "
               "needs its data)", {409: "offers list the asset, or agreements not revoked or negotiations not yet "
                                        "agreed need its data"}),
    "policies": (" (refused while an offer names it; agreements keep their own copy of the terms)",
                 {409: "offers name the policy"}),
    "contract-definitions": (": peers no longer see it; agreements made under it keep their own copy of its terms",
                             {}),
}


class Query(NamedTuple):
    """A query parameter: what it means, and its JSON Schema (what the handler accepts)."""

    description: str
    schema: dict[str, Any]


LIMIT = Query("most rows to return, newest first",
              {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100})
WAIT = Query(f"seconds to wait for a final state before answering (longer waits are cut to {MAX_WAIT_S})",
             {"type": "number", "minimum": 0})


def states_query(states: type[enum.Enum]) -> Query:
    """``?state=A,B``: only processes in one of these states."""
    one = "|".join(s.value for s in states)
    return Query("comma-separated states to list (default: all)",
                 {"type": "string", "pattern": f"^(({one})(,({one}))*)?$"})


def _states(request: web.Request, states: type[E]) -> list[E] | None:
    names = [s for s in request.query.get("state", "").split(",") if s]
    known = {s.value: s for s in states}
    for name in names:
        if name not in known:
            raise BadRequest(f"unknown state {name[:40]!r} (known: {', '.join(sorted(known))})", path="state")
    return [known[name] for name in names] or None


class ParticipantOut(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    did: str
    legal_name: str
    region: str
    industry: str
    dsp_endpoint: str
    did_document: str | None
    self_description: str
    version_document: str
    fingerprints: dict[str, str]
    application: str


class VerifyPeerOut(msgspec.Struct, frozen=True, rename="camel"):
    verified: bool
    dsp_endpoint: str
    peer: Subject


class PeersOut(msgspec.Struct, frozen=True):
    peers: list[Peer]


class EvidenceOut(msgspec.Struct, frozen=True):
    """An agreement evidence bundle (``connector.protocol.agreements``); check it with
    ``tds agreement verify --file``."""

    agreement: dict[str, Any]
    providerProof: dict[str, Any] | None
    consumerProof: dict[str, Any] | None
    didDocuments: dict[str, Any]
    context: list[str] = msgspec.field(name="@context", default_factory=lambda: list(agreements.BUNDLE_CONTEXT))
    type: str = msgspec.field(name="@type", default=agreements.BUNDLE_TYPE)


class UseIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    """A use of received data, or (``dryRun``) the question what a use would be decided now."""

    agreement_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    #: The application's own id for this use (required for a use; a dry run takes none).
    use_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    action: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "use"
    purpose: Annotated[str, msgspec.Meta(max_length=200)] = ""
    #: A use only. True (the default): the data comes back. False: a counted use without delivery (the
    #: application has the data by other means): decided, counted and logged all the same, no data returned.
    deliver: bool | msgspec.UnsetType = msgspec.UNSET
    #: True: a check that does not count: the same decision a use would get now, but nothing is counted,
    #: logged or released (no useId, no deliver).
    dry_run: bool = False


#: The body of ``POST /usage``, the route applications call on every use of data.
USE_BODY = FlatBody(UseIn)


class UseOut(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    decision: str
    reasons: list[str]
    #: The use's entry in the usage log (0 and "" for a dry run: nothing is logged).
    seq: int
    entry_hash: str
    repeated: bool
    effects: list[str]
    #: A dry run's answer: what a use would be decided now; nothing was counted or logged.
    dry_run: bool = False
    #: Dry run: the permitted uses so far, what is left of the allowance now (before a use), and whether the
    #: vault holds the data (a use with delivery needs it; without, it is refused with 409).
    uses: int | None = None
    allowance: dict[str, Any] | None = None
    data_held: bool | None = None


class RevocationOut(msgspec.Struct, frozen=True, rename="camel"):
    reason: str
    revoked_at: str
    #: Provider: ``pending`` (the consumer has not yet confirmed) or ``acknowledged`` (a deletion receipt);
    #: consumer: ``received`` (use blocked) or ``applied`` (and its data deleted).
    status: str


class DeletionOut(msgspec.Struct, frozen=True):
    at: str
    #: On schedule (a deletion duty of the agreement's policy) or after the provider's revocation.
    reason: str


class AgreementOut(AgreementRecord, frozen=True, kw_only=True):
    """An agreement with its state and, where there is one, its revocation (reason and when) and the last
    deletion of its data on this node."""

    revocation: RevocationOut | None = None
    data_deleted: DeletionOut | None = None


def agreement_out(record: AgreementRecord, ended: dict[str, Any]) -> dict[str, Any]:
    """*record* as the management API shows it, with what :meth:`UsageService.endings` says of it."""
    return camel(AgreementOut(**msgspec.structs.asdict(record),
                              revocation=msgspec.convert(ended.get("revocation"), RevocationOut | None),
                              data_deleted=msgspec.convert(ended.get("dataDeleted"), DeletionOut | None)))


class UsageLogOut(msgspec.Struct, frozen=True, rename="camel"):
    entries: list[dict[str, Any]]
    heads: list[dict[str, Any]]
    did_document: dict[str, Any]
    #: The provider's signed acknowledgement of the log so far (consumer side; None before the first).
    acknowledgement: dict[str, Any] | None = None
    #: The provider's DID document as agreed, to check the acknowledgement with.
    provider_did_document: dict[str, Any] | None = None
    #: This participant's role in the agreement: "consumer" (its chain of uses, which the provider acknowledges)
    #: or "provider" (its own chain of the sandbox queries it ran for the consumer, acknowledged by no one).
    role: str | None = None


class NegotiationOut(NegotiationRecord, frozen=True, kw_only=True):
    history: list[NegotiationEvent] = []


def routes(site: ManagementSite) -> list[Route]:
    from connector.http import credentials  # its routes are described with this module's Route
    from connector.http import directory as directory_routes
    from connector.http import sandbox as sandbox_routes
    from connector.http import search as search_routes
    from connector.http import statements as statement_routes

    def participant(request: web.Request) -> ParticipantRuntime:
        token = request[TOKEN]
        found = site.participants.by_id(token.participant_id) if token.participant_id else None
        if found is None:
            if token.participant_id:
                site.participants.refuse_suspended(token.participant_id)  # 403 with the operator's reason
            raise NotFound("this token is not bound to a participant")
        return found

    def admin_only(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            if not request[TOKEN].admin:
                raise Forbidden("only the node's admin token may manage participants and metrics tokens")
            return await handler(request)

        return checked

    def summary(p: ParticipantRuntime) -> ParticipantSummary:
        r = p.record
        return ParticipantSummary(name=p.name, did=p.did, legal_name=r.legal_name, region=r.region,
                                  industry=r.industry, dsp_endpoint=p.dsp_base, created_at=r.created_at,
                                  state="suspended" if r.suspended_at else "active", suspended_at=r.suspended_at,
                                  suspended_reason=r.suspended_reason, platform_share=r.platform_share)

    async def add_participant(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), ParticipantIn)
        if not body.legal_name.strip():
            raise BadRequest("legalName must not be blank", path="$.legalName")
        p, token = await site.participants.add(body.name, legal_name=body.legal_name.strip(), region=body.region,
                                                   industry=body.industry, contact=body.contact, did=body.did)
        out = ParticipantAdded(name=p.name, did=p.did, dsp_endpoint=p.dsp_base, did_document=f"{p.base_url}/did.json",
                               created_at=p.record.created_at, token=token)
        return web.json_response(msgspec.to_builtins(out), status=201)

    async def list_participants(_: web.Request) -> web.Response:
        hosted = list(site.participants.all_hosted())
        held = await asyncio.to_thread(lambda: [site.vault.usage(p) for p in hosted])
        return web.json_response([msgspec.to_builtins(msgspec.structs.replace(summary(p), vault_bytes=used))
                                  for p, used in zip(hosted, held, strict=True)])

    async def suspend_participant(request: web.Request) -> web.Response:
        raw = await body_of(request)
        body = decode_body(raw, SuspendIn) if raw else SuspendIn()
        done = await site.participants.suspend(path_param(request, "id"), body.reason)
        return web.json_response(msgspec.to_builtins(msgspec.convert(done, ParticipantState)))

    async def resume_participant(request: web.Request) -> web.Response:
        done = await site.participants.resume(path_param(request, "id"))
        return web.json_response(msgspec.to_builtins(msgspec.convert(done, ParticipantState)))

    async def rotate_keys_of(request: web.Request) -> web.Response:
        rotated = await site.participants.rotate(path_param(request, "id"))
        return web.json_response(msgspec.to_builtins(msgspec.convert(rotated, KeysRotated)))

    async def rotate_own_keys(request: web.Request) -> web.Response:
        rotated = await site.participants.rotate(participant(request).name)
        return web.json_response(msgspec.to_builtins(msgspec.convert(rotated, KeysRotated)))

    async def remove_participant(request: web.Request) -> web.Response:
        removed = await site.participants.remove(path_param(request, "id"))
        return web.json_response(msgspec.to_builtins(msgspec.convert(removed, ParticipantRemoved)))

    # the participant's own management tokens ------------------------------------------------------

    async def create_token(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), TokenIn)
        created = await site.tokens.create(participant(request), body.application)
        return web.json_response(msgspec.to_builtins(created), status=201)

    async def list_tokens(request: web.Request) -> web.Response:
        return web.json_response([camel(t) for t in await site.tokens.of(participant(request))])

    async def revoke_token(request: web.Request) -> web.Response:
        await site.tokens.revoke(participant(request), path_param(request, "id"))
        return web.Response(status=204)

    # the node's metrics tokens (admin) -------------------------------------------------------------

    async def create_metrics_token(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), TokenIn)
        created = await site.tokens.create_metrics_token(body.application)
        return web.json_response(msgspec.to_builtins(created), status=201)

    async def list_metrics_tokens(_: web.Request) -> web.Response:
        return web.json_response([camel(t) for t in await site.tokens.metrics_tokens()])

    async def revoke_metrics_token(request: web.Request) -> web.Response:
        await site.tokens.revoke_metrics_token(path_param(request, "id"))
        return web.Response(status=204)

    async def get_participant(request: web.Request) -> web.Response:
        p = participant(request)
        return web.json_response({
            "name": p.name,
            "did": p.did,
            "legalName": p.record.legal_name,
            "region": p.record.region,
            "industry": p.record.industry,
            "dspEndpoint": p.dsp_base,
            "didDocument": f"{p.base_url}/did.json" if p.did.startswith("did:web:") else None,
            "selfDescription": f"{p.base_url}/.well-known/tds/self-description",
            "versionDocument": f"{p.base_url}/.well-known/dspace-version",
            "fingerprints": p.keys.fingerprints(),
            "application": request[TOKEN].application,
        })

    async def verify_peer(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), VerifyPeerRequest)
        subject, dsp_base = await site.federation.verify_peer(participant(request), body.peer)
        return web.json_response({"verified": True, "dspEndpoint": dsp_base, "peer": msgspec.to_builtins(subject)})

    async def list_peers(request: web.Request) -> web.Response:
        peers = await site.federation.known(participant(request))
        return web.json_response({"peers": [camel(p) for p in peers]})

    def now() -> str:
        from datetime import UTC, datetime

        return datetime.now(UTC).isoformat(timespec="seconds")

    # catalog entries ------------------------------------------------------------------------------

    async def add_asset(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), AssetIn)
        record = Asset(id=body.id, title=body.title, description=body.description, content_type=body.content_type,
                       data_class=body.data_class, keywords=list(body.keywords), data_address=body.data_address,
                       created_at=now())
        spec = None
        if body.sandbox:
            from connector.services.sandbox import SandboxImport

            spec = SandboxImport(bounds={k: (v[0], v[1]) for k, v in body.sandbox_bounds.items()},
                                 columns=body.sandbox_columns)
        elif body.sandbox_bounds or body.sandbox_columns is not None:
            raise BadRequest('sandboxBounds and sandboxColumns describe an asset offered for computation only: add '
                             '"sandbox": true', path="$.sandbox")
        record = await site.publishing.add_asset(participant(request), record, sandbox=spec)
        return web.json_response(camel(record), status=201)

    async def refresh_asset(request: web.Request) -> web.Response:
        """Fetch an HttpData asset again from its backend; changed bytes become a new version."""
        asset, changed = await site.publishing.refresh_asset(participant(request), path_param(request, "id"))
        return web.json_response({**camel(asset), "changed": changed})

    async def add_policy(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), PolicyIn)
        record = await site.publishing.add_policy(participant(request), body.id, body.policy, now())
        return web.json_response(camel(record), status=201)

    async def add_definition(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), ContractDefinitionIn)
        record = ContractDefinition(id=body.id, access_policy_id=body.access_policy_id,
                                    contract_policy_id=body.contract_policy_id, assets=list(body.assets),
                                    created_at=now())
        record = await site.publishing.add_definition(participant(request), record)
        return web.json_response(camel(record), status=201)

    def entry_routes(
        path: str, noun: str, kind: type[Any], add: Any, body: type[Any], example: dict[str, Any]
    ) -> list[Route]:
        async def list_all(request: web.Request) -> web.Response:
            rows = await site.publishing.entries(participant(request), kind)
            return web.json_response([camel(r) for r in rows])

        async def get_one(request: web.Request) -> web.Response:
            found = await site.publishing.entry(participant(request), kind, path_param(request, "id"))
            if found is None:
                raise NotFound(f"no such {noun}")
            return web.json_response(camel(found))

        async def delete_one(request: web.Request) -> web.Response:
            if not await site.publishing.delete(participant(request), kind, path_param(request, "id")):
                raise NotFound(f"no such {noun}")
            return web.Response(status=204)

        return [
            Route("POST", f"/{path}", add, f"Add a {noun}", tag=path, body=body, response=kind, status=201,
                  example=example, answers={409: f"a {noun} with this id already exists"}),
            Route("GET", f"/{path}", list_all, f"List {path.replace('-', ' ')}", tag=path, response=list[kind]),
            Route("GET", f"/{path}/{{id}}", get_one, f"One {noun}", tag=path, response=kind),
            Route("DELETE", f"/{path}/{{id}}", delete_one, f"Delete a {noun}{DELETING[path][0]}", tag=path,
                  status=204, answers={404: f"no such {noun}", **DELETING[path][1]}),
        ]

    # a peer's catalog ----------------------------------------------------------------------------

    async def query_catalog(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), CatalogQuery)
        catalog = await site.federation.peer_catalog(participant(request), body.peer)
        return web.json_response(catalog)

    # negotiations --------------------------------------------------------------------------------

    async def start_negotiation(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), NegotiationStart)
        p = participant(request)
        peer = body.peer
        if not peer.strip():
            if site.search is None:
                raise BadRequest("name the peer whose offer this is", path="$.peer")
            peer = (await site.search.cached_offer(p, body.offer_id)).dsp_endpoint
        record = await site.negotiations.start(p, peer, body.offer_id)
        return web.json_response(camel(record), status=201)

    async def list_negotiations(request: web.Request) -> web.Response:
        rows = await site.negotiations.find(participant(request), states=_states(request, NegotiationState),
                                            limit=_limit(request))
        return web.json_response([camel(r) for r in rows])

    async def get_negotiation(request: web.Request) -> web.Response:
        p = participant(request)
        record = await _current_or_final(site.negotiations, p, request)
        if record is None:
            raise NotFound("no such negotiation")
        body = camel(record)
        body["history"] = [msgspec.to_builtins(e) for e in await site.negotiations.history(p, record.id)]
        return web.json_response(body)

    async def terminate_negotiation(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), TerminateIn)
        record = await site.negotiations.terminate(participant(request), path_param(request, "id"), body.reason)
        return web.json_response(camel(record))

    async def accept_negotiation(request: web.Request) -> web.Response:
        record = await site.negotiations.accept(participant(request), path_param(request, "id"))
        return web.json_response(camel(record))

    async def list_agreements(request: web.Request) -> web.Response:
        states = _states(request, AgreementState)
        p = participant(request)
        rows = await site.negotiations.agreements(p, states)
        ended = await site.usage.endings(p) if rows else {}
        return web.json_response([agreement_out(r, ended.get(r.id, {})) for r in rows])

    async def agreement_evidence(request: web.Request) -> web.Response:
        found = await site.negotiations.agreement(participant(request), path_param(request, "id"))
        return web.json_response(agreements.bundle(found.agreement, found.provider_proof, found.consumer_proof,
                                                   found.did_documents))

    # usage of received data --------------------------------------------------------------------------

    async def check_use(p: ParticipantRuntime, body: UseIn) -> web.Response:
        """A dry run: the decision a use would get now, with the same status (200 permit, 403 deny, 404, 409);
        nothing counted, logged or released."""
        if body.use_id is not msgspec.UNSET:
            raise BadRequest("a dry run is not a use and takes no useId: nothing is counted or logged, so there "
                             "is no use to name (leave out dryRun to use the data)", path="$.useId")
        if body.deliver is not msgspec.UNSET:
            raise BadRequest("a dry run releases no data: leave out deliver (or dryRun, to use the data)",
                             path="$.deliver")
        outcome = await site.usage.check(p, agreement_id=body.agreement_id, action=body.action,
                                         purpose=body.purpose)
        # Only after the check: an agreement not this participant's is a 404 before the vault is looked at.
        held = site.vault.payload(p, body.agreement_id) is not None
        result = UseOut(decision=outcome.decision, reasons=outcome.reasons, seq=0, entry_hash="", repeated=False,
                        effects=outcome.effects, dry_run=True, uses=outcome.uses, allowance=outcome.allowance,
                        data_held=held)
        return json_struct(result, status=200 if outcome.permitted else 403)

    async def use(request: web.Request) -> web.StreamResponse:
        body = USE_BODY(await body_of(request))
        p = participant(request)
        if body.dry_run:
            return await check_use(p, body)
        if body.use_id is msgspec.UNSET:
            raise BadRequest("useId is required: the application's own id for this use (a check that does not "
                             'count takes none: "dryRun": true)', path="$.useId")
        use_id, deliver = body.use_id, body.deliver is not False
        payload = site.vault.payload(p, body.agreement_id) if deliver else None
        if deliver and payload is None:
            from connector.errors import Conflict

            # Why: the agreement may not be used (404, or 409 naming a revocation), or its data is gone.
            raise Conflict(await site.usage.no_data_reason(p, body.agreement_id))
        # The data is sealed at rest: open it (key, header, first and last chunk) before the use is counted,
        # so that a damaged or cut file is an error (503, nothing counted) rather than a use.
        reader = None
        if payload is not None:
            reader = await asyncio.to_thread(site.vault.reader, p, payload, body.agreement_id)
        try:
            outcome = await site.usage.use(p, application=request[TOKEN].application,
                                           agreement_id=body.agreement_id, action=body.action, purpose=body.purpose,
                                           use_id=use_id)
            result = UseOut(decision=outcome.decision, reasons=outcome.reasons, seq=outcome.entry.seq,
                            entry_hash=outcome.entry.hash, repeated=outcome.repeated, effects=outcome.effects)
            if not outcome.permitted or reader is None or payload is None:
                return json_struct(result, status=200 if outcome.permitted else 403)
            headers = {"X-TDS-Decision": "permit", "X-TDS-Log-Seq": str(outcome.entry.seq),
                       "X-TDS-Log-Hash": outcome.entry.hash,
                       "Content-Type": mimetypes.guess_type(payload.name)[0] or "application/octet-stream",
                       "Content-Length": str(reader.size)}
            response = web.StreamResponse(headers=headers)
            await response.prepare(request)
            try:
                await vault.stream(reader, response)
            except StorageError as exc:
                # The headers are out: cutting the connection short of Content-Length is the signal left.
                log.warning("use aborted: the received data does not open", agreement=body.agreement_id,
                            error=exc.message)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
        finally:
            if reader is not None:
                reader.close()

    async def usage_summary(request: web.Request) -> web.Response:
        return web.json_response(await site.usage.summary(participant(request), path_param(request, "id")))

    async def usage_log(request: web.Request) -> web.Response:
        p = participant(request)
        agreement = await site.negotiations.agreement(p, path_param(request, "id"))
        entries, heads, ack = await site.usage.log_of(p, agreement.id)
        provider_document = agreement.did_documents.get(agreement.provider_did)
        out = UsageLogOut(entries=[msgspec.to_builtins(e) for e in entries], heads=heads,
                          did_document=p.did_document(), acknowledgement=ack, provider_did_document=provider_document,
                          role=str(agreement.role))
        return web.json_response(msgspec.to_builtins(out))

    async def revoke_agreement(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), TerminateIn)
        return web.json_response(await site.receipts.revoke(participant(request), path_param(request, "id"),
                                                            body.reason))

    async def usage_report(request: web.Request) -> web.Response:
        return web.json_response(await site.receipts.report(participant(request), path_param(request, "id")))

    async def get_agreement(request: web.Request) -> web.Response:
        p = participant(request)
        found = await site.negotiations.agreement(p, path_param(request, "id"))
        return web.json_response(agreement_out(found, (await site.usage.endings(p, found.id)).get(found.id, {})))

    # transfers -----------------------------------------------------------------------------------

    def transfer_out(record: TransferRecord) -> dict[str, Any]:
        return camel(record, drop=TRANSFER_HIDDEN)

    async def start_transfer(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), TransferStart)
        record = await site.transfers.start(participant(request), body.agreement_id, body.peer, push=body.push)
        return web.json_response(transfer_out(record), status=201)

    async def list_transfers(request: web.Request) -> web.Response:
        rows = await site.transfers.find(participant(request), states=_states(request, TransferState),
                                         limit=_limit(request))
        return web.json_response([transfer_out(r) for r in rows])

    async def get_transfer(request: web.Request) -> web.Response:
        p = participant(request)
        record = await _current_or_final(site.transfers, p, request)
        if record is None:
            raise NotFound("no such transfer")
        body = transfer_out(record)
        body["history"] = [msgspec.to_builtins(e) for e in await site.transfers.history(p, record.id)]
        return web.json_response(body)

    async def transfer_bundle(request: web.Request) -> web.Response:
        return web.json_response(await site.transfers.bundle(participant(request), path_param(request, "id")))

    def transfer_action(step: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            raw = await body_of(request)
            body = decode_body(raw, ReasonIn) if raw else ReasonIn()
            record = await site.transfers.act(participant(request), path_param(request, "id"), step, body.reason)
            return web.json_response(transfer_out(record))

        return handler

    R = Route
    moved = {409: "the transfer's state does not allow this step (already final, or a message of it is still "
                  "being delivered)"}
    return [
        R("POST", "/participants", admin_only(add_participant),
          "Host a new participant: its DID, keys and endpoints, and a first token (admin)", tag="admin",
          body=ParticipantIn, response=ParticipantAdded, status=201, admin=True,
          answers={409: "a participant with this name or DID is already hosted here"},
          example={"name": "sme-one", "legalName": "SME One Ltd.", "region": "CN-GD", "industry": "parts"}),
        R("GET", "/participants", admin_only(list_participants), "The participants this node hosts (admin)",
          tag="admin", response=list[ParticipantSummary], admin=True),
        R("DELETE", "/participants/{id}", admin_only(remove_participant),
          "Stop hosting a participant and delete all it has on this node: tokens, catalog, negotiations, "
          "agreements, transfers, usage log, keys, files and vault (admin; irreversible)", tag="admin",
          response=ParticipantRemoved, admin=True,
          answers={404: "no such participant", 409: "the node's own participant cannot be removed"}),
        R("POST", "/participants/{id}/suspend", admin_only(suspend_participant),
          "Suspend a participant: its DSP endpoints and self-description answer 403 (its DID document stays), its "
          "tokens are refused, its negotiations, transfers and receipts stop; nothing is deleted (admin)",
          tag="admin", body=SuspendIn, body_required=False, response=ParticipantState, admin=True,
          example={"reason": "contract with the host ended"},
          answers={404: "no such participant",
                   409: "already suspended, or the node's own participant (which cannot be suspended)"}),
        R("POST", "/participants/{id}/resume", admin_only(resume_participant),
          "Serve a suspended participant again; its processes resume where they stopped (admin)", tag="admin",
          response=ParticipantState, admin=True,
          answers={404: "no such participant", 409: "the participant is not suspended"}),
        R("POST", "/participants/{id}/keys/rotate", admin_only(rotate_keys_of),
          "Rotate a participant's signing and key-agreement keys: new keys are current at once, the old public "
          "keys stay in its DID document, the vault's data keys are re-wrapped (admin)", tag="admin",
          response=KeysRotated, admin=True,
          answers={404: "no such participant", 409: "the participant uses a did:key (its key is its DID)"}),
        R("POST", "/keys/rotate", rotate_own_keys,
          "Rotate this participant's signing and key-agreement keys (see the admin route of the same name)",
          tag="participant", response=KeysRotated,
          answers={409: "the participant uses a did:key (its key is its DID)"}),
        R("POST", "/tokens", create_token, "Create a management token for an application (shown once)",
          tag="tokens", body=TokenIn, response=TokenCreated, status=201, example={"application": "erp-sync"},
          answers={409: f"this participant already holds {MAX_TOKENS} active tokens"}),
        R("GET", "/tokens", list_tokens, "This participant's tokens (never their values)", tag="tokens",
          response=list[TokenInfo]),
        R("DELETE", "/tokens/{id}", revoke_token, "Revoke a token", tag="tokens", status=204),
        R("POST", "/metrics/tokens", admin_only(create_metrics_token),
          "Create a metrics token for a scraper: it reads the node's /metrics and nothing else (admin; shown once)",
          tag="admin", body=TokenIn, response=TokenCreated, status=201, admin=True,
          example={"application": "prometheus"},
          answers={409: f"the node already holds {MAX_TOKENS} active metrics tokens"}),
        R("GET", "/metrics/tokens", admin_only(list_metrics_tokens),
          "The node's metrics tokens (admin; never their values)", tag="admin", response=list[TokenInfo],
          admin=True),
        R("DELETE", "/metrics/tokens/{id}", admin_only(revoke_metrics_token), "Revoke a metrics token (admin)",
          tag="admin", status=204, admin=True, answers={404: "no such metrics token"}),
        R("GET", "/participant", get_participant, "The token's participant: DID, endpoints, key fingerprints",
          tag="participant", response=ParticipantOut),
        R("POST", "/peers/verify", verify_peer, "Handshake with a peer and verify its signed self-description",
          tag="peers", body=VerifyPeerRequest, response=VerifyPeerOut,
          example={"peer": "https://tds.partner.example"}),
        R("GET", "/peers", list_peers, "Peers this participant has verified", tag="peers", response=PeersOut),
        *entry_routes("assets", "asset", Asset, add_asset, AssetIn,
                      {"id": "qi-2026", "title": "Quality inspection 2026", "dataClass": "important"}),
        R("POST", "/assets/{id}/refresh", refresh_asset,
          "Fetch an asset again from the provider's HTTP backend (changed bytes: a new version and manifest)",
          tag="assets"),
        *entry_routes("policies", "policy", PolicyRecord, add_policy, PolicyIn,
                      {"id": "rnd", "policy": {"@type": "Set", "permission": [{"action": "use"}]}}),
        *entry_routes("contract-definitions", "contract definition", ContractDefinition, add_definition,
                      ContractDefinitionIn,
                      {"id": "qi", "accessPolicyId": "members", "contractPolicyId": "rnd", "assets": ["qi-2026"]}),
        R("POST", "/catalog/query", query_catalog, "A peer's catalog as this participant sees it (all pages)",
          tag="catalog", body=CatalogQuery, example={"peer": "https://tds.partner.example"}),
        R("POST", "/negotiations", start_negotiation, "Start a negotiation for a peer's offer (consumer)",
          tag="negotiations", body=NegotiationStart, response=NegotiationRecord, status=201,
          example={"peer": "https://tds.partner.example", "offerId": "qi:qi-2026:7c0363c0625f"},
          answers={409: "no peer named, and two providers in the catalog cache offer this id"}),
        R("GET", "/negotiations", list_negotiations, "Negotiations, newest first", tag="negotiations",
          response=list[NegotiationRecord], query={"state": states_query(NegotiationState), "limit": LIMIT}),
        R("GET", "/negotiations/{id}", get_negotiation, "One negotiation with its history", tag="negotiations",
          response=NegotiationOut, query={"wait": WAIT}),
        R("POST", "/negotiations/{id}/terminate", terminate_negotiation, "Terminate, telling the peer why",
          tag="negotiations", body=TerminateIn, response=NegotiationRecord,
          example={"reason": "budget withdrawn"},
          answers={409: "the negotiation is already final, or a message of it is still being delivered"}),
        R("POST", "/negotiations/{id}/accept", accept_negotiation, "Accept the provider's offer (consumer)",
          tag="negotiations", response=NegotiationRecord,
          answers={409: "the negotiation is not OFFERED, or this participant is not its consumer"}),
        R("GET", "/agreements", list_agreements,
          "Every agreement of this participant's with its state, newest first; a revoked one with the reason and "
          "when, and the last deletion of its data here", tag="agreements", response=list[AgreementOut],
          query={"state": states_query(AgreementState)}),
        R("GET", "/agreements/{id}", get_agreement, "One agreement, with its revocation and data deletion",
          tag="agreements", response=AgreementOut),
        R("POST", "/usage", use, "Use received data: decided by the agreement's policy, counted and logged "
          "before any byte is released; a deny (403) carries the reasons. \"deliver\": false is a counted use "
          "without delivery; \"dryRun\": true is a check that does not count (same decision and status, nothing "
          "counted, logged or released; no useId)", tag="usage", body=UseIn,
          response=UseOut, example={"agreementId": "urn:uuid:…", "useId": "report-2026-11-23-1",
                                    "action": "use", "purpose": "R&D"},
          answers={403: "denied by the policy (a UseOut with the reasons)", 404: "no such agreement",
                   409: "the agreement is revoked (the message names the reason and when) or not FINALIZED, its "
                        "usage log does not verify, or it has no data here to deliver (nothing counted)"},
          data_headers={"X-TDS-Decision": "permit", "X-TDS-Log-Seq": "the use's entry in the usage log",
                        "X-TDS-Log-Hash": "that entry's hash"}),
        R("GET", "/usage/{id}", usage_summary, "Uses of an agreement's data, allowance left, latest decisions",
          tag="usage"),
        R("GET", "/usage/{id}/log", usage_log, "The agreement's hash-chained usage log with its signed heads",
          tag="usage", response=UsageLogOut),
        R("POST", "/agreements/{id}/revoke", revoke_agreement,
          "Revoke an agreement (provider): the consumer's node blocks use, deletes the data and answers with a "
          "signed deletion receipt", tag="agreements", body=TerminateIn, example={"reason": "contract ended"},
          answers={409: "the agreement is not FINALIZED"}),
        R("GET", "/agreements/{id}/usage-report", usage_report,
          "The consumer's signed usage receipts (provider): uses per day and purpose, allowance left, anomalies",
          tag="agreements"),
        R("GET", "/agreements/{id}/evidence", agreement_evidence,
          "The agreement with both parties' proofs and DID documents, to check offline", tag="agreements",
          response=EvidenceOut),
        R("POST", "/transfers", start_transfer, "Pull the data of a finalized agreement (consumer)",
          tag="transfers", body=TransferStart, response=TransferOut, status=201,
          example={"agreementId": "urn:uuid:e8dc8655-44c2-46ef-b701-4cffdc2faa44"},
          answers={409: "the agreement is not FINALIZED",
                   413: "the request body is too large (node.max_request_bytes), or the participant's vault is "
                        "full (node.vault_quota_bytes)"}),
        R("GET", "/transfers", list_transfers, "Transfer processes, newest first", tag="transfers",
          response=list[TransferOut], query={"state": states_query(TransferState), "limit": LIMIT}),
        R("GET", "/transfers/{id}", get_transfer, "One transfer process with its progress and history",
          tag="transfers", response=TransferOut, query={"wait": WAIT}),
        R("GET", "/transfers/{id}/bundle", transfer_bundle,
          "The verified manifest, its signed envelope and the provider's DID document (consumer)",
          tag="transfers"),
        R("POST", "/transfers/{id}/suspend", transfer_action("suspend"), "Suspend, telling the peer why",
          tag="transfers", body=ReasonIn, body_required=False, response=TransferOut,
          example={"reason": "maintenance window"}, answers=moved),
        R("POST", "/transfers/{id}/resume", transfer_action("start"), "Resume a suspended transfer",
          tag="transfers", body=ReasonIn, body_required=False, response=TransferOut, example={"reason": ""},
          answers=moved),
        R("POST", "/transfers/{id}/terminate", transfer_action("terminate"), "Terminate, telling the peer why",
          tag="transfers", body=ReasonIn, body_required=False, response=TransferOut,
          example={"reason": "no longer needed"}, answers=moved),
        *credentials.management_routes(lambda: site.credentials, participant),
        *directory_routes.management_routes(lambda: site.gossip, participant),
        *search_routes.management_routes(lambda: site.search, participant),
        *sandbox_routes.management_routes(lambda: site.sandbox, participant),
        *statement_routes.management_routes(lambda: site.settlement, participant, site.participants),
    ]


def _wait_seconds(request: web.Request) -> float | None:
    """``?wait=SECONDS`` (long-poll until the record is final), cut to MAX_WAIT_S; None when absent."""
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        # ASCII only: float() also reads other scripts' digits, which no client needs to send.
        seconds = float(raw) if raw.isascii() else math.nan
    except ValueError:
        seconds = math.nan
    if math.isnan(seconds) or seconds < 0:
        raise BadRequest(f"wait must be a number of seconds, 0 or more (longer waits are cut to {MAX_WAIT_S})",
                         path="wait")
    return min(seconds, float(MAX_WAIT_S))


async def _current_or_final(shell: ProcessShell[R], p: ParticipantRuntime, request: web.Request) -> R | None:
    """The process named in the path: as it is now, or (``?wait=``) once final or the wait is over."""
    seconds = _wait_seconds(request)
    if seconds is not None:
        return await shell.wait(p.id, path_param(request, "id"), seconds)
    return await shell.load((p.id, path_param(request, "id")))


def _limit(request: web.Request) -> int:
    return query_int(request, "limit", default=100, low=1, high=MAX_LIMIT)
