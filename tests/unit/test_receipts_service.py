"""The receipt service on a real store, without a node or a socket: the consumer's and the provider's
services talk through an in-memory peer (``usage_setup.ReceiptsPeer``). Receipts sent and acknowledged,
each anomaly recorded once and capped, receipts bound to their agreement, revocation both ways."""

from __future__ import annotations

import msgspec
import pytest
from usage_setup import AGREEMENT, PeerAnswer, Setup, open_setup, policy

from connector.errors import Conflict, NotFound, PeerError
from connector.services import receipts
from connector.services.usage import head_verifier
from usage_policies import ledger


@pytest.fixture
async def setup(tmp_path):
    made = await open_setup(tmp_path)
    yield made
    await made.receipts.close()
    await made.store.close()


async def batch(setup: Setup) -> dict:
    entries, heads, _ = await setup.usage.log_of(setup.consumer, AGREEMENT)
    return {"agreementId": AGREEMENT, "entries": msgspec.to_builtins(entries), "heads": heads}


async def receive(setup: Setup, body: dict, *, caller: str | None = None) -> dict:
    return await setup.receipts.receive(setup.provider, caller or setup.consumer.did, body)


async def test_receipts_are_sent_and_the_providers_acknowledgement_kept(setup: Setup):
    await setup.use("u1")
    await setup.use("u2")
    assert await setup.receipts._send_batch("parts", AGREEMENT) is False
    _, _, ack = await setup.usage.log_of(setup.consumer, AGREEMENT)
    assert ack is not None and ack["seq"] == 2 and ack["signer"] == setup.provider.did
    assert head_verifier(setup.provider.did_document())(ack)
    report = await setup.receipts.report(setup.provider, AGREEMENT)
    assert report["uses"] == 2 and report["receivedEntries"] == 2 and report["anomalies"] == []


async def test_a_refused_send_leaves_the_cursor_where_it_was(setup: Setup):
    await setup.use("u1")
    setup.peer.refuse_with = 503
    with pytest.raises(PeerError, match="answered 503"):
        await setup.receipts._send_batch("parts", AGREEMENT)
    setup.peer.refuse_with = None
    assert await setup.receipts._send_batch("parts", AGREEMENT) is False  # the same entry is sent again
    assert (await setup.receipts.report(setup.provider, AGREEMENT))["receivedEntries"] == 1


@pytest.mark.parametrize(("status", "answer"), [
    (200, {"acceptedThrough": 1000}),
    (409, {"expectedSeq": 1001}),
    (200, {"acceptedThrough": "all of them"}),
    (200, {"acceptedThrough": True}),
], ids=["accepted beyond", "expected beyond", "not a number", "a boolean"])
async def test_a_provider_cannot_move_the_cursor_past_what_was_sent(setup: Setup, monkeypatch, status, answer):
    """Attack: the provider answers that it holds more of the consumer's log than the consumer sent, so that every
    later use is refused (the log would look cut short), without a revocation on record."""
    await setup.use("u1")

    async def overclaiming(method, url, **kwargs):
        return PeerAnswer(status, msgspec.json.encode(answer), url)

    monkeypatch.setattr(setup.peer, "request", overclaiming)
    with pytest.raises(PeerError, match="sent entries through #1"):
        await setup.receipts._send_batch("parts", AGREEMENT)
    monkeypatch.undo()
    assert (await setup.use("u2")).permitted  # nothing blocked
    assert await setup.receipts._send_batch("parts", AGREEMENT) is False
    assert (await setup.receipts.report(setup.provider, AGREEMENT))["receivedEntries"] == 2


async def test_receipts_are_only_taken_from_the_agreements_consumer(setup: Setup):
    await setup.use("u1")
    with pytest.raises(NotFound):
        await receive(setup, await batch(setup), caller="did:web:example.org:participants:someone")


async def test_a_batch_resent_is_accepted_once(setup: Setup):
    await setup.use("u1")
    body = await batch(setup)
    first = await receive(setup, body)
    again = await receive(setup, body)
    assert first["acceptedThrough"] == again["acceptedThrough"] == 1
    assert (await setup.receipts.report(setup.provider, AGREEMENT))["receivedEntries"] == 1


async def test_a_gap_names_the_entry_expected(setup: Setup):
    for i in range(3):
        await setup.use(f"u{i}")
    body = await batch(setup)
    with pytest.raises(Conflict) as refused:
        await receive(setup, {**body, "entries": body["entries"][1:]})
    assert refused.value.details["anomaly"] == "gap" and refused.value.details["expectedSeq"] == 1  # type: ignore[attr-defined]


async def test_an_entry_that_does_not_match_its_hash_is_forged(setup: Setup):
    await setup.use("u1")
    body = await batch(setup)
    body["entries"][0]["purpose"] = "Other"
    with pytest.raises(Conflict) as refused:
        await receive(setup, body)
    assert refused.value.details["anomaly"] == "forged"  # type: ignore[attr-defined]


async def test_an_entry_received_before_with_another_hash_is_a_fork(setup: Setup):
    await setup.use("u1")
    body = await batch(setup)
    await receive(setup, body)
    other = ledger.append(None, agreement=AGREEMENT, kind="use", use_id="other", at=body["entries"][0]["at"],
                          action="use", purpose="R&D", application="app", decision="permit", reasons=[])
    with pytest.raises(Conflict) as refused:
        await receive(setup, {**body, "entries": [msgspec.to_builtins(other)]})
    assert refused.value.details["anomaly"] == "fork"  # type: ignore[attr-defined]


