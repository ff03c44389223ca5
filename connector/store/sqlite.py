"""The store's SQLite connection as the repositories call it: ``execute``, ``executemany``, ``query`` (rows as
dicts) and the ``sqlite3`` connection itself as :attr:`Database.conn`: the surface
:class:`connector.store.pg.PgDatabase` offers over PostgreSQL.

The store opens its connections in autocommit mode and issues ``BEGIN``/``COMMIT`` itself, so a statement here is
exactly the statement given: nothing is wrapped in a savepoint or committed behind the caller's back, and every
read is one statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

#: Parameters of one statement: positional (``?``) or named (``:name``).
Params = Sequence[Any] | dict[str, Any]


class Database:
    """One ``sqlite3`` connection of the store."""

    __slots__ = ("conn",)

    dialect_name = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params | None = None) -> sqlite3.Cursor:
        return self.conn.execute(sql, () if params is None else params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Params | None = None) -> Iterator[dict[str, Any]]:
        """The rows of *sql*, each a dict of column name to value. The statement runs at once (a write with
        ``RETURNING`` takes effect whether or not its rows are read); the rows are read as they are iterated. A
        statement that returns no rows is a caller's mistake: it has run when the ValueError says so (nothing
        undoes it here; the store's transaction does, if the job fails)."""
        cursor = self.conn.execute(sql, () if params is None else params)
        if cursor.description is None:
            raise ValueError("query() is for statements that return rows; use execute()")
        names = [d[0] for d in cursor.description]
        if len(set(names)) < len(names):  # a join naming a column twice: id, id_2, …
            names = _distinct(names)
        return (dict(zip(names, row, strict=True)) for row in cursor)


def _distinct(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}_{n}"
        seen.add(unique)
        out.append(unique)
    return out
