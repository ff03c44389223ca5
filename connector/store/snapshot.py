"""A consistent copy of a node's database while the node may be running, and what a backup asks of it.

:func:`copy_database` uses SQLite's online backup API from a connection of its own: the whole database is
copied in one step, inside one read transaction, so the copy is the database as one commit left it. In WAL
mode the node's writer goes on committing meanwhile (readers never block it, and it never blocks them); the
copy waits only for a checkpoint that is restarting the WAL, at most ``busy_timeout``. The copy is then
checked with ``PRAGMA quick_check``, so that a backup never carries a damaged database unnoticed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from connector import filemodes
from connector.errors import StorageError

_BUSY_MS = 30_000


@dataclass(frozen=True)
class Snapshot:
    """What a backup needs to know of the copied database."""

    schema_version: int
    #: (name, DID) of every hosted participant
    participants: list[tuple[str, str]]
    #: Received files the database names (``vault/PARTICIPANT/AGREEMENT/NAME``, relative to the data folder)
    vault_files: list[str]


def copy_database(source: Path, target: Path) -> Snapshot:
    """Copy the database *source* (a node may be running on it) to *target* (created, mode 0600; replaced if
    it exists) and check the copy. Raises :class:`StorageError` if there is no database, it cannot be read, or
    the copy fails SQLite's ``quick_check``."""
    if not source.is_file():
        raise StorageError(f"no database at {source}")
    for stale in (target, target.with_name(target.name + "-journal")):
        stale.unlink(missing_ok=True)
    filemodes.ensure_private_file(target)
    try:
        # mode=rw: never create a database where there is none. The backup only reads (the connection may still
        # make -wal/-shm files, private by the caller's umask, as any reader of a WAL database does).
        with contextlib.closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True,
                                                timeout=_BUSY_MS / 1000)) as src, \
                contextlib.closing(sqlite3.connect(target)) as dst:
            src.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            src.execute("PRAGMA query_only = ON")
            src.backup(dst)  # pages=-1: every page in one step, one read transaction: one commit's state
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file (the node turns WAL on again)
            problems = [str(row[0]) for row in dst.execute("PRAGMA quick_check").fetchmany(5)]
            if problems != ["ok"]:
                raise StorageError(f"the copy of {source} fails SQLite's quick_check ({'; '.join(problems)[:500]}): "
                                   "the database may be damaged")
            return _describe(dst)
    except sqlite3.Error as exc:
        raise StorageError(f"{source} cannot be copied: {exc}") from exc


def _describe(db: sqlite3.Connection) -> Snapshot:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    participants = [(str(name), str(did)) for name, did in db.execute(
        "SELECT name, did FROM participants ORDER BY created_at, name")] if "participants" in tables else []
    vault_files = [str(row[0]) for row in db.execute(
        "SELECT DISTINCT vault_path FROM transfers WHERE vault_path != '' ORDER BY vault_path")] \
        if "transfers" in tables else []
    return Snapshot(version, participants, vault_files)


def relocate_file_assets(database: Path, old_roots: list[str], new_root: Path) -> int:
    """Rewrite the ``File`` data addresses of assets that name a file under one of *old_roots* (where the data
    folder was, as given and as resolved) to the same file under *new_root*: how a restored node finds the
    files it published from its own folder (``tds asset add --file`` and backend snapshots store absolute
    paths). Paths elsewhere are left as they are. Returns how many assets changed."""
    roots = sorted({root.rstrip("/") for root in old_roots if root and root != "/"}, key=len, reverse=True)
    try:
        return _relocate(database, roots, new_root)
    except sqlite3.Error as exc:
        raise StorageError(f"{database}: {exc}") from exc


def _relocate(database: Path, roots: list[str], new_root: Path) -> int:
    changed = 0
    with contextlib.closing(sqlite3.connect(database, timeout=_BUSY_MS / 1000)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            for participant_id, asset_id, raw in db.execute(
                    "SELECT participant_id, id, data_address FROM assets").fetchall():
                try:
                    address = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(address, dict) or str(address.get("type", "")).lower() != "file":
                    continue
                path = address.get("path")
                if not isinstance(path, str) or not os.path.isabs(path):
                    continue
                for root in roots:
                    if path.startswith(root + "/"):
                        address["path"] = str(new_root / path[len(root) + 1:])
                        db.execute("UPDATE assets SET data_address = ? WHERE participant_id = ? AND id = ?",
                                   (json.dumps(address), participant_id, asset_id))
                        changed += 1
                        break
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return changed
