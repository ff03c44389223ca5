"""Credentials in SQLite: places in the status lists handed out once and a new list when one is full, a
revocation's bit and mark in one transaction, the bounds on held credentials, requests and trusted issuers, and
every row its participant's own. One store file, no node."""

from __future__ import annotations

import pytest

from connector.errors import Conflict, TooManyRequests
from connector.identity.status_list import Bitstring
from connector.store.credentials import (
    LIST_SIZE,
    CredentialRepository,
    CredentialRequest,
    DeliveryBounds,
    HeldCredential,
    IssuedCredential,
    TrustedIssuer,
)
from connector.store.db import Store
from connector.store.repository import Participant, SqliteRepository

NOW = "2026-06-01T08:00:00Z"


@pytest.fixture
async def repos(tmp_path):
    store = Store(tmp_path / "credentials.db")
    await store.open()
    rows = SqliteRepository(store)
    for name in ("acme", "sme"):
        await rows.add_participant(Participant(name, name, f"did:web:hub.example:participants:{name}", name, "CN",
                                               created_at=NOW))
    yield CredentialRepository(store), rows
    await store.close()


def issued(credential_id: str, status_list: int, index: int) -> IssuedCredential:
    return IssuedCredential(id=credential_id, kind="membership", holder="did:web:parts.example",
                            status_list=status_list, status_index=index, valid_until="2027-06-01T08:00:00Z",
                            issued_at=NOW, document={"id": credential_id})


def held(credential_id: str, issuer: str = "did:web:alliance.example") -> HeldCredential:
    return HeldCredential(id=credential_id, kind="membership", issuer=issuer, valid_until="2027-06-01T08:00:00Z",
                          source="imported", received_at=NOW, document={"id": credential_id})


async def test_places_are_handed_out_in_order_and_a_full_list_makes_a_new_one(repos):
    repo, _ = repos
    assert [await repo.allocate_status("acme", NOW) for _ in range(3)] == [(1, 0), (1, 1), (1, 2)]
    assert await repo.allocate_status("sme", NOW) == (1, 0)  # every participant has lists of its own
    await repo.store.write(lambda db: db.execute("UPDATE status_lists SET allocated = size WHERE participant_id = ?",
                                                 ["acme"]))
    assert await repo.allocate_status("acme", NOW) == (2, 0)
    second = await repo.status_list("acme", 2)
    assert (second.size, second.allocated, second.purpose) == (LIST_SIZE, 1, "revocation")


async def test_a_revocation_sets_its_bit_and_marks_the_credential_once(repos):
    repo, _ = repos
    for i in range(3):
        await repo.allocate_status("acme", NOW)
        await repo.add_issued("acme", issued(f"urn:uuid:c{i}", 1, i))
    revoked = await repo.revoke("acme", "urn:uuid:c1", "2026-06-02T00:00:00Z")
    assert revoked.revoked_at == "2026-06-02T00:00:00Z"
    bits = Bitstring.decode((await repo.status_list("acme", 1)).encoded_list)
    assert [bits[i] for i in range(4)] == [False, True, False, False]
    again = await repo.revoke("acme", "urn:uuid:c1", "2026-06-03T00:00:00Z")
    assert again.revoked_at == "2026-06-02T00:00:00Z"
    assert await repo.revoke("sme", "urn:uuid:c1", NOW) is None  # not the sme's
    assert await repo.revoke("acme", "urn:uuid:nothing", NOW) is None
    assert [c.revoked_at is not None for c in sorted(await repo.issued("acme"), key=lambda c: c.id)] == [
        False, True, False]


async def test_held_credentials_are_bounded_in_all_and_per_issuer(repos):
    repo, _ = repos
    await repo.add_held("acme", held("urn:uuid:a"), most=3, most_per_issuer=2)
    await repo.add_held("acme", held("urn:uuid:b"), most=3, most_per_issuer=2)
    with pytest.raises(Conflict, match=r"of did:web:alliance\.example"):
        await repo.add_held("acme", held("urn:uuid:c"), most=3, most_per_issuer=2)
    await repo.add_held("acme", held("urn:uuid:a"), most=3, most_per_issuer=2)  # the same one again: replaced
    await repo.add_held("acme", held("urn:uuid:c", "did:web:registry.example"), most=3, most_per_issuer=2)
    with pytest.raises(Conflict, match=r"holds 3 credentials"):
        await repo.add_held("acme", held("urn:uuid:d", "did:web:other.example"), most=3, most_per_issuer=2)
    await repo.add_held("sme", held("urn:uuid:a"), most=3, most_per_issuer=2)  # the sme's own count
    assert {c.id for c in await repo.held("acme")} == {"urn:uuid:a", "urn:uuid:b", "urn:uuid:c"}
    assert await repo.remove_held("sme", "urn:uuid:b") is False
    assert await repo.remove_held("acme", "urn:uuid:b") is True


