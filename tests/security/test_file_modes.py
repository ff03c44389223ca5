"""Another local user reads a node's secrets or data: tokens, keys, the database and its WAL, the vault.

Every attack runs with ``umask 000`` (what a careless service manager or container gives), so that any file
the node makes without asking for a mode would be world-readable, and any folder world-writable.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from connector.bootstrap import init_node
from connector.logging import configure
from connector.node import Node

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


@pytest.fixture(autouse=True)
def json_logs():
    """JSON lines down to debug, whatever an earlier test configured (the CLI's demo logs warnings only)."""
    configure("debug")


@pytest.fixture
def open_umask():
    """The process runs with umask 000 for the test, and gets its own umask back afterwards."""
    old = os.umask(0)
    yield
    os.umask(old)


def not_private(root: Path) -> list[str]:
    """Everything under *root* (itself included) that another local user could use: a file that is not
    0600, a folder that is not 0700, or any symbolic link."""
    found = []
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        mode, name = stat.S_IMODE(info.st_mode), str(path.relative_to(root))
        if stat.S_ISLNK(info.st_mode):
            found.append(f"{name} is a symlink")
        elif mode != (0o700 if stat.S_ISDIR(info.st_mode) else 0o600):
            found.append(f"{name} {mode:o}")
    return found


def open_up(root: Path) -> None:
    """What an older node, or a copy made without its modes, left: folders 0755, files 0644. The data
    roots (``files/``) are left alone: what is in them is the operator's, with the operator's modes."""
    for path in [root, *root.rglob("*")]:
        if path.relative_to(root).parts[:1] != ("files",):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


@pytest.mark.sqlite_store  # the database file among them
def test_init_into_an_existing_open_folder_leaves_nothing_readable(tmp_path, open_umask):
    folder = tmp_path / "acme"
    folder.mkdir(mode=0o755)
    init_node(folder, name="acme", port=0, management_port=0, dev_mode=True)
    assert (folder / "tds.db").is_file() and (folder / "keys" / "node.key").is_file()
    assert not_private(folder) == []


async def publish_file(provider, consumer, data: bytes) -> str:
    """A file asset on *provider* (the test writes the file itself, privately), negotiated by *consumer*;
    returns the agreement id."""
    folder = provider.data_dir / "files" / provider.participant.name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (provider.data_dir / "files").chmod(0o700)
    fd = os.open(folder / "qi.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    await provider.client.add_asset({"id": "qi-2026", "contentType": "application/octet-stream",
                                     "dataAddress": {"type": "File", "path": str(folder / "qi.bin")}})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["qi-2026"])
    catalog = await consumer.client.catalog(provider.public_url)
    started = await consumer.client.negotiate(provider.public_url, catalog["dataset"][0]["hasPolicy"][0]["@id"])
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    return str(final["agreement"]["@id"])


@pytest.mark.sqlite_store  # the database file and its WAL among them
async def test_a_node_writes_nothing_others_can_read_after_transfer_and_use(nodes, open_umask):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    # Starting narrowed the process's umask; put it back to 000, so that what the nodes write from here on
    # (vault folders, data keys, partial and final files, bundles) is private by its own explicit mode.
    os.umask(0)
    data = os.urandom(300_000)
    agreement = await publish_file(provider, consumer, data)
    started = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    used = b"".join([chunk async for chunk in consumer.client.use_data(agreement, "report-1")])
    assert used == data
    assert (consumer.data_dir / final["vaultPath"]).is_file()
    assert (consumer.data_dir / "tds.db-wal").is_file()  # the open database's WAL is checked too
    assert not_private(consumer.data_dir) == []
    assert not_private(provider.data_dir) == []


@pytest.mark.sqlite_store  # the database file among them
async def test_a_node_started_on_an_open_data_folder_narrows_it_and_says_so(tmp_path, open_umask, capfd):
    folder = tmp_path / "acme"
    init_node(folder, name="acme", port=0, management_port=0, dev_mode=True)
    (folder / "vault" / "acme").mkdir(parents=True)  # an (empty) vault from an earlier run
    open_up(folder)
    node = Node(folder)
    try:
        await node.start()  # the keys are refused while readable by others: narrowed before they are read
    finally:
        await node.stop()
    assert not_private(folder) == []
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.strip()]
    [warning] = [line for line in lines if "modes narrowed" in line["event"]]
    assert warning["level"] == "warning" and {". (755)", "tds.db (644)", "keys/node.key (644)",
                                              "vault/acme (755)"} <= set(warning["paths"]), warning


async def test_narrowing_follows_no_symlink_out_of_the_data_folder(tmp_path, open_umask):
    folder = tmp_path / "acme"
    init_node(folder, name="acme", port=0, management_port=0, dev_mode=True)
    outside = tmp_path / "shared.txt"
    outside.write_text("someone else's file\n")
    outside.chmod(0o644)
    (folder / "vault").mkdir(mode=0o700)
    (folder / "vault" / "planted").symlink_to(outside)
    node = Node(folder)
    try:
        await node.start()
    finally:
        await node.stop()
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert (folder / "vault" / "planted").is_symlink()
