"""HTTPS on loopback with dev mode off: certificates from a test CA, did:web over https, the trusted
network allowing 127.0.0.0/8."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from connector.errors import ConfigError
from connector.testing import write_tls
from usage_policies import templates


async def start_https(nodes, ca: trustme.CA, tmp_path: Path, name: str):
    return await nodes.start(name, dev_mode=False, trusted_networks=("127.0.0.0/8",), https=True,
                             **write_tls(ca, tmp_path / f"tls-{name}", "127.0.0.1"))


async def test_negotiation_and_use_over_https_without_dev_mode(nodes, tmp_path):
    ca = trustme.CA()
    provider = await start_https(nodes, ca, tmp_path, "acme")
    consumer = await start_https(nodes, ca, tmp_path, "parts")
    assert provider.public_url.startswith("https://") and provider.participant.did.startswith("did:web:")
    context = ssl.create_default_context(cafile=str(tmp_path / "tls-acme" / "ca.pem"))
    async with aiohttp.ClientSession() as session, session.get(f"{provider.public_url}/healthz", ssl=context) as r:
        assert r.status == 200
    await provider.client.add_asset({"id": "qi"})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("rnd", templates.combine(templates.purpose("qi", "R&D"),
                                                              templates.max_uses("qi", 1)))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="rnd",
                                                  assets=["qi"])
    catalog = await consumer.client.catalog(provider.public_url)  # signed request: did:web resolved over https
    started = await consumer.client.negotiate(provider.public_url, catalog["dataset"][0]["hasPolicy"][0]["@id"])
    final = await consumer.client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    agreement = final["agreement"]["@id"]
    assert (await consumer.client.use(agreement, "u1", purpose="R&D"))["decision"] == "permit"
    assert (await consumer.client.use(agreement, "u2", purpose="R&D"))["decision"] == "deny"


async def test_plain_http_client_is_not_served(nodes, tmp_path):
    provider = await start_https(nodes, trustme.CA(), tmp_path, "acme")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(provider.public_url.replace("https://", "http://") + "/healthz") as r:
                await r.read()


async def test_key_readable_by_others_is_refused(nodes, tmp_path):
    settings = write_tls(trustme.CA(), tmp_path / "tls", "127.0.0.1")
    os.chmod(settings["tls_key"], 0o644)
    with pytest.raises(ConfigError, match="readable by others") as info:
        await nodes.start("acme", **settings)
    assert info.value.path == "node.tls_key" and "BEGIN" not in str(info.value)


async def test_unknown_ca_file_is_a_config_error(nodes, tmp_path):
    with pytest.raises(ConfigError) as info:
        await nodes.start("acme", tls_ca=str(tmp_path / "missing.pem"))
    assert info.value.path == "node.tls_ca"


async def test_tls_ca_alone_is_trusted_for_peers_and_the_system_store_for_backends(tmp_path, monkeypatch):
    # node.tls_ca names the data space's CA: a peer whose certificate a CA of the system store issued is refused,
    # while an asset's HTTP backend (the provider's own system, not a peer) is checked against the system store.
    import aiohttp.connector
    from aiohttp import web

    from connector.errors import PeerError
    from connector.http.tls import client_context
    from connector.net.client import PeerClient
    from connector.net.guard import OutboundPolicy
    from connector.testing import free_port

    space, public = trustme.CA(), trustme.CA()
    space.cert_pem.write_to_path(str(tmp_path / "space.pem"))
    system_store = ssl.create_default_context(cafile=None, cadata=public.cert_pem.bytes().decode())
    monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", system_store)  # what `ssl=True` trusts
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    public.issue_cert("127.0.0.1").configure_cert(served)
    async def data(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/data", data)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=served).start()
    client = PeerClient(OutboundPolicy.build(True, []), timeout_s=5,
                        ssl_context=client_context(str(tmp_path / "space.pem")))
    try:
        with pytest.raises(PeerError, match="certificate verify failed"):
            await client.request("GET", f"https://127.0.0.1:{port}/data")
        async with client.stream(f"https://127.0.0.1:{port}/data", backend=True) as answer:
            assert answer.status == 200 and await answer.text() == "ok"
    finally:
        await client.close()
        await runner.cleanup()