#: Nothing held unasked of untrusted issuers (every such delivery is offered); 5 offers, 2 of one issuer and 2
#: of did:key issuers.
OFFER_ALL = DeliveryBounds(held=9, held_per_issuer=9, held_untrusted=0, offered=5, offered_per_issuer=2,
                           offered_keys=2)


async def deliver(repo, credential_id: str, issuer: str, *, participant: str = "acme", trusted=(), now: str = NOW,
                  bounds: DeliveryBounds = OFFER_ALL) -> str:
    origin = issuer if issuer.startswith("did:key:") else ":".join(issuer.split(":")[:3])
    return await repo.keep_delivered(participant, held(credential_id, issuer), origin=origin, trusted=trusted,
                                     bounds=bounds, now=now)


async def offered_ids(repo, participant: str = "acme") -> list[str]:
    return [o.id.removeprefix("urn:uuid:") for o in await repo.offered(participant)]


async def test_offers_make_room_oldest_first_of_their_issuer_then_of_their_side(repos):
    repo, _ = repos
    for i in range(3):
        assert await deliver(repo, f"urn:uuid:a{i}", f"did:web:a.example:p{i}") == "offered"
    assert await offered_ids(repo) == ["a2", "a1"]  # one host, one issuer: its own oldest went
    await deliver(repo, "urn:uuid:b0", "did:web:b.example")
    await deliver(repo, "urn:uuid:b1", "did:web:b.example")
    assert await offered_ids(repo) == ["b1", "b0", "a2"]  # did:web offers: 5 - 2
    for i in range(4):
        await deliver(repo, f"urn:uuid:k{i}", f"did:key:z{i}")
    assert await offered_ids(repo) == ["k3", "k2", "b1", "b0", "a2"]  # did:key offers push out only each other
    assert await deliver(repo, "urn:uuid:a2", "did:web:a.example:p2") == "offered"  # again: keeps its place
    assert await offered_ids(repo) == ["k3", "k2", "b1", "b0", "a2"]
    with pytest.raises(Conflict, match="of another issuer"):
        await deliver(repo, "urn:uuid:b0", "did:web:c.example")
    assert await repo.offered("sme") == [] and await repo.offered_one("sme", "urn:uuid:b0") is None
    assert await repo.decline_offered("sme", "urn:uuid:b0") is False
    assert await repo.accept_offered("sme", held("urn:uuid:b0", "did:web:b.example"), most=9,
                                     most_per_issuer=9) is False
    assert await repo.decline_offered("acme", "urn:uuid:b0") is True
    assert await repo.accept_offered("acme", held("urn:uuid:b1", "did:web:b.example"), most=9, most_per_issuer=9)
    assert await repo.accept_offered("acme", held("urn:uuid:b1", "did:web:b.example"), most=9,
                                     most_per_issuer=9) is False
    assert [h.id for h in await repo.held("acme")] == ["urn:uuid:b1"]
    await deliver(repo, "urn:uuid:late", "did:web:d.example", now="2028-01-01T00:00:00Z")  # the others expired
    assert await offered_ids(repo) == ["late"]


async def test_a_delivery_is_held_if_trusted_asked_for_held_already_or_within_the_bound(repos):
    repo, _ = repos
    bound_one = DeliveryBounds(held=9, held_per_issuer=9, held_untrusted=1, offered=5, offered_per_issuer=2,
                               offered_keys=2)
    assert await deliver(repo, "urn:uuid:t", "did:web:trusted.example", trusted={"did:web:trusted.example"}) == "held"
    for i in range(3):
        await repo.add_asked("acme", issuer="did:web:x.example", request_id=f"r{i}", kind="membership", now=NOW,
                             most=2)
    assert [await deliver(repo, f"urn:uuid:x{i}", "did:web:x.example") for i in range(3)] == [
        "held", "held", "offered"]  # two requests remembered: each answered once
    await repo.add_asked("sme", issuer="did:web:y.example", request_id="r", kind="membership", now=NOW, most=2)
    assert await deliver(repo, "urn:uuid:y", "did:web:y.example") == "offered"  # the sme asked, not acme
    assert await deliver(repo, "urn:uuid:x0", "did:web:x.example") == "held"  # a held one, delivered again
    assert await deliver(repo, "urn:uuid:s", "did:web:s.example", participant="sme", bounds=bound_one) == "held"
    assert await deliver(repo, "urn:uuid:s2", "did:web:s.example", participant="sme", bounds=bound_one) == "offered"
    with pytest.raises(Conflict, match="of another issuer"):  # an issuer cannot replace another's by its id
        await deliver(repo, "urn:uuid:t", "did:web:x.example")


