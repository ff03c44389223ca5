"""A suspended or removed participant, as an attacker sees it: its own tokens, a peer calling it, another
tenant, and its old token after removal. Suspension deletes nothing and stops its work; resuming takes it up."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
from refusals import refused

from connector.client import ClientError
from connector.net import signing
from connector.protocol import messages as m
from connector.testing import eventually

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def publish(client, files, asset: str) -> None:
    files.mkdir(parents=True, exist_ok=True, mode=0o700)
    (files / f"{asset}.csv").write_bytes(b"lot,defects\nL1,0\n")
    await client.add_asset({"id": asset, "contentType": "text/csv",
                            "dataAddress": {"type": "File", "path": f"{asset}.csv"}})
    await client.add_policy(f"open-{asset}", OPEN)
    await client.add_contract_definition(f"cd-{asset}", access_policy_id=f"open-{asset}",
                                         contract_policy_id=f"open-{asset}", assets=[asset])


async def pull(consumer_client, provider_url: str) -> str:
    offer = (await consumer_client.catalog(provider_url))["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer_client.negotiate(provider_url, offer)
    final = await consumer_client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    agreement = str(final["agreement"]["@id"])
    transfer = await consumer_client.start_transfer(agreement)
    assert (await consumer_client.transfer(transfer["id"], wait_s=20))["state"] == "COMPLETED"
    return agreement


async def signed(node, method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    """A request to *url* signed by *node*'s own participant (a peer)."""
    p = node.participant
    raw = json.dumps(body).encode() if body is not None else None
    headers = signing.sign_request(method, url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"} if raw else None)
    async with aiohttp.ClientSession() as s, s.request(method, url, data=raw, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def public(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json(content_type=None)


@pytest.fixture
async def hosted(nodes):
    """acme hosts alpha and bravo; ext (another node) provides to alpha and consumes from alpha."""
    host = await nodes.start("acme")
    admin = nodes.client(host, host.admin_token)
    alpha, bravo = await nodes.host(host, "alpha"), await nodes.host(host, "bravo")
    ext = await nodes.start("ext")
    await publish(ext.client, ext.data_dir / "files" / "ext", "ext-data")
    bought = await pull(alpha.client, ext.participant.base_url)
    await publish(alpha.client, host.data_dir / "files" / "alpha", "alpha-data")
    sold = await pull(ext.client, alpha.participant.base_url)
    return host, admin, alpha, bravo, ext, bought, sold


async def test_a_suspended_participant_is_refused_everywhere_and_keeps_everything(nodes, hosted):
    host, admin, alpha, bravo, ext, bought, sold = hosted
    app = await alpha.client.create_token("erp")
    dsp = alpha.participant.dsp_base
    base, did = alpha.participant.base_url, alpha.participant.did
    agreements_before = await alpha.client.agreements()
    keys = sorted(p.name for p in (host.data_dir / "keys" / "alpha").iterdir())

    done = await admin.suspend_participant("alpha", "hosting contract ended")
    assert done["state"] == "suspended" and done["reason"] == "hosting contract ended"

    # its own tokens: 403, with the operator's reason
    for token in (alpha.token, app["token"]):
        error = await refused(nodes.client(host, token).participant(), 403)
        assert "suspended" in error.message and "hosting contract ended" in error.message
        await refused(nodes.client(host, token)._call("POST", "/usage", {"agreementId": bought, "useId": "u1"}), 403)
        await refused(nodes.client(host, token).rotate_keys(), 403)
    # a peer calling it: 403 saying it is suspended, but not why
    for method, url, body in (("POST", f"{dsp}/catalog/request", m.encode(m.CatalogRequestMessage())),
                              ("POST", f"{dsp}/tds/handshake", {})):
        status, answer = await signed(ext, method, url, body)
        assert status == 403 and "suspended" in json.dumps(answer) and "contract" not in json.dumps(answer)
    with pytest.raises(ClientError) as info:
        await ext.client.catalog(base)
    assert "403" in info.value.message or info.value.status in (403, 502)
    for path in (".well-known/tds/self-description", ".well-known/dspace-version"):
        assert (await public(f"{base}/{path}"))[0] == 403
    # its DID document stays: what it signed keeps verifying at its peers
    status, document = await public(f"{base}/did.json")
    assert status == 200 and document["id"] == did
    # the data it sold still opens at the buyer, and the buyer's receipts wait (they are not lost)
    assert (await ext.client.use(sold, "u1"))["decision"] == "permit"
    # another tenant cannot lift it, nor suspend anyone
    for call in (bravo.client.resume_participant("alpha"), bravo.client.suspend_participant("acme"),
                 bravo.client.suspend_participant("bravo"), bravo.client.remove_participant("alpha")):
        await refused(call, 403)
    listed = {p["name"]: p for p in await admin.participants()}
    assert listed["alpha"]["state"] == "suspended" and listed["alpha"]["suspendedReason"] == "hosting contract ended"
    assert listed["bravo"]["state"] == "active"
    # bravo is unaffected
    assert (await bravo.client.participant())["name"] == "bravo"

    # nothing deleted, across a restart too
    await nodes.restart(host)
    assert sorted(p.name for p in (host.data_dir / "keys" / "alpha").iterdir()) == keys
    await refused(alpha.client.participant(), 403)
    assert (await public(f"{base}/.well-known/tds/self-description"))[0] == 403

    await admin.resume_participant("alpha")
    assert await alpha.client.agreements() == agreements_before
    assert (await alpha.client.use(bought, "after-resume"))["decision"] == "permit"
    assert (await signed(ext, "POST", f"{dsp}/catalog/request", m.encode(m.CatalogRequestMessage())))[0] == 200

    async def receipts_arrived():
        return (await alpha.client.usage_report(sold))["receivedEntries"] == 1

    await eventually(receipts_arrived, what="the buyer's receipt, delivered once the seller is served again")


async def test_suspension_stops_background_work_and_resuming_takes_it_up(nodes, hosted):
    host, admin, alpha, _, ext, bought, _ = hosted
    node = host.node
    await ext.node.stop()  # the provider is away: alpha's receipts keep being retried
    assert (await alpha.client.use(bought, "u1"))["decision"] == "permit"
    key = (alpha.participant.id, bought)
    await eventually(lambda: _true(key in node.receipts._senders), what="a receipt sender retrying")

    await admin.suspend_participant("alpha")
    assert key not in node.receipts._senders
    assert not [k for k in (*node.transfers._movers, *node.negotiations._due) if k[0] == "alpha"]

    await admin.resume_participant("alpha")
    await nodes.restart(ext)

    async def acknowledged():
        return ((await alpha.client.usage_log(bought)).get("acknowledgement") or {}).get("seq") == 1

    await eventually(acknowledged, deadline_s=30, what="the receipt delivered after the suspension ended")


async def _true(value: bool) -> bool:
    return value


async def test_admin_rules_of_suspension(hosted):
    _, admin, _, _, _, _, _ = hosted
    await refused(admin.suspend_participant("acme"), 409)  # the node's own participant
    await refused(admin.suspend_participant("nobody"), 404)
    await refused(admin.resume_participant("bravo"), 409)  # not suspended
    await admin.suspend_participant("bravo", "x" * 500)
    await refused(admin.suspend_participant("bravo"), 409)
    with pytest.raises(ClientError) as info:
        await admin._call("POST", "/participants/bravo/suspend", {"reason": "x" * 501})
    assert info.value.status == 400


async def test_a_removed_suspended_participant_leaves_nothing_and_its_old_token_is_unknown(nodes, hosted):
    host, admin, alpha, _, ext, _, _ = hosted
    base, did, dsp = alpha.participant.base_url, alpha.participant.did, alpha.participant.dsp_base
    await admin.suspend_participant("alpha")
    removed = await admin.remove_participant("alpha")
    assert removed["did"] == did and {"keys/alpha", "files/alpha", "vault/alpha"} <= set(removed["removedFolders"])
    await refused(alpha.client.participant(), 401)
    for path in ("did.json", ".well-known/tds/self-description"):
        assert (await public(f"{base}/{path}"))[0] == 404
    assert (await signed(ext, "POST", f"{dsp}/catalog/request", m.encode(m.CatalogRequestMessage())))[0] == 404
    assert not (host.data_dir / "keys" / "alpha").exists() and not (host.data_dir / "vault" / "alpha").exists()
    assert "alpha" not in [p["name"] for p in await admin.participants()]
