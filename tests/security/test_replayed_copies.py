"""Attack: capture one signed DSP request (or sign one) and send copies of it all at once, before the first is
stored, hoping that more than one takes effect: several negotiations opened, agreements sent, receipts counted.

A nonce is claimed before the request is handled, and only one copy may win it: within one process (whose store
read of the nonce may wait, on PostgreSQL), and across processes sharing a PostgreSQL store, where the claim is
settled by the committed row before the request writes anything."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import pytest
from nacl.signing import SigningKey

from connector.config import DspSection
from connector.identity import did as dids
from connector.net import signing
from connector.protocol import contracts
from connector.protocol import messages as m
from connector.store.db import Store
from connector.store.repository import SqliteRepository
from connector.testing import free_port

COPIES = 20
EXPIRES = 2_000_000_000
OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: Any, tmp_path: Any) -> Any:
    if request.param == "sqlite":
        return tmp_path / "nonces.db"
    return request.getfixturevalue("postgres_schema")


async def test_copies_claimed_at_once_in_one_process_are_won_by_one(location):
    store = Store(location)
    await store.open()
    try:
        repo = SqliteRepository(store)
        claims = await asyncio.gather(*(repo.claim_nonce("did:key:z#k", "n1", EXPIRES, 1_000)
                                        for _ in range(COPIES)))
        won = [c for c in claims if c is not None]
        assert len(won) == 1 and await won[0]
        # And once stored, a later copy is refused too.
        assert await repo.claim_nonce("did:key:z#k", "n1", EXPIRES, 1_001) is None
    finally:
        await store.close()


async def test_copies_sent_to_two_processes_sharing_a_store_are_won_by_one(postgres_schema):
    first, second = Store(postgres_schema), Store(postgres_schema)
    await first.open()
    await second.open()
    try:
        repos = [SqliteRepository(first), SqliteRepository(second)]
        claims = await asyncio.gather(*(repos[i % 2].claim_nonce("did:key:z#k", "n1", EXPIRES, 1_000)
                                        for i in range(COPIES)))
        won = [c for c in claims if c is not None]
        assert len(won) == 1
        # Settled before the request goes on: the winning copy's nonce is committed already.
        assert won[0].done() and won[0].result() is True
    finally:
        await first.close()
        await second.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def provider(request, nodes, monkeypatch):
    """acme offering one asset under an open policy, its store on SQLite or on PostgreSQL; strangers may open as
    many negotiations as the copies."""
    if request.param == "postgresql":
        request.getfixturevalue("nodes_on_postgres")
    else:
        monkeypatch.delenv("TDS_STORE", raising=False)
    side = await nodes.start("acme", dsp=DspSection(unknown_peer_rate_per_s=1000.0, unknown_peer_burst=1000,
                                                    unknown_peer_open_negotiations=1000))
    await side.client.add_asset({"id": "qi", "title": "QI", "dataClass": "general"})
    await side.client.add_policy("open", OPEN)
    await side.client.add_contract_definition("cd1", access_policy_id="open", contract_policy_id="open",
                                              assets=["qi"])
    yield side
    await side.node.stop()  # before its schema goes (nodes_on_postgres)


async def test_copies_of_one_signed_contract_request_open_one_negotiation(provider):
    key = SigningKey.generate()
    key_id = dids.signing_key_id(dids.did_key_for(bytes(key.verify_key)))
    base = provider.participant.dsp_base

    def signed(url: str, body: bytes) -> dict[str, str]:
        return signing.sign_request("POST", url, body, key=key, key_id=key_id, now=time.time(),
                                    headers={"Content-Type": "application/json"})

    async with aiohttp.ClientSession() as session:
        body = json.dumps(m.encode(m.CatalogRequestMessage())).encode()
        async with session.post(f"{base}/catalog/request", data=body,
                                headers=signed(f"{base}/catalog/request", body)) as resp:
            assert resp.status == 200
            [dataset] = (await resp.json())["dataset"]
        offer = dataset["hasPolicy"][0]
        consumer_pid = f"urn:uuid:{uuid.uuid4()}"
        body = json.dumps(m.encode(m.ContractRequestMessage(
            consumerPid=consumer_pid,
            offer=contracts.message_offer(contracts.read_policy(offer, "offer"), offer["@id"], dataset["@id"]),
            callbackAddress=f"http://127.0.0.1:{free_port()}/callback"))).encode()
        url = f"{base}/negotiations/request"
        headers = signed(url, body)  # one signature, one nonce: the copies are the same bytes

        async def send() -> int:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(send() for _ in range(COPIES)))
    assert sorted(statuses) == [201] + [401] * (COPIES - 1)
    opened = await provider.node.store.read(lambda db: db.execute(
        "SELECT count(*) FROM negotiations WHERE consumer_pid = ?", [consumer_pid]).fetchone()[0])
    assert opened == 1
