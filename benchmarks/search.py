"""Federated search over a catalog cache of 50,000 offers, beside a full scan of the same rows in the same run.

The cache holds 50,000 offers of 200 providers (250 each) in 10 regions, as a crawl leaves them (the
store's own ``replace_rows``, one transaction per provider). The searched: keyword + region queries
(``"quality inspection"`` in ``CN-GD`` and a few others), answered by ``search_rows`` (FTS5 for the words,
an indexed column for the region, the first page of 50 with the number of all matches). The baseline,
``scan_rows``, gives the same answers by reading every row of the participant and matching in Python; a
second line shows an SQL ``LIKE`` scan (no FTS, no index) for comparison, which does not match words as
prefixes and so is not the same answer.

Goals: search p50 <= 10 ms, and >= 10x faster than the full scan.

Run: ``python benchmarks/search.py`` (under a minute).
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.protocol.catalog_entries import OfferEntry, policy_features  # noqa: E402
from connector.store.catalog_cache import Provider, SearchQuery, scan_rows, search_rows  # noqa: E402
from connector.store.db import Database, migrate  # noqa: E402

PROVIDERS = 200
OFFERS_PER_PROVIDER = 250
REGIONS = ["CN-GD", "CN-BJ", "CN-SH", "CN-JS", "CN-ZJ", "CN-SD", "CN-HB", "CN-SC", "DE-BY", "FR-IDF"]
INDUSTRIES = ["automotive", "steel", "electronics", "textiles", "chemicals"]
WORDS = [
    "quality", "inspection", "torque", "vibration", "thermal", "camera", "scan", "assembly", "line", "weld", "paint",
    "battery", "cell", "supplier", "delivery", "forecast", "energy", "meter", "emission", "shift", "yield", "defect",
    "tolerance", "calibration", "sensor", "lidar", "gearbox", "bearing", "casting", "moulding", "stamping",
    "logistics", "inventory", "warehouse", "maintenance", "spindle", "coolant",
]
POLICIES = [
    {"permission": [{"action": "use"}]},
    {"permission": [{"action": "use", "constraint": [
        {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "R&D"}]}]},
    {"permission": [{"action": "use", "constraint": [
        {"leftOperand": "https://w3id.org/tds/v1#exportDestination", "operator": "isPartOf", "rightOperand": "CN"},
        {"leftOperand": "odrl:count", "operator": "lteq", "rightOperand": 100}]}]},
]
QUERIES = [
    SearchQuery(q="quality inspection", region="CN-GD"),
    SearchQuery(q="weld defect", region="CN-SH"),
    SearchQuery(q="battery", region="DE-BY"),
    SearchQuery(q="calibration sensor", region="CN"),
]


def build(db: Database, rng: random.Random) -> int:
    db.execute("INSERT INTO participants (id, name, did, legal_name, region, created_at) "
               "VALUES ('acme', 'acme', 'did:web:acme.example', 'Acme', 'CN-GD', '2026-06-01T00:00:00Z')")
    from connector.store.catalog_cache import replace_rows

    total = 0
    for p in range(PROVIDERS):
        provider = Provider(did=f"did:web:p{p}.example", dsp_endpoint=f"https://p{p}.example/api/dsp/2025-1",
                            legal_name=f"Provider {p} Co", region=REGIONS[p % len(REGIONS)],
                            industry=INDUSTRIES[p % len(INDUSTRIES)])
        entries = []
        for i in range(OFFERS_PER_PROVIDER):
            policy = {"@id": f"urn:tds:offer:cd:a{i}:v1", **POLICIES[i % len(POLICIES)]}
            entries.append(OfferEntry(
                provider_did=provider.did, dsp_endpoint=provider.dsp_endpoint, dataset_id=f"urn:tds:asset:p{p}:a{i}",
                offer_id=policy["@id"], title=" ".join(rng.sample(WORDS, 3)).capitalize(),
                description=" ".join(rng.choices(WORDS, k=12)), keywords=rng.sample(WORDS, 3),
                data_class=rng.choice(["general", "important"]), policy=policy, features=policy_features(policy)))
        db.execute("BEGIN")
        replace_rows(db, "acme", provider, entries, fetched_at=time.time())
        db.execute("COMMIT")
        total += len(entries)
    return total


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> int:
    rng = random.Random(2026)
    with tempfile.TemporaryDirectory() as folder:
        conn = sqlite3.connect(Path(folder) / "cache.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        db = Database(conn)
        migrate(db)
        started = time.perf_counter()
        offers = build(db, rng)
        print(f"cache: {offers} offers of {PROVIDERS} providers written in {time.perf_counter() - started:.1f} s")
        db.execute("ANALYZE")
        for query in QUERIES:  # the same answers, both ways
            a, b = search_rows(db, "acme", query), scan_rows(db, "acme", query)
            assert (a.total, a.more) == (b.total, b.more), (query, a.total, b.total)
        print(f"matches per query: {[search_rows(db, 'acme', q).total for q in QUERIES]}")
        searched = [t for q in QUERIES for t in timed(lambda q=q: search_rows(db, "acme", q), 100)]
        scanned = [t for q in QUERIES for t in timed(lambda q=q: scan_rows(db, "acme", q), 3)]

        def like() -> None:
            list(db.execute("SELECT * FROM catalog_cache NOT INDEXED WHERE participant_id = 'acme' AND "
                            "(title LIKE '%quality%' OR description LIKE '%quality%' OR keywords LIKE '%quality%') "
                            "AND (title LIKE '%inspection%' OR description LIKE '%inspection%' OR keywords LIKE "
                            "'%inspection%') AND provider_region = 'CN-GD' LIMIT 50"))

        liked = timed(like, 10)
        conn.close()
    p50, base = statistics.median(searched), statistics.median(scanned)
    ratio = base / p50
    p95 = statistics.quantiles(searched, n=20)[18]
    print(f"search: p50 {p50:.2f} ms, p95 {p95:.2f} ms over {len(searched)} searches; full scan p50 {base:.1f} ms; "
          f"SQL LIKE scan (not the same answers) p50 {statistics.median(liked):.1f} ms")
    print(f"TARGET search_p50: {p50:.2f} ms; baseline {base:.1f} ms; ratio {ratio:.1f}; goal <= 10 ms: "
          f"{'met' if p50 <= 10 else 'missed'}")
    print(f"TARGET search_speedup: {ratio:.1f} x; baseline 1 x (full scan, {base:.1f} ms); ratio {ratio:.1f}; "
          f"goal >= 10 x: {'met' if ratio >= 10 else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
