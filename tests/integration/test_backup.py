"""Backups of running nodes and their restore into new folders: `tds backup` and `tds restore` as real processes,
nodes as real processes, killed where a machine could die."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from connector.bootstrap import init_node
from connector.client import ManagementClient
from connector.services.usage import check_log
from connector.testing import ProcessNode, eventually

#: A backup is of an SQLite store (`tds backup` refuses a node whose store is PostgreSQL: its server's own tools
#: back that up).
pytestmark = pytest.mark.sqlite_store
PASSPHRASE = "correct horse battery staple"
ENV = {"TDS_TEST_BACKUP_PASSPHRASE": PASSPHRASE}
WITH_PASSPHRASE = ("--passphrase-env", "TDS_TEST_BACKUP_PASSPHRASE")
OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
CONTENT = b"part,defects\n" + b"A-17,0\n" * 300_000  # about 2 MiB: two chunks in the vault


async def tds(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", *args, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def publish(node, asset: str, content: bytes) -> None:
    """*node* publishes *content* under an open policy, its file named by its absolute path."""
    path = node.data_dir / "files" / node.data_dir.name / f"{asset}.csv"
    path.write_bytes(content)
    await node.client.add_asset({"id": asset, "contentType": "text/csv",
                                 "dataAddress": {"type": "File", "path": str(path)}})
    await node.client.add_policy(f"open-{asset}", OPEN)
    await node.client.add_contract_definition(f"cd-{asset}", access_policy_id=f"open-{asset}",
                                              contract_policy_id=f"open-{asset}", assets=[asset])


async def pull(consumer, provider_url: str, asset: str) -> str:
    """The consumer agrees on the provider's offer of *asset* and pulls it into its vault; the agreement id."""
    catalog = await consumer.client.catalog(provider_url)
    offer = next(d["hasPolicy"][0]["@id"] for d in catalog["dataset"] if d["@id"].endswith(asset))
    started = await consumer.client.negotiate(provider_url, offer)
    agreement = (await consumer.client.negotiation(started["id"], wait_s=15))["agreement"]["@id"]
    transfer = await consumer.client.start_transfer(agreement)
    done = await consumer.client.transfer(transfer["id"], wait_s=30)
    assert done["state"] == "COMPLETED", done
    return str(agreement)


async def used(node, agreement: str, use_id: str) -> bytes:
    return b"".join([c async for c in node.client.use_data(agreement, use_id)])


async def state(node, agreement: str) -> dict:
    """What must survive a backup: participants and DIDs, agreements, the usage log (its chain checked)."""
    async with ManagementClient.for_data_dir(node.data_dir, admin=True) as admin:
        participants = sorted((p["name"], p["did"]) for p in await admin.participants())
    log = await node.client.usage_log(agreement)
    assert check_log(log["entries"], log["heads"], log["didDocument"]) is None
    return {"participants": participants, "agreements": sorted(a["id"] for a in await node.client.agreements()),
            "log": [e["hash"] for e in log["entries"]]}


async def acknowledged(consumer, agreement: str) -> None:
    """Wait until the provider has acknowledged the consumer's whole usage log of *agreement*."""

    async def whole() -> bool:
        log = await consumer.client.usage_log(agreement)
        ack = log["acknowledgement"] or {}
        return bool(log["entries"]) and ack.get("seq") == log["entries"][-1]["seq"]

    await eventually(whole, what="the provider's acknowledgement of the whole log")


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def sparse(path: Path, size: int) -> None:
    """A large file that takes no disk (a backup reads it as *size* zero bytes)."""
    with open(path, "wb") as f:
        f.truncate(size)


async def wait_for_size(path: Path, size: int, process, deadline_s: float = 30.0) -> None:
    async def grown() -> bool:
        if size_of(path) >= size:
            return True
        assert process.returncode is None, "the backup finished before it could be interrupted"
        return False

    await eventually(grown, deadline_s, every_s=0.005, what=f"{path} reaching {size} bytes")


