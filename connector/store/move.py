"""Moving a stopped node's data from its SQLite file to a PostgreSQL store (``tds store migrate``).

Theory of operation. The node must be stopped, and stays stopped until its configuration names the new store:

1. The SQLite file is opened for reading only (``query_only``) in SQLite's exclusive locking mode. Every
   connection of a running node keeps the database open (a WAL reader holds a shared lock for as long as it is
   open), so the exclusive lock is refused while the node, or any other command, has it open: that is how a
   running node is detected, in this process or another. Once had, the lock is kept to the end, so that no node
   starts on the file while its data is being moved. Its content is not changed (a WAL left by a node that was
   killed is folded into the file when the connection closes, as any last connection does).
2. Its schema version must be this release's: the copy moves tables as this release's migrations made them.
3. The target schema is created or migrated as a node would (:func:`connector.store.db.migrate`), and must hold
   no node's data (no participant): a migration never merges two nodes, nor runs twice into one schema.
4. Every table is copied in one PostgreSQL transaction, under the store's advisory write lock (the one every
   node process takes before it writes): the columns both sides have, SQLite's implicit ``rowid`` into the
   explicit ``rowid`` column the PostgreSQL table has in its place (the store orders some tables by it), the
   full-text table's rowid (its rows are the catalog cache's ids) but not its generated ``tsvector`` columns.
   Identity columns then restart after the largest value copied.
5. Before that transaction commits, the copy is checked: every table's row count on both sides, and the head
   of every hash chain (the usage log's and the received log's last entry and last signed head per agreement).
   Any difference rolls the whole copy back.
6. The store is named on the first line of ``tds.toml`` (the rest of the file kept byte for byte), written
   whole and renamed into place; only then is the SQLite file released. The file stays where it was: a copy of
   the data as it was moved.
"""

from __future__ import annotations

import contextlib
import graphlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from connector.config import parse_config
from connector.errors import ConfigError, SchemaVersionError, StorageError
from connector.store import pg
from connector.store.db import check_schema_version, migrate
from connector.store.migrations import MIGRATIONS

#: Rows sent to PostgreSQL per ``executemany``.
BATCH_ROWS = 1000

#: The hash chains: each log table with the column holding an entry (JSON with its ``hash``), and the table of
#: its signed heads. The consumer's own log of uses (on the provider's node, of the sandbox queries it ran) and
#: the provider's copy of the consumer's log, as received.
CHAINS = (("usage_log", "entry", "usage_heads"), ("received_entries", "entry", "received_heads"))

#: The SQLite tables that are not the node's: SQLite's own, and the shadow tables of the FTS5 table (whose
#: content is copied through the FTS5 table itself).
_SKIPPED_PREFIXES = ("sqlite_", "catalog_cache_text_")


class BadStoreUrl(StorageError):
    """The target is not a PostgreSQL URL the store can use (a usage error: nothing was done)."""


class StoreUnreachable(StorageError):
    """The PostgreSQL server cannot be reached, or refuses the connection (nothing was done)."""


@dataclass
class MoveResult:
    """What was moved, and checked, before the configuration was changed."""

    #: The SQLite file the data came from (left as it was).
    database: Path
    #: The target, as messages name it (no password).
    store: str
    #: The configuration file that now names the store, and the line it starts with (password masked).
    config_file: Path
    config_line: str
    #: Rows per table, equal on both sides (tables in the order the migrations made them).
    tables: dict[str, int] = field(default_factory=dict)
    #: Hash chains whose head (last entry and last signed head) is the same on both sides.
    chain_heads: int = 0


def target_of(url: str) -> pg.PgLocation:
    """The PostgreSQL location *url* names; :class:`BadStoreUrl` if it names none."""
    try:
        location = pg.PgLocation.parse(url)
        urlsplit(url).port  # noqa: B018 (a port that is not a number, or above 65535, raises here)
    except StorageError as exc:
        raise BadStoreUrl(exc.message.removeprefix("store: ")) from exc
    except ValueError as exc:
        raise BadStoreUrl(f"{masked(url)} is not a usable PostgreSQL URL ({exc})") from exc
    return location


