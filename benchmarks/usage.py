"""Permitted uses per second through the node's usage service: decision + durable log + counter.

In-process (no payload bytes): sequential, and with 64 concurrent callers; the HTTP API's cost on its own
line. Baseline in the same run: a bare Ed25519 signature plus one SQLite insert committed with
``synchronous=FULL`` per use (what "durable and signed" costs without any policy or chaining).

    python benchmarks/usage.py
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nacl.signing import SigningKey  # noqa: E402

from connector.bootstrap import init_node  # noqa: E402
from connector.logging import configure  # noqa: E402
from connector.node import Node  # noqa: E402
from connector.protocol.agreement_lifecycle import AgreementState  # noqa: E402
from connector.protocol.negotiation import Role  # noqa: E402
from connector.store.records import AgreementRecord, to_row  # noqa: E402
from connector.testing import free_port  # noqa: E402
from usage_policies import templates  # noqa: E402

SEQUENTIAL = 1500
CONCURRENT = 64
TOTAL = 12000


def baseline(path: Path, n: int) -> float:
    key = SigningKey.generate()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, entry BLOB, sig BLOB)")
    start = time.perf_counter()
    for i in range(n):
        entry = f'{{"seq":{i},"action":"use","purpose":"R&D","decision":"permit"}}'.encode()
        sig = key.sign(entry).signature
        db.execute("BEGIN")
        db.execute("INSERT INTO log (entry, sig) VALUES (?, ?)", (entry, sig))
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    db.close()
    return rate


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base_rate = baseline(root / "baseline.db", SEQUENTIAL)
        result = init_node(root / "node", name="bench", port=free_port(), management_port=free_port(), dev_mode=True)
        node = Node(root / "node", result.config)
        await node.start()
        try:
            participant = node.participants.first()
            assert participant is not None
            policy = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 10**9),
                                       templates.log_each_use("qi"))
            agreement = {**policy, "@id": "urn:uuid:bench", "@type": "Agreement", "assigner": "did:web:p",
                         "assignee": participant.did, "timestamp": "2026-01-01T00:00:00Z"}
            record = AgreementRecord(id="urn:uuid:bench", negotiation_id="n", role=Role.CONSUMER,
                                     provider_did="did:web:p", consumer_did=participant.did, asset_id="qi",
                                     agreement=agreement, state=AgreementState.FINALIZED)
            row = to_row(record, participant_id=participant.id)
            await node.store.write(lambda db: db.execute(
                f"INSERT INTO agreements ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                list(row.values())))
            counter = iter(range(10**9))

            async def one() -> None:
                outcome = await node.usage.use(participant, application="bench", agreement_id="urn:uuid:bench",
                                               action="use", purpose="R&D", use_id=f"u{next(counter)}")
                assert outcome.permitted, outcome.reasons

            for _ in range(100):
                await one()
            start = time.perf_counter()
            for _ in range(SEQUENTIAL):
                await one()
            sequential = SEQUENTIAL / (time.perf_counter() - start)
            sem = asyncio.Semaphore(CONCURRENT)

            async def limited() -> None:
                async with sem:
                    await one()

            start = time.perf_counter()
            await asyncio.gather(*(limited() for _ in range(TOTAL)))
            concurrent = TOTAL / (time.perf_counter() - start)
            commits, jobs = node.store.commits, node.store.jobs

            from connector.client import ManagementClient

            token = (root / "node" / "management.token").read_text().strip()
            async with ManagementClient(node.management_url, token) as client:
                start = time.perf_counter()
                n_http = 1000

                async def http_one(i: int) -> None:
                    async with sem:
                        r = await client.use("urn:uuid:bench", f"h{i}", purpose="R&D")
                        assert r["decision"] == "permit"

                await asyncio.gather(*(http_one(i) for i in range(n_http)))
                http_rate = n_http / (time.perf_counter() - start)
        finally:
            await node.stop()
    print(f"usage service: {sequential:.0f} uses/s sequential, {concurrent:.0f} uses/s with {CONCURRENT} callers "
          f"({jobs} writes in {commits} commits); through the HTTP API with {CONCURRENT} callers: {http_rate:.0f}/s")
    print(f"baseline: Ed25519 sign + SQLite insert with synchronous=FULL, one commit each: {base_rate:.0f}/s")
    print(f"TARGET usage_concurrent: {concurrent:.0f} uses/s; baseline {base_rate:.0f} uses/s; "
          f"ratio {concurrent / base_rate:.2f}; goal >= 20000 uses/s: {'met' if concurrent >= 20000 else 'missed'}")
    print(f"TARGET usage_sequential: {sequential:.0f} uses/s; baseline {base_rate:.0f} uses/s; "
          f"ratio {sequential / base_rate:.2f}; goal >= 3000 uses/s: {'met' if sequential >= 3000 else 'missed'}")


if __name__ == "__main__":
    asyncio.run(main())
