"""Transfers of 1 GiB over loopback between two nodes, verified chunk by chunk and stored in the vault: a
plain pull, then the same bytes classed important (sealed end to end) pulled and pushed.

Both nodes run in their own processes (``tds serve``). Measured: the time from the consumer's transfer
request to COMPLETED (start message, manifest and signed envelope, the stream, per-chunk verification, the
write to the vault, fsync and rename), and both processes' peak RSS (``VmHWM``).

Floors, measured in the same run with bare parts (aiohttp, blake3, AES-256-GCM from ``cryptography``), each
doing what such a transfer must do at the least, in two processes as the nodes do:

- plain pull: a bare aiohttp server streams the file in 1 MiB pieces, each read off the event loop while the
  last one is sent; the receiver takes the body over loopback HTTP as its pieces arrive, hashes every chunk
  (the manifest's chunk size) with BLAKE3, writes the pieces to a new file and fsyncs it at the end;
- sealed pull: the same, the server sealing every chunk with AES-256-GCM (the nodes' end-to-end cipher, same
  chunk size, nonce and associated data per chunk), the receiver putting each chunk together in one buffer and
  opening it before hashing and writing it;
- sealed push: this process reads and seals the chunks (the next one while the last is sent) and POSTs them to
  the bare aiohttp server, which receives them as the sealed pull does, fsyncs, then answers.

The receiver writes at most 256 KiB at a time and begins the write-back of every 8 MiB written, as the nodes do
(``connector.services.vault``: on this machine's file system larger writes cost far more kernel time, and the
final fsync waits for the whole file otherwise), so that the floor is no slower for want of those two.

The bare receiver does its work on its event loop, between two reads: the simplest way, and the fastest on
this machine for one stream (the nodes hand each chunk to a worker thread instead, so that a slow disk never
blocks the event loop that serves everything else). The floors keep no resume point and do not seal at rest;
the nodes also verify each chunk before writing it, seal it for the vault, and commit their resume point as
they go. Floor and node runs are interleaved (floor, node, floor, node, …) and each ratio is the median node
rate over the median floor rate, so that load from elsewhere on the machine falls on both alike.

Goals: the plain pull at least 0.8x its floor, the sealed pull and push at least 0.7x theirs; both nodes under
150 MiB peak RSS (baseline: the node's RSS when idle, before the first transfer).

    python benchmarks/transfer.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from connector.testing import ProcessNode, free_port  # noqa: E402

SIZE = 1024 * 1024 * 1024
MIB = 1024 * 1024
CHUNK = MIB  # the manifest's default chunk size (connector.payload.manifest.DEFAULT_CHUNK)
TAG = 16
GB = 1e9
REPEATS = 4
#: What the node's client reads ahead of the application (connector.net.client.STREAM_BUFFER): the floor
#: gets the same setting, so that it is not held back by aiohttp's 64 KiB default.
READ_BUFFER = MIB
KEY = os.urandom(32)
CONTEXT = b"floor-transfer"


# The bare receiver, as both floors run it (in this process for a pull, in the bare app for a push): the body's
# pieces as they arrived (no joining), each chunk hashed with BLAKE3 as its pieces come and written with them; a
# sealed chunk is put together in one reusable buffer, opened, hashed and written. Then one fsync.
RECEIVER = r"""
import os, struct
from blake3 import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def nonce(i): return bytes(4) + struct.pack(">Q", i)
def aad(i, context): return context + b"\0" + struct.pack(">Q", i)

def write_all(fd, data):
    # At most 256 KiB a write, as the nodes do (connector.services.vault.WRITE_SIZE: 1 MiB writes cost this file
    # system far more kernel time).
    data = memoryview(data)
    while data:
        data = data[os.write(fd, data[:1 << 18]):]

