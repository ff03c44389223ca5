"""``tds store migrate``: a stopped node's data moved from its SQLite file to PostgreSQL, checked, and the node
started again on it; and the refusals, each one readable line that changes nothing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.bootstrap import DB_FILE, init_node
from connector.cli import main
from connector.config import CONFIG_FILE
from connector.node import Node
from connector.services.usage import check_log
from connector.store.migrations import MIGRATIONS
from connector.testing import free_port, postgres_test_dsn
from usage_policies import templates

SERVER = postgres_test_dsn()


@pytest.fixture(autouse=True)
def sqlite_nodes(monkeypatch):
    """The nodes here start on SQLite, whatever store the suite runs its nodes on (``make test-postgres``)."""
    monkeypatch.delenv("TDS_STORE", raising=False)


@pytest.fixture
def postgres(postgres_dsn):
    """A connection to the test server (the test is skipped if there is none) and a fresh schema name; the
    schema is dropped at the end."""
    import psycopg

    conn = psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=5)
    schema = f"tds_move_{uuid.uuid4().hex[:12]}"
    try:
        yield conn, schema
    finally:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


def migrate(data_dir: Path, url: str, *extra: str):
    return CliRunner().invoke(main, ["store", "migrate", "--dir", str(data_dir), "--to", url, *extra])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stopped_node(root: Path) -> Path:
    """A node's data folder, on SQLite at this release's schema (as ``tds init`` leaves it)."""
    data_dir = root / "node"
    init_node(data_dir, name="acme", legal_name="ACME Co.", port=free_port(), management_port=free_port(),
              region="CN-GD", dev_mode=True)
    return data_dir


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


async def agreement_with_uses(provider, consumer, uses: int) -> str:
    await provider.client.add_asset({"id": "qi", "title": "Quality inspections"})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("rnd", templates.combine(
        templates.purpose("qi", "R&D"), templates.max_uses("qi", 10), templates.log_each_use("qi")))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="rnd",
                                                  assets=["qi"])
    catalog = await consumer.client.catalog(provider.public_url)
    started = await consumer.client.negotiate(provider.public_url, catalog["dataset"][0]["hasPolicy"][0]["@id"])
    final = await consumer.client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    agreement = str(final["agreement"]["@id"])
    for i in range(uses):
        assert (await consumer.client.use(agreement, f"use-{i}", purpose="R&D"))["decision"] == "permit"
    return agreement


async def test_a_node_moves_to_postgres_and_goes_on_where_it_stopped(nodes, postgres):
    conn, schema = postgres
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    # The consumer (the node moved) has a catalog of its own as well as an agreement and a usage log.
    await consumer.client.add_asset({"id": "own", "title": "Parts list"})
    await consumer.client.add_policy("own-open", {"@type": "Set", "permission": [{"action": "use"}]})
    agreement = await agreement_with_uses(provider, consumer, uses=2)
    await consumer.client.crawl()  # the catalog cache, with its full-text table
    found = await consumer.client.search("inspections")
    assert found["total"] == 1, found
    before = await consumer.client.usage_log(agreement)
    assert before["entries"][-1]["uses"] == 2
    await consumer.node.stop()
    database, config = consumer.data_dir / DB_FILE, consumer.data_dir / CONFIG_FILE
    sqlite_digest, config_text = digest(database), config.read_bytes()

    url = f"{SERVER}?schema={schema}"
    result = migrate(consumer.data_dir, url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    counts = dict(line.split() for line in lines if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts["participants"] == "1" and counts["assets"] == "1" and counts["agreements"] == "1"
    assert counts["usage_log"] == "2" and counts["catalog_cache_text"] == "1", result.output
    assert "1 chain head verified" in lines
    assert f'wrote store = "{url}" at the top of {config}' in result.output
    assert config.read_bytes() == f'store = "{url}"\n'.encode() + config_text  # the rest byte for byte
    assert digest(database) == sqlite_digest  # the SQLite file is left as it was
    assert conn.execute(f"SELECT count(*) FROM {schema}.usage_log").fetchone()[0] == 2

    consumer.node = Node(consumer.data_dir)  # its tds.toml names the store now
    await consumer.node.start()
    assert consumer.node.store.postgres
    assert [a["id"] for a in await consumer.client.entries("assets")] == ["own"]
    assert [p["id"] for p in await consumer.client.entries("policies")] == ["own-open"]
    assert [a["id"] for a in await consumer.client.agreements()] == [agreement]
    again = await consumer.client.search("inspections")  # found by its words on PostgreSQL
    assert [(o["offerId"], o["title"]) for o in again["offers"]] == [(o["offerId"], o["title"])
                                                                     for o in found["offers"]]
    log = await consumer.client.usage_log(agreement)
    assert log["entries"] == before["entries"]
    assert check_log(log["entries"], log["heads"], log["didDocument"], log.get("acknowledgement"),
                     log.get("providerDidDocument")) is None  # what `tds log verify` checks
    more = await consumer.client.use(agreement, "after-the-move", purpose="R&D")
    assert more["decision"] == "permit" and more["seq"] == before["entries"][-1]["seq"] + 1
    assert (await consumer.client.usage(agreement))["uses"] == 3
    log = await consumer.client.usage_log(agreement)
    assert check_log(log["entries"], log["heads"], log["didDocument"], log.get("acknowledgement"),
                     log.get("providerDidDocument")) is None
    await consumer.client.create_token("after-the-move")  # rowids go on after the ones copied
    assert conn.execute(f"SELECT count(*) = count(DISTINCT rowid) AND count(*) = 3 FROM {schema}.tokens"
                        ).fetchone()[0]
    assert digest(database) == sqlite_digest  # the node on PostgreSQL does not touch it


async def test_a_target_that_holds_data_is_refused_and_nothing_changes(tmp_path, postgres):
    conn, schema = postgres
    data_dir = stopped_node(tmp_path)
    config = data_dir / CONFIG_FILE
    original = config.read_bytes()
    url = f"{SERVER}?schema={schema}"
    first = migrate(data_dir, url, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["tables"]["participants"] == 1 and summary["chainHeadsVerified"] == 0
    assert summary["store"].endswith(f"(schema {schema})") and summary["configLine"] == f'store = "{url}"'
    config.write_bytes(original)  # as if the operator took the store out of tds.toml again
    rows = conn.execute(f"SELECT count(*) FROM {schema}.tokens").fetchone()[0]

    result = migrate(data_dir, url)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "already holds a node's data" in line and f"schema {schema}" in line
    assert config.read_bytes() == original
    assert conn.execute(f"SELECT count(*) FROM {schema}.tokens").fetchone()[0] == rows


def test_a_copy_that_does_not_check_out_is_rolled_back(tmp_path, postgres, monkeypatch):
    from connector.store import move

    conn, schema = postgres
    data_dir = stopped_node(tmp_path)
    config = (data_dir / CONFIG_FILE).read_bytes()
    copy_table = move._copy_table
    monkeypatch.setattr(move, "_copy_table", lambda source, raw, table, *rest: (
        None if table == "tokens" else copy_table(source, raw, table, *rest)))  # a table left out
    result = migrate(data_dir, f"{SERVER}?schema={schema}")
    assert result.exit_code == 1
    assert "table tokens: 2 rows in SQLite but 0" in one_error_line(result)
    assert conn.execute(f"SELECT count(*) FROM {schema}.participants").fetchone()[0] == 0  # nothing committed
    assert (data_dir / CONFIG_FILE).read_bytes() == config


@pytest.mark.parametrize(("url", "code", "says"), [
    ("mysql://root@127.0.0.1:3306/tds", 2, "is not a PostgreSQL URL"),
    ("postgresql://postgres@127.0.0.1:99999/test", 2, "is not a usable PostgreSQL URL"),
    ("postgresql://postgres@127.0.0.1:5432/test?schema=Not-A-Name", 2, "must be a lower-case SQL name"),
    ("postgresql://postgres:s3cret@127.0.0.1:1/test", 3, "Connection refused"),
])
def test_a_bad_or_unreachable_target_is_one_readable_line(tmp_path, url, code, says):
    data_dir = stopped_node(tmp_path)
    config = (data_dir / CONFIG_FILE).read_bytes()
    result = migrate(data_dir, url)
    assert result.exit_code == code, result.output
    assert says in one_error_line(result)
    assert "s3cret" not in result.output  # never a password
    assert (data_dir / CONFIG_FILE).read_bytes() == config


async def test_a_running_node_is_refused(nodes, postgres):
    conn, schema = postgres
    running = await nodes.start("acme")
    config = (running.data_dir / CONFIG_FILE).read_bytes()
    result = migrate(running.data_dir, f"{SERVER}?schema={schema}")
    assert result.exit_code == 1
    assert "the node is running" in one_error_line(result)
    assert (running.data_dir / CONFIG_FILE).read_bytes() == config
    assert conn.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                        [schema]).fetchone() is None  # refused before the server was asked anything
    assert (await running.client.participant())["name"] == "acme"  # the node runs on, undisturbed


def test_a_database_of_an_earlier_schema_is_refused(tmp_path):
    data_dir = stopped_node(tmp_path)
    with contextlib.closing(sqlite3.connect(data_dir / DB_FILE)) as db:  # closed: the node is stopped
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    result = migrate(data_dir, f"{SERVER}?schema=tds_never_made")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert f"schema version {len(MIGRATIONS) - 1}" in line and "start the node once with this release" in line


def test_a_node_already_on_postgres_is_refused(tmp_path):
    data_dir = stopped_node(tmp_path)
    config = data_dir / CONFIG_FILE
    config.write_bytes(b'store = "postgresql://postgres:s3cret@127.0.0.1:5432/test?schema=elsewhere"\n'
                       + config.read_bytes())
    before = config.read_bytes()
    result = migrate(data_dir, f"{SERVER}?schema=tds_never_made")
    assert result.exit_code == 1
    assert "names a store already" in one_error_line(result) and "s3cret" not in result.output
    assert config.read_bytes() == before


def test_a_config_whose_store_line_would_not_be_read_is_refused_before_the_copy(tmp_path):
    data_dir = stopped_node(tmp_path)
    config = data_dir / CONFIG_FILE
    config.write_bytes(b'store = ""\n' + config.read_bytes())  # the default, written out: a second line clashes
    before = config.read_bytes()
    result = migrate(data_dir, f"{SERVER}?schema=tds_never_made")
    assert result.exit_code == 2
    assert "cannot be put at its top" in one_error_line(result)
    assert config.read_bytes() == before
