"""Admission of peers with in-memory negotiations and agreements, a fake monotonic clock and a fake wall
clock: who is known, the budgets of known and unknown peers, the places unknown peers hold, the retention
purge — no node, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.config import DspSection
from connector.errors import TooManyRequests
from connector.protocol.negotiation import Role, State
from connector.ratelimit import RateLimiter
from connector.services.admission import PURGE_BATCH, Admission
from connector.store.records import NegotiationRecord

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FRIEND = "did:web:friend.example"
STRANGER = "did:key:z6Mkstranger"


class AdmissionRecords:
    """What admission reads from the contract repository, and the purges it asks for."""

    def __init__(self, *, known: list[tuple[str, str]] | None = None,
                 active: list[NegotiationRecord] | None = None, purgeable: int = 0) -> None:
        self.known = known or []
        self.active = active or []
        self.purgeable = purgeable
        self.purges: list[tuple[str, int]] = []

    async def known_counterparties(self) -> list[tuple[str, str]]:
        return self.known

    async def all_active_negotiations(self) -> list[NegotiationRecord]:
        return self.active

    async def purge_stranger_negotiations(self, updated_before: str, *, limit: int = 5000) -> int:
        self.purges.append((updated_before, limit))
        batch = min(limit, self.purgeable)
        self.purgeable -= batch
        return batch


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def negotiation(pid: str, counterparty: str, *, participant: str = "acme", role: Role = Role.PROVIDER,
                state: State = State.REQUESTED, requested: dict[str, str] | None = None) -> NegotiationRecord:
    return NegotiationRecord(participant_id=participant, id=pid, role=role, state=state,
                             counterparty_did=counterparty, requested=requested or {})


def admission(records: AdmissionRecords | None = None, *, open_negotiations: int = 2, rate: float = 1.0,
              burst: int = 2, retention_s: float = 86400.0, ticks: Ticks | None = None,
              static: frozenset[str] = frozenset()) -> Admission:
    config = DspSection(unknown_peer_rate_per_s=rate, unknown_peer_burst=burst,
                        unknown_peer_open_negotiations=open_negotiations, unknown_peer_retention_s=retention_s)
    return Admission(records or AdmissionRecords(), config, RateLimiter(1.0, 3), stuck_after_s=29.5,
                     static_caller=static.__contains__, monotonic=ticks or Ticks(), clock=lambda: NOW)


async def started(records: AdmissionRecords | None = None, **kwargs: object) -> Admission:
    """Loaded, as the node does at start (which purges once, so the next purge is an interval away)."""
    gate = admission(records, **kwargs)  # type: ignore[arg-type]
    await gate.load()
    return gate


async def test_a_finalized_counterparty_is_known_after_load():
    gate = admission(AdmissionRecords(known=[("acme", FRIEND)]))
    await gate.load()
    assert gate.is_known("acme", FRIEND)
    assert not gate.is_known("other", FRIEND)  # known to one participant only
    assert not gate.is_known(None, FRIEND)


def test_a_peer_becomes_known_when_it_learns_of_an_agreement():
    gate = admission()
    gate.learn("acme", FRIEND)
    assert gate.is_known("acme", FRIEND)


def test_the_static_caller_is_always_known():
    gate = admission(static=frozenset({"conformance-kit"}))
    assert gate.is_known(None, "conformance-kit") and not gate.is_known(None, STRANGER)


def test_unknown_peers_share_one_budget():
    gate = admission(burst=2, rate=0.0)
    gate.check_request("acme", "did:key:z6Mkone")
    gate.check_request("other", "did:key:z6Mktwo")
    with pytest.raises(TooManyRequests):
        gate.check_request("acme", "did:key:z6Mkthree")  # a fresh identity draws from the same bucket


def test_a_known_peer_draws_from_its_own_bucket_not_the_strangers():
    gate = admission(burst=1, rate=0.0)
    gate.learn("acme", FRIEND)
    gate.check_unknown()  # the strangers' budget is spent
    for _ in range(3):
        gate.check_request("acme", FRIEND)
    with pytest.raises(TooManyRequests):
        gate.check_request("acme", FRIEND)  # its own burst of 3 is spent too


def test_the_shared_budget_refills_with_the_monotonic_clock():
    ticks = Ticks()
    gate = admission(burst=1, rate=1.0, ticks=ticks)
    gate.check_unknown()
    with pytest.raises(TooManyRequests):
        gate.check_unknown()
    ticks.now += 1.0
    gate.check_unknown()


async def test_unknown_peers_hold_at_most_the_configured_open_negotiations():
    gate = await started(open_negotiations=2)
    gate.admit_negotiation("acme", "n1", "did:key:z6Mkone")
    gate.admit_negotiation("acme", "n2", "did:key:z6Mktwo")
    with pytest.raises(TooManyRequests) as info:
        gate.admit_negotiation("acme", "n3", "did:key:z6Mkthree")
    assert info.value.retry_after == 30  # the shell's earlier deadline, in whole seconds
    assert gate.open_negotiations == 2


async def test_a_known_peer_takes_no_place():
    gate = await started(open_negotiations=1)
    gate.learn("acme", FRIEND)
    gate.admit_negotiation("acme", "n1", FRIEND)
    assert gate.open_negotiations == 0


async def test_an_ended_negotiation_gives_its_place_back():
    gate = await started(open_negotiations=1)
    gate.admit_negotiation("acme", "n1", STRANGER)
    gate.ended("acme", "n1")
    gate.admit_negotiation("acme", "n2", STRANGER)
    assert gate.open_negotiations == 1


async def test_a_peer_that_becomes_known_frees_the_places_it_held():
    gate = await started(open_negotiations=5)
    gate.admit_negotiation("acme", "n1", STRANGER)
    gate.admit_negotiation("acme", "n2", STRANGER)
    gate.admit_negotiation("other", "n3", STRANGER)
    gate.learn("acme", STRANGER)
    assert gate.open_negotiations == 1  # its negotiation with the other participant still holds one


async def test_a_participant_no_longer_hosted_is_forgotten():
    gate = await started(open_negotiations=5)
    gate.learn("acme", FRIEND)
    gate.admit_negotiation("acme", "n1", STRANGER)
    gate.forget("acme")
    assert not gate.is_known("acme", FRIEND) and gate.open_negotiations == 0


@pytest.mark.parametrize(("record", "counted"), [
    (negotiation("n1", STRANGER), True),  # a stranger's request to us as provider
    (negotiation("n2", STRANGER, role=Role.CONSUMER), True),  # a stranger's offer to us as consumer
    (negotiation("n3", STRANGER, role=Role.CONSUMER, requested={"@id": "offer"}), False),  # our own request
    (negotiation("n4", STRANGER, state=State.TERMINATED), False),
    (negotiation("n5", FRIEND), False),
])
async def test_load_counts_the_open_negotiations_strangers_opened(record, counted):
    gate = admission(AdmissionRecords(known=[("acme", FRIEND)], active=[record]))
    await gate.load()
    assert gate.open_negotiations == int(counted)


async def test_purge_deletes_before_the_retention_cutoff_in_batches():
    records = AdmissionRecords(purgeable=PURGE_BATCH + 7)
    gate = admission(records, retention_s=3600.0)
    assert await gate.purge() == PURGE_BATCH + 7
    cutoff = (NOW - timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert records.purges == [(cutoff, PURGE_BATCH), (cutoff, PURGE_BATCH)]


async def test_load_purges_once():
    records = AdmissionRecords(purgeable=3)
    await admission(records).load()
    assert len(records.purges) == 1 and records.purgeable == 0


async def test_a_new_stranger_negotiation_purges_at_most_once_per_interval():
    ticks = Ticks()
    records = AdmissionRecords()
    gate = admission(records, open_negotiations=10, retention_s=60.0, ticks=ticks)
    await gate.load()
    gate.admit_negotiation("acme", "n1", STRANGER)  # just purged at load: not again
    await gate.close()
    assert len(records.purges) == 1
    ticks.now += 61.0
    gate.admit_negotiation("acme", "n2", STRANGER)
    assert gate._purge is not None
    await gate._purge
    assert len(records.purges) == 2
    await gate.close()
