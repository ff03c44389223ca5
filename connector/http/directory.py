"""Routes of the peer directory and its gossip (``connector.services.directory``, ``connector.services.gossip``).

For peers, under each participant's DSP base (signed requests only, ``connector.http.auth``):
``POST …/api/dsp/2025-1/tds/gossip``, a digest or items (``connector.protocol.gossip``).

For the participant's operator, on the management API: ``POST /peers`` (``tds peer add``: verify a peer by
handshake and add it to the directory) and ``GET /directory`` (``tds peer list``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aiohttp import web

from connector.errors import NotFound
from connector.http.auth import BODY, CALLER_DID
from connector.http.calls import body_of
from connector.http.management import Route, decode_body
from connector.services.gossip import GOSSIP_PATH

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.gossip import Gossip

DSP = "/participants/{name}/api/dsp/2025-1"


class AddPeerIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: A node's URL, a participant's URL, a DSP base or a did:web.
    peer: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class ClaimsSummary(msgspec.Struct, frozen=True):
    """What the peer's credentials, presented to this participant, verify (issuers it trusts)."""

    memberships: list[str]
    verifiedRegion: str | None
    legalEntity: str | None
    certifications: list[str]
    notCounted: int


class DirectoryEntryOut(msgspec.Struct, frozen=True, rename="camel"):
    """A participant in the directory (what it states of itself is self-asserted)."""

    did: str
    dsp_endpoint: str
    legal_name: str
    region: str
    industry: str
    issued_at: str
    expires_at: str
    digest: str
    learned_from: str
    last_seen: str
    claims: ClaimsSummary | None = None


class DirectoryOut(msgspec.Struct, frozen=True):
    entries: list[DirectoryEntryOut]


def management_routes(gossip_of: Callable[[], Gossip | None],
                      participant: Callable[[web.Request], ParticipantRuntime]) -> list[Route]:
    """``POST /peers`` and ``GET /directory``; *gossip_of* gives the gossip service (read per request)."""

    def using() -> Gossip:
        found = gossip_of()
        if found is None:
            raise NotFound("this node keeps no peer directory")
        return found

    async def add_peer(request: web.Request) -> web.Response:
        body = decode_body(await body_of(request), AddPeerIn)
        p = participant(request)
        entry = await using().add(p, body.peer)
        rows = [r for r in await using().directory.listing(p) if r["did"] == entry.did]
        return web.json_response({"added": True, "entry": rows[0] if rows else msgspec.to_builtins(entry)},
                                 status=201)

    async def directory(request: web.Request) -> web.Response:
        entries = await using().directory.listing(participant(request))
        return web.json_response({"entries": entries})

    return [
        Route("POST", "/peers", add_peer, "Verify a peer by handshake and add it to this participant's directory",
              tag="peers", body=AddPeerIn, status=201, example={"peer": "https://tds.partner.example"},
              answers={502: "the peer could not be reached or did not verify"}),
        Route("GET", "/directory", directory,
              "The participants this participant knows of (handshakes, bootstrap peers, gossip)", tag="peers",
              response=DirectoryOut),
    ]


def peer_routes(participant_named: Callable[[str], ParticipantRuntime | None], gossip: Gossip) -> list[web.RouteDef]:
    async def on_gossip(request: web.Request) -> web.Response:
        """A peer's digest or items (the request's signer is the peer)."""
        found = participant_named(request.match_info["name"])
        if found is None:
            raise NotFound("no such participant")
        raw = request.get(BODY)
        answer: dict[str, Any] = await gossip.on_message(found, request[CALLER_DID],
                                                         raw if raw is not None else await request.read())
        return web.json_response(answer)

    return [web.post(f"{DSP}{GOSSIP_PATH}", on_gossip)]
