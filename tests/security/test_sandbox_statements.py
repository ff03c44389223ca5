"""Attacks on the data sandbox's query check (connector.protocol.sandbox.check_query).

A consumer's SQL is the attacker's text. Each statement here tries to read files or other tables, run more
than one statement, reach past the one table through subqueries, joins or window functions, call functions
off the list, read raw rows or columns the agreement keeps closed, or outgrow the bounds. Each is refused,
with the rule it breaks, before anything runs.
"""

from __future__ import annotations

import pytest

from connector.protocol import sandbox as sb

SCHEMA = sb.TableSchema(
    columns=[sb.Column("id", "integer"), sb.Column("region", "text"), sb.Column("salary", "real", 0, 200_000),
             sb.Column("age", "integer", 18, 100), sb.Column("secret", "text")],
    rows_rounded=1000, queryable=["id", "region", "salary", "age"],
)
DP = sb.SandboxTerms(epsilon_per_query=1.0, epsilon_total=10.0)

ATTACKS: dict[str, list[str]] = {
    "function": [
        "SELECT readfile('/etc/passwd') FROM data",
        "SELECT count(*) FROM data WHERE readfile('/etc/passwd') IS NOT NULL",
        "SELECT load_extension('/tmp/evil.so')",
        "SELECT count(*), load_extension('/tmp/evil.so') FROM data",
        "SELECT count(*) FROM data WHERE writefile('/tmp/x', region) > 0",
        "SELECT count(*) FROM data WHERE fts3_tokenizer('simple') IS NULL",
        "SELECT count(*) OVER () FROM data",
        "SELECT region, row_number() OVER (ORDER BY salary) FROM data",
        "SELECT region, sum(salary) OVER (PARTITION BY region) FROM data",
        "SELECT count(*) FROM data WINDOW w AS (ORDER BY id)",
        "SELECT count(*) FILTER (WHERE id = 1) FROM data",
        "SELECT randomblob(8), count(*) FROM data",
        "SELECT zeroblob(1000000000), count(*) FROM data",
        "SELECT char(65), count(*) FROM data",
        "SELECT hex(region), count(*) FROM data GROUP BY hex(region)",
        "SELECT typeof(region), count(*) FROM data GROUP BY typeof(region)",
        "SELECT sqlite_version(), count(*) FROM data",
        "SELECT count(*) FROM data WHERE random() > 0",
        "SELECT printf('%s', region), count(*) FROM data",
        "SELECT group_concat(region) FROM data",
        "SELECT count(*) FROM data WHERE region REGEXP '^n'",
        "SELECT count(*) FROM pragma_table_info('data')",
        "SELECT max(salary, age), count(*) FROM data GROUP BY max(salary, age)",
        "SELECT sum(DISTINCT salary) FROM data",
    ],
    "not-select": [
        "ATTACH 'x' AS y",
        "ATTACH DATABASE '/tmp/x.db' AS y",
        "PRAGMA table_info(data)",
        "PRAGMA writable_schema = ON",
        "VACUUM INTO '/tmp/copy.db'",
        "SELECT count(*) FROM data; DROP TABLE data",
        "SELECT count(*) FROM data;\nDROP TABLE data;",
        "SELECT count(*) FROM data /* ; */ ; DROP TABLE data",
        "SELECT count(*) FROM data -- x\n; DELETE FROM data",
        "/* SELECT count(*) FROM data */ DROP TABLE data",
        "-- SELECT\nDELETE FROM data",
        "INSERT INTO data VALUES (1, 'x', 1, 20, 's')",
        "UPDATE data SET salary = 0",
        "DELETE FROM data",
        "CREATE TABLE leak AS SELECT * FROM data",
        "DROP TABLE data",
        "VALUES (1)",
        "EXPLAIN SELECT count(*) FROM data",
        "",
    ],
    "table": [
        "SELECT count(*) FROM sqlite_master",
        "SELECT count(*) FROM sqlite_schema",
        "SELECT count(*) FROM temp.sqlite_master",
        "SELECT count(*) FROM other",
        "SELECT count(*) FROM main.data",
        "SELECT count(*) FROM data AS d",
        "SELECT count(*) FROM data INDEXED BY i",
        "SELECT count(*)",
        "SELECT count(*) FROM data WHERE other.id = 1",
    ],
    "subquery": [
        "SELECT count(*) FROM data WHERE id IN (SELECT id FROM data WHERE salary > 1000)",
        "SELECT count(*) FROM (SELECT * FROM data)",
        "WITH t AS (SELECT * FROM data) SELECT count(*) FROM t",
        "SELECT count(*) FROM data WHERE EXISTS (SELECT 1 FROM sqlite_master)",
        "SELECT (SELECT count(*) FROM sqlite_master), count(*) FROM data",
        "SELECT count(*) FROM data WHERE region IN data",
    ],
    "union": [
        "SELECT count(*) FROM data UNION SELECT count(*) FROM data",
        "SELECT count(*) FROM data UNION ALL SELECT salary FROM data",
        "SELECT count(*) FROM data EXCEPT SELECT 1",
    ],
    "join": [
        "SELECT count(*) FROM data JOIN data",
        "SELECT count(*) FROM data d1 JOIN data d2 ON d1.id = d2.id",
        "SELECT count(*) FROM data, data",
        "SELECT count(*) FROM data, sqlite_master",
        "SELECT count(*) FROM data NATURAL JOIN sqlite_master",
        "SELECT count(*) FROM data LEFT JOIN sqlite_master ON 1",
    ],
    "raw-rows": [
        "SELECT * FROM data",
        "SELECT data.* FROM data",
        "SELECT id FROM data",
        "SELECT region, salary FROM data",
        "SELECT salary, count(*) FROM data",
        "SELECT count(*), id FROM data",
        "SELECT region FROM data GROUP BY region",
        "SELECT region, count(*) FROM data GROUP BY region HAVING salary > 5",
        "SELECT region, count(*) FROM data GROUP BY region ORDER BY salary",
        "SELECT lower(region), count(*) FROM data GROUP BY lower(age)",
    ],
    "column": [
        "SELECT secret, count(*) FROM data GROUP BY secret",
        "SELECT count(*) FROM data WHERE secret = 'x'",
        "SELECT count(*) FROM data WHERE length(secret) > 3",
        "SELECT region, count(*) FROM data GROUP BY region HAVING count(secret) > 1",
        "SELECT region, count(*) FROM data GROUP BY region ORDER BY secret",
        "SELECT count(DISTINCT secret) FROM data",
        "SELECT count(*) FROM data WHERE rowid = 1",
        "SELECT count(*) FROM data WHERE _rowid_ = 1",
        "SELECT count(*) FROM data WHERE oid = 1",
        "SELECT count(*) FROM data GROUP BY 1",
        "SELECT count(*) FROM data ORDER BY 1",
        "SELECT count(*) AS __n FROM data",
        "SELECT count(*) AS secret FROM data",
        "SELECT count(*) AS n FROM data GROUP BY n",
    ],
    "dp-aggregate": [
        "SELECT min(salary) FROM data",
        "SELECT max(salary) FROM data",
        "SELECT stddev(salary) FROM data",
        "SELECT sum(salary * 2) FROM data",
        "SELECT avg(abs(salary)) FROM data",
        "SELECT count(*) / 2 FROM data",
        "SELECT region, count(*) FROM data GROUP BY region HAVING count(*) > 20",
        "SELECT region, count(*) AS n FROM data GROUP BY region ORDER BY n DESC LIMIT 1",
        "SELECT region, count(*) FROM data GROUP BY region ORDER BY sum(salary)",
    ],
    "dp-bounds": [
        "SELECT sum(id) FROM data",
        "SELECT avg(id) FROM data",
        "SELECT region, sum(region) FROM data GROUP BY region",
    ],
    "parameter": [
        "SELECT count(*) FROM data WHERE id = :x",
        "SELECT count(*) FROM data WHERE id = ?",
        "SELECT count(*) FROM data WHERE id = @x",
    ],
    "expression": [
        "SELECT DISTINCT region, count(*) FROM data GROUP BY region",
        "SELECT count(*) FROM data WHERE id = x'00'",
        "SELECT count(*) FROM data WHERE region GLOB 'n*'",
    ],
    # Under a budget nothing may fail, or move what leaves, on single rows' values.
    "dp-expression": [
        "SELECT count(*) FROM data LIMIT -1",
        "SELECT region, count(*) FROM data GROUP BY region ORDER BY region LIMIT 1 OFFSET 1",
        "SELECT iif(id = 7 AND salary < 5000, 0, 1), count(*) FROM data GROUP BY iif(id = 7 AND salary < 5000, 0, 1) "
        "ORDER BY iif(id = 7 AND salary < 5000, 0, 1) LIMIT 1 OFFSET 1",
        "SELECT count(*) FROM data WHERE length(region || region || region) > 10",
        "SELECT count(*) FROM data WHERE region LIKE region",
    ],
    "size": [
        "SELECT count(*) FROM data WHERE " + "id = 1 OR " * 1000 + "id = 2",  # 10,040 characters
        "SELECT count(*) FROM data WHERE " + "(" * 17 + "id = 1" + ")" * 17,
        "SELECT count(*) FROM data WHERE id = " + " + ".join(["1"] * 60),
        "SELECT count(*) FROM data WHERE " + "NOT " * 60 + "id = 1",
        "SELECT count(*) FROM data WHERE " + "NOT " * 2400 + "id = 1",
        "SELECT count(*) FROM data WHERE id IN (" + ", ".join(["1"] * 1100) + ")",
        "SELECT " + ", ".join(["count(*)"] * 65) + " FROM data",
    ],
    "syntax": [
        "SELECT count(*) FROM data WHERE 'unterminated",
        "SELECT count(*) FROM FROM",
        "SELECT count(*) FROM data WHERE (id = 1",
    ],
}
CASES = [(rule, sql) for rule, statements in ATTACKS.items() for sql in statements]


