"""The store: migrations, group commit with per-job rollback, the persisted nonce cache."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

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
    tables = await store.read(lambda db: {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                                                  "WHERE type = 'table'")})
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


async def test_a_claimed_nonce_is_refused_while_its_row_is_in_flight_and_after_it_is_committed(tmp_path):
    path = tmp_path / "c.db"
    s = Store(path)
    await s.open()
    repo = SqliteRepository(s)
    try:
        stored = await repo.claim_nonce("did:x#k", "abc", 2_000_000_000, 1_000)
        assert stored is not None and not stored.done()  # claimed at once; its row goes with the next commit
        assert await repo.claim_nonce("did:x#k", "abc", 2_000_000_000, 1_000) is None  # a replay in flight
        assert await stored is True
        assert await repo.claim_nonce("did:x#k", "abc", 2_000_000_000, 1_000) is None  # a replay, committed
        assert await SqliteRepository(s).claim_nonce("did:x#k", "abc", 2_000_000_000, 1_000) is None
        other = await repo.claim_nonce("did:y#k", "abc", 2_000_000_000, 1_000)
        assert other is not None and await other
    finally:
        await s.close()
    s2 = Store(path)
    await s2.open()
    try:  # persisted: a restart does not reopen the window
        assert await SqliteRepository(s2).claim_nonce("did:x#k", "abc", 2_000_000_000, 1_001) is None
    finally:
        await s2.close()


async def test_a_write_queued_after_a_claim_commits_with_the_nonce_or_after_it(store):
    repo = SqliteRepository(store)
    await repo.add_participant(Participant("p", "p", "did:web:x", "P", "CN", created_at="t"))
    stored = await repo.claim_nonce("did:x#k", "n-1", 2_000_000_000, 1_000)
    assert stored is not None
    nonce_there = await store.write(lambda db: db.execute(
        "SELECT count(*) FROM seen_nonces WHERE nonce = 'n-1'").fetchone()[0], durable=True)
    assert nonce_there == 1  # the write saw the nonce's row: committed before it, or earlier in its transaction
    assert stored.done() and stored.result() is True


async def test_a_held_job_commits_without_another_write(store):
    held = store.submit(lambda db: db.execute("INSERT INTO seen_nonces VALUES ('k', 'held', 1)"), hold=True)
    await asyncio.wait_for(held, 5)
    assert await store.lookup(lambda db: db.execute(
        "SELECT count(*) FROM seen_nonces WHERE nonce = 'held'").fetchone()[0]) == 1


async def test_a_lookup_reads_on_the_calling_thread_what_was_committed(store):
    await store.write(lambda db: db.execute("INSERT INTO seen_nonces VALUES ('k', 'seen', 1)"))
    thread, count = await store.lookup(lambda db: (threading.get_ident(), db.execute(
        "SELECT count(*) FROM seen_nonces WHERE nonce = 'seen'").fetchone()[0]))
    assert count == 1 and thread == threading.get_ident()
    with pytest.raises(sqlite3.OperationalError):  # a read connection
        await store.lookup(lambda db: db.execute("DELETE FROM seen_nonces"))


@pytest.mark.parametrize("pid", ["consumer_pid", "provider_pid"])
async def test_a_reopened_negotiation_is_found_through_its_pids_index(store, pid):
    from connector.protocol.negotiation import Role, State
    from connector.store.records import NegotiationRecord
    from connector.store.repository import ContractRepository

    await SqliteRepository(store).add_participant(Participant("p", "p", "did:web:x", "P", "CN", created_at="t"))
    contracts = ContractRepository(store)
    for i in range(3):
        await contracts.create_negotiation(NegotiationRecord(
            participant_id="p", id=f"n-{i}", role=Role.PROVIDER, state=State.REQUESTED, counterparty_did="did:web:c",
            **{pid: f"peer-{i}"}, created_at="t", updated_at="t"), "message-in")
    statements: list[str] = []
    await store.lookup(lambda db: db.conn.set_trace_callback(statements.append))
    try:
        found = await contracts.negotiation_by_pid("p", Role.PROVIDER, "did:web:c", **{pid: "peer-1"})
    finally:
        await store.lookup(lambda db: db.conn.set_trace_callback(None))
    assert found is not None and found.id == "n-1"
    [query] = [s for s in statements if s.startswith("SELECT")]
    plan = await store.lookup(lambda db: db.execute(f"EXPLAIN QUERY PLAN {query}").fetchall())
    # By the pid's index, not by walking every negotiation the participant ever had.
    assert any(f"USING INDEX negotiations_{pid}" in str(row) for row in plan), plan

def test_a_connection_runs_each_statement_as_given(tmp_path):
    import sqlite3

    from connector.store.sqlite import Database

    db = Database(sqlite3.connect(tmp_path / "t.db", isolation_level=None))
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("BEGIN")
    # A write whose rows are never read takes effect all the same, and nothing but it ran: no savepoint around it.
    db.query("INSERT INTO t (name) VALUES (?) RETURNING id", ["a"])
    assert db.conn.in_transaction
    db.execute("COMMIT")
    assert list(db.query("SELECT * FROM t")) == [{"id": 1, "name": "a"}]
    assert list(db.query("SELECT * FROM t WHERE name = :n", {"n": "a"})) == [{"id": 1, "name": "a"}]
    db.executemany("INSERT INTO t (name) VALUES (?)", [["b"], ["c"]])
    assert db.execute("SELECT count(*) FROM t").fetchone() == (3,)
    # A column named twice by a join keeps both values.
    assert list(db.query("SELECT x.id, y.id FROM t x JOIN t y ON y.id = x.id + 1 WHERE x.id = 1")) == [
        {"id": 1, "id_2": 2}]
    with pytest.raises(ValueError, match="execute"):
        db.query("UPDATE t SET name = 'z' WHERE id = 99")


async def test_a_re_requested_transfer_is_found_through_its_consumer_pid_index(store):
    from connector.protocol.negotiation import Role
    from connector.protocol.transfer import State
    from connector.store.records import TransferRecord
    from connector.store.repository import TransferRepository

    await SqliteRepository(store).add_participant(Participant("p", "p", "did:web:x", "P", "CN", created_at="t"))
    transfers = TransferRepository(store)
    for i in range(3):
        await transfers.create(TransferRecord(
            participant_id="p", id=f"t-{i}", role=Role.PROVIDER, state=State.REQUESTED, counterparty_did="did:web:c",
            agreement_id="a", provider_pid=f"t-{i}", consumer_pid=f"peer-{i}", created_at="t", updated_at="t"),
            "message-in")
    statements: list[str] = []
    await store.lookup(lambda db: db.conn.set_trace_callback(statements.append))
    try:
        found = await transfers.by_consumer_pid("p", "did:web:c", "peer-1")
    finally:
        await store.lookup(lambda db: db.conn.set_trace_callback(None))
    assert found is not None and found.id == "t-1"
    [query] = [s for s in statements if s.startswith("SELECT")]
    plan = await store.lookup(lambda db: db.execute(f"EXPLAIN QUERY PLAN {query}").fetchall())
    # By the pid's index, not by walking every transfer the participant ever had.
    assert any("USING INDEX transfers_consumer_pid" in str(row) for row in plan), plan
