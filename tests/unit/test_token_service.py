"""Management tokens on a real database file, without a node or sockets: checking a token (unknown,
revoked, overlong, over budget), the admin token's own budget, a participant's own tokens, and the tokens kept
in memory (a revocation, a participant not served, their time and number)."""

from __future__ import annotations

import pytest

from connector.errors import Conflict, NotFound, TooManyRequests, Unauthorized
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.ratelimit import RateLimiter
from connector.services import tokens as token_service
from connector.services.tokens import TokenService
from connector.store.db import Store
from connector.store.repository import Participant, SqliteRepository


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example", legal_name=name, region="CN-GD",
                         created_at="2026-12-01T00:00:00+00:00")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def setup(tmp_path):
    store = Store(tmp_path / "t.db")
    await store.open()
    repo = SqliteRepository(store)
    acme, sme = runtime("acme"), runtime("sme")
    for p in (acme, sme):
        await repo.add_participant(p.record)
    clock = Clock()
    service = TokenService(repo, RateLimiter(rate=1.0, burst=3), monotonic=clock,
                           timestamp=lambda: "2026-12-06T10:00:00+00:00")
    yield service, repo, acme, sme, clock
    await store.close()


async def test_a_new_token_authenticates_as_its_participant_and_application(setup):
    service, _, acme, _, _ = setup
    made = await service.create(acme, "erp-sync")
    token = await service.authenticate(made.token)
    assert (token.participant_id, token.application, token.admin) == ("acme", "erp-sync", False)
    assert made.created_at == "2026-12-06T10:00:00+00:00"
    listed = await service.of(acme)
    assert [t.id for t in listed] == [made.id]
    assert all(not hasattr(t, "token") for t in listed)  # the value is shown once, never listed


@pytest.mark.parametrize("value", ["", "x" * 513, "not-a-token"])
async def test_unknown_empty_and_overlong_tokens_are_refused(setup, value):
    service = setup[0]
    with pytest.raises(Unauthorized, match="unknown or revoked token"):
        await service.authenticate(value)


async def test_a_revoked_token_no_longer_authenticates_and_cannot_be_revoked_twice(setup):
    service, _, acme, _, _ = setup
    made = await service.create(acme, "erp-sync")
    await service.revoke(acme, made.id)
    with pytest.raises(Unauthorized):
        await service.authenticate(made.token)
    with pytest.raises(NotFound):
        await service.revoke(acme, made.id)


async def test_a_participant_cannot_revoke_another_participants_token(setup):
    service, _, acme, sme, _ = setup
    made = await service.create(acme, "erp-sync")
    with pytest.raises(NotFound):
        await service.revoke(sme, made.id)
    assert (await service.authenticate(made.token)).participant_id == "acme"
    assert await service.of(sme) == []


async def test_each_participant_has_its_own_request_budget(setup):
    service, _, acme, sme, clock = setup
    first, second = await service.create(acme, "a"), await service.create(acme, "b")
    other = await service.create(sme, "c")
    for value in (first.token, second.token, first.token):  # one budget per participant, not per token
        await service.authenticate(value)
    with pytest.raises(TooManyRequests):
        await service.authenticate(second.token)
    await service.authenticate(other.token)  # another participant is not held up
    clock.now += 1.0  # one more request's worth refills
    await service.authenticate(first.token)


async def test_the_admin_token_has_a_budget_of_its_own(setup):
    service, repo, acme, _, _ = setup
    await repo.add_token("admin-secret", None, "admin", admin=True, now="2026-12-06T10:00:00+00:00")
    made = await service.create(acme, "erp")
    for _ in range(3):
        await service.authenticate("admin-secret")
    with pytest.raises(TooManyRequests):
        await service.authenticate("admin-secret")
    assert (await service.authenticate(made.token)).participant_id == "acme"


async def test_a_participant_holds_at_most_max_tokens_live_tokens(setup, monkeypatch):
    service, _, acme, _, _ = setup
    monkeypatch.setattr(token_service, "MAX_TOKENS", 2)
    first = await service.create(acme, "a")
    await service.create(acme, "b")
    with pytest.raises(Conflict, match="already has 2 active tokens"):
        await service.create(acme, "c")
    await service.revoke(acme, first.id)
    await service.create(acme, "c")  # a revoked one no longer counts


