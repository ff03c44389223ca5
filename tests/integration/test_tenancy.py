"""One node, many participants: hosted participants are full, separate participants.

The isolation probes are generated from the management route table, so a new route is probed without
touching this file: every route with ``{id}`` answers 404 to participant A's token on an id of B's, and no
listing of A's shows anything of B's.
"""

from __future__ import annotations

import json
import re
import time

import aiohttp
import pytest

from connector.client import ClientError
from connector.http import management
from connector.net import signing
from connector.protocol import messages as m
from connector.services import credentials as credentials_service
from connector.testing import eventually, store_connection
from usage_policies import templates

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
PREFIX = management.PREFIX


async def publish(party, asset: str, cd: str) -> None:
    await party.client.add_asset({"id": asset, "title": f"{asset} title"})
    await party.client.add_policy(f"{cd}-access", OPEN)
    await party.client.add_policy(f"{cd}-contract", OPEN)
    await party.client.add_contract_definition(cd, access_policy_id=f"{cd}-access", contract_policy_id=f"{cd}-contract",
                                               assets=[asset])


async def negotiate(consumer, provider) -> dict:
    catalog = await consumer.client.catalog(provider.public_url)
    offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    theirs = await provider.client.negotiation(final["providerPid"], wait_s=10)
    assert theirs["state"] == "FINALIZED", theirs
    return final


async def call(node, token: str, method: str, path: str, body=None) -> tuple[int, object, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, s.request(method, f"{node.management_url}{PREFIX}{path}", json=body,
                                                        headers=headers) as r:
        raw = await r.read()
        return r.status, (json.loads(raw) if raw else None), dict(r.headers)


async def test_a_hosted_participant_has_its_own_identity_and_endpoints(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one", region="CN-GD-SZ", legal_name="SME One Ltd.", industry="parts")
    me = await sme.client.participant()
    assert me["name"] == "sme-one" and me["did"].endswith(":participants:sme-one")
    assert me["fingerprints"] != (await host.client.participant())["fingerprints"]
    assert me["dspEndpoint"] == f"{host.public_url}/participants/sme-one/api/dsp/2025-1"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sme.public_url}/did.json") as r:
            document = await r.json(content_type=None)
        async with s.get(f"{sme.public_url}/.well-known/dspace-version") as r:
            version = await r.json()
    assert document["id"] == me["did"]
    assert version["protocolVersions"][0]["path"] == "/participants/sme-one/api/dsp/2025-1"
    # a peer verifies it exactly as it would verify a participant with its own node
    ext = await nodes.start("ext")
    verified = await ext.client.verify_peer(sme.public_url)
    assert verified["peer"]["id"] == me["did"] and verified["peer"]["legalName"] == "SME One Ltd."
    assert [p["did"] for p in await sme.client.peers()] == [ext.participant.did]
    # its keys are sealed at rest and it is served again after a restart
    seed = bytes(sme.participant.keys.signing)
    assert seed not in (host.data_dir / "keys" / "sme-one" / "ed25519.key").read_bytes()
    await nodes.restart(host)
    assert (await sme.client.participant())["fingerprints"] == me["fingerprints"]


async def test_the_admin_token_hosts_participants_but_reads_no_data(nodes):
    host = await nodes.start("acme")
    admin = nodes.client(host, host.admin_token)
    sme = await nodes.host(host, "sme-one")
    assert [p["name"] for p in await admin.participants()] == ["acme", "sme-one"]
    for path in ("/participant", "/assets", "/negotiations", "/agreements", "/tokens"):
        status, body, _ = await call(host.node, host.admin_token, "GET", path)
        assert status == 404, (path, body)
    for token in (host.token, sme.token):
        status, body, _ = await call(host.node, token, "POST", "/participants",
                                     {"name": "x", "legalName": "X", "region": "CN"})
        assert status == 403 and body["error"] == "forbidden"
    with pytest.raises(ClientError) as info:
        await admin.add_participant("sme-one", legal_name="Again", region="CN")
    assert info.value.status == 409
    with pytest.raises(ClientError) as info:
        await admin.add_participant("Bad Name", legal_name="X", region="CN")
    assert info.value.status == 400 and info.value.path == "$.name"
    assert [p["name"] for p in await admin.participants()] == ["acme", "sme-one"]


def stored_text(data_dir) -> str:
    """Every row of every table in the node's store, as text (SQLite's file or the node's PostgreSQL schema)."""
    with store_connection(data_dir) as db:
        tables = ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                  if db.postgres else "SELECT name FROM sqlite_master WHERE type = 'table'")
        return "\n".join(repr(row) for (table,) in db.execute(tables).fetchall()
                         for row in db.execute(f'SELECT * FROM "{table}"').fetchall())


