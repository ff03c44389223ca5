"""The usage service on a real store (a temporary SQLite file), without a node or a socket: decisions and
counts, use ids and re-deliveries, the head check against the signed head and the provider's
acknowledgement, and deletion duties on schedule."""

from __future__ import annotations

import asyncio

import pytest
from usage_setup import AGREEMENT, ASSET, Setup, open_setup, policy

from connector.config import UsageSection
from connector.errors import Conflict, NotFound
from connector.services.usage import check_log
from usage_policies import templates


@pytest.fixture
async def setup(tmp_path):
    made = await open_setup(tmp_path)
    yield made
    await made.usage.close()
    await made.store.close()


async def test_a_permitted_use_is_logged_counted_and_its_head_signed(setup: Setup):
    outcome = await setup.use("u1")
    assert outcome.permitted and outcome.entry.seq == 1 and outcome.entry.uses == 1
    entries, heads, ack = await setup.usage.log_of(setup.consumer, AGREEMENT)
    assert [e.use_id for e in entries] == ["u1"] and ack is None
    assert heads[-1]["seq"] == 1 and heads[-1]["hash"] == outcome.entry.hash
    from msgspec import to_builtins
    assert check_log(to_builtins(entries), heads, setup.consumer.did_document()) is None


async def test_uses_beyond_the_count_are_denied_and_logged(setup: Setup):
    outcomes = [await setup.use(f"u{i}") for i in range(4)]
    assert [o.decision for o in outcomes] == ["permit", "permit", "permit", "deny"]
    entries, _, _ = await setup.usage.log_of(setup.consumer, AGREEMENT)
    assert len(entries) == 4 and entries[-1].decision == "deny"


async def test_concurrent_uses_are_counted_exactly(setup: Setup):
    outcomes = await asyncio.gather(*(setup.use(f"c{i}") for i in range(40)))
    assert sum(o.permitted for o in outcomes) == 3


async def test_a_purpose_the_policy_does_not_allow_is_denied(setup: Setup):
    outcome = await setup.use("u1", purpose="marketing")
    assert not outcome.permitted and outcome.reasons


async def test_an_unknown_agreement_is_not_found(setup: Setup):
    with pytest.raises(NotFound):
        await setup.use("u1", agreement_id="urn:uuid:nothing")


async def test_the_providers_side_of_an_agreement_cannot_be_used(setup: Setup):
    with pytest.raises(NotFound):
        await setup.usage.use(setup.provider, application="app", agreement_id=AGREEMENT, action="use",
                              purpose="R&D", use_id="u1")


async def test_a_revoked_agreement_is_refused(setup: Setup):
    await setup.sql("UPDATE agreements SET state = 'REVOKED' WHERE participant_id = 'parts'")
    with pytest.raises(Conflict, match="revoked"):
        await setup.use("u1")


async def test_a_retry_is_redelivered_and_counted_once(setup: Setup):
    await setup.use("u1")
    retry = await setup.use("u1")
    assert retry.permitted and retry.repeated and retry.entry.kind == "redelivery"
    nxt = await setup.use("u2")
    assert nxt.entry.uses == 2


async def test_a_used_id_with_another_purpose_is_a_conflict(setup: Setup):
    await setup.use("u1")
    with pytest.raises(Conflict) as refused:
        await setup.use("u1", purpose="Other")
    assert refused.value.details == {"conflict": ["purpose"]}  # type: ignore[attr-defined]


async def test_redeliveries_are_bounded(setup: Setup):
    setup.usage.config = UsageSection(redeliveries=1)
    await setup.use("u1")
    await setup.use("u1")
    with pytest.raises(Conflict) as refused:
        await setup.use("u1")
    assert refused.value.details == {"conflict": ["redeliveries"]}  # type: ignore[attr-defined]


async def test_a_retry_after_the_redelivery_window_is_a_conflict(setup: Setup):
    await setup.use("u1")
    setup.clock.advance(UsageSection().redelivery_window_s + 1)
    with pytest.raises(Conflict) as refused:
        await setup.use("u1")
    assert refused.value.details == {"conflict": ["window"]}  # type: ignore[attr-defined]


async def test_a_denied_use_asked_again_appends_nothing(setup: Setup):
    await setup.use("u1", purpose="marketing")
    again = await setup.use("u1", purpose="marketing")
    assert not again.permitted and not again.appended
    entries, _, _ = await setup.usage.log_of(setup.consumer, AGREEMENT)
    assert len(entries) == 1


async def test_receipts_are_told_of_each_appended_entry(setup: Setup):
    await setup.use("u1")
    await setup.use("u2", purpose="marketing")
    await setup.use("u2", purpose="marketing")  # the same deny again: nothing appended
    assert setup.notified == [("parts", AGREEMENT)] * 2


async def test_a_changed_entry_blocks_uses(setup: Setup):
    await setup.use("u1")
    await setup.sql("UPDATE usage_log SET entry = replace(entry, '\"R&D\"', '\"X\"')")
    with pytest.raises(Conflict, match="was changed"):
        await setup.use("u2")


async def test_a_log_cut_back_to_before_its_last_signed_head_blocks_uses(setup: Setup):
    await setup.use("u1")
    await setup.use("u2")
    await setup.sql("DELETE FROM usage_log WHERE seq = 2")
    with pytest.raises(Conflict, match=r"entry #2 was logged here .* entries were removed"):
        await setup.use("u3")
    setup.usage._committed.clear()  # as after a restart: only the signed heads are left to tell
    with pytest.raises(Conflict, match="not the last signed head"):
        await setup.use("u3")


