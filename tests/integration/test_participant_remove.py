"""Removing a hosted participant: everything it had on the node goes, every other participant stays."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from connector.client import ClientError
from connector.net import signing
from connector.protocol import messages as m
from connector.testing import store_connection

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def publish_file(party, asset: str, content: bytes) -> None:
    folder = party.host.data_dir / "files" / party.name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / f"{asset}.csv").write_bytes(content)
    await party.client.add_asset({"id": asset, "contentType": "text/csv",
                                  "dataAddress": {"type": "File", "path": str(folder / f"{asset}.csv")}})
    await party.client.add_policy("open", OPEN)
    await party.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                               assets=[asset])


async def pull(consumer, provider) -> str:
    """Negotiate the provider's one offer and pull its data into the consumer's vault; the agreement id."""
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    agreement = final["agreement"]["@id"]
    transfer = await consumer.client.start_transfer(agreement)
    done = await consumer.client.transfer(transfer["id"], wait_s=20)
    assert done["state"] == "COMPLETED", done
    return str(agreement)


def rows_of(data_dir, participant_id: str) -> dict[str, int]:
    """Rows per table that belong to *participant_id* (tables with a participant_id column)."""
    with store_connection(data_dir) as db:
        counts = {}
        for table in db.tables_with_column("participant_id"):
            n = db.execute(f'SELECT COUNT(*) FROM "{table}" WHERE participant_id = ?', [participant_id])
            counts[table] = n.fetchone()[0]
        counts["participants"] = db.execute("SELECT COUNT(*) FROM participants WHERE id = ?",
                                            [participant_id]).fetchone()[0]
    return {t: n for t, n in counts.items() if n}


async def signed_catalog(node, url: str) -> int:
    p = node.participant
    raw = json.dumps(m.encode(m.CatalogRequestMessage())).encode()
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        return r.status


async def test_a_removed_participant_is_gone_and_the_others_are_untouched(nodes):
    host = await nodes.start("acme")
    admin = nodes.client(host, host.admin_token)
    alpha, bravo = await nodes.host(host, "alpha"), await nodes.host(host, "bravo")
    ext = await nodes.start("ext")
    await publish_file(alpha, "alpha-data", b"a,b\n1,2\n")
    agreement = await pull(bravo, alpha)  # bravo holds alpha's data in its vault
    app = await alpha.client.create_token("erp")
    dsp = alpha.participant.dsp_base
    assert await signed_catalog(ext, f"{dsp}/catalog/request") == 200
    assert rows_of(host.data_dir, "alpha")
    bravo_before = await bravo.client.agreements()

    removed = await admin.remove_participant("alpha")

    assert removed["name"] == "alpha" and removed["removedRows"] > 0
    assert set(removed["removedFolders"]) == {"keys/alpha", "files/alpha"}
    assert [p["name"] for p in await admin.participants()] == ["acme", "bravo"]
    async with aiohttp.ClientSession() as s:
        for path in ("did.json", ".well-known/dspace-version", ".well-known/tds/self-description"):
            async with s.get(f"{host.public_url}/participants/alpha/{path}") as r:
                assert r.status == 404, path
    assert await signed_catalog(ext, f"{dsp}/catalog/request") == 404
    for token in (alpha.token, app["token"]):
        with pytest.raises(ClientError) as info:
            await nodes.client(host, token).participant()
        assert info.value.status == 401
    assert rows_of(host.data_dir, "alpha") == {}
    assert not (host.data_dir / "keys" / "alpha").exists() and not (host.data_dir / "files" / "alpha").exists()
    # bravo keeps its agreement and the data it received, and still uses it
    assert await bravo.client.agreements() == bravo_before
    assert (await bravo.client.use(agreement, "after-removal"))["decision"] == "permit"
    assert (await host.client.participant())["name"] == "acme"
    # a restart does not bring alpha back, and its name is free again
    await nodes.restart(host)
    assert [p["name"] for p in await admin.participants()] == ["acme", "bravo"]
    assert (await admin.add_participant("alpha", legal_name="Alpha Again", region="CN"))["name"] == "alpha"


async def test_removing_a_consumer_deletes_its_vault_folder(nodes):
    host = await nodes.start("acme")
    admin = nodes.client(host, host.admin_token)
    alpha, bravo = await nodes.host(host, "alpha"), await nodes.host(host, "bravo")
    await publish_file(alpha, "alpha-data", b"x" * 1000)
    await pull(bravo, alpha)
    assert (host.data_dir / "vault" / "bravo").is_dir()
    removed = await admin.remove_participant("bravo")
    assert "vault/bravo" in removed["removedFolders"] and not (host.data_dir / "vault" / "bravo").exists()
    assert rows_of(host.data_dir, "bravo") == {}
    assert (await alpha.client.agreements())[0]["role"] == "provider"  # the provider's side stays


async def test_only_the_admin_removes_and_never_the_nodes_own_participant(nodes):
    host = await nodes.start("acme")
    admin = nodes.client(host, host.admin_token)
    sme = await nodes.host(host, "sme-one")
    for token in (host.token, sme.token):
        with pytest.raises(ClientError) as info:
            await nodes.client(host, token).remove_participant("sme-one")
        assert info.value.status == 403
    with pytest.raises(ClientError) as info:
        await admin.remove_participant("acme")
    assert info.value.status == 409 and "own participant" in info.value.message
    with pytest.raises(ClientError) as info:
        await admin.remove_participant("nobody")
    assert info.value.status == 404
    assert [p["name"] for p in await admin.participants()] == ["acme", "sme-one"]


async def stranger_opens(party, callback: str) -> int:
    """A fresh did:key asks for *party*'s one offer (callbacks to *callback*); the answer's status."""
    from nacl.signing import SigningKey

    from connector.identity import did as dids
    from connector.protocol import contracts

    key = SigningKey.generate()
    key_id = dids.signing_key_id(dids.did_key_for(bytes(key.verify_key)))
    dsp = party.participant.dsp_base

    async def post(url: str, body: dict) -> tuple[int, dict]:
        raw = json.dumps(body).encode()
        headers = signing.sign_request("POST", url, raw, key=key, key_id=key_id, now=time.time(),
                                       headers={"Content-Type": "application/json"})
        async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    _, catalog = await post(f"{dsp}/catalog/request", m.encode(m.CatalogRequestMessage()))
    dataset = catalog["dataset"][0]
    offer = contracts.message_offer(contracts.read_policy(dataset["hasPolicy"][0], "offer"),
                                    dataset["hasPolicy"][0]["@id"], dataset["@id"])
    request = m.ContractRequestMessage(consumerPid=f"urn:uuid:stranger-{key_id[-12:]}", callbackAddress=callback,
                                       offer=offer)
    status, _ = await post(f"{dsp}/negotiations/request", m.encode(request))
    return status


async def test_removing_a_participant_frees_the_places_its_strangers_held(nodes):
    from connector.config import DspSection
    from connector.testing import free_port

    host = await nodes.start("acme", dsp=DspSection(unknown_peer_open_negotiations=2))
    admin = nodes.client(host, host.admin_token)
    alpha, bravo = await nodes.host(host, "alpha"), await nodes.host(host, "bravo")
    for party in (alpha, bravo):
        await publish_file(party, f"{party.name}-data", b"x\n")
    closed = f"http://127.0.0.1:{free_port()}/api/dsp/2025-1"  # the deliveries there keep failing
    assert [await stranger_opens(alpha, closed) for _ in range(2)] == [201, 201]
    assert await stranger_opens(bravo, closed) == 429  # the node-wide places are taken
    await admin.remove_participant("alpha")
    assert await stranger_opens(bravo, closed) == 201
