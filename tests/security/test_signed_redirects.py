"""Attack: a peer answers the node's signed GET (a dataset, a negotiation's or transfer's state) with a redirect
to a third server, so that the node signs a request to that server under its participant's key and takes the
third server's answer for the peer's. A signed request is followed only to the peer's own host."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from nacl.signing import SigningKey

from connector.errors import PeerError
from connector.identity import did as dids
from connector.identity.keys import Signer
from connector.net.client import PeerClient
from connector.net.guard import OutboundPolicy
from connector.testing import free_port

KEY = SigningKey(b"\x05" * 32)
SIGNER = Signer(KEY, dids.signing_key_id(dids.did_key_for(bytes(KEY.verify_key))))


async def serve(routes: list[web.RouteDef]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def servers() -> Any:
    """A third server that records what reaches it, and the peer, which redirects /away there and /here to itself."""
    reached: list[str] = []

    async def third(request: web.Request) -> web.Response:
        reached.append(request.headers.get("Signature-Input", "unsigned"))
        return web.json_response({"from": "third"})

    third_runner, third_url = await serve([web.get("/state", third)])

    async def away(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"{third_url}/state")

    async def here(_: web.Request) -> web.Response:
        raise web.HTTPFound("/state")

    async def state(_: web.Request) -> web.Response:
        return web.json_response({"from": "peer"})

    peer_runner, peer_url = await serve([web.get("/away", away), web.get("/here", here), web.get("/state", state)])
    client = PeerClient(OutboundPolicy.build(True, []))
    yield client, peer_url, reached
    await client.close()
    await peer_runner.cleanup()
    await third_runner.cleanup()


async def test_a_signed_get_is_not_redirected_to_another_server(servers):
    client, peer, reached = servers
    with pytest.raises(PeerError, match="redirected a signed request to another host"):
        await client.request("GET", f"{peer}/away", signer=SIGNER)
    assert reached == []  # nothing was signed for it, nor sent


async def test_a_signed_get_follows_a_redirect_on_the_peers_own_server(servers):
    client, peer, _ = servers
    answer = await client.request("GET", f"{peer}/here", signer=SIGNER)
    assert answer.status == 200 and answer.json() == {"from": "peer"}


async def test_an_unsigned_get_may_be_redirected_elsewhere(servers):
    client, peer, reached = servers
    answer = await client.request("GET", f"{peer}/away")
    assert answer.json() == {"from": "third"} and reached == ["unsigned"]
