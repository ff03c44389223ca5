"""Transfers of 1 GiB over loopback between two nodes, verified chunk by chunk: a plain pull, then the
same bytes classed important (sealed end to end) pulled and pushed.

Both nodes run in their own processes (``tds serve``). Measured: the time from the consumer's transfer
request to COMPLETED (start message, manifest and signed envelope, the stream, per-chunk verification,
the write to the vault, fsync and rename), and both processes' peak RSS (``VmHWM``).

Floor, measured in the same run: the same bytes streamed by a bare aiohttp server in its own process
(1 MiB reads, as the provider does) to a receiver in this process that hashes every byte with the
manifest's algorithm (BLAKE3) and keeps nothing; for the sealed transfers the receiver also seals every
chunk with AES-256-GCM (the nodes' end-to-end cipher). Goals: at least 0.7x that floor (plain and
sealed) and at least 1 GB/s; both nodes under 150 MiB peak RSS (baseline: the node's RSS when idle,
before the transfer). The nodes also seal what they store (the vault at rest); the floor does not.

    python benchmarks/transfer.py
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blake3 import blake3  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from connector.testing import ProcessNode, free_port  # noqa: E402

SIZE = 1024 * 1024 * 1024
KEY, NONCE = os.urandom(32), os.urandom(12)
MIB = 1024 * 1024
GB = 1e9

BARE_SERVER = """
import os, sys
from aiohttp import web
PATH, SIZE = sys.argv[2], int(sys.argv[3])
async def handle(request):
    resp = web.StreamResponse(headers={"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    loop = request.app.loop if hasattr(request.app, "loop") else None
    import asyncio
    loop = asyncio.get_running_loop()
    fd = os.open(PATH, os.O_RDONLY)
    try:
        pos = 0
        while pos < SIZE:
            piece = await loop.run_in_executor(None, os.pread, fd, min(1 << 20, SIZE - pos), pos)
            await resp.write(piece)
            pos += len(piece)
    finally:
        os.close(fd)
    await resp.write_eof()
    return resp
app = web.Application()
app.add_routes([web.get("/data", handle)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def rss(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def write_payload(path: Path) -> None:
    block = os.urandom(8 * MIB)
    with open(path, "wb") as f:
        for i in range(SIZE // len(block)):
            f.write(bytes([i % 256]) + block[1:])


async def floor(path: Path, *, aead: bool = False) -> float:
    import aiohttp

    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", BARE_SERVER, str(port), str(path), str(SIZE),
                                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/nothing") as resp:
                        await resp.read()
                    break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            best = 0.0
            for _ in range(2):
                start = time.perf_counter()
                digest = blake3()
                async with session.get(f"http://127.0.0.1:{port}/data") as resp:
                    async for chunk in resp.content.iter_chunked(MIB):
                        digest.update(chunk)
                        if aead:  # what sealing costs per chunk (AES-256-GCM over the same bytes, as the nodes)
                            AESGCM(KEY).encrypt(NONCE, chunk, b"aad")
                best = max(best, SIZE / (time.perf_counter() - start))
            return best
    finally:
        proc.terminate()
        await proc.wait()


def disk_write(folder: Path) -> float:
    """What this disk takes: 1 GiB in 1 MiB writes to a new file, then fsync (context for the pull's rate)."""
    block = os.urandom(MIB)
    path = folder / "disk-write.bin"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(SIZE // MIB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    rate = SIZE / (time.perf_counter() - start)
    path.unlink()
    return rate


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tds-bench-") as tmp:
        root = Path(tmp)
        provider = ProcessNode(root, "acme")
        consumer = ProcessNode(root, "parts")
        payload = provider.data_dir / "files" / "acme" / "payload.bin"
        payload.parent.mkdir(parents=True, exist_ok=True)
        write_payload(payload)
        os.sync()  # measure the transfer, not the write-back of the payload just generated
        try:
            await provider.start()
            await consumer.start()
            idle = {"provider": rss(provider.process.pid, "VmRSS"), "consumer": rss(consumer.process.pid, "VmRSS")}
            started = time.perf_counter()
            await provider.client.add_asset({"id": "payload", "dataAddress": {"type": "File", "path": "payload.bin"}})
            manifest_s = time.perf_counter() - started
            await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
            await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                          assets=["payload"])
            catalog = await consumer.client.catalog(provider.public_url)
            offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
            negotiation = await consumer.client.negotiate(provider.public_url, offer)
            agreement = (await consumer.client.negotiation(negotiation["id"], wait_s=30))["agreement"]["@id"]
            disk = disk_write(consumer.data_dir)
            os.sync()
            start = time.perf_counter()
            record = await consumer.client.start_transfer(agreement)
            final = await consumer.client.transfer(record["id"], wait_s=110)
            elapsed = time.perf_counter() - start
            assert final["state"] == "COMPLETED", final
            peak = {"provider": rss(provider.process.pid, "VmHWM"), "consumer": rss(consumer.process.pid, "VmHWM")}
            (consumer.data_dir / final["vaultPath"]).unlink()
            # The same bytes as data classed important: sealed end to end, decrypted and verified per chunk.
            await provider.client.add_asset({"id": "payload-sealed", "dataClass": "important",
                                             "dataAddress": {"type": "File", "path": "payload.bin"}})
            await provider.client.add_contract_definition("cd-sealed", access_policy_id="open",
                                                          contract_policy_id="open", assets=["payload-sealed"])
            async def agree(asset_id: str) -> str:
                dataset = await consumer.client.catalog(provider.public_url)
                offer = next(d for d in dataset["dataset"] if d["@id"] == asset_id)["hasPolicy"][0]["@id"]
                negotiation = await consumer.client.negotiate(provider.public_url, offer)
                return str((await consumer.client.negotiation(negotiation["id"], wait_s=30))["agreement"]["@id"])

            async def sealed_transfer(push: bool) -> float:
                agreement_id = await agree("payload-sealed")
                os.sync()
                start = time.perf_counter()
                record = await consumer.client.start_transfer(agreement_id, push=push)
                final = await consumer.client.transfer(record["id"], wait_s=110)
                elapsed = time.perf_counter() - start
                assert final["state"] == "COMPLETED", final
                assert any(e["kind"] == "sealed" for e in final["history"]), "the transfer was not sealed"
                (consumer.data_dir / final["vaultPath"]).unlink()
                return elapsed

            sealed_elapsed = await sealed_transfer(push=False)
            # The same again, pushed by the provider to the consumer's inbox (HttpData-PUSH).
            push_elapsed = await sealed_transfer(push=True)
        finally:
            await consumer.stop()
            await provider.stop()
        base = await floor(payload)
        sealed_base = await floor(payload, aead=True)
    rate = SIZE / elapsed
    sealed_rate = SIZE / sealed_elapsed
    push_rate = SIZE / push_elapsed
    print(f"manifest of {SIZE // MIB} MiB built at registration in {manifest_s:.2f} s; pull of {SIZE // MIB} MiB, "
          f"verified and stored, in {elapsed:.2f} s")
    print(f"floor: plain aiohttp stream hashed with BLAKE3 by the receiver, {base / GB:.2f} GB/s (best of 2); "
          f"the floor keeps nothing, while the pull also writes to disk, which took 1 GiB (new file, 1 MiB "
          f"writes, fsync) at {disk / GB:.2f} GB/s just before the pull")
    print(f"TARGET transfer_vs_floor: {rate / GB:.2f} GB/s; baseline {base / GB:.2f} GB/s; ratio {rate / base:.2f}; "
          f"goal >= 0.7x floor: {'met' if rate >= 0.7 * base else 'missed'}")
    print(f"TARGET transfer_throughput: {rate / GB:.2f} GB/s; baseline {base / GB:.2f} GB/s; ratio {rate / base:.2f}; "
          f"goal >= 1 GB/s: {'met' if rate >= GB else 'missed'}")
    print(f"TARGET sealed_pull_vs_floor: {sealed_rate / GB:.2f} GB/s; baseline {sealed_base / GB:.2f} GB/s "
          f"(stream + BLAKE3 + AES-256-GCM); ratio {sealed_rate / sealed_base:.2f}; goal >= 0.7x floor: "
          f"{'met' if sealed_rate >= 0.7 * sealed_base else 'missed'}")
    print(f"TARGET sealed_push_vs_floor: {push_rate / GB:.2f} GB/s; baseline {sealed_base / GB:.2f} GB/s "
          f"(stream + BLAKE3 + AES-256-GCM); ratio {push_rate / sealed_base:.2f}; goal >= 0.7x floor: "
          f"{'met' if push_rate >= 0.7 * sealed_base else 'missed'}")
    for role in ("consumer", "provider"):
        print(f"TARGET {role}_peak_rss: {peak[role] / MIB:.1f} MiB; baseline {idle[role] / MIB:.1f} MiB (idle); "
              f"ratio {peak[role] / idle[role]:.2f}; goal < 150 MiB: {'met' if peak[role] < 150 * MIB else 'missed'}")


if __name__ == "__main__":
    asyncio.run(main())
