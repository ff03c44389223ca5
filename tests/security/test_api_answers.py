"""Attack: inputs that used to get a 500, an answer the API document did not mention, or the wrong status.

Each test sends the input against real nodes on 127.0.0.1 and checks that it is refused with a 4xx naming
what is wrong, and that the answer is the one the served OpenAPI document describes. The schema-driven
fuzz of both APIs is in ``test_fuzz_management.py`` and ``test_fuzz_dsp.py``.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import aiohttp
import pytest
from attack_setup import CONTENT, agreement_with_data, post_signed

from connector.http.management import PREFIX

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
#: Digits ``str.isdigit`` accepts and ``int`` refuses (superscripts), or reads (other scripts, full width).
ODD_DIGITS = ["\u00b9", "\u00b2", "\u0663", "\uff11"]


async def management(node, method: str, path: str, *, token: str | None = None, body: bytes | None = None):
    headers = {"Authorization": f"Bearer {token or node.token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s, s.request(method, f"{node.node.management_url}{PREFIX}{path}",
                                                       data=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def served_document(node) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"{node.node.management_url}{PREFIX}/openapi.json") as r:
        return await r.json()


@pytest.mark.parametrize("digit", ODD_DIGITS)
@pytest.mark.parametrize("listing", ["/negotiations", "/transfers"])
async def test_a_digit_of_another_script_in_limit_is_a_400_naming_limit(nodes, listing, digit):
    node = await nodes.start("acme")
    status, _, body = await management(node, "GET", f"{listing}?limit={digit}")
    assert (status, body["path"]) == (400, "limit"), body
    assert "1 to 1000" in body["message"]


@pytest.mark.parametrize(("name", "value"), [("offset", "\u00b9"), ("limit", "\u00b2"), ("offset", "\u0663"),
                                           ("limit", "-1")])
async def test_a_digit_of_another_script_in_signed_catalog_paging_is_a_catalog_error(nodes, name, value):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    url = f"{provider.participant.dsp_base}/catalog/request?{urlencode({name: value})}"
    status, body = await post_signed(consumer.participant, url, {
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "CatalogRequestMessage"})
    assert status == 400 and body["@type"] == "CatalogError", body
    assert name in body["reason"][0]


async def test_a_method_the_management_path_lacks_is_a_405_with_allow(nodes):
    node = await nodes.start("acme")
    status, headers, body = await management(node, "PUT", "/tokens")
    assert status == 405 and set(headers["Allow"].split(",")) >= {"GET", "POST"}
    assert body["error"] == "method-not-allowed" and "PUT" in body["message"] and "POST" in body["message"]


async def test_a_method_the_public_path_lacks_is_a_405_with_allow(nodes):
    node = await nodes.start("acme")
    async with aiohttp.ClientSession() as s, s.delete(f"{node.participant.base_url}/did.json") as r:
        status, allow, body = r.status, r.headers.get("Allow", ""), await r.json()
    assert status == 405 and "GET" in allow.split(",")
    assert body["error"] == "method-not-allowed" and "DELETE" in body["message"]


@pytest.mark.parametrize("body", [b'{"id": "a1", "title": "\\ud800"}', b'{"id": "a1", "keywords": ["\\udfff"]}',
                                  '{"id": "a1", "title": "x"}'.encode("utf-16")])
async def test_a_body_that_is_not_unicode_text_is_a_400(nodes, body):
    node = await nodes.start("acme")
    status, _, answer = await management(node, "POST", "/assets", body=body)
    assert status == 400 and answer["error"] == "bad-request", answer
    assert "surrogate" in answer["message"] or "UTF-8" in answer["message"]
    assert await node.client.entries("assets") == []


async def test_a_lone_surrogate_in_a_signed_dsp_message_is_a_dsp_error(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    status, body = await post_signed(consumer.participant, f"{provider.participant.dsp_base}/negotiations/request", {
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "ContractRequestMessage",
        "consumerPid": "urn:uuid:\ud800", "offer": {"@id": "x", "@type": "Offer"},
        "callbackAddress": consumer.participant.dsp_base})
    assert status == 400 and body["@type"] == "ContractNegotiationError" and "surrogate" in body["reason"][0], body


@pytest.mark.parametrize("callback", ["http://127.0.0.1:1/a b", "http://127.0.0.1:1/\u00e9", "http://127.0.0.1:1/%zz"])
async def test_a_callback_address_that_cannot_be_signed_is_refused_when_it_comes_in(nodes, callback):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await provider.client.add_asset({"id": "qi"})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["qi"])
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]
    status, body = await post_signed(consumer.participant, f"{provider.participant.dsp_base}/negotiations/request", {
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "ContractRequestMessage",
        "consumerPid": "urn:uuid:0b7c6bd6-8f5e-4b52-9d0f-3c2f4f3f6a11", "offer": offer, "callbackAddress": callback})
    assert status == 400 and "callbackAddress" in body["reason"][0], body
    assert await provider.node.contracts.negotiations(provider.participant.id) == []


@pytest.mark.parametrize("peer", ["did:web:%ZZ", "did:web:a%00b", "did:web:a%2Fb:x"])
async def test_a_did_web_with_an_impossible_host_is_a_400_not_an_unreachable_peer(nodes, peer):
    node = await nodes.start("acme")
    status, _, body = await management(node, "POST", "/peers/verify", body=json.dumps({"peer": peer}).encode())
    assert (status, body["path"]) == (400, "peer") and "did:web" in body["message"], body


@pytest.mark.parametrize("step", ["accept", "terminate"])
async def test_an_operator_step_a_finalized_negotiation_does_not_allow_is_a_409(nodes, step):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await agreement_with_data(provider, consumer, OPEN, pull=False)
    [negotiation] = await consumer.client.negotiations()
    body = json.dumps({"reason": "changed my mind"}).encode() if step == "terminate" else None
    status, _, answer = await management(consumer, "POST", f"/negotiations/{negotiation['id']}/{step}", body=body)
    assert status == 409 and "FINALIZED" in answer["message"], answer
    assert (await consumer.client.negotiation(negotiation["id"]))["state"] == "FINALIZED"


@pytest.mark.parametrize("step", ["suspend", "resume", "terminate"])
async def test_an_operator_step_a_completed_transfer_does_not_allow_is_a_409(nodes, step):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await agreement_with_data(provider, consumer, OPEN)
    [transfer] = await consumer.client.transfers()
    status, _, answer = await management(consumer, "POST", f"/transfers/{transfer['id']}/{step}")
    assert status == 409 and answer["error"] == "conflict", answer
    assert (await consumer.client.transfer(transfer["id"]))["state"] == "COMPLETED"


async def test_a_body_over_the_node_limit_is_a_413_the_document_names(nodes):
    node = await nodes.start("acme", max_request_bytes=4096)
    status, _, answer = await management(node, "POST", "/assets",
                                         body=json.dumps({"id": "a1", "description": "x" * 5000}).encode())
    assert status == 413 and "node.max_request_bytes" in answer["message"], answer
    documented = (await served_document(node))["paths"][f"{PREFIX}/assets"]["post"]["responses"]["413"]
    assert "4096 bytes" in documented["description"]


async def test_the_released_data_is_the_answer_the_document_describes(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, OPEN)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {consumer.token}"}) as s, s.post(
            f"{consumer.node.management_url}{PREFIX}/usage",
            json={"agreementId": agreement, "useId": f"u-{time.time_ns()}", "purpose": "R&D"}) as r:
        status, content_type, headers, data = r.status, r.content_type, r.headers, await r.read()
    assert status == 200 and data == CONTENT
    answer = (await served_document(consumer))["paths"][f"{PREFIX}/usage"]["post"]["responses"]["200"]
    assert content_type in answer["content"] or "*/*" in answer["content"]
    assert "application/octet-stream" in answer["content"] and "application/json" in answer["content"]
    assert {"X-TDS-Decision", "X-TDS-Log-Seq", "X-TDS-Log-Hash"} <= set(answer["headers"]) <= set(headers)


@pytest.mark.parametrize(("path", "name", "schema"), [
    ("/negotiations", "limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
    ("/transfers", "limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
    ("/negotiations/{id}", "wait", {"type": "number", "minimum": 0}),
    ("/transfers/{id}", "wait", {"type": "number", "minimum": 0}),
])
async def test_the_document_states_the_ranges_the_routes_enforce(nodes, path, name, schema):
    node = await nodes.start("acme")
    parameters = (await served_document(node))["paths"][PREFIX + path]["get"]["parameters"]
    [documented] = [p["schema"] for p in parameters if p["name"] == name]
    assert schema.items() <= documented.items()
    below = schema["minimum"] - 1
    status, _, body = await management(node, "GET", f"{path.replace('{id}', 'x')}?{name}={below}")
    assert (status, body["path"]) == (400, name), body

