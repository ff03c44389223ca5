"""Catalog and contract negotiation between real nodes over DSP 2025-1 (both roles)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import quote, unquote

import aiohttp
import pytest

from connector.client import ClientError
from connector.net import signing
from connector.protocol import messages as m
from connector.testing import vouch_region

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
RND = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"}]}]}
GD_ONLY = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "CN-GD"}]}]}


def asset_ids(provider, catalog):
    """The asset ids of a catalog's datasets, each listed under its absolute id ``urn:tds:asset:<DID>:<id>``."""
    prefix = f"urn:tds:asset:{provider.participant.did}:"
    listed = [d["@id"] for d in catalog.get("dataset", [])]
    assert all(i.startswith(prefix) for i in listed), listed
    return [i[len(prefix):] for i in listed]


async def publish(node, asset="qi-2026", access=OPEN, contract=RND, cd="cd1"):
    await node.client.add_asset({"id": asset, "title": "Quality inspection results", "dataClass": "general",
                                 "keywords": ["quality"]})
    await node.client.add_policy(f"{cd}-access", access)
    await node.client.add_policy(f"{cd}-contract", contract)
    await node.client.add_contract_definition(cd, access_policy_id=f"{cd}-access",
                                              contract_policy_id=f"{cd}-contract", assets=[asset])


async def offer_of(consumer, provider) -> str:
    catalog = await consumer.client.catalog(provider.public_url)
    return catalog["dataset"][0]["hasPolicy"][0]["@id"]


