"""Attacks that aim the node at its own listeners: a callback, data address, did:web or HTTP backend that
leads into the management API (or, for a backend, the public listener too). All nodes run in dev mode,
where loopback is otherwise allowed: the line holds in every mode.

Whether the node sent anything to its management listener is read from that listener's request counter,
which the test itself leaves alone while the attack runs (it waits on the store, not on the API).
"""

from __future__ import annotations

import json
import socket
import time

import aiohttp
import pytest
from nacl.signing import SigningKey

from connector.client import ClientError
from connector.net import signing
from connector.protocol import messages as m
from connector.testing import eventually

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
MGMT_PATH = "/api/management/v1/participants"
#: A name that the hostile peer's DNS zone points at this machine (see the ``rebinding_dns`` fixture).
REBOUND = "mgmt.rebind.test"


def requests_to(node, listener: str) -> float:
    """Requests the *listener* ("management" or "public") of *node* has answered so far."""
    return sum(sample.value for metric in node.metrics.requests_total.collect() for sample in metric.samples
               if sample.name.endswith("_total") and sample.labels.get("listener") == listener)


@pytest.fixture
def rebinding_dns(monkeypatch):
    """DNS that answers 127.0.0.1 for *REBOUND*: a name only the connect-time check can see through."""
    real = aiohttp.ThreadedResolver.resolve

    async def resolve(self, host, port=0, family=socket.AF_INET):
        if host == REBOUND:
            return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0,
                     "flags": socket.AI_NUMERICHOST}]
        return await real(self, host, port, family)

    monkeypatch.setattr(aiohttp.ThreadedResolver, "resolve", resolve)


async def publish(node) -> None:
    await node.client.add_asset({"id": "qi-2026", "title": "Quality inspection results"})
    await node.client.add_policy("open", OPEN)
    await node.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                              assets=["qi-2026"])


async def signed_post(sender, url: str, body: dict) -> tuple[int, dict]:
    p = sender.participant
    raw = json.dumps(body).encode()
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def contract_request(attacker, provider, callback: str) -> tuple[int, dict]:
    offer = (await attacker.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    body = m.encode(m.ContractRequestMessage(
        consumerPid="urn:uuid:own-listener-attack", callbackAddress=callback,
        offer={"@id": offer, "@type": "Offer", "target": "qi-2026", "permission": [{"action": "use"}]}))
    return await signed_post(attacker, f"{provider.participant.dsp_base}/negotiations/request", body)


async def settled(node, negotiation_id: str, timeout_s: float = 10.0):
    """The provider's negotiation once in a final state, read from the store (not through the API)."""
    participant = node.node.participants.first()

    async def final():
        record = await node.node.contracts.negotiation(participant.id, negotiation_id)
        return record if record is not None and record.state in ("FINALIZED", "TERMINATED") else None

    return await eventually(final, timeout_s, what=f"negotiation {negotiation_id} in a final state")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "127.0.0.2", "[::1]",
                                  "[::ffff:127.0.0.1]", "0.0.0.0"])
async def test_a_callback_to_the_management_listener_is_refused_at_once(nodes, host):
    provider, attacker = await nodes.start("acme"), await nodes.start("mallory")
    await publish(provider)
    before = requests_to(provider.node, "management")
    status, answer = await contract_request(
        attacker, provider, f"http://{host}:{provider.node.management_port}{MGMT_PATH}")
    assert status == 400, answer
    assert answer["@type"] == "ContractNegotiationError"
    assert "callbackAddress refused" in answer["reason"][0]
    assert "is this node's own management listener: refused" in answer["reason"][0]
    assert requests_to(provider.node, "management") == before
    assert await provider.client.negotiations() == []


async def test_a_callback_whose_name_resolves_to_the_management_listener_ends_the_negotiation(
        nodes, rebinding_dns):
    provider, attacker = await nodes.start("acme"), await nodes.start("mallory")
    await publish(provider)
    before = requests_to(provider.node, "management")
    status, ack = await contract_request(
        attacker, provider, f"http://{REBOUND}:{provider.node.management_port}{MGMT_PATH}")
    assert status == 201, ack  # the name alone says nothing: it is checked on every address it resolves to
    final = await settled(provider, ack["providerPid"])
    assert final.state == "TERMINATED"
    assert f"{REBOUND} (port {provider.node.management_port}) is this node's own management listener: refused" \
        in final.reason
    assert "after 1 attempt(s)" in final.reason  # a refusal is final, not retried
    assert requests_to(provider.node, "management") == before


