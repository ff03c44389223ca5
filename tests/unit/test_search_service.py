"""The crawler with a recording outbound client and a real store file: catalogs read with signed requests as
each participant (so each sees what the provider's access policies show it), refreshed and forgotten, and
peers that fail, lie or send too much bounded and counted, never fatal. No node, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from connector.config import DiscoverySection
from connector.errors import Conflict, NotFound
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.services.federation import FederationService
from connector.services.search import SearchService
from connector.store.catalog_cache import CatalogCache, Provider, SearchQuery
from connector.store.db import Store
from connector.store.repository import Participant, SqliteRepository
from connector.testing import FakeClock, RecordingClient, Reply, Sent

NOW = "2026-06-01T08:00:00Z"


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:hub.example:participants:{name}", legal_name=name.title(),
                         region="CN-GD", created_at=NOW)
    return ParticipantRuntime(record, ParticipantKeys.generate(), "https://hub.example")


def provider(name: str, region: str = "CN-GD") -> Provider:
    return Provider(did=f"did:web:{name}.example", dsp_endpoint=f"https://{name}.example/api/dsp/2025-1",
                    legal_name=f"{name.title()} Co", region=region, industry="automotive")


def dataset(name: str, *offers: str) -> dict:
    return {"@id": f"urn:tds:asset:{name}", "@type": "Dataset", "dct:title": f"{name} quality data",
            "hasPolicy": [{"@id": o, "@type": "Offer", "permission": [{"action": "use"}]} for o in offers or [name]]}


def catalog_of(p: Provider, *datasets: dict) -> dict:
    return {"@type": "Catalog", "participantId": p.did, "dataset": list(datasets)}


class World:
    """Hosted participants acme and sme, the providers each knows, and the peers' catalog answers."""

    def __init__(self, cache: CatalogCache, *, settings: DiscoverySection | None = None) -> None:
        self.client = RecordingClient()
        self.clock = FakeClock(1_780_000_000.0)
        self.acme, self.sme = runtime("acme"), runtime("sme")
        self.known: dict[str, list[Provider]] = {"acme": [], "sme": []}
        self.counted: dict[str, int] = {}
        federation = FederationService(self.client, resolver=None, peers=None)  # type: ignore[arg-type]

        async def known(p: ParticipantRuntime) -> list[Provider]:
            return self.known[p.id]

        def counted(name: str, n: int) -> None:
            self.counted[name] = self.counted.get(name, 0) + n

        self.search = SearchService(cache, federation.peer_catalog, known, settings or DiscoverySection(),
                                    participants=lambda: [self.acme, self.sme], clock=self.clock,
                                    counted=counted)

    def serve(self, p: Provider, answer) -> None:
        self.client.route(f"{p.dsp_endpoint}/catalog/request", answer)

    def serve_catalog(self, p: Provider, *datasets: dict) -> None:
        self.serve(p, lambda sent: Reply(200, catalog_of(p, *datasets)))

    async def offer_ids(self, who: ParticipantRuntime, **query) -> list[str]:
        page = await self.search.search(who, SearchQuery(limit=200, **query))
        return sorted(o.offer_id for o in page.offers)


@pytest.fixture
async def cache(tmp_path):
    store = Store(tmp_path / "search.db")
    await store.open()
    rows = SqliteRepository(store)
    for name in ("acme", "sme"):
        await rows.add_participant(Participant(name, name, f"did:web:hub.example:participants:{name}", name, "CN",
                                               created_at=NOW))
    yield CatalogCache(store)
    await store.close()


async def test_each_participant_crawls_as_itself_and_sees_what_the_provider_shows_it(cache):
    world = World(cache)
    parts = provider("parts")
    world.known.update(acme=[parts], sme=[parts])

    def shown_to(sent: Sent) -> Reply:  # the provider's access policy: the secret dataset for acme only
        secret = [dataset("secret", "o-secret")] if sent.caller == world.acme.did else []
        return Reply(200, catalog_of(parts, dataset("open", "o-open"), *secret))

    world.serve(parts, shown_to)
    reports = await world.search.crawl_all()
    assert [(r.participant, r.offers, r.failed) for r in reports] == [("acme", 2, {}), ("sme", 1, {})]
    assert {s.caller for s in world.client.requests("POST")} == {world.acme.did, world.sme.did}
    assert all(s.key_id and s.body["@type"] == "CatalogRequestMessage" for s in world.client.requests("POST"))
    assert await world.offer_ids(world.acme, q="quality") == ["o-open", "o-secret"]
    assert await world.offer_ids(world.sme, q="quality") == ["o-open"]
    found = await world.search.cached_offer(world.sme, "o-open")
    assert (found.provider_did, found.dsp_endpoint, found.provider_region) == (parts.did, parts.dsp_endpoint,
                                                                               "CN-GD")


