"""The data sandbox's terms and query check (connector.protocol.sandbox): what runs, as what, and what not.

The attacks (files, other tables, statements hidden after a ';' …) are in tests/security/test_sandbox_statements.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import statistics
from typing import Any

import pytest
import sqlglot
from sandbox_setup import BY_REGION, DP, NAMED, SCHEMA, TEMPLATES, Table, people

from connector.protocol import sandbox as sb
from connector.protocol.contracts import read_policy
from usage_policies import templates

TDS = "https://w3id.org/tds/v1#"


def refused(sql: str, terms: sb.SandboxTerms = DP, *, parameters: dict[str, Any] | None = None,
            template_id: str | None = None) -> sb.QueryRefused:
    with pytest.raises(sb.QueryRefused) as caught:
        sb.check_query(sql, parameters or {}, terms, SCHEMA, template_id=template_id)
    return caught.value


@pytest.fixture
def table():
    t = Table(people())
    yield t
    t.close()


# --- terms ---------------------------------------------------------------------------------------------


def test_the_template_builders_policy_reads_back_as_its_terms_after_normalisation():
    policy = templates.sandbox("urn:asset:a", columns=["region", "salary"], aggregates=["count", "avg"],
                               min_group_size=20, epsilon_per_query=0.25, epsilon_total=2,
                               templates=[{"id": "t1", "sql": BY_REGION.sql, "parameters": BY_REGION.parameters}],
                               max_queries=50)
    normalised = read_policy(policy, "policy")  # what an agreement keeps
    terms = sb.terms_of(normalised)
    assert terms == sb.SandboxTerms(columns=["region", "salary"], aggregates=["count", "avg"], min_group_size=20,
                                    epsilon_per_query=0.25, epsilon_total=2.0,
                                    templates=[sb.QueryTemplate(id="t1", sql=BY_REGION.sql,
                                                                parameters=BY_REGION.parameters)],
                                    max_queries=50)
    assert sb.terms_of(policy) == terms
    assert terms.private


def test_a_policy_without_an_aggregate_permission_has_no_sandbox_terms():
    assert sb.terms_of(templates.allow("urn:asset:a")) is None
    assert sb.terms_of(templates.max_uses("urn:asset:a", 3)) is None


def test_terms_read_in_every_spelling_and_the_strictest_of_repeated_terms_wins():
    policy = {"@type": "Offer", "permission": [{
        "action": {"@id": "http://www.w3.org/ns/odrl/2/aggregate"},
        "constraint": [
            {"leftOperand": "tds:minGroupSize", "operator": "odrl:gteq", "rightOperand": 5},
            {"leftOperand": TDS + "minGroupSize", "operator": "gt", "rightOperand": {"@value": "7"}},
            {"leftOperand": "tds:queryColumns", "operator": "isAnyOf", "rightOperand": ["region", "age", "salary"]},
            {"leftOperand": "tds:queryColumns", "operator": "isAnyOf", "rightOperand": ["age", "region"]},
            {"leftOperand": "tds:epsilonPerQuery", "operator": "lteq", "rightOperand": "0.5"},
            {"leftOperand": "tds:epsilonPerQuery", "operator": "lteq", "rightOperand": 0.2},
            {"leftOperand": "tds:epsilonTotal", "operator": "lteq", "rightOperand": 4},
            {"leftOperand": "odrl:count", "operator": "lteq", "rightOperand": 9},
            {"leftOperand": "count", "operator": "lt", "rightOperand": 5},
            {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "R&D"},  # decided by the engine
        ],
        "tds:queryTemplates": [{"id": "t", "sql": "SELECT count(*) FROM data"}],
    }]}
    terms = sb.terms_of(policy)
    assert terms is not None
    assert (terms.min_group_size, terms.columns, terms.epsilon_per_query, terms.epsilon_total,
            terms.max_queries) == (8, ["age", "region"], 0.2, 4.0, 4)
    assert terms.aggregates == list(sb.AGGREGATES)
    assert [t.id for t in terms.templates] == ["t"]


@pytest.mark.parametrize("constraint", [
    {"leftOperand": "tds:minGroupSize", "operator": "gteq", "rightOperand": "ten"},
    {"leftOperand": "tds:minGroupSize", "operator": "lteq", "rightOperand": 10},
    {"leftOperand": "tds:minGroupSize", "operator": "gteq", "rightOperand": 0},
    {"leftOperand": "tds:epsilonPerQuery", "operator": "lteq", "rightOperand": "-1"},
    {"leftOperand": "tds:epsilonTotal", "operator": "gteq", "rightOperand": "1"},
    {"leftOperand": "tds:queryAggregates", "operator": "isAnyOf", "rightOperand": ["count", "median"]},
    {"leftOperand": "tds:queryTemplates", "operator": "isAnyOf", "rightOperand": ["{not json"]},
    {"leftOperand": "tds:queryTemplates", "operator": "isAnyOf", "rightOperand": ['{"id": "t"}']},
    {"or": [{"leftOperand": "tds:minGroupSize", "operator": "gteq", "rightOperand": 1},
            {"leftOperand": "odrl:count", "operator": "lteq", "rightOperand": 3}]},
])
def test_terms_that_cannot_be_read_refuse_every_query(constraint):
    policy = {"permission": [{"action": "odrl:aggregate", "constraint": [constraint]}]}
    with pytest.raises(sb.QueryRefused) as caught:
        sb.terms_of(policy)
    assert caught.value.rule == "terms"


def test_two_aggregate_permissions_leave_the_terms_open_and_are_refused():
    a = templates.sandbox("urn:asset:a", epsilon_per_query=1, epsilon_total=2)
    b = templates.sandbox("urn:asset:a", min_group_size=2, epsilon_per_query=1, epsilon_total=2)
    with pytest.raises(sb.QueryRefused, match="more than one aggregate permission"):
        sb.terms_of({"permission": a["permission"] + b["permission"]})


@pytest.mark.parametrize("build", [
    lambda: templates.sandbox("urn:a"),  # neither a budget nor templates: nothing could run
    lambda: templates.sandbox("urn:a", epsilon_per_query=1),
    lambda: templates.sandbox("urn:a", epsilon_per_query=2, epsilon_total=1),
    lambda: templates.sandbox("urn:a", epsilon_per_query=0, epsilon_total=1),
    lambda: templates.sandbox("urn:a", aggregates=["median"], epsilon_per_query=1, epsilon_total=1),
    lambda: templates.sandbox("urn:a", min_group_size=0, epsilon_per_query=1, epsilon_total=1),
    lambda: templates.sandbox("urn:a", templates=[{"id": "t", "sql": "SELECT 1", "parameters": {"x": "date"}}]),
    lambda: templates.sandbox("urn:a", templates=[{"id": "t", "sql": "x"}, {"id": "t", "sql": "y"}]),
    lambda: templates.sandbox("urn:a", templates=[{"id": "t", "sql": "x", "note": "typo"}]),
])
def test_the_sandbox_builder_rejects_terms_that_make_no_sense(build):
    with pytest.raises(ValueError):
        build()


def test_the_schema_opens_every_column_unless_it_names_some():
    schema = sb.TableSchema(columns=[sb.Column("a", "integer"), sb.Column("b", "text")], rows_rounded=10)
    assert schema.queryable == ["a", "b"]
    with pytest.raises(ValueError):
        sb.TableSchema(columns=[sb.Column("a", "integer")], rows_rounded=1, queryable=["z"])
    with pytest.raises(ValueError):
        sb.Column("t", "text", 0, 1)
    with pytest.raises(ValueError):
        sb.Column("x", "real", 5, 1)


# --- what runs, and as what ---------------------------------------------------------------------------

ACCEPTED = [
    "SELECT count(*) FROM data",
    "select REGION, COUNT(*), sum(Salary), avg(age) from DATA where age between 20 and 60 group by region",
    "SELECT region AS r, count(*) AS n FROM data WHERE lower(region) LIKE 'n%' GROUP BY region ORDER BY r DESC",
    "SELECT count(DISTINCT region) AS regions FROM data WHERE salary > 1000.5 AND NOT (age IN (20, 30))",
    "SELECT CASE WHEN age < 40 THEN 'young' ELSE 'older' END AS band, count(*) FROM data "
    "GROUP BY CASE WHEN age < 40 THEN 'young' ELSE 'older' END",
    "SELECT count(*) FROM data WHERE coalesce(region, 'none') <> 'x' AND abs(age - 40) < round(12.5) "
    "AND substr(region, 1, 1) = 'n' AND length(region) > 1 AND cast(age AS TEXT) <> '' AND iif(age > 1, 1, 0) = 1",
    "SELECT strftime('%Y', '2025-06-01') AS y, count(*) FROM data GROUP BY strftime('%Y', '2025-06-01')",
    "SELECT count(*) FROM data -- a comment with ; DROP TABLE data\n",
    "SELECT count(*) FROM data /* ; DROP TABLE data */ WHERE data.age > 20;",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_an_accepted_query_runs_as_sqlglots_rendering_with_the_group_size_last(sql, table):
    checked = sb.check_query(sql, {}, DP, SCHEMA)
    assert checked.sql != sql  # never the consumer's text
    parsed = sqlglot.parse_one(checked.sql, read="sqlite")
    assert parsed.expressions[-1].alias == sb.GROUP_SIZE_COLUMN and checked.sql.count('COUNT(*) AS "__n"') == 1
    assert "--" not in checked.sql and "/*" not in checked.sql and "DROP" not in checked.sql.upper()
    rows = table.run(checked)
    assert rows and all(len(r) == sum(o.width for o in checked.outputs) + 1 for r in rows)
    assert table.called <= sb.SQL_FUNCTIONS


def test_names_are_those_of_the_schema_quoted_whatever_the_consumers_spelling():
    checked = sb.check_query("SELECT REGION, Count(*) FROM Data GROUP BY Region", {}, DP, SCHEMA)
    assert checked.sql == 'SELECT "region", COUNT(*), COUNT(*) AS "__n" FROM "data" GROUP BY "region"'
    assert [(o.name, o.kind, o.column) for o in checked.outputs] == [("REGION", "key", "region"),
                                                                    ("COUNT(*)", "count", None)]


def test_a_template_runs_with_its_parameters_bound_not_written_in(table):
    checked = sb.check_query("", {"min_age": 30, "top": "2"}, TEMPLATES, SCHEMA, template_id="by-region")
    assert checked.template_id == "by-region" and checked.epsilon == 0
    assert checked.parameters == {"min_age": 30, "top": 2}
    assert ":min_age" in checked.sql and ":top" in checked.sql and "30" not in checked.sql
    rows = table.run(checked)
    assert len(rows) == 2 and table.called <= sb.SQL_FUNCTIONS
    result = sb.apply_privacy(checked, rows, TEMPLATES, random.Random(0))
    assert result.columns == ["region", "n", "mean", "spread"] and not result.noise
    ages = {r: [p[3] for p in people() if p[1] == r and p[3] >= 30] for r in ("north", "south", "east")}
    salaries = {r: [p[2] for p in people() if p[1] == r and p[3] >= 30] for r in ("north", "south", "east")}
    for region, n, mean, spread in result.rows:
        assert n == len(ages[region])
        assert math.isclose(mean, statistics.mean(salaries[region]))
        assert math.isclose(spread, statistics.stdev(ages[region]), rel_tol=1e-9)


def test_a_template_may_be_named_with_its_own_text():
    checked = sb.check_query(NAMED.sql, {"region": "north", "floor": 5}, TEMPLATES, SCHEMA, template_id="named")
    assert checked.parameters == {"region": "north", "floor": 5.0}


@pytest.mark.parametrize(("parameters", "words"), [
    ({"region": 5, "floor": 1.0}, "region must be a text"),
    ({"region": "north", "floor": "a lot"}, "floor must be a real"),
    ({"region": "north", "floor": True}, "floor must be a real"),
    ({"region": "north", "floor": float("nan")}, "floor must be a real"),
    ({"region": "north", "floor": [1]}, "floor must be a real"),
    ({"region": "x" * 1001, "floor": 1.0}, "longer than"),
    ({"region": "north"}, "needs the parameter floor"),
    ({"region": "north", "floor": 1.0, "extra": 1}, "has no parameter extra"),
])
def test_template_parameters_of_the_wrong_type_or_number_are_refused(parameters, words):
    error = refused("", TEMPLATES, parameters=parameters, template_id="named")
    assert error.rule == "parameter" and words in error.message


@pytest.mark.parametrize("value", ["12.5", 12.5, "1e3"])
def test_an_integer_parameter_takes_whole_numbers_only(value):
    error = refused("", TEMPLATES, parameters={"min_age": value, "top": 1}, template_id="by-region")
    assert error.rule == "parameter"


def test_templates_are_named_one_way_or_another():
    assert refused("", TEMPLATES, template_id="nope").rule == "template"
    error = refused("SELECT count(*) FROM data", TEMPLATES, template_id="named",
                    parameters={"region": "n", "floor": 1})
    assert error.rule == "template" and "not both" in error.message


def test_a_template_using_a_parameter_it_does_not_declare_is_refused():
    terms = sb.SandboxTerms(templates=[sb.QueryTemplate(id="t", sql="SELECT count(*) FROM data WHERE age > :x")])
    assert refused("", terms, template_id="t").rule == "parameter"
    terms = sb.SandboxTerms(templates=[sb.QueryTemplate(id="t", sql="SELECT count(*) FROM data LIMIT :x",
                                                        parameters={"x": "text"})])
    assert refused("", terms, parameters={"x": "5"}, template_id="t").rule == "parameter"


def test_without_a_budget_a_free_form_query_is_refused_even_if_a_template_says_the_same():
    error = refused(NAMED.sql, TEMPLATES, parameters={"region": "north", "floor": 1})
    assert error.rule == "dp-required" and "by-region, named" in error.message
    assert refused("SELECT count(*) FROM data", TEMPLATES).rule == "dp-required"


def test_without_a_budget_templates_may_use_every_aggregate_the_terms_allow():
    terms = sb.SandboxTerms(aggregates=["count", "max"], templates=[
        sb.QueryTemplate(id="max", sql="SELECT region, max(salary) FROM data GROUP BY region"),
        sb.QueryTemplate(id="sum", sql="SELECT sum(salary) FROM data"),
    ])
    checked = sb.check_query("", {}, terms, SCHEMA, template_id="max")
    assert [o.kind for o in checked.outputs] == ["key", "max"] and checked.epsilon == 0
    assert refused("", terms, template_id="sum").rule == "aggregate"


def test_under_a_budget_a_template_is_noisy_too():
    terms = sb.SandboxTerms(epsilon_per_query=0.5, epsilon_total=1, templates=[NAMED])
    checked = sb.check_query("", {"region": "north", "floor": 0}, terms, SCHEMA, template_id="named")
    assert checked.epsilon == 0.5 and checked.outputs[0].sensitivity == 1.0


@pytest.mark.parametrize(("sql", "column"), [
    ("SELECT count(*) FROM data WHERE salary > 10", "salary"),
    ("SELECT salary, count(*) FROM data GROUP BY salary", "salary"),
    ("SELECT region, count(*) FROM data GROUP BY region HAVING count(salary) > 1", "salary"),
    ("SELECT region, count(*) FROM data GROUP BY region ORDER BY avg(salary)", "salary"),
    ("SELECT avg(salary) FROM data", "salary"),
])
def test_the_agreements_columns_narrow_the_schemas_in_every_clause(sql, column):
    terms = sb.SandboxTerms(columns=["region", "age"], templates=[sb.QueryTemplate(id="t", sql=sql)])
    error = refused("", terms, template_id="t")
    assert error.rule == "column" and repr(column) in error.message and "region, age" in error.message


def test_a_group_by_on_a_unique_column_passes_the_check_and_every_one_row_group_is_suppressed(table):
    checked = sb.check_query("SELECT id, count(*) AS n FROM data GROUP BY id", {}, DP, SCHEMA)
    rows = table.run(checked)
    assert len(rows) == 90 and {r[-1] for r in rows} == {1}
    result = sb.apply_privacy(checked, rows, DP, random.Random(1))
    assert result.rows == [] and result.suppressed_groups is None and result.epsilon_spent == 1.0


def test_checked_queries_are_plain_data():
    checked = sb.check_query(ACCEPTED[1], {}, DP, SCHEMA)
    again = sb.CheckedQuery(**json.loads(json.dumps({
        "sql": checked.sql, "parameters": checked.parameters, "epsilon": checked.epsilon,
        "template_id": checked.template_id, "outputs": [],
    })))
    assert again.sql == checked.sql


# --- the provider's memory of checked queries (connector.services.sandbox) ------------------------------


@pytest.fixture
def checks(monkeypatch) -> list[str]:
    """The queries :func:`check_query` parses, as the provider's node asks it."""
    parsed: list[str] = []
    real = sb.check_query

    def counted(sql: str, *args: Any, **kwargs: Any) -> sb.CheckedQuery:
        parsed.append(sql)
        return real(sql, *args, **kwargs)

    monkeypatch.setattr(sb, "check_query", counted)
    return parsed


