"""The usage service on a real store (a temporary SQLite file), without a node or a socket: decisions and
counts, use ids and re-deliveries, the head check against the signed head and the provider's
acknowledgement, and deletion duties on schedule."""

from __future__ import annotations

import asyncio

import pytest
from usage_setup import AGREEMENT, ASSET, Setup, open_setup, policy

from connector import testing
from connector.config import UsageSection
from connector.errors import Conflict, NotFound, StorageError
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


async def test_a_log_emptied_behind_its_signed_heads_blocks_uses_after_a_restart_too(setup: Setup):
    await setup.use("u1")
    await setup.use("u2")
    await setup.sql("DELETE FROM usage_log")
    setup.usage._committed.clear()  # as after a restart: only the signed heads are left to tell
    assert await setup.usage.check_heads() == {
        ("parts", AGREEMENT): "entry #2 was signed as the log's head but the log is empty: entries were removed"}
    with pytest.raises(Conflict, match="log is empty: entries were removed"):
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


async def test_data_used_again_after_its_deletion_is_deleted_again(tmp_path):
    made = await open_setup(tmp_path, policy(templates.max_uses(ASSET, 10),
                                             templates.use_and_delete_after(ASSET, "P1D")))
    try:
        assert (await made.use("u1")).permitted
        await made.usage.carry_out("parts", AGREEMENT, "delete")  # as its deadline would (or a revocation)
        assert await made.repo.duties_due() == []
        # The data received again (a new transfer under the agreement) and used: its deletion is due again.
        made.clock.advance(60)
        used = await made.use("u2")
        assert used.permitted and any(e.startswith("delete at ") for e in used.effects)
        due = await made.repo.duties_due()
        assert [(d[0], d[1], d[2]) for d in due] == [("parts", AGREEMENT, "delete")]
        await made.usage.carry_out("parts", AGREEMENT, "delete")
        assert made.vault.destroyed == [("parts", AGREEMENT)] * 2
        assert await made.repo.duties_due() == []
    finally:
        await made.usage.close()
        await made.store.close()


async def test_a_deletion_that_failed_is_tried_again(tmp_path, monkeypatch):
    monkeypatch.setattr("connector.services.usage.DUTY_RETRY_S", 0.01)
    made = await open_setup(tmp_path, policy(templates.max_uses(ASSET, 1),
                                             templates.use_and_delete_after(ASSET, "PT1S")))
    vault, failures = made.vault, []

    async def failing_once(participant, agreement_id):
        if not failures:
            failures.append(agreement_id)
            raise OSError("the vault's disk is gone")
        return await vault(participant, agreement_id)

    made.usage.destroy_data = failing_once
    try:
        assert (await made.use("u1")).permitted  # the last use the policy allows: no later use wakes anything
        made.clock.advance(5)
        await made.usage.start()

        async def deleted() -> bool:
            return vault.destroyed == [("parts", AGREEMENT)] and await made.repo.duties_due() == []

        await testing.eventually(deleted, 5.0, every_s=0.01, what="the deletion tried again")
        assert failures == [AGREEMENT]
    finally:
        await made.usage.close()
        await made.store.close()


async def test_a_participant_that_left_leaves_nothing_of_its_chains_in_memory(setup: Setup):
    await setup.use("u1")
    kept = (setup.usage._asks_claims, setup.usage._compiled, setup.usage._committed, setup.usage._chains,
            setup.usage._recent)
    assert all(any(key[0] == "parts" for key in table) for table in kept)
    setup.usage.forget("acme")  # another participant: nothing of parts goes
    assert all(any(key[0] == "parts" for key in table) for table in kept)
    setup.usage.forget("parts")
    assert not any(key[0] == "parts" for table in kept for key in table)


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


# -- a dry run: the same decision, nothing counted, logged or scheduled ----------------------------------

def _window_closed(made: Setup) -> None:
    made.clock.advance(31 * 86400)