def masked(url: str) -> str:
    """*url* with its password (in the user part or a ``password`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if ":" in user:
            netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in query):
        shown = urlencode([(k, "***" if k == "password" else v) for k, v in query], safe="*")
    else:
        shown = parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, shown, parts.fragment))


def move_to_postgres(database: Path, config_file: Path, url: str, *, batch: int = BATCH_ROWS) -> MoveResult:
    """Move the data of the stopped node whose SQLite file is *database* into the PostgreSQL store *url*, check
    the copy, and name the store at the top of *config_file*.

    Raises :class:`BadStoreUrl` and :class:`~connector.errors.ConfigError` (nothing done: the input is wrong),
    :class:`StoreUnreachable` (nothing done), :class:`~connector.errors.SchemaVersionError` (the file is not at
    this release's schema) and :class:`~connector.errors.StorageError` (refused or failed: the node is running,
    the target holds data, the configuration names a store already, or the copy failed and was rolled back)."""
    location = target_of(url)
    _config_with_store(config_file, url)  # refused now, before anything is done, rather than after the copy
    with _source(database) as source:
        db = _connect(location)
        import psycopg

        try:
            _refuse_data(db.raw(), location)
            migrate(db, location.redacted())  # type: ignore[arg-type]  # PgDatabase stands in for Database
            result = MoveResult(database, location.redacted(), config_file, "")
            _copy(source, db, location, result, batch)
        except (psycopg.Error, sqlite3.Error) as exc:
            raise StorageError(f"the migration to {location.redacted()} failed ({_first_line(exc)}); nothing was "
                               "copied") from exc
        finally:
            db.close()
        result.config_line = _name_store(config_file, url, location)
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- the SQLite side ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _source(database: Path) -> Iterator[sqlite3.Connection]:
    """The node's SQLite file, read-only, locked against every other connection (see the module's docstring),
    in one read transaction; refused if the node is running or the schema is not this release's."""
    if not database.is_file():
        raise StorageError(f"no database at {database}: nothing to migrate")
    try:
        # mode=rw: never create a database where there is none; query_only: this connection writes nothing.
        conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None,
                               timeout=1.0)
    except sqlite3.Error as exc:
        raise StorageError(f"{database} cannot be opened: {exc}") from exc
    try:
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the lock
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                raise StorageError(f"{database} is in use: the node is running (or another command has its "
                                   "database open); stop it, then migrate") from exc
            raise StorageError(f"{database} cannot be read: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{database} cannot be read as a database: {exc}") from exc
        check_schema_version(version, database)
        known = len(MIGRATIONS)
        if version != known:
            raise SchemaVersionError(
                f"{database} has schema version {version}, this release's is {known}: start the node once with "
                "this release (it migrates the database), stop it, then migrate", found=version, known=known)
        yield conn
    finally:
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        conn.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source_tables(conn: sqlite3.Connection) -> list[str]:
    """The node's tables in the order the migrations made them."""
    return [str(name) for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")
        if not str(name).startswith(_SKIPPED_PREFIXES)]


def _copy_order(conn: sqlite3.Connection, tables: list[str]) -> list[str]:
    """*tables*, each after the tables its foreign keys name (PostgreSQL checks each row as it is inserted)."""
    known = set(tables)
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for table in tables:
        named = {str(row[2]) for row in conn.execute(f"PRAGMA foreign_key_list({_quoted(table)})")}
        sorter.add(table, *sorted((named & known) - {table}))
    return list(sorter.static_order())


# -- the PostgreSQL side ------------------------------------------------------------------------------

def _connect(location: pg.PgLocation) -> pg.PgDatabase:
    """A connection to the target, its schema created if missing. A server that cannot be reached or refuses the
    login is :class:`StoreUnreachable`; a connection string the driver does not take is :class:`BadStoreUrl`."""
    try:
        import psycopg
    except ImportError as exc:
        raise StorageError("this installation has no PostgreSQL driver: install tds-connector[postgresql] "
                           "(psycopg)") from exc
    try:
        return pg.open_database(location, pg.Dialect())
    except StorageError as exc:
        if isinstance(exc.__cause__, psycopg.OperationalError):
            raise StoreUnreachable(exc.message) from exc
        raise BadStoreUrl(exc.message) from exc
    except psycopg.Error as exc:  # connected, but the schema cannot be made or used (a missing privilege)
        raise StorageError(f"{location.redacted()}: {_first_line(exc)}") from exc