async def test_pending_requests_are_bounded_and_decided_once(repos):
    repo, _ = repos

    def request(i: int, requester: str = "did:web:parts.example") -> CredentialRequest:
        return CredentialRequest(id=f"urn:uuid:r{i}", requester=requester, kind="region", claims={"region": "CN-GD"},
                                 state="pending", received_at=NOW)

    await repo.add_request("acme", request(1), most_pending=3, most_per_requester=2)
    await repo.add_request("acme", request(2), most_pending=3, most_per_requester=2)
    with pytest.raises(TooManyRequests):
        await repo.add_request("acme", request(3), most_pending=3, most_per_requester=2)
    await repo.add_request("acme", request(3, "did:web:other.example"), most_pending=3, most_per_requester=2)
    with pytest.raises(TooManyRequests):
        await repo.add_request("acme", request(4, "did:web:third.example"), most_pending=3, most_per_requester=2)
    assert await repo.decide_request("sme", "urn:uuid:r1", state="approved", now=NOW) is False
    assert await repo.decide_request("acme", "urn:uuid:r1", state="approved", now=NOW, credential_id="urn:uuid:c")
    assert await repo.decide_request("acme", "urn:uuid:r1", state="rejected", now=NOW) is False
    assert [r.id for r in await repo.requests("acme", state="pending")] != []
    assert (await repo.request("acme", "urn:uuid:r1")).credential_id == "urn:uuid:c"
    assert await repo.request("sme", "urn:uuid:r1") is None


async def test_trusted_issuers_are_each_participants_own_and_bounded(repos):
    repo, _ = repos
    await repo.trust("acme", TrustedIssuer(issuer="did:web:a.example", kinds=["membership"], added_at=NOW), most=2)
    await repo.trust("acme", TrustedIssuer(issuer="did:web:b.example", kinds=["region"], added_at=NOW), most=2)
    await repo.trust("acme", TrustedIssuer(issuer="did:web:a.example", kinds=["region"], spaces=None, added_at=NOW),
                     most=2)
    with pytest.raises(Conflict):
        await repo.trust("acme", TrustedIssuer(issuer="did:web:c.example", kinds=["region"], added_at=NOW), most=2)
    assert [(t.issuer, t.kinds) for t in await repo.trusted("acme")] == [("did:web:a.example", ["region"]),
                                                                         ("did:web:b.example", ["region"])]
    assert await repo.trusted("sme") == []
    assert await repo.distrust("sme", "did:web:a.example") is False
    assert await repo.distrust("acme", "did:web:a.example") is True


async def test_a_participant_that_leaves_takes_all_its_credential_rows_with_it(repos):
    repo, rows = repos
    await repo.allocate_status("acme", NOW)
    await repo.add_issued("acme", issued("urn:uuid:c", 1, 0))
    await repo.add_held("acme", held("urn:uuid:h"), most=9, most_per_issuer=9)
    await repo.trust("acme", TrustedIssuer(issuer="did:web:a.example", kinds=["region"], added_at=NOW), most=9)
    await repo.add_held("sme", held("urn:uuid:h"), most=9, most_per_issuer=9)
    assert await rows.delete_participant("acme") >= 5
    assert await repo.issued("acme") == [] and await repo.held("acme") == [] and await repo.trusted("acme") == []
    assert await repo.status_list("acme", 1) is None
    assert [c.id for c in await repo.held("sme")] == ["urn:uuid:h"]


async def test_held_credentials_read_from_memory_follow_every_change_and_a_read_racing_a_write_is_not_kept(repos):
    repo, _ = repos
    await repo.add_held("acme", held("urn:uuid:h1"), most=64, most_per_issuer=8)
    assert [c.id for c in await repo.held("acme")] == ["urn:uuid:h1"]
    reads = []
    read = repo.store.read

    async def counted(fn):
        reads.append(fn)
        return await read(fn)

    repo.store.read = counted
    assert [c.id for c in await repo.held("acme")] == ["urn:uuid:h1"] and reads == []  # from memory
    await repo.add_held("acme", held("urn:uuid:h2"), most=64, most_per_issuer=8)
    assert {c.id for c in await repo.held("acme")} == {"urn:uuid:h1", "urn:uuid:h2"} and len(reads) == 1
    assert await repo.remove_held("acme", "urn:uuid:h1")
    assert [c.id for c in await repo.held("acme")] == ["urn:uuid:h2"]
    assert await repo.held("sme") == []  # each participant's own

    async def racing(fn):  # a write lands while the read is under way: what the read found is not kept
        found = await read(fn)
        await repo.add_held("acme", held("urn:uuid:h3"), most=64, most_per_issuer=8)
        return found

    repo.forget("acme")  # nothing in memory: the next read goes to the store
    repo.store.read = racing
    assert [c.id for c in await repo.held("acme")] == ["urn:uuid:h2"]
    repo.store.read = read
    assert {c.id for c in await repo.held("acme")} == {"urn:uuid:h2", "urn:uuid:h3"}
