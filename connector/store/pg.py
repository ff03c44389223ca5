"""PostgreSQL as the node's store: the store's SQL, written for SQLite, run on PostgreSQL.

The repositories write their SQL once, in SQLite's dialect, against :class:`~connector.store.db.Database`.
On PostgreSQL each statement is translated once (then cached) by :class:`Dialect`:

- placeholders ``?`` and ``?N`` become ``%s`` (``?N`` may repeat: its parameter is passed once per use);
- ``INSERT OR IGNORE`` becomes ``ON CONFLICT DO NOTHING``; ``INSERT OR REPLACE`` becomes ``ON CONFLICT (primary
  key) DO UPDATE`` of every other column;
- ``json_extract(x, '$.a.b')`` becomes ``x::jsonb #>> '{a,b}'``, ``json_each(x[, '$.a'])`` becomes
  ``jsonb_array_elements_text(…)`` (its column is ``value`` as in SQLite), ``MIN``/``MAX`` of two values
  ``LEAST``/``GREATEST``, ``IFNULL`` ``COALESCE``, ``LIKE`` ``ILIKE`` (SQLite's LIKE ignores ASCII case),
  ``LIMIT -1`` ``LIMIT ALL``;
- the migrations' DDL: ``INTEGER`` is ``BIGINT`` (SQLite's integers are 64-bit), ``REAL`` ``DOUBLE PRECISION``,
  ``BLOB`` ``BYTEA``, ``INTEGER PRIMARY KEY`` an identity column, a table with SQLite's implicit ``rowid`` gets
  one explicitly, the catalog cache's FTS5 table is a plain table with a ``tsvector`` column beside it.

Parameters are sent untyped, as SQLite takes them (``'5'`` compares with an integer column and a text one
alike); ``NUMERIC`` results come back as ``int`` when whole (``SUM`` of integers is ``NUMERIC`` here,
``INTEGER`` in SQLite). A driver error is raised as the ``sqlite3`` error of the same kind
(``IntegrityError`` for a constraint), which is what the repositories catch.

The schema version lives in ``tds_schema`` (SQLite keeps it in ``PRAGMA user_version``). Every write transaction
of every node process sharing the database takes one transaction-scoped advisory lock first: writes are
serialised across processes as SQLite serialises them in one, so each read-check-write of a job (a usage
chain's head, a negotiation's state, a nonce) sees every write committed before it. Processes share the reads,
the network, the signatures and the policy decisions; each commits its own groups of writes.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.errors import BadRequest, StorageError
from connector.store.location import DEFAULT_SCHEMA, SCHEMES, PgLocation, is_postgres_url, schema_for_folder

__all__ = ["DEFAULT_SCHEMA", "SCHEMES", "Dialect", "PgDatabase", "PgLocation", "is_postgres_url", "open_database",
           "prepare_schema", "schema_for_folder", "translate_ddl"]


# -- translation -------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?\d*|%|[^'\"?%-]+|-")
_WORD_FIXES = [
    (re.compile(r"\bIFNULL\s*\(", re.I), "COALESCE("),
    (re.compile(r"\bLIMIT\s+-1\b", re.I), "LIMIT ALL"),
    (re.compile(r"\bNOT\s+LIKE\b", re.I), "NOT ILIKE"),
    (re.compile(r"(?<!NOT )\bLIKE\b", re.I), "ILIKE"),
    (re.compile(r"\bAS\s+INTEGER\s*\)", re.I), "AS BIGINT)"),
    (re.compile(r"\bAS\s+REAL\s*\)", re.I), "AS DOUBLE PRECISION)"),  # PostgreSQL's REAL has 24 bits
    (re.compile(r"\bBEGIN\s+IMMEDIATE\b", re.I), "BEGIN"),
    (re.compile(r"\s+INDEXED\s+BY\s+\w+|\s+NOT\s+INDEXED\b", re.I), ""),  # SQLite's planner hints
]
_INSERT_OR = re.compile(r"^\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.I)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\b", re.I)
_CALL = re.compile(r"\b(json_extract|json_each|MIN|MAX)\s*\(", re.I)


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """The top-level arguments of the call whose ``(`` is at *start*, and the index after its ``)``."""
    depth, args, begin, i = 0, [], start + 1, start
    while i < len(text):
        c = text[i]
        if c == "'":
            i = text.index("'", i + 1)
            while i + 1 < len(text) and text[i + 1] == "'":
                i = text.index("'", i + 2)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(text[begin:i].strip())
                return args, i + 1
        elif c == "," and depth == 1:
            args.append(text[begin:i].strip())
            begin = i + 1
        i += 1
    raise ValueError("unbalanced parentheses")


def _json_path(literal: str) -> str:
    path = literal.strip()
    if not (path.startswith("'$") and path.endswith("'")):
        raise ValueError(f"json path {literal} is not a literal")
    keys = [k for k in path[2:-1].split(".") if k]
    return "'{" + ",".join(keys) + "}'"


def _rewrite_calls(sql: str) -> str:
    out, pos = [], 0
    while True:
        found = _CALL.search(sql, pos)
        if found is None:
            out.append(sql[pos:])
            return "".join(out)
        name = found.group(1).lower()
        args, end = _split_args(sql, found.end() - 1)
        args = [_rewrite_calls(a) for a in args]
        out.append(sql[pos:found.start()])
        if name == "json_extract":
            out.append(f"(({args[0]})::jsonb #>> {_json_path(args[1])})")
        elif name == "json_each":
            source = f"({args[0]})::jsonb" + (f" #> {_json_path(args[1])}" if len(args) > 1 else "")
            alias = re.match(r"\s+AS\s+(\w+)", sql[end:], re.I)
            if alias:
                out.append(f"jsonb_array_elements_text({source}) AS {alias.group(1)}(value)")
                end += alias.end()
            else:
                out.append(f"jsonb_array_elements_text({source}) AS json_each(value)")
        elif len(args) > 1:
            out.append(f"{'LEAST' if name == 'min' else 'GREATEST'}({', '.join(args)})")
        else:
            out.append(f"{found.group(1)}({args[0]})")
        pos = end


@dataclass
class Translated:
    sql: str
    #: For each placeholder in order, the index of the parameter it takes (None: they are in order, one each).
    order: tuple[int, ...] | None
    #: The identity column an INSERT returns (sqlite3's ``lastrowid``), if any.
    returns: str | None = None
    #: Whether the statement selects ``rowid`` by name: if not, a ``rowid`` column in its result (``SELECT *``) is
    #: left out, as SQLite's ``SELECT *`` leaves out its implicit rowid.
    names_rowid: bool = False


@dataclass
class Dialect:
    """Translates the store's SQLite SQL for PostgreSQL; knows each table's primary key and identity column."""
    primary_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Translated] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def translate(self, sql: str) -> Translated:
        found = self._cache.get(sql)
        if found is None:
            found = self._translate(sql)
            with self._lock:
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[sql] = found
        return found

    def _translate(self, sql: str) -> Translated:
        pieces: list[str] = []
        order: list[int] = []
        numbered = False
        code: list[str] = []  # the current run of SQL outside literals

        def flush() -> None:
            if code:
                text = "".join(code)
                for pattern, replacement in _WORD_FIXES:
                    text = pattern.sub(replacement, text)
                pieces.append(text)
                code.clear()

        for token in _SEGMENT.findall(sql):
            if token.startswith("?"):
                if len(token) > 1:
                    numbered = True
                    order.append(int(token[1:]) - 1)
                else:
                    order.append(max(order, default=-1) + 1)
                code.append("%s")
            elif token == "%":
                code.append("%%")
            elif token[0] in "'\"" or token.startswith("--"):
                flush()
                pieces.append(token.replace("%", "%%") if token[0] in "'\"" else "")
            else:
                code.append(token)
        flush()
        text = _rewrite_calls("".join(pieces))
        returns = None
        upsert = _INSERT_OR.match(text)
        if upsert:
            verb, table, cols = upsert.group(1).upper(), upsert.group(2), upsert.group(3)
            text = "INSERT INTO " + text[upsert.start(2):]
            if verb == "IGNORE":
                text += " ON CONFLICT DO NOTHING"
            else:
                key = self.primary_keys.get(table.lower())
                if not key:
                    raise StorageError(f"INSERT OR REPLACE into {table}, which has no primary key")
                others = [c.strip() for c in cols.split(",") if c.strip() and c.strip().lower() not in key]
                text += (f" ON CONFLICT ({', '.join(key)}) DO "
                         + (f"UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in others)}" if others else "NOTHING"))
        plain = _INSERT.match(text)
        if plain and re.search(r"\bRETURNING\b", text, re.I) is None:
            returns = self.identity.get(plain.group(1).lower())
            if returns:
                text += f" RETURNING {returns}"
        in_order = not numbered and order == list(range(len(order)))
        selects = re.split(r"\bFROM\b", sql, maxsplit=1, flags=re.I)[0]
        return Translated(text, None if in_order else tuple(order), returns,
                          re.search(r"\browid\b", selects, re.I) is not None)

    def load(self, conn: Any, schema: str) -> None:
        """Learn the primary keys, columns and identity columns of *schema*'s tables."""
        # pg_catalog rather than information_schema: the same answer, a hundred times faster.
        keys: dict[str, list[str]] = {}
        for table, column in conn.execute(
                "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indisprimary AND n.nspname = %s "
                "ORDER BY c.relname, array_position(i.indkey::int2[], a.attnum)", [schema]).fetchall():
            keys.setdefault(table, []).append(column)
        columns: dict[str, list[str]] = {}
        identity: dict[str, str] = {}
        for table, column, is_identity in conn.execute(
                "SELECT c.relname, a.attname, a.attidentity <> '' FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY c.relname, a.attnum", [schema]).fetchall():
            columns.setdefault(table, []).append(column)
            if is_identity and column != "rowid":
                identity[table] = column
        self.primary_keys = {t: tuple(c) for t, c in keys.items()}
        self.columns = {t: tuple(c) for t, c in columns.items()}
        self.identity = identity
        with self._lock:
            self._cache.clear()


