"""Attacks on measurement: resetting use counts, cutting the usage log short, and receipts that lie.

The counts a decision needs live in the hash-chained, signed log itself; the consumer keeps the provider's
signed acknowledgement of the log; the provider judges the receipts against the agreement by itself and
binds every entry to the agreement it is posted under.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from attack_setup import agreement_with_data, post_signed, tds

from connector.client import ClientError
from connector.identity import proof
from connector.services.usage import check_log
from connector.testing import eventually, store_connection
from usage_policies import ledger, templates

MAX3 = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 3),
                         templates.for_duration("qi", "P30D"))


async def _used_up(provider, consumer):
    agreement = await agreement_with_data(provider, consumer, MAX3, pull=False)
    for i in range(3):
        assert (await consumer.client.use(agreement, f"u{i}", purpose="R&D"))["decision"] == "permit"

    async def acknowledged():
        log = await consumer.client.usage_log(agreement)
        return log if log["acknowledgement"] and log["acknowledgement"]["seq"] == 3 else None

    await eventually(acknowledged)
    return agreement


def _db(node):
    return store_connection(node.data_dir)


async def _blocked(consumer, agreement, use_id="next") -> str:
    with pytest.raises(ClientError) as info:
        await consumer.client.use(agreement, use_id, purpose="R&D")
    assert info.value.status == 409 and "does not verify" in str(info.value)
    return str(info.value)


async def test_resetting_the_count_in_the_last_entry_blocks_further_use(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await _used_up(provider, consumer)
    with _db(consumer) as db:  # the count an attacker would reset: it lives in the last entry
        db.execute("UPDATE usage_log SET entry = replace(entry, '\"uses\":3', '\"uses\":0') WHERE seq = 3")
    assert "changed" in await _blocked(consumer, agreement)
    log = await consumer.client.usage_log(agreement)
    assert check_log(log["entries"], log["heads"], log["didDocument"], log["acknowledgement"],
                     log["providerDidDocument"]) is not None


async def test_resetting_the_count_with_a_recomputed_hash_is_caught_by_the_signed_head(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await _used_up(provider, consumer)
    with _db(consumer) as db:
        raw = db.execute("SELECT entry FROM usage_log WHERE seq = 3").fetchone()[0]
        entry = msgspec.json.decode(raw, type=ledger.Entry)
        reset = msgspec.structs.replace(entry, uses=0)
        reset = msgspec.structs.replace(reset, hash=ledger.entry_hash(reset))
        db.execute("UPDATE usage_log SET entry = ? WHERE seq = 3", [msgspec.json.encode(reset).decode()])
    await _blocked(consumer, agreement)


async def test_a_node_restarted_on_a_reset_count_still_refuses(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await _used_up(provider, consumer)
    await consumer.node.stop()
    with _db(consumer) as db:
        db.execute("UPDATE usage_log SET entry = replace(entry, '\"uses\":3', '\"uses\":0') WHERE seq = 3")
    await nodes.restart(consumer)
    await _blocked(consumer, agreement)


async def test_cutting_the_log_below_the_providers_acknowledgement_is_detected(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await _used_up(provider, consumer)
    with _db(consumer) as db:  # the last entry and its signed head: the chain left behind is self-consistent
        db.execute("DELETE FROM usage_log WHERE seq = 3")
        db.execute("DELETE FROM usage_heads WHERE seq = 3")
    assert "entries were removed" in await _blocked(consumer, agreement)
    log = await consumer.client.usage_log(agreement)
    problem = check_log(log["entries"], log["heads"], log["didDocument"], log["acknowledgement"],
                        log["providerDidDocument"])
    assert problem is not None and "entries were removed" in problem.problem


async def test_log_verify_names_the_cut(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await _used_up(provider, consumer)
    code, out = await tds(consumer, "log", "verify", agreement)
    assert code == 0 and "3 permitted use(s)" in out and "acknowledged up to #3" in out, out
    with _db(consumer) as db:
        db.execute("DELETE FROM usage_log WHERE seq = 3")
        db.execute("DELETE FROM usage_heads WHERE seq = 3")
    code, out = await tds(consumer, "log", "verify", agreement)
    assert code == 1 and "BROKEN" in out and "entries were removed" in out, out


def _signed_chain(consumer, agreement: str, uses: list[tuple[str, str]], *, start=None):
    """A chain the consumer's own key signs (what a node that ignored its policy would send)."""
    p = consumer.participant
    entries, head = [], start
    for i, (purpose, decision) in enumerate(uses):
        head = ledger.append(head, agreement=agreement, kind="use", use_id=f"x{i}", action="use", purpose=purpose,
                             application="cli", decision=decision, at=datetime.now(UTC).isoformat())
        entries.append(head)
    at = datetime.now(UTC).isoformat()
    signed = proof.sign(ledger.head_document(head, signer=p.did, at=at), p.keys.signing,
                        verification_method=p.key_id, created=at)
    return [msgspec.to_builtins(e) for e in entries], [signed]