async def receive(content, path, size, chunk, key, context, sealed):
    tag = 16 if sealed else 0
    aes = AESGCM(key)
    chunks = -(-size // chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        index = filled = handed = 0
        joined = memoryview(bytearray(chunk + tag))
        hasher = blake3()
        async for data, _ in content.iter_chunks():
            view = memoryview(data)
            while view:
                wire = min(chunk, size - index * chunk) + tag
                take = min(len(view), wire - filled)
                if sealed:
                    joined[filled:filled + take] = view[:take]
                else:
                    hasher.update(view[:take])
                    write_all(fd, view[:take])
                filled += take
                view = view[take:]
                if filled == wire:
                    if sealed:
                        plain = aes.decrypt(nonce(index), joined[:wire], aad(index, context))
                        blake3(plain).digest()
                        write_all(fd, plain)
                    else:
                        hasher.digest()
                        hasher = blake3()
                    index, filled = index + 1, 0
                    if (index * chunk - handed) >= 8 << 20:  # begin the write-back as the nodes do (vault.py)
                        os.posix_fadvise(fd, handed, index * chunk - handed, os.POSIX_FADV_DONTNEED)
                        handed = index * chunk
        assert index == chunks and not filled, "short body"
        os.fsync(fd)
    finally:
        os.close(fd)
"""

# A bare aiohttp app in its own process: the provider of a pull (GET /plain, GET /sealed) and the inbox of a
# push (POST /inbox?path=…). Same cipher, chunk size, hash and file handling as the floor receiver.
BARE = RECEIVER + r"""
import asyncio, sys
from aiohttp import web
PORT, PATH, SIZE, CHUNK, KEY, CONTEXT = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    bytes.fromhex(sys.argv[5]), sys.argv[6].encode()
TAG = 16
CHUNKS = -(-SIZE // CHUNK)

async def send(resp, read):
    # Each piece read (and sealed) off the event loop, the next one while this one is sent.
    loop = asyncio.get_running_loop()
    ahead = loop.run_in_executor(None, read, 0)
    for i in range(CHUNKS):
        piece = await ahead
        if i + 1 < CHUNKS:
            ahead = loop.run_in_executor(None, read, i + 1)
        await resp.write(piece)

async def plain(request):
    resp = web.StreamResponse(headers={"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    fd = os.open(PATH, os.O_RDONLY)
    try:
        await send(resp, lambda i: os.pread(fd, min(CHUNK, SIZE - i * CHUNK), i * CHUNK))
    finally:
        os.close(fd)
    await resp.write_eof()
    return resp

async def sealed(request):
    resp = web.StreamResponse(headers={"Content-Length": str(SIZE + CHUNKS * TAG),
                                       "Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    fd = os.open(PATH, os.O_RDONLY)
    aes = AESGCM(KEY)
    def read(i):
        return aes.encrypt(nonce(i), os.pread(fd, min(CHUNK, SIZE - i * CHUNK), i * CHUNK), aad(i, CONTEXT))
    try:
        await send(resp, read)
    finally:
        os.close(fd)
    await resp.write_eof()
    return resp

async def inbox(request):
    await receive(request.content, request.query["path"], SIZE, CHUNK, KEY, CONTEXT, sealed=True)
    return web.json_response({"received": SIZE})

app = web.Application(client_max_size=1 << 20, handler_args={"read_bufsize": 1 << 20})
app.add_routes([web.get("/plain", plain), web.get("/sealed", sealed), web.post("/inbox", inbox)])
web.run_app(app, host="127.0.0.1", port=PORT, print=None, access_log=None)
"""
_bare: dict[str, Any] = {}
exec(RECEIVER, _bare)  # the same receiver here, for the pulls
receive, nonce, aad = _bare["receive"], _bare["nonce"], _bare["aad"]


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


class Floor:
    """The bare parts: a bare aiohttp app in its own process, and this process as the other side."""

    def __init__(self, payload: Path, folder: Path) -> None:
        self.payload, self.folder = payload, folder
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.pool = ThreadPoolExecutor(1)

    async def __aenter__(self) -> Floor:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", BARE, str(self.port), str(self.payload), str(SIZE), str(CHUNK), KEY.hex(),
            CONTEXT.decode(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=60))
        deadline = time.monotonic() + 20
        while True:
            try:
                async with self.session.get(f"http://127.0.0.1:{self.port}/nothing") as resp:
                    await resp.read()
                return self
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def __aexit__(self, *_: object) -> None:
        await self.session.close()
        assert self.proc is not None
        self.proc.terminate()
        await self.proc.wait()
        self.pool.shutdown()

    async def pull(self, sealed: bool) -> float:
        """Seconds to receive the file over HTTP, (open,) hash, write and fsync it."""
        target = self.folder / "floor-pull.bin"
        start = time.perf_counter()
        url = f"http://127.0.0.1:{self.port}/{'sealed' if sealed else 'plain'}"
        async with self.session.get(url, read_bufsize=READ_BUFFER) as resp:
            await receive(resp.content, str(target), SIZE, CHUNK, KEY, CONTEXT, sealed)
        elapsed = time.perf_counter() - start
        target.unlink()
        return elapsed

    async def push(self) -> float:
        """Seconds to read and seal the file's chunks, POST them, and have the inbox open, hash, write and
        fsync them."""
        loop = asyncio.get_running_loop()
        target = self.folder / "floor-push.bin"
        aes = AESGCM(KEY)
        chunks = -(-SIZE // CHUNK)

        async def body() -> AsyncIterator[bytes]:
            fd = os.open(self.payload, os.O_RDONLY)

            def read(index: int) -> bytes:
                plain = os.pread(fd, min(CHUNK, SIZE - index * CHUNK), index * CHUNK)
                return aes.encrypt(nonce(index), plain, aad(index, CONTEXT))

            try:  # the next chunk read and sealed while this one is sent
                ahead = loop.run_in_executor(self.pool, read, 0)
                for index in range(chunks):
                    piece = await ahead
                    if index + 1 < chunks:
                        ahead = loop.run_in_executor(self.pool, read, index + 1)
                    yield piece
            finally:
                await ahead
                os.close(fd)

        start = time.perf_counter()
        async with self.session.post(f"http://127.0.0.1:{self.port}/inbox",
                                     params={"path": str(target)}, data=body(),
                                     headers={"Content-Length": str(SIZE + chunks * TAG)}) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()
        elapsed = time.perf_counter() - start
        target.unlink()
        return elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tds-bench-") as tmp:
        root = Path(tmp)
        provider = ProcessNode(root, "acme")
        consumer = ProcessNode(root, "parts")
        payload = provider.data_dir / "files" / "acme" / "payload.bin"
        payload.parent.mkdir(parents=True, exist_ok=True)
        write_payload(payload)
        os.sync()  # measure the transfers, not the write-back of the payload just generated
        times: dict[str, list[float]] = {k: [] for k in ("plain", "plain floor", "sealed pull", "sealed pull floor",
                                                          "sealed push", "sealed push floor")}
        try:
            await provider.start()
            await consumer.start()
            idle = {"provider": rss(provider.process.pid, "VmRSS"), "consumer": rss(consumer.process.pid, "VmRSS")}
            started = time.perf_counter()
            await provider.client.add_asset({"id": "payload", "dataAddress": {"type": "File", "path": "payload.bin"}})
            manifest_s = time.perf_counter() - started
            # The same bytes as data classed important: sealed end to end, decrypted and verified per chunk.
            await provider.client.add_asset({"id": "payload-sealed", "dataClass": "important",
                                             "dataAddress": {"type": "File", "path": "payload.bin"}})
            await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
            for cd, asset in (("cd", "payload"), ("cd-sealed", "payload-sealed")):
                await provider.client.add_contract_definition(cd, access_policy_id="open",
                                                              contract_policy_id="open", assets=[asset])

            async def agree(asset_id: str) -> str:
                catalog = await consumer.client.catalog(provider.public_url)
                dataset = next(d for d in catalog["dataset"] if str(d["@id"]).rsplit(":", 1)[-1] == asset_id)
                negotiation = await consumer.client.negotiate(provider.public_url, dataset["hasPolicy"][0]["@id"])
                return str((await consumer.client.negotiation(negotiation["id"], wait_s=30))["agreement"]["@id"])

            async def node_transfer(asset_id: str, push: bool = False) -> float:
                agreement_id = await agree(asset_id)
                os.sync()
                start = time.perf_counter()
                record = await consumer.client.start_transfer(agreement_id, push=push)
                final = await consumer.client.transfer(record["id"], wait_s=110)
                elapsed = time.perf_counter() - start
                assert final["state"] == "COMPLETED", final
                sealed = any(e["kind"] == "sealed" for e in final["history"])
                assert sealed == (asset_id == "payload-sealed"), "sealed end to end exactly when classed important"
                (consumer.data_dir / final["vaultPath"]).unlink()
                return elapsed

            async def floor_run(run: Callable[[], Awaitable[float]]) -> float:
                os.sync()
                return await run()

            async with Floor(payload, consumer.data_dir) as floor:
                for _ in range(REPEATS):
                    times["plain floor"].append(await floor_run(lambda: floor.pull(sealed=False)))
                    times["plain"].append(await node_transfer("payload"))
                    times["sealed pull floor"].append(await floor_run(lambda: floor.pull(sealed=True)))
                    times["sealed pull"].append(await node_transfer("payload-sealed"))
                    times["sealed push floor"].append(await floor_run(floor.push))
                    times["sealed push"].append(await node_transfer("payload-sealed", push=True))
            peak = {"provider": rss(provider.process.pid, "VmHWM"), "consumer": rss(consumer.process.pid, "VmHWM")}
        finally:
            await consumer.stop()
            await provider.stop()

    def rates(name: str) -> list[float]:
        return [SIZE / t / GB for t in times[name]]

    print(f"manifest of {SIZE // MIB} MiB built at registration in {manifest_s:.2f} s; {REPEATS} runs of each, "
          f"floor and node interleaved; GB/s per run:")
    for name in times:
        print(f"  {name:18s} " + "  ".join(f"{r:.2f}" for r in rates(name)))
    for target, name, goal, what in (
            ("transfer_vs_floor", "plain", 0.8, "stream + BLAKE3 + write + fsync"),
            ("sealed_pull_vs_floor", "sealed pull", 0.7, "AES-256-GCM seal + stream + open + BLAKE3 + write + fsync"),
            ("sealed_push_vs_floor", "sealed push", 0.7, "AES-256-GCM seal + POST + open + BLAKE3 + write + fsync")):
        node, base = statistics.median(rates(name)), statistics.median(rates(f"{name} floor"))
        ratio = node / base
        print(f"TARGET {target}: {node:.2f} GB/s; baseline {base:.2f} GB/s ({what}, bare); ratio {ratio:.2f}; "
              f"goal >= {goal}x floor: {'met' if ratio >= goal else 'missed'}")
    for role in ("consumer", "provider"):
        print(f"TARGET {role}_peak_rss: {peak[role] / MIB:.1f} MiB; baseline {idle[role] / MIB:.1f} MiB (idle); "
              f"ratio {peak[role] / idle[role]:.2f}; goal < 150 MiB: {'met' if peak[role] < 150 * MIB else 'missed'}")


if __name__ == "__main__":
    asyncio.run(main())
