"""A full disk (or any failed write) on the consumer, between two nodes on 127.0.0.1: the attempt ends with a
reason naming the error and the agreement's folder, the partial file is discarded (its space freed), and once
there is room again the transfer resumes and completes on its own, pulled or pushed, without a restart. A disk
that stays full ends the transfer at the stall limit with the reason. ``tds transfer`` tells all of it as it
happens."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from test_transfer import agreed, provider_view, vault_files

from connector.payload import vaultfile
from connector.testing import FullDisk, eventually, vault_sha256

MIB = 1024 * 1024
SIZE = 4 * MIB + 123
ROOM = MIB + vaultfile.TAG_SIZE  # one chunk fits in the partial file, the next does not


async def consumer_record(consumer, transfer_id):
    return await consumer.node.transfers_repo.get(consumer.participant.id, transfer_id)


def errors(record):
    return [e["detail"] for e in record["history"] if e["kind"] == "error"]


async def failed_attempts(consumer, transfer_id, at_least=1):
    """The consumer's transfer once at least *at_least* attempts failed to store its data (polled, bounded)."""

    async def seen():
        record = await consumer.client.transfer(transfer_id)
        return record if len(errors(record)) >= at_least else None

    return await eventually(seen, 20, what="a failed attempt")


@pytest.mark.parametrize("push", [False, True])
async def test_a_full_disk_fails_the_attempt_frees_the_partial_file_and_the_transfer_completes_once_freed(
        nodes, monkeypatch, push):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=SIZE)
    disk = FullDisk(room=ROOM).install(monkeypatch)
    started = await consumer.client.start_transfer(agreement_id, push=push)

    record = await failed_attempts(consumer, started["id"], at_least=2)
    assert record["state"] == "STARTED", record  # an attempt failed; the transfer goes on
    # The reason names the error and the agreement's folder in the data folder (not the data, not a full path).
    assert errors(record)[0].startswith("could not store the received data: writing in vault/parts/urn_uuid_"), record
    assert "failed: No space left on device (ENOSPC); the partial file was removed; " in errors(record)[0]
    stored = await consumer_record(consumer, started["id"])
    part = consumer.node.vault.partial_path(consumer.participant, stored.agreement_id, stored.id)
    try:
        held = part.stat().st_size  # a new attempt's file, if one is under way
    except FileNotFoundError:
        held = 0
    assert held <= vaultfile.HEADER_SIZE + ROOM  # never more than the room: what failed was removed
    assert disk.opened[:2] == [False, False]  # each attempt found the one before it discarded

    disk.full = False  # space freed: the next attempt goes through, without a restart
    final = await consumer.client.transfer(started["id"], wait_s=30)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert not part.exists()
    assert all(not opened for opened in disk.opened)
    assert (await provider_view(provider))["state"] == "COMPLETED"


async def test_a_disk_that_stays_full_ends_the_pull_at_the_stall_limit_with_the_reason(nodes, monkeypatch):
    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", transfer_stall_timeout_s=1.5)
    agreement_id, _ = await agreed(provider, consumer, size=SIZE)
    FullDisk(room=ROOM).install(monkeypatch)
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "TERMINATED", final
    # Ended by the pull itself or by the stall limit's timer, whichever looks first: the same reason.
    assert final["reason"].startswith(f"no data could be stored for 1.5 s (0 of {SIZE} bytes received): could not "
                                      "store the received data: writing in vault/parts/urn_uuid_"), final
    assert final["reason"].endswith(" failed: No space left on device (ENOSPC)"), final["reason"]
    assert vault_files(consumer) == []  # the partial file and the unused data key are gone
    theirs = await provider_view(provider)
    assert theirs["state"] == "TERMINATED" and "No space left on device" in theirs["reason"]


async def tds_transfer(consumer, provider, agreement_id, *args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", "transfer", provider.public_url, agreement_id, *args,
        "--node", consumer.node.management_url, "--token", consumer.token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return proc


async def test_tds_transfer_tells_each_failed_attempt_then_the_outcome(nodes, monkeypatch):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=SIZE)
    disk = FullDisk(room=ROOM).install(monkeypatch)
    proc = await tds_transfer(consumer, provider, agreement_id)
    try:
        [theirs] = await eventually(consumer.client.transfers, 20, what="the transfer")
        await failed_attempts(consumer, theirs["id"])
        disk.full = False
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = out.decode(), err.decode()
    assert proc.returncode == 0, (out, err)
    assert f"transfer {theirs['id']}: COMPLETED" in out and "saved to vault/parts/" in out
    lines = err.splitlines()
    assert lines[0] == f"transfer {theirs['id']}: REQUESTED", err  # then each state it is seen in (STARTED)
    told = [line for line in lines if line.startswith("  error: could not store the received data: writing in ")]
    assert told and "No space left on device (ENOSPC)" in told[0], err


async def test_tds_transfer_exits_1_with_the_reason_when_the_transfer_is_terminated(nodes, monkeypatch):
    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", transfer_stall_timeout_s=1.5)
    agreement_id, _ = await agreed(provider, consumer, size=SIZE)
    FullDisk(room=ROOM).install(monkeypatch)
    started = time.monotonic()
    proc = await tds_transfer(consumer, provider, agreement_id)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    out = out.decode()
    assert proc.returncode == 1, (out, err)
    assert ": TERMINATED" in out and "  reason: no data could be stored for 1.5 s (0 of " in out, out
    assert "No space left on device (ENOSPC)" in out
    assert time.monotonic() - started < 30  # told as soon as the node gave up, not after a long timeout
