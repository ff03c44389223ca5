"""The management API (``/api/management/v1``) for operators and applications.

Listens on its own port (127.0.0.1 by default). Every route needs ``Authorization: Bearer <token>``; the
token decides the participant, never the request body. Request bodies are msgspec structs that forbid
unknown fields, so a typo is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from aiohttp import web

from connector.errors import BadRequest, NotFound, validation_error_path
from connector.http.auth import TOKEN, authenticate_token

if TYPE_CHECKING:
    from connector.node import Node
    from connector.participant import ParticipantRuntime

PREFIX = "/api/management/v1"
S = TypeVar("S", bound=msgspec.Struct)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VerifyPeerRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    peer: str


def decode_body(raw: bytes, kind: type[S]) -> S:
    if not raw:
        raise BadRequest("request body is empty; a JSON object is required")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        path, message = validation_error_path(str(exc))
        raise BadRequest(f"{path}: {message}" if path else message, path=f"$.{path}" if path else "$") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from exc


def token_middleware(node: Node) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PREFIX):
            token = await authenticate_token(node, request)
            request[TOKEN] = token
        return await handler(request)

    return middleware


def routes(node: Node) -> list[web.RouteDef]:
    def participant(request: web.Request) -> ParticipantRuntime:
        token = request[TOKEN]
        found = node.participant_by_id(token.participant_id) if token.participant_id else None
        if found is None:
            raise NotFound("this token is not bound to a participant")
        return found

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
        body = decode_body(await request.read(), VerifyPeerRequest)
        subject, dsp_base = await node.federation.verify_peer(participant(request), body.peer)
        return web.json_response({"verified": True, "dspEndpoint": dsp_base, "peer": msgspec.to_builtins(subject)})

    async def list_peers(request: web.Request) -> web.Response:
        peers = await node.repo.peers(participant(request).id)
        return web.json_response({"peers": msgspec.to_builtins(peers)})

    return [
        web.get(f"{PREFIX}/participant", get_participant),
        web.post(f"{PREFIX}/peers/verify", verify_peer),
        web.get(f"{PREFIX}/peers", list_peers),
    ]
