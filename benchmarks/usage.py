"""Permitted uses per second through the node's usage service: decision + durable log + counter.

Measured, each against a baseline taken in the same run (rounds interleaved, medians of the per-round
figures, so that load from elsewhere on the machine falls on both sides alike):

- ``usage_sequential``: one use after another, in-process (no payload bytes), against the bare floor of
  "durable and signed": one Ed25519 signature plus one SQLite insert committed with ``synchronous=FULL`` per
  use, without any policy, chaining or counting;
- ``usage_concurrent``: 64 concurrent callers in-process, against the sequential rate of the same round
  (what sharing commits and signed heads buys), and printed against the floor too;
- ``usage_http``: uses through the management API (``POST /api/management/v1/usage`` with ``deliver: false``)
  from 64 concurrent clients on keep-alive connections in a process of their own, as applications call it,
  against the in-process rate with 64 callers of the same round.

    python benchmarks/usage.py
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from connector.bootstrap import init_node  # noqa: E402
from connector.logging import configure  # noqa: E402
from connector.node import Node  # noqa: E402
from connector.protocol.agreement_lifecycle import AgreementState  # noqa: E402
from connector.protocol.negotiation import Role  # noqa: E402
from connector.store.records import AgreementRecord, to_row  # noqa: E402
from connector.testing import free_port  # noqa: E402
from usage_policies import templates  # noqa: E402

ROUNDS = 5
#: Each round takes turns in this many slices (floor, sequential, concurrent, floor, ...).
SLICES = 10
SEQUENTIAL = 800
CONCURRENT = 64
TOTAL = 6000
HTTP_TOTAL = 3000
AGREEMENT = "urn:uuid:bench"

#: The applications: 64 clients, each on its own keep-alive connection, in a process of their own; a lean HTTP/1.1
#: client (one request at a time per connection), so that the node is measured and not the client. Prints uses
#: per second.
HTTP_CLIENTS = """
import asyncio, json, sys, time
from urllib.parse import urlsplit
url, token, agreement, prefix, total, clients = sys.argv[1:7]
total, clients, parts = int(total), int(clients), urlsplit(url)
def request(name):
    body = json.dumps({"agreementId": agreement, "useId": name, "action": "use", "purpose": "R&D",
                       "deliver": False}).encode()
    return (f"POST {parts.path} HTTP/1.1\\r\\nHost: {parts.netloc}\\r\\nAuthorization: Bearer {token}\\r\\n"
            f"Content-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n").encode() + body
async def one(reader, writer, name):
    writer.write(request(name))
    head = await reader.readuntil(b"\\r\\n\\r\\n")
    length = next(int(line[15:]) for line in head.split(b"\\r\\n") if line[:15].lower() == b"content-length:")
    body = await reader.readexactly(length)
    assert head[9:12] == b"200" and b'"permit"' in body, (head, body)
async def main():
    conns = [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(clients)]
    await asyncio.gather(*(one(r, w, f"{prefix}-warm-{i}") for i, (r, w) in enumerate(conns)))
    left = iter(range(total))
    async def client(r, w):
        for i in left:
            await one(r, w, f"{prefix}-{i}")
    start = time.perf_counter()
    await asyncio.gather(*(client(r, w) for r, w in conns))
    print(total / (time.perf_counter() - start))
    for _, w in conns:
        w.close()
asyncio.run(main())
"""

#: For reference: a bare aiohttp server that reads the same request and answers a JSON body like the node's, with
#: no authentication, no decision and no log: what the HTTP layer alone costs (the ceiling of the API's rate).
BARE_SERVER = """
import json, sys
from aiohttp import web
async def use(request):
    json.loads(await request.read())
    return web.json_response({"decision": "permit", "reasons": ["permission #1 allows this"], "seq": 1,
                              "entryHash": "0" * 64, "repeated": False, "effects": ["count", "log"]})
