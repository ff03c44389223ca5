"""Routes of settlement (``connector.services.settlement``): statements of agreements' post-paid prices.

For peers, under each participant's DSP base (signed requests only, ``connector.http.auth``):

- ``POST …/api/dsp/2025-1/tds/statements``: the provider of an agreement delivers a signed statement; answered
  ``{"state": "received"|"disputed", "problems": [...], "answer": signed dispute or null}`` (a statement the
  consumer's node finds wrong is disputed at once, naming each rule);
- ``POST …/api/dsp/2025-1/tds/statements/answers``: the consumer delivers its signed acceptance or dispute;
  answered ``{"state"}``.

For the participant's operator and applications, on the management API: ``/statements`` (list, issue), one
statement (show, accept, dispute, export as a bundle to check offline or as CSV); for the node's operator (admin
token): the host's report and a hosted participant's platform share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import msgspec
from aiohttp import web

from connector.errors import BadRequest, Forbidden, NotFound, pattern_rule
from connector.http.auth import CALLER_DID, TOKEN
from connector.http.calls import body_of, path_param
from connector.http.management import LIMIT, MAX_LIMIT, Query, Route, decode_body
from connector.http.middleware import query_int, read_json
from connector.services.settlement import (
    ANSWERS_PATH,
    STATEMENTS_PATH,
    SettlementReport,
    StatementDetail,
    StatementList,
    StatementSummary,
)

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.participants import ParticipantRegistry
    from connector.services.settlement import SettlementService

DSP = "/participants/{name}/api/dsp/2025-1"
PERIOD_RULE = "a period: a month (2026-11), an ISO week (2026-W48) or a day (2026-11-30)"
PERIOD_PATTERN = pattern_rule(r"^[0-9]{4}-(W[0-9]{2}|[0-9]{2}(-[0-9]{2})?)$", PERIOD_RULE)


class IssueIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Close the agreement's next stretch: up to the end of its billing period (``until`` left out or null: that
    end must have passed), or earlier: ``"now"`` or an ISO 8601 time with its time zone."""

    agreement: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    until: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class DisputeIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class PlatformShareIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The host's share of what the participant earns as a provider, in percent ("0" takes it off)."""

    percent: Annotated[str, msgspec.Meta(max_length=20, pattern=pattern_rule(
        r"^[0-9]{1,3}(\.[0-9]{1,6})?$", "a percentage written plainly, from 0 to 100 (10, 2.5)"))]