_DDL_TYPES = [
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b", re.I),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
]
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(\w+)", re.I)
_FTS = re.compile(r"^\s*CREATE\s+VIRTUAL\s+TABLE\s+(\w+)\s+USING\s+fts5\s*\((.*)\)\s*$", re.I | re.S)


def translate_ddl(statement: str) -> list[str]:
    """A migration statement for PostgreSQL (one or more statements)."""
    fts = _FTS.match(statement)
    if fts:
        table = fts.group(1)
        names = [a.split()[0] for a in fts.group(2).split(",") if "=" not in a]
        indexed = [n for n, a in zip(names, fts.group(2).split(","), strict=False) if "UNINDEXED" not in a.upper()]
        document = " || ' ' || ".join(f"coalesce({n}, '')" for n in indexed)
        return [f"CREATE TABLE {table} (rowid BIGINT PRIMARY KEY, {', '.join(f'{n} TEXT' for n in names)}, "
                f"document tsvector GENERATED ALWAYS AS (to_tsvector('simple', {document})) STORED, "
                f"facet_words tsvector GENERATED ALWAYS AS (to_tsvector('simple', coalesce(facets, ''))) STORED)",
                f"CREATE INDEX {table}_document ON {table} USING gin (document)"]
    create = _CREATE_TABLE.match(statement)
    text = statement
    without_rowid = re.search(r"\)\s*WITHOUT\s+ROWID\s*$", text, re.I) is not None
    text = re.sub(r"\s*WITHOUT\s+ROWID\s*$", "", text, flags=re.I)
    has_integer_key = re.search(r"\bINTEGER\s+PRIMARY\s+KEY\b", text, re.I) is not None
    for pattern, replacement in _DDL_TYPES:
        text = pattern.sub(replacement, text)
    if create and not without_rowid and not has_integer_key:
        # SQLite's implicit rowid, which the store orders by (arrival order) in some tables.
        close = text.rindex(")")
        text = text[:close].rstrip() + ",\n            rowid BIGINT GENERATED BY DEFAULT AS IDENTITY\n        )"
    return [text]