async def test_a_participant_manages_its_own_tokens(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one")
    created = await sme.client.create_token("erp-sync")
    assert created["application"] == "erp-sync" and len(created["token"]) >= 40
    app = nodes.client(host, created["token"])
    assert (await app.participant())["name"] == "sme-one" and (await app.participant())["application"] == "erp-sync"
    listed = await sme.client.tokens()
    assert {t["application"] for t in listed} == {"cli", "erp-sync"}
    assert all("token" not in t and created["token"] not in json.dumps(t) for t in listed)
    assert created["id"] not in json.dumps(await host.client.tokens())
    dump = stored_text(host.data_dir)
    assert "erp-sync" in dump  # the token's row was read
    assert created["token"] not in dump and sme.token not in dump  # stored hashed only
    await sme.client.revoke_token(created["id"])
    with pytest.raises(ClientError) as info:
        await app.participant()
    assert info.value.status == 401
    assert [t["revokedAt"] is not None for t in await sme.client.tokens() if t["id"] == created["id"]] == [True]
    with pytest.raises(ClientError) as info:
        await sme.client.revoke_token(created["id"])
    assert info.value.status == 404


def _ids(value) -> list[str]:
    items = value if isinstance(value, list) else next((v for v in value.values() if isinstance(v, list)), [])
    return [str(i["id"]) for i in items if isinstance(i, dict) and "id" in i]


async def _listings(node, token, table) -> dict[str, object]:
    out = {}
    for route in table:
        if route.method == "GET" and "{" not in route.path and not route.admin:
            status, body, _ = await call(node, token, "GET", route.path)
            assert status == 200, (route.path, body)
            out[route.path] = body
    return out


async def _statement_received(consumer, provider) -> None:
    """A priced agreement of *provider*'s with *consumer*, and a statement of it that *consumer* received."""
    price = templates.price_duty("2.50", "CNY")
    await provider.client.add_asset({"id": "priced"})
    await provider.client.add_policy("priced", {"@type": "Set", "permission": [{"action": "use", "duty": [price]}]})
    await provider.client.add_contract_definition("priced-cd", access_policy_id="priced", contract_policy_id="priced",
                                                  assets=["priced"])
    catalog = await consumer.client.catalog(provider.public_url)
    offer = next(d for d in catalog["dataset"] if d["@id"].endswith(":priced"))["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    status, statement, _ = await call(provider.node, provider.token, "POST", "/statements",
                                      {"agreement": final["agreement"]["@id"], "until": "now"})
    assert status == 201, statement

    async def received() -> bool:
        status, body, _ = await call(consumer.node, consumer.token, "GET", f"/statements/{statement['id']}")
        return status == 200 and body["state"] == "received"

    await eventually(received, what="the statement received")


#: Routes whose ids are listed under another collection (usage is per agreement).
ID_SOURCES = {"/usage": "/agreements"}


async def test_isolation_probes_over_every_management_route(nodes, monkeypatch):
    monkeypatch.setattr(credentials_service, "MAX_HELD_UNTRUSTED", 1)  # ext's second delivery waits: offered
    host = await nodes.start("acme")
    alpha, bravo = await nodes.host(host, "alpha"), await nodes.host(host, "bravo")
    ext = await nodes.start("ext")
    await publish(alpha, "alpha-asset", "alpha-cd")
    await publish(bravo, "bravo-secret-asset", "bravo-secret-cd")
    await publish(ext, "ext-data", "ext-cd")
    bravo_negotiation = await negotiate(bravo, ext)  # hosted consumer, external provider
    transfer = await bravo.client.start_transfer(bravo_negotiation["agreement"]["@id"])  # bravo has a transfer
    await bravo.client.transfer(transfer["id"], wait_s=10)
    await bravo.client.verify_peer(ext.public_url)
    await bravo.client.create_token("bravo-app")
    # bravo issues a credential, holds one, is offered one, has a holder's request waiting and trusts an issuer
    await bravo.client.issue_credential(ext.participant.did, "membership", {"dataSpace": "urn:tds:space:bravo"})
    for _ in range(2):
        held = await ext.client.issue_credential(bravo.participant.did, "region", {"region": "CN-GD"})
        await ext.client.deliver_credential(held["id"])
    await ext.client.ask_credential(bravo.public_url, "region", {"region": "CN-GD"})
    await bravo.client.trust_issuer(ext.participant.did, ["region"])
    await _statement_received(bravo, ext)  # bravo holds a statement of ext's
    table = management.routes(host.node)
    node = host.node

    bravo_before = await _listings(node, bravo.token, table)
    bravo_ids = {path: _ids(body) for path, body in bravo_before.items()}
    secrets_of_bravo = {i for ids in bravo_ids.values() for i in ids} | {bravo.participant.did}
    probed = []
    for route in table:
        if route.admin:
            status, _, _ = await call(node, alpha.token, route.method, route.path.replace("{id}", "x"), route.example)
            assert status == 403, route.path
            continue
        if "{id}" not in route.path:
            continue
        collection = route.path.split("/{id}")[0]
        ids = bravo_ids.get(ID_SOURCES.get(collection, collection))
        assert ids, f"no id of bravo's to probe {route.method} {route.path} with: extend the setup above"
        status, body, _ = await call(node, alpha.token, route.method, route.path.replace("{id}", ids[0]),
                                     route.example)
        assert status == 404, (route.method, route.path, status, body)
        probed.append(f"{route.method} {route.path}")
    assert len(probed) >= 10
    for path, body in (await _listings(node, alpha.token, table)).items():
        text = json.dumps(body)
        leaked = [s for s in secrets_of_bravo if s in text]
        assert not leaked, (path, leaked)
    assert await _listings(node, bravo.token, table) == bravo_before  # nothing of bravo's was changed
    # ids in a body are looked up as the token's participant's too
    with pytest.raises(ClientError) as info:
        await alpha.client.add_contract_definition("steal", access_policy_id="bravo-secret-cd-access",
                                                   contract_policy_id="bravo-secret-cd-contract",
                                                   assets=["alpha-asset"])
    assert info.value.status == 400 and info.value.path == "$.accessPolicyId"
    # and a peer sees each participant's catalog alone
    datasets = [d["@id"] for d in (await ext.client.catalog(alpha.public_url))["dataset"]]
    assert datasets == [f"urn:tds:asset:{alpha.participant.did}:alpha-asset"]
    # on the DSP side, the participant is the one in the path: bravo's negotiation is not alpha's, even for
    # the peer that is a party to it
    pid = bravo_negotiation["id"]
    assert (await _signed_get(ext, f"{bravo.participant.dsp_base}/negotiations/{pid}"))[0] == 200
    status, body = await _signed_get(ext, f"{alpha.participant.dsp_base}/negotiations/{pid}")
    assert status == 404 and body["@type"] == "ContractNegotiationError"


async def test_hosted_participants_negotiate_with_each_other_and_with_peers(nodes):
    host = await nodes.start("acme")
    alpha, bravo = await nodes.host(host, "alpha"), await nodes.host(host, "bravo")
    ext = await nodes.start("ext")
    await publish(alpha, "alpha-asset", "alpha-cd")
    await publish(ext, "ext-data", "ext-cd")
    hosted = await negotiate(bravo, alpha)  # hosted <-> hosted, over the node's public URL
    agreement = hosted["agreement"]
    assert agreement["assigner"] == alpha.participant.did and agreement["assignee"] == bravo.participant.did
    external = await negotiate(alpha, ext)  # hosted consumer, external provider
    assert external["agreement"]["assignee"] == alpha.participant.did
    inbound = await negotiate(ext, alpha)  # external consumer, hosted provider
    assert inbound["agreement"]["assigner"] == alpha.participant.did
    from connector.protocol import agreements

    for party in (alpha, bravo):
        evidence = await party.client.agreement_evidence(agreement["@id"])
        assert [r.status for r in agreements.check_bundle(evidence)] == ["valid", "valid"]
    assert await host.client.agreements() == []  # the host's own business data stays empty


async def test_outside_dev_mode_the_guard_opens_only_the_nodes_own_origin(nodes):
    host = await nodes.start("acme", dev_mode=False, trusted_networks=("10.99.0.0/16",))
    alpha, bravo = await nodes.host(host, "alpha"), await nodes.host(host, "bravo")
    other = await nodes.start("other")
    await publish(alpha, "alpha-asset", "alpha-cd")
    final = await negotiate(bravo, alpha)
    assert final["agreement"]["assigner"] == alpha.participant.did
    with pytest.raises(ClientError) as info:  # another loopback port is still refused
        await bravo.client.catalog(other.public_url)
    assert info.value.status == 400 and "refusing" in info.value.message


async def test_management_rate_limit_is_per_participant(nodes):
    host = await nodes.start("acme", management_rate_per_s=0.5, management_burst=3)
    sme = await nodes.host(host, "sme-one")
    for _ in range(3):
        await sme.client.participant()
    status, body, headers = await call(host.node, sme.token, "GET", "/participant")
    assert status == 429 and body["error"] == "too-many-requests" and "retry after" in body["message"]
    assert int(headers["Retry-After"]) >= 1
    assert (await host.client.participant())["name"] == "acme"  # another participant is not starved


async def test_dsp_rate_limit_is_per_calling_peer(nodes):
    provider = await nodes.start("acme", dsp_rate_per_s=0.5, dsp_burst=2)
    noisy, quiet = await nodes.start("noisy"), await nodes.start("quiet")
    # Per-peer budgets are for known peers (an agreement with the provider); strangers share another one.
    await publish(provider, "qi-2026", "cd1")
    await negotiate(noisy, provider)
    await negotiate(quiet, provider)
    url = f"{provider.participant.dsp_base}/catalog/request"
    statuses = [await _signed_catalog(noisy, url) for _ in range(3)]
    assert [s for s, _, _ in statuses] == [200, 200, 429]
    _, body, headers = statuses[-1]
    assert body["@type"] == "CatalogError" and body["code"] == "429" and int(headers["Retry-After"]) >= 1
    assert (await _signed_catalog(quiet, url))[0] == 200


async def _signed_catalog(node, url):
    p = node.participant
    raw = json.dumps(m.encode(m.CatalogRequestMessage())).encode()
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def _signed_get(node, url):
    p = node.participant
    headers = signing.sign_request("GET", url, None, key=p.keys.signing, key_id=p.key_id, now=time.time())
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def test_path_parameters_are_named_id_so_the_probes_cover_them():
    # The probe above derives everything from the table; this only guards the convention it relies on.
    class Fake:
        participants: dict = {}

    for route in management.routes(Fake()):  # type: ignore[arg-type]
        for name in re.findall(r"{(\w+)}", route.path):
            assert name == "id", f"{route.path}: name path parameters {{id}} so that the probes cover them"


async def test_a_participant_may_bring_its_own_did(nodes):
    host = await nodes.start("acme")
    admin = nodes.client(host, host.admin_token)
    added = await admin.add_participant("sme-own", legal_name="Own DID Ltd.", region="CN",
                                        did="did:web:sme-own.example.com")
    assert added["did"] == "did:web:sme-own.example.com"
    client = nodes.client(host, added["token"])
    async with aiohttp.ClientSession() as s, s.get(f"{host.public_url}/participants/sme-own/did.json") as r:
        document = await r.json(content_type=None)
    assert document["id"] == "did:web:sme-own.example.com"  # to be published under its own domain
    await nodes.restart(host)  # a brought DID does not move with the node's public URL
    assert (await client.participant())["did"] == "did:web:sme-own.example.com"
    with pytest.raises(ClientError) as info:
        await admin.add_participant("sme-bad", legal_name="X", region="CN", did="did:key:z6Mk")
    assert info.value.status == 400 and info.value.path == "$.did"
    with pytest.raises(ClientError) as info:  # a DID already hosted here
        await admin.add_participant("sme-twin", legal_name="X", region="CN", did="did:web:sme-own.example.com")
    assert info.value.status == 409
    assert not (host.data_dir / "keys" / "sme-twin").exists()  # nothing left behind: the name stays free
    assert (await admin.add_participant("sme-twin", legal_name="X", region="CN"))["name"] == "sme-twin"
