"""The pure gossip core: screening items, a view's decisions, and two views reconciled in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.identity import credentials
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol import gossip as core
from connector.store.repository import Participant

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
LIMITS = core.Limits(item_ttl_s=3600)


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example:participants:{name}",
                         legal_name=name.title(), region="CN-GD", created_at="2026-01-01T00:00:00Z")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


PEOPLE = [runtime(n) for n in ("alpha", "bravo", "charlie", "delta", "echo")]


def item_of(p: ParticipantRuntime, at: datetime = NOW, *, limits: core.Limits = LIMITS) -> core.Item:
    screened = core.screen(credentials.issue(p.subject(), p.keys.signing, now=at), now=NOW, limits=limits)
    assert screened.item is not None, screened.reason
    return screened.item


def exchange(initiator: core.View, responder: core.View) -> None:
    """One anti-entropy exchange, both directions, as the shell runs it (signatures aside)."""
    answer = responder.entries_for(initiator.digest())
    send, want, _ = initiator.plan(answer)
    for item in send:
        if responder.consider(item) is True:
            responder.put(item)
    for item in responder.items_for(want):
        if initiator.consider(item) is True:
            initiator.put(item)


@pytest.mark.parametrize(("document", "refusal"), [
    ("not an object", core.Refusal.MALFORMED),
    ({"type": ["VerifiableCredential"], "issuer": "did:web:x"}, core.Refusal.MALFORMED),
    ({"type": [credentials.CREDENTIAL_TYPE], "issuer": "did:web:x", "credentialSubject": {"id": "did:web:y"}},
     core.Refusal.MALFORMED),
    ({"type": [credentials.CREDENTIAL_TYPE], "issuer": "did:web:x", "credentialSubject": {"id": "did:web:x"},
      "validFrom": "yesterday", "validUntil": "2027-01-01T00:00:00Z"}, core.Refusal.MALFORMED),
    ({"type": [credentials.CREDENTIAL_TYPE], "issuer": "did:web:x", "credentialSubject": {"id": "did:web:x"},
      "validFrom": "2026-06-01T07:00:00Z", "validUntil": "2027-01-01T00:00:00Z", "padding": "x" * 20_000},
     core.Refusal.OVERSIZED),
    ({"type": [credentials.CREDENTIAL_TYPE], "issuer": "did:web:x", "credentialSubject": {"id": "did:web:x"},
      "validFrom": "2026-06-01T06:00:00Z", "validUntil": "2027-01-01T00:00:00Z"}, core.Refusal.STALE),
    ({"type": [credentials.CREDENTIAL_TYPE], "issuer": "did:web:x", "credentialSubject": {"id": "did:web:x"},
      "validFrom": "2026-06-02T00:00:00Z", "validUntil": "2027-01-01T00:00:00Z"}, core.Refusal.MALFORMED),
])
def test_screen_refuses_with_the_reason(document, refusal):
    screened = core.screen(document, now=NOW, limits=LIMITS)
    assert screened.item is None and screened.refusal is refusal and screened.reason


def test_an_item_expires_item_ttl_after_its_issuance():
    item = item_of(PEOPLE[0], NOW - timedelta(minutes=10))
    assert item.expires == NOW + timedelta(minutes=50)
    view = core.View(LIMITS, items={})
    view.put(item)
    assert view.expire(NOW + timedelta(minutes=49)) == []
    assert view.expire(NOW + timedelta(minutes=51)) == [item.did] and not view.items


def test_a_stale_item_never_replaces_a_newer_one():
    view = core.View(LIMITS)
    newer, older = item_of(PEOPLE[0], NOW - timedelta(minutes=1)), item_of(PEOPLE[0], NOW - timedelta(minutes=30))
    view.put(newer)
    assert view.consider(older) is core.Refusal.STALE
    assert view.consider(newer) is False
    assert view.consider(item_of(PEOPLE[0], NOW)) is True


def test_a_full_view_refuses_new_dids_but_takes_updates():
    view = core.View(core.Limits(max_entries=1))
    view.put(item_of(PEOPLE[0], NOW - timedelta(minutes=5)))
    assert view.consider(item_of(PEOPLE[1])) is core.Refusal.OVER_LIMIT
    assert view.consider(item_of(PEOPLE[0])) is True


def test_admit_holds_what_consider_takes_one_item_after_the_other():
    view = core.View(core.Limits(max_entries=3), own=frozenset({PEOPLE[4].did}))
    old, new = item_of(PEOPLE[0], NOW - timedelta(minutes=5)), item_of(PEOPLE[0])
    taken, refused = view.admit([old, new, old, item_of(PEOPLE[1]), item_of(PEOPLE[4]), new, item_of(PEOPLE[2]),
                                 item_of(PEOPLE[3])])
    assert taken == [old, new, item_of(PEOPLE[1]), item_of(PEOPLE[2])]
    assert refused == [core.Refusal.STALE, core.Refusal.OVER_LIMIT]
    assert view.items[PEOPLE[0].did] == new and len(view.items) == 3
    twin = core.View(core.Limits(max_entries=3))
    for item in (new, item_of(PEOPLE[1]), item_of(PEOPLE[2])):
        twin.put(item)
    assert view.digest() == twin.digest()


def test_evictions_take_from_the_source_that_brought_the_most_the_longest_unseen_first():
    standing = [("did:web:a1", "did:web:flood", "2026-06-01T08:00:01Z"),
                ("did:web:a2", "did:web:flood", "2026-06-01T08:00:00Z"),
                ("did:web:a3", "did:web:flood", "2026-06-01T08:00:02Z"),
                ("did:web:b1", "did:web:relay", "2026-06-01T07:00:00Z"),
                ("did:web:b2", "did:web:relay", "2026-06-01T07:30:00Z")]
    assert core.evictions(standing, 2) == ["did:web:a2", "did:web:a1"]
    assert core.evictions(standing, 9) == ["did:web:a2", "did:web:a1", "did:web:b1", "did:web:a3", "did:web:b2"]
    assert core.evictions([], 3) == []


def test_items_of_dids_hosted_here_are_not_taken_from_elsewhere():
    view = core.View(LIMITS, own=frozenset({PEOPLE[0].did}))
    assert view.consider(item_of(PEOPLE[0])) is False


def test_two_views_reconcile_both_ways_and_then_exchange_only_a_digest():
    left, right = core.View(LIMITS), core.View(LIMITS)
    for p in PEOPLE[:3]:
        left.put(item_of(p))
    for p in PEOPLE[2:]:
        right.put(item_of(p, NOW - timedelta(minutes=1)))  # charlie older on the right
    exchange(left, right)
    assert set(left.items) == set(right.items) == {p.did for p in PEOPLE}
    assert right.items[PEOPLE[2].did].issued == NOW  # the newer charlie won on both sides
    assert left.digest() == right.digest()
    assert right.entries_for(left.digest())["entries"] == []


def test_a_digest_must_name_every_bucket():
    with pytest.raises(core.GossipError):
        core.View(LIMITS).entries_for({"buckets": ["0" * 16]})
    with pytest.raises(core.GossipError):
        core.View(LIMITS).entries_for({"buckets": ["zz" * 8] * core.BUCKETS})


def test_plan_reads_at_most_one_message_of_entries():
    view = core.View(core.Limits(max_entries_per_message=10))
    answer = {"buckets": list(range(core.BUCKETS)),
              "entries": [[f"did:web:x{i}", "2026-06-01T07:59:00Z", "00"] for i in range(1000)]}
    send, want, over = view.plan(answer)
    assert over == 990 and len(want) == 10 and send == []


def test_verify_refuses_an_item_signed_by_another_key():
    p, mallory = PEOPLE[0], PEOPLE[1]
    forged = credentials.issue(p.subject(), mallory.keys.signing, now=NOW)  # names p, signed with mallory's key
    item = core.screen(forged, now=NOW, limits=LIMITS).item
    assert item is not None
    with pytest.raises(credentials.SelfDescriptionError):
        core.verify(item, p.did_document(), now=NOW)
    assert core.verify(item_of(p), p.did_document(), now=NOW).id == p.did