async def test_uses_beyond_the_allowance_are_flagged_from_the_receipts_alone_once_each(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3, pull=False)
    await consumer.node.receipts.close()  # the consumer's own receipts stay out of the way
    entries, heads = _signed_chain(consumer, agreement, [("R&D", "permit")] * 5 + [("marketing", "permit")])
    url = f"{provider.participant.dsp_base}/tds/usage-receipts"
    body = {"agreementId": agreement, "entries": entries, "heads": heads}
    for _ in range(3):  # sent again and again: still one anomaly per use
        status, answer = await post_signed(consumer.participant, url, body)
        assert status == 200 and answer["acceptedThrough"] == 6
    report = await provider.client.usage_report(agreement)
    flagged = [a for a in report["anomalies"] if a["kind"] == "beyond-allowance"]
    assert [a["detail"].split()[1] for a in flagged] == ["#4", "#5", "#6"], flagged
    assert "purpose" in flagged[2]["detail"] and "marketing" in flagged[2]["detail"]


async def test_receipts_of_one_agreement_posted_under_another_are_409_and_flagged(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    x = await agreement_with_data(provider, consumer, MAX3, pull=False)
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    negotiation = await consumer.client.negotiate(provider.public_url, offer)
    y = (await consumer.client.negotiation(negotiation["id"], wait_s=15))["agreement"]["@id"]
    for i in range(2):
        await consumer.client.use(x, f"u{i}", purpose="R&D")

    async def received():
        return (await provider.client.usage_report(x))["receivedEntries"] == 2

    await eventually(received)
    log = await consumer.client.usage_log(x)
    url = f"{provider.participant.dsp_base}/tds/usage-receipts"
    for _ in range(2):
        status, answer = await post_signed(consumer.participant, url, {"agreementId": y, "entries": log["entries"],
                                                                      "heads": log["heads"]})
        assert status == 409 and answer["anomaly"] == "mismatch"
    report = await provider.client.usage_report(y)
    assert report["uses"] == 0 and report["receivedEntries"] == 0
    assert [a["kind"] for a in report["anomalies"]] == ["mismatch"]  # recorded once
    # A head of agreement X alone, with no entries, is refused the same way.
    status, answer = await post_signed(consumer.participant, url, {"agreementId": y, "entries": [],
                                                                  "heads": log["heads"]})
    assert status == 409 and answer["anomaly"] == "mismatch"


async def test_a_peer_cannot_grow_the_anomalies_without_bound(nodes, monkeypatch):
    from connector.services import receipts

    monkeypatch.setattr(receipts, "MAX_ANOMALIES", 3)
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3, pull=False)
    await consumer.node.receipts.close()
    url = f"{provider.participant.dsp_base}/tds/usage-receipts"
    for i in range(6):  # each with another foreign agreement id: another anomaly each time, up to the cap
        entries, heads = _signed_chain(consumer, f"urn:uuid:other-{i}", [("R&D", "permit")])
        status, answer = await post_signed(consumer.participant, url, {"agreementId": agreement,
                                                                      "entries": entries, "heads": heads})
        assert status == 409 and answer["anomaly"] == "mismatch"
    report = await provider.client.usage_report(agreement)
    assert len(report["anomalies"]) == 3 and report["anomaliesCapped"]


async def test_cutting_the_log_before_the_provider_acknowledged_it_is_detected_while_the_node_runs(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3, pull=False)
    await provider.node.stop()  # no acknowledgement can arrive: only the node's own memory of its log is left
    for i in range(3):
        assert (await consumer.client.use(agreement, f"u{i}", purpose="R&D"))["decision"] == "permit"
    with _db(consumer) as db:  # the last use and its signed head; the head of #2 is genuine and stays
        db.execute("DELETE FROM usage_log WHERE seq = 3")
        db.execute("DELETE FROM usage_heads WHERE seq = 3")
    assert "entries were removed" in await _blocked(consumer, agreement)
