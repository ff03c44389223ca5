"""Memberships and verified attributes: issuing, holding, presenting and verifying credentials.

Theory of operation
-------------------
Any participant can be an **issuer** (an industry alliance's node, a registry, a certification body): it signs
a credential of one kind (``connector.identity.claims``) about a holder's DID with its own key, gives it a
place in one of its revocation lists, stores it, and hands it over: delivered to the holder's node over a
signed request (``POST {holder DSP base}/tds/credentials``), or written to a file for the holder to import.
Holders may ask for one (``POST {issuer DSP base}/tds/credentials/requests``); such a request waits for the
issuer's operator to approve it (the credential is then issued and delivered) or reject it. Revoking sets the
credential's bit; the list is published signed at ``{participant URL}/credentials/status/N`` (no signature
needed to read it, so the issuer does not learn who checks what), re-signed on every revocation and whenever
half of its validity (``credentials.status_list_validity_s``) has passed.

A **holder** keeps the credentials about itself. One it imports or is delivered is checked first: about this
participant (before anything else, so junk costs nothing), signed by its issuer's key (the issuer's DID
resolved), valid now, not revoked; a delivered one must come in a request signed by its issuer. A delivered
credential is kept at once, as if imported (bounded: :data:`MAX_HELD` in all, :data:`MAX_HELD_PER_ISSUER`
from one issuer; ``tds credential remove`` drops one), unless its issuer is one the holder does not trust, the
holder did not ask it for one of that kind (``tds credential request``), and it already holds
:data:`MAX_HELD_UNTRUSTED` such credentials: then it is *offered*, kept aside, never presented, until the
holder's operator accepts it (held then, beyond that bound: the bound is against strangers, not the operator's
choices) or declines it. So strangers with fresh keys cannot hide a legitimate issuer's delivery, and the
issuer's answer says that the credential waits for the holder's acceptance. Offers are bounded
(:data:`MAX_OFFERED`, the oldest dropped first: :data:`MAX_OFFERED_PER_ISSUER` of one issuer, every did:web of
one host counting as one, and :data:`MAX_OFFERED_KEYS` of did:key issuers, who cost nothing to make and so push
out only each other's offers).

A **verifier** learns a peer's claims in the handshake (``connector.services.federation``), which carries
them both ways in one signed request and its answer. The caller sends, beside its self-description, a fresh
challenge of its own (:meth:`CredentialService.opening`); the peer answers with its presentation for that
challenge and the caller's DID, and with a challenge for the caller (:meth:`CredentialService.on_handshake`).
The caller answers that challenge with its own presentation at ``…/tds/credentials/presentation`` — once:
every answer hands the caller a fresh challenge, kept for its next handshake with that peer
(:data:`CHALLENGE_LIFETIME`), where its presentation then travels in the handshake request itself (the
server-provided nonce of OAuth DPoP, RFC 9449 §8, works the same way). So each side learns the other's
claims, and every presentation is bound to one verifier (``domain``: its DID), one single-use challenge that
verifier issued, and a short time (``credentials.presentation_max_age_s``): it cannot be replayed to another
node or later. The presentation's holder must be the peer that signed the request. A challenge that is no
longer open (the peer restarted, or it expired) costs one more request, as on first contact; a peer that
answers with its self-description alone is handshaken with as before, without claims; nodes that hold no
credentials and trust no issuer send no challenge.

Verifying resolves only trusted issuers (a peer cannot make the node fetch DID documents from hosts of its
choosing) and fetches the status lists of the credentials that may count, through the guarded outbound
client, bounded in size and time, cached per URL for ``credentials.status_cache_s`` (or less, as the list
says). A list that cannot be fetched or read leaves the credential's status unknown, and a credential of
unknown status does not count: it is reported with the reason (``connector.identity.trust``). The counted
claims are kept per (participant, peer) and answered by :meth:`CredentialService.claims_of` until a claim
runs out, the status lists are due again (then they are fetched again and the claims counted again), or the
trust list changes.

The trust list of a participant is the node's ``[[trust]]`` entries (``tds.toml``, for every participant it
hosts) and its own (``tds trust add``). Every row is the participant's own: one hosted participant never
sees, revokes or approves another's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from connector import jsonbound
from connector.config import ISSUER_DID_RE, MAX_TRUSTED_ISSUERS, CredentialsSection, TrustEntry
from connector.errors import BadRequest, Conflict, NotFound, PeerError, TdsError
from connector.identity import did as dids
from connector.identity import status_list, trust, vc
from connector.identity.claims import KIND_NAMES, NAME_OF_KIND, ClaimError, Claims, Kind, from_subject
from connector.identity.credentials import utc_text
from connector.identity.resolver import proof_key_id
from connector.identity.status_list import Bitstring, Status, StatusList
from connector.identity.trust import NotCounted, PeerClaims, TrustedIssuer, TrustList
from connector.identity.vc import Check, CredentialError, PresentationError, PresentationResult, VerifiedCredential
from connector.logging import get_logger
from connector.services.ports import CredentialClient, Resolver
from connector.store.credentials import (
    CredentialRepository,
    CredentialRequest,
    DeliveryBounds,
    HeldCredential,
    IssuedCredential,
    OfferedCredential,
)
from connector.store.credentials import TrustedIssuer as TrustRow

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime

log = get_logger(component="credentials")

#: Credentials a participant holds, and from one issuer.
MAX_HELD = 64
MAX_HELD_PER_ISSUER = 8
#: Of those, credentials by issuers the holder does not trust: a stranger with fresh keys can deliver
#: credentials about anyone, and must not fill the holder's store (nor its presentations, which show the
#: credentials of trusted issuers first).
MAX_HELD_UNTRUSTED = 16
#: Beyond those, credentials offered to a participant (waiting for its operator), of one issuer (every did:web
#: of one host counts as one), and of did:key issuers (at most this share of the offers).
MAX_OFFERED = 64
MAX_OFFERED_PER_ISSUER = 8
MAX_OFFERED_KEYS = 16
#: Requests a participant sent to issuers that are remembered (the oldest forgotten first): their delivery is
#: accepted.
MAX_ASKED = 64
#: Requests from holders waiting for this participant's decision, and from one holder.
MAX_PENDING = 1000
MAX_PENDING_PER_REQUESTER = 5
#: Challenges handed out and not yet answered (node-wide), and to one peer of one participant (a new one
#: pushes the oldest out: a peer whose challenge went must show its presentation with one more request).
MAX_CHALLENGES = 10_000
MAX_CHALLENGES_PER_PEER = 4
#: How long a challenge handed to a peer stays open: until the peer's next handshake, in which it presents
#: (how old the presentation itself may be is ``credentials.presentation_max_age_s``).
CHALLENGE_LIFETIME = timedelta(hours=1)
#: Peers whose claims are kept (node-wide; the least recently used go first).
MAX_KNOWN_PEERS = 10_000
#: Status lists kept (node-wide), and fetched for one presentation (the others' status stays unknown).
MAX_CACHED_LISTS = 1000
MAX_LISTS_PER_PRESENTATION = 16
#: The largest status list credential read: the largest list (``status_list.MAX_LIST_BYTES``) encoded, plus
#: room for the credential around it.
MAX_STATUS_LIST_BYTES = status_list.max_encoded_length(status_list.MAX_LIST_BYTES) + 16 * 1024
#: What the issuer's published list tells verifiers about how long its answer holds (§2.2 ``ttl``).
STATUS_LIST_TTL = timedelta(minutes=5)
#: Where a participant's status lists are published, under its URL.
STATUS_PATH = "credentials/status"
#: The peer routes, under a participant's DSP base.
DELIVERY_PATH = "/tds/credentials"
REQUESTS_PATH = "/tds/credentials/requests"
PRESENTATION_PATH = "/tds/credentials/presentation"

KindName = Literal["membership", "legal-entity", "region", "certification"]
Challenge = Annotated[str, msgspec.Meta(min_length=16, max_length=vc.MAX_CHALLENGE, pattern=r"^[A-Za-z0-9_-]+$")]
_DID_PATTERN = r"^did:[a-z0-9]+:[^\s#?]+$"
Did = Annotated[str, msgspec.Meta(max_length=vc.MAX_DID, pattern=_DID_PATTERN)]

#: The claim fields of each kind, as the management API and the request route name them (camelCase).
CLAIM_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.MEMBERSHIP: ("dataSpace", "role"),
    Kind.LEGAL_ENTITY: ("legalName", "unifiedSocialCreditCode", "leiCode"),
    Kind.REGION: ("region",),
    Kind.CERTIFICATION: ("certificationLevel", "softwareName", "softwareVersion"),
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_challenge() -> str:
    return secrets.token_urlsafe(32)


def claims_from(kind: str, given: Mapping[str, Any]) -> Claims:
    """The claims of a credential of *kind* (a short name) from the fields *given* (camelCase; None: not
    given). A field of another kind, or a claim that breaks its format, is a :class:`BadRequest` naming it."""
    if kind not in KIND_NAMES:
        raise BadRequest(f"unknown kind {kind[:40]!r} ({', '.join(KIND_NAMES)})", path="kind")
    found = KIND_NAMES[kind]
    fields = {k: v for k, v in given.items() if v is not None}
    for name in fields:
        if name not in CLAIM_FIELDS[found]:
            raise BadRequest(f"{name} is not a claim of a {kind} credential (its claims: "
                             f"{', '.join(CLAIM_FIELDS[found])})", path=name)
    try:
        return from_subject(found, fields)
    except ClaimError as exc:
        raise BadRequest(f"{kind}: {exc}", path="claims") from exc


def issuer_origin(did: str) -> str:
    """Who stands behind the issuer *did*, for the bound on its offers: a did:key is its own, and every did:web
    of one host is one (whoever serves the host can make as many of them as it likes, on any port)."""
    if did.startswith("did:web:"):
        return "did:web:" + did.split(":")[2].lower().split("%3a")[0]
    return did


def delivery_answer(kept: HeldCredential | OfferedCredential) -> dict[str, Any]:
    """What the holder's node answers the issuer that delivered a credential: held, or offered."""
    if isinstance(kept, OfferedCredential):
        return {"id": kept.id, "state": "offered", "kept": False,
                "message": "offered to the holder: it waits for its operator's acceptance (the holder does not "
                           "trust this issuer, did not ask it for this credential and holds as many credentials "
                           "of issuers it does not trust as it keeps unasked)"}
    return {"id": kept.id, "state": "held", "kept": True}