async def test_a_socket_to_the_management_listener_is_refused_even_past_the_url_check(nodes):
    node = (await nodes.start("acme")).node
    before = requests_to(node, "management")
    with pytest.raises(aiohttp.ClientConnectorError, match="own management listener: refused"):
        async with node.client.session.get(f"http://127.0.0.1:{node.management_port}{MGMT_PATH}"):
            pass
    assert requests_to(node, "management") == before


async def test_a_did_web_on_the_management_listener_is_never_fetched(nodes):
    provider = await nodes.start("acme")
    before = requests_to(provider.node, "management")
    key_id = f"did:web:127.0.0.1%3A{provider.node.management_port}#key-1"
    url = f"{provider.participant.dsp_base}/catalog/request"
    raw = json.dumps(m.encode(m.CatalogRequestMessage())).encode()
    headers = signing.sign_request("POST", url, raw, key=SigningKey.generate(), key_id=key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as resp:
        assert resp.status == 401, await resp.text()
        assert "own management listener" in await resp.text()
    assert requests_to(provider.node, "management") == before


async def test_a_push_endpoint_on_the_management_listener_is_refused(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    agreement = (await consumer.client.negotiation(started["id"], wait_s=10))["agreement"]["@id"]
    before = requests_to(provider.node, "management")
    endpoint = f"http://localhost:{provider.node.management_port}{MGMT_PATH}"
    status, answer = await signed_post(consumer, f"{provider.participant.dsp_base}/transfers/request", {
        "@context": [m.DSP_CONTEXT], "@type": "TransferRequestMessage", "consumerPid": "urn:uuid:push-attack",
        "agreementId": agreement, "format": "HttpData-PUSH", "callbackAddress": consumer.participant.dsp_base,
        "dataAddress": {"@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                        "endpoint": endpoint,
                        "endpointProperties": [{"@type": "EndpointProperty", "name": "authorization",
                                                "value": "t"}]}})
    assert status == 400, answer
    assert "dataAddress.endpoint refused" in answer["reason"][0]
    assert "own management listener: refused" in answer["reason"][0]
    assert requests_to(provider.node, "management") == before
    assert await provider.client.transfers() == []


async def _backend_refused(node, url: str) -> ClientError:
    with pytest.raises(ClientError) as info:
        await node.client.add_asset({"id": "leak", "dataAddress": {"type": "HttpData", "url": url}})
    return info.value


async def test_a_backend_on_the_management_listener_is_refused(nodes):
    provider = await nodes.start("acme")
    before = requests_to(provider.node, "management")
    error = await _backend_refused(provider, f"http://127.0.0.1:{provider.node.management_port}{MGMT_PATH}")
    assert error.status == 400 and error.path == "dataAddress.url"
    assert "own management listener: refused" in error.message
    assert requests_to(provider.node, "management") == before + 1  # the add_asset call itself, nothing more
    assert await provider.client.entries("assets") == []


@pytest.mark.parametrize("path", ["/healthz", "/participants/{other}/did.json"])
async def test_a_backend_on_the_public_listener_is_refused(nodes, path):
    provider = await nodes.start("acme")
    other = await nodes.host(provider, "sme")
    before = requests_to(provider.node, "public")
    error = await _backend_refused(provider, provider.public_url + path.format(other=other.name))
    assert error.status == 400 and "own public origin: refused" in error.message
    assert requests_to(provider.node, "public") == before
    assert await provider.client.entries("assets") == []


@pytest.mark.parametrize("host", ["localhost", REBOUND])
async def test_a_backend_on_the_public_port_by_another_name_is_refused(nodes, rebinding_dns, host):
    provider = await nodes.start("acme")
    before = requests_to(provider.node, "public")
    error = await _backend_refused(provider, f"http://{host}:{provider.node.public_port}/healthz")
    assert error.status == 400 and "own public listener: refused" in error.message
    assert requests_to(provider.node, "public") == before