class PlatformShareOut(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    platform_share: str


AGREEMENT = Query("only the statements of this agreement", {"type": "string", "maxLength": 512})
PERIOD = Query("only the statements whose period starts in this month, ISO week or day",
               {"type": "string", "pattern": PERIOD_PATTERN})
ROLE = Query("only those issued (provider) or received (consumer)", {"type": "string", "enum": ["provider",
                                                                                              "consumer"]})
FORMAT = Query("json: the signed statement and answer with both parties' DID documents (check it offline with "
               "tds statement verify); csv: its lines, for accounting",
               {"type": "string", "enum": ["json", "csv"], "default": "json"})


def _json(value: msgspec.Struct, status: int = 200) -> web.Response:
    return web.json_response(msgspec.to_builtins(value), status=status)


def management_routes(settlement_of: Callable[[], SettlementService | None],
                      participant: Callable[[web.Request], ParticipantRuntime],
                      participants: ParticipantRegistry) -> list[Route]:
    """The statements' management routes; *settlement_of* gives the settlement service (read per request),
    *participant* the token's participant (404 for the admin token), *participants* the hosted ones."""

    def using() -> SettlementService:
        found = settlement_of()
        if found is None:
            raise NotFound("this node settles no statements")
        return found

    def admin(request: web.Request) -> None:
        if not request[TOKEN].admin:
            raise Forbidden("only the node's admin token reads the host's report and sets platform shares")

    def text_query(request: web.Request, name: str, limit: int) -> str | None:
        value = request.query.get(name)
        if value is None or value == "":
            return None
        if len(value) > limit:
            raise BadRequest(f"{name} is at most {limit} characters", path=name)
        return value

    async def list_statements(request: web.Request) -> web.Response:
        found = await using().find(participant(request), agreement_id=text_query(request, "agreement", 512),
                                   period=text_query(request, "period", 16), role=text_query(request, "role", 16),
                                   limit=query_int(request, "limit", default=100, low=1, high=MAX_LIMIT))
        return _json(found)

    async def issue(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), IssueIn)
        return _json(await using().issue(participant(request), body.agreement, body.until), 201)

    async def show(request: web.Request) -> web.Response:
        return _json(await using().show(participant(request), path_param(request, "id")))

    async def accept(request: web.Request) -> web.Response:
        return _json(await using().accept(participant(request), path_param(request, "id")))

    async def dispute(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), DisputeIn)
        return _json(await using().dispute(participant(request), path_param(request, "id"), body.reason))

    async def export(request: web.Request) -> web.Response:
        text, media = await using().export(participant(request), path_param(request, "id"),
                                           request.query.get("format", "json"))
        return web.Response(text=text, content_type=media)

    async def report(request: web.Request) -> web.Response:
        admin(request)
        return _json(await using().report(text_query(request, "period", 16)))

    async def platform_share(request: web.Request) -> web.Response:
        admin(request)
        body = decode_body(await body_of(request), PlatformShareIn)
        done = await participants.set_platform_share(path_param(request, "id"), body.percent)
        return web.json_response(done)

    R = Route
    return [
        R("GET", "/statements", list_statements,
          "Statements this participant issued (provider) or received (consumer), newest first", tag="statements",
          response=StatementList, query={"agreement": AGREEMENT, "period": PERIOD, "role": ROLE, "limit": LIMIT}),
        R("POST", "/statements", issue,
          "Issue an agreement's next statement (provider): its post-paid prices over the stretch since the last "
          "statement, from the consumer's signed receipts, the sandbox queries answered and the transfers "
          "completed; signed and delivered to the consumer, who checks it against its own records",
          tag="statements", body=IssueIn, response=StatementSummary, status=201,
          example={"agreement": "urn:uuid:e8dc8655-44c2-46ef-b701-4cffdc2faa44", "until": "now"},
          answers={400: "the agreement states no post-paid price, or until is not a time that has passed",
                   404: "no such agreement where this participant is the provider",
                   409: "the stretch is settled already, or a statement of the agreement awaits its answer (the "
                        "message names it and its state)"}),
        # Before /statements/{id}: the report is no statement.
        R("GET", "/statements/report", report,
          "The host's report (admin): per hosted participant, what its accepted statements come to as provider "
          "(net of the platform's share) and as consumer, and the platform's share, per currency", tag="admin",
          response=SettlementReport, admin=True, query={"period": PERIOD}),
        R("GET", "/statements/{id}", show,
          "One statement with its signed document and the consumer's signed answer", tag="statements",
          response=StatementDetail),
        R("POST", "/statements/{id}/accept", accept,
          "Accept (countersign) a received statement (consumer); the acceptance is delivered to the provider",
          tag="statements", response=StatementSummary,
          answers={409: "the statement is not received (already answered, or issued by this participant)"}),
        R("POST", "/statements/{id}/dispute", dispute,
          "Dispute a received statement (consumer), saying why; the signed dispute is delivered to the provider, "
          "who may issue a statement that supersedes it", tag="statements", body=DisputeIn,
          response=StatementSummary, example={"reason": "uses 40 to 52 were not ours"},
          answers={409: "the statement is not received (already answered, or issued by this participant)"}),
        R("GET", "/statements/{id}/export", export,
          "The statement to keep: its signed document and answer with both parties' DID documents (json), or its "
          "lines as CSV for accounting (csv)", tag="statements", query={"format": FORMAT}, media=("text/csv",)),
        R("PUT", "/participants/{id}/platform-share", platform_share,
          "Set the host's share of what a hosted participant earns as a provider (admin): its statements show the "
          "split from then on", tag="admin", body=PlatformShareIn, response=PlatformShareOut, admin=True,
          example={"percent": "10"},
          answers={404: "no such participant", 409: "the node's own participant (the host) pays no platform share"}),
    ]


def peer_routes(participant_named: Callable[[str], ParticipantRuntime | None],
                settlement: SettlementService) -> list[web.RouteDef]:
    def participant(request: web.Request) -> ParticipantRuntime:
        found = participant_named(request.match_info["name"])
        if found is None:
            raise NotFound("no such participant")
        return found

    async def on_statement(request: web.Request) -> web.Response:
        """A provider's signed statement (the request's signer is the provider)."""
        answer = await settlement.receive(participant(request), request[CALLER_DID], await read_json(request))
        return web.json_response(answer)

    async def on_answer(request: web.Request) -> web.Response:
        """A consumer's signed acceptance or dispute (the request's signer is the consumer)."""
        answer = await settlement.answer(participant(request), request[CALLER_DID], await read_json(request))
        return web.json_response(answer)

    return [web.post(f"{DSP}{STATEMENTS_PATH}", on_statement), web.post(f"{DSP}{ANSWERS_PATH}", on_answer)]
