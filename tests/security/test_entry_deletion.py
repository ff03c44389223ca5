"""Deleting catalog entries over the management API: what an offer or an agreement still needs is refused with
a 409 naming it, another participant's token gets 404 and changes nothing, and an agreement made under a
deleted offer and policy keeps working (its terms are copied into it)."""

from __future__ import annotations

import aiohttp
from attack_setup import agreement_with_data

from connector.http.management import PREFIX

RND = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"}]}]}


async def call(node, method: str, path: str, token: str | None = None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token or node.token}"}
    async with aiohttp.ClientSession(headers=headers) as s, s.request(
            method, f"{node.node.management_url}{PREFIX}{path}") as r:
        return r.status, await r.json(content_type=None) if r.status != 204 else None


async def test_what_an_agreement_needs_stays_and_the_agreement_keeps_working(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, RND)  # asset qi, policies open and terms, offer cd

    status, body = await call(provider, "DELETE", "/policies/terms")
    assert status == 409 and body["references"] == {"offers": ["cd"]} and "offers cd" in body["message"], body
    status, body = await call(provider, "DELETE", "/assets/qi")
    assert status == 409 and body["references"] == {"offers": ["cd"], "agreements": [agreement]}, body
    assert f"agreements {agreement}" in body["message"]
    for path in ("/policies/terms", "/policies/open", "/assets/qi", "/contract-definitions/cd"):
        assert (await call(provider, "GET", path))[0] == 200  # nothing was deleted

    # The offer and its policies go; peers no longer see it, and the agreement made under it holds its own terms.
    for path in ("/contract-definitions/cd", "/policies/terms", "/policies/open"):
        assert (await call(provider, "DELETE", path))[0] == 204, path
    assert (await consumer.client.catalog(provider.public_url)).get("dataset", []) == []
    assert (await consumer.client.use(agreement, "after-1", purpose="R&D"))["decision"] == "permit"
    assert (await consumer.client.use(agreement, "after-2", purpose="sales"))["decision"] == "deny"
    started = await consumer.client.start_transfer(agreement)
    assert (await consumer.client.transfer(started["id"], wait_s=20))["state"] == "COMPLETED"

    status, body = await call(provider, "DELETE", "/assets/qi")  # its transfers still read the asset's data
    assert status == 409 and body["references"] == {"agreements": [agreement]}, body
    await provider.client.revoke(agreement, "contract ended")
    assert (await call(provider, "DELETE", "/assets/qi"))[0] == 204
    assert await provider.client.entries("assets") == []


async def test_another_participants_token_gets_404_and_deletes_nothing(nodes):
    host = await nodes.start("acme")
    other = await nodes.host(host, "sme-one")
    await host.client.add_asset({"id": "qi"})
    await host.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await host.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                              assets=["qi"])
    for path in ("/contract-definitions/cd", "/policies/open", "/assets/qi"):
        assert (await call(other.host, "DELETE", path, token=other.token))[0] == 404, path
        assert (await call(other.host, "GET", path, token=other.token))[0] == 404, path
        assert (await call(host, "GET", path))[0] == 200, path
    for kind in ("assets", "policies", "contract-definitions"):
        assert await other.client.entries(kind) == []
        assert len(await host.client.entries(kind)) == 1


async def test_the_api_document_names_the_refusals_of_a_deletion(nodes):
    node = await nodes.start("acme")
    async with aiohttp.ClientSession() as s, s.get(f"{node.node.management_url}{PREFIX}/openapi.json") as r:
        paths = (await r.json())["paths"]
    for kind, refused in (("assets", True), ("policies", True), ("contract-definitions", False)):
        responses = paths[f"{PREFIX}/{kind}/{{id}}"]["delete"]["responses"]
        assert "204" in responses and "404" in responses
        assert ("409" in responses) is refused, kind
