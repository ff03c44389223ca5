"""Contract negotiation latency and throughput between two nodes on loopback.

The provider runs in its own process (``tds serve``); the consumer runs in this one. Measured:
- latency of one full negotiation, from the consumer's initial request to FINALIZED on the consumer
  (the provider commits FINALIZED before it sends the event), p50 and p95 over sequential runs;
- throughput with 64 negotiations in flight.
Baseline, measured in the same run: RFC 9421-signed JSON POST round trips to a bare aiohttp server in
its own process that verifies the signature (sequential rate, and with 64 in flight). A negotiation is
four such messages plus the stores' commits on both sides.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.bootstrap import init_node  # noqa: E402
from connector.logging import configure  # noqa: E402
from connector.node import Node  # noqa: E402
from connector.testing import free_port  # noqa: E402

SEQUENTIAL = 200
CONCURRENT = 64
TOTAL_CONCURRENT = 640

BARE_SERVER = """
import sys, time
from aiohttp import web
from nacl.signing import VerifyKey
from connector.net import signing
key = VerifyKey(bytes.fromhex(sys.argv[2]))
async def handle(request):
    body = await request.read()
    signing.verify_request("POST", f"http://127.0.0.1:{sys.argv[1]}{request.raw_path}", request.headers, body,
                           public_key=key, now=time.time())
    return web.json_response({"ok": True})
app = web.Application()
app.add_routes([web.post("/echo", handle)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


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


async def baseline(consumer: Node) -> tuple[float, float]:
    from nacl.signing import SigningKey

    from connector.identity.keys import Signer

    key = SigningKey.generate()
    port = free_port()
    proc = spawn(["-c", BARE_SERVER, str(port), bytes(key.verify_key).hex()])
    try:
        wait_http(f"http://127.0.0.1:{port}/echo", proc)
        signer = Signer(key, "did:key:bench#bench")
        url = f"http://127.0.0.1:{port}/echo"
        body = {"@type": "ContractAgreementVerificationMessage", "providerPid": "p", "consumerPid": "c"}

        async def one() -> None:
            resp = await consumer.client.request("POST", url, json_body=body, signer=signer)
            assert resp.status == 200, resp.body

        for _ in range(50):
            await one()
        start = time.perf_counter()
        for _ in range(500):
            await one()
        sequential = 500 / (time.perf_counter() - start)
        start = time.perf_counter()
        sem = asyncio.Semaphore(CONCURRENT)

        async def limited() -> None:
            async with sem:
                await one()

        await asyncio.gather(*(limited() for _ in range(3000)))
        concurrent = 3000 / (time.perf_counter() - start)
        return sequential, concurrent
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        p_port = free_port()
        init_node(root / "provider", name="provider", port=p_port, management_port=free_port(), dev_mode=True)
        c = init_node(root / "consumer", name="consumer", port=free_port(), management_port=free_port(),
                      dev_mode=True)
        provider_proc = spawn(["-m", "connector", "serve", "--dir", str(root / "provider")])
        consumer = Node(root / "consumer", c.config)
        await consumer.start()
        try:
            wait_http(f"http://127.0.0.1:{p_port}/healthz", provider_proc)
            from connector.client import ManagementClient

            async with ManagementClient.for_data_dir(root / "provider") as admin:
                await admin.add_asset({"id": "bench-data"})
                await admin.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
                await admin.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                    assets=["bench-data"])
            participant = consumer.participants.first()
            assert participant is not None
            dsp = f"http://127.0.0.1:{p_port}/participants/provider/api/dsp/2025-1"
            subject, _ = await consumer.federation.verify_peer(participant, dsp)
            dataset = await consumer.client.request("GET", f"{dsp}/catalog/datasets/bench-data",
                                                    signer=participant.signer)
            offer_id = dataset.json()["hasPolicy"][0]["@id"]
            offer, asset_id, _ = await consumer.negotiations._find_offer(participant, dsp, offer_id)

            async def negotiate() -> float:
                start = time.perf_counter()
                record = await consumer.negotiations.request(participant, dsp, subject.id, offer, offer_id, asset_id)
                final = await consumer.negotiations.wait(participant.id, record.id, 30)
                assert final is not None and final.state == "FINALIZED", final
                return time.perf_counter() - start

            for _ in range(20):
                await negotiate()
            latencies = sorted([await negotiate() for _ in range(SEQUENTIAL)])
            p50 = statistics.median(latencies) * 1000
            p95 = latencies[int(len(latencies) * 0.95)] * 1000
            sem = asyncio.Semaphore(CONCURRENT)

            async def limited() -> float:
                async with sem:
                    return await negotiate()

            start = time.perf_counter()
            await asyncio.gather(*(limited() for _ in range(TOTAL_CONCURRENT)))
            throughput = TOTAL_CONCURRENT / (time.perf_counter() - start)
            base_seq, base_conc = await baseline(consumer)
        finally:
            await consumer.stop()
            provider_proc.terminate()
            provider_proc.wait(timeout=10)
    base_ms = 1000 / base_seq
    print(f"negotiation p50 {p50:.2f} ms, p95 {p95:.2f} ms ({SEQUENTIAL} sequential); "
          f"{throughput:.0f}/s with {CONCURRENT} in flight ({TOTAL_CONCURRENT} total)")
    print(f"baseline signed POST round trip {base_ms:.2f} ms sequential, {base_conc:.0f}/s with {CONCURRENT} in flight")
    print(f"TARGET negotiation_p50: {p50:.2f} ms; baseline {base_ms:.2f} ms; ratio {p50 / base_ms:.2f}; "
          f"goal <= 15 ms: {'met' if p50 <= 15 else 'missed'}")
    print(f"TARGET negotiation_throughput: {throughput:.0f} negotiations/s; baseline {base_conc:.0f} signed POSTs/s; "
          f"ratio {throughput / base_conc:.3f}; goal >= 400 negotiations/s: {'met' if throughput >= 400 else 'missed'}")


if __name__ == "__main__":
    asyncio.run(main())
