"""The catalog cache in SQLite: a provider's offers replaced in one go, keyword search through FTS5 with the
filters, paging, every row its participant's own, and the same answers as a full scan. One store file, no
node."""

from __future__ import annotations

import pytest

from connector.protocol.catalog_entries import OfferEntry, policy_features
from connector.store.catalog_cache import CatalogCache, Provider, SearchQuery, scan_rows, search_rows
from connector.store.db import Store
from connector.store.repository import Participant, SqliteRepository

NOW = "2026-06-01T08:00:00Z"
PARTS = Provider(did="did:web:parts.example", dsp_endpoint="https://parts.example/dsp", legal_name="Parts Co",
                 region="CN-GD", industry="automotive")
STEEL = Provider(did="did:web:steel.example", dsp_endpoint="https://steel.example/dsp", legal_name="Steel Co",
                 region="CN-BJ", industry="steel")
OPEN = {"permission": [{"action": "use"}]}
RND = {"permission": [{"action": "use", "constraint": [
    {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "R&D"},
    {"leftOperand": "https://w3id.org/tds/v1#exportDestination", "operator": "isPartOf", "rightOperand": "CN"}]}]}


def entry(provider: Provider, dataset: str, title: str, *, description: str = "", keywords=(), policy=OPEN,
          data_class: str = "general", offer: str | None = None) -> OfferEntry:
    return OfferEntry(provider_did=provider.did, dsp_endpoint=provider.dsp_endpoint, dataset_id=dataset,
                      offer_id=offer or f"urn:tds:offer:{dataset}:1", title=title, description=description,
                      keywords=list(keywords), data_class=data_class, policy={"@id": offer or dataset, **policy},
                      features=policy_features(policy))


@pytest.fixture
async def cache(tmp_path):
    store = Store(tmp_path / "cache.db")
    await store.open()
    rows = SqliteRepository(store)
    for name in ("acme", "sme"):
        await rows.add_participant(Participant(name, name, f"did:web:hub.example:participants:{name}", name, "CN",
                                               created_at=NOW))
    yield CatalogCache(store)
    await store.close()


async def fill(cache: CatalogCache) -> None:
    await cache.replace("acme", PARTS, [
        entry(PARTS, "qi-2026", "Quality inspection 2026", description="Camera line scans", keywords=["vision"],
              data_class="important", policy=RND),
        entry(PARTS, "torque", "Torque measurements", keywords=["quality", "assembly"]),
    ], fetched_at=1000.0)
    await cache.replace("acme", STEEL, [
        entry(STEEL, "alloys", "Alloy inspection reports", description="Quality of steel alloys"),
    ], fetched_at=2000.0)


async def titles(cache: CatalogCache, participant: str = "acme", **query) -> list[str]:
    page = await cache.search(participant, SearchQuery(**query))
    return [o.title for o in page.offers]


async def test_every_word_must_occur_as_a_prefix(cache):
    await fill(cache)
    assert sorted(await titles(cache, q="quality")) == ["Alloy inspection reports", "Quality inspection 2026",
                                                       "Torque measurements"]
    assert sorted(await titles(cache, q="quality inspect")) == ["Alloy inspection reports",
                                                               "Quality inspection 2026"]
    assert await titles(cache, q="vis") == ["Quality inspection 2026"]
    assert await titles(cache, q="nothing-like-it") == []


@pytest.mark.parametrize("text", ['quality" OR "x', "NEAR(quality", "title:quality", "*", "AND", "'"])
async def test_search_words_are_never_read_as_fts_syntax(cache, text):
    await fill(cache)
    page = await cache.search("acme", SearchQuery(q=text))
    assert page.total == len(page.offers)  # answered, not an SQL error


@pytest.mark.parametrize(("query", "expected"), [
    ({"region": "CN-GD"}, ["Quality inspection 2026", "Torque measurements"]),
    ({"region": "CN"}, ["Alloy inspection reports", "Quality inspection 2026", "Torque measurements"]),
    ({"region": "CN-G"}, []),
    ({"provider": STEEL.did}, ["Alloy inspection reports"]),
    ({"provider": "Parts Co"}, ["Quality inspection 2026", "Torque measurements"]),
    ({"data_class": "important"}, ["Quality inspection 2026"]),
    ({"industry": "steel"}, ["Alloy inspection reports"]),
    ({"features": ["no-export-restriction"]}, ["Alloy inspection reports", "Torque measurements"]),
    ({"features": ["purpose:R&D", "export-within:CN"]}, ["Quality inspection 2026"]),
    ({"q": "quality", "region": "CN-GD", "features": ["any-purpose"]}, ["Torque measurements"]),
])
async def test_filters(cache, query, expected):
    await fill(cache)
    assert sorted(await titles(cache, **query)) == expected


