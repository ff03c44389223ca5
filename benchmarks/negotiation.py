"""Contract negotiation latency and throughput between two nodes on loopback.

The provider runs in its own process (``tds serve``); the consumer runs in this one. Measured:
- latency of one full negotiation, from the consumer's initial request to FINALIZED on the consumer
  (the provider commits FINALIZED before it sends the event), p50 and p95 over sequential runs;
- throughput with 64 negotiations in flight.

Floor, measured in the same run (rounds interleaved with the negotiations, so that load from elsewhere on the
machine falls on both alike): one hop done by bare parts. A POST round trip on loopback to a bare aiohttp server
in its own process, whose handler verifies one Ed25519 signature (PyNaCl) over the body and makes one durable
SQLite insert (WAL, ``synchronous=FULL``, a commit of its own) before it answers; sequentially (its p50) and
with 64 in flight (its rate). A negotiation needs four such hops (request, agreement, verification,
finalization), each signed, verified, and made durable before it is answered (the nodes fsync the commit of
each message with the move that answers it, and the consumer its opening request: five fsyncs in a row).
Goals: a negotiation's p50 at most 6x the hop's p50, and with 64 in flight at least 0.15x the hop's rate.
The figures are the p50 over all rounds' sequential runs and the medians of the rounds' rates; each round's
rates are printed too (the floor's swing with the disk's fsync time, which other work on the machine moves).

    python benchmarks/negotiation.py
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import msgspec  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from connector.bootstrap import InitResult, init_node, write_secret_text  # noqa: E402
from connector.client import ManagementClient  # noqa: E402
from connector.config import CONFIG_FILE, Config, parse_config, render_config  # noqa: E402
from connector.logging import configure  # noqa: E402
from connector.node import Node  # noqa: E402
from connector.store.records import NegotiationRecord  # noqa: E402
from connector.testing import free_port  # noqa: E402

ROUNDS = 5
SEQUENTIAL = 60
CONCURRENT = 64
TOTAL_CONCURRENT = 256
HOPS_SEQUENTIAL = 150
HOPS_CONCURRENT = 600
P50_GOAL = 6.0
THROUGHPUT_GOAL = 0.15

#: The floor's server: verify the body's Ed25519 signature, insert one row durably, answer.
BARE_SERVER = """
import sqlite3, sys
from aiohttp import web
from nacl.signing import VerifyKey
key = VerifyKey(bytes.fromhex(sys.argv[2]))
db = sqlite3.connect(sys.argv[3], isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = FULL")
db.execute("CREATE TABLE IF NOT EXISTS hops (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
async def handle(request):
    body = await request.read()
    key.verify(body, bytes.fromhex(request.headers["X-Signature"]))
    db.execute("BEGIN")
    db.execute("INSERT INTO hops (body) VALUES (?)", [body])
    db.execute("COMMIT")
    return web.json_response({"ok": True})
app = web.Application()
app.add_routes([web.post("/hop", handle)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

#: A negotiation message's size: the verification message with its Data Integrity proof.
HOP_BODY = (b'{"@context":["https://w3id.org/dspace/2025/1/context.jsonld"],"@type":"ContractAgreementVerification'
            b'Message","providerPid":"urn:uuid:' + b"0" * 36 + b'","consumerPid":"urn:uuid:' + b"1" * 36 + b'",'
            b'"proof":{"type":"DataIntegrityProof","cryptosuite":"eddsa-jcs-2022","proofValue":"z' + b"5" * 86 + b'"}}')


def unthrottled(data_dir: Path, result: InitResult) -> Config:
    """The node's config with the DSP request budgets lifted out of the way (the benchmark is one busy peer; a
    data space's operators size these budgets to their peers), written back to its folder."""
    config = msgspec.structs.replace(
        result.config, node=msgspec.structs.replace(result.config.node, dsp_rate_per_s=1e6, dsp_burst=10**6),
        dsp=msgspec.structs.replace(result.config.dsp, unknown_peer_rate_per_s=1e6, unknown_peer_burst=10**6))
    config = parse_config(render_config(config))
    write_secret_text(data_dir / CONFIG_FILE, render_config(config))
    return config


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not come up")


class Floor:
    """One hop done by bare parts (see the module docstring), from a client session of its own."""

    def __init__(self, session: aiohttp.ClientSession, url: str, key: SigningKey) -> None:
        self.session, self.url, self.key = session, url, key

    async def hop(self) -> float:
        start = time.perf_counter()
        signature = self.key.sign(HOP_BODY).signature.hex()
        async with self.session.post(self.url, data=HOP_BODY, headers={
                "Content-Type": "application/json", "X-Signature": signature}) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        return time.perf_counter() - start

    async def sequential(self, n: int) -> list[float]:
        return [await self.hop() for _ in range(n)]

    async def rate(self, n: int) -> float:
        return await in_flight(self.hop, n)


async def publish_open_offer(admin: ManagementClient) -> None:
    """The provider's asset ``bench-data`` offered under an open policy (``use``, no constraint)."""
    await admin.add_asset({"id": "bench-data"})
    await admin.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await admin.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                        assets=["bench-data"])


async def negotiator(consumer: Node, dsp: str) -> Callable[[], Awaitable[NegotiationRecord | None]]:
    """After the consumer's handshake with the provider at *dsp* and one read of its open offer: a function that
    negotiates the offer once more and answers the consumer's record as it ended (None: not within 30 s)."""
    participant = consumer.participants.first()
    assert participant is not None
    subject, _ = await consumer.federation.verify_peer(participant, dsp)
    dataset = await consumer.client.request("GET", f"{dsp}/catalog/datasets/bench-data", signer=participant.signer)
    offer_id = dataset.json()["hasPolicy"][0]["@id"]
    offer, asset_id, _ = await consumer.negotiations._find_offer(participant, dsp, offer_id)

    async def negotiate() -> NegotiationRecord | None:
        record = await consumer.negotiations.request(participant, dsp, subject.id, offer, offer_id, asset_id)
        return await consumer.negotiations.wait(participant.id, record.id, 30)

    return negotiate


async def in_flight(fn: object, n: int) -> float:
    """Run *fn* *n* times with :data:`CONCURRENT` in flight; return the rate per second."""
    sem = asyncio.Semaphore(CONCURRENT)

    async def limited() -> None:
        async with sem:
            await fn()  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(limited() for _ in range(n)))
    return n / (time.perf_counter() - start)


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        p_port = free_port()
        unthrottled(root / "provider", init_node(root / "provider", name="provider", port=p_port,
                                                 management_port=free_port(), dev_mode=True))
        consumer_config = unthrottled(root / "consumer", init_node(
            root / "consumer", name="consumer", port=free_port(), management_port=free_port(), dev_mode=True))
        provider_proc = spawn(["-m", "connector", "serve", "--dir", str(root / "provider")])
        floor_key = SigningKey.generate()
        floor_port = free_port()
        floor_proc = spawn(["-c", BARE_SERVER, str(floor_port), bytes(floor_key.verify_key).hex(),
                            str(root / "floor.db")])
        consumer = Node(root / "consumer", consumer_config)
        await consumer.start()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        try:
            wait_http(f"http://127.0.0.1:{p_port}/healthz", provider_proc)
            wait_http(f"http://127.0.0.1:{floor_port}/hop", floor_proc)
            floor = Floor(session, f"http://127.0.0.1:{floor_port}/hop", floor_key)
            async with ManagementClient.for_data_dir(root / "provider") as admin:
                await publish_open_offer(admin)
            once = await negotiator(consumer, f"http://127.0.0.1:{p_port}/participants/provider/api/dsp/2025-1")

            async def negotiate() -> float:
                start = time.perf_counter()
                final = await once()
                assert final is not None and final.state == "FINALIZED", final
                return time.perf_counter() - start

            for _ in range(20):
                await negotiate()
            await floor.sequential(50)
            latencies: list[float] = []
            hops: list[float] = []
            rates: list[float] = []
            hop_rates: list[float] = []
            for _ in range(ROUNDS):  # interleaved: floor, negotiations, floor, negotiations …
                hops += await floor.sequential(HOPS_SEQUENTIAL)
                latencies += [await negotiate() for _ in range(SEQUENTIAL)]
                hop_rates.append(await floor.rate(HOPS_CONCURRENT))
                rates.append(await in_flight(negotiate, TOTAL_CONCURRENT))
        finally:
            await session.close()
            await consumer.stop()
            for proc in (provider_proc, floor_proc):
                proc.terminate()
                proc.wait(timeout=10)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    hop_p50 = statistics.median(hops) * 1000
    throughput, hop_rate = statistics.median(rates), statistics.median(hop_rates)
    print(f"negotiation p50 {p50:.2f} ms, p95 {p95:.2f} ms ({ROUNDS} x {SEQUENTIAL} sequential); "
          f"{throughput:.0f}/s with {CONCURRENT} in flight (median of {ROUNDS} rounds: "
          f"{', '.join(f'{r:.0f}' for r in rates)})")
    print(f"floor: one hop (signed POST, Ed25519 verify, durable insert) p50 {hop_p50:.2f} ms sequential; "
          f"{hop_rate:.0f}/s with {CONCURRENT} in flight (rounds: {', '.join(f'{r:.0f}' for r in hop_rates)})")
    ratio = p50 / hop_p50
    print(f"TARGET negotiation_p50: {p50:.2f} ms; baseline {hop_p50:.2f} ms; ratio {ratio:.2f}; "
          f"goal <= {P50_GOAL:g}x: {'met' if ratio <= P50_GOAL else 'missed'}")
    ratio = throughput / hop_rate
    print(f"TARGET negotiation_throughput: {throughput:.0f} negotiations/s; baseline {hop_rate:.0f} hops/s; "
          f"ratio {ratio:.3f}; goal >= {THROUGHPUT_GOAL:g}x: {'met' if ratio >= THROUGHPUT_GOAL else 'missed'}")


if __name__ == "__main__":
    asyncio.run(main())