def request_answer(issuer: ParticipantRuntime, request: CredentialRequest) -> dict[str, Any]:
    """What the issuer's node answers a holder's request: its id and state, and the issuer's DID (under which
    the holder remembers the request, so that the credential delivered for it is held)."""
    return {"id": request.id, "state": request.state, "issuer": issuer.did}


def _delivery_bounds() -> DeliveryBounds:
    return DeliveryBounds(held=MAX_HELD, held_per_issuer=MAX_HELD_PER_ISSUER, held_untrusted=MAX_HELD_UNTRUSTED,
                          offered=MAX_OFFERED, offered_per_issuer=MAX_OFFERED_PER_ISSUER,
                          offered_keys=MAX_OFFERED_KEYS)


def claims_summary(claims: PeerClaims) -> dict[str, Any]:
    """A peer's claims as the management API and the peer routes show them: what counts, and what not and why."""
    counted: list[dict[str, Any]] = []
    for claim in (*claims.memberships, claims.legal_entity, claims.region, *claims.certifications):
        if claim is None:
            continue
        counted.append({"kind": NAME_OF_KIND[claim.value.kind], "issuer": claim.issuer,
                        "credentialId": claim.credential_id, "until": utc_text(claim.until),
                        "claims": msgspec.to_builtins(claim.value)})
    return {
        "holder": claims.holder,
        "counted": counted,
        "notCounted": [{"kind": NAME_OF_KIND.get(n.kind) if n.kind is not None else None, "issuer": n.issuer,
                        "credentialId": n.credential_id, "reason": n.reason} for n in claims.not_counted],
        "until": utc_text(claims.until) if claims.until is not None else None,
    }


class _HandshakeIn(msgspec.Struct, frozen=True):
    """The credentials in a handshake request, beside the caller's self-description."""

    challenge: Challenge | None = None
    presentation: dict[str, Any] | None = None


class _HandshakeOut(msgspec.Struct, frozen=True, rename="camel"):
    """The credentials in a handshake's answer, beside the peer's self-description."""

    challenge: Challenge | None = None
    presentation: dict[str, Any] | None = None
    presentation_result: dict[str, Any] | None = None


@dataclass(frozen=True)
class Opening:
    """What a participant adds to a handshake it starts (:meth:`CredentialService.opening`)."""

    #: The fields for the handshake request.
    fields: dict[str, Any]
    #: The challenge it hands the peer, which the peer's presentation must answer.
    challenge: str
    #: The DID the presentation in *fields* was made for (None: none is in it).
    shown_to: str | None
    #: Whether it holds credentials to show.
    holds: bool


class _PresentationIn(msgspec.Struct, frozen=True):
    challenge: Challenge
    presentation: dict[str, Any]


class _DeliveryIn(msgspec.Struct, frozen=True):
    credential: dict[str, Any]


class _RequestIn(msgspec.Struct, frozen=True):
    kind: KindName
    claims: dict[str, Annotated[str, msgspec.Meta(max_length=256)]]


