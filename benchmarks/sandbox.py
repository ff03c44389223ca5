"""The data sandbox: what checking a query and running it in the locked-down worker process costs.

Measured, each against a baseline taken in the same run (rounds interleaved, medians of the per-round figures,
so that load from elsewhere on the machine falls on both sides alike):

- ``sandbox_groupby_vs_bare``: ``SELECT region, avg(defect_rate) FROM data GROUP BY region`` over a table of
  1,000,000 rows, the way the provider runs it — checked and rebuilt (``check_query``: values clipped to the
  column's bounds, each group's row count added), run in a worker process of its own (``run_query``: started
  for the query, resource limits, read-only immutable open, authorizer, progress handler), small groups dropped
  and noise added (``apply_privacy``) — against the same query on the same table file in bare ``sqlite3`` in this
  process. The ratio is queries per second, sandbox over bare;
- ``sandbox_query_p50_vs_catalog``: the end-to-end median latency of a small query (2,000 rows) as a consumer's
  application asks it — the consumer's management API, the signed DSP request to the provider, the provider's
  check, policy decision, budget and durable log entry, the worker process, the signature, and the consumer's
  check of it — against a signed catalog request between the same two nodes through the same management API.
  The provider's node runs each query in a worker process of its own, started ahead of time (one of its two
  spares, started when the table is published: the interpreter's start, isolated and with the standard library
  alone, is off the query's path, back-to-back queries included).

    python benchmarks/sandbox.py
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.logging import configure  # noqa: E402
from connector.protocol import sandbox as sb  # noqa: E402
from connector.services.sandbox_engine import prepare_table, run_query  # noqa: E402
from connector.testing import NodeFactory  # noqa: E402
from usage_policies import templates  # noqa: E402

ROWS = 1_000_000
SMALL_ROWS = 2_000
ROUNDS = 5
LATENCY_SAMPLES = 40
REGIONS = [f"region-{i:02d}" for i in range(20)]
QUERY = "SELECT region, avg(defect_rate) FROM data GROUP BY region"
SMALL_QUERY = "SELECT region, count(*) FROM data GROUP BY region"


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(1)
    with path.open("w") as out:
        out.write("region,defect_rate,plant_id\n")
        batch = []
        for i in range(rows):
            batch.append(f"{REGIONS[i % len(REGIONS)]},{rng.random() * 0.2:.4f},{i % 97}\n")
            if len(batch) == 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))


def bare(table: Path) -> float:
    """Seconds for the query in bare sqlite3 on the same file (opened read-only, as the worker does)."""
    start = time.perf_counter()
    db = sqlite3.connect(f"{table.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute(QUERY).fetchall()
    finally:
        db.close()
    assert len(rows) == len(REGIONS)
    return time.perf_counter() - start


async def sandboxed(table: Path, schema: sb.TableSchema, terms: sb.SandboxTerms) -> float:
    """Seconds for the query as the provider runs it: check, worker process, privacy."""
    start = time.perf_counter()
    checked = sb.check_query(QUERY, {}, terms, schema)
    rows = await run_query(table, checked, timeout_s=60)
    result = sb.apply_privacy(checked, rows, terms, random.SystemRandom())
    assert len(result.rows) == len(REGIONS)
    return time.perf_counter() - start


async def groupby_round_trips(root: Path) -> tuple[list[float], list[float]]:
    csv, table = root / "big.csv", root / "big.db"
    started = time.perf_counter()
    write_csv(csv, ROWS)
    schema = await asyncio.to_thread(prepare_table, csv, table, declared={"defect_rate": (0.0, 1.0)},
                                     max_rows=ROWS)
    print(f"{ROWS} rows imported in {time.perf_counter() - started:.1f} s (CSV written and prepared; publish time)")
    terms = sb.SandboxTerms(epsilon_per_query=1.0, epsilon_total=1e9)
    bare(table)  # the file in the page cache for both
    bares, ours = [], []
    for _ in range(ROUNDS):
        bares.append(bare(table))
        ours.append(await sandboxed(table, schema, terms))
    return bares, ours


async def latency(root: Path) -> tuple[list[float], list[float]]:
    configure("warning")
    nodes = NodeFactory(root / "nodes", validate=False)
    try:
        provider = await nodes.start("acme", management_rate_per_s=1e6, management_burst=10**6,
                                     dsp_rate_per_s=1e6, dsp_burst=10**6)
        consumer = await nodes.start("parts", management_rate_per_s=1e6, management_burst=10**6)
        folder = provider.data_dir / "files" / provider.participant.name
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "small.csv", SMALL_ROWS)
        await provider.client.add_asset({"id": "small", "dataAddress": {"type": "File", "path": "small.csv"},
                                         "sandbox": True, "sandboxBounds": {"defect_rate": [0, 1]}})
        await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
        # Epsilon 1 per query: with much less, the noise on each group's count (100 rows) would hold every group
        # back (a group leaves on its noisy count); the total only has to be large enough for every query.
        await provider.client.add_policy("compute", templates.sandbox("small", epsilon_per_query=1,
                                                                      epsilon_total=1_000_000))
        await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="compute",
                                                      assets=["small"])
        catalog = await consumer.client.catalog(provider.public_url)
        started = await consumer.client.negotiate(provider.public_url, catalog["dataset"][0]["hasPolicy"][0]["@id"])
        agreement = (await consumer.client.negotiation(started["id"], wait_s=15))["agreement"]["@id"]
        for _ in range(3):  # warm: connections open, the policy compiled, the DID documents cached
            await consumer.client.query(agreement, SMALL_QUERY)
            await consumer.client.catalog(provider.public_url)
        queries, catalogs = [], []
        for _ in range(LATENCY_SAMPLES):
            start = time.perf_counter()
            answer = await consumer.client.query(agreement, SMALL_QUERY)
            queries.append(time.perf_counter() - start)
            assert answer["result"]["rows"]
            start = time.perf_counter()
            await consumer.client.catalog(provider.public_url)
            catalogs.append(time.perf_counter() - start)
        return queries, catalogs
    finally:
        await nodes.close()


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bares, ours = await groupby_round_trips(root)
        queries, catalogs = await latency(root)

    ratio = statistics.median([b / o for b, o in zip(bares, ours, strict=True)])
    print(f"rounds: {ROUNDS} (medians; min-max in brackets)")
    print(f"bare sqlite3, {ROWS} rows: {statistics.median(bares) * 1000:.0f} ms "
          f"[{min(bares) * 1000:.0f}-{max(bares) * 1000:.0f}]")
    print(f"sandbox (check + worker process + privacy): {statistics.median(ours) * 1000:.0f} ms "
          f"[{min(ours) * 1000:.0f}-{max(ours) * 1000:.0f}]")
    q50, c50 = statistics.median(queries) * 1000, statistics.median(catalogs) * 1000
    print(f"end to end over DSP ({LATENCY_SAMPLES} each, interleaved): query p50 {q50:.1f} ms (max "
          f"{max(queries) * 1000:.1f}); signed catalog request p50 {c50:.1f} ms (max {max(catalogs) * 1000:.1f})")
    print(f"TARGET sandbox_groupby_vs_bare: {1 / statistics.median(ours):.2f} queries/s; baseline "
          f"{1 / statistics.median(bares):.2f} queries/s; ratio {ratio:.2f}; goal >= 0.5: "
          f"{'met' if ratio >= 0.5 else 'missed'}")
    print(f"TARGET sandbox_query_p50_vs_catalog: {q50:.1f} ms; baseline {c50:.1f} ms; ratio {q50 / c50:.2f}; "
          f"goal <= 5: {'met' if q50 / c50 <= 5 else 'missed'}")


if __name__ == "__main__":
    asyncio.run(main())