app = web.Application()
app.add_routes([web.post("/api/management/v1/usage", use)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


class Floor:
    """The bare floor: sign, insert, commit with an fsync, one use at a time."""

    def __init__(self, path: Path) -> None:
        self.key = SigningKey.generate()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, entry BLOB, sig BLOB)")
        self.done = 0

    def seconds(self, n: int) -> float:
        """How long *n* uses take."""
        start = time.perf_counter()
        for _ in range(n):
            self.done += 1
            entry = f'{{"seq":{self.done},"action":"use","purpose":"R&D","decision":"permit"}}'.encode()
            sig = self.key.sign(entry).signature
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO log (entry, sig) VALUES (?, ?)", (entry, sig))
            self.db.execute("COMMIT")
        return time.perf_counter() - start


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = init_node(root / "node", name="bench", port=free_port(), management_port=free_port(), dev_mode=True)
        # The operator of a busy application lifts the management API's fair-use bound (100/s per participant).
        config = msgspec.structs.replace(result.config, node=msgspec.structs.replace(
            result.config.node, management_rate_per_s=1e6, management_burst=10**6))
        node = Node(root / "node", config)
        await node.start()
        try:
            participant = node.participants.first()
            assert participant is not None
            policy = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 10**9),
                                       templates.log_each_use("qi"))
            agreement = {**policy, "@id": AGREEMENT, "@type": "Agreement", "assigner": "did:web:p",
                         "assignee": participant.did, "timestamp": "2026-01-01T00:00:00Z"}
            record = AgreementRecord(id=AGREEMENT, negotiation_id="n", role=Role.CONSUMER,
                                     provider_did="did:web:p", consumer_did=participant.did, asset_id="qi",
                                     agreement=agreement, state=AgreementState.FINALIZED)
            row = to_row(record, participant_id=participant.id)
            await node.store.write(lambda db: db.execute(
                f"INSERT INTO agreements ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                list(row.values())))
            counter = iter(range(10**9))

            async def one() -> None:
                outcome = await node.usage.use(participant, application="bench", agreement_id=AGREEMENT,
                                               action="use", purpose="R&D", use_id=f"u{next(counter)}")
                assert outcome.permitted, outcome.reasons

            async def sequential(n: int) -> float:
                start = time.perf_counter()
                for _ in range(n):
                    await one()
                return time.perf_counter() - start

            async def concurrent(n: int) -> float:
                sem = asyncio.Semaphore(CONCURRENT)

                async def limited() -> None:
                    async with sem:
                        await one()

                start = time.perf_counter()
                await asyncio.gather(*(limited() for _ in range(n)))
                return time.perf_counter() - start

            token = (root / "node" / "management.token").read_text().strip()
            url = f"{node.management_url}/api/management/v1/usage"

            async def http(target: str, prefix: str) -> float:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", HTTP_CLIENTS, target, token, AGREEMENT, prefix, str(HTTP_TOTAL),
                    str(CONCURRENT), stdout=asyncio.subprocess.PIPE, cwd=ROOT)
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
                if proc.returncode != 0:
                    raise RuntimeError("the HTTP clients failed")
                return float(out.decode().strip())

            bare_port = free_port()
            bare = await asyncio.create_subprocess_exec(sys.executable, "-c", BARE_SERVER, str(bare_port), cwd=ROOT)
            try:
                for _ in range(200):  # until the bare server listens
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", bare_port)
                    except OSError:
                        await asyncio.sleep(0.05)
                        continue
                    writer.close()
                    break
                bare_url = f"http://127.0.0.1:{bare_port}/api/management/v1/usage"
                for _ in range(100):  # warm: the chain is loaded, the policy compiled
                    await one()
                floors, seqs, concs, https, bares = [], [], [], [], []
                commits_before = node.store.commits
                for r in range(ROUNDS):
                    # In slices, taking turns, so that whatever else loads the machine falls on all three alike.
                    bare_floor = Floor(root / f"floor{r}.db")
                    taken = {"floor": 0.0, "seq": 0.0, "conc": 0.0}
                    for _ in range(SLICES):
                        taken["floor"] += bare_floor.seconds(SEQUENTIAL // SLICES)
                        taken["seq"] += await sequential(SEQUENTIAL // SLICES)
                        taken["conc"] += await concurrent(TOTAL // SLICES)
                    bare_floor.db.close()
                    floors.append(SEQUENTIAL / taken["floor"])
                    seqs.append(SEQUENTIAL / taken["seq"])
                    concs.append(TOTAL / taken["conc"])
                    https.append(await http(url, f"h{r}"))
                    bares.append(await http(bare_url, f"b{r}"))
                commits = node.store.commits - commits_before
                used = ROUNDS * (SEQUENTIAL + TOTAL + HTTP_TOTAL + CONCURRENT)
            finally:
                bare.terminate()
                await bare.wait()
        finally:
            await node.stop()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    def spread(values: list[float]) -> str:
        return f"{min(values):.0f}-{max(values):.0f}"

    seq_ratio = med([s / f for s, f in zip(seqs, floors, strict=True)])
    conc_ratio = med([c / s for c, s in zip(concs, seqs, strict=True)])
    conc_floor = med([c / f for c, f in zip(concs, floors, strict=True)])
    http_ratio = med([h / c for h, c in zip(https, concs, strict=True)])
    print(f"rounds: {ROUNDS} (medians; min-max in brackets)")
    print(f"floor (Ed25519 sign + SQLite insert, synchronous=FULL, one commit each): {med(floors):.0f}/s "
          f"[{spread(floors)}]")
    print(f"usage service sequential: {med(seqs):.0f} uses/s [{spread(seqs)}]; ratio to the floor {seq_ratio:.2f}")
    print(f"usage service, {CONCURRENT} callers: {med(concs):.0f} uses/s [{spread(concs)}]; {conc_floor:.2f}x the "
          f"floor, {conc_ratio:.2f}x sequential")
    print(f"management API, {CONCURRENT} clients (keep-alive, own process): {med(https):.0f} uses/s "
          f"[{spread(https)}]; {http_ratio:.2f}x in-process with {CONCURRENT} callers, "
          f"{med([h / s for h, s in zip(https, seqs, strict=True)]):.2f}x in-process sequential")
    print(f"for reference, a bare aiohttp server (no auth, no decision, no log) with the same clients: "
          f"{med(bares):.0f}/s [{spread(bares)}]; the API reaches "
          f"{med([h / b for h, b in zip(https, bares, strict=True)]):.2f}x of it")
    print(f"commit groups: {used} uses in {commits} commits ({used / max(commits, 1):.1f} per commit)")
    print(f"TARGET usage_sequential: {med(seqs):.0f} uses/s; baseline {med(floors):.0f} uses/s; "
          f"ratio {seq_ratio:.2f}; goal >= 0.8x floor: {'met' if seq_ratio >= 0.8 else 'missed'}")
    print(f"TARGET usage_concurrent: {med(concs):.0f} uses/s; baseline {med(seqs):.0f} uses/s; "
          f"ratio {conc_ratio:.2f}; goal >= 4x sequential: {'met' if conc_ratio >= 4 else 'missed'}")
    print(f"TARGET usage_http: {med(https):.0f} uses/s; baseline {med(concs):.0f} uses/s; "
          f"ratio {http_ratio:.2f}; goal >= 0.5x in-process: {'met' if http_ratio >= 0.5 else 'missed'}")


if __name__ == "__main__":
    asyncio.run(main())