async def started(data_dir: Path) -> ProcessNode:
    """A node process on a restored folder, started; if it does not start, why (its own words)."""
    node = ProcessNode.existing(data_dir)
    try:
        await node.start()
    except RuntimeError as exc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connector", "serve", "--dir", str(data_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
        raise AssertionError(f"{exc}; started again: {out.decode()[-3000:]}") from exc
    return node


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_running_node_is_backed_up_and_restored_into_a_new_folder_with_everything(nodes, tmp_path):
    provider = await nodes.start("acme")
    await publish(provider, "qi-2026", CONTENT)
    await publish(provider, "forecast", b"week,units\n1,40\n")
    consumer = ProcessNode(tmp_path, "parts")
    await consumer.start()
    archive, restored_dir = tmp_path / "parts.tdsbak", tmp_path / "elsewhere" / "parts"
    try:
        agreement = await pull(consumer, provider.public_url, "qi-2026")
        assert await used(consumer, agreement, "u0") == CONTENT
        busy = await pull(consumer, provider.public_url, "forecast")
        await publish(consumer, "bom", b"bill of materials\n")  # published by the node backed up
        async with ManagementClient.for_data_dir(consumer.data_dir, admin=True) as admin:
            await admin.add_participant("sme-one", legal_name="SME One", region="CN-GD")

        async def keep_using() -> int:
            n = 0
            while not backup.done():
                n += 1
                await consumer.client.use(busy, f"during-{n}")
            return n

        # The node keeps logging uses while the backup copies its database, its keys and its vault.
        backup = asyncio.ensure_future(tds("backup", "--dir", str(consumer.data_dir), "-o", str(archive),
                                           *WITH_PASSPHRASE, env=ENV))
        uses_during = await keep_using()
        code, out = await backup
        assert code == 0, out
        assert "participant sme-one" in out and uses_during > 0
        original, original_busy = await state(consumer, agreement), await state(consumer, busy)
    finally:
        await consumer.stop()  # the machine is gone; the node comes back from its backup elsewhere
    assert not archive.with_name(archive.name + ".part").exists()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    code, out = await tds("restore", str(archive), "--dir", str(restored_dir), *WITH_PASSPHRASE, env=ENV)
    assert code == 0, out
    assert "1 assets' file paths moved" in out, out
    for path in [restored_dir, *restored_dir.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    restored = await started(restored_dir)
    try:
        now = await state(restored, agreement)
        assert now == original  # participants and DIDs, agreements, the whole usage log (its chain checked)
        # The log used during the backup: as the backup's copy of the database had it, a prefix of the
        # original's (which went on meanwhile), its chain intact.
        busy_now = (await state(restored, busy))["log"]
        assert 1 <= len(busy_now) <= len(original_busy["log"]) and busy_now == original_busy["log"][:len(busy_now)]
        assert await used(restored, agreement, "after-restore") == CONTENT  # the vault's sealed data opens
        assert (await state(restored, agreement))["log"][:len(now["log"])] == now["log"]  # the chain goes on
        bom = next(a for a in await restored.client.entries("assets") if a["id"] == "bom")
        assert bom["dataAddress"]["path"] == str(restored_dir.resolve() / "files" / "parts" / "bom.csv")
        # Its keys and DID work for peers too: the provider pulls what the restored node publishes.
        bought = await pull(provider, restored.public_url, "bom")
        assert await used(provider, bought, "p0") == b"bill of materials\n"
    finally:
        await restored.stop()


async def test_a_backup_killed_with_its_node_leaves_the_last_good_backup_which_restores(nodes, tmp_path):
    provider = await nodes.start("acme")
    await publish(provider, "qi-2026", CONTENT)
    consumer = ProcessNode(tmp_path, "parts")
    await consumer.start()
    archive = tmp_path / "parts.tdsbak"
    try:
        agreement = await pull(consumer, provider.public_url, "qi-2026")
        await consumer.client.use(agreement, "u0")
        await acknowledged(consumer, agreement)
        code, out = await tds("backup", "--dir", str(consumer.data_dir), "-o", str(archive), *WITH_PASSPHRASE,
                              env=ENV)
        assert code == 0, out
        good, last_good = sha256(archive), await state(consumer, agreement)
        await consumer.client.use(agreement, "u1")  # after the good backup: not in it
        await acknowledged(consumer, agreement)  # but its receipt is with the provider
        sparse(consumer.data_dir / "files" / "parts" / "big.bin", 512 * 1024 * 1024)  # the next backup takes a while
        backup = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connector", "backup", "--dir", str(consumer.data_dir), "-o", str(archive),
            *WITH_PASSPHRASE, env={**os.environ, **ENV},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        part = archive.with_name(archive.name + ".part")
        try:
            await wait_for_size(part, 8 * 1024 * 1024, backup)
        finally:
            backup.send_signal(signal.SIGKILL)  # the machine dies: backup and node at once
            await consumer.kill()
            assert await backup.wait() == -signal.SIGKILL
    finally:
        await consumer.stop()
    assert part.exists() and sha256(archive) == good  # the half backup never took the good one's name

    restored_dir = tmp_path / "new-machine"
    code, out = await tds("restore", str(archive), "--dir", str(restored_dir), *WITH_PASSPHRASE, env=ENV)
    assert code == 0, out
    restored = await started(restored_dir)
    try:
        assert await state(restored, agreement) == last_good
        assert await used(restored, agreement, "again") == CONTENT
        # The use after the backup is lost here, but not silently: the provider holds its receipt, and the
        # restored node's next entry arrives under the same number with another hash.

        async def fork() -> list:
            report = await provider.client.usage_report(agreement)
            return [a for a in report["anomalies"] if a["kind"] == "fork"]

        await eventually(fork, what="the provider's record of the fork")
    finally:
        await restored.stop()
    # The half archive does not restore, and says why.
    code, out = await tds("restore", str(part), "--dir", str(tmp_path / "from-half"), *WITH_PASSPHRASE, env=ENV)
    assert code == 1 and "cut short" in out, out
    assert not (tmp_path / "from-half").exists()


async def test_a_backup_completes_when_its_node_is_killed_under_it(nodes, tmp_path):
    provider = await nodes.start("acme")
    await publish(provider, "qi-2026", CONTENT)
    consumer = ProcessNode(tmp_path, "parts")
    await consumer.start()
    archive = tmp_path / "parts.tdsbak"
    try:
        agreement = await pull(consumer, provider.public_url, "qi-2026")
        await consumer.client.use(agreement, "u0")
        before = await state(consumer, agreement)
        sparse(consumer.data_dir / "files" / "parts" / "big.bin", 256 * 1024 * 1024)
        backup = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connector", "backup", "--dir", str(consumer.data_dir), "-o", str(archive),
            *WITH_PASSPHRASE, env={**os.environ, **ENV}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            await wait_for_size(archive.with_name(archive.name + ".part"), 1024 * 1024, backup)
            await consumer.kill()
            out, _ = await backup.communicate()
        finally:
            if backup.returncode is None:
                backup.kill()
                await backup.wait()
        assert backup.returncode == 0, out.decode()
    finally:
        await consumer.stop()
    restored_dir = tmp_path / "restored"
    code, out = await tds("restore", str(archive), "--dir", str(restored_dir), *WITH_PASSPHRASE, env=ENV)
    assert code == 0, out
    assert (restored_dir / "files" / "parts" / "big.bin").stat().st_size == 256 * 1024 * 1024
    restored = await started(restored_dir)
    try:
        assert await state(restored, agreement) == before
        assert await used(restored, agreement, "u1") == CONTENT
    finally:
        await restored.stop()


async def test_a_wrong_passphrase_is_refused_and_nothing_is_written(tmp_path):
    init_node(tmp_path / "acme", name="acme", port=0, dev_mode=True)
    archive = tmp_path / "acme.tdsbak"
    code, out = await tds("backup", "--dir", str(tmp_path / "acme"), "-o", str(archive), *WITH_PASSPHRASE, env=ENV)
    assert code == 0, out
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "new", empty):
        code, out = await tds("restore", str(archive), "--dir", str(target), *WITH_PASSPHRASE,
                              env={"TDS_TEST_BACKUP_PASSPHRASE": "not the passphrase at all"})
        assert code == 1 and "wrong passphrase" in out, out
    assert not (tmp_path / "new").exists() and list(empty.iterdir()) == []