async def test_a_crawl_refreshes_a_provider_and_forgets_offers_and_providers_no_longer_there(cache):
    world = World(cache)
    parts, steel = provider("parts"), provider("steel", "CN-BJ")
    world.known["acme"] = [parts, steel]
    world.serve_catalog(parts, dataset("a", "o-a"), dataset("b", "o-b"))
    world.serve_catalog(steel, dataset("c", "o-c"))
    await world.search.crawl(world.acme)
    assert await world.offer_ids(world.acme) == ["o-a", "o-b", "o-c"]
    world.clock.advance(300)
    world.serve_catalog(parts, dataset("b", "o-b"))
    world.known["acme"] = [parts]
    await world.search.crawl(world.acme)
    page = await world.search.search(world.acme, SearchQuery())
    assert [(o.offer_id, o.fetched_at) for o in page.offers] == [("o-b", world.clock.now)]
    assert world.search.age_s(page.offers[0]) == 0.0


@pytest.mark.parametrize(("answer", "reason"), [
    (Reply(200, b"<html>not json</html>"), "not JSON"),
    (Reply(200, ["a", "list"]), "not a JSON object"),
    (Reply(200, {"@type": "Catalog", "participantId": "did:web:someone-else.example"}), "not of"),
    (Reply(500, {"error": "boom"}), "refused the catalog request with 500"),
])
async def test_a_peer_that_answers_garbage_is_refused_counted_and_the_others_are_still_crawled(cache, answer,
                                                                                                reason):
    world = World(cache)
    bad, good = provider("bad"), provider("good")
    world.known["acme"] = [bad, good]
    world.serve(bad, lambda sent: answer)
    world.serve_catalog(good, dataset("g", "o-g"))
    report = await world.search.crawl(world.acme)
    assert reason in report.failed[bad.did] and good.did not in report.failed
    assert await world.offer_ids(world.acme) == ["o-g"]
    assert world.counted["failures"] == 1
    crawl = next(c for c in await world.search.crawls(world.acme) if c.provider_did == bad.did)
    assert crawl.failures == 1 and reason in crawl.error


async def test_an_unreachable_peer_keeps_the_offers_seen_before_with_their_age(cache):
    world = World(cache)
    parts = provider("parts")
    world.known["acme"] = [parts]
    world.serve_catalog(parts, dataset("a", "o-a"))
    await world.search.crawl(world.acme)
    world.client.routes.clear()
    world.clock.advance(600)
    report = await world.search.crawl(world.acme)
    assert parts.did in report.failed
    page = await world.search.search(world.acme, SearchQuery())
    assert [o.offer_id for o in page.offers] == ["o-a"] and world.search.age_s(page.offers[0]) == 600


async def test_an_oversized_catalog_is_bounded_per_provider_and_in_total_and_counted(cache):
    world = World(cache, settings=DiscoverySection(crawl_max_offers_per_provider=40, crawl_max_offers=50))
    big, small = provider("big"), provider("small")
    world.known["acme"] = [big, small]
    world.serve_catalog(big, dataset("many", *[f"o-{i:03}" for i in range(500)]))
    world.serve_catalog(small, *[dataset(f"s{i}", f"s-{i}") for i in range(30)])
    report = await world.search.crawl(world.acme)
    page = await world.search.search(world.acme, SearchQuery())
    assert page.total == 50  # 40 of the big one, then what room is left for the small one
    assert report.over_bound == 460 + 20 and world.counted["offers_over_bound"] == 480


async def test_a_peer_that_does_not_answer_in_time_is_given_up_and_counted(cache):
    world = World(cache, settings=DiscoverySection(crawl_provider_timeout_s=0.05))
    slow, fast = provider("slow"), provider("fast")
    world.known["acme"] = [slow, fast]
    never = asyncio.Event()

    async def hang(sent: Sent) -> Reply:
        await never.wait()
        return Reply(200, {})

    world.serve(slow, hang)
    world.serve_catalog(fast, dataset("f", "o-f"))
    report = await world.search.crawl(world.acme)
    assert report.failed == {slow.did: "timed out"} and await world.offer_ids(world.acme) == ["o-f"]


async def test_a_cached_offer_names_its_provider_unless_it_is_unknown_or_ambiguous(cache):
    world = World(cache)
    one, two = provider("one"), provider("two")
    world.known["acme"] = [one, two]
    world.serve_catalog(one, dataset("x", "same-id"), dataset("y", "only-one"))
    world.serve_catalog(two, dataset("z", "same-id"))
    await world.search.crawl(world.acme)
    assert (await world.search.cached_offer(world.acme, "only-one")).dsp_endpoint == one.dsp_endpoint
    with pytest.raises(Conflict, match="2 providers"):
        await world.search.cached_offer(world.acme, "same-id")
    with pytest.raises(NotFound):
        await world.search.cached_offer(world.acme, "never-seen")
