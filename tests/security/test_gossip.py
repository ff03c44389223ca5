"""Gossip under bad input: every item is its subject's own signed self-description, checked on arrival; bad
ones are refused one by one and counted by reason, and nothing a peer sends grows without bound."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.config import DiscoverySection
from connector.errors import PayloadTooLarge, PeerError, TooManyRequests
from connector.identity import credentials
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol import gossip as core
from connector.services.directory import Directory
from connector.services.gossip import Gossip
from connector.store.db import Store
from connector.store.directory import DirectoryRepository
from connector.store.repository import Participant, SqliteRepository
from connector.testing import FakeClock, FederationResolver

START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example:participants:{name}",
                         legal_name=name.title(), region="CN-GD", created_at="2026-01-01T00:00:00Z")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


class Answer:
    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status, self.body, self.headers = status, body, {}

    def json(self) -> Any:
        return json.loads(self.body)


class OneAnswer:
    """An outbound client whose every request gets the same answer."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def request(self, method: str, url: str, **_: Any) -> Answer:
        return Answer(self.body)

    async def get_json(self, url: str, **_: Any) -> Any:
        raise PeerError("not reachable")


class Setup:
    def __init__(self, store: Store, settings: DiscoverySection, client: Any = None) -> None:
        self.clock = FakeClock(START)
        self.me = runtime("host")
        self.resolver = FederationResolver(self.me.did_document())
        self.refused: Counter[str] = Counter()
        self.evicted = 0
        self.directory = Directory(
            DirectoryRepository(store), self.resolver, client or OneAnswer(b"{}"), settings=settings,
            participants=lambda: [self.me], verify_peer=self._no_handshake, refused=lambda r: self.refused.update([r]),
            evicted=self._evicted,
            clock=self.clock.utc)
        self.gossip = Gossip(self.directory, client or OneAnswer(b"{}"), participants=lambda: [self.me],
                             monotonic=self.clock.monotonic)

    def _evicted(self, count: int) -> None:
        self.evicted += count

    async def _no_handshake(self, participant: Any, peer: str) -> Any:
        raise PeerError("no handshakes here")

    def member(self, name: str) -> ParticipantRuntime:
        p = runtime(name)
        self.resolver.documents[p.did] = p.did_document()
        return p

    def signed(self, p: ParticipantRuntime, minutes_ago: float = 0, key: Any = None) -> dict[str, Any]:
        at = self.clock.utc() - timedelta(minutes=minutes_ago)
        return credentials.issue(p.subject(), key or p.keys.signing, now=at)

    async def send(self, items: list[Any], caller: str = "did:web:relay.example") -> dict[str, Any]:
        body = json.dumps(core.items_message([]) | {"items": items}).encode()
        return await self.gossip.on_message(self.me, caller, body)

    def known(self) -> set[str]:
        return {e.did for e in self.directory.known(self.me.id)}


@pytest.fixture
async def store(tmp_path):
    found = Store(tmp_path / "node.db")
    await found.open()
    await SqliteRepository(found).add_participant(runtime("host").record)
    yield found
    await found.close()


@pytest.fixture
def make(store):
    def build(client: Any = None, **settings: Any) -> Setup:
        setup = Setup(store, DiscoverySection(**settings), client)
        return setup

    return build


async def test_malformed_and_oversized_items_are_refused_and_the_good_one_beside_them_kept(make):
    s = make()
    good = s.member("good")
    big = s.signed(s.member("big"))
    big["credentialSubject"]["contact"] = "x" * 20_000  # breaks its proof too, but size is checked first
    answer = await s.send(["junk", {"type": "nothing"}, big, s.signed(good), 42])
    assert answer["accepted"] == 1
    assert s.known() == {good.did}
    assert s.refused == Counter({"malformed": 3, "oversized": 1})


async def test_an_item_signed_by_a_key_that_is_not_the_subjects_is_refused(make):
    s = make()
    victim, relay = s.member("victim"), s.member("relay")
    forged = s.signed(victim, key=relay.keys.signing)  # the relay passes off its own claims as the victim's
    altered = s.signed(victim)
    altered["credentialSubject"]["dspEndpoint"] = "https://relay.example/participants/relay/api/dsp/2025-1"
    for item in (forged, altered):
        answer = await s.send([item], caller=relay.did)
        assert answer["accepted"] == 0 and answer["refused"] == {"bad-signature": 1}
    assert s.known() == set() and s.refused == Counter({"bad-signature": 2})


async def test_a_stale_item_replayed_does_not_roll_back_a_newer_one(make):
    s = make()
    subject = s.member("subject")
    old, new = s.signed(subject, minutes_ago=30), s.signed(subject, minutes_ago=1)
    await s.send([new])
    answer = await s.send([old])
    assert answer["refused"] == {"stale": 1}
    [entry] = s.directory.known(s.me.id)
    assert entry.issued_at == new["validFrom"] and s.refused == Counter({"stale": 1})
    # and an item older than item_ttl_s is refused as stale even with nothing newer held
    s.directory.forget(s.me.id)
    assert (await s.send([s.signed(s.member("late"), minutes_ago=61)]))["refused"] == {"stale": 1}


