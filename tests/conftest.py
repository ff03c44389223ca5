from __future__ import annotations

import pytest

from connector.logging import configure
from connector.testing import NodeFactory

# Tests log JSON lines like a running node (and never render tracebacks with their locals).
configure("debug")


@pytest.fixture(autouse=True)
def json_logs_down_to_debug():
    """Every test starts with the logging above, whatever an earlier one configured (a CLI command run in
    the test process configures the level its node's config names)."""
    configure("debug")


@pytest.fixture(autouse=True)
def sqlite_store(request, monkeypatch):
    """``@pytest.mark.sqlite_store``: the test is about the SQLite store itself (its file, its backups, its
    migrations from earlier releases), so its nodes keep SQLite even under ``make test-postgres``."""
    if request.node.get_closest_marker("sqlite_store") is not None:
        monkeypatch.delenv("TDS_STORE", raising=False)


@pytest.fixture
def postgres_dsn():
    """The PostgreSQL database the tests use (``connector.testing.postgres_test_dsn``); skips, saying why, when
    it cannot be used."""
    from connector.testing import postgres_test_dsn, postgres_unreachable

    dsn = postgres_test_dsn()
    why = postgres_unreachable(dsn)
    if why is not None:
        pytest.skip(why)
    return dsn


@pytest.fixture
def postgres_schema(postgres_dsn):
    """A fresh schema in :func:`postgres_dsn`'s database, as a store location; dropped at the end."""
    import uuid

    import psycopg

    from connector.store import pg

    dsn = postgres_dsn
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield pg.PgLocation.parse(dsn, schema=schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def nodes_on_postgres(postgres_dsn, monkeypatch):
    """Nodes initialised from here keep their stores on :func:`postgres_dsn`'s server (``TDS_STORE``), each in a
    schema under a prefix of this test's own (yielded); those schemas are dropped at the end (stop the nodes
    first)."""
    import secrets

    import psycopg

    from connector.store import pg

    prefix = f"n{secrets.token_hex(5)}"
    monkeypatch.setenv("TDS_STORE", f"{postgres_dsn}?schema={prefix}")
    yield prefix
    with psycopg.connect(pg.PgLocation.parse(postgres_dsn).dsn, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                    [f"{prefix}\\_%"]).fetchall():
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def nodes(tmp_path):
    """Nodes on 127.0.0.1 in the test's folder, all stopped at the end; every DSP message they sent must
    validate against the DSP 2025-1 schemas."""
    factory = NodeFactory(tmp_path)
    yield factory
    await factory.close()
    assert factory.invalid == [], "messages that do not validate against the DSP schemas"


@pytest.fixture(scope="session", autouse=True)
def postgres_schemas_dropped():
    """Under ``make test-postgres`` (``TDS_STORE`` set) every node keeps its data in a schema of its own on the
    server, named after the run (a prefix of its own, so that runs side by side stay apart) and the node's
    folder: the run's schemas are dropped when it ends."""
    import os
    import secrets
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from connector.store import pg

    url = os.environ.get("TDS_STORE", "")
    if not pg.is_postgres_url(url):
        yield
        return
    import psycopg

    prefix = f"t{os.getpid()}{secrets.token_hex(3)}"
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"] + [("schema", prefix)]
    os.environ["TDS_STORE"] = urlunsplit(parts._replace(query=urlencode(query)))
    try:
        yield
    finally:
        os.environ["TDS_STORE"] = url
        with psycopg.connect(pg.PgLocation.parse(url).dsn, autocommit=True) as conn:
            for (name,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname ~ %s",
                                        [f"^{prefix}_[0-9a-f]{{16}}$"]).fetchall():
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