def _read(body: Any, kind: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{what}: {exc}") from exc


class _Unreadable(Exception):
    """A status list that could not be fetched or read; the reason goes into the credential's status."""


@dataclass
class _Challenge:
    participant_id: str
    peer: str
    expires_at: datetime


@dataclass
class _Handed:
    """A challenge a peer handed a participant, for the participant's presentation in its next handshake."""

    peer: str
    challenge: str
    expires_at: datetime


@dataclass
class _Known:
    """A peer's verified presentation and what it counts for now."""

    result: PresentationResult
    claims: PeerClaims
    #: When the claims are to be counted again (a status list due, a claim running out); None: never.
    refresh_at: datetime | None
    trust_version: int


@dataclass
class _Published:
    document: dict[str, Any]
    resign_at: datetime
    #: The list's bits it was signed from.
    encoded: str = ""


class CredentialService:
    """Issues, holds, presents and verifies credentials for the hosted participants.

    *repo* keeps the rows; *client* is the outbound client (signed requests, bounded status list fetches);
    *resolver* resolves DIDs; *dsp_base_of* finds a peer's DSP base from its DID or URL
    (``FederationService.dsp_base_of``); *settings* is ``[credentials]`` and *trust* the node's ``[[trust]]``.
    """

    def __init__(
        self, repo: CredentialRepository, client: CredentialClient, resolver: Resolver, *,
        dsp_base_of: Callable[[str], Awaitable[str]], settings: CredentialsSection | None = None,
        trust: Sequence[TrustEntry] = (), clock: Callable[[], datetime] = _utc_now,
        new_challenge: Callable[[], str] = _new_challenge,
    ) -> None:
        self.repo = repo
        self.client = client
        self.resolver = resolver
        self.dsp_base_of = dsp_base_of
        self.settings = settings or CredentialsSection()
        self.node_trust = tuple(trust)
        self.clock = clock
        self.new_challenge = new_challenge
        self.max_age = timedelta(seconds=self.settings.presentation_max_age_s)
        self._challenges: OrderedDict[str, _Challenge] = OrderedDict()
        self._per_peer: dict[tuple[str, str], deque[str]] = {}
        self._handed: OrderedDict[tuple[str, str], _Handed] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[bytes]] = {}
        self._known: OrderedDict[tuple[str, str], _Known] = OrderedDict()
        self._lists: OrderedDict[str, tuple[StatusList, datetime]] = OrderedDict()
        self._trust: dict[str, TrustList] = {}
        self._trust_versions: dict[str, int] = {}
        self._published: dict[tuple[str, int], _Published] = {}
        self._publishing: dict[str, asyncio.Lock] = {}

    def forget(self, participant_id: str) -> None:
        """Drop what is kept in memory for a participant that leaves the node."""
        for peer in [k for k in self._known if k[0] == participant_id]:
            del self._known[peer]
        for value in [v for v, c in self._challenges.items() if c.participant_id == participant_id]:
            self._drop_challenge(value)
        for key in [k for k in self._handed if k[0] == participant_id]:
            del self._handed[key]
        for key in [k for k in self._published if k[0] == participant_id]:
            del self._published[key]
        self._trust.pop(participant_id, None)
        self._publishing.pop(participant_id, None)
        self.repo.forget(participant_id)

    # ---------------------------------------------------------------------------------------------------
    # Issuer

    def status_list_url(self, participant: ParticipantRuntime, list_id: int) -> str:
        return f"{participant.base_url}/{STATUS_PATH}/{list_id}"

    async def issue(self, participant: ParticipantRuntime, holder: str, claims: Claims, *,
                    valid_until: datetime | None = None, credential_id: str | None = None) -> IssuedCredential:
        """Issue a credential stating *claims* about *holder*, revocable through this participant's status list,
        and store it (not delivered: :meth:`deliver`)."""
        now = self.clock()
        until = valid_until or now + timedelta(days=self.settings.credential_validity_days)
        if len(holder) > vc.MAX_DID or not ISSUER_DID_RE.match(holder):
            raise BadRequest("holder must be a did:web or did:key", path="holder")
        if until <= now + timedelta(seconds=1):
            raise BadRequest(f"validUntil {utc_text(until)} is not in the future", path="validUntil")
        credential_id = credential_id or f"urn:uuid:{uuid.uuid4()}"
        list_id, index = await self.repo.allocate_status(participant.id, utc_text(now))
        entry = vc.StatusEntry(self.status_list_url(participant, list_id), index)
        try:
            document = vc.issue(claims, holder=holder, signer=participant.signer, credential_id=credential_id,
                                now=now, valid_until=until, status=entry)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        record = IssuedCredential(id=credential_id, kind=NAME_OF_KIND[claims.kind], holder=holder,
                                  status_list=list_id, status_index=index, valid_until=utc_text(until),
                                  issued_at=utc_text(now), document=document)
        await self.repo.add_issued(participant.id, record)
        log.info("credential issued", participant=participant.name, credential=credential_id, kind=record.kind,
                 holder=holder, status=f"{list_id}/{index}")
        return record

    async def issued(self, participant: ParticipantRuntime) -> list[IssuedCredential]:
        return await self.repo.issued(participant.id)

    async def issued_one(self, participant: ParticipantRuntime, credential_id: str) -> IssuedCredential:
        found = await self.repo.issued_one(participant.id, credential_id)
        if found is None:
            raise NotFound("this participant issued no such credential")
        return found

    async def deliver(self, participant: ParticipantRuntime, credential_id: str) -> IssuedCredential:
        """Hand an issued credential to its holder's node over a request signed by this participant; a
        :class:`PeerError` naming why if that fails (the credential stays issued; the reason is kept)."""
        record = await self.issued_one(participant, credential_id)
        if record.revoked_at is not None:
            raise Conflict(f"credential {credential_id} was revoked; it is not delivered")
        try:
            dsp = await self.dsp_base_of(record.holder)
            answer = await self.client.request("POST", f"{dsp}{DELIVERY_PATH}", signer=participant.signer,
                                               json_body={"credential": record.document})
            if answer.status not in (200, 201):
                raise PeerError(f"{dsp} refused the credential with {answer.status}: {_reason(answer.body)}")
        except TdsError as exc:
            await self.repo.set_delivery(participant.id, credential_id, delivered_at=None, error=exc.message)
            log.info("credential not delivered", participant=participant.name, credential=credential_id,
                     holder=record.holder, reason=exc.message)
            raise PeerError(f"credential {credential_id} is issued but was not delivered to {record.holder}: "
                            f"{exc.message}") from exc
        now = utc_text(self.clock())
        kept_as = _delivered_as(answer.body)
        await self.repo.set_delivery(participant.id, credential_id, delivered_at=now, error="", delivered_as=kept_as)
        log.info("credential delivered", participant=participant.name, credential=credential_id, holder=record.holder,
                 kept_as=kept_as)
        return msgspec.structs.replace(record, delivered_at=now, delivery_error="", delivered_as=kept_as)

    async def revoke(self, participant: ParticipantRuntime, credential_id: str) -> IssuedCredential:
        """Set the credential's bit, then re-sign and publish its status list."""
        record = await self.repo.revoke(participant.id, credential_id, utc_text(self.clock()))
        if record is None:
            raise NotFound("this participant issued no such credential")
        await self.status_list_document(participant, record.status_list, fresh=True)
        log.info("credential revoked", participant=participant.name, credential=credential_id, holder=record.holder)
        return record

    async def status_list_document(self, participant: ParticipantRuntime, list_id: int, *,
                                   fresh: bool = False) -> dict[str, Any]:
        """The signed status list credential *list_id* as published (re-signed when half of its validity has
        passed, or *fresh*)."""
        key = (participant.id, list_id)
        lock = self._publishing.setdefault(participant.id, asyncio.Lock())
        async with lock:
            now = self.clock()
            published = self._published.get(key)
            shared = self.repo.store.postgres
            if published is not None and not fresh and now < published.resign_at and not shared:
                return published.document
            row = await self.repo.status_list(participant.id, list_id)
            if row is None:
                raise NotFound("no such status list")
            # On a store several processes share, another may have revoked meanwhile: the list as stored decides.
            if published is not None and not fresh and now < published.resign_at and \
                    published.encoded == row.encoded_list:
                return published.document
            validity = timedelta(seconds=self.settings.status_list_validity_s)
            document = status_list.issue_status_list(
                Bitstring.decode(row.encoded_list), url=self.status_list_url(participant, list_id),
                signer=participant.signer, now=now, valid_until=now + validity, purpose=row.purpose,
                ttl=STATUS_LIST_TTL)
            self._published[key] = _Published(document, now + validity / 2, row.encoded_list)
            return document

    async def receive_request(self, participant: ParticipantRuntime, caller: str, body: Any) -> CredentialRequest:
        """A holder (*caller*, who signed the request) asks for a credential about itself; it waits as pending.
        The answer to the holder: :func:`request_answer`."""
        asked = _read(body, _RequestIn, "credential request")
        claims = claims_from(asked.kind, asked.claims)
        if len(caller) > vc.MAX_DID or not ISSUER_DID_RE.match(caller):
            raise BadRequest("credentials are issued to did:web and did:key holders only")
        request = CredentialRequest(id=f"urn:uuid:{uuid.uuid4()}", requester=caller, kind=asked.kind,
                                    claims=msgspec.to_builtins(claims), state="pending",
                                    received_at=utc_text(self.clock()))
        await self.repo.add_request(participant.id, request, most_pending=MAX_PENDING,
                                    most_per_requester=MAX_PENDING_PER_REQUESTER)
        log.info("credential requested", participant=participant.name, request=request.id, requester=caller,
                 kind=asked.kind)
        return request

    async def requests(self, participant: ParticipantRuntime, *, state: str | None = "pending"
                       ) -> list[CredentialRequest]:
        return await self.repo.requests(participant.id, state=state)

    async def approve(self, participant: ParticipantRuntime, request_id: str, *,
                      valid_until: datetime | None = None) -> IssuedCredential:
        """Issue the credential a pending request asks for and deliver it; a failed delivery is kept in the
        record's ``delivery_error`` (the approval stands)."""
        request = await self._pending(participant, request_id)
        claims = claims_from(request.kind, request.claims)
        credential_id = f"urn:uuid:{uuid.uuid4()}"
        if not await self.repo.decide_request(participant.id, request_id, state="approved",
                                              now=utc_text(self.clock()), credential_id=credential_id):
            raise Conflict(f"request {request_id} was decided meanwhile")
        record = await self.issue(participant, request.requester, claims, valid_until=valid_until,
                                  credential_id=credential_id)
        try:
            return await self.deliver(participant, record.id)
        except PeerError as exc:
            return msgspec.structs.replace(record, delivery_error=exc.message)

    async def reject(self, participant: ParticipantRuntime, request_id: str, reason: str) -> CredentialRequest:
        request = await self._pending(participant, request_id)
        now = utc_text(self.clock())
        if not await self.repo.decide_request(participant.id, request_id, state="rejected", now=now, reason=reason):
            raise Conflict(f"request {request_id} was decided meanwhile")
        return msgspec.structs.replace(request, state="rejected", reason=reason, decided_at=now)

    async def _pending(self, participant: ParticipantRuntime, request_id: str) -> CredentialRequest:
        request = await self.repo.request(participant.id, request_id)
        if request is None:
            raise NotFound("this participant has no such credential request")
        if request.state != "pending":
            raise Conflict(f"request {request_id} is {request.state} already")
        return request

    # ---------------------------------------------------------------------------------------------------
    # Holder

    async def import_credential(self, participant: ParticipantRuntime, document: Any, *,
                                source: str = "imported", issuer: str | None = None) -> HeldCredential:
        """Check a credential about this participant and keep it; a :class:`BadRequest` naming the check that
        failed otherwise (wrong-holder, signature, expired, not-yet-valid, revoked, …). The operator's own
        choice: not bound by :data:`MAX_HELD_UNTRUSTED` (deliveries are: :meth:`receive_credential`).

        *issuer*: the DID that signed the request delivering it, which must be the credential's issuer."""
        record = await self._checked(participant, document, source=source, issuer=issuer)
        await self.repo.add_held(participant.id, record, most=MAX_HELD, most_per_issuer=MAX_HELD_PER_ISSUER)
        log.info("credential kept", participant=participant.name, credential=record.id, kind=record.kind,
                 issuer=record.issuer, source=source)
        return record

    async def _checked(self, participant: ParticipantRuntime, document: Any, *, source: str,
                       issuer: str | None) -> HeldCredential:
        """The credential *document* as it would be held, once checked (see :meth:`import_credential`)."""
        subject = document.get("credentialSubject") if isinstance(document, dict) else None
        if not isinstance(subject, dict) or subject.get("id") != participant.did:
            raise _refused(Check.WRONG_HOLDER, f"the credential is not about this participant ({participant.did})")
        named = document.get("issuer")
        named = named.get("id") if isinstance(named, dict) else named
        if not isinstance(named, str) or len(named) > vc.MAX_DID or not ISSUER_DID_RE.match(named):
            raise _refused(Check.MALFORMED, "issuer is not a did:web or did:key")
        if issuer is not None and named != issuer:
            raise _refused(Check.ISSUER_KEY, f"the credential was issued by {named}, not by {issuer}, who sent it")
        try:
            issuer_document = await self.resolver.resolve(named, key_id=proof_key_id(document))
        except dids.DidError as exc:
            raise _refused(Check.ISSUER_KEY, f"{named}: {exc}") from None
        except TdsError as exc:
            raise PeerError(f"the DID document of the issuer {named} could not be read: {exc.message}") from exc
        now = self.clock()
        try:
            verified = vc.verify_credential(document, issuer_document, now=now)
        except CredentialError as exc:
            raise _refused(exc.check, exc.detail) from None
        if verified.status:
            urls = {entry.list_url for entry in verified.status}
            lists, failures = await self._status_lists(urls, TrustList({named: {verified.kind}}), now)
            status = _status_of(lists, failures, now)(verified)
            if status.state in (status_list.StatusState.REVOKED, status_list.StatusState.SUSPENDED):
                raise _refused(Check.STATUS_ENTRY, f"the credential is {status.state}: {status.reason}")
            if status.state is status_list.StatusState.UNKNOWN:
                log.info("credential kept with its status unknown", participant=participant.name,
                         credential=verified.id, reason=status.reason)
        return HeldCredential(id=verified.id, kind=NAME_OF_KIND[verified.kind], issuer=named,
                              valid_until=utc_text(verified.valid_until), source=source, received_at=utc_text(now),
                              document=document)

    async def receive_credential(self, participant: ParticipantRuntime, caller: str, body: Any
                                 ) -> HeldCredential | OfferedCredential:
        """A credential delivered by its issuer (*caller*, who signed the request): checked, then held at once,
        or offered (see the module's theory of operation); :func:`delivery_answer` is the issuer's answer."""
        delivered = _read(body, _DeliveryIn, "credential delivery")
        record = await self._checked(participant, delivered.credential, source="delivered", issuer=caller)
        trusted = (await self.trust_of(participant.id)).issuers
        kept = await self.repo.keep_delivered(participant.id, record, origin=issuer_origin(record.issuer),
                                              trusted=trusted, bounds=_delivery_bounds(), now=record.received_at)
        if kept == "offered":
            log.info("credential offered", participant=participant.name, credential=record.id, kind=record.kind,
                     issuer=record.issuer)
            return OfferedCredential(id=record.id, kind=record.kind, issuer=record.issuer,
                                     origin=issuer_origin(record.issuer), valid_until=record.valid_until,
                                     received_at=record.received_at, document=record.document)
        log.info("credential kept", participant=participant.name, credential=record.id, kind=record.kind,
                 issuer=record.issuer, source=record.source)
        return record

    async def held(self, participant: ParticipantRuntime) -> list[HeldCredential]:
        return await self.repo.held(participant.id)

    async def offered(self, participant: ParticipantRuntime) -> list[OfferedCredential]:
        """The credentials offered to *participant*, waiting for its operator, newest first (never presented)."""
        return await self.repo.offered(participant.id)

    async def offered_one(self, participant: ParticipantRuntime, credential_id: str) -> OfferedCredential:
        found = await self.repo.offered_one(participant.id, credential_id)
        if found is None:
            raise NotFound("this participant has no such offered credential")
        return found

    async def accept_offered(self, participant: ParticipantRuntime, credential_id: str) -> HeldCredential:
        """Hold an offered credential, checked again (it may have expired or been revoked meanwhile). The
        operator's choice: held even beyond :data:`MAX_HELD_UNTRUSTED` (not beyond :data:`MAX_HELD` or
        :data:`MAX_HELD_PER_ISSUER`: a 409 asks to remove one first)."""
        offer = await self.offered_one(participant, credential_id)
        try:
            record = await self._checked(participant, offer.document, source="delivered", issuer=offer.issuer)
        except BadRequest as exc:
            raise BadRequest(f"{exc.message} (decline it: tds credential decline)", path=exc.path) from None
        if not await self.repo.accept_offered(participant.id, record, most=MAX_HELD,
                                              most_per_issuer=MAX_HELD_PER_ISSUER):
            raise NotFound("this participant has no such offered credential")
        log.info("offered credential accepted", participant=participant.name, credential=record.id,
                 kind=record.kind, issuer=record.issuer)
        return record

    async def decline_offered(self, participant: ParticipantRuntime, credential_id: str) -> None:
        if not await self.repo.decline_offered(participant.id, credential_id):
            raise NotFound("this participant has no such offered credential")
        log.info("offered credential declined", participant=participant.name, credential=credential_id)

    async def holds_any(self, participant: ParticipantRuntime) -> bool:
        """Whether *participant* holds a credential it would present now (one not expired): a local read."""
        now = utc_text(self.clock())
        return any(c.valid_until > now for c in await self.repo.held(participant.id))

    async def held_one(self, participant: ParticipantRuntime, credential_id: str) -> HeldCredential:
        found = await self.repo.held_one(participant.id, credential_id)
        if found is None:
            raise NotFound("this participant holds no such credential")
        return found

    async def remove_held(self, participant: ParticipantRuntime, credential_id: str) -> None:
        if not await self.repo.remove_held(participant.id, credential_id):
            raise NotFound("this participant holds no such credential")

    async def request_credential(self, participant: ParticipantRuntime, issuer: str, kind: str,
                                 claims: Claims) -> dict[str, Any]:
        """Ask *issuer* (a DID or URL) for a credential of *kind* about this participant, over a signed request;
        the issuer's operator sees it pending. Returns the issuer's request id and state.

        The request is remembered under the issuer's DID (*issuer* if it is one, else the DID the issuer's node
        answers with): the credential that issuer delivers of that kind is held, never only offered."""
        dsp = await self.dsp_base_of(issuer)
        answer = await self.client.request("POST", f"{dsp}{REQUESTS_PATH}", signer=participant.signer,
                                           json_body={"kind": kind, "claims": msgspec.to_builtins(claims)})
        if answer.status not in (200, 201):
            raise PeerError(f"{dsp} refused the request with {answer.status}: {_reason(answer.body)}")
        body = answer.json()
        request_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or len(request_id) > 200:
            raise PeerError(f"{dsp} answered the request without an id")
        issuer_did = issuer.strip() if issuer.strip().startswith("did:") else body.get("issuer")
        if isinstance(issuer_did, str) and len(issuer_did) <= vc.MAX_DID and ISSUER_DID_RE.match(issuer_did):
            await self.repo.add_asked(participant.id, issuer=issuer_did, request_id=request_id, kind=kind,
                                      now=utc_text(self.clock()), most=MAX_ASKED)
        log.info("credential requested from an issuer", participant=participant.name, issuer=issuer, kind=kind,
                 request=request_id)
        return {"id": request_id, "state": str(body.get("state", "pending"))[:40], "issuer": dsp}

    async def presentation_for(self, participant: ParticipantRuntime, *, domain: str, challenge: str
                               ) -> dict[str, Any]:
        """This participant's presentation for the verifier *domain* answering *challenge*: its credentials
        that are valid now (at most ``vc.MAX_CREDENTIALS``), those of issuers it trusts first, newest first:
        credentials a stranger delivered never push out those of the issuers it chose."""
        return self._present(participant, await self._presentable(participant), domain=domain, challenge=challenge)

    async def _presentable(self, participant: ParticipantRuntime) -> list[dict[str, Any]]:
        """The credentials *participant* shows (see :meth:`presentation_for`), in order."""
        now = utc_text(self.clock())
        trusted = (await self.trust_of(participant.id)).issuers
        valid = [c for c in await self.repo.held(participant.id) if c.valid_until > now]
        shown = [c.document for c in sorted(valid, key=lambda c: c.issuer not in trusted)]  # stable: newest first
        return shown[:vc.MAX_CREDENTIALS]

    def _present(self, participant: ParticipantRuntime, shown: list[dict[str, Any]], *, domain: str,
                 challenge: str) -> dict[str, Any]:
        try:
            return vc.present(shown, holder=participant.signer, domain=domain, challenge=challenge, now=self.clock())
        except ValueError as exc:  # a verifier DID or challenge out of bounds
            raise BadRequest(f"no presentation for {domain[:80]!r}: {exc}") from exc

    # ---------------------------------------------------------------------------------------------------
    # Verifier: challenges, presentations, claims

    def challenge(self, participant_id: str, peer: str) -> str:
        """A fresh single-use challenge for *peer* to answer with a presentation to *participant_id*."""
        now = self.clock()
        while self._challenges:
            value, oldest = next(iter(self._challenges.items()))
            if oldest.expires_at > now:
                break
            self._drop_challenge(value)
        mine = self._per_peer.get((participant_id, peer))
        if mine is not None and len(mine) >= MAX_CHALLENGES_PER_PEER:
            self._drop_challenge(mine[0])
        while len(self._challenges) >= MAX_CHALLENGES:
            self._drop_challenge(next(iter(self._challenges)))
        value = self.new_challenge()
        self._challenges[value] = _Challenge(participant_id, peer, now + CHALLENGE_LIFETIME)
        self._per_peer.setdefault((participant_id, peer), deque()).append(value)
        return value

    def _drop_challenge(self, value: str) -> _Challenge | None:
        found = self._challenges.pop(value, None)
        if found is not None:
            key = (found.participant_id, found.peer)
            mine = self._per_peer.get(key)
            if mine is not None:
                mine.remove(value)
                if not mine:
                    del self._per_peer[key]
        return found

    def _take_challenge(self, participant_id: str, peer: str, value: str) -> None:
        """Use up the challenge *value*, which must have been handed to *peer* by *participant_id* and be open."""
        found = self._drop_challenge(value)
        if found is None:
            raise PresentationError(Check.CHALLENGE, "the challenge is unknown or was answered already")
        if (found.participant_id, found.peer) != (participant_id, peer):
            raise PresentationError(Check.CHALLENGE, "the challenge was handed to another peer")
        if self.clock() > found.expires_at:
            raise PresentationError(Check.TOO_OLD, f"the challenge expired at {utc_text(found.expires_at)}")

    async def on_presentation(self, participant: ParticipantRuntime, caller: str, body: Any) -> dict[str, Any]:
        """``POST …/tds/credentials/presentation`` from *caller*: its presentation, answering the challenge this
        participant handed it in a handshake's answer. Answers with what counts and a challenge for the caller's
        next presentation; a presentation refused as a whole is a 400 naming the check (and the caller then has
        no claims here)."""
        given = _read(body, _PresentationIn, "presentation")
        try:
            claims = await self._take_presentation(participant, caller, given.presentation, given.challenge)
        except PresentationError as exc:
            raise BadRequest(f"presentation refused: {exc}", path="presentation") from None
        return {**claims_summary(claims), "nextChallenge": self.challenge(participant.id, caller)}

    async def _take_presentation(self, participant: ParticipantRuntime, caller: str, presentation: Any,
                                 challenge: str) -> PeerClaims:
        """Use up *challenge* (handed to *caller*), verify *caller*'s presentation answering it and count it; a
        refusal is remembered as the caller's claims here, logged and raised."""
        try:
            self._take_challenge(participant.id, caller, challenge)
            return await self.verify(participant.id, participant.did, caller, presentation, challenge=challenge)
        except PresentationError as exc:
            self._remember_refusal(participant.id, caller, exc)
            log.info("presentation refused", participant=participant.name, peer=caller, reason=str(exc))
            raise

    # ---------------------------------------------------------------------------------------------------
    # In the handshake (``connector.services.federation``)

    async def opening(self, participant: ParticipantRuntime, dsp_base: str) -> Opening | None:
        """What this participant adds to its handshake with the peer at *dsp_base*: a fresh challenge for the
        peer's presentation and, when the peer handed it a challenge before (in an earlier handshake's answer),
        its own presentation answering that one. None when it holds nothing and trusts no one."""
        shown = await self._presentable(participant)
        if not shown and not (await self.trust_of(participant.id)).issuers:
            return None
        ours = self.new_challenge()
        fields: dict[str, Any] = {"challenge": ours}
        handed = self._handed.pop((participant.id, dsp_base), None)
        shown_to = None
        if handed is not None and shown and self.clock() < handed.expires_at:
            fields["presentation"] = self._present(participant, shown, domain=handed.peer, challenge=handed.challenge)
            shown_to = handed.peer
        return Opening(fields, ours, shown_to, bool(shown))

    async def on_handshake(self, participant: ParticipantRuntime, caller: str, fields: Mapping[str, Any]
                           ) -> dict[str, Any]:
        """The credentials in a handshake from *caller* (its verified DID) and this participant's answer: what its
        presentation counts for here (``presentationResult``), this participant's presentation answering the
        caller's challenge (if it holds credentials), and a challenge for the caller's next presentation."""
        asked = _read(dict(fields), _HandshakeIn, "handshake")
        answer: dict[str, Any] = {}
        if asked.presentation is not None:
            try:
                challenge = _challenge_of(asked.presentation)
                claims = await self._take_presentation(participant, caller, asked.presentation, challenge)
                answer["presentationResult"] = claims_summary(claims)
            except PresentationError as exc:
                answer["presentationResult"] = {"refused": f"presentation refused: {exc}"}
        if asked.challenge is not None:
            shown = await self._presentable(participant)
            if shown:
                answer["presentation"] = self._present(participant, shown, domain=caller, challenge=asked.challenge)
        answer["challenge"] = self.challenge(participant.id, caller)
        return answer

    async def closing(self, participant: ParticipantRuntime, peer: str, dsp_base: str, opening: Opening,
                      answer: Mapping[str, Any] | None) -> PeerClaims | None:
        """After the handshake that carried *opening* to *peer* (its verified DID) at *dsp_base*: count the
        presentation in the peer's *answer* (None: the peer answered with its self-description alone) and, if
        ours was not taken in the handshake, show it now, answering the challenge the peer handed us (one more
        request; the peer's next challenge is kept for the next handshake, so later ones need none)."""
        if answer is None:
            log.info("peer exchanges no credentials", participant=participant.name, peer=peer)
            return None
        out = _read(dict(answer), _HandshakeOut, "the peer's handshake answer")
        claims: PeerClaims | None = None
        if out.presentation is not None:
            try:
                claims = await self.verify(participant.id, participant.did, peer, out.presentation,
                                           challenge=opening.challenge)
            except PresentationError as exc:
                claims = self._remember_refusal(participant.id, peer, exc)
                log.info("peer's presentation refused", participant=participant.name, peer=peer, reason=str(exc))
        else:
            self._known.pop((participant.id, peer), None)  # it shows nothing now
        if out.challenge is None:
            return claims
        result = out.presentation_result or {}
        if opening.shown_to == peer and "refused" not in result:
            self._hand(participant.id, dsp_base, peer, out.challenge)
            return claims
        if opening.shown_to is not None:
            log.info("peer did not take this participant's presentation in the handshake", peer=peer,
                     participant=participant.name, reason=str(result.get("refused", "no answer"))[:300])
        shown = await self._presentable(participant)
        if shown:
            presentation = self._present(participant, shown, domain=peer, challenge=out.challenge)
            reply = await self.client.request("POST", f"{dsp_base}{PRESENTATION_PATH}", signer=participant.signer,
                                              json_body={"challenge": out.challenge, "presentation": presentation})
            if reply.status != 200:
                log.warning("peer refused this participant's presentation", participant=participant.name,
                            peer=peer, status=reply.status, reason=_reason(reply.body))
                return claims
            later = reply.json().get("nextChallenge") if isinstance(reply.json(), dict) else None
            if isinstance(later, str) and 16 <= len(later) <= vc.MAX_CHALLENGE:
                self._hand(participant.id, dsp_base, peer, later)
        return claims

    def _hand(self, participant_id: str, dsp_base: str, peer: str, challenge: str) -> None:
        """Keep the challenge *peer* handed *participant_id*, for its presentation in the next handshake."""
        key = (participant_id, dsp_base)
        self._handed[key] = _Handed(peer, challenge, self.clock() + CHALLENGE_LIFETIME)
        self._handed.move_to_end(key)
        while len(self._handed) > MAX_KNOWN_PEERS:
            self._handed.popitem(last=False)

    async def verify(self, participant_id: str, verifier: str, holder: str, presentation: Any, *,
                     challenge: str) -> PeerClaims:
        """Verify *holder*'s presentation to *verifier* (the participant's DID) answering *challenge*, count its
        claims against the participant's trust list and keep them; :class:`PresentationError` if it fails as
        a whole. The challenge's single use is the caller's to enforce."""
        if not isinstance(presentation, dict) or presentation.get("holder") != holder:
            named = presentation.get("holder") if isinstance(presentation, dict) else None
            raise PresentationError(Check.WRONG_HOLDER, f"the presentation's holder {str(named)[:200]!r} is not the "
                                                        f"peer {holder} that signed the request")
        trusted = await self.trust_of(participant_id)
        named_issuers = vc.presentation_issuers(presentation)
        try:
            holder_document = await self.resolver.resolve(holder, key_id=proof_key_id(presentation))
        except (TdsError, dids.DidError) as exc:
            raise PresentationError(Check.HOLDER_KEY, f"the DID document of {holder} could not be read: "
                                                      f"{getattr(exc, 'message', exc)}") from None
        issuer_documents: dict[str, Mapping[str, Any]] = {}
        for issuer in sorted(named_issuers & trusted.issuers):
            try:
                issuer_documents[issuer] = await self.resolver.resolve(issuer)
            except (TdsError, dids.DidError) as exc:
                log.info("trusted issuer not resolved", issuer=issuer, reason=str(exc))
        result = vc.verify_presentation(
            presentation, holder_document, issuer_documents=issuer_documents, expected_domain=verifier,
            expected_challenge=challenge, now=self.clock(), max_age=self.max_age)
        return await self._count(participant_id, holder, result)

    async def claims_of(self, participant_id: str, did: str) -> PeerClaims | None:
        """What the peer *did* has shown *participant_id* that counts now (None: it presented nothing).

        Counted again first when a status list it rests on is due, a claim has run out, or the trust list
        changed: a status list that cannot be fetched then leaves its credentials uncounted."""
        key = (participant_id, did)
        known = self._known.get(key)
        if known is None:
            return None
        self._known.move_to_end(key)
        now = self.clock()
        stale = known.refresh_at is not None and now >= known.refresh_at
        if not stale and known.trust_version == await self._trust_version(participant_id):
            return known.claims
        ended = [c for c in known.result.accepted if c.valid_until < now]
        result = known.result
        if ended:
            refusals = tuple(vc.Refusal(-1, Check.EXPIRED, f"{Check.EXPIRED}: credential {c.id} expired at "
                                                           f"{utc_text(c.valid_until)}", c.id, c.issuer, c.kind)
                             for c in ended)
            result = PresentationResult(result.holder, tuple(c for c in result.accepted if c not in ended),
                                        result.refused + refusals)
        return await self._count(participant_id, did, result)

    async def statuses(self, credentials: list[VerifiedCredential], trusted: TrustList
                       ) -> Callable[[VerifiedCredential], Status]:
        """Each of *credentials*' status now, from its issuer's status list (cached as for peers' credentials): what
        a participant's own usage control reads its held credentials' status from. A list that cannot be had
        leaves the status unknown, so the credential does not count, as at a verifier."""
        return await self._statuses_for(PresentationResult("", tuple(credentials), ()), trusted, self.clock())

    async def _statuses_for(self, result: PresentationResult, trusted: TrustList, now: datetime
                         ) -> Callable[[VerifiedCredential], Status]:
        """The status of each credential *result* accepted, from the status lists the ones that may count name."""
        urls = sorted(trust.status_lists_to_fetch(result, trusted))
        lists, failures = await self._status_lists(urls[:MAX_LISTS_PER_PRESENTATION], trusted, now)
        for url in urls[MAX_LISTS_PER_PRESENTATION:]:
            failures[url] = f"more than {MAX_LISTS_PER_PRESENTATION} status lists in one presentation"
        return _status_of(lists, failures, now)

    def known_claims(self, participant_id: str) -> list[PeerClaims]:
        """The claims of every peer that presented to *participant_id*, as last counted."""
        return [k.claims for (pid, _), k in self._known.items() if pid == participant_id]

    def _remember_refusal(self, participant_id: str, peer: str, exc: CredentialError) -> PeerClaims:
        claims = PeerClaims(holder=peer, not_counted=(NotCounted(None, None, None, f"presentation refused: {exc}"),))
        self._keep(participant_id, peer, _Known(PresentationResult(peer, (), ()), claims, None,
                                                self._trust_versions.get(participant_id, 0)))
        return claims

    async def _count(self, participant_id: str, holder: str, result: PresentationResult) -> PeerClaims:
        trusted = await self.trust_of(participant_id)
        version = trusted.fingerprint() if self.repo.store.postgres else self._trust_versions.get(participant_id, 0)
        now = self.clock()
        claims = trust.verified_claims(result, trusted, await self._statuses_for(result, trusted, now))
        claims = dataclasses.replace(claims, not_counted=tuple(_untrusted(n, trusted) for n in claims.not_counted))
        refresh_at = None
        if result.accepted:
            refresh_at = now + timedelta(seconds=self.settings.status_cache_s)
            if claims.until is not None:
                refresh_at = min(refresh_at, claims.until)
        self._keep(participant_id, holder, _Known(result, claims, refresh_at, version))
        return claims

    def _keep(self, participant_id: str, peer: str, known: _Known) -> None:
        self._known[(participant_id, peer)] = known
        self._known.move_to_end((participant_id, peer))
        while len(self._known) > MAX_KNOWN_PEERS:
            self._known.popitem(last=False)

    async def _status_lists(self, urls: Iterable[str], trusted: TrustList, now: datetime
                            ) -> tuple[dict[str, StatusList], dict[str, str]]:
        """The verified status lists at *urls* (cached, else fetched concurrently), and why the others are not."""
        lists: dict[str, StatusList] = {}
        failures: dict[str, str] = {}
        wanted = []
        for url in urls:
            cached = self._lists.get(url)
            if cached is not None and now < cached[1]:
                lists[url] = cached[0]
            else:
                wanted.append(url)
        fetched = await asyncio.gather(*(self._fetch(url, trusted, now) for url in wanted))
        for url, got in zip(wanted, fetched, strict=True):
            if isinstance(got, str):
                failures[url] = got
                self._lists.pop(url, None)
                continue
            lists[url] = got
            self._lists[url] = (got, min(now + timedelta(seconds=self.settings.status_cache_s), got.fresh_until))
            self._lists.move_to_end(url)
            while len(self._lists) > MAX_CACHED_LISTS:
                self._lists.popitem(last=False)
        return lists, failures

    async def _fetch(self, url: str, trusted: TrustList, now: datetime) -> StatusList | str:
        """The status list at *url*, verified; or why it could not be had (a string)."""
        try:
            try:
                body = await asyncio.shield(self._fetching(url))
            except TdsError as exc:
                raise _Unreadable(exc.message) from None
            try:
                document = jsonbound.loads(body)
            except ValueError:
                raise _Unreadable("the answer is not JSON") from None
            issuer = document.get("issuer") if isinstance(document, dict) else None
            issuer = issuer.get("id") if isinstance(issuer, dict) else issuer
            if not isinstance(issuer, str) or issuer not in trusted.issuers:
                raise _Unreadable(f"the list is issued by {str(issuer)[:200]!r}, not a trusted issuer")
            issuer_document = await self.resolver.resolve(issuer, key_id=proof_key_id(document))
            return status_list.verify_status_list(document, issuer_document, url=url, now=now)
        except _Unreadable as exc:
            reason = str(exc)
        except CredentialError as exc:
            reason = str(exc)
        except (TdsError, dids.DidError) as exc:
            reason = getattr(exc, "message", str(exc))
        log.info("status list not read", url=url, reason=reason)
        return reason

    def _fetching(self, url: str) -> asyncio.Future[bytes]:
        """The fetch of the status list at *url* under way, or a new one: verifiers counting claims at the same
        time (many peers' handshakes, one issuer) share one request per list."""
        found = self._in_flight.get(url)
        if found is None:
            found = asyncio.ensure_future(self._get_timed(url))
            self._in_flight[url] = found

            def done(task: asyncio.Future[bytes]) -> None:
                self._in_flight.pop(url, None)
                if not task.cancelled():
                    task.exception()  # retrieved here too, should every caller have gone

            found.add_done_callback(done)
        return found

    async def _get_timed(self, url: str) -> bytes:
        limit = self.settings.status_fetch_timeout_s
        try:
            async with asyncio.timeout(limit):
                return await self._get_bounded(url, limit)
        except TimeoutError:
            raise _Unreadable(f"no answer within {limit:g} s") from None

    async def _get_bounded(self, url: str, limit_s: float) -> bytes:
        async with self.client.stream(url, read_timeout_s=limit_s) as answer:
            if answer.status != 200:
                raise _Unreadable(f"answered {answer.status}")
            body = bytearray()
            async for chunk in answer.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_STATUS_LIST_BYTES:
                    raise _Unreadable(f"the answer is larger than {MAX_STATUS_LIST_BYTES} bytes")
            return bytes(body)

    # ---------------------------------------------------------------------------------------------------
    # Trust list

    async def trust_of(self, participant_id: str) -> TrustList:
        """The participant's trust list: the node's ``[[trust]]`` entries and its own."""
        cached = self._trust.get(participant_id)
        if cached is not None:
            return cached
        entries: dict[str, TrustedIssuer] = {}
        for row in [*(TrustRow(issuer=e.issuer, kinds=e.claims, spaces=e.spaces) for e in self.node_trust),
                    *await self.repo.trusted(participant_id)]:
            entries[row.issuer] = _merge(entries.get(row.issuer), row)
        found = TrustList(entries)
        if not self.repo.store.postgres:  # other processes sharing the store change it too: read it each time
            self._trust[participant_id] = found
        return found

    async def trusted(self, participant: ParticipantRuntime) -> list[dict[str, Any]]:
        """The participant's trusted issuers, each with what for and where it was set (``node`` or ``own``)."""
        rows = [{"issuer": e.issuer, "claims": list(e.claims), "spaces": e.spaces, "source": "node"}
                for e in self.node_trust]
        rows += [{"issuer": r.issuer, "claims": r.kinds, "spaces": r.spaces, "source": "own", "addedAt": r.added_at}
                 for r in await self.repo.trusted(participant.id)]
        return rows

    async def add_trust(self, participant: ParticipantRuntime, issuer: str, kinds: Sequence[str],
                        spaces: Sequence[str] | None = None) -> TrustRow:
        if len(issuer) > vc.MAX_DID or not ISSUER_DID_RE.match(issuer):
            raise BadRequest("issuer must be a did:web or did:key", path="issuer")
        unknown = [k for k in kinds if k not in KIND_NAMES]
        if not kinds or unknown:
            raise BadRequest(f"claims must name kinds of claim ({', '.join(KIND_NAMES)})", path="claims")
        if spaces is not None and "membership" not in kinds:
            raise BadRequest("spaces limit memberships: trust the issuer for membership too", path="spaces")
        row = TrustRow(issuer=issuer, kinds=sorted(set(kinds)), spaces=sorted(set(spaces)) if spaces else None,
                       added_at=utc_text(self.clock()))
        await self.repo.trust(participant.id, row, most=MAX_TRUSTED_ISSUERS)
        self._trust_changed(participant.id)
        log.info("issuer trusted", participant=participant.name, issuer=issuer, claims=row.kinds, spaces=row.spaces)
        return row

    async def remove_trust(self, participant: ParticipantRuntime, issuer: str) -> None:
        if not await self.repo.distrust(participant.id, issuer):
            if any(e.issuer == issuer for e in self.node_trust):
                raise Conflict(f"{issuer} is trusted by the node's [[trust]] list in tds.toml; remove it there")
            raise NotFound("this participant does not trust that issuer")
        self._trust_changed(participant.id)
        log.info("issuer no longer trusted", participant=participant.name, issuer=issuer)

    async def _trust_version(self, participant_id: str) -> int:
        """What claims counted under the participant's trust list as it is now were counted under: a count of its
        changes here; on PostgreSQL, which other processes of the node change too, the list as stored."""
        if self.repo.store.postgres:
            return (await self.trust_of(participant_id)).fingerprint()
        return self._trust_versions.get(participant_id, 0)

    def _trust_changed(self, participant_id: str) -> None:
        self._trust.pop(participant_id, None)
        self._trust_versions[participant_id] = self._trust_versions.get(participant_id, 0) + 1


