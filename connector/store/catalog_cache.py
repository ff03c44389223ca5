"""The catalog cache in SQLite: every SQL statement of ``connector.services.search``.

Per hosted participant (every query is scoped by ``participant_id``; one participant never reads what another
saw), the offers it saw in each known provider's catalog, with when they were fetched. A provider's rows are
replaced in one transaction (offers it no longer shows are gone with the old rows). Keyword search goes
through the FTS5 table ``catalog_cache_text`` (title, description, keywords and themes, under the row's id);
provider, region, data class and industry are indexed columns; policy features have their own index table.

The functions taking a database (:func:`replace_rows`, :func:`search_rows`, :func:`scan_rows`) are what the
repository runs on the store's threads; the benchmark calls them directly on one connection.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from connector.protocol.catalog_entries import OfferEntry
from connector.store.db import Database, Store

#: Most rows one search answers.
MAX_PAGE = 200
#: Keyword matches are ranked (BM25) when there are at most this many; more are listed in cache order (as
#: crawled), as ranking and sorting cost about as much per match as the rest of the search together, and
#: matches are counted up to COUNTED_UP_TO (``more`` says there are more): benchmarks/search.py.
RANKED_UP_TO = 200
COUNTED_UP_TO = 1000


class Provider(msgspec.Struct, frozen=True, kw_only=True):
    """A provider as the crawling participant knows it; legal name, region and industry as it states them."""

    did: str
    dsp_endpoint: str
    legal_name: str = ""
    region: str = ""
    industry: str = ""


class SearchQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What to search for: words (all must occur, as prefixes) and exact filters; paged."""

    q: str = ""
    region: str = ""
    provider: str = ""
    data_class: str = ""
    industry: str = ""
    features: list[str] = []
    limit: int = 50
    offset: int = 0


