"""Key rotation between two nodes: after either side rotates, negotiations, sealed transfers, uses and receipts
go on; what the old keys signed still verifies on both sides; the vault's data keys move to the new key."""

from __future__ import annotations

import aiohttp

from connector.identity import did as dids
from connector.identity import keys as keyfiles
from connector.protocol import agreements
from connector.testing import eventually

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def publish(provider, asset: str, content: bytes) -> None:
    path = provider.data_dir / "files" / provider.participant.name / f"{asset}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    await provider.client.add_asset({"id": asset, "contentType": "text/csv",
                                     "dataAddress": {"type": "File", "path": f"{asset}.csv"}})
    await provider.client.add_policy(f"open-{asset}", OPEN)
    await provider.client.add_contract_definition(f"cd-{asset}", access_policy_id=f"open-{asset}",
                                                  contract_policy_id=f"open-{asset}", assets=[asset])


async def pull(provider, consumer, asset: str) -> str:
    """Negotiate *asset*'s offer and pull it (sealed end to end); the agreement id."""
    catalog = await consumer.client.catalog(provider.public_url)
    dataset = next(d for d in catalog["dataset"] if d["@id"].endswith(asset))
    negotiation = await consumer.client.negotiate(provider.public_url, dataset["hasPolicy"][0]["@id"])
    final = await consumer.client.negotiation(negotiation["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    agreement = final["agreement"]["@id"]
    started = await consumer.client.start_transfer(agreement)
    done = await consumer.client.transfer(started["id"], wait_s=20)
    assert done["state"] == "COMPLETED", done
    return str(agreement)


async def released(consumer, agreement: str, use_id: str) -> bytes:
    return b"".join([c async for c in consumer.client.use_data(agreement, use_id)])


async def did_document(party) -> dict:
    async with aiohttp.ClientSession() as s, s.get(f"{party.participant.base_url}/did.json") as r:
        assert r.status == 200
        return await r.json()


def proofs_verify_now(evidence: dict, provider_document: dict, consumer_document: dict) -> None:
    """The agreement's two proofs, checked against the parties' DID documents as they are now."""
    agreement = {k: v for k, v in evidence["agreement"].items() if k != agreements.PROOF_PROPERTY}
    agreements.verify(agreement, evidence["providerProof"], provider_document, party=provider_document["id"])
    agreements.verify(agreement, evidence["consumerProof"], consumer_document, party=consumer_document["id"])


async def test_after_both_sides_rotate_everything_old_verifies_and_everything_new_works(nodes):
    provider = await nodes.start("acme", encrypt_transfers=True)
    consumer = await nodes.start("parts")
    await publish(provider, "qi-2026", b"part,defects\nA-17,0\n")
    old_agreement = await pull(provider, consumer, "qi-2026")
    old_provider_key = provider.participant.key_id
    old_evidence = await consumer.client.agreement_evidence(old_agreement)
    # Each side caches the other's DID document (five minutes): it holds only the first keys now.
    assert (await consumer.node.resolver.resolve(provider.participant.did))["authentication"] == [old_provider_key]

    rotated = await provider.client.rotate_keys()
    assert rotated["signingKey"].endswith("#key-3") and rotated["agreementKey"].endswith("#key-4")
    assert [k.rsplit("#", 1)[1] for k in rotated["retiredKeys"]] == ["key-1", "key-2"]
    document = await did_document(provider)
    did = document["id"]
    assert document["authentication"] == [f"{did}#key-3"]
    assert document["assertionMethod"] == [f"{did}#key-3", f"{did}#key-1"]  # old proofs still verify
    assert document["keyAgreement"] == [f"{did}#key-4"]
    assert {m["id"] for m in document["verificationMethod"]} == {f"{did}#key-{n}" for n in (1, 2, 3, 4)}
    own = await provider.client.participant()
    assert own["fingerprints"] == rotated["fingerprints"]

    # The consumer still holds the old document; the next signed request names key-3 and it fetches anew.
    await publish(provider, "qi-2027", b"part,defects\nB-2,1\n")
    second = await pull(provider, consumer, "qi-2027")
    evidence = await consumer.client.agreement_evidence(second)
    assert evidence["providerProof"]["verificationMethod"] == f"{did}#key-3"
    assert [c.status for c in agreements.check_bundle(evidence)] == ["valid", "valid"]

    consumer_rotated = await consumer.client.rotate_keys()
    assert consumer_rotated["unopenedDataKeys"] == 0 and consumer_rotated["oldKeyAgreementKeysKept"] == []
    folder = consumer.data_dir / "keys" / "parts"
    assert not list(folder.glob("retired-*")) and (folder / keyfiles.KEYRING_FILE).exists()
    # Data received under the old key-agreement key is read with the new one (its data key was re-wrapped).
    assert await released(consumer, old_agreement, "after-rotation") == b"part,defects\nA-17,0\n"
    assert await released(consumer, second, "after-rotation") == b"part,defects\nB-2,1\n"

    # Both old agreements' proofs verify against both parties' documents as they are now, on each node.
    provider_document, consumer_document = await did_document(provider), await did_document(consumer)
    proofs_verify_now(old_evidence, provider_document, consumer_document)
    for node in (provider.node, consumer.node):
        node.resolver.forget(did)
        node.resolver.forget(consumer_document["id"])
        proofs_verify_now(old_evidence, await node.resolver.resolve(did),
                          await node.resolver.resolve(consumer_document["id"]))
    assert old_evidence["providerProof"]["verificationMethod"] == old_provider_key

    # A sealed transfer to the consumer's new X25519 key, and receipts signed with its new key, acknowledged
    # by the provider with its new key.
    await publish(provider, "qi-2028", b"part,defects\nC-9,2\n")
    third = await pull(provider, consumer, "qi-2028")
    assert await released(consumer, third, "u1") == b"part,defects\nC-9,2\n"

    async def acknowledged():
        report = await provider.client.usage_report(old_agreement)
        log = await consumer.client.usage_log(old_agreement)
        ack = log.get("acknowledgement") or {}
        return report["receivedEntries"] == 1 and report["anomalies"] == [] and ack.get("seq") == 1

    await eventually(acknowledged, what="the receipt of the use after both rotations, acknowledged")
    log = await consumer.client.usage_log(old_agreement)
    assert log["acknowledgement"]["proof"]["verificationMethod"] == f"{did}#key-3"
    assert log["heads"][-1]["proof"]["verificationMethod"] == consumer_rotated["signingKey"]


async def test_a_restart_keeps_the_rotated_keys_and_the_old_ones_listed(nodes):
    node = await nodes.start("acme")
    first = node.participant.keys.fingerprints()
    rotated = await node.client.rotate_keys()
    again = await node.client.rotate_keys()
    assert again["signingKey"].endswith("#key-5")
    await nodes.restart(node)
    keys = node.participant.keys
    assert keys.fingerprints() == again["fingerprints"] != first and keys.signing_id == "key-5"
    assert [r.id for r in keys.retired] == ["key-1", "key-2", "key-3", "key-4"]
    document = await did_document(node)
    assert dids.verification_key(document, rotated["signingKey"], "assertionMethod")
    assert document["authentication"] == [again["signingKey"]]


async def test_a_did_key_participant_cannot_rotate(nodes):
    from connector.client import ClientError

    node = await nodes.start("dev", did_method="key")
    try:
        await node.client.rotate_keys()
    except ClientError as exc:
        assert exc.status == 409 and "did:key" in exc.message
    else:
        raise AssertionError("a did:key participant rotated its keys")


async def test_the_cli_rotates_keys_and_suspends_and_resumes_a_participant(nodes):
    import asyncio

    from click.testing import CliRunner

    from connector.cli import main

    host = await nodes.start("acme")
    await nodes.host(host, "sme-one")

    def tds(*args: str):
        return CliRunner().invoke(main, [*args, "--dir", str(host.data_dir)])

    own = await asyncio.to_thread(tds, "keys", "rotate")
    assert own.exit_code == 0 and "#key-3" in own.output and "kept for verifying" in own.output, own.output
    hosted = await asyncio.to_thread(tds, "keys", "rotate", "--participant", "sme-one")
    assert hosted.exit_code == 0 and "sme-one" in hosted.output, hosted.output
    assert host.node.participants.by_name("sme-one").key_id.endswith("#key-3")
    suspended = await asyncio.to_thread(tds, "participant", "suspend", "sme-one", "--reason", "unpaid")
    assert suspended.exit_code == 0 and "suspended" in suspended.output
    listed = await asyncio.to_thread(tds, "participant", "list")
    assert "sme-one" in listed.output and "suspended since" in listed.output
    again = await asyncio.to_thread(tds, "participant", "suspend", "sme-one")
    assert again.exit_code == 1 and "already suspended" in again.output
    resumed = await asyncio.to_thread(tds, "participant", "resume", "sme-one")
    assert resumed.exit_code == 0 and host.node.participants.by_name("sme-one") is not None