def _refuse_data(raw: Any, location: pg.PgLocation) -> None:
    """Refuse a target that holds a node's data already (any participant)."""
    from psycopg import sql

    found = raw.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                        "AND table_name = 'participants'", [location.schema]).fetchone()
    if found is None:
        return
    if raw.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(
            sql.Identifier(location.schema, "participants"))).fetchone() is not None:
        raise StorageError(f"{location.redacted()} already holds a node's data: migrate into a new or empty schema "
                           "(?schema=NAME); nothing was changed")


@dataclass(frozen=True)
class _Column:
    name: str
    identity: bool
    generated: bool


def _target_columns(raw: Any, schema: str) -> dict[str, dict[str, _Column]]:
    columns: dict[str, dict[str, _Column]] = {}
    for table, column, identity, generated in raw.execute(
            "SELECT table_name, column_name, is_identity, is_generated FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position", [schema]).fetchall():
        columns.setdefault(table, {})[column] = _Column(column, identity == "YES", generated == "ALWAYS")
    return columns


def _copy(source: sqlite3.Connection, db: pg.PgDatabase, location: pg.PgLocation, result: MoveResult,
          batch: int) -> None:
    """Copy, restart the identities, check; all in one transaction under the store's write lock."""
    import psycopg

    raw = db.raw()
    tables = _source_tables(source)
    raw.execute("BEGIN")
    try:
        raw.execute("SELECT pg_advisory_xact_lock(%s)", [location.lock_key])
        _refuse_data(raw, location)  # again, now that no node process can write
        target = _target_columns(raw, location.schema)
        missing = [t for t in tables if t not in target]
        if missing:
            raise StorageError(f"{result.database} has tables the schema {location.schema} has not "
                               f"({', '.join(missing)}): nothing was copied")
        for table in _copy_order(source, tables):
            try:
                _copy_table(source, raw, table, target[table], batch)
            except psycopg.Error as exc:
                raise StorageError(f"copying table {table} failed ({_first_line(exc)}); nothing was copied") from exc
        _restart_identities(raw, target)
        result.tables = _check_counts(source, raw, tables, location)
        result.chain_heads = _check_chains(source, raw, location)
        raw.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            if db.in_transaction:
                raw.execute("ROLLBACK")
        raise


def _copy_table(source: sqlite3.Connection, raw: Any, table: str, target: dict[str, _Column], batch: int) -> None:
    from psycopg import sql

    names = [str(row[1]) for row in source.execute(f"PRAGMA table_info({_quoted(table)})")]
    lost = [n for n in names if n not in target]
    if lost:  # the same migrations made both: a column PostgreSQL lacks would be data left behind
        raise StorageError(f"table {table}: the schema has no column {', '.join(lost)}; nothing was copied")
    columns = [n for n in names if not target[n].generated]
    selected = [_quoted(c) for c in columns]
    rowid = target.get("rowid")
    if rowid is not None and not rowid.generated and "rowid" not in names:
        columns.insert(0, "rowid")  # SQLite's implicit rowid, explicit on PostgreSQL
        selected.insert(0, "rowid")
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    rows = source.execute(f"SELECT {', '.join(selected)} FROM {_quoted(table)}")
    with raw.cursor() as cursor:
        while chunk := rows.fetchmany(batch):
            cursor.executemany(insert, chunk)


def _restart_identities(raw: Any, target: dict[str, dict[str, _Column]]) -> None:
    """Each identity column goes on after the largest value copied (the next row a node adds gets a new one)."""
    from psycopg import sql

    for table, columns in sorted(target.items()):
        for column in columns.values():
            if not column.identity:
                continue
            largest = raw.execute(sql.SQL("SELECT max({}) FROM {}").format(
                sql.Identifier(column.name), sql.Identifier(table))).fetchone()[0]
            if largest is not None:
                raw.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} RESTART WITH {}").format(
                    sql.Identifier(table), sql.Identifier(column.name), sql.SQL(str(int(largest) + 1))))


def _check_counts(source: sqlite3.Connection, raw: Any, tables: list[str], location: pg.PgLocation
                  ) -> dict[str, int]:
    from psycopg import sql

    counts: dict[str, int] = {}
    for table in tables:
        here = int(source.execute(f"SELECT count(*) FROM {_quoted(table)}").fetchone()[0])
        there = int(raw.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0])
        if here != there:
            raise StorageError(f"table {table}: {here} rows in SQLite but {there} in the schema {location.schema} "
                               "after the copy; nothing was copied")
        counts[table] = here
    return counts


