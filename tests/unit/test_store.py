"""The store: migrations, group commit with per-job rollback, the persisted nonce cache."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from connector.store.db import Store, migrate
from connector.store.migrations import MIGRATIONS
from connector.store.repository import Participant, SqliteRepository


@pytest.fixture
async def store(tmp_path):
    s = Store(tmp_path / "t.db")
    await s.open()
    yield s
    await s.close()


async def test_migrations_apply_once(store):
    version = await store.read(lambda db: db.execute("PRAGMA user_version").fetchone()[0])
    assert version == len(MIGRATIONS)
    assert store.read_sync(migrate) == len(MIGRATIONS)
    tables = await store.read(lambda db: set(db.table_names()))
    assert {"participants", "tokens", "seen_nonces", "peers"} <= tables


async def test_wal_and_full_sync(store):
    mode = await store.read(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"


async def test_concurrent_writes_share_commits_and_failures_roll_back_alone(store):
    repo = SqliteRepository(store)
    await repo.add_participant(Participant("p", "p", "did:web:x", "P", "CN", created_at="t"))
    store.commits = store.jobs = 0

    def insert(i):
        def job(db):
            if i % 10 == 0:
                db.execute("INSERT INTO seen_nonces VALUES (?, ?, ?)", ["k", f"n{i}", 1])
                raise ValueError("job fails after writing")
            db.execute("INSERT INTO seen_nonces VALUES (?, ?, ?)", ["k", f"n{i}", 1])
            return i
        return job

    results = await asyncio.gather(*(store.write(insert(i)) for i in range(200)), return_exceptions=True)
    assert sum(isinstance(r, ValueError) for r in results) == 20
    assert [r for r in results if isinstance(r, int)] == [i for i in range(200) if i % 10]
    count = await store.read(lambda db: db.execute("SELECT count(*) FROM seen_nonces").fetchone()[0])
    assert count == 180  # the failed jobs left nothing behind
    assert store.jobs == 200 and store.commits < 200  # several jobs shared a commit


async def test_nonce_cache_survives_reopen(tmp_path):
    path = tmp_path / "n.db"
    s = Store(path)
    await s.open()
    assert await SqliteRepository(s).remember_nonce("did:x#k", "abc", 2_000_000_000, 1_000)
    assert not await SqliteRepository(s).remember_nonce("did:x#k", "abc", 2_000_000_000, 1_000)
    await s.close()
    s2 = Store(path)
    await s2.open()
    try:
        assert not await SqliteRepository(s2).remember_nonce("did:x#k", "abc", 2_000_000_000, 1_001)
        assert await SqliteRepository(s2).remember_nonce("did:y#k", "abc", 2_000_000_000, 1_001)
    finally:
        await s2.close()


async def test_readers_cannot_write(store):
    with pytest.raises(sqlite3.OperationalError):
        await store.read(lambda db: db.execute("DELETE FROM participants"))
