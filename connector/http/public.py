"""The public listener: what peers see.

Per participant, under ``/participants/NAME/``: the DID document, the DSP version document, the signed
self-description, and the DSP base ``…/api/dsp/2025-1`` (every request there is signed; see
``connector.http.auth``). The node root serves ``/.well-known/dspace-version`` for the first participant,
also at ``/api/dsp/.well-known/dspace-version``; the node's JSON-LD context at ``/contexts/tds/v1``; plus
``/healthz`` (the process answers) and ``/readyz`` (the node can serve: ``connector.services.health``) for
load balancers. The node's metrics are not here but on the management listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from connector.errors import NotFound
from connector.http.auth import CALLER_DID
from connector.http.middleware import read_json
from connector.protocol import contexts

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.federation import FederationService
    from connector.services.health import Readiness
    from connector.services.receipts import ReceiptService

JSONLD = "application/json"


class PublicSite(msgspec.Struct, frozen=True):
    """What the public documents and the project's DSP extensions use."""

    participant_named: Callable[[str], ParticipantRuntime | None]
    #: The participant the node root's version document names (None: the node hosts none yet).
    first_participant: Callable[[], ParticipantRuntime | None]
    #: Whether the node can serve now (``/readyz``).
    readiness: Callable[[], Awaitable[Readiness]]
    federation: FederationService
    receipts: ReceiptService
    #: Whose DID document is served: also a suspended participant's, so that what it signed keeps verifying
    #: (None: the same as *participant_named*).
    document_named: Callable[[str], ParticipantRuntime | None] | None = None


def routes(site: PublicSite) -> list[web.RouteDef]:
    def participant(request: web.Request) -> ParticipantRuntime:
        found = site.participant_named(request.match_info["name"])
        if found is None:
            raise NotFound("no such participant")
        return found

    async def tds_context(_: web.Request) -> web.Response:
        """``GET /contexts/tds/v1``: the node's JSON-LD context, as shipped (``connector.protocol.contexts``).

        Open to any origin, so that JSON-LD processors in browsers can load it too (JSON-LD Best Practices:
        enable CORS)."""
        return web.Response(body=contexts.body(contexts.TDS), content_type=contexts.MEDIA_TYPE, charset="utf-8",
                            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=86400"})

    async def healthz(_: web.Request) -> web.Response:
        """Alive: the process answers (a load balancer's liveness probe)."""
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        """Ready: 200, or 503 with the checks that fail (README "Monitoring")."""
        found = await site.readiness()
        return web.json_response(found.body(), status=200 if found.ready else 503,
                                 headers={"Cache-Control": "no-store"})

    async def not_the_management_api(_: web.Request) -> web.Response:
        """``/api/management/…`` asked of the public listener: a client given the wrong port (the listeners are
        separate, and the management one is usually bound to 127.0.0.1 only). Its port is not named here: what
        the operator's API listens on is not the peers' business."""
        raise NotFound("this is the node's public (DSP) port, not its management API, which listens on a port of "
                       "its own (node.management_port in tds.toml; `tds info --dir DIR` prints its URL)")

    async def root_version(_: web.Request) -> web.Response:
        first = site.first_participant()
        if first is None:
            raise NotFound("this node hosts no participant yet")
        return web.json_response(first.version_document())

    async def version(request: web.Request) -> web.Response:
        return web.json_response(participant(request).version_document())

    async def did_json(request: web.Request) -> web.Response:
        p = (site.document_named or site.participant_named)(request.match_info["name"])
        if p is None:
            raise NotFound("no such participant")
        if not p.did.startswith("did:web:"):
            raise NotFound("this participant uses did:key; its DID document is derived from the DID")
        return web.json_response(p.did_document(), content_type="application/did+json")

    async def self_description(request: web.Request) -> web.Response:
        return web.json_response(participant(request).self_description(datetime.now(UTC)))

    async def handshake(request: web.Request) -> web.Response:
        """``POST …/api/dsp/2025-1/tds/handshake``: exchange verified self-descriptions.

        The caller (authenticated by its request signature) sends its own self-description; the node
        verifies it, records the peer, and answers with its own. Credentials may travel beside them both
        ways (``FederationService.accept_handshake``).
        """
        p = participant(request)
        body = await read_json(request)
        own = await site.federation.accept_handshake(p, request[CALLER_DID], body)
        return web.json_response(own)

    async def usage_receipts(request: web.Request) -> web.Response:
        """``POST …/api/dsp/2025-1/tds/usage-receipts``: a consumer's usage log entries and signed heads."""
        answer = await site.receipts.receive(participant(request), request[CALLER_DID], await read_json(request))
        return web.json_response(answer)

    async def revocations(request: web.Request) -> web.Response:
        """``POST …/api/dsp/2025-1/tds/revocations``: the provider revokes an agreement."""
        answer = await site.receipts.on_revocation(participant(request), request[CALLER_DID],
                                                   await read_json(request))
        return web.json_response(answer)

    return [
        web.post("/participants/{name}/api/dsp/2025-1/tds/usage-receipts", usage_receipts),
        web.post("/participants/{name}/api/dsp/2025-1/tds/revocations", revocations),
        web.get("/healthz", healthz),
        web.get(contexts.TDS_PATH, tds_context),
        web.get("/readyz", readyz),
        web.get("/.well-known/dspace-version", root_version),
        web.get("/api/dsp/.well-known/dspace-version", root_version),
        web.get("/participants/{name}/.well-known/dspace-version", version),
        web.get("/participants/{name}/did.json", did_json),
        web.get("/participants/{name}/.well-known/tds/self-description", self_description),
        web.post("/participants/{name}/api/dsp/2025-1/tds/handshake", handshake),
        web.route("*", "/api/management{rest:(/.*)?}", not_the_management_api),
    ]
