"""Strangers flooding a node: fresh did:key identities cost nothing, so a budget per peer alone does not hold.

Each test attacks a real node on 127.0.0.1 with requests signed (RFC 9421) by did:key identities made on
the spot, and checks that all unknown peers together stay within the node-wide budget of ``[dsp]`` while
a peer with an agreement keeps its own, and that negotiations strangers leave hanging end on a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web
from nacl.signing import SigningKey

from connector.config import DspSection
from connector.identity import did as dids
from connector.net import signing
from connector.protocol import contracts
from connector.protocol import messages as m
from connector.testing import eventually, free_port

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


@dataclass(frozen=True)
class Stranger:
    key: SigningKey
    key_id: str

    @classmethod
    def new(cls) -> Stranger:
        key = SigningKey.generate()
        return cls(key, dids.signing_key_id(dids.did_key_for(bytes(key.verify_key))))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict


async def post_signed(session: aiohttp.ClientSession, url: str, message: dict, *, key: SigningKey,
                      key_id: str) -> Answer:
    raw = json.dumps(message).encode()
    headers = signing.sign_request("POST", url, raw, key=key, key_id=key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with session.post(url, data=raw, headers=headers) as r:
        return Answer(r.status, dict(r.headers), await r.json(content_type=None))


async def flood(url: str, messages: list[dict], *, concurrency: int = 50) -> tuple[list[Answer], float]:
    """Send each message from a fresh did:key identity, *concurrency* at a time; the answers and the
    seconds the flood took."""
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, message: dict) -> Answer:
        async with gate:
            stranger = Stranger.new()
            return await post_signed(session, url, message, key=stranger.key, key_id=stranger.key_id)

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(one(session, message) for message in messages))
    return list(answers), time.monotonic() - started


async def publish(node) -> None:
    await node.client.add_asset({"id": "qi-2026", "title": "Quality inspection results", "dataClass": "general"})
    await node.client.add_policy("open", OPEN)
    await node.client.add_contract_definition("cd1", access_policy_id="open", contract_policy_id="open",
                                              assets=["qi-2026"])


async def stranger_request(provider) -> dict:
    """A ContractRequestMessage for the provider's offer, as a stranger would build it from the catalog."""
    stranger = Stranger.new()
    url = f"{provider.participant.dsp_base}/catalog/request"
    async with aiohttp.ClientSession() as session:
        answer = await post_signed(session, url, m.encode(m.CatalogRequestMessage()), key=stranger.key,
                                   key_id=stranger.key_id)
    assert answer.status == 200, answer.body
    dataset = answer.body["dataset"][0]
    offer = dataset["hasPolicy"][0]
    return {"offer": contracts.message_offer(contracts.read_policy(offer, "offer"), offer["@id"], dataset["@id"])}


def request_message(template: dict, callback: str) -> dict:
    return m.encode(m.ContractRequestMessage(consumerPid=f"urn:uuid:{uuid.uuid4()}", offer=template["offer"],
                                             callbackAddress=callback))


def assert_refused(answer: Answer) -> None:
    assert answer.status == 429, answer.body
    assert int(answer.headers["Retry-After"]) >= 1
    assert "retry after" in str(answer.body)


async def test_fresh_identities_share_one_budget_for_catalog_requests(nodes):
    budget = DspSection(unknown_peer_rate_per_s=5.0, unknown_peer_burst=40)
    provider = await nodes.start("acme", dsp=budget)
    url = f"{provider.participant.dsp_base}/catalog/request"
    answers, elapsed = await flood(url, [m.encode(m.CatalogRequestMessage())] * 700)
    served = [a for a in answers if a.status == 200]
    # Refused requests take no token: what was served is at most the burst plus what refilled meanwhile.
    allowed = budget.unknown_peer_burst + budget.unknown_peer_rate_per_s * elapsed
    assert budget.unknown_peer_burst <= len(served) <= allowed
    refused = [a for a in answers if a.status != 200]
    assert len(refused) == 700 - len(served) >= 700 - allowed
    for answer in refused:
        assert_refused(answer)
        assert answer.body["@type"] == "CatalogError"