async def test_negotiation_reaches_finalized_on_both_sides(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    assert started["state"] in ("REQUESTED", "AGREED", "VERIFIED", "FINALIZED")
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    [ours] = await consumer.client.agreements()
    [theirs] = await provider.client.agreements()
    assert ours["agreement"] == theirs["agreement"]
    agreement = ours["agreement"]
    assert agreement["assigner"] == provider.participant.did and agreement["assignee"] == consumer.participant.did
    assert agreement["target"] == f"urn:tds:asset:{provider.participant.did}:qi-2026"  # an absolute IRI
    assert agreement["permission"][0]["constraint"][0]["rightOperand"] == "R&D"
    kinds = [e["kind"] for e in final["history"]]
    assert kinds == ["message-out", "message-in", "message-out", "message-in"]
    provider_side = await provider.client.negotiations()
    assert [n["state"] for n in provider_side] == ["FINALIZED"]


async def test_wait_that_is_not_a_number_is_400(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    for bad in ("soon", "nan"):
        with pytest.raises(ClientError) as err:
            await consumer.client.negotiation(started["id"], wait_s=bad)  # type: ignore[arg-type]
        assert err.value.status == 400 and err.value.path == "wait"
    final = await consumer.client.negotiation(started["id"], wait_s=float("inf"))  # clamped to the 120 s cap
    assert final["state"] == "FINALIZED"


async def test_catalog_lists_only_what_the_access_policy_admits(nodes):
    provider = await nodes.start("acme")
    gd = await nodes.start("parts", region="CN-GD-GZ")
    bj = await nodes.start("north", region="CN-BJ")
    await publish(provider, asset="open-data", cd="open")
    await publish(provider, asset="gd-data", cd="gd", access=GD_ONLY)
    for peer in (gd, bj):
        await peer.client.verify_peer(provider.public_url)  # the provider learns the peer's region
    gd_ids = asset_ids(provider, await gd.client.catalog(provider.public_url))
    bj_ids = asset_ids(provider, await bj.client.catalog(provider.public_url))
    assert gd_ids == ["gd-data", "open-data"]
    assert bj_ids == ["open-data"]


async def test_access_denied_at_negotiation_terminates_with_reason(nodes):
    provider = await nodes.start("acme")
    bj = await nodes.start("north", region="CN-BJ")
    gd = await nodes.start("parts", region="CN-GD")
    await publish(provider, asset="gd-data", cd="gd", access=GD_ONLY)
    await gd.client.verify_peer(provider.public_url)
    offer = await offer_of(gd, provider)
    # the Beijing participant learnt the offer id elsewhere and asks anyway
    with pytest.raises(ClientError) as info:
        await bj.client.negotiate(provider.public_url, offer)
    assert info.value.status == 404
    # the provider also refuses it at negotiation time, with the policy's reason
    consumer_record = await _raw_request(bj, provider, offer, "gd-data")
    final = await _wait_provider(provider, consumer_record)
    assert final["state"] == "TERMINATED"
    assert "access policy" in final["reason"]


async def _raw_request(consumer, provider, offer_id, target):
    """Send an initial ContractRequestMessage by hand (as any DSP consumer could)."""
    p = consumer.participant
    body = m.encode(m.ContractRequestMessage(
        consumerPid="urn:uuid:test-consumer-pid", callbackAddress=p.dsp_base,
        offer={"@id": offer_id, "@type": "Offer", "target": target, "permission": [{"action": "use"}]},
    ))
    url = f"{provider.participant.dsp_base}/negotiations/request"
    raw = json.dumps(body).encode()
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def _wait_provider(provider, ack):
    return await provider.client.negotiation(ack["providerPid"], wait_s=10)


async def test_other_terms_get_one_counter_offer_then_agreement(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    offer = await offer_of(consumer, provider)
    ack = await _raw_request(consumer, provider, offer, "qi-2026")  # asks for plain "use", offer says R&D
    final = await _wait_provider(provider, ack)
    # the counter-offer reached the hand-made consumer pid, which the consumer node does not know
    assert final["state"] == "TERMINATED"
    assert "could not be delivered" in final["reason"] and "ContractOfferMessage" in final["reason"]


async def test_consumer_terminates_with_reason(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider, contract=RND)
    # the provider waits for its operator: keep the negotiation in REQUESTED with a script
    provider.node.negotiations.script = lambda record: "wait"
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    assert started["state"] == "REQUESTED"
    await consumer.client.terminate_negotiation(started["id"], "budget withdrawn")
    mine = await consumer.client.negotiation(started["id"])
    theirs = await provider.client.negotiation(mine["providerPid"], wait_s=5)
    assert mine["state"] == theirs["state"] == "TERMINATED"
    assert "budget withdrawn" in theirs["reason"]


async def test_script_decides_the_consumers_move_right_after_requesting(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    provider.node.negotiations.script = lambda record: "wait"
    # the consumer withdraws as soon as its request is acknowledged (REQUESTED is its own state to leave)
    consumer.node.negotiations.script = lambda record: "terminate" if record.state == "REQUESTED" else "wait"
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    mine = await consumer.client.negotiation(started["id"], wait_s=5)
    theirs = await provider.client.negotiation(mine["providerPid"], wait_s=5)
    assert mine["state"] == theirs["state"] == "TERMINATED"


async def test_illegal_transition_is_400_and_state_unchanged(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    provider.node.negotiations.script = lambda record: "wait"
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    p = consumer.participant
    verification = m.encode(m.ContractAgreementVerificationMessage(
        providerPid=started["providerPid"], consumerPid=started["id"]))
    status, body = await _signed_post(consumer, f"{provider.participant.dsp_base}/negotiations/"
                                      f"{started['providerPid']}/agreement/verification", verification)
    assert status == 400
    assert body["@type"] == "ContractNegotiationError" and body["providerPid"] == started["providerPid"]
    assert "not allowed in state REQUESTED" in body["reason"][0]
    assert (await provider.client.negotiation(started["providerPid"]))["state"] == "REQUESTED"
    _ = p


async def test_unknown_process_and_non_party_get_404(nodes):
    provider, consumer, other = await nodes.start("acme"), await nodes.start("parts"), await nodes.start("x")
    await publish(provider)
    provider.node.negotiations.script = lambda record: "wait"
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    base = provider.participant.dsp_base
    status, body = await _signed_get(consumer, f"{base}/negotiations/urn:uuid:nope")
    assert status == 404 and body["@type"] == "ContractNegotiationError"
    status, _ = await _signed_get(other, f"{base}/negotiations/{started['providerPid']}")
    assert status == 404
    status, body = await _signed_get(consumer, f"{base}/negotiations/{started['providerPid']}")
    assert status == 200 and body["state"] == "REQUESTED"


async def test_unreachable_callback_terminates_with_reason(nodes):
    provider, consumer = await nodes.start("acme", delivery_timeout_s=1.0), await nodes.start("parts")
    await publish(provider, contract=OPEN)
    offer = await offer_of(consumer, provider)
    await consumer.node.stop()  # the consumer vanishes right after asking
    ack = await _raw_request(consumer, provider, offer, "qi-2026")
    final = await _wait_provider(provider, ack)
    assert final["state"] == "TERMINATED"
    assert "ContractAgreementMessage could not be delivered" in final["reason"]
    assert consumer.participant.did in final["reason"]
    assert "retry" in [e["kind"] for e in final["history"]]


async def test_bad_messages_are_400_naming_the_field(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    base = provider.participant.dsp_base
    status, body = await _signed_post(consumer, f"{base}/negotiations/request",
                                      {"@context": [m.DSP_CONTEXT], "@type": "ContractRequestMessage"})
    assert status == 400 and body["@type"] == "ContractNegotiationError" and "consumerPid" in body["reason"][0]
    status, body = await _signed_post(consumer, f"{base}/catalog/request", {"@type": "CatalogRequestMessage"})
    assert status == 400 and body["@type"] == "CatalogError"
    bad_callback = m.encode(m.ContractRequestMessage(consumerPid="c", callbackAddress="file:///etc/passwd",
                                                     offer={"@id": "x", "@type": "Offer", "target": "t",
                                                            "permission": [{"action": "use"}]}))
    status, body = await _signed_post(consumer, f"{base}/negotiations/request", bad_callback)
    assert status == 400 and "callbackAddress" in body["reason"][0]


async def test_deeply_nested_bodies_are_400_not_a_crash(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    deep: list = []
    for _ in range(100):
        deep = [deep]
    message = {"@context": [m.DSP_CONTEXT], "@type": "ContractRequestMessage", "consumerPid": "c", "offer": deep}
    status, body = await _signed_post(consumer, f"{provider.participant.dsp_base}/negotiations/request", message)
    assert status == 400 and body["@type"] == "ContractNegotiationError" and "deeper than 64" in body["reason"][0]
    with pytest.raises(ClientError) as err:
        await provider.client.add_policy("deep", {"@type": "Set", "permission": deep})
    assert err.value.status == 400 and "deeper than 64" in str(err.value)
    assert (await consumer.client.negotiations()) == [] and (await provider.client.negotiations()) == []


async def test_catalog_pagination_with_link_headers(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await provider.client.add_policy("open", OPEN)
    ids = [f"asset-{i:03d}" for i in range(7)]
    for asset_id in ids:
        await provider.client.add_asset({"id": asset_id})
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=ids)
    url = f"{provider.participant.dsp_base}/catalog/request?offset=0&limit=3"
    seen = []
    while url:
        status, body, headers = await _signed_post(consumer, url, m.encode(m.CatalogRequestMessage()),
                                                   with_headers=True)
        assert status == 200
        seen += asset_ids(provider, body)
        link = headers.get("Link", "")
        url = next((p.split(";")[0].strip("<> ") for p in link.split(",") if 'rel="next"' in p), None)
    assert seen == ids
    # the management API follows the links itself
    assert asset_ids(provider, await consumer.client.catalog(provider.public_url)) == ids


async def test_dataset_endpoint(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    base = provider.participant.dsp_base
    qi = f"urn:tds:asset:{provider.participant.did}:qi-2026"
    # by the asset id, and by the absolute id as a path segment (its "%" escaped) or decoded (":" for "%3A")
    for named in ("qi-2026", quote(qi, safe=":"), unquote(qi)):
        status, body = await _signed_get(consumer, f"{base}/catalog/datasets/{named}")
        assert status == 200 and body["@id"] == qi and body["hasPolicy"], named
    status, body = await _signed_get(consumer, f"{base}/catalog/datasets/nope")
    assert status == 404 and body["@type"] == "CatalogError"


async def test_management_validation(nodes):
    provider = await nodes.start("acme")
    with pytest.raises(ClientError) as info:
        await provider.client.add_policy("bad", {"@type": "Set", "permission": [{"action": "use", "constraint": [
            {"leftOperand": "purpose", "operator": "eq"}]}]})
    assert info.value.status == 400 and info.value.path.startswith("$.policy")
    with pytest.raises(ClientError) as info:
        await provider.client.add_contract_definition("cd", access_policy_id="nope", contract_policy_id="nope",
                                                      assets=["a"])
    assert info.value.status == 400 and info.value.path == "$.accessPolicyId"
    await provider.client.add_asset({"id": "a1"})
    with pytest.raises(ClientError) as info:
        await provider.client.add_asset({"id": "a1"})
    assert info.value.status == 409
    with pytest.raises(ClientError) as info:
        await provider.client.add_asset({"id": "has space"})
    assert info.value.status == 400 and info.value.path == "$.id"
    await provider.client.delete_entry("assets", "a1")
    assert await provider.client.entries("assets") == []


async def _signed_post(node, url, body, with_headers=False):
    p = node.participant
    raw = json.dumps(body).encode()
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id,
                                   now=datetime.now(UTC).timestamp(), headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        data = await r.json(content_type=None)
        return (r.status, data, dict(r.headers)) if with_headers else (r.status, data)


async def _signed_get(node, url):
    p = node.participant
    headers = signing.sign_request("GET", url, None, key=p.keys.signing, key_id=p.key_id, now=time.time())
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_agreement_is_dual_signed_and_checks_offline(nodes, tmp_path):
    from connector.protocol import agreements

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED"
    agreement_id = final["agreement"]["@id"]
    await provider.client.negotiation(final["providerPid"], wait_s=10)
    for node in (provider, consumer):
        evidence = await node.client.agreement_evidence(agreement_id)
        results = agreements.check_bundle(evidence)
        assert [(r.role, r.status) for r in results] == [("provider", "valid"), ("consumer", "valid")], results
        assert set(evidence["didDocuments"]) == {provider.participant.did, consumer.participant.did}
    # the same proofs on both sides
    mine = await consumer.client.agreement_evidence(agreement_id)
    theirs = await provider.client.agreement_evidence(agreement_id)
    assert mine["providerProof"] == theirs["providerProof"] and mine["consumerProof"] == theirs["consumerProof"]


async def test_bad_provider_proof_is_refused(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    # the provider's node signs with a key that is not in its DID document
    from nacl.signing import SigningKey

    original = provider.node.negotiations._sign

    def forged(participant, agreement):
        proof = original(participant, agreement)
        from connector.protocol import agreements as a

        return a.sign(agreement, SigningKey.generate(), key_id=proof["verificationMethod"], created=proof["created"])

    provider.node.negotiations._sign = forged
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    theirs = await provider.client.negotiation(started["providerPid"], wait_s=10)
    assert theirs["state"] == "TERMINATED"
    assert "proof does not verify" in theirs["reason"]
    mine = await consumer.client.negotiation(started["id"])
    assert mine["state"] == "REQUESTED"  # the agreement was refused: state unchanged on the consumer
    assert await consumer.client.agreements() == []


async def test_silent_peer_times_out_with_a_reason(nodes):
    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", negotiation_timeout_s=0.5)
    await publish(provider)
    provider.node.negotiations.script = lambda record: "wait"  # acknowledges, then never answers
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "TERMINATED"
    assert "no progress" in final["reason"] and "REQUESTED" in final["reason"]
    assert provider.participant.did in final["reason"]
    theirs = await provider.client.negotiation(started["providerPid"], wait_s=5)
    assert theirs["state"] == "TERMINATED"  # told why


async def test_agreement_verify_cli_offline(nodes, tmp_path):
    import asyncio
    import json
    import sys

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await publish(provider)
    started = await consumer.client.negotiate(provider.public_url, await offer_of(consumer, provider))
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    evidence = await consumer.client.agreement_evidence(final["agreement"]["@id"])
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(evidence))
    evidence["agreement"]["permission"][0]["action"] = "transfer"
    bad.write_text(json.dumps(evidence))

    async def verify(path):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "connector", "agreement", "verify",
                                                    "--file", str(path), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return proc.returncode, out.decode()

    code, out = await verify(good)
    assert code == 0 and "dual-signed" in out and f"provider {provider.participant.did}: signed" in out
    code, out = await verify(bad)
    assert code == 1 and "INVALID" in out


async def test_export_control_hides_and_refuses_core_data_abroad(nodes):
    provider = await nodes.start("acme", region="CN-GD")
    domestic = await nodes.start("parts", region="CN-BJ")
    foreign = await nodes.start("partner", region="DE-BY")
    assert provider.node.config.export_control[0].region == "CN"  # the default rule of a node in China
    await provider.client.add_asset({"id": "line-7", "dataClass": "core"})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["line-7"])
    for peer in (domestic, foreign):  # each presents a region credential by an issuer the provider trusts
        await vouch_region(provider, peer, verifiers=[provider])
        await peer.client.verify_peer(provider.public_url)
    assert asset_ids(provider, await domestic.client.catalog(provider.public_url)) == ["line-7"]
    assert (await foreign.client.catalog(provider.public_url)).get("dataset", []) == []
    offer = await offer_of(domestic, provider)
    ack = await _raw_request(foreign, provider, offer, "line-7")
    final = await _wait_provider(provider, ack)
    assert final["state"] == "TERMINATED"
    assert "export control" in final["reason"] and "DE-BY" in final["reason"]