@pytest.mark.parametrize(("rule", "sql"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_the_attack_is_refused_with_its_rule(rule, sql):
    with pytest.raises(sb.QueryRefused) as caught:
        sb.check_query(sql, {}, DP, SCHEMA)
    error = caught.value
    assert error.rule == rule, error.message
    assert error.status == 422 and error.code == "query-refused"
    assert error.message and "\n" not in error.message and len(error.message) < 400


def test_the_bounds_are_those_stated():
    assert sb.MAX_SQL_CHARS == 10_000
    at_bound = "SELECT count(*) FROM data WHERE region = '" + "x" * (10_000 - 43) + "'"
    assert len(at_bound) == 10_000
    sb.check_query(at_bound, {}, DP, SCHEMA)
    with pytest.raises(sb.QueryRefused) as caught:
        sb.check_query(at_bound + " ", {}, DP, SCHEMA)
    assert caught.value.rule == "size"


def test_aggregates_outside_the_agreements_list_are_refused():
    terms = sb.SandboxTerms(aggregates=["count"], epsilon_per_query=1, epsilon_total=2)
    for sql in ("SELECT sum(salary) FROM data", "SELECT region, count(*) FROM data GROUP BY region "
                                                "HAVING avg(age) > 1"):
        with pytest.raises(sb.QueryRefused) as caught:
            sb.check_query(sql, {}, terms, SCHEMA)
        assert caught.value.rule == "aggregate" and "count" in caught.value.message


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM data WHERE sum(salary) > 1",
    "SELECT count(*) FROM data GROUP BY count(*)",
    "SELECT sum(count(*)) FROM data",
])
def test_aggregates_where_they_do_not_belong_are_refused(sql):
    with pytest.raises(sb.QueryRefused) as caught:
        sb.check_query(sql, {}, DP, SCHEMA)
    assert caught.value.rule == "aggregate"


def test_a_comment_hides_nothing_from_the_statement_that_runs():
    checked = sb.check_query("SELECT count(*) FROM data /* ; ATTACH '/tmp/x' AS y */ -- ; DROP TABLE data",
                             {}, DP, SCHEMA)
    assert checked.sql == 'SELECT COUNT(*), COUNT(*) AS "__n" FROM "data"'


def test_free_form_sql_without_a_budget_is_refused_whatever_it_says():
    terms = sb.SandboxTerms(templates=[sb.QueryTemplate(id="t", sql="SELECT count(*) FROM data")])
    for sql in ("SELECT count(*) FROM data", "SELECT readfile('/etc/passwd')", "DROP TABLE data"):
        with pytest.raises(sb.QueryRefused) as caught:
            sb.check_query(sql, {}, terms, SCHEMA)
        assert caught.value.rule == "dp-required"
