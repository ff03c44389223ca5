"""Assets behind the provider's own HTTP backend: snapshotted, transferred, refreshed as new versions."""

from __future__ import annotations

import hashlib

import pytest
from aiohttp import web

from connector.client import ClientError
from connector.testing import free_port, vault_plaintext


@pytest.fixture
async def backend():
    """The provider's own HTTP backend (a plain aiohttp server on 127.0.0.1)."""
    content = {"body": b"lot,yield\nL1,0.97\n"}

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=content["body"], content_type="text/csv")

    app = web.Application()
    app.add_routes([web.get("/exports/yield.csv", serve)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}/exports", content
    await runner.cleanup()


async def _pull(provider, consumer):
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    agreement = (await consumer.client.negotiation(started["id"], wait_s=10))["agreement"]["@id"]
    record = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(record["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    return vault_plaintext(consumer.data_dir, final["vaultPath"]), agreement


async def test_backend_data_is_snapshotted_transferred_and_refreshed(nodes, backend):
    url, content = backend
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    asset = await provider.client.add_asset({"id": "yield", "dataAddress": {"type": "HttpData",
                                                                            "url": f"{url}/yield.csv"}})
    address = asset["dataAddress"]
    assert address["type"] == "File" and address["origin"] == f"{url}/yield.csv"
    assert address["sha256"] == hashlib.sha256(content["body"]).hexdigest()
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["yield"])
    received, agreement = await _pull(provider, consumer)
    assert received == content["body"]

    unchanged = await provider.client._call("POST", "/assets/yield/refresh")
    assert unchanged["changed"] is False
    content["body"] = b"lot,yield\nL1,0.97\nL2,0.91\n"
    refreshed = await provider.client._call("POST", "/assets/yield/refresh")
    assert refreshed["changed"] is True and refreshed["dataAddress"]["sha256"] != address["sha256"]
    record = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(record["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert vault_plaintext(consumer.data_dir, final["vaultPath"]) == content["body"]  # the new version


async def test_backend_errors_are_readable(nodes, backend):
    url, _ = backend
    provider = await nodes.start("acme")
    with pytest.raises(ClientError) as info:
        await provider.client.add_asset({"id": "x", "dataAddress": {"type": "HttpData", "url": f"{url}/nope"}})
    assert info.value.status == 400 and info.value.path == "dataAddress.url" and "404" in info.value.message
    strict = await nodes.start("strict", dev_mode=False, trusted_networks=("192.0.2.0/24",))
    with pytest.raises(ClientError) as info:  # a private backend must be in trusted_networks
        await strict.client.add_asset({"id": "x", "dataAddress": {"type": "HttpData", "url": f"{url}/yield.csv"}})
    assert info.value.status == 400 and "refus" in info.value.message
    assert await strict.client.entries("assets") == []