#: Each chain's last row (by ``seq``) per agreement; the same SQL on both sides.
_LAST = ("SELECT t.participant_id, t.agreement_id, t.seq, t.{value} FROM {table} t JOIN "
         "(SELECT participant_id, agreement_id, MAX(seq) AS seq FROM {table} GROUP BY participant_id, agreement_id) m "
         "ON m.participant_id = t.participant_id AND m.agreement_id = t.agreement_id AND m.seq = t.seq")


def _heads(rows: list[tuple[Any, ...]], *, entries: bool) -> dict[tuple[str, str], tuple[int, str]]:
    """(participant, agreement) → (last seq, the entry's own hash (*entries*), else the SHA-256 of the signed head's
    text)."""
    heads: dict[tuple[str, str], tuple[int, str]] = {}
    for participant_id, agreement_id, seq, value in rows:
        text = str(value)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if entries:
            try:
                digest = str(json.loads(text)["hash"])
            except (ValueError, KeyError, TypeError):
                digest = f"an entry without a hash (SHA-256 {digest})"
        heads[(str(participant_id), str(agreement_id))] = (int(seq), digest)
    return heads


def _check_chains(source: sqlite3.Connection, raw: Any, location: pg.PgLocation) -> int:
    """Compare every chain's head on both sides; return how many chains there are."""
    chains = 0
    for log, value, signed in CHAINS:
        for table, column, entries in ((log, value, True), (signed, "head", False)):
            query = _LAST.format(value=column, table=table)
            here = _heads(source.execute(query).fetchall(), entries=entries)
            there = _heads(raw.execute(query).fetchall(), entries=entries)
            if here != there:
                differ = sorted(k for k in here.keys() | there.keys() if here.get(k) != there.get(k))
                participant_id, agreement_id = differ[0]
                raise StorageError(f"{table}: the head of {participant_id}'s chain for agreement {agreement_id} "
                                   f"is {here.get(differ[0])} in SQLite but {there.get(differ[0])} in the schema "
                                   f"{location.schema} after the copy; nothing was copied")
            if entries:
                chains += len(here)
    return chains


# -- the configuration --------------------------------------------------------------------------------

def _config_with_store(config_file: Path, url: str) -> bytes:
    """The configuration with ``store = "URL"`` as its first line, the rest byte for byte as it is. Refused if it
    names a store already, or if the line would not be read as the store (the file's own text overriding it)."""
    try:
        data = config_file.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"no {config_file.name} in {config_file.parent}: not a node's data folder") from exc
    except OSError as exc:
        raise ConfigError(f"{config_file} cannot be read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config_file} is not UTF-8 text") from exc
    config = parse_config(text)
    if config.store:
        raise StorageError(f'{config_file} names a store already (store = "{masked(config.store)}"): the node\'s '
                           "data is there; nothing was changed")
    line = f"store = {_toml_string(url)}\n"
    try:
        named = parse_config(line + text).store
    except ConfigError as exc:
        raise ConfigError(f"{config_file}: the line store = … cannot be put at its top ({exc.message})") from exc
    if named != url:
        raise ConfigError(f"{config_file}: a store line at its top would not be read as the store")
    return line.encode() + data


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _name_store(config_file: Path, url: str, location: pg.PgLocation) -> str:
    """Put ``store = "URL"`` on the first line of *config_file*, the rest kept byte for byte; written whole and
    renamed into place (a crash leaves the old file or the new one). Returns the line, password masked."""
    from connector import filemodes

    shown = f"store = {_toml_string(masked(url))}"
    try:
        data = _config_with_store(config_file, url)  # read again: the file as it is now
        part = config_file.with_name(config_file.name + ".part")
        try:
            filemodes.write_private(part, data, durable=True)
            os.replace(part, config_file)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        fd = os.open(config_file.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, ConfigError, StorageError) as exc:
        reason = exc.message if isinstance(exc, ConfigError | StorageError) else (exc.strerror or str(exc))
        raise StorageError(f"the data is in {location.redacted()} and checked, but {config_file} was not changed "
                           f"({reason}): put the line {shown} at its top by hand before the node starts") from exc
    return shown