@pytest.mark.parametrize(("terms", "before", "purpose", "then", "decision"), [
    (templates.max_uses(ASSET, 3), 0, "R&D", None, "permit"),
    (templates.max_uses(ASSET, 3), 3, "R&D", None, "deny"),
    (templates.max_uses(ASSET, 3), 0, "marketing", None, "deny"),
    (templates.for_duration(ASSET, "P30D"), 1, "R&D", _window_closed, "deny"),
    (templates.no_export_outside(ASSET, "CN"), 0, "R&D", None, "deny"),
], ids=["permit", "count", "purpose", "time-window", "export"])
async def test_a_dry_run_answers_what_the_use_that_follows_is_decided_and_changes_nothing(
        tmp_path, terms, before, purpose, then, decision):
    made = await open_setup(tmp_path, policy(terms))
    try:
        for i in range(before):
            assert (await made.use(f"u{i}")).permitted
        if then is not None:
            then(made)
        notified, state = list(made.notified), await made.dump()
        checked = await made.check(purpose=purpose)
        assert await made.dump() == state and made.notified == notified
        used = await made.use("next", purpose=purpose)
        assert (checked.decision, checked.reasons) == (used.decision, used.reasons) and used.decision == decision
        assert checked.uses == before
    finally:
        await made.usage.close()
        await made.store.close()


async def test_a_dry_run_says_what_is_left_and_what_a_use_would_carry_out(tmp_path):
    made = await open_setup(tmp_path, policy(templates.max_uses(ASSET, 3),
                                             templates.use_and_delete_after(ASSET, "P7D")))
    try:
        await made.use("u1")
        checked = await made.check()
        assert checked.permitted and checked.uses == 1
        assert checked.allowance["usesLeft"] == 2 and checked.allowance["usesAllowed"] == 3
        assert any(e.startswith("delete at ") for e in checked.effects)
        due = await made.repo.duties_due()
        assert len(due) == 1  # the one the use scheduled; the dry run scheduled none of its own
        await made.check()
        assert await made.repo.duties_due() == due
    finally:
        await made.usage.close()
        await made.store.close()


async def test_many_dry_runs_never_take_a_use(setup: Setup):
    checks = await asyncio.gather(*(setup.check() for _ in range(50)))
    assert all(c.permitted and c.uses == 0 for c in checks)
    entries, heads, _ = await setup.usage.log_of(setup.consumer, AGREEMENT)
    assert entries == [] and heads == [] and setup.notified == []
    assert [(await setup.use(f"u{i}")).decision for i in range(4)] == ["permit", "permit", "permit", "deny"]


async def test_dry_runs_beside_concurrent_uses_see_a_consistent_log(setup: Setup):
    await setup.add_agreement(policy(templates.max_uses(ASSET, 1000)), agreement_id="urn:uuid:busy")
    uses = [setup.use(f"c{i}", agreement_id="urn:uuid:busy") for i in range(60)]
    checks = [setup.check(agreement_id="urn:uuid:busy") for _ in range(60)]
    results = await asyncio.gather(*uses, *checks)
    assert all(r.permitted for r in results)
    assert await setup.usage.check_heads() == {}


@pytest.mark.parametrize("between", ["last_entry", "last_signed_head"])
async def test_a_use_committed_in_the_middle_of_a_dry_run_does_not_make_the_log_look_cut_short(
        setup: Setup, monkeypatch, between):
    """A dry run reads one snapshot and the entries known committed before it: a use that commits while it
    reads (here: forced right before the read named) is simply not in its view."""
    import threading

    from connector.services import usage as service

    await setup.use("u1")
    loop, original, done = asyncio.get_running_loop(), getattr(service.store, between), []

    def read_then_use(db, *args):
        if not done and threading.current_thread().name.startswith("tds-store-read"):
            done.append(asyncio.run_coroutine_threadsafe(setup.use("u2"), loop).result(timeout=10))
        return original(db, *args)

    monkeypatch.setattr(service.store, between, read_then_use)
    checked = await setup.check()
    assert done and done[0].entry.seq == 2  # the use committed while the dry run read
    assert checked.permitted and checked.uses == 1  # the dry run's snapshot: before it


@pytest.mark.parametrize(("who", "agreement_id"), [("provider", AGREEMENT), ("consumer", "urn:uuid:nothing")])
async def test_a_dry_run_of_an_agreement_not_the_consumers_is_not_found(setup: Setup, who, agreement_id):
    with pytest.raises(NotFound):
        await setup.check(agreement_id=agreement_id, participant=setup.participants["acme" if who == "provider"
                                                                                    else "parts"])