async def test_a_log_shorter_than_the_provider_acknowledged_blocks_uses(setup: Setup):
    await setup.use("u1")
    await setup.sql("INSERT INTO receipt_cursors (participant_id, agreement_id, acked_seq) VALUES (?, ?, 5)",
                    "parts", AGREEMENT)
    with pytest.raises(Conflict, match="acknowledged entries up to #5"):
        await setup.use("u2")


async def test_check_heads_names_a_chain_that_does_not_verify(setup: Setup):
    await setup.use("u1")
    assert await setup.usage.check_heads() == {}
    await setup.sql("DELETE FROM usage_heads")
    problems = await setup.usage.check_heads()
    assert list(problems) == [("parts", AGREEMENT)]


async def test_a_deletion_deadline_is_carried_out_and_logged(tmp_path):
    made = await open_setup(tmp_path, policy(templates.use_and_delete_after(ASSET, "PT1S")))
    try:
        assert (await made.use("u1")).permitted
        due = await made.repo.duties_due()
        assert [(d[0], d[1], d[2]) for d in due] == [("parts", AGREEMENT, "delete")]
        await made.usage.carry_out("parts", AGREEMENT, "delete")
        assert made.vault.destroyed == [("parts", AGREEMENT)]
        entries, _, _ = await made.usage.log_of(made.consumer, AGREEMENT)
        assert entries[-1].kind == "delete" and "data key destroyed" in entries[-1].reasons[0]
        assert await made.repo.duties_due() == []
    finally:
        await made.store.close()


async def test_the_summary_counts_uses_and_what_is_left(setup: Setup):
    await setup.use("u1")
    await setup.use("u2")
    summary = await setup.usage.summary(setup.consumer, AGREEMENT)
    assert summary["uses"] == 2 and summary["allowance"]["usesLeft"] == 1
    assert [r["use_id"] for r in summary["latest"]] == ["u2", "u1"]


class OwnClaims:
    """The consumer's own verified claims, as ``held_claims_of`` would count them; notes each time it is asked."""

    def __init__(self, claims=None) -> None:
        self.claims = claims
        self.asked = 0

    async def __call__(self, participant):
        self.asked += 1
        return self.claims


@pytest.mark.parametrize(("terms", "claims", "permitted", "reason"), [
    (templates.no_export_outside(ASSET, "CN"), {"region": "CN-GD"}, True, None),
    (templates.no_export_outside(ASSET, "CN"), None, False,
     "the export destination is not known: no verified region of the recipient"),
    (templates.no_export_outside(ASSET, "CN"), {"region": "DE"}, False, "export destination is 'DE'"),
    (templates.verified_region(ASSET, "CN"), None, False,
     "no verified region: no credential from an issuer trusted for regions"),
    (templates.member_of(ASSET, "urn:tds:space:auto-parts"), {"spaces": ["urn:tds:space:auto-parts"]}, True, None),
    (templates.member_of(ASSET, "urn:tds:space:auto-parts"), {}, False, "no verified membership"),
])
async def test_a_policy_naming_verified_claims_is_decided_on_each_use_against_the_consumers_own(
        tmp_path, terms, claims, permitted, reason):
    from connector.testing import peer_claims

    made = await open_setup(tmp_path, policy(terms))
    try:
        own = OwnClaims(None if claims is None else peer_claims(made.consumer.did, **claims))
        made.usage.own_claims = own
        outcome = await made.use("u1")
        assert outcome.permitted is permitted, outcome.reasons
        if reason is not None:
            assert any(reason in r for r in outcome.reasons), outcome.reasons
        assert own.asked == 1
    finally:
        await made.usage.close()
        await made.store.close()


async def test_a_policy_that_names_no_verified_claim_reads_no_credential(setup: Setup):
    own = OwnClaims()
    setup.usage.own_claims = own
    assert (await setup.use("u1")).permitted
    assert own.asked == 0


async def test_the_region_in_the_participants_own_configuration_does_not_count_as_verified(tmp_path):
    made = await open_setup(tmp_path, policy(templates.no_export_outside(ASSET, "CN")))
    try:
        assert made.consumer.record.region == "CN"
        outcome = await made.use("u1")  # no credentials at all
        assert not outcome.permitted
    finally:
        await made.usage.close()
        await made.store.close()


async def test_own_claims_are_the_held_credentials_by_issuers_the_participant_trusts(setup: Setup):
    from datetime import timedelta

    from vc_setup import NOW, REGION, credential, party

    from connector.identity.claims import Kind, Region
    from connector.identity.credentials import utc_text
    from connector.identity.trust import TrustList
    from connector.services.usage import held_claims_of
    from connector.store.credentials import HeldCredential

    registry, stranger = party("registry"), party("stranger")
    documents = [credential(REGION, registry, setup.consumer.did), credential(Region("DE"), stranger,
                                                                                  setup.consumer.did)]
    rows = [HeldCredential(id=d["id"], kind="region", issuer=d["issuer"], valid_until=d["validUntil"],
                           source="imported", received_at=utc_text(NOW), document=d) for d in documents]

    async def held(participant):
        return rows

    async def trust_of(participant_id):
        return TrustList({registry.did: {Kind.REGION}})

    own = held_claims_of(held, trust_of, clock=lambda: NOW + timedelta(minutes=1))
    claims = await own(setup.consumer)
    assert claims.region is not None and (claims.region.value, claims.region.issuer) == (REGION, registry.did)
    later = held_claims_of(held, trust_of, clock=lambda: NOW + timedelta(days=31))  # both ran out
    assert (await later(setup.consumer)).region is None