def _merge(earlier: TrustedIssuer | None, row: TrustRow) -> TrustedIssuer:
    """What an issuer is trusted for when the node's list and the participant's own both name it: the kinds
    of either, and for memberships the data spaces of either (any, if either allows any)."""
    kinds = frozenset(KIND_NAMES[k] for k in row.kinds if k in KIND_NAMES)
    spaces = frozenset(row.spaces) if row.spaces is not None else None
    if earlier is None:
        return TrustedIssuer(kinds, spaces)
    both = None if earlier.spaces is None or spaces is None else earlier.spaces | spaces
    return TrustedIssuer(earlier.kinds | kinds, both)


def _status_of(lists: Mapping[str, StatusList], failures: Mapping[str, str], now: datetime
               ) -> Callable[[VerifiedCredential], Status]:
    """A credential's status from the lists at hand; a list that could not be had makes it unknown, with why."""

    def status_of(credential: VerifiedCredential) -> Status:
        for entry in credential.status:
            if entry.list_url in failures:
                return Status.unknown(f"the status list {entry.list_url} could not be read: "
                                      f"{failures[entry.list_url]}")
        return status_list.check(credential, lists, now=now)

    return status_of


def _untrusted(item: NotCounted, trusted: TrustList) -> NotCounted:
    """A credential whose issuer was not resolved because it is not trusted is shown as such."""
    if item.issuer is not None and item.issuer not in trusted.issuers and Check.ISSUER_UNRESOLVED in item.reason:
        return dataclasses.replace(item, reason=f"shown, not counted: the issuer {item.issuer} is not trusted")
    return item