async def test_strangers_over_the_budget_make_the_node_fetch_nothing(nodes):
    # did:web strangers pointing at a server that counts the DID documents the node asks it for.
    fetched: list[str] = []

    async def did_document(request: web.Request) -> web.Response:
        fetched.append(request.path)
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{tail:.*}", did_document)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        budget = DspSection(unknown_peer_rate_per_s=1.0, unknown_peer_burst=5)
        provider = await nodes.start("acme", dsp=budget)
        url = f"{provider.participant.dsp_base}/catalog/request"
        raw = json.dumps(m.encode(m.CatalogRequestMessage())).encode()
        started = time.monotonic()
        statuses = []
        async with aiohttp.ClientSession() as session:
            for n in range(100):
                key_id = f"did:web:127.0.0.1%3A{port}:stranger:{n}#key-1"
                headers = signing.sign_request("POST", url, raw, key=SigningKey.generate(), key_id=key_id,
                                               now=time.time(), headers={"Content-Type": "application/json"})
                async with session.post(url, data=raw, headers=headers) as r:
                    statuses.append(r.status)
        elapsed = time.monotonic() - started
    finally:
        await runner.cleanup()
    # Unresolvable strangers are refused (401) within the budget, and beyond it without any fetch (429).
    assert set(statuses) == {401, 429}
    assert len(fetched) == statuses.count(401) <= budget.unknown_peer_burst + budget.unknown_peer_rate_per_s * elapsed


async def agreed_pair(nodes):
    """A provider whose unknown-peer budget is nearly all burst, and a consumer with a FINALIZED agreement
    with it, made through a normal negotiation (itself drawing on that budget while the consumer is unknown)."""
    provider = await nodes.start("acme", dsp=DspSection(unknown_peer_rate_per_s=0.5, unknown_peer_burst=40))
    consumer = await nodes.start("parts")
    await publish(provider)
    catalog = await consumer.client.catalog(provider.public_url)
    started = await consumer.client.negotiate(provider.public_url, catalog["dataset"][0]["hasPolicy"][0]["@id"])
    assert (await consumer.client.negotiation(started["id"], wait_s=10))["state"] == "FINALIZED"
    return provider, consumer


async def exhaust_and_ask_as(provider, known) -> Answer:
    """Flood the provider with strangers until they are refused, then send a catalog request as *known*."""
    url = f"{provider.participant.dsp_base}/catalog/request"
    answers, _ = await flood(url, [m.encode(m.CatalogRequestMessage())] * 60)
    assert_refused(answers[-1])
    async with aiohttp.ClientSession() as session:
        return await post_signed(session, url, m.encode(m.CatalogRequestMessage()), key=known.keys.signing,
                                 key_id=known.key_id)


async def test_known_peer_is_served_while_strangers_exhaust_their_budget(nodes):
    provider, consumer = await agreed_pair(nodes)
    answer = await exhaust_and_ask_as(provider, consumer.participant)
    qi = f"urn:tds:asset:{provider.participant.did}:qi-2026"
    assert answer.status == 200 and answer.body["dataset"][0]["@id"] == qi


async def test_a_peer_stays_known_after_the_provider_restarts(nodes):
    provider, consumer = await agreed_pair(nodes)
    await nodes.restart(provider)
    answer = await exhaust_and_ask_as(provider, consumer.participant)
    qi = f"urn:tds:asset:{provider.participant.did}:qi-2026"
    assert answer.status == 200 and answer.body["dataset"][0]["@id"] == qi