async def test_restore_refuses_a_folder_that_is_not_empty_and_backup_a_short_passphrase(tmp_path):
    init_node(tmp_path / "acme", name="acme", port=0, dev_mode=True)
    archive = tmp_path / "acme.tdsbak"
    code, out = await tds("backup", "--dir", str(tmp_path / "acme"), "-o", str(archive), *WITH_PASSPHRASE,
                          env={"TDS_TEST_BACKUP_PASSPHRASE": "short"})
    assert code == 1 and "at least 12 characters" in out and not archive.exists(), out
    code, out = await tds("backup", "--dir", str(tmp_path / "acme"), "-o", str(archive), *WITH_PASSPHRASE, env=ENV)
    assert code == 0, out
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    code, out = await tds("restore", str(archive), "--dir", str(occupied), *WITH_PASSPHRASE, env=ENV)
    assert code == 1 and "is not empty" in out, out
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]


async def test_a_backup_to_a_public_key_is_restored_with_its_private_key_alone(tmp_path):
    init_node(tmp_path / "acme", name="acme", port=0, dev_mode=True)
    key = tmp_path / "offline" / "backup.key"
    key.parent.mkdir()
    code, out = await tds("backup", "keygen", "-o", str(key))
    assert code == 0, out
    public = key.with_name("backup.key.pub").read_text().strip()
    assert public.startswith("z6LS") and public in out and stat.S_IMODE(key.stat().st_mode) == 0o600
    archive = tmp_path / "acme.tdsbak"
    code, out = await tds("backup", "--dir", str(tmp_path / "acme"), "-o", str(archive), "--to-public-key", str(key))
    assert code == 1 and "private key file" in out, out  # the private key never goes to the backup machine
    for given in (f"{key}.pub", public):
        code, out = await tds("backup", "--dir", str(tmp_path / "acme"), "-o", str(archive), "--to-public-key", given)
        assert code == 0 and public in out, out

    code, out = await tds("restore", str(archive), "--dir", str(tmp_path / "r1"), *WITH_PASSPHRASE, env=ENV)
    assert code == 1 and public in out and "--private-key" in out, out
    other = tmp_path / "other.key"
    assert (await tds("backup", "keygen", "-o", str(other)))[0] == 0
    code, out = await tds("restore", str(archive), "--dir", str(tmp_path / "r2"), "--private-key", str(other))
    assert code == 1 and f"encrypted to the public key {public}" in out, out
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    code, out = await tds("restore", str(archive), "--dir", str(tmp_path / "r3"), "--private-key", str(key))
    assert code == 0, out
    node_key = Path("keys") / "node.key"
    assert (tmp_path / "r3" / node_key).read_bytes() == (tmp_path / "acme" / node_key).read_bytes()
