"""One node hosting 1, 100 and 1,000 participants: idle memory and catalog latency.

For each size the node runs in its own process (``tds serve``), freshly started from its data folder, so
the memory is what hosting that many participants costs at rest (all of them loaded, keys unsealed):
- idle RSS once it answers (after a short settle), and again after every participant has served its DID
  document and signed self-description once (these are cached per participant, so this is the steady
  state); the cost per added participant, ``(RSS(1000) - RSS(1)) / 999``, uses the second, larger figure,
  against the goal of under 100 KiB each;
- catalog latency: the median of signed DSP catalog requests (RFC 9421, a did:key caller, 20 datasets) to
  the first participant, sequential over one keep-alive connection. The baseline is the same request to
  the same node hosting one participant (goal: at most 1.5 times that with 1,000).

    python benchmarks/tenancy.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import msgspec  # noqa: E402

from connector.bootstrap import init_node, write_secret_text  # noqa: E402
from connector.config import CONFIG_FILE, parse_config, render_config  # noqa: E402
from connector.identity import did as dids  # noqa: E402
from connector.identity.keys import ParticipantKeys  # noqa: E402
from connector.net import signing  # noqa: E402
from connector.node import Node  # noqa: E402
from connector.protocol import messages as m  # noqa: E402
from connector.store.records import Asset, ContractDefinition, PolicyRecord  # noqa: E402
from connector.testing import free_port  # noqa: E402

SIZES = (1, 100, 1000)
REQUESTS = 400
WARMUP = 200
OPEN = {"@id": "urn:tds:policy:open", "@type": "Set", "permission": [{"action": "use"}]}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def grow(data_dir: Path, count: int) -> None:
    """Add participants until the node hosts *count* (the first one publishes 20 datasets)."""
    node = Node(data_dir)
    await node.start()
    try:
        first = node.participants.first()
        assert first is not None
        if not await node.contracts.entries(first.id, Asset):
            assets = [f"asset-{i:02d}" for i in range(20)]
            for asset_id in assets:
                await node.contracts.add_entry(first.id, Asset(id=asset_id, title=f"Dataset {asset_id}"))
            await node.contracts.add_entry(first.id, PolicyRecord(id="open", policy=OPEN))
            await node.contracts.add_entry(first.id, ContractDefinition(
                id="cd", access_policy_id="open", contract_policy_id="open", assets=assets))
        while len(node.participants) < count:
            n = len(node.participants)
            await node.participants.add(f"sme-{n:04d}", legal_name=f"SME {n} Ltd.", region="CN-GD")
    finally:
        await node.stop()


async def catalog_latency(url: str, caller: ParticipantKeys) -> list[float]:
    did = dids.did_key_for(bytes(caller.verify_key))
    key_id = dids.signing_key_id(did)
    raw = json.dumps(m.encode(m.CatalogRequestMessage())).encode()
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(WARMUP + REQUESTS):
            headers = signing.sign_request("POST", url, raw, key=caller.signing, key_id=key_id, now=time.time(),
                                           headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            async with session.post(url, data=raw, headers=headers) as resp:
                body = await resp.read()
            elapsed = time.perf_counter() - start
            if resp.status != 200 or len(json.loads(body)["dataset"]) != 20:
                raise RuntimeError(f"catalog answered {resp.status}: {body[:200]!r}")
            if i >= WARMUP:
                times.append(elapsed * 1000)
    return times


async def touch_everyone(public: str, names: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for name in names:
            for path in ("did.json", ".well-known/tds/self-description"):
                async with session.get(f"{public}/participants/{name}/{path}") as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"{name}/{path} answered {resp.status}")
                    await resp.read()


def serve_and_measure(data_dir: Path, port: int, caller: ParticipantKeys, first: str,
                      names: list[str]) -> tuple[int, int, float, float]:
    proc = subprocess.Popen([sys.executable, "-m", "connector", "serve", "--dir", str(data_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("node did not start") from None
                time.sleep(0.01)
        time.sleep(1.0)  # settle before reading idle memory
        rss = rss_kib(proc.pid)
        url = f"http://127.0.0.1:{port}/participants/{first}/api/dsp/2025-1/catalog/request"
        times = asyncio.run(catalog_latency(url, caller))
        asyncio.run(touch_everyone(f"http://127.0.0.1:{port}", names))
        time.sleep(1.0)
        warm = rss_kib(proc.pid)
        return rss, warm, statistics.median(times), statistics.quantiles(times, n=10)[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    from connector.logging import configure

    configure("warning")
    started = time.perf_counter()
    caller = ParticipantKeys.generate()
    results: dict[int, tuple[int, int, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp) / "host", free_port()
        result = init_node(data_dir, name="acme", port=port, management_port=free_port(), dev_mode=True)
        # the benchmark is one busy peer, unknown to the node: lift the DSP rate limits out of the way
        config = msgspec.structs.replace(result.config, node=msgspec.structs.replace(
            result.config.node, dsp_rate_per_s=1e6, dsp_burst=10**6, log_level="warning"),
            dsp=msgspec.structs.replace(result.config.dsp, unknown_peer_rate_per_s=1e6, unknown_peer_burst=10**6))
        write_secret_text(data_dir / CONFIG_FILE, render_config(parse_config(render_config(config))))
        for size in SIZES:
            asyncio.run(grow(data_dir, size))
            names = ["acme", *(f"sme-{n:04d}" for n in range(1, size))]
            results[size] = serve_and_measure(data_dir, port, caller, "acme", names)
            rss, warm, median, p90 = results[size]
            print(f"participants {size:5d}: idle RSS {rss / 1024:.1f} MiB, {warm / 1024:.1f} MiB once each has "
                  f"served its documents; catalog median {median:.2f} ms, p90 {p90:.2f} ms ({REQUESTS} requests)")
    low, high = SIZES[0], SIZES[-1]
    per = (results[high][1] - results[low][1]) / (high - low)
    base_rss = results[low][1]
    print(f"TARGET memory_per_participant: {per:.1f} KiB; baseline {base_rss} KiB; ratio {per / base_rss:.4f}; "
          f"goal < 100 KiB: {'met' if per < 100 else 'missed'}")
    base, lat = results[low][2], results[high][2]
    print(f"TARGET catalog_latency_{high}: {lat:.2f} ms; baseline {base:.2f} ms; ratio {lat / base:.2f}; "
          f"goal <= {1.5 * base:.2f} ms: {'met' if lat <= 1.5 * base else 'missed'}")
    print(f"(baselines: the same node hosting {low} participant; whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