async def test_strangers_cannot_open_more_negotiations_than_the_budget(nodes):
    limit = 20
    provider = await nodes.start("acme", delivery_timeout_s=60.0, dsp=DspSection(
        unknown_peer_rate_per_s=1000.0, unknown_peer_burst=1000, unknown_peer_open_negotiations=limit))
    await publish(provider)
    template = await stranger_request(provider)
    closed = f"http://127.0.0.1:{free_port()}/callback"
    url = f"{provider.participant.dsp_base}/negotiations/request"
    answers, _ = await flood(url, [request_message(template, closed) for _ in range(200)])
    assert sum(a.status == 201 for a in answers) == limit
    refused = [a for a in answers if a.status != 201]
    assert len(refused) == 200 - limit
    for answer in refused:
        assert_refused(answer)
        assert answer.body["@type"] == "ContractNegotiationError"
    assert len(await provider.client.negotiations()) == limit


async def test_negotiations_left_hanging_by_strangers_end_and_free_their_place(nodes):
    limit = 5
    provider = await nodes.start("acme", delivery_timeout_s=1.5, negotiation_timeout_s=1.5, dsp=DspSection(
        unknown_peer_rate_per_s=1000.0, unknown_peer_burst=1000, unknown_peer_open_negotiations=limit))
    await publish(provider)
    template = await stranger_request(provider)
    # One kind of stranger gives a callback nothing listens on; the other acknowledges and never moves on.
    silent = web.Application()
    silent.router.add_route("*", "/{tail:.*}", _acknowledge)
    runner = web.AppRunner(silent)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"{provider.participant.dsp_base}/negotiations/request"
        callbacks = [f"http://127.0.0.1:{free_port()}/closed", f"http://127.0.0.1:{port}/silent"]
        answers, _ = await flood(url, [request_message(template, callbacks[i % 2]) for i in range(limit)])
        assert [a.status for a in answers] == [201] * limit
        [late], _ = await flood(url, [request_message(template, callbacks[0])])
        assert_refused(late)

        async def all_ended():
            found = await provider.client.negotiations()
            return found if all(n["state"] == "TERMINATED" for n in found) else None

        ended = await eventually(all_ended, 30.0, what="every negotiation TERMINATED")
        reasons = sorted(n["reason"] for n in ended)
        assert sum("could not be delivered" in r for r in reasons) == (limit + 1) // 2, reasons
        assert sum("no progress" in r for r in reasons) == limit // 2, reasons
        [again], _ = await flood(url, [request_message(template, callbacks[0])])
        assert again.status == 201, again.body
    finally:
        await runner.cleanup()


async def test_ended_negotiations_of_strangers_are_deleted_after_the_retention(nodes):
    provider = await nodes.start("acme", delivery_timeout_s=1.0, dsp=DspSection(
        unknown_peer_rate_per_s=1000.0, unknown_peer_burst=1000, unknown_peer_retention_s=0.5))
    await publish(provider)
    template = await stranger_request(provider)
    url = f"{provider.participant.dsp_base}/negotiations/request"
    closed = f"http://127.0.0.1:{free_port()}/callback"
    answers, _ = await flood(url, [request_message(template, closed) for _ in range(10)])
    assert [a.status for a in answers] == [201] * 10

    async def all_terminated():
        found = await provider.client.negotiations()
        return found if len(found) == 10 and all(n["state"] == "TERMINATED" for n in found) else None

    await eventually(all_terminated, 30.0, what="every negotiation TERMINATED")
    # Past the retention: the admission's clocks move on by a second instead of the test waiting one out.
    admission = provider.node.admission
    admission.clock = lambda: datetime.now(UTC) + timedelta(seconds=1)
    admission.monotonic = lambda: time.monotonic() + 1.0
    [opened], _ = await flood(url, [request_message(template, closed)])
    assert opened.status == 201

    async def only_the_new_one():
        found = await provider.client.negotiations()
        return found if [n["id"] for n in found] == [opened.body["providerPid"]] else None

    await eventually(only_the_new_one, 10.0, what="only the new negotiation left")


async def _acknowledge(_: web.Request) -> web.Response:
    return web.json_response({})