def _service():
    from connector.services.sandbox import SandboxService

    return SandboxService(None, None, None, None, None, peer_facts=None, own_folder=None)  # type: ignore[arg-type]


def test_a_query_asked_again_under_the_same_terms_is_not_parsed_again(checks):
    service = _service()
    first = service._check("SELECT region, count(*) FROM data GROUP BY region", {}, DP, SCHEMA, None)
    again = service._check("SELECT region, count(*) FROM data GROUP BY region", {}, DP, SCHEMA, None)
    assert again is first and len(checks) == 1


@pytest.mark.parametrize("changed", [
    {"sql": "SELECT region, count(*) FROM data GROUP BY region "},
    {"terms": sb.SandboxTerms(epsilon_per_query=0.5, epsilon_total=10.0, min_group_size=10)},
    {"terms": sb.SandboxTerms(epsilon_per_query=1.0, epsilon_total=10.0, min_group_size=10, columns=["region"])},
    {"schema": sb.TableSchema(columns=SCHEMA.columns, rows_rounded=100, queryable=["region"])},
])
def test_a_change_of_the_query_the_terms_or_the_schema_is_checked_anew(checks, changed):
    service = _service()
    asked: dict[str, Any] = {"sql": "SELECT region, count(*) FROM data GROUP BY region", "terms": DP, "schema": SCHEMA}
    first = service._check(asked["sql"], {}, asked["terms"], asked["schema"], None)
    asked.update(changed)
    second = service._check(asked["sql"], {}, asked["terms"], asked["schema"], None)
    assert len(checks) == 2 and second is not first


def test_a_template_parameter_of_another_type_is_checked_anew(checks):
    service = _service()
    values = [2, 2.0, "2", True]
    for value in values:
        with contextlib.suppress(sb.QueryRefused):  # a bool is no real
            service._check("", {"region": "north", "floor": value}, TEMPLATES, SCHEMA, "named")
    assert len(checks) == len(values)


def test_a_refused_query_is_checked_again_each_time(checks):
    service = _service()
    for _ in range(2):
        with pytest.raises(sb.QueryRefused):
            service._check("SELECT * FROM data", {}, DP, SCHEMA, None)
    assert len(checks) == 2
