"""Usage receipts to the provider, anomaly detection, and revocation with a signed deletion receipt."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
from test_usage import agreement_between

from connector.client import ClientError
from connector.net import signing
from connector.testing import eventually, store_connection


async def test_receipts_reach_the_provider(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    for i in range(3):
        await consumer.client.use(agreement, f"u{i}", purpose="R&D")
    await consumer.client.use(agreement, "u3", purpose="R&D")  # denied: over the count

    async def complete():
        report = await provider.client.usage_report(agreement)
        return report if report["receivedEntries"] == 4 else None

    report = await eventually(complete)
    assert report["uses"] == 3 and report["denied"] == 1 and report["anomalies"] == []
    assert list(report["usesPerDay"].values()) == [{"R&D": 3}]
    assert report["allowance"]["usesLeft"] == 0 and not report["overdue"]
    assert report["signedHeads"] >= 1


async def test_offline_consumer_catches_up(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url, uses=10)
    await provider.node.stop()
    for i in range(4):
        assert (await consumer.client.use(agreement, f"u{i}", purpose="R&D"))["decision"] == "permit"
    await nodes.restart(provider)

    async def complete():
        report = await provider.client.usage_report(agreement)
        return report if report["receivedEntries"] == 4 else None

    assert (await eventually(complete))["uses"] == 4


async def _post_receipts(consumer, provider, body):
    p = consumer.participant
    url = f"{provider.participant.dsp_base}/tds/usage-receipts"
    raw = json.dumps(body).encode()
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        return r.status, await r.json()


async def test_forged_gap_and_fork_are_flagged(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url, uses=10)
    await provider.node.stop()
    for i in range(4):
        await consumer.client.use(agreement, f"u{i}", purpose="R&D")
    await consumer.node.receipts.close()  # receipts are sent by hand below
    await nodes.restart(provider)
    log = await consumer.client.usage_log(agreement)
    entries, heads = log["entries"], log["heads"]

    forged = [dict(e) for e in entries]
    forged[1]["purpose"] = "marketing"
    status, body = await _post_receipts(consumer, provider, {"agreementId": agreement, "entries": forged,
                                                             "heads": heads})
    assert status == 409 and body["anomaly"] == "forged"

    status, body = await _post_receipts(consumer, provider, {"agreementId": agreement, "entries": entries[2:],
                                                             "heads": heads})
    assert status == 409 and body["anomaly"] == "gap" and body["expectedSeq"] == 1

    status, body = await _post_receipts(consumer, provider, {"agreementId": agreement, "entries": entries,
                                                             "heads": heads})
    assert status == 200 and body["acceptedThrough"] == 4
    status, body = await _post_receipts(consumer, provider, {"agreementId": agreement, "entries": entries,
                                                             "heads": heads})
    assert status == 200 and body["acceptedThrough"] == 4  # a re-delivery is harmless

    import msgspec

    from usage_policies import ledger

    changed = msgspec.structs.replace(msgspec.convert(entries[2], ledger.Entry), purpose="sales")
    fork = msgspec.to_builtins(msgspec.structs.replace(changed, hash=ledger.entry_hash(changed)))
    status, body = await _post_receipts(consumer, provider, {"agreementId": agreement, "entries": [fork],
                                                             "heads": heads})
    assert status == 409 and body["anomaly"] == "fork"

    reordered = [entries[0], entries[2], entries[1], entries[3]]
    status, body = await _post_receipts(consumer, provider, {"agreementId": agreement, "entries": reordered,
                                                             "heads": heads})
    assert status == 200  # already held: identical entries are skipped, whatever their order

    report = await provider.client.usage_report(agreement)
    assert [a["kind"] for a in report["anomalies"]] == ["forged", "gap", "fork"]
    assert report["receivedEntries"] == 4


async def test_receipts_from_someone_else_are_refused(nodes):
    provider, consumer, other = await nodes.start("acme"), await nodes.start("parts"), await nodes.start("x")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    status, _ = await _post_receipts(other, provider, {"agreementId": agreement, "entries": [], "heads": []})
    assert status == 404


async def test_revocation_blocks_use_and_deletes_with_a_signed_receipt(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    await consumer.client.use(agreement, "u0", purpose="R&D")
    result = await provider.client.revoke(agreement, "supplier contract ended")
    assert result["state"] == "REVOKED"

    async def acknowledged():
        report = await provider.client.usage_report(agreement)
        return report if (report["revocation"] or {}).get("status") == "acknowledged" else None

    report = await eventually(acknowledged)
    receipt = report["revocation"]["deletionReceipt"]
    assert receipt["entry"]["kind"] == "delete" and receipt["head"]["hash"] == receipt["entry"]["hash"]
    with pytest.raises(ClientError) as info:
        await consumer.client.use(agreement, "u1", purpose="R&D")
    assert info.value.status == 409 and "revoked" in info.value.message
    summary = await consumer.client.usage(agreement)
    assert [e["kind"] for e in summary["latest"][:2]] == ["delete", "revoked"]

    async def deletion_received():
        r = await provider.client.usage_report(agreement)
        return r if any(d["kind"] == "delete" for d in r["duties"]) else None

    assert await eventually(deletion_received)


async def test_revocation_reaches_an_offline_consumer(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    await consumer.node.stop()
    await provider.client.revoke(agreement, "audit finding")
    report = await provider.client.usage_report(agreement)
    assert report["revocation"]["status"] == "pending"
    await nodes.restart(consumer)

    async def acknowledged():
        r = await provider.client.usage_report(agreement)
        return r if r["revocation"]["status"] == "acknowledged" else None

    assert await eventually(acknowledged, 30)


async def test_deletion_on_schedule_survives_a_restart(nodes):
    from usage_policies import templates

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await provider.client.add_asset({"id": "qi"})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("brief", templates.use_and_delete_after("qi", "PT1H"))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="brief",
                                                  assets=["qi"])
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    agreement = (await consumer.client.negotiation(started["id"], wait_s=10))["agreement"]["@id"]
    result = await consumer.client.use(agreement, "u0")
    assert result["decision"] == "permit" and any(e.startswith("delete at") for e in result["effects"]), result
    await consumer.node.stop()  # down when the deadline passes
    # The hour passes while the node is down: its stored deadline now lies behind it.
    with store_connection(consumer.data_dir) as db:
        moved = db.execute("UPDATE scheduled_duties SET due_at = due_at - 3601 WHERE agreement_id = ?",
                           [agreement]).rowcount
    assert moved == 1
    await nodes.restart(consumer)

    async def deleted():
        summary = await consumer.client.usage(agreement)
        return summary if summary["latest"][0]["kind"] == "delete" else None

    summary = await eventually(deleted)
    assert "on schedule" in summary["latest"][0]["reasons"][0]
    log = await consumer.client.usage_log(agreement)
    from connector.services.usage import check_log

    assert check_log(log["entries"], log["heads"], log["didDocument"]) is None

    async def provider_knows():
        report = await provider.client.usage_report(agreement)
        return report if any(d["kind"] == "delete" for d in report["duties"]) else None

    assert await eventually(provider_knows)
