"""A small table, terms and an in-memory SQLite runner for the data sandbox's core tests.

The runner stands in for the engine: it runs a checked statement on an in-memory copy of the table under an
authorizer that records every function the statement calls, so a test can tell the statement is what the
checker says (and calls nothing beyond ``SQL_FUNCTIONS``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from connector.protocol import sandbox as sb

SCHEMA = sb.TableSchema(
    columns=[
        sb.Column("id", "integer"),
        sb.Column("region", "text"),
        sb.Column("salary", "real", 0.0, 200_000.0),
        sb.Column("age", "integer", 18, 100),
        sb.Column("secret", "text"),
    ],
    rows_rounded=100,
    queryable=["id", "region", "salary", "age"],
)
DP = sb.SandboxTerms(epsilon_per_query=1.0, epsilon_total=10.0, min_group_size=10)
BY_REGION = sb.QueryTemplate(
    id="by-region",
    sql="SELECT region, count(*) AS n, avg(salary) AS mean, stddev(age) AS spread FROM data "
        "WHERE age >= :min_age GROUP BY region ORDER BY n DESC LIMIT :top",
    parameters={"min_age": "integer", "top": "integer"},
)
NAMED = sb.QueryTemplate(id="named", sql="SELECT count(*) FROM data WHERE region = :region AND salary > :floor",
                         parameters={"region": "text", "floor": "real"})
TEMPLATES = sb.SandboxTerms(templates=[BY_REGION, NAMED], min_group_size=5)
REGIONS = ("north", "south", "east")


def people(n: int = 90) -> list[tuple[Any, ...]]:
    """*n* rows: ids 0…n-1, regions in turn, salaries and ages from the id (no randomness)."""
    return [(i, REGIONS[i % 3], 1_000.0 * (i + 1), 18 + (i * 7) % 60, f"s{i}") for i in range(n)]


class Table:
    """The table ``data`` in memory, with the functions statements called."""

    def __init__(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE data (id INTEGER, region TEXT, salary REAL, age INTEGER, secret TEXT)")
        self.db.executemany("INSERT INTO data VALUES (?, ?, ?, ?, ?)", list(rows))
        self.called: set[str] = set()
        self.db.set_authorizer(self._authorize)

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, src: str | None) -> int:
        if action == sqlite3.SQLITE_FUNCTION and arg2 is not None:
            self.called.add(arg2.lower())
        return sqlite3.SQLITE_OK

    def run(self, checked: sb.CheckedQuery) -> list[tuple[Any, ...]]:
        return self.db.execute(checked.sql, checked.parameters).fetchall()

    def close(self) -> None:
        self.db.close()
