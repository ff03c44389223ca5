"""Taking a backup while the data folder changes under it: the database copy decides, keys and vault are checked
against it, data deleted meanwhile is restored as deleted, and a backup that cannot be made leaves no file."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from nacl.pwhash import argon2id

from connector import archive, backup
from connector.bootstrap import init_node, new_participant_keys
from connector.errors import BackupError
from connector.store import snapshot

#: The database copy is SQLite's snapshot of tds.db (`tds backup` refuses a PostgreSQL store).
pytestmark = pytest.mark.sqlite_store
PASSPHRASE = "a passphrase for tests"
CHEAP = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}
FOLDER = "vault/acme/urn_uuid_a1"
PAYLOAD = f"{FOLDER}/qi-2026"


def key_of(header: archive.Header) -> bytes:
    return header.key_from_passphrase(PASSPHRASE)


def take(data_dir: Path, out: Path) -> backup.BackupResult:
    header, key = archive.passphrase_header(PASSPHRASE, **CHEAP)
    return backup.make_backup(data_dir, out, header, key)


@pytest.fixture
def node(tmp_path) -> Path:
    """A node's folder whose database names a received file in the vault (the file, its bundle and key beside)."""
    data_dir = tmp_path / "acme"
    init_node(data_dir, name="acme", port=0, dev_mode=True)
    with sqlite3.connect(data_dir / "tds.db") as db:
        db.execute("INSERT INTO transfers (participant_id, id, role, state, counterparty_did, agreement_id, "
                    "vault_path, created_at, updated_at) VALUES ('acme', 't1', 'consumer', 'COMPLETED', "
                    "'did:web:peer', 'urn:uuid:a1', ?, '2026-01-01', '2026-01-01')", (PAYLOAD,))
    folder = data_dir / FOLDER
    folder.mkdir(parents=True)
    (data_dir / PAYLOAD).write_bytes(b"sealed bytes")
    (data_dir / f"{PAYLOAD}.bundle.json").write_text("{}")
    (folder / ".key").write_text('{"format": "tds-vault-data-key-v1"}')
    (folder / ".t2.part").write_bytes(b"a transfer still arriving")
    return data_dir


def test_the_vault_is_backed_up_with_its_keys_and_without_partial_files(node, tmp_path):
    result = take(node, tmp_path / "b.tdsbak")
    assert result.deleted == [] and result.attempts == 1
    restored = backup.restore(tmp_path / "b.tdsbak", tmp_path / "r", key_of)
    assert (tmp_path / "r" / PAYLOAD).read_bytes() == b"sealed bytes"
    assert (tmp_path / "r" / FOLDER / ".key").exists() and not (tmp_path / "r" / FOLDER / ".t2.part").exists()
    assert restored.relocated == 0 and not (tmp_path / "r" / ".backup").exists()


def test_data_deleted_while_the_backup_runs_is_restored_as_deleted(node, tmp_path, monkeypatch):
    copy = backup._Writer.copy

    def copy_while_deleting(self, name, path, **kwargs):
        done = copy(self, name, path, **kwargs)
        if name == PAYLOAD:  # the agreement's data is destroyed now: the key first, then the files
            (node / FOLDER / ".key").unlink()
            shutil.rmtree(node / FOLDER)
        return done

    monkeypatch.setattr(backup._Writer, "copy", copy_while_deleting)
    result = take(node, tmp_path / "b.tdsbak")
    assert result.deleted == [FOLDER]
    restored = backup.restore(tmp_path / "b.tdsbak", tmp_path / "r", key_of)
    assert restored.deleted == [FOLDER] and not (tmp_path / "r" / FOLDER).exists()
    assert (tmp_path / "r" / "vault" / "acme").is_dir()


def test_a_vault_file_missing_beside_its_key_fails_the_backup_and_leaves_no_file(node, tmp_path):
    (node / PAYLOAD).unlink()
    out = tmp_path / "b.tdsbak"
    out.write_bytes(b"the last good backup")
    with pytest.raises(BackupError, match=f"the vault file {PAYLOAD} named by the database is missing"):
        take(node, out)
    assert out.read_bytes() == b"the last good backup" and not out.with_name("b.tdsbak.part").exists()
    assert list((node / ".backup").iterdir()) == [node / ".backup" / "lock"]  # the database copy is gone too


def test_a_participant_removed_while_the_backup_runs_starts_it_again(node, tmp_path, monkeypatch):
    new_participant_keys(node, "sme-one")
    with sqlite3.connect(node / "tds.db") as db:
        db.execute("INSERT INTO participants (id, name, did, legal_name, region, created_at) "
                   "VALUES ('sme-one', 'sme-one', 'did:web:sme', 'SME One', 'CN', '2026-01-01')")
    original = snapshot.copy_database
    calls = []

    def copy_then_remove(source, target):
        found = original(source, target)
        if not calls:  # removed just after the first copy: its rows, then its keys
            with sqlite3.connect(node / "tds.db") as db:
                db.execute("DELETE FROM participants WHERE id = 'sme-one'")
            shutil.rmtree(node / "keys" / "sme-one")
        calls.append(found)
        return found

    monkeypatch.setattr(snapshot, "copy_database", copy_then_remove)
    result = take(node, tmp_path / "b.tdsbak")
    assert result.attempts == 2 and [name for name, _ in result.participants] == ["acme"]


def test_a_participant_without_keys_fails_the_backup(node, tmp_path):
    with sqlite3.connect(node / "tds.db") as db:
        db.execute("INSERT INTO participants (id, name, did, legal_name, region, created_at) "
                   "VALUES ('ghost', 'ghost', 'did:web:ghost', 'Ghost', 'CN', '2026-01-01')")
    with pytest.raises(BackupError, match=r"participant 'ghost' has no keys/ghost/ed25519\.key .*tried 3 times"):
        take(node, tmp_path / "b.tdsbak")
    assert not (tmp_path / "b.tdsbak").exists() and not (tmp_path / "b.tdsbak.part").exists()


def test_one_backup_of_a_folder_at_a_time(node, tmp_path):
    (node / ".backup").mkdir(exist_ok=True)
    fd = os.open(node / ".backup" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(BackupError, match="another backup"):
            take(node, tmp_path / "b.tdsbak")
    finally:
        os.close(fd)


def test_a_folder_without_a_node_is_refused(tmp_path):
    with pytest.raises(BackupError, match="holds no node"):
        take(tmp_path, tmp_path / "b.tdsbak")


def test_symbolic_links_in_files_are_left_out_and_said(node, tmp_path):
    (node / "files" / "acme" / "elsewhere").symlink_to("/etc/hostname")
    result = take(node, tmp_path / "b.tdsbak")
    assert result.skipped == ["files/acme/elsewhere (symbolic link)"]


def test_a_backup_into_the_data_folder_or_a_missing_folder_is_refused(node, tmp_path):
    with pytest.raises(BackupError, match="outside the data folder"):
        take(node, node / "files" / "acme" / "b.tdsbak")
    with pytest.raises(BackupError, match="cannot be made: No such file or directory"):
        take(node, tmp_path / "no-such-folder" / "b.tdsbak")
    assert not (node / "files" / "acme" / "b.tdsbak.part").exists()