async def test_a_dry_run_of_a_revoked_agreement_is_refused_with_the_reason_and_when(setup: Setup):
    await setup.receipts.revoke(setup.provider, AGREEMENT, "contract ended")
    for task in list(setup.receipts._tasks):
        await task
    with pytest.raises(Conflict, match=r"revoked this agreement at 2026-03-01T09:00:00\.000000Z \(reason: "
                                       r"contract ended\)") as checked:
        await setup.check()
    with pytest.raises(Conflict) as used:
        await setup.use("u1")
    assert checked.value.message == used.value.message


async def test_a_dry_run_of_an_agreement_not_yet_in_force_is_refused(tmp_path):
    from connector.protocol.agreement_lifecycle import AgreementState

    made = await open_setup(tmp_path)
    try:
        await made.add_agreement(policy(), agreement_id="urn:uuid:verified", state=AgreementState.VERIFIED)
        with pytest.raises(Conflict, match="VERIFIED, not FINALIZED"):
            await made.check(agreement_id="urn:uuid:verified")
    finally:
        await made.usage.close()
        await made.store.close()


async def test_a_dry_run_on_a_log_that_does_not_verify_is_refused_like_a_use(setup: Setup):
    await setup.use("u1")
    await setup.sql("UPDATE usage_log SET entry = replace(entry, '\"uses\":1', '\"uses\":0')")
    with pytest.raises(Conflict, match="does not verify"):
        await setup.check()


# -- how an agreement ended, as the summary and the listing show it ---------------------------------------

async def test_the_summary_of_a_revoked_agreement_says_so_with_the_reason_and_no_use_left(setup: Setup):
    await setup.use("u1")
    await setup.receipts.revoke(setup.provider, AGREEMENT, "contract ended")
    for task in list(setup.receipts._tasks):
        await task
    summary = await setup.usage.summary(setup.consumer, AGREEMENT)
    assert summary["state"] == "REVOKED" and summary["uses"] == 1
    assert summary["revocation"]["reason"] == "contract ended" and summary["revocation"]["status"] == "applied"
    assert summary["allowance"]["usesLeft"] == 0 and summary["allowance"]["usesAllowed"] == 3
    assert summary["dataDeleted"]["reason"] == "after the provider's revocation"


async def test_the_summary_of_an_agreement_in_force_has_no_ending(setup: Setup):
    await setup.use("u1")
    summary = await setup.usage.summary(setup.consumer, AGREEMENT)
    assert (summary["state"], summary["revocation"], summary["dataDeleted"]) == ("FINALIZED", None, None)
    assert summary["allowance"]["usesLeft"] == 2


async def test_a_deletion_on_schedule_is_an_ending_of_the_data_not_of_the_agreement(tmp_path):
    made = await open_setup(tmp_path, policy(templates.use_and_delete_after(ASSET, "PT1S")))
    try:
        await made.use("u1")
        assert await made.usage.endings(made.consumer) == {}
        await made.usage.carry_out("parts", AGREEMENT, "delete")
        ended = await made.usage.endings(made.consumer)
        assert ended[AGREEMENT]["dataDeleted"] == {"at": "2026-03-01T09:00:00.000000Z",
                                                   "reason": "on schedule (a deletion duty of the agreement's "
                                                             "policy)"}
        assert "revocation" not in ended[AGREEMENT]
        assert (await made.usage.summary(made.consumer, AGREEMENT))["state"] == "FINALIZED"
        assert "was deleted here at 2026-03-01T09:00:00.000000Z" in await made.usage.no_data_reason(made.consumer,
                                                                                                    AGREEMENT)
    finally:
        await made.usage.close()
        await made.store.close()


async def test_why_no_data_names_the_revocation_first(setup: Setup):
    assert await setup.usage.no_data_reason(setup.consumer, AGREEMENT) == \
        "no data has been received for this agreement (nothing was counted)"
    await setup.receipts.revoke(setup.provider, AGREEMENT, "contract ended")
    for task in list(setup.receipts._tasks):
        await task
    with pytest.raises(Conflict, match=r"revoked this agreement at .* contract ended"):
        await setup.usage.no_data_reason(setup.consumer, AGREEMENT)
    with pytest.raises(NotFound):
        await setup.usage.no_data_reason(setup.provider, AGREEMENT)


# -- commit groups: uses decided in the event loop, confirmed by the store ---------------------------------

async def _log(setup: Setup, agreement_id: str = AGREEMENT):
    from msgspec import to_builtins

    entries, heads, _ = await setup.usage.log_of(setup.consumer, agreement_id)
    assert check_log(to_builtins(entries), heads, setup.consumer.did_document()) is None
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))  # no gap
    return entries, heads


