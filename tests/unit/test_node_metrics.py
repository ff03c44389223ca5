"""What the node's metrics are made of, without a node: the store's commit timings and write check, the
figures counted in the store, the event loop's lag task, the kinds of peer failure, and a registry per node."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.errors import OutboundRefused
from connector.metrics import LoopLag, Metrics
from connector.net.client import failure_kind
from connector.store import stats
from connector.store.db import Store
from connector.store.migrations import MIGRATIONS
from connector.store.repository import Participant, SqliteRepository


@pytest.fixture
async def timed(tmp_path):
    """A store that tells each commit's duration (and durability) to a list."""
    commits: list[tuple[float, bool]] = []
    store = Store(tmp_path / "t.db", commit_seconds=lambda seconds, durable: commits.append((seconds, durable)))
    await store.open()
    yield store, commits
    await store.close()


async def test_every_commit_is_timed_with_its_durability(timed):
    store, commits = timed
    await store.write(lambda db: None)
    await store.write(lambda db: None, durable=True)
    assert [durable for _, durable in commits] == [False, True]
    assert all(0 <= seconds < 5 for seconds, _ in commits)


async def test_the_schema_version_is_known_once_open(timed):
    store, _ = timed
    assert store.schema_version == len(MIGRATIONS)


async def test_a_failing_commit_is_not_timed_and_makes_the_store_not_writable_until_one_commits(timed):
    store, commits = timed
    assert await store.check_writable() is None

    def fail(_db) -> None:
        raise OSError("disk I/O error")

    store.batch_hooks.append(fail)
    problem = await store.check_writable()
    assert problem is not None and "disk I/O error" in problem and store.commit_failure == problem
    store.batch_hooks.remove(fail)
    count = len(commits)
    assert await store.check_writable() is None and store.commit_failure is None
    assert len(commits) == count + 1


async def test_a_metric_that_fails_does_not_fail_the_commit(tmp_path):
    def broken(_seconds: float, _durable: bool) -> None:
        raise RuntimeError("metric")

    store = Store(tmp_path / "t.db", commit_seconds=broken)
    await store.open()
    try:
        assert await store.write(lambda db: 7) == 7
    finally:
        await store.close()


async def test_a_closed_store_is_not_writable(tmp_path):
    store = Store(tmp_path / "t.db")
    assert await store.check_writable() == "the store's writer is not running"


async def test_processes_and_anomalies_are_counted_by_role_state_and_kind(timed):
    store, _ = timed
    await SqliteRepository(store).add_participant(Participant("p1", "p", "did:web:x", "P", "CN", created_at="t"))

    def fill(db) -> None:
        for i, (role, state) in enumerate([("provider", "FINALIZED"), ("provider", "FINALIZED"),
                                           ("consumer", "REQUESTED")]):
            db.execute("INSERT INTO negotiations (participant_id, id, role, state, counterparty_did, created_at, "
                       "updated_at) VALUES ('p1', ?, ?, ?, 'did:web:y', 't', 't')", [f"n{i}", role, state])
        db.execute("INSERT INTO transfers (participant_id, id, role, state, counterparty_did, agreement_id, "
                   "created_at, updated_at) VALUES ('p1', 't1', 'consumer', 'STARTED', 'did:web:y', 'a', 't', 't')")
        db.execute("INSERT INTO receipt_anomalies (participant_id, agreement_id, at, kind, detail) "
                   "VALUES ('p1', 'a', 't', 'gap', 'entries #2 to #3 are missing')")

    await store.write(fill)
    found = await stats.counts(store)
    assert found.negotiations == {("provider", "FINALIZED"): 2, ("consumer", "REQUESTED"): 1}
    assert found.transfers == {("consumer", "STARTED"): 1}
    assert found.receipt_anomalies == {"gap": 1}

    metrics = Metrics()
    text, _ = await metrics.scrape(lambda: stats.counts(store))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    assert samples[("tds_negotiations", (("role", "provider"), ("state", "FINALIZED")))] == 2
    assert samples[("tds_negotiations", (("role", "provider"), ("state", "TERMINATED")))] == 0
    assert samples[("tds_transfers", (("role", "consumer"), ("state", "STARTED")))] == 1
    assert samples[("tds_receipt_anomalies_total", (("kind", "gap"),))] == 1
    assert samples[("tds_receipt_anomalies_total", (("kind", "fork"),))] == 0


async def test_a_store_that_cannot_be_read_shows_the_last_figures(timed):
    store, _ = timed
    metrics = Metrics()
    await metrics.scrape(lambda: stats.counts(store))

    async def broken() -> stats.StoreCounts:
        raise RuntimeError("store closed")

    text, _ = await metrics.scrape(broken)
    assert b'tds_negotiations{role="provider",state="FINALIZED"} 0.0' in text


def test_each_node_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.moved("sent", 10)
    assert b'tds_transfer_bytes_total{direction="sent"} 10.0' in a.render()[0]
    assert b'tds_transfer_bytes_total{direction="sent"} 0.0' in b.render()[0]


async def test_the_lag_task_measures_how_late_the_loop_runs_and_stops_when_closed():
    seen: list[float] = []
    measured = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        measured.set()

    lag = LoopLag(observe, interval_s=0.01)
    lag.start()
    task = lag.task
    assert task is not None
    await asyncio.wait_for(measured.wait(), 5)
    await lag.close()
    assert task.done() and lag.task is None and all(v >= 0 for v in seen)
    await lag.close()  # twice is harmless


async def test_a_blocked_loop_shows_as_lag():
    seen: list[float] = []
    measured = asyncio.Event()
    now = [0.0]

    def observe(lag: float) -> None:
        seen.append(lag)
        measured.set()

    def clock() -> float:
        now[0] += 0.3  # each reading 0.3 s after the last, as if the loop was held up in between
        return now[0]

    lag = LoopLag(observe, interval_s=0.01, clock=clock)
    lag.start()
    await asyncio.wait_for(measured.wait(), 5)
    await lag.close()
    assert seen[0] == pytest.approx(0.29)


@pytest.mark.parametrize(("exc", "kind"), [
    (TimeoutError(), "timeout"),
    (ConnectionRefusedError(), "connect"),
    (aiohttp.ServerDisconnectedError(), "disconnected"),
    (ssl.SSLError(), "tls"),
    (OutboundRefused("private address"), "refused-by-guard"),
    (aiohttp.ClientError("?"), "other"),
])
def test_peer_failures_are_told_by_kind(exc, kind):
    assert failure_kind(exc) == kind


def test_the_version_the_node_reports_is_the_installed_packages() -> None:
    from importlib.metadata import version

    from connector.metrics import software_version

    assert software_version() == version("tds-connector")
