"""Upgrades: a database left at any schema version opens with the current code, migrates to the latest and keeps
its rows; a database of a later release (or with no schema version at all) is refused before anything changes.

The cases are built from ``MIGRATIONS`` itself, so every migration added later is covered from every schema
version before it: the rows are made from each table's columns as the schema at that version has them."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from connector.errors import SchemaVersionError, StorageError
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.negotiation import State as NegotiationState
from connector.protocol.transfer import State as TransferState
from connector.store.db import MAX_SCHEMA_VERSION, Database, Store, migrate, schema_version_of
from connector.store.migrations import MIGRATIONS
from connector.store.records import JSON_COLUMNS, Asset, ContractDefinition, PolicyRecord
from connector.store.repository import ContractRepository, Participant, SqliteRepository, TransferRepository

#: SQLite files as earlier releases left them.
pytestmark = pytest.mark.sqlite_store
LATEST = len(MIGRATIONS)
TOKEN = "a-token-made-before-the-upgrade"
POLICY = '{"@type": "Set", "permission": [{"action": "use"}]}'
#: Values that the current code reads as more than text (ids the rows refer to, enums, JSON); every other column
#: gets a value made from its table and name.
KNOWN: dict[str, Any] = {
    "participants.id": "acme", "participants.name": "acme", "participants.did": "did:web:example.com:participants:acme",
    "participant_id": "acme", "tokens.hash": hashlib.sha256(TOKEN.encode()).hexdigest(), "tokens.application": "cli",
    "tokens.admin": 0, "tokens.revoked_at": None, "policies.policy": POLICY, "keywords": '["quality"]',
    "assets": '["qi"]', "role": Role.CONSUMER.value, "negotiations.state": NegotiationState.FINALIZED.value,
    "transfers.state": TransferState.COMPLETED.value, "agreements.state": AgreementState.FINALIZED.value,
}


def _tables(db: sqlite3.Connection) -> list[str]:
    """The plain tables (virtual tables such as FTS indexes, and their shadow tables, are the index's business)."""
    rows = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    rows = rows.fetchall()
    virtual = [name for name, sql in rows if sql.upper().startswith("CREATE VIRTUAL TABLE")]
    return [name for name, _ in rows
            if name not in virtual and not any(name.startswith(f"{v}_") for v in virtual)]


def _value(table: str, column: str, declared: str) -> Any:
    for key in (f"{table}.{column}", column):
        if key in KNOWN:
            return KNOWN[key]
    if column in JSON_COLUMNS:
        return "{}"
    kind = declared.upper()
    if "INT" in kind:
        return 1
    if "REAL" in kind:
        return 1.5
    return f"{table}.{column}"


def _representative_rows(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """One row in every table of the schema *db* is at, every column filled; participants first (every
    business table refers to one)."""
    rows: dict[str, dict[str, Any]] = {}
    for table in sorted(_tables(db), key=lambda t: t != "participants"):
        columns = db.execute(f"PRAGMA table_info({table})").fetchall()
        row = {name: _value(table, name, declared) for _, name, declared, *_ in columns}
        db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))
        rows[table] = row
    return rows


def _dropped_after(table: str, version: int) -> bool:
    return any(statement.strip().upper() == f"DROP TABLE {table.upper()}"
               for statements in MIGRATIONS[version:] for statement in statements)


def _schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())


def _at_version(path: Path, version: int) -> dict[str, dict[str, Any]]:
    """A database as a release with schema *version* left it, holding one row in each of its tables."""
    db = Database(sqlite3.connect(path, isolation_level=None))
    try:
        assert migrate(db, upto=version) == version
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("BEGIN")
        rows = _representative_rows(db.conn)
        db.execute("COMMIT")
    finally:
        db.conn.close()
    return rows


@pytest.mark.parametrize("version", range(LATEST + 1))
async def test_a_database_at_each_earlier_schema_migrates_to_the_latest_and_keeps_its_rows(tmp_path, version):
    path = tmp_path / "tds.db"
    rows = _at_version(path, version)
    store = Store(path)
    await store.open()
    try:
        assert store.schema_version == LATEST
        assert await store.read(lambda db: db.execute("PRAGMA user_version").fetchone()[0]) == LATEST
        assert await store.read(lambda db: db.execute("PRAGMA integrity_check").fetchall()) == [("ok",)]
        assert await store.read(lambda db: db.execute("PRAGMA foreign_key_check").fetchall()) == []
        tables = set(await store.read(lambda db: _tables(db.conn)))
        for table, row in rows.items():
            if table not in tables:
                assert _dropped_after(table, version), f"{table} went missing without a migration dropping it"
                continue
            columns = {c[1] for c in await store.read(lambda db, t=table: db.execute(f"PRAGMA table_info({t})"))}
            kept = {k: v for k, v in row.items() if k in columns}
            sql = f"SELECT COUNT(*) FROM {table} WHERE " + " AND ".join(f"{k} IS ?" for k in kept)
            values = tuple(kept.values())
            found = await store.read(lambda db, q=sql, v=values: db.execute(q, v).fetchone()[0])
            assert found == 1, f"the row in {table} did not survive the migrations from schema {version}"
        await _queries_work(store, version)
    finally:
        await store.close()
    fresh = tmp_path / "fresh.db"
    _at_version(fresh, LATEST)
    assert _schema(path) == _schema(fresh)  # the same schema, whichever version the database started from