class HeldCommit:
    """A commit-group hook that holds the next commit on the writer thread until released, then lets it commit
    or fails it (as a disk that is gone would)."""

    def __init__(self, store, *, fail: bool) -> None:
        import threading

        self.store, self.fail = store, fail
        self.reached, self.release = threading.Event(), threading.Event()
        store.batch_hooks.append(self)

    def __call__(self, db) -> None:
        if self.reached.is_set():
            return
        self.reached.set()
        assert self.release.wait(20)
        if self.fail:
            raise OSError("the disk is gone")

    async def held(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, 20)

    def done(self) -> None:
        self.store.batch_hooks.remove(self)
        self.release.set()


async def _queued(setup: Setup, count: int) -> None:
    """Wait until *count* uses wait for the next commit group (each is queued before its first await)."""
    for _ in range(1000):
        if sum(len(uses) for uses in setup.usage._open.values()) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} uses were not queued")


async def test_many_concurrent_uses_of_one_agreement_permit_exactly_its_max_uses(setup: Setup):
    await setup.add_agreement(policy(templates.max_uses(ASSET, 50)), agreement_id="urn:uuid:fifty")
    # The first uses of a chain are decided in their transaction, however many arrive together ...
    first = await asyncio.gather(*(setup.use(f"v{i}", agreement_id="urn:uuid:fifty") for i in range(30)))
    commits = setup.store.commits
    # ... and from then on in the event loop, each wave in one commit group.
    waves = [await asyncio.gather(*(setup.use(f"w{wave}-{i}", agreement_id="urn:uuid:fifty") for i in range(40)))
             for wave in range(3)]
    assert setup.store.commits - commits == 3
    outcomes = [*first, *(o for wave in waves for o in wave)]
    assert sum(o.permitted for o in outcomes) == 50
    assert sorted(o.entry.uses for o in outcomes if o.permitted) == list(range(1, 51))  # each counted once
    entries, heads = await _log(setup, "urn:uuid:fifty")
    assert len(entries) == 150 and entries[-1].uses == 50
    assert {(e.use_id, e.seq, e.hash) for e in entries} == {(o.entry.use_id, o.entry.seq, o.entry.hash)
                                                             for o in outcomes}
    assert heads[-1]["seq"] == 150 and len(heads) < 40  # one signed head per commit group
    assert (await setup.usage.summary(setup.consumer, "urn:uuid:fifty"))["uses"] == 50


async def test_concurrent_uses_under_one_use_id_count_once_and_redeliver_at_most_the_bound(setup: Setup):
    setup.usage.config = UsageSection(redeliveries=3)
    await setup.use("first")  # the event loop knows the chain from here on
    results = await asyncio.gather(*(setup.use("same") for _ in range(10)), return_exceptions=True)
    outcomes = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert [o.entry.kind for o in outcomes] == ["use", "redelivery", "redelivery", "redelivery"]
    assert all(isinstance(r, Conflict) and r.details == {"conflict": ["redeliveries"]}  # type: ignore[attr-defined]
               for r in refused) and len(refused) == 6
    entries, _ = await _log(setup)
    assert entries[-1].uses == 2 and len(entries) == 5


async def test_uses_queued_behind_a_commit_are_chained_on_it_and_confirmed(setup: Setup):
    await setup.add_agreement(policy(templates.max_uses(ASSET, 100)), agreement_id="urn:uuid:busy")
    await setup.use("warm", agreement_id="urn:uuid:busy")
    held = HeldCommit(setup.store, fail=False)
    first = [asyncio.ensure_future(setup.use(f"a{i}", agreement_id="urn:uuid:busy")) for i in range(20)]
    await held.held()  # the first group commits now ...
    second = [asyncio.ensure_future(setup.use(f"b{i}", agreement_id="urn:uuid:busy")) for i in range(20)]
    await _queued(setup, 20)  # ... and the next waits behind it, decided on its entries
    held.done()
    outcomes = await asyncio.gather(*first, *second)
    assert [o.entry.seq for o in outcomes] == list(range(2, 42)) and [o.entry.uses for o in outcomes] == \
        list(range(2, 42))
    entries, _ = await _log(setup, "urn:uuid:busy")
    assert [e.hash for e in entries[1:]] == [o.entry.hash for o in outcomes]


