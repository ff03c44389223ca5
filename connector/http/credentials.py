"""Routes of memberships and verified attributes (``connector.services.credentials``).

For peers, under each participant's DSP base (signed requests only, ``connector.http.auth``):

- ``POST …/tds/credentials``: an issuer delivers a credential about this participant;
- ``POST …/tds/credentials/requests``: a holder asks this participant for a credential (pending until its
  operator decides);
- ``POST …/tds/credentials/presentation``: a presentation answering the challenge a handshake's answer handed
  the caller (on first contact; later ones travel in the handshake itself).

For anyone, without a signature (so an issuer does not learn who checks which credential):
``GET /participants/NAME/credentials/status/N``, the participant's signed status list N.

For the participant's operator, on the management API: issuing, delivering, revoking and listing
credentials, importing and listing held ones, accepting or declining those offered to it, deciding holders'
requests, asking an issuer, the trust list, and the claims peers have shown.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from aiohttp import web

from connector.config import ISSUER_DID_RE
from connector.errors import BadRequest, NotFound
from connector.http.auth import CALLER_DID
from connector.http.calls import body_of, path_param
from connector.http.management import Query, ReasonIn, Route, decode_body
from connector.http.middleware import read_json
from connector.identity.claims import Claims
from connector.identity.credentials import utc_text
from connector.services import credentials as service
from connector.services.credentials import KindName
from connector.store.credentials import CredentialRequest, HeldCredential, IssuedCredential, OfferedCredential

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.credentials import CredentialService

DSP = "/participants/{name}/api/dsp/2025-1"
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
IssuerDid = Annotated[str, msgspec.Meta(max_length=512, pattern=ISSUER_DID_RE.pattern)]
#: ``YYYY-MM-DD`` (valid until the end of that day, UTC) or a date and time with its time zone.
DateText = Annotated[str, msgspec.Meta(min_length=10, max_length=40)]


# -- management API: what comes in ------------------------------------------------------------------------


class ClaimFields(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel", kw_only=True,
                  omit_defaults=True):
    """A kind of credential and its claims: ``dataSpace`` and ``role`` (membership), ``legalName`` and
    ``unifiedSocialCreditCode`` and/or ``leiCode`` (legal-entity), ``region`` (region), ``certificationLevel``,
    ``softwareName`` and ``softwareVersion`` (certification)."""

    kind: KindName
    data_space: Text | None = None
    role: Text | None = None
    region: Text | None = None
    legal_name: Text | None = None
    unified_social_credit_code: Text | None = None
    lei_code: Text | None = None
    certification_level: Text | None = None
    software_name: Text | None = None
    software_version: Text | None = None

    def claims(self) -> Claims:
        given = msgspec.to_builtins(self)
        for key in ("kind", "holder", "validUntil", "peer"):
            given.pop(key, None)
        return service.claims_from(self.kind, given)


class CredentialIn(ClaimFields, forbid_unknown_fields=True, frozen=True, rename="camel", kw_only=True,
                   omit_defaults=True):
    #: The holder's DID: whom the credential is about.
    holder: IssuerDid
    valid_until: DateText | None = None


class AskIn(ClaimFields, forbid_unknown_fields=True, frozen=True, rename="camel", kw_only=True,
            omit_defaults=True):
    #: The issuer: its DID, its node's URL or its DSP base.
    peer: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class ImportIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    credential: dict[str, Any]


class ApproveIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    valid_until: DateText | None = None


class TrustIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    issuer: IssuerDid
    claims: Annotated[list[KindName], msgspec.Meta(min_length=1, max_length=4)]
    #: For memberships: only of these data spaces (left out: any).
    spaces: Annotated[list[Text], msgspec.Meta(min_length=1, max_length=64)] | None = None


# -- management API: what goes out ------------------------------------------------------------------------


class IssuedOut(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    id: str
    kind: str
    holder: str
    #: valid, expired or revoked.
    status: Literal["valid", "expired", "revoked"]
    status_list_credential: str
    status_index: int
    valid_until: str
    issued_at: str
    revoked_at: str | None = None
    delivered_at: str | None = None
    #: Why the last delivery failed ("" if it did not).
    delivery_error: str = ""
    #: How the holder's node kept the delivered credential: held, or offered (it waits for the holder's
    #: acceptance); null: not delivered, or the holder's node did not say.
    delivered_as: Literal["held", "offered"] | None = None
    #: The signed credential (single credentials only, not in lists).
    document: dict[str, Any] | None = None


class HeldOut(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    id: str
    kind: str
    issuer: str
    status: Literal["valid", "expired"]
    valid_until: str
    #: imported (by this participant's operator) or delivered (by the issuer).
    source: str
    received_at: str
    document: dict[str, Any] | None = None


class OfferedOut(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """A credential an issuer this participant does not trust delivered beyond those it holds unasked: never
    presented, until accepted (then held) or declined."""

    id: str
    kind: str
    issuer: str
    state: Literal["offered"] = "offered"
    status: Literal["valid", "expired"]
    valid_until: str
    received_at: str
    document: dict[str, Any] | None = None


class CredentialsOut(msgspec.Struct, frozen=True):
    issued: list[IssuedOut]
    held: list[HeldOut]
    #: Waiting for this participant's decision (``…/credentials/offered/{id}/accept`` or ``…/decline``).
    offered: list[OfferedOut]


class RequestOut(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    id: str
    requester: str
    kind: str
    claims: dict[str, Any]
    state: Literal["pending", "approved", "rejected"]
    received_at: str
    reason: str = ""
    credential_id: str | None = None
    decided_at: str | None = None


class RequestedOut(msgspec.Struct, frozen=True):
    """A request sent to an issuer: its id there, and its state."""

    id: str
    state: str
    issuer: str


class TrustOut(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    #: The issuer's DID, which names it in ``DELETE /trust/{id}``.
    id: str
    issuer: str
    claims: list[str]
    spaces: list[str] | None = None
    #: node (the ``[[trust]]`` list of tds.toml, for every participant) or own (this participant's).
    source: Literal["node", "own"]
    added_at: str | None = None


class CountedOut(msgspec.Struct, frozen=True, rename="camel"):
    kind: str
    issuer: str
    credential_id: str
    #: When the claim runs out (its credential, or the freshness of its status).
    until: str
    claims: dict[str, Any]


class NotCountedOut(msgspec.Struct, frozen=True, rename="camel"):
    kind: str | None
    issuer: str | None
    credential_id: str | None
    reason: str


class ClaimsOut(msgspec.Struct, frozen=True, rename="camel"):
    """What a peer showed this participant: the claims that count, and what does not and why."""

    holder: str
    counted: list[CountedOut]
    not_counted: list[NotCountedOut]
    until: str | None


def _issued_out(record: IssuedCredential, now: str, *, document: bool = False) -> IssuedOut:
    status: Literal["valid", "expired", "revoked"] = (
        "revoked" if record.revoked_at else "expired" if record.valid_until < now else "valid")
    entry = record.document.get("credentialStatus", {})
    return IssuedOut(
        id=record.id, kind=record.kind, holder=record.holder, status=status,
        status_list_credential=str(entry.get("statusListCredential", "")) if isinstance(entry, dict) else "",
        status_index=record.status_index, valid_until=record.valid_until, issued_at=record.issued_at,
        revoked_at=record.revoked_at, delivered_at=record.delivered_at, delivery_error=record.delivery_error,
        delivered_as="held" if record.delivered_as == "held" else "offered" if record.delivered_as == "offered"
        else None, document=record.document if document else None)


def _held_out(record: HeldCredential, now: str, *, document: bool = False) -> HeldOut:
    return HeldOut(id=record.id, kind=record.kind, issuer=record.issuer,
                   status="expired" if record.valid_until < now else "valid", valid_until=record.valid_until,
                   source=record.source, received_at=record.received_at,
                   document=record.document if document else None)


def _offered_out(record: OfferedCredential, now: str, *, document: bool = False) -> OfferedOut:
    return OfferedOut(id=record.id, kind=record.kind, issuer=record.issuer,
                      status="expired" if record.valid_until < now else "valid", valid_until=record.valid_until,
                      received_at=record.received_at, document=record.document if document else None)


def _request_out(record: CredentialRequest) -> RequestOut:
    return RequestOut(**msgspec.structs.asdict(record))


def _valid_until(text: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (the end of that day, UTC) or a date and time with its time zone."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time(23, 59, 59), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"validUntil {text!r} is not a date (YYYY-MM-DD) or a date and time",
                         path="$.validUntil") from None
    if moment.tzinfo is None:
        raise BadRequest("validUntil needs a time zone (or give a date alone)", path="$.validUntil")
    return moment


STATE = Query("pending (default), approved, rejected or all",
              {"type": "string", "enum": ["pending", "approved", "rejected", "all"], "default": "pending"})
PEER_DID = Query("only the claims of this peer (its DID)", {"type": "string", "maxLength": 512})


def management_routes(credentials_of: Callable[[], CredentialService | None],
                      participant: Callable[[web.Request], ParticipantRuntime]) -> list[Route]:
    """The management routes of credentials, the trust list and peers' claims; *credentials_of* gives the
    credentials service (read when a request comes), *participant* the token's participant (404 for the admin
    token)."""

    def using() -> CredentialService:
        found = credentials_of()
        if found is None:
            raise NotFound("this node keeps no credentials")
        return found

    def now() -> str:
        return utc_text(using().clock())

    def out(value: msgspec.Struct | list[Any], status: int = 200) -> web.Response:
        return web.json_response(msgspec.to_builtins(value), status=status)

    async def list_credentials(request: web.Request) -> web.Response:
        p = participant(request)
        at = now()
        return out(CredentialsOut(issued=[_issued_out(r, at) for r in await using().issued(p)],
                                  held=[_held_out(r, at) for r in await using().held(p)],
                                  offered=[_offered_out(r, at) for r in await using().offered(p)]))

    async def list_issued(request: web.Request) -> web.Response:
        at = now()
        return out([_issued_out(r, at) for r in await using().issued(participant(request))])

    async def list_held(request: web.Request) -> web.Response:
        at = now()
        return out([_held_out(r, at) for r in await using().held(participant(request))])

    async def issue(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), CredentialIn)
        record = await using().issue(participant(request), body.holder, body.claims(),
                                         valid_until=_valid_until(body.valid_until))
        return out(_issued_out(record, now(), document=True), 201)

    async def get_issued(request: web.Request) -> web.Response:
        record = await using().issued_one(participant(request), path_param(request, "id"))
        return out(_issued_out(record, now(), document=True))

    async def deliver(request: web.Request) -> web.Response:
        record = await using().deliver(participant(request), path_param(request, "id"))
        return out(_issued_out(record, now()))

    async def revoke(request: web.Request) -> web.Response:
        record = await using().revoke(participant(request), path_param(request, "id"))
        return out(_issued_out(record, now()))

    async def import_held(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), ImportIn)
        record = await using().import_credential(participant(request), body.credential)
        return out(_held_out(record, now()), 201)

    async def get_held(request: web.Request) -> web.Response:
        record = await using().held_one(participant(request), path_param(request, "id"))
        return out(_held_out(record, now(), document=True))

    async def remove_held(request: web.Request) -> web.Response:
        await using().remove_held(participant(request), path_param(request, "id"))
        return web.Response(status=204)

    async def list_offered(request: web.Request) -> web.Response:
        at = now()
        return out([_offered_out(r, at) for r in await using().offered(participant(request))])

    async def get_offered(request: web.Request) -> web.Response:
        record = await using().offered_one(participant(request), path_param(request, "id"))
        return out(_offered_out(record, now(), document=True))

    async def accept_offered(request: web.Request) -> web.Response:
        record = await using().accept_offered(participant(request), path_param(request, "id"))
        return out(_held_out(record, now()))

    async def decline_offered(request: web.Request) -> web.Response:
        await using().decline_offered(participant(request), path_param(request, "id"))
        return web.Response(status=204)

    async def list_requests(request: web.Request) -> web.Response:
        state = request.query.get("state", "pending")
        if state not in ("pending", "approved", "rejected", "all"):
            raise BadRequest("state must be pending, approved, rejected or all", path="state")
        rows = await using().requests(participant(request), state=None if state == "all" else state)
        return out([_request_out(r) for r in rows])

    async def approve(request: web.Request) -> web.Response:
        raw = await body_of(request)
        body = decode_body(raw, ApproveIn) if raw else ApproveIn()
        record = await using().approve(participant(request), path_param(request, "id"),
                                           valid_until=_valid_until(body.valid_until))
        return out(_issued_out(record, now(), document=True))

    async def reject(request: web.Request) -> web.Response:
        raw = await body_of(request)
        body = decode_body(raw, ReasonIn) if raw else ReasonIn()
        record = await using().reject(participant(request), path_param(request, "id"), body.reason)
        return out(_request_out(record))

    async def ask(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), AskIn)
        answer = await using().request_credential(participant(request), body.peer, body.kind, body.claims())
        return out(RequestedOut(**answer), 201)

    async def list_trust(request: web.Request) -> web.Response:
        rows = await using().trusted(participant(request))
        return out([msgspec.convert({"id": r["issuer"], **r}, TrustOut) for r in rows])

    async def add_trust(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), TrustIn)
        row = await using().add_trust(participant(request), body.issuer, body.claims, body.spaces)
        return out(TrustOut(id=row.issuer, issuer=row.issuer, claims=row.kinds, spaces=row.spaces, source="own",
                            added_at=row.added_at), 201)

    async def remove_trust(request: web.Request) -> web.Response:
        await using().remove_trust(participant(request), path_param(request, "id"))
        return web.Response(status=204)

    async def peer_claims(request: web.Request) -> web.Response:
        p = participant(request)
        did = request.query.get("did")
        if did is not None:
            found = await using().claims_of(p.id, did[:512])
            rows = [found] if found is not None else []
        else:
            rows = using().known_claims(p.id)
        return out([msgspec.convert(service.claims_summary(c), ClaimsOut) for c in rows])

    R = Route
    peer_down = {502: "the peer could not be reached or answered badly"}
    return [
        R("GET", "/credentials", list_credentials,
          "Credentials this participant issued (with their status) and holds", tag="credentials",
          response=CredentialsOut),
        R("POST", "/credentials/issued", issue,
          "Issue a credential about a holder, signed by this participant and revocable through its status list "
          "(not yet delivered: see …/deliver)", tag="credentials", body=CredentialIn, response=IssuedOut,
          status=201, example={"holder": "did:web:parts.example:participants:parts", "kind": "membership",
                               "dataSpace": "urn:tds:space:auto-parts", "role": "member"}),
        R("GET", "/credentials/issued", list_issued, "Credentials this participant issued, newest first",
          tag="credentials", response=list[IssuedOut]),
        R("GET", "/credentials/issued/{id}", get_issued, "One issued credential, with the signed document",
          tag="credentials", response=IssuedOut),
        R("POST", "/credentials/issued/{id}/deliver", deliver,
          "Deliver an issued credential to its holder's node (a request signed by this participant)",
          tag="credentials", response=IssuedOut,
          answers={409: "the credential was revoked", **peer_down}),
        R("POST", "/credentials/issued/{id}/revoke", revoke,
          "Revoke an issued credential: its bit is set and the status list re-signed and published",
          tag="credentials", response=IssuedOut),
        R("POST", "/credentials/held", import_held,
          "Import a credential about this participant (checked: holder, issuer's signature, validity, status)",
          tag="credentials", body=ImportIn, response=HeldOut, status=201,
          answers={409: "this participant holds as many credentials as it may (in all, or of this issuer)",
                   **peer_down}),
        R("GET", "/credentials/held", list_held, "Credentials this participant holds, newest first",
          tag="credentials", response=list[HeldOut]),
        R("GET", "/credentials/held/{id}", get_held, "One held credential, with the signed document",
          tag="credentials", response=HeldOut),
        R("DELETE", "/credentials/held/{id}", remove_held, "Stop holding (and presenting) a credential",
          tag="credentials", status=204),
        R("GET", "/credentials/offered", list_offered,
          "Credentials offered to this participant, waiting for its decision, newest first: delivered by issuers "
          "it does not trust beyond those it holds unasked; never presented", tag="credentials",
          response=list[OfferedOut]),
        R("GET", "/credentials/offered/{id}", get_offered, "One offered credential, with the signed document",
          tag="credentials", response=OfferedOut),
        R("POST", "/credentials/offered/{id}/accept", accept_offered,
          "Accept an offered credential: checked again, then held and presented (beyond the bound on credentials "
          "of issuers this participant does not trust: the operator's choice)", tag="credentials",
          response=HeldOut,
          answers={409: "this participant holds as many credentials as it may (in all, or of this issuer)",
                   **peer_down}),
        R("POST", "/credentials/offered/{id}/decline", decline_offered, "Decline an offered credential: dropped",
          tag="credentials", status=204),
        R("GET", "/credentials/requests", list_requests, "Requests holders sent this participant (issuer)",
          tag="credentials", response=list[RequestOut], query={"state": STATE}),
        R("POST", "/credentials/requests/{id}/approve", approve,
          "Approve a pending request: the credential is issued and delivered (a failed delivery is in "
          "deliveryError)", tag="credentials", body=ApproveIn, body_required=False, response=IssuedOut,
          example={"validUntil": "2027-06-30"}, answers={409: "the request was decided already"}),
        R("POST", "/credentials/requests/{id}/reject", reject, "Reject a pending request", tag="credentials",
          body=ReasonIn, body_required=False, response=RequestOut, example={"reason": "not a member"},
          answers={409: "the request was decided already"}),
        R("POST", "/credentials/ask", ask,
          "Ask an issuer (its DID or URL) for a credential about this participant; it waits for the issuer's "
          "decision", tag="credentials", body=AskIn, response=RequestedOut, status=201,
          example={"peer": "https://alliance.example", "kind": "membership",
                   "dataSpace": "urn:tds:space:auto-parts"},
          answers=peer_down),
        R("GET", "/trust", list_trust, "The issuers this participant trusts, and for which claims",
          tag="trust", response=list[TrustOut]),
        R("POST", "/trust", add_trust, "Trust an issuer for some kinds of claim (replacing what it was trusted for)",
          tag="trust", body=TrustIn, response=TrustOut, status=201,
          example={"issuer": "did:web:alliance.example:participants:alliance", "claims": ["membership"]},
          answers={409: "this participant trusts as many issuers as it may"}),
        R("DELETE", "/trust/{id}", remove_trust, "Stop trusting an issuer (its DID, percent-encoded)", tag="trust",
          status=204, answers={409: "the issuer is in the node's [[trust]] list (tds.toml)"}),
        R("GET", "/peers/claims", peer_claims,
          "The claims peers have shown this participant: what counts, and what not and why", tag="peers",
          response=list[ClaimsOut], query={"did": PEER_DID}),
    ]


# -- peers ------------------------------------------------------------------------------------------------


def peer_routes(participant_named: Callable[[str], ParticipantRuntime | None],
                credentials: CredentialService) -> list[web.RouteDef]:
    def participant(request: web.Request) -> ParticipantRuntime:
        found = participant_named(request.match_info["name"])
        if found is None:
            raise NotFound("no such participant")
        return found

    async def delivered(request: web.Request) -> web.Response:
        """An issuer (the request's signer) delivers a credential about this participant."""
        kept = await credentials.receive_credential(participant(request), request[CALLER_DID],
                                                    await read_json(request))
        return web.json_response(service.delivery_answer(kept))

    async def requested(request: web.Request) -> web.Response:
        """A holder (the request's signer) asks for a credential about itself."""
        asker = participant(request)
        record = await credentials.receive_request(asker, request[CALLER_DID], await read_json(request))
        return web.json_response(service.request_answer(asker, record), status=201)

    async def presentation(request: web.Request) -> web.Response:
        answer = await credentials.on_presentation(participant(request), request[CALLER_DID],
                                                   await read_json(request))
        return web.json_response(answer)

    async def status(request: web.Request) -> web.Response:
        """The participant's status list N, signed (no signature needed to read it)."""
        raw = request.match_info["list"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
            raise NotFound("no such status list")
        document = await credentials.status_list_document(participant(request), int(raw))
        max_age = int(credentials.settings.status_cache_s)
        return web.json_response(document, content_type="application/vc",
                                 headers={"Cache-Control": f"public, max-age={max_age}"})

    return [
        web.post(f"{DSP}{service.DELIVERY_PATH}", delivered),
        web.post(f"{DSP}{service.REQUESTS_PATH}", requested),
        web.post(f"{DSP}{service.PRESENTATION_PATH}", presentation),
        web.get(f"/participants/{{name}}/{service.STATUS_PATH}/{{list}}", status),
    ]