# -- the connection --------------------------------------------------------------------------------

def _sqlite_error(exc: Exception) -> Exception:
    """The ``sqlite3`` error a driver error stands for (what the repositories catch)."""
    import psycopg

    if isinstance(exc, psycopg.errors.IntegrityError):
        return sqlite3.IntegrityError(str(exc).strip())
    if isinstance(exc, psycopg.errors.UndefinedTable):  # in SQLite's words, which callers look for
        return sqlite3.OperationalError(f"no such table: {str(exc).strip()}")
    if isinstance(exc, psycopg.OperationalError):
        return sqlite3.OperationalError(str(exc).strip())
    return sqlite3.DatabaseError(str(exc).strip())


def _refuse_nul(values: Sequence[Any]) -> None:
    """PostgreSQL's text cannot hold U+0000 (SQLite's can): a value with it (a peer's pid, a path parameter) is
    the caller's bad input, refused as such rather than failing the statement (a 500)."""
    for value in values:
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest("text with a NUL character (U+0000) is not accepted")


class Cursor:
    """What the store reads of a ``sqlite3.Cursor``: rows as tuples, ``rowcount``, ``lastrowid``, ``description``."""

    def __init__(self, cursor: Any, lastrowid: int | None = None, *, hide_rowid: bool = False) -> None:
        self._cursor = cursor
        self.lastrowid = lastrowid
        self.rowcount = cursor.rowcount
        description = cursor.description
        #: The index of a ``rowid`` column to leave out of each row (see :attr:`Translated.names_rowid`).
        self._hidden: int | None = None
        if hide_rowid and description is not None:
            names = [d[0] for d in description]
            if "rowid" in names:
                self._hidden = names.index("rowid")
                description = [d for d in description if d[0] != "rowid"]
        self.description = description

    def close(self) -> None:
        self._cursor.close()

    def _row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if self._hidden is None:
            return tuple(row)
        return tuple(v for i, v in enumerate(row) if i != self._hidden)

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:
            return None
        row = self._cursor.fetchone()
        return self._row(row) if row is not None else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return [self._row(r) for r in self._cursor.fetchall()]

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return [self._row(r) for r in self._cursor.fetchmany(size)]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        if self._cursor.description is None:
            return iter(())
        return (self._row(r) for r in self._cursor)


