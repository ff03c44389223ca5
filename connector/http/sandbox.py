"""Routes of the data sandbox (``connector.services.sandbox``).

For peers, under each participant's DSP base (signed requests only, ``connector.http.auth``):
``POST …/api/dsp/2025-1/tds/sandbox/queries`` — the consumer of an agreement asks an aggregate query of the
provider's sandboxed table: ``{"agreementId", "query" | "templateId", "parameters"}``, answered with the result
and the document the provider signed, or an error body naming the ``rule`` the query broke.

For the participant's operator and applications, on the management API: ``POST /queries`` (``tds query``) sends
a query to the provider of one of this participant's agreements and answers with the verified result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aiohttp import web

from connector.errors import BadRequest, NotFound
from connector.http.auth import CALLER_DID
from connector.http.calls import body_of
from connector.http.management import Route, decode_body
from connector.http.middleware import read_json
from connector.protocol.sandbox import MAX_SQL_CHARS
from connector.services.sandbox import QUERY_PATH

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.sandbox import SandboxService

DSP = "/participants/{name}/api/dsp/2025-1"
#: Most parameters a template query names.
MAX_PARAMETERS = 64

Parameter = str | int | float
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Parameters = Annotated[dict[Name, Parameter], msgspec.Meta(max_length=MAX_PARAMETERS)]


class QueryIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename="camel"):
    """A query for the provider of an agreement: free-form SQL (``query``) or one of the agreement's query
    templates (``templateId``) with its ``parameters``."""

    agreement_id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    query: Annotated[str, msgspec.Meta(max_length=MAX_SQL_CHARS)] = ""
    template_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    parameters: Parameters = {}


class QueryMessage(msgspec.Struct, frozen=True):
    """The DSP extension's request (open: properties it does not name, ``@type`` among them, are ignored)."""

    agreementId: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    query: Annotated[str, msgspec.Meta(max_length=MAX_SQL_CHARS)] = ""
    templateId: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    parameters: Parameters = {}


class ResultOut(msgspec.Struct, frozen=True):
    """What left the sandbox: the columns and rows of the groups of at least k records (under a privacy budget:
    whose noisy count reached k, and noisy), how many groups were suppressed (null under a privacy budget: that
    number is exact), the budget this query spent and, of it, what a noisy count of each group's rows took when
    no output of the query counted them (``thresholdEpsilon``)."""

    columns: list[str]
    rows: list[list[Any]]
    suppressedGroups: int | None
    epsilonSpent: float
    noise: bool
    thresholdEpsilon: float = 0.0


class QueryOut(msgspec.Struct, frozen=True):
    """The provider's answer: its id for the query, the result, the document it signed over the result
    (``tds:SandboxResult``, ``eddsa-jcs-2022``; verified against the provider's DID document before it is
    returned), and where the agreement's budget stands (queries so far, epsilon used of the total)."""

    queryId: str
    result: ResultOut
    document: dict[str, Any]
    budget: dict[str, Any] | None = None


def _decode(raw: Any) -> QueryMessage:
    try:
        return msgspec.convert(raw, QueryMessage)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"not a sandbox query: {exc}") from exc


def management_routes(sandbox_of: Callable[[], SandboxService | None],
                      participant: Callable[[web.Request], ParticipantRuntime]) -> list[Route]:
    """``POST /queries``; *sandbox_of* gives the sandbox service (read per request)."""

    def using() -> SandboxService:
        found = sandbox_of()
        if found is None:
            raise NotFound("this node runs no data sandbox")
        return found

    async def ask(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), QueryIn)
        if not body.query.strip() and body.template_id is None:
            raise BadRequest("give a query (SQL) or a templateId", path="$.query")
        answer = await using().ask(participant(request), body.agreement_id, body.query, body.template_id,
                                   body.parameters)
        return web.json_response(answer)

    return [
        Route("POST", "/queries", ask,
              "Ask the provider of an agreement an aggregate query of its data sandbox (consumer): the result comes "
              "back signed by the provider and is verified before it is returned; the signed result is kept (the "
              "evidence when a statement bills the query)",
              tag="sandbox", body=QueryIn, response=QueryOut,
              example={"agreementId": "urn:uuid:e8dc8655-44c2-46ef-b701-4cffdc2faa44",
                       "query": "SELECT region, avg(defect_rate) FROM data GROUP BY region"},
              answers={403: "the provider refused: its policy (queries left, time) or the privacy budget (rule "
                            "\"policy\" or \"budget\")",
                       404: "no such agreement (as consumer)",
                       409: "the agreement is not FINALIZED, or the provider revoked it",
                       422: "the query breaks the agreement's terms (the error's rule names which)",
                       502: "the provider could not be reached, or its result does not verify",
                       503: "the provider runs as many queries as it allows and had no room within a short wait "
                            "(rule \"busy\"; nothing counted or spent: try again after Retry-After), or this "
                            "node's store failed"}),
    ]


def peer_routes(participant_named: Callable[[str], ParticipantRuntime | None],
                sandbox: SandboxService) -> list[web.RouteDef]:
    async def on_query(request: web.Request) -> web.Response:
        """A consumer's query (the request's signer is the consumer)."""
        found = participant_named(request.match_info["name"])
        if found is None:
            raise NotFound("no such participant")
        message = _decode(await read_json(request))
        answer = await sandbox.query(found, request[CALLER_DID], message.agreementId, message.query,
                                     message.templateId, message.parameters)
        return web.json_response(answer)

    return [web.post(f"{DSP}{QUERY_PATH}", on_query)]
