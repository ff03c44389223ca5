"""Node processes sharing a PostgreSQL store (connector.services.leases): heartbeats by the server's clock, the
count of live processes, and the take-over called after each heartbeat."""

from __future__ import annotations

import pytest

from connector.services.leases import Leases
from connector.store.db import Store


@pytest.fixture
def location(postgres_schema):
    return postgres_schema


async def test_processes_count_each_other_and_a_stopped_one_leaves(location):
    first, second = Store(location), Store(location)
    await first.open()
    await second.open()
    adopted: list[str] = []

    async def adopt() -> int:
        adopted.append("called")
        return 0

    split: list[int] = []
    a = Leases(first, adopters=[adopt], processes=split.append)
    b = Leases(second)
    try:
        await a.register()
        await b.register()
        assert first.process_id and second.process_id and first.process_id != second.process_id
        assert await a.tick() == 0
        assert a.alive == 2 and split == [2] and adopted == ["called"]
        # The server's clock is the one heartbeats are compared by.
        assert abs(first.clock_offset) < 60
        await b.stop()
        await a.tick()
        assert a.alive == 1 and split == [2, 1]
    finally:
        await a.stop()
        await first.close()
        await second.close()


async def test_a_process_whose_heartbeat_ran_out_is_not_counted(location):
    store = Store(location)
    await store.open()
    leases = Leases(store)
    try:
        await leases.register()
        await store.write(lambda db: db.execute(
            "INSERT INTO node_processes (id, host, pid, started_at, alive_until) VALUES (?, ?, ?, ?, ?)",
            ["gone", "h", 1, 0.0, store.now() - 30]))
        await leases.tick()
        assert leases.alive == 1
        # Long dead rows are forgotten.
        await store.write(lambda db: db.execute("UPDATE node_processes SET alive_until = ? WHERE id = 'gone'",
                                                [store.now() - 10_000]))
        await leases.tick()
        rows = await store.read(lambda db: db.execute("SELECT id FROM node_processes ORDER BY id").fetchall())
        assert rows == [(store.process_id,)]
    finally:
        await leases.stop()
        await store.close()


async def test_nothing_runs_on_sqlite(tmp_path):
    store = Store(tmp_path / "tds.db")
    await store.open()
    leases = Leases(store)
    try:
        await leases.register()
        leases.start()
        assert store.process_id is None and not leases.shared
    finally:
        await leases.stop()
        await store.close()