class CachedOffer(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the cache, as search answers it."""

    provider_did: str
    dsp_endpoint: str
    provider_legal_name: str
    provider_region: str
    provider_industry: str
    dataset_id: str
    offer_id: str
    title: str
    description: str
    keywords: list[str]
    themes: list[str]
    data_class: str
    media_type: str
    policy: dict[str, Any]
    features: list[str]
    fetched_at: float


class SearchPage(msgspec.Struct, frozen=True, kw_only=True):
    #: All matches, counted up to :data:`COUNTED_UP_TO`; *more*: there are more than that.
    total: int
    offers: list[CachedOffer]
    more: bool = False


class Crawl(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's last crawl by a participant: when, how many offers kept and skipped, failures in a row."""

    provider_did: str
    dsp_endpoint: str
    crawled_at: float
    fetched_at: float | None
    offers: int
    skipped: int
    failures: int
    error: str


_JSON = ("keywords", "themes", "policy", "features")
_COLUMNS = ("provider_did, dsp_endpoint, provider_legal_name, provider_region, provider_industry, dataset_id, "
            "offer_id, title, description, keywords, themes, data_class, media_type, policy, features, fetched_at")
_WORD = re.compile(r"\w+", re.UNICODE)


def _offer(row: dict[str, Any]) -> CachedOffer:
    values = {k: (msgspec.json.decode(v) if k in _JSON else v) for k, v in row.items()}
    return msgspec.convert(values, CachedOffer)


def fts_query(text: str, region: str = "") -> str:
    """The FTS5 query for free text: every word must occur (as a prefix) in the title, description or keywords,
    quoted so that no word is read as FTS5 syntax (``AND``, ``NEAR``, ``col:``); and, with *region*, the
    region's facet (a prefilter: the region column decides)."""
    words = " ".join(f'"{w}"*' for w in _WORD.findall(text)[:20])
    if not words:
        return ""
    query = f"{{title description keywords}}: ({words})"
    return f'{query} AND facets: "{region_facets(region)[-1]}"' if region else query


def tsquery(text: str) -> str:
    """:func:`fts_query` for PostgreSQL: every word, quoted, as a prefix (``'word':* & …``)."""
    words = [w.lower() for w in _WORD.findall(text)[:20]]
    return " & ".join(f"'{w}':*" for w in words)


def region_facets(region: str) -> list[str]:
    """``CN-GD`` → ``regioncn regioncnxgd``: the region and its parents as single words (``x`` stands for the
    hyphen, which the tokenizer would split on)."""
    parts = [p.lower() for p in region.split("-") if p.isalnum()] if region else []
    return ["region" + "x".join(parts[: i + 1]) for i in range(len(parts))]


def _drop(db: Database, participant_id: str, where: str, params: list[Any]) -> int:
    rows = f"SELECT id FROM catalog_cache WHERE participant_id = ? AND {where}"
    db.execute(f"DELETE FROM catalog_cache_text WHERE rowid IN ({rows})", [participant_id, *params])
    db.execute(f"DELETE FROM catalog_cache_features WHERE participant_id = ? AND offer_row IN ({rows})",
               [participant_id, participant_id, *params])
    return int(db.execute(f"DELETE FROM catalog_cache WHERE participant_id = ? AND {where}",
                          [participant_id, *params]).rowcount)


def _hosted(db: Database, participant_id: str) -> bool:
    """Whether *participant_id* is still hosted: one removed while its crawl ran leaves nothing to record."""
    return db.execute("SELECT 1 FROM participants WHERE id = ?", [participant_id]).fetchone() is not None


def replace_rows(db: Database, participant_id: str, provider: Provider, entries: list[OfferEntry],
                 fetched_at: float) -> None:
    """Replace *provider*'s rows of *participant_id* by *entries* (run inside one transaction)."""
    _drop(db, participant_id, "provider_did = ?", [provider.did])
    for e in entries:
        row = [participant_id, provider.did, provider.dsp_endpoint, provider.legal_name, provider.region,
               provider.industry, e.dataset_id, e.offer_id, e.title, e.description,
               msgspec.json.encode(e.keywords).decode(), msgspec.json.encode(e.themes).decode(), e.data_class,
               e.media_type, msgspec.json.encode(e.policy).decode(), msgspec.json.encode(e.features).decode(),
               fetched_at]
        cursor = db.execute(f"INSERT INTO catalog_cache (participant_id, {_COLUMNS}) "
                            f"VALUES ({', '.join('?' for _ in row)})", row)
        row_id = cursor.lastrowid
        db.execute("INSERT INTO catalog_cache_text (rowid, participant_id, title, description, keywords, facets) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   [row_id, participant_id, e.title, e.description, " ".join([*e.keywords, *e.themes]),
                    " ".join(region_facets(provider.region))])
        db.conn.executemany("INSERT OR IGNORE INTO catalog_cache_features (participant_id, feature, offer_row) "
                            "VALUES (?, ?, ?)", [(participant_id, f, row_id) for f in e.features])


def _filters(participant_id: str, query: SearchQuery) -> tuple[list[str], list[Any]]:
    where, params = ["c.participant_id = ?"], [participant_id]
    if query.region:
        # A region and its sub-regions (CN finds CN-GD), as ISO 3166-2 codes nest.
        where.append("(c.provider_region = ? OR (c.provider_region > ? AND c.provider_region < ?))")
        params += [query.region, query.region + "-", query.region + "."]
    if query.provider:
        where.append("(c.provider_did = ? OR c.provider_legal_name = ?)")
        params += [query.provider, query.provider]
    if query.data_class:
        where.append("c.data_class = ?")
        params.append(query.data_class)
    if query.industry:
        where.append("c.provider_industry = ?")
        params.append(query.industry)
    for feature in query.features:
        where.append("c.id IN (SELECT offer_row FROM catalog_cache_features WHERE participant_id = ? AND feature = ?)")
        params += [participant_id, feature]
    return where, params