async def test_an_expired_entry_leaves_the_directory(make):
    s = make(item_ttl_s=600)
    subject = s.member("subject")
    await s.send([s.signed(subject)])
    assert s.known() == {subject.did}
    s.clock.advance(601)
    await s.directory.expire(s.clock.utc())
    assert s.known() == set()


async def test_a_peer_advertising_a_million_participants_is_bounded_and_counted(make):
    entries = [[f"did:web:p{i}.example", "2026-06-01T07:59:00Z", "ab" * 32] for i in range(1_000_000)]
    flood = json.dumps({"@type": core.ENTRIES_TYPE, "buckets": list(range(core.BUCKETS)),
                        "entries": entries}).encode()
    del entries
    s = make(OneAnswer(flood))
    # as the answer to our digest: refused by its size before it is read
    with pytest.raises(PeerError, match="more than"):
        await s.gossip.exchange(s.me, "https://flood.example/api/dsp/2025-1", peer="did:web:flood.example")
    assert s.refused == Counter({"oversized": 1})
    # as a message to us: the same
    with pytest.raises(PayloadTooLarge):
        await s.gossip.on_message(s.me, "did:web:flood.example", flood)
    assert s.refused == Counter({"oversized": 2})


async def test_many_real_items_fill_the_directory_only_to_its_bound(make):
    s = make(max_entries=20, max_items_per_message=30, peer_burst=5)
    items = [s.signed(s.member(f"m{i}")) for i in range(40)]
    answer = await s.send(items)
    assert answer["accepted"] == 20
    assert len(s.known()) == 20
    assert s.refused == Counter({"over-limit": 20})  # 10 beyond one message, 10 beyond the directory
    # the entries one answer lists are bounded too, however large the view
    view = s.directory.view(s.me.id)
    listed = view.entries_for({"buckets": ["f" * 16] * core.BUCKETS})["entries"]
    assert len(listed) <= view.limits.max_entries_per_message


async def test_a_flooded_directory_lets_the_floods_entries_go_so_that_a_genuine_newcomer_gets_in(make):
    s = make(max_entries=20, max_items_per_message=30, peer_burst=50)
    friend = s.member("friend")
    await s.send([s.signed(friend)], caller=friend.did)  # its own item, from itself: verified here
    flood = [s.signed(s.member(f"fake{i}")) for i in range(40)]
    first = await s.send(flood[:25], caller="did:web:flood.example")
    assert first["accepted"] == 19 and first["refused"] == {"over-limit": 6}  # nothing that may go yet
    s.clock.advance(60)
    honest = s.member("honest")
    answer = await s.send([s.signed(honest)], caller="did:web:relay.example")
    assert answer["accepted"] == 1 and s.evicted == 1  # one of the flood's entries made room
    s.clock.advance(60)
    second = await s.send(flood[25:], caller="did:web:flood.example")
    assert second["accepted"] == 15 and s.evicted == 16  # the flood crowds out only its own entries
    s.clock.advance(60)
    newcomer = s.member("newcomer")
    assert (await s.send([s.signed(newcomer)], caller="did:web:relay.example"))["accepted"] == 1
    known = s.known()
    assert len(known) == 20 and {friend.did, honest.did, newcomer.did} <= known
    assert s.evicted == 17 and s.refused == Counter({"over-limit": 6})
    # the entry verified here keeps that standing when a newer item of it comes by gossip
    s.clock.advance(60)
    assert (await s.send([s.signed(friend)], caller="did:web:relay.example"))["accepted"] == 1
    [entry] = [e for e in s.directory.known(s.me.id) if e.did == friend.did]
    assert entry.learned_from == "handshake"


async def test_a_directory_full_of_entries_verified_here_still_refuses_newcomers(make):
    s = make(max_entries=3)
    for name in ("a", "b", "c"):
        p = s.member(name)
        await s.send([s.signed(p)], caller=p.did)
    answer = await s.send([s.signed(s.member("late"))])
    assert answer["accepted"] == 0 and answer["refused"] == {"over-limit": 1}
    assert s.evicted == 0 and len(s.known()) == 3


async def test_one_peer_may_send_only_so_many_messages(make):
    s = make(peer_burst=3, peer_rate_per_s=0.5)
    digest = json.dumps(s.directory.view(s.me.id).digest()).encode()
    for _ in range(3):
        await s.gossip.on_message(s.me, "did:web:chatty.example", digest)
    with pytest.raises(TooManyRequests):
        await s.gossip.on_message(s.me, "did:web:chatty.example", digest)
    await s.gossip.on_message(s.me, "did:web:other.example", digest)  # another peer has its own budget
    s.clock.advance(2)
    await s.gossip.on_message(s.me, "did:web:chatty.example", digest)