async def test_receipts_of_another_agreement_are_a_mismatch_recorded_once(setup: Setup):
    await setup.use("u1")
    body = await batch(setup)
    for _ in range(2):
        with pytest.raises(Conflict) as refused:
            await receive(setup, {**body, "agreementId": AGREEMENT, "entries": [
                {**body["entries"][0], "agreement": "urn:uuid:other"}]})
        assert refused.value.details["anomaly"] == "mismatch"  # type: ignore[attr-defined]
    report = await setup.receipts.report(setup.provider, AGREEMENT)
    assert [a["kind"] for a in report["anomalies"]] == ["mismatch"] and report["receivedEntries"] == 0


async def test_anomalies_are_capped(setup: Setup, monkeypatch):
    monkeypatch.setattr(receipts, "MAX_ANOMALIES", 2)
    await setup.use("u1")
    body = await batch(setup)
    for i in range(4):
        with pytest.raises(Conflict):
            await receive(setup, {**body, "entries": [{**body["entries"][0], "agreement": f"urn:uuid:x{i}"}]})
    report = await setup.receipts.report(setup.provider, AGREEMENT)
    assert len(report["anomalies"]) == 2 and report["anomaliesCapped"]


async def test_uses_beyond_the_allowance_are_flagged_from_the_receipts(setup: Setup):
    # A consumer's node that decides by other terms than the agreement's (no count limit): its log and
    # heads are validly signed, but the provider judges the uses by the agreement it holds (at most 3).
    await setup.sql("UPDATE agreements SET agreement = ? WHERE participant_id = 'parts'",
                    msgspec.json.encode({**policy(), "@id": AGREEMENT}).decode())
    for i in range(4):
        assert (await setup.use(f"u{i}")).permitted
    await receive(setup, await batch(setup))
    report = await setup.receipts.report(setup.provider, AGREEMENT)
    assert [a["kind"] for a in report["anomalies"]] == ["beyond-allowance"]
    assert "#4" in report["anomalies"][0]["detail"]


async def test_a_revocation_blocks_deletes_and_answers_with_a_signed_deletion_receipt(setup: Setup):
    await setup.use("u1")
    answer = await setup.receipts.revoke(setup.provider, AGREEMENT, "contract ended")
    assert answer["state"] == "REVOKED"
    for task in list(setup.receipts._tasks):
        await task
    assert setup.vault.destroyed == [("parts", AGREEMENT)]
    with pytest.raises(Conflict, match="revoked"):
        await setup.use("u2")
    report = await setup.receipts.report(setup.provider, AGREEMENT)
    assert report["revocation"]["status"] == "acknowledged"
    receipt = report["revocation"]["deletionReceipt"]
    assert receipt["entry"]["kind"] == "delete" and receipt["head"]["hash"] == receipt["entry"]["hash"]


async def test_a_revocation_delivered_twice_gets_the_same_receipt(setup: Setup):
    await setup.receipts.revoke(setup.provider, AGREEMENT, "contract ended")
    for task in list(setup.receipts._tasks):
        await task
    (_, _, signed), = [s for s in setup.peer.sent if s[1].endswith("/tds/revocations")]
    first = await setup.receipts.on_revocation(setup.consumer, setup.provider.did, signed)
    again = await setup.receipts.on_revocation(setup.consumer, setup.provider.did, signed)
    assert first == again
    entries, _, _ = await setup.usage.log_of(setup.consumer, AGREEMENT)
    assert [e.kind for e in entries] == ["revoked", "delete"]


async def test_a_revocation_with_a_bad_proof_is_refused(setup: Setup):
    await setup.receipts.revoke(setup.provider, AGREEMENT, "contract ended")
    for task in list(setup.receipts._tasks):
        await task
    (_, _, signed), = [s for s in setup.peer.sent if s[1].endswith("/tds/revocations")]
    with pytest.raises(Exception, match="does not verify"):
        await setup.receipts.on_revocation(setup.consumer, setup.provider.did, {**signed, "reason": "changed"})


async def test_the_consumer_records_the_revocations_reason_as_it_blocks_use(setup: Setup):
    """The reason is on record from the moment use is blocked, before the data is deleted; a reason with
    control characters is kept without them (it is printed on operators' terminals)."""
    from connector.store import usage as store

    await setup.receipts.revoke(setup.provider, AGREEMENT, "contract ended\x1b[2J\x07 early")
    for task in list(setup.receipts._tasks):
        await task
    (_, _, signed), = [s for s in setup.peer.sent if s[1].endswith("/tds/revocations")]
    seen = []

    async def deleting(participant, agreement_id):
        seen.append(await setup.repo.read(lambda db: store.revocation(db, participant.id, agreement_id)))
        return await setup.vault(participant, agreement_id)

    await setup.sql("DELETE FROM revocations WHERE participant_id = 'parts'")
    setup.receipts.destroy_data = deleting
    await setup.receipts.on_revocation(setup.consumer, setup.provider.did, signed)
    assert seen[0]["status"] == "received" and seen[0]["reason"] == "contract ended [2J  early"
    ended = await setup.usage.endings(setup.consumer)
    assert ended[AGREEMENT]["revocation"]["status"] == "applied"
    assert ended[AGREEMENT]["dataDeleted"]["reason"] == "after the provider's revocation"