# -- tokens kept in memory: the store stays the authority ----------------------------------------------------


class Lookups:
    """Counts the token service's reads of the store."""

    def __init__(self, repo: SqliteRepository) -> None:
        self.count = 0
        self._find = repo.find_token_hash

    async def __call__(self, digest: str):
        self.count += 1
        return await self._find(digest)


@pytest.fixture
def lookups(setup, monkeypatch):
    _, repo, _, _, _ = setup
    counted = Lookups(repo)
    monkeypatch.setattr(repo, "find_token_hash", counted)
    return counted


async def test_a_token_used_again_is_taken_from_memory(setup, lookups):
    service, _, acme, _, _ = setup
    made = await service.create(acme, "erp")
    for _ in range(3):
        assert (await service.authenticate(made.token)).application == "erp"
    assert lookups.count == 1


async def test_a_revoked_token_is_refused_at_once_although_it_was_just_kept_in_memory(setup):
    service, _, acme, _, _ = setup
    made = await service.create(acme, "erp")
    await service.authenticate(made.token)
    await service.revoke(acme, made.id)
    with pytest.raises(Unauthorized, match="unknown or revoked token"):
        await service.authenticate(made.token)


async def test_a_revoked_metrics_token_is_refused_at_once_although_it_was_just_kept_in_memory(setup):
    service = setup[0]
    made = await service.create_metrics_token("prometheus")
    await service.authenticate(made.token)
    await service.revoke_metrics_token(made.id)
    with pytest.raises(Unauthorized):
        await service.authenticate(made.token)


async def test_the_tokens_of_a_participant_that_is_not_served_are_read_from_the_store_each_time(setup, lookups):
    service, _, acme, _, _ = setup
    made = await service.create(acme, "erp")
    service.served = lambda participant_id: participant_id != "acme"  # suspended, or being removed
    for _ in range(2):
        await service.authenticate(made.token)
    assert lookups.count == 2


async def test_a_participant_forgotten_has_its_tokens_read_from_the_store_again(setup):
    service, repo, acme, _, _ = setup
    made = await service.create(acme, "erp")
    await service.authenticate(made.token)
    await repo.delete_participant(acme.id)  # as a removal does, behind the service's back
    service.forget_participant(acme.id)
    with pytest.raises(Unauthorized):
        await service.authenticate(made.token)


async def test_a_token_revoked_in_the_store_alone_is_refused_once_its_time_in_memory_is_over(setup):
    service, repo, acme, _, clock = setup
    made = await service.create(acme, "erp")
    await service.authenticate(made.token)
    assert await repo.revoke_token(acme.id, made.id, "2026-12-06T10:00:01+00:00")
    clock.now += token_service.CACHE_SECONDS
    with pytest.raises(Unauthorized):
        await service.authenticate(made.token)


async def test_memory_holds_at_most_cache_size_tokens_the_oldest_going_first(setup, lookups, monkeypatch):
    service, _, acme, sme, clock = setup
    monkeypatch.setattr(token_service, "CACHE_SIZE", 2)
    made = [await service.create(acme, "a"), await service.create(sme, "b"), await service.create(acme, "c")]
    for token in made:
        await service.authenticate(token.token)
        clock.now += 1.0  # within each participant's budget
    await service.authenticate(made[2].token)  # still in memory
    assert lookups.count == 3
    await service.authenticate(made[0].token)  # the oldest, gone to make room
    assert lookups.count == 4


async def test_a_token_read_from_the_store_while_it_is_being_revoked_is_not_kept(setup, monkeypatch):
    service, repo, acme, _, _ = setup
    made = await service.create(acme, "erp")
    find = repo.find_token_hash

    async def read_then_revoked(digest: str):
        found = await find(digest)
        monkeypatch.setattr(repo, "find_token_hash", find)
        await service.revoke(acme, made.id)  # committed while the read is on its way back
        return found

    monkeypatch.setattr(repo, "find_token_hash", read_then_revoked)
    await service.authenticate(made.token)  # read before the revocation was committed
    with pytest.raises(Unauthorized):
        await service.authenticate(made.token)