def _configure_types(conn: Any) -> None:
    """Parameters go untyped (PostgreSQL infers each from where it is used, as SQLite takes anything);
    ``NUMERIC`` comes back as ``int`` when it is whole."""
    from decimal import Decimal

    from psycopg.adapt import Dumper, Loader

    class Untyped(Dumper):
        oid = 0

        def dump(self, obj: Any) -> bytes:
            if obj is True or obj is False:
                return b"1" if obj else b"0"
            return repr(obj).encode() if isinstance(obj, float) else str(obj).encode()

    class Number(Loader):
        def load(self, data: Any) -> Any:
            value = Decimal(bytes(data).decode())
            return int(value) if value == value.to_integral_value() else float(value)

    for kind in (int, bool, float):
        conn.adapters.register_dumper(kind, Untyped)
    conn.adapters.register_loader("numeric", Number)


class PgDatabase:
    """What the store calls on a database (:class:`connector.store.sqlite.Database`, and of its ``sqlite3``
    connection, :attr:`conn`), over one PostgreSQL connection in autocommit mode (the store issues
    ``BEGIN``/``COMMIT`` itself)."""

    dialect_name = "postgresql"

    def __init__(self, location: PgLocation, dialect: Dialect, *, readonly: bool = False,
                 application: str = "tds-connector") -> None:
        import psycopg

        self.location = location
        self.dialect = dialect
        self.readonly = readonly
        try:
            self._conn = psycopg.connect(location.dsn, autocommit=True, application_name=application,
                                         connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to the store at {location.redacted()}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                               ) from exc
        _configure_types(self._conn)
        try:
            if not readonly:
                self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {location.schema}")
            self._conn.execute(f"SET search_path TO {location.schema}")
            if readonly:
                self._conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:  # a missing privilege, say
            self._conn.close()
            raise StorageError(f"the store at {location.redacted()} cannot be used: "
                               f"{str(exc).strip().splitlines()[0]}") from exc

    @property
    def conn(self) -> PgDatabase:
        return self

    @property
    def in_transaction(self) -> bool:
        import psycopg.pq

        return bool(self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    def close(self) -> None:
        self._conn.close()

    def raw(self) -> Any:
        """The driver's connection (for what has no SQLite counterpart: the schema version, locks)."""
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Cursor:
        import psycopg

        word = sql.lstrip()[:8].upper()
        if word.startswith("PRAGMA"):
            return self._pragma(sql)
        if word.startswith("BEGIN") and self.readonly:
            sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        translated = self.dialect.translate(sql)
        values = list(params or ())
        _refuse_nul(values)
        if translated.order is not None:
            values = [values[i] for i in translated.order]
        try:
            cursor = self._conn.execute(translated.sql, values)
            lastrowid = None
            if translated.returns is not None and cursor.description is not None:
                row = cursor.fetchone()
                lastrowid = row[0] if row is not None else None
            return Cursor(cursor, lastrowid, hide_rowid=not translated.names_rowid)
        except psycopg.Error as exc:
            raise _sqlite_error(exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor:
        import psycopg

        translated = self.dialect.translate(sql)
        order = translated.order
        batch = [list(r) if order is None else [list(r)[i] for i in order] for r in rows]
        for values in batch:
            _refuse_nul(values)
        text = translated.sql
        if translated.returns is not None:
            text = text[: text.rindex(" RETURNING ")]
        try:
            with self._conn.cursor() as cursor:
                cursor.executemany(text, batch)
                return Cursor(cursor)
        except psycopg.Error as exc:
            raise _sqlite_error(exc) from exc

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        cursor = self.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        for row in cursor.fetchall():
            yield dict(zip(names, row, strict=True))

    def _pragma(self, sql: str) -> Cursor:
        """The pragmas the store issues: the schema version is kept in a table; ``synchronous`` maps to
        ``synchronous_commit`` (``FULL``: the commit is on the server's disk before it returns; ``NORMAL``: it
        survives the node process, as SQLite's WAL commit does, not a crash of the server); the others
        (journal mode, busy timeout, foreign keys, query_only) have PostgreSQL defaults or settings already."""
        body = sql.strip()[len("PRAGMA"):].strip().rstrip(";")
        name, _, value = (part.strip() for part in body.partition("="))
        name = name.lower()
        if name == "user_version":
            if value:
                self._conn.execute("UPDATE tds_schema SET version = %s", [int(value)])
                return Cursor(self._conn.execute("SELECT 1 WHERE false"))
            return Cursor(self._conn.execute("SELECT version FROM tds_schema"))
        if name == "synchronous":
            self._conn.execute(f"SET synchronous_commit = {'on' if value.upper() == 'FULL' else 'off'}")
        return Cursor(self._conn.execute("SELECT 1 WHERE false"))

    def table_columns(self, table: str) -> tuple[str, ...]:
        return self.dialect.columns.get(table, ())


def open_database(location: PgLocation, dialect: Dialect, *, readonly: bool = False) -> PgDatabase:
    return PgDatabase(location, dialect, readonly=readonly)


def prepare_schema(db: PgDatabase) -> int:
    """Make sure the schema's version table exists; return the version recorded (0 for a new schema)."""
    raw = db.raw()
    raw.execute("CREATE TABLE IF NOT EXISTS tds_schema (version BIGINT NOT NULL)")
    row = raw.execute("SELECT version FROM tds_schema").fetchone()
    if row is None:
        raw.execute("INSERT INTO tds_schema (version) VALUES (0)")
        return 0
    return int(row[0])