def _refused(check: Check, detail: str) -> BadRequest:
    return BadRequest(f"{check}: {detail}", path="credential")


def _delivered_as(body: bytes) -> str | None:
    """How the holder's node says it kept a delivered credential: held or offered (None: it does not say)."""
    try:
        data = jsonbound.loads(body)
    except ValueError:
        return None
    state = data.get("state") if isinstance(data, dict) else None
    return state if state in ("held", "offered") else None


def _reason(body: bytes) -> str:
    """What a peer's error answer says, shortly."""
    try:
        data = jsonbound.loads(body)
    except ValueError:
        return repr(body[:200])
    if isinstance(data, dict):
        message = data.get("message") or data.get("reason")
        if isinstance(message, list):
            message = "; ".join(str(m) for m in message[:3])
        if message:
            return str(message)[:500]
    return repr(body[:200])


def _challenge_of(presentation: Mapping[str, Any]) -> str:
    """The challenge a presentation's proof answers; :class:`PresentationError` if it names none that could be
    one of ours."""
    signed = presentation.get("proof")
    challenge = signed.get("challenge") if isinstance(signed, dict) else None
    if not isinstance(challenge, str) or not 16 <= len(challenge) <= vc.MAX_CHALLENGE:
        raise PresentationError(Check.CHALLENGE, "the presentation answers no challenge")
    return challenge