async def _queries_work(store: Store, version: int) -> None:
    """The current code reads what the earlier release wrote, and writes beside it."""
    repo, contracts = SqliteRepository(store), ContractRepository(store)
    if version >= 1:
        assert [p.did for p in await repo.participants()] == ["did:web:example.com:participants:acme"]
        token = await repo.find_token(TOKEN)
        assert token is not None and token.participant_id == "acme" and token.application == "cli" and token.id
        assert [t.id for t in await repo.tokens("acme")] == [token.id]
        assert [p.did for p in await repo.peers("acme")] == ["peers.did"]
    if version >= 2:
        assert [p.policy for p in await contracts.entries("acme", PolicyRecord)] == [
            {"@type": "Set", "permission": [{"action": "use"}]}]
        assert [a.keywords for a in await contracts.entries("acme", Asset)] == [["quality"]]
        assert [d.assets for d in await contracts.entries("acme", ContractDefinition)] == [["qi"]]
        assert [n.state for n in await contracts.negotiations("acme")] == [NegotiationState.FINALIZED]
        assert [a.state for a in await contracts.agreements("acme", state=None)] == [AgreementState.FINALIZED]
    if version >= 5:
        assert [t.state for t in await TransferRepository(store).find("acme")] == [TransferState.COMPLETED]
    # and new rows go in beside the old ones
    await repo.add_participant(Participant("sme-one", "sme-one", "did:web:example.com:participants:sme-one",
                                           "SME One", "CN-GD", created_at="2026-01-01T00:00:00+00:00"),
                               first_token="a-token-made-after-the-upgrade")
    assert (await repo.find_token("a-token-made-after-the-upgrade")).participant_id == "sme-one"
    await contracts.add_entry("sme-one", Asset(id="qi", keywords=["new"]))
    assert [a.keywords for a in await contracts.entries("sme-one", Asset)] == [["new"]]


def _with_user_version(path: Path, version: int) -> bytes:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE kept (x)")
        db.execute("INSERT INTO kept VALUES (1)")
        db.execute(f"PRAGMA user_version = {version}")
    return path.read_bytes()


@pytest.mark.parametrize("version", [LATEST + 1, LATEST + 7, MAX_SCHEMA_VERSION])
async def test_a_database_of_a_later_release_is_refused_naming_both_schemas_and_what_to_install(tmp_path, version):
    path = tmp_path / "tds.db"
    before = _with_user_version(path, version)
    store = Store(path)
    with pytest.raises(SchemaVersionError) as refused:
        await store.open()
    message = refused.value.message
    assert f"schema version {version}" in message and f"newest schema this software knows is {LATEST}" in message
    assert f"Install a release that knows schema {version} or newer" in message and str(path) in message
    assert (refused.value.found, refused.value.known) == (version, LATEST)
    assert isinstance(refused.value, StorageError)
    assert path.read_bytes() == before  # nothing changed: not a migration, not the journal mode
    assert schema_version_of(path) == version
    await store.close()


@pytest.mark.parametrize("version", [-1, -(2**31), MAX_SCHEMA_VERSION + 1, 2**31 - 1])
async def test_a_database_with_no_real_schema_version_is_refused_as_damaged(tmp_path, version):
    path = tmp_path / "tds.db"
    before = _with_user_version(path, version)
    store = Store(path)
    with pytest.raises(SchemaVersionError, match=f"schema version {version}, which no release of this software "
                                                 "writes") as refused:
        await store.open()
    assert "damaged or not a TDS Connector database" in refused.value.message
    assert path.read_bytes() == before
    await store.close()


def test_migrate_refuses_too_and_changes_nothing(tmp_path):
    # The same check guards every path that migrates (``tds init`` and the tools use migrate() directly).
    path = tmp_path / "tds.db"
    _with_user_version(path, LATEST + 1)
    db = Database(sqlite3.connect(path, isolation_level=None))
    try:
        with pytest.raises(SchemaVersionError):
            migrate(db)
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["kept"]
    finally:
        db.conn.close()


async def test_a_file_that_is_no_database_is_a_storage_error_not_a_traceback(tmp_path):
    path = tmp_path / "tds.db"
    path.write_bytes(b"not a database, but something else entirely " * 20)
    store = Store(path)
    with pytest.raises(StorageError, match="cannot be read as a database"):
        await store.open()
    await store.close()


def test_a_failing_migration_names_itself_and_leaves_the_version_before_it(tmp_path, monkeypatch):
    from connector.store import db as store_db

    path = tmp_path / "tds.db"
    monkeypatch.setattr(store_db, "MIGRATIONS", [*MIGRATIONS, ["CREATE TABLE participants (x)"]])
    db = Database(sqlite3.connect(path, isolation_level=None))
    try:
        with pytest.raises(StorageError, match=f"schema migration {LATEST + 1} failed .*stays at schema {LATEST}"):
            migrate(db)
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    finally:
        db.conn.close()
