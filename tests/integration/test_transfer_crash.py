"""Transfers survive kill -9 of either node, and the consumer's memory stays flat (nodes as subprocesses)."""

from __future__ import annotations

import contextlib
import json

import pytest
from test_transfer import agreed

from connector.client import ClientError
from connector.payload import manifest as manifests
from connector.testing import ProcessNode, store_connection, vault_chunks, vault_sha256

MIB = 1024 * 1024
pytestmark = pytest.mark.slow


@pytest.fixture
async def processes():
    started: list[ProcessNode] = []
    yield started
    for node in started:
        await node.stop()


def matches_its_manifest(data_dir, vault_path) -> bool:
    """The payload's plaintext checked chunk by chunk against the signed manifest saved beside it."""
    path = data_dir / vault_path
    manifest, _, _ = manifests.read_bundle(json.loads(path.with_name(path.name + ".bundle.json").read_text()))
    pending, index = b"", 0
    for piece in vault_chunks(data_dir, vault_path):
        pending += piece
        while index < len(manifest.chunks) and len(pending) >= manifest.chunk_length(index):
            if not manifests.chunk_ok(manifest, index, pending[:manifest.chunk_length(index)]):
                return False
            pending, index = pending[manifest.chunk_length(index):], index + 1
    return index == len(manifest.chunks) and pending == b""


def stored_transfer(node: ProcessNode) -> tuple[str, str, int]:
    with store_connection(node.data_dir) as db:
        return db.execute("SELECT id, state, received FROM transfers").fetchone()


async def test_consumer_killed_mid_pull_resumes_from_the_last_verified_chunk(nodes, processes, tmp_path):
    provider = await nodes.start("acme")
    consumer = ProcessNode(tmp_path / "procs", "parts")
    processes.append(consumer)
    await consumer.start(env={"TDS_CRASH_AT": "consumer-mid-receive"})
    size = 64 * MIB + 12345
    agreement_id, sha = await agreed(provider, consumer, size=size)
    with contextlib.suppress(ClientError):  # the node may die before it answers; the transfer is in its store
        await consumer.client.start_transfer(agreement_id)
    assert await consumer.exited(30) == -9
    transfer_id, state, received = stored_transfer(consumer)
    assert state == "STARTED" and 0 < received < size
    await consumer.start()
    final = await consumer.client.transfer(transfer_id, wait_s=30)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert matches_its_manifest(consumer.data_dir, final["vaultPath"])
    assert any(e["kind"] == "resume" and f"at byte {received} " in e["detail"] for e in final["history"])


async def test_provider_killed_mid_stream_resumes_after_its_restart(nodes, processes, tmp_path):
    provider = ProcessNode(tmp_path / "procs", "acme")
    processes.append(provider)
    await provider.start(env={"TDS_CRASH_AT": "provider-mid-stream"})
    consumer = await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=64 * MIB + 54321)
    started = await consumer.client.start_transfer(agreement_id)
    assert await provider.exited(30) == -9
    await provider.start()
    final = await consumer.client.transfer(started["id"], wait_s=60)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert matches_its_manifest(consumer.data_dir, final["vaultPath"])
    resumed = [e["detail"] for e in final["history"] if e["kind"] == "resume"]
    assert resumed and "at byte 0 " not in resumed[-1], resumed


async def test_consumer_killed_mid_push_resumes_from_the_last_verified_chunk(nodes, processes, tmp_path):
    provider = await nodes.start("acme")
    consumer = ProcessNode(tmp_path / "procs", "parts")
    processes.append(consumer)
    await consumer.start(env={"TDS_CRASH_AT": "consumer-mid-receive"})
    size = 64 * MIB + 999
    agreement_id, sha = await agreed(provider, consumer, size=size)
    with contextlib.suppress(ClientError):
        await consumer.client.start_transfer(agreement_id, push=True)
    assert await consumer.exited(30) == -9
    transfer_id, state, received = stored_transfer(consumer)
    assert state == "STARTED" and 0 < received < size
    await consumer.start()  # the provider keeps retrying within transfer_stall_timeout_s
    final = await consumer.client.transfer(transfer_id, wait_s=60)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert matches_its_manifest(consumer.data_dir, final["vaultPath"])
    [theirs] = await provider.client.transfers()
    theirs = await provider.client.transfer(theirs["id"], wait_s=10)
    assert any(e["kind"] == "push" and f"holds {received} of" in e["detail"] for e in theirs["history"]), theirs


async def test_provider_killed_mid_push_resumes_after_its_restart(nodes, processes, tmp_path):
    provider = ProcessNode(tmp_path / "procs", "acme")
    processes.append(provider)
    await provider.start(env={"TDS_CRASH_AT": "provider-mid-push"})
    consumer = await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=64 * MIB + 4321, data_class="important")
    started = await consumer.client.start_transfer(agreement_id, push=True)
    assert await provider.exited(30) == -9
    await provider.start()
    final = await consumer.client.transfer(started["id"], wait_s=60)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert matches_its_manifest(consumer.data_dir, final["vaultPath"])
    assert any(e["kind"] == "sealed" for e in final["history"])
    [theirs] = await provider.client.transfers()
    theirs = await provider.client.transfer(theirs["id"], wait_s=10)
    resumed = [e["detail"] for e in theirs["history"] if e["kind"] == "push" and "holds" in e["detail"]]
    assert resumed and "holds 0 of" not in resumed[-1], theirs["history"]


async def test_consumer_peak_memory_stays_flat_for_a_large_payload(nodes, processes, tmp_path):
    provider = await nodes.start("acme")
    consumer = ProcessNode(tmp_path / "procs", "parts")
    processes.append(consumer)
    await consumer.start()
    size = 256 * MIB
    agreement_id, sha = await agreed(provider, consumer, size=size)
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=120)
    assert final["state"] == "COMPLETED", final
    peak = consumer.peak_rss_bytes()
    print(f"consumer peak RSS for {size // MIB} MiB: {peak / MIB:.1f} MiB")
    assert peak < 150 * MIB
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert matches_its_manifest(consumer.data_dir, final["vaultPath"])