async def test_a_failed_commit_answers_its_uses_with_the_error_and_leaves_no_gap(setup: Setup):
    await setup.add_agreement(policy(templates.max_uses(ASSET, 100)), agreement_id="urn:uuid:busy")
    warm = await setup.use("warm", agreement_id="urn:uuid:busy")
    held = HeldCommit(setup.store, fail=True)
    lost = [asyncio.ensure_future(setup.use(f"a{i}", agreement_id="urn:uuid:busy")) for i in range(20)]
    await held.held()
    # Decided on the entries of the group that is about to fail: they must not follow them into the log.
    after = [asyncio.ensure_future(setup.use(f"b{i}", agreement_id="urn:uuid:busy")) for i in range(20)]
    await _queued(setup, 20)
    held.done()
    failed = await asyncio.gather(*lost, return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in failed), failed
    answered = await asyncio.gather(*after)
    assert [o.entry.seq for o in answered] == list(range(2, 22)) and answered[-1].entry.uses == 21
    assert all(o.entry.prev == p.entry.hash for p, o in zip([warm, *answered], answered, strict=False))
    entries, _ = await _log(setup, "urn:uuid:busy")
    assert [(e.use_id, e.hash) for e in entries] == [(o.entry.use_id, o.entry.hash) for o in [warm, *answered]]
    # Nothing of the failed group was logged: its use ids are fresh uses.
    again = await setup.use("a0", agreement_id="urn:uuid:busy")
    assert again.permitted and not again.repeated and again.entry.seq == 22


async def test_a_revocation_committed_while_uses_wait_refuses_them_all(setup: Setup):
    from connector.protocol.agreement_lifecycle import AgreementState
    from connector.store import usage as store

    await setup.use("warm")
    held = HeldCommit(setup.store, fail=False)
    first = asyncio.ensure_future(setup.use("u1"))
    await held.held()
    waiting = [asyncio.ensure_future(setup.use(f"w{i}")) for i in range(5)]
    await _queued(setup, 5)  # decided in the event loop on an agreement in force ...
    revoked = asyncio.ensure_future(setup.repo.write(  # ... and revoked before their commit
        lambda db: store.set_agreement_state(db, "parts", AGREEMENT, AgreementState.REVOKED)))
    held.done()
    assert (await first).permitted
    await revoked
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, Conflict) and "revoked" in r.message for r in results), results
    entries, _ = await _log(setup)
    assert [e.use_id for e in entries] == ["warm", "u1"]


async def test_a_duty_logged_behind_the_event_loop_is_chained_on_by_the_next_uses(tmp_path):
    made = await open_setup(tmp_path, policy(templates.max_uses(ASSET, 10),
                                             templates.use_and_delete_after(ASSET, "P1D")))
    try:
        await made.use("u1")
        await made.usage.carry_out("parts", AGREEMENT, "delete")  # appended by a job of its own
        outcomes = await asyncio.gather(*(made.use(f"n{i}") for i in range(5)))
        assert [o.entry.seq for o in outcomes] == [3, 4, 5, 6, 7]
        assert [o.entry.uses for o in outcomes] == [2, 3, 4, 5, 6]
        entries, _ = await _log(made)
        assert [e.kind for e in entries] == ["use", "delete", "use", "use", "use", "use", "use"]
    finally:
        await made.usage.close()
        await made.store.close()


async def test_a_use_id_logged_before_the_node_started_is_a_retry_not_a_new_use(tmp_path):
    made = await open_setup(tmp_path)
    try:
        await made.use("u1")
        await made.use("u2")
        from connector.config import UsageSection as Section
        from connector.services.usage import UsageService

        # A new service on the same store: it remembers no use id, the store does.
        made.usage = UsageService(made.repo, Section(), participant_by_id=made.usage.participant_by_id,
                                  destroy_data=made.vault, clock=made.clock)
        await made.use("u3")  # the chain is known to the event loop from here on
        retried = await asyncio.gather(made.use("u4"), made.use("u1"), made.use("u5"))
        assert [(o.entry.kind, o.entry.use_id, o.entry.uses) for o in retried] == [
            ("use", "u4", 3), ("redelivery", "u1", 3), ("use", "u5", 3)]
        assert [o.permitted for o in retried] == [False, True, False]  # max 3 uses: u3 took the last one
        entries, _ = await _log(made)
        assert len(entries) == 6
    finally:
        await made.usage.close()
        await made.store.close()