def search_rows(db: Database, participant_id: str, query: SearchQuery) -> SearchPage:
    """The page of *participant_id*'s cached offers that match *query*: best keyword match first (BM25) when at
    most :data:`RANKED_UP_TO` match, else in cache order; with the number of all matches (up to
    :data:`COUNTED_UP_TO`)."""
    where, params = _filters(participant_id, query)
    postgres = getattr(db, "dialect_name", "") == "postgresql"
    words = (tsquery(query.q) if postgres else fts_query(query.q, query.region))
    rank = "t.rank"
    if words and postgres:
        # PostgreSQL: the same words as prefixes in a tsvector of the same columns; the region facet likewise.
        source = "catalog_cache_text t JOIN catalog_cache c ON c.id = t.rowid"
        where.insert(0, "t.document @@ to_tsquery('simple', ?)")
        params.insert(0, words)
        if query.region:
            where.insert(1, "t.facet_words @@ to_tsquery('simple', ?)")
            params.insert(1, f"'{region_facets(query.region)[-1]}'")
        rank = f"ts_rank(t.document, to_tsquery('simple', '{words.replace(chr(39), chr(39) * 2)}')) DESC"
    elif words:
        source = "catalog_cache_text t JOIN catalog_cache c ON c.id = t.rowid"
        where.insert(0, "catalog_cache_text MATCH ?")
        params.insert(0, words)
    elif query.q.strip():
        return SearchPage(total=0, offers=[])  # only punctuation: no word to find
    else:
        source = "catalog_cache c"
    clause = " AND ".join(where)
    counted = int(db.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {source} WHERE {clause} LIMIT ?) AS matched",
                             [*params, COUNTED_UP_TO + 1]).fetchone()[0])
    order = f"{rank}, c.id" if words and counted <= RANKED_UP_TO else "c.id"
    limit = max(1, min(query.limit, MAX_PAGE))
    cols = ", ".join(f"c.{c.strip()}" for c in _COLUMNS.split(","))
    rows = db.query(f"SELECT {cols} FROM {source} WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                    [*params, limit, max(0, query.offset)])
    return SearchPage(total=min(counted, COUNTED_UP_TO), offers=[_offer(r) for r in rows],
                      more=counted > COUNTED_UP_TO)


def scan_rows(db: Database, participant_id: str, query: SearchQuery) -> SearchPage:
    """The same answer as :func:`search_rows` without the indexes: every row read and matched in Python (the
    baseline the benchmark measures search against)."""
    words = [w.lower() for w in _WORD.findall(query.q)]
    matched = []
    for r in db.query(f"SELECT {_COLUMNS} FROM catalog_cache NOT INDEXED WHERE participant_id = ?",
                      [participant_id]):
        text = " ".join([r["title"], r["description"], *msgspec.json.decode(r["keywords"]),
                         *msgspec.json.decode(r["themes"])]).lower()
        tokens = _WORD.findall(text)
        region = r["provider_region"]
        if any(not any(t.startswith(w) for t in tokens) for w in words):
            continue
        if query.region and not (region == query.region or region.startswith(query.region + "-")):
            continue
        if query.provider and query.provider not in (r["provider_did"], r["provider_legal_name"]):
            continue
        if (query.data_class and r["data_class"] != query.data_class) or \
                (query.industry and r["provider_industry"] != query.industry):
            continue
        features = msgspec.json.decode(r["features"])
        if any(f not in features for f in query.features):
            continue
        matched.append(r)
    limit = max(1, min(query.limit, MAX_PAGE))
    page = matched[max(0, query.offset): max(0, query.offset) + limit]
    return SearchPage(total=min(len(matched), COUNTED_UP_TO), offers=[_offer(r) for r in page],
                      more=len(matched) > COUNTED_UP_TO)


class CatalogCache:
    """The offers each participant saw in its providers' catalogs, and each provider's last crawl."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def replace(self, participant_id: str, provider: Provider, entries: list[OfferEntry], *,
                      fetched_at: float, skipped: int = 0) -> None:
        """*provider*'s offers as *participant_id* saw them now: its old rows go, in the same transaction."""

        def write(db: Database) -> None:
            if not _hosted(db, participant_id):
                return
            replace_rows(db, participant_id, provider, entries, fetched_at)
            db.execute("INSERT OR REPLACE INTO catalog_crawls (participant_id, provider_did, dsp_endpoint, "
                       "crawled_at, fetched_at, offers, skipped, failures, error) VALUES (?, ?, ?, ?, ?, ?, ?, 0, '')",
                       [participant_id, provider.did, provider.dsp_endpoint, fetched_at, fetched_at, len(entries),
                        skipped])

        await self.store.write(write)

    async def failed(self, participant_id: str, provider: Provider, error: str, *, at: float) -> None:
        """A crawl of *provider* failed: counted, with why; the offers seen before stay (their age tells)."""

        def write(db: Database) -> None:
            if not _hosted(db, participant_id):
                return
            db.execute(
                "INSERT INTO catalog_crawls (participant_id, provider_did, dsp_endpoint, crawled_at, failures, error) "
                "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (participant_id, provider_did) DO UPDATE SET "
                "dsp_endpoint = excluded.dsp_endpoint, crawled_at = excluded.crawled_at, "
                "failures = catalog_crawls.failures + 1, error = excluded.error",
                [participant_id, provider.did, provider.dsp_endpoint, at, error[:1000]])

        await self.store.write(write)

    async def keep_only(self, participant_id: str, provider_dids: set[str]) -> int:
        """Forget the offers and crawls of providers *participant_id* no longer knows; the rows dropped."""

        def write(db: Database) -> int:
            known = [r[0] for r in db.execute("SELECT provider_did FROM catalog_crawls WHERE participant_id = ?",
                                              [participant_id]).fetchall()]
            cached = [r[0] for r in db.execute("SELECT DISTINCT provider_did FROM catalog_cache "
                                               "WHERE participant_id = ?", [participant_id]).fetchall()]
            dropped = 0
            for did in set(known) | set(cached):
                if did not in provider_dids:
                    dropped += _drop(db, participant_id, "provider_did = ?", [did])
                    db.execute("DELETE FROM catalog_crawls WHERE participant_id = ? AND provider_did = ?",
                               [participant_id, did])
            return dropped

        return await self.store.write(write)

    async def count(self, participant_id: str, *, except_provider: str = "") -> int:
        """Offers cached for *participant_id* (leaving out one provider's)."""
        return await self.store.read(lambda db: int(db.execute(
            "SELECT COUNT(*) FROM catalog_cache WHERE participant_id = ? AND provider_did != ?",
            [participant_id, except_provider]).fetchone()[0]))

    async def search(self, participant_id: str, query: SearchQuery) -> SearchPage:
        return await self.store.read(lambda db: search_rows(db, participant_id, query))

    async def offers_with_id(self, participant_id: str, offer_id: str) -> list[CachedOffer]:
        """The cached offers of that id (one, unless two providers chose the same id)."""
        cols = ", ".join(c.strip() for c in _COLUMNS.split(","))
        return await self.store.read(lambda db: [_offer(r) for r in db.query(
            f"SELECT {cols} FROM catalog_cache WHERE participant_id = ? AND offer_id = ? LIMIT 10",
            [participant_id, offer_id])])

    async def crawls(self, participant_id: str) -> list[Crawl]:
        return await self.store.read(lambda db: [msgspec.convert(r, Crawl) for r in db.query(
            "SELECT provider_did, dsp_endpoint, crawled_at, fetched_at, offers, skipped, failures, error "
            "FROM catalog_crawls WHERE participant_id = ? ORDER BY provider_did", [participant_id])])