async def test_pages_and_the_number_of_all_matches(cache):
    await cache.replace("acme", PARTS, [entry(PARTS, f"ds-{i:02}", f"Series {i}") for i in range(25)],
                        fetched_at=1.0)
    first = await cache.search("acme", SearchQuery(q="series", limit=10))
    last = await cache.search("acme", SearchQuery(q="series", limit=10, offset=20))
    assert (first.total, len(first.offers), last.total, len(last.offers)) == (25, 10, 25, 5)
    assert not {o.dataset_id for o in first.offers} & {o.dataset_id for o in last.offers}


async def test_a_providers_rows_are_replaced_and_offers_it_no_longer_shows_are_gone(cache):
    await fill(cache)
    await cache.replace("acme", PARTS, [entry(PARTS, "torque", "Torque measurements v2")], fetched_at=3000.0)
    assert sorted(await titles(cache)) == ["Alloy inspection reports", "Torque measurements v2"]
    assert await titles(cache, q="camera") == []  # the old row's words went with it
    page = await cache.search("acme", SearchQuery(provider=PARTS.did))
    assert [o.fetched_at for o in page.offers] == [3000.0]


async def test_each_participant_searches_only_what_it_saw(cache):
    await fill(cache)
    await cache.replace("sme", STEEL, [entry(STEEL, "coils", "Coil quality")], fetched_at=1.0)
    assert await titles(cache, "sme", q="quality") == ["Coil quality"]
    assert "Coil quality" not in await titles(cache, "acme", q="quality")
    assert await cache.offers_with_id("sme", "urn:tds:offer:qi-2026:1") == []
    assert [o.provider_did for o in await cache.offers_with_id("acme", "urn:tds:offer:qi-2026:1")] == [PARTS.did]


async def test_providers_no_longer_known_are_forgotten(cache):
    await fill(cache)
    await cache.failed("acme", Provider(did="did:web:gone.example", dsp_endpoint="https://gone.example"), "down",
                       at=5.0)
    assert await cache.keep_only("acme", {STEEL.did}) == 2
    assert await titles(cache) == ["Alloy inspection reports"]
    assert [c.provider_did for c in await cache.crawls("acme")] == [STEEL.did]


async def test_a_failed_crawl_is_counted_and_keeps_the_offers_seen_before(cache):
    await fill(cache)
    await cache.failed("acme", PARTS, "refused with 500", at=5000.0)
    await cache.failed("acme", PARTS, "unreachable", at=6000.0)
    crawl = next(c for c in await cache.crawls("acme") if c.provider_did == PARTS.did)
    assert (crawl.failures, crawl.error, crawl.fetched_at, crawl.offers) == (2, "unreachable", 1000.0, 2)
    assert len(await titles(cache, provider=PARTS.did)) == 2


@pytest.mark.parametrize("query", [
    SearchQuery(q="quality"), SearchQuery(q="inspection", region="CN"), SearchQuery(region="CN-BJ"),
    SearchQuery(q="quality", features=["any-purpose"]), SearchQuery(data_class="important", q="line"),
])
async def test_search_answers_as_a_full_scan_does(cache, query):
    await fill(cache)

    def both(db):
        return search_rows(db, "acme", query), scan_rows(db, "acme", query)

    indexed, scanned = await cache.store.read(both)
    assert indexed.total == scanned.total
    assert sorted(o.offer_id for o in indexed.offers) == sorted(o.offer_id for o in scanned.offers)


async def test_a_crawl_of_a_participant_removed_meanwhile_records_nothing(cache):
    """The crawler may finish a participant's crawl after the participant was removed: nothing to record, and
    no error that would stop the crawler (or the node stopping it)."""
    await cache.replace("gone", PARTS, [entry(PARTS, "x", "X")], fetched_at=1.0)
    await cache.failed("gone", PARTS, "refused with 401", at=2.0)
    assert await cache.crawls("gone") == []
