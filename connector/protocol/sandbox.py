"""The data sandbox's pure core: "available but invisible" use of a provider's table.

Theory of operation. A provider offers a table for computation only. A consumer holding an agreement sends
aggregate SQL; the provider's node runs it next to the data and answers with aggregates, never rows:

1. :func:`terms_of` reads the agreement's sandbox terms from its ODRL policy: the permission whose action is
   ``odrl:aggregate`` and its constraints on the ``tds:`` sandbox operands (``usage_policies.operands``).
2. :func:`check_query` parses the statement with sqlglot (SQLite dialect) and checks it against the terms and
   the table's schema: one ``SELECT`` from the table ``data``, allowed columns, aggregates and a short list of
   scalar functions, every output a ``GROUP BY`` key or an aggregate. It never passes the consumer's text on:
   it builds a new statement from the checked parts (comments, spellings and anything unchecked are gone),
   adds each group's row count as the hidden last column ``__n`` and, under differential privacy, clips the
   values a sum or an average reads to the bounds the provider declared for the column.
3. The engine (``connector.services.sandbox_engine``) runs the checked statement, read-only, in a child process.
4. :func:`apply_privacy` removes ``__n`` and drops the groups too small to leave: without differential privacy
   those of fewer than ``min_group_size`` rows (k); under it, those whose *noisy* count falls short of k (or of a
   higher threshold when the noise is wide), the noise being the query's own (see :func:`apply_privacy`); and,
   under differential privacy, adds Laplace noise to each aggregate.
5. :func:`result_document` is what the provider signs (``eddsa-jcs-2022``, :func:`sign_result`), binding the
   result to the agreement and the query; :func:`verify_result` checks it on the consumer's side.

Free-form queries need a differential-privacy budget (``epsilon_per_query`` and ``epsilon_total``): without
noise, two overlapping counts that differ by one row (a tracker) tell that row's value, whatever k is. Without
a budget only the provider's own query templates run. With one, every query (a template too) is noisy, and
only ``count``, ``sum`` and ``avg`` of plain columns may be asked (``min``, ``max`` and ``stddev`` have no
bounded sensitivity; filtering or ordering on exact aggregates would leak past the noise).

The engine's SQLite authorizer admits exactly the functions in :data:`SQL_FUNCTIONS`, the names the
statements built here call.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
from nacl.signing import SigningKey

from connector.identity import did as dids
from connector.identity import proof as proofs
from connector.protocol.contexts import TDS_NS
from connector.protocol.errors import QueryRefused, ResultError
from usage_policies import operands
from usage_policies.model import ODRL
from usage_policies.templates import SANDBOX_AGGREGATES

__all__ = [
    "AGGREGATES",
    "SQL_FUNCTIONS",
    "THRESHOLD_DELTA",
    "CheckedQuery",
    "Column",
    "Output",
    "QueryRefused",
    "QueryTemplate",
    "Result",
    "ResultError",
    "SandboxTerms",
    "TableSchema",
    "apply_privacy",
    "check_query",
    "laplace_noise",
    "noisy_threshold",
    "result_document",
    "result_hash",
    "sign_result",
    "terms_of",
    "threshold_source",
    "verify_result",
]

AGGREGATES: tuple[str, ...] = SANDBOX_AGGREGATES
#: Aggregates whose sensitivity to one record is bounded (with the column's bounds): the only ones under
#: differential privacy.
DP_AGGREGATES = frozenset({"count", "sum", "avg"})
#: The one table a query reads.
TABLE = "data"
#: The hidden last column of every checked statement: the number of rows of the group.
GROUP_SIZE_COLUMN = "__n"
#: Under differential privacy, the probability with which a group of one row may leave at all: the threshold a
#: group's noisy count must reach is raised above k when the noise is too wide for k alone to keep single rows
#: out (:func:`noisy_threshold`).
THRESHOLD_DELTA = 1e-6
#: Function names the statements :func:`check_query` builds may call (for the engine's SQLite authorizer).
SQL_FUNCTIONS = frozenset({
    "count", "sum", "avg", "min", "max", "total", "sqrt", "abs", "round", "lower", "upper", "length", "substr",
    "coalesce", "nullif", "iif", "strftime", "like",
})
#: Refusal rules (:class:`QueryRefused.rule`).
RULES = ("size", "syntax", "not-select", "table", "subquery", "union", "join", "function", "column", "aggregate",
         "raw-rows", "expression", "template", "parameter", "dp-required", "dp-aggregate", "dp-bounds", "dp-expression",
         "terms")

#: Bounds on what a query may be: its text, its tokens, its nesting, its outputs.
MAX_SQL_CHARS = 10_000
MAX_TOKENS = 2_000
MAX_PARENTHESES = 16
MAX_DEPTH = 40
MAX_OUTPUTS = 64
MAX_NAME_CHARS = 128
MAX_PARAMETER_CHARS = 1_000
MAX_STRFTIME_CHARS = 64

ColumnType = Literal["integer", "real", "text"]
ParameterType = Literal["integer", "real", "text"]

_NUMBER = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_INTEGER_TEXT = re.compile(r"^-?\d{1,19}$")
_REAL_TEXT = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_INT64 = 2**63
_SAFE_INTEGER = 2**53 - 1


# --- Terms and schema ------------------------------------------------------------------------------------


class Column(msgspec.Struct, frozen=True):
    """A column of the table. ``low``/``high``: bounds the provider declares for a numeric column; values are
    clipped to them when noise is added, and a sum or an average under differential privacy needs them."""

    name: str
    type: ColumnType
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError(f"column {self.name!r}: declare both bounds or neither")
        if self.low is not None and self.high is not None:
            if self.type == "text":
                raise ValueError(f"column {self.name!r} holds text: it has no numeric bounds")
            if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
                raise ValueError(f"column {self.name!r}: bounds must be finite numbers, low <= high")

    @property
    def bounds(self) -> tuple[float, float] | None:
        return (self.low, self.high) if self.low is not None and self.high is not None else None


class TableSchema(msgspec.Struct, frozen=True):
    """The table a provider offers: its columns, its row count rounded to two significant digits, and the
    columns a query may reference (``queryable``; empty: all)."""

    columns: list[Column]
    rows_rounded: int
    queryable: list[str] = []

    def __post_init__(self) -> None:
        names = [c.name.lower() for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique (without regard to case)")
        if not self.queryable:
            msgspec.structs.force_setattr(self, "queryable", [c.name for c in self.columns])
        elif not {q.lower() for q in self.queryable} <= set(names):
            raise ValueError("queryable names columns the table does not have")


class QueryTemplate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A query the provider wrote, with named parameters (``:name``) of the declared types."""

    id: str
    sql: str
    parameters: dict[str, ParameterType] = {}


def _all_aggregates() -> list[str]:
    return list(AGGREGATES)


class SandboxTerms(msgspec.Struct, frozen=True):
    """What an agreement allows its consumer to ask of the sandbox (:func:`terms_of`)."""

    columns: list[str] | None = None
    aggregates: list[str] = msgspec.field(default_factory=_all_aggregates)
    min_group_size: int = 10
    epsilon_per_query: float | None = None
    epsilon_total: float | None = None
    templates: list[QueryTemplate] = []
    max_queries: int | None = None

    def __post_init__(self) -> None:
        if self.min_group_size < 1:
            raise ValueError("the minimum group size must be at least 1")
        for name in ("epsilon_per_query", "epsilon_total"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number")
        unknown = {a.lower() for a in self.aggregates} - set(AGGREGATES)
        if unknown:
            raise ValueError(f"unknown aggregates: {', '.join(sorted(unknown))}")
        ids = [t.id for t in self.templates]
        if len(set(ids)) != len(ids):
            raise ValueError("query template ids must be unique")
        if self.max_queries is not None and self.max_queries < 0:
            raise ValueError("max_queries must not be negative")

    @property
    def private(self) -> bool:
        """Whether the agreement gives a differential-privacy budget (then every result is noisy)."""
        return self.epsilon_per_query is not None and self.epsilon_total is not None


# --- Reading the terms from a policy ---------------------------------------------------------------------


def _get(node: Mapping[str, Any], name: str) -> Any:
    for key in (name, "odrl:" + name, ODRL + name):
        if key in node:
            return node[key]
    return None


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict) and ("@list" in value or "@set" in value):
        value = value.get("@list", value.get("@set"))
    return list(value) if isinstance(value, list) else [value]


def _ident(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("@id", value.get("@value"))
    return value if isinstance(value, str) else None


def _expand(term: str) -> str:
    """``tds:x`` and ``odrl:x`` as full IRIs; a bare name is an ODRL term (the DSP profile's spelling)."""
    if term.startswith("tds:"):
        return TDS_NS + term[4:]
    if term.startswith("odrl:"):
        return ODRL + term[5:]
    return term if ":" in term else ODRL + term


def _is_aggregate(action: Any) -> bool:
    for item in _items(action):
        if isinstance(item, dict) and not set(item) <= {"@id", "uid"}:
            item = item.get("rdf:value", item.get("http://www.w3.org/1999/02/22-rdf-syntax-ns#value",
                                                  _get(item, "value")))
        name = _ident(item)
        if name is not None and _expand(name) == ODRL + "aggregate":
            return True
    return False


def _terms_error(message: str) -> QueryRefused:
    return QueryRefused("terms", f"the agreement's sandbox terms cannot be read: {message}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict) and "@value" in value:
        return value["@value"]
    if isinstance(value, dict) and "@id" in value:
        return value["@id"]
    return value


def _whole(value: Any, what: str) -> int:
    value = _plain(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.match(value.strip()):
        return int(value.strip())
    raise _terms_error(f"{what} must be a whole number, not {value!r}")


def _number(value: Any, what: str) -> float:
    value = _plain(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _REAL_TEXT.match(value.strip()):
        number = float(value.strip())
    else:
        raise _terms_error(f"{what} must be a number, not {value!r}")
    if not math.isfinite(number) or number <= 0:
        raise _terms_error(f"{what} must be a positive number")
    return number


def _template(value: Any) -> QueryTemplate:
    value = _plain(value)
    try:
        if isinstance(value, str):
            return msgspec.json.decode(value.encode(), type=QueryTemplate)
        return msgspec.convert(value, QueryTemplate)
    except msgspec.ValidationError as exc:
        raise _terms_error(f"a query template is malformed: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise _terms_error(f"a query template is not JSON: {exc}") from exc


def _mentions_sandbox_operand(value: Any, depth: int = 0) -> bool:
    if depth > 8:
        return True
    if isinstance(value, list):
        return any(_mentions_sandbox_operand(v, depth + 1) for v in value)
    if isinstance(value, dict):
        left = _ident(_get(value, "leftOperand"))
        if left is not None and _expand(left) in operands.SANDBOX_OPERANDS:
            return True
        return any(_mentions_sandbox_operand(v, depth + 1) for v in value.values())
    return False


class _Terms:
    """The sandbox constraints of one permission, taken together: each must hold, so the strictest wins."""

    def __init__(self) -> None:
        self.columns: set[str] | None = None
        self.aggregates: set[str] | None = None
        self.min_group_size = 10
        self.k_given = False
        self.epsilon_per_query: float | None = None
        self.epsilon_total: float | None = None
        self.templates: list[QueryTemplate] | None = None
        self.max_queries: int | None = None

    def add(self, constraint: Mapping[str, Any]) -> None:
        left = _ident(_get(constraint, "leftOperand"))
        op_name = _ident(_get(constraint, "operator"))
        if left is None or op_name is None:
            raise _terms_error("a constraint has no leftOperand or operator")
        iri, op = _expand(left), _expand(op_name).removeprefix(ODRL)
        values = [_plain(v) for v in _items(_get(constraint, "rightOperand"))]
        name = iri.removeprefix(TDS_NS)
        if iri in (operands.QUERY_COLUMNS, operands.QUERY_AGGREGATES):
            if op not in ("eq", "isAnyOf", "isPartOf") or not all(isinstance(v, str) for v in values):
                raise _terms_error(f"{name} must list names (eq or isAnyOf)")
            if iri == operands.QUERY_COLUMNS:
                chosen = set(values)
                self.columns = chosen if self.columns is None else self.columns & chosen
            else:
                chosen = {v.lower() for v in values}
                if not chosen <= set(AGGREGATES):
                    raise _terms_error(f"queryAggregates names {sorted(chosen - set(AGGREGATES))}")
                self.aggregates = chosen if self.aggregates is None else self.aggregates & chosen
        elif iri == operands.MIN_GROUP_SIZE:
            k = self._one(values, name, _whole)
            if op == "gt":
                k += 1
            elif op not in ("eq", "gteq"):
                raise _terms_error("minGroupSize takes eq or gteq")
            self.min_group_size = max(k, self.min_group_size) if self.k_given else k
            self.k_given = True
        elif iri in (operands.EPSILON_PER_QUERY, operands.EPSILON_TOTAL):
            if op not in ("eq", "lteq", "term-lteq"):
                raise _terms_error(f"{name} takes lteq")
            epsilon = self._one(values, name, _number)
            if iri == operands.EPSILON_PER_QUERY:
                self.epsilon_per_query = min(epsilon, self.epsilon_per_query or epsilon)
            else:
                self.epsilon_total = min(epsilon, self.epsilon_total or epsilon)
        elif iri == operands.QUERY_TEMPLATES:
            if op not in ("eq", "isAnyOf"):
                raise _terms_error("queryTemplates takes isAnyOf")
            self.add_templates(values)
        elif iri == ODRL + "count":
            n = self._one(values, "count", _whole)
            if op == "lt":
                n -= 1
            elif op not in ("eq", "lteq", "term-lteq"):
                return  # not a bound on the number of queries
            self.max_queries = n if self.max_queries is None else min(n, self.max_queries)

    def add_templates(self, values: Sequence[Any]) -> None:
        found = [_template(v) for v in values]
        self.templates = found if self.templates is None else [t for t in self.templates if t in found]

    @staticmethod
    def _one(values: list[Any], name: str, read: Any) -> Any:
        if len(values) != 1:
            raise _terms_error(f"{name} takes one value")
        return read(values[0], name)

    def build(self) -> SandboxTerms:
        try:
            return SandboxTerms(
                columns=sorted(self.columns) if self.columns is not None else None,
                aggregates=[a for a in AGGREGATES if self.aggregates is None or a in self.aggregates],
                min_group_size=self.min_group_size, epsilon_per_query=self.epsilon_per_query,
                epsilon_total=self.epsilon_total, templates=self.templates or [], max_queries=self.max_queries,
            )
        except ValueError as exc:
            raise _terms_error(str(exc)) from exc


def terms_of(policy: Mapping[str, Any]) -> SandboxTerms | None:
    """The sandbox terms of an agreement's ODRL policy, or None when no permission's action is
    ``odrl:aggregate`` (compact or full IRI). Its constraints on the ``tds:`` sandbox operands give the terms;
    several on one operand all hold (the strictest wins); ``odrl:count`` bounds the number of queries. Query
    templates are the JSON texts a ``tds:queryTemplates`` constraint lists (``usage_policies.templates.sandbox``
    writes them so), or objects under a ``tds:queryTemplates`` property of the permission. Raises
    :class:`QueryRefused` (rule "terms") for terms that cannot be read: no query runs under them."""
    permissions = [p for p in _items(_get(policy, "permission")) if isinstance(p, dict) and
                   _is_aggregate(_get(p, "action"))]
    if not permissions:
        return None
    if len(permissions) > 1:
        # ODRL permissions are alternatives: which one's terms a query runs under would be open.
        raise _terms_error("the policy has more than one aggregate permission")
    permission = permissions[0]
    terms = _Terms()
    for constraint in _items(_get(permission, "constraint")):
        if not isinstance(constraint, dict):
            raise _terms_error("a constraint is not an object")
        if _get(constraint, "leftOperand") is not None:
            terms.add(constraint)
        elif _mentions_sandbox_operand(constraint):
            raise _terms_error("sandbox terms cannot be inside a logical constraint (and, or, xone)")
    for key in ("tds:queryTemplates", operands.QUERY_TEMPLATES):
        if key in permission:
            terms.add_templates(_items(permission[key]))
    return terms.build()


# --- Checking a query -----------------------------------------------------------------------------------


class Output(msgspec.Struct, frozen=True, kw_only=True):
    """One column of the result.

    ``kind``: "key" (a GROUP BY key or a constant), an aggregate of :data:`AGGREGATES`, or "expression" (computed
    from aggregates, without differential privacy only). Under differential privacy ``sensitivity`` is how much
    one record can change the value (count 1; sum and avg ``max(|low|, |high|)``, avg's count 1), ``epsilon``
    the output's share of the query's budget, and ``bounds`` those of its column. ``width``: the columns of the
    engine's row it reads (2 for a noisy average: its clipped sum and its count)."""

    name: str
    kind: str
    column: str | None = None
    sensitivity: float | None = None
    epsilon: float = 0.0
    bounds: tuple[float, float] | None = None
    width: int = 1


class CheckedQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A query that passed :func:`check_query`: the statement to run (built by sqlglot, never the consumer's
    text; its last column is ``__n``), its bound parameters, what each output is, and the budget it spends.

    Under differential privacy, ``threshold_output`` is the output whose noisy count decides whether a group
    leaves (:func:`threshold_source`), or None when no output counts rows: then a noisy count of ``__n`` of its
    own decides, drawn with ``threshold_epsilon``, a share of ``epsilon`` (the outputs share the rest)."""

    sql: str
    parameters: dict[str, Any]
    outputs: list[Output]
    epsilon: float
    template_id: str | None = None
    threshold_output: int | None = None
    threshold_epsilon: float = 0.0


def check_query(sql: str, parameters: Mapping[str, Any], terms: SandboxTerms, schema: TableSchema, *,
                template_id: str | None = None) -> CheckedQuery:
    """Check a query against the agreement's terms and the table's schema; raise :class:`QueryRefused` with
    the rule it breaks (:func:`connector.protocol.sandbox_sql.check_query`: sqlglot is loaded on the first
    query, not with the node)."""
    from connector.protocol import sandbox_sql

    return sandbox_sql.check_query(sql, parameters, terms, schema, template_id=template_id)



# --- Privacy --------------------------------------------------------------------------------------------


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """What leaves the sandbox: the outputs of the groups large enough to leave (noisy under differential
    privacy); how many groups were left out (None under differential privacy: that number is exact, and would
    tell whether a small group, a single row even, is there); the budget the query spent, and the part of it a
    noisy count of each group's rows of its own took (``threshold_epsilon``, 0 when an output's count served)."""

    columns: list[str]
    rows: list[list[Any]]
    suppressed_groups: int | None
    epsilon_spent: float
    noise: bool
    threshold_epsilon: float = 0.0


def laplace_noise(scale: float, rng: random.Random) -> float:
    """A draw from Laplace(0, *scale*): the difference of two exponential draws of mean *scale*."""
    if scale <= 0:
        return 0.0
    return rng.expovariate(1 / scale) - rng.expovariate(1 / scale)


def _snap(value: float, scale: float) -> float:
    """Round a noisy value to a power of two well below the noise's scale: the low bits of a floating-point
    Laplace draw can tell the exact value they were added to (Mironov, CCS 2012); rounding is post-processing,
    so the guarantee is kept."""
    if scale <= 0 or not math.isfinite(value):
        return value
    step = 2.0 ** (math.floor(math.log2(scale)) - 10)
    return round(value / step) * step


def _json_value(value: Any) -> Any:
    """A value as it can be signed: whole numbers beyond JSON's exact range become floats, non-finite NULL."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _SAFE_INTEGER else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise ValueError(f"the engine returned a value of type {type(value).__name__}")


def _number_or_zero(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


#: A noisy count and the scale of its noise.
_Count = tuple[float, float]


def _release(output: Output, values: Sequence[Any], rng: random.Random) -> tuple[Any, _Count | None]:
    """The value *output* releases for one group, and the noisy count drawn for it (a count's own value, an
    average's count of its column's values; None for the others), with the scale of that count's noise."""
    if output.sensitivity is None:
        return _json_value(values[0]), None
    epsilon = output.epsilon
    if output.kind == "count":
        scale = output.sensitivity / epsilon
        noisy = _number_or_zero(values[0]) + laplace_noise(scale, rng)
        return max(0, round(noisy)), (noisy, scale)
    if output.kind == "sum":
        scale = output.sensitivity / epsilon
        return _snap(_number_or_zero(values[0]) + laplace_noise(scale, rng), scale), None
    # avg: a noisy sum over a noisy count, each with half the output's share
    half = epsilon / 2
    total = _number_or_zero(values[0]) + laplace_noise(output.sensitivity / half, rng)
    count = _number_or_zero(values[1]) + laplace_noise(1 / half, rng)
    average = total / max(count, 1.0)
    if output.bounds is not None:
        average = min(max(average, output.bounds[0]), output.bounds[1])
    return _snap(average, output.sensitivity / half / max(count, 1.0)), (count, 1 / half)


def threshold_source(outputs: Sequence[Output]) -> int | None:
    """Under differential privacy, the output whose noisy count decides whether a group leaves
    (:func:`apply_privacy`): the first ``count(*)`` (the group's own size), else the first other count (of a
    column's values or distinct values: never more than the group's rows, so the rule only gets stricter), else
    the first average's count (the same, drawn with half the average's share: wider noise, so last). None: no
    output counts rows, and the query needs a noisy count of its own."""
    noisy = [(index, output) for index, output in enumerate(outputs) if output.sensitivity is not None]
    for kind, of_rows in (("count", True), ("count", False), ("avg", False)):
        for index, output in noisy:
            if output.kind == kind and (output.column is None or not of_rows):
                return index
    return None


def noisy_threshold(k: int, scale: float, delta: float = THRESHOLD_DELTA) -> float:
    """The least noisy count (its noise of *scale*) with which a group leaves under differential privacy: k,
    or ``1 + scale · ln(1 / (2·delta))`` when that is more. A group of one row has the noisy count
    ``1 + Laplace(scale)`` (at most: a column's count may be 0), which reaches ``1 + t`` with probability
    ``exp(-t / scale) / 2``: at this threshold, *delta* at most."""
    return max(float(k), 1.0 + scale * math.log(1 / (2 * delta)))


def apply_privacy(checked: CheckedQuery, rows: Sequence[Sequence[Any]], terms: SandboxTerms,
                  rng: random.Random) -> Result:
    """The result that may leave: ``__n`` removed, the groups too small to leave dropped and, under
    differential privacy, Laplace noise (scale = sensitivity / the output's share of epsilon) added to each
    aggregate. Use ``random.SystemRandom()`` in production; a seeded ``random.Random`` only in tests.

    Which groups leave. Without differential privacy (the provider's own templates alone run) the rule is
    exact: a group of fewer than ``terms.min_group_size`` (k) rows is dropped, and the result says how many
    were. Under differential privacy an exact rule would undo the noise: whether a group is there would tell
    its exact size near k (a group of k rows shows, the same less one row does not), and a tracker pair of
    queries would tell one row by it. So the decision reads a *noisy* count of the group, compared with k:

    - the noise is the query's own, never a draw beside its budget: the noisy count of an output that counts
      rows (:func:`threshold_source`: a ``count(*)``, else another count, else an average's count). Deciding
      on a value the mechanism has drawn is post-processing, which differential privacy allows for free;
    - a query without such an output (sums alone) spends a share of its epsilon on a noisy count of ``__n``
      of its own: one share, as if it asked ``count(*)`` as well without seeing it (``check_query`` splits
      epsilon evenly over the outputs and this count, so the query spends no more than its epsilon), and the
      result says so (:attr:`Result.threshold_epsilon`);
    - the noisy count must reach k, or more when the noise is wide (:func:`noisy_threshold`): a group of one
      row, whose key alone would tell that the row is there (``GROUP BY`` a unique column), leaves with
      probability :data:`THRESHOLD_DELTA` at most, so the whole answer is (epsilon, delta)-differentially
      private. A group of exactly k rows leaves about half the time (when k is the threshold), one far above
      it nearly always;
    - how many groups were dropped is not told (``suppressed_groups`` is None): that number is exact, and
      would tell whether a small group is there at all."""
    width = sum(o.width for o in checked.outputs) + 1
    private = checked.epsilon > 0
    if private and checked.threshold_output is None and checked.threshold_epsilon <= 0:
        raise ValueError("the checked query has no noisy count to decide which groups leave")
    kept: list[list[Any]] = []
    suppressed = 0
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a row has {len(row)} values, the checked query makes {width}")
        n = row[-1]
        if not isinstance(n, int) or isinstance(n, bool) or (not private and n < terms.min_group_size):
            suppressed += 1
            continue
        values: list[Any] = []
        counted: _Count | None = None
        at = 0
        for index, output in enumerate(checked.outputs):
            value, count = _release(output, row[at:at + output.width], rng)
            values.append(value)
            if index == checked.threshold_output:
                counted = count
            at += output.width
        if private:
            if counted is None:
                scale = 1 / checked.threshold_epsilon
                counted = (n + laplace_noise(scale, rng), scale)
            if counted[0] < noisy_threshold(terms.min_group_size, counted[1]):
                suppressed += 1
                continue
        kept.append(values)
    return Result(columns=[o.name for o in checked.outputs], rows=kept,
                  suppressed_groups=None if private else suppressed, epsilon_spent=checked.epsilon,
                  noise=private, threshold_epsilon=checked.threshold_epsilon if private else 0.0)


# --- The signed result ----------------------------------------------------------------------------------

RESULT_TYPE = TDS_NS + "SandboxResult"


def result_hash(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``sha-256:<hex>`` of the RFC 8785 canonical bytes of ``{"columns": …, "rows": …}``."""
    body = {"columns": list(columns), "rows": [list(r) for r in rows]}
    return "sha-256:" + hashlib.sha256(proofs.canonical(body)).hexdigest()


def result_document(*, agreement_id: str, provider: str, consumer: str, query: str, parameters: Mapping[str, Any],
                    result: Result, issued_at: str, template_id: str | None = None) -> dict[str, Any]:
    """What the provider signs (:func:`sign_result`): the result, bound to the agreement, both parties and the
    query as it was asked, with the hash of its columns and rows."""
    document: dict[str, Any] = {
        "@type": RESULT_TYPE,
        "agreement": agreement_id,
        "provider": provider,
        "consumer": consumer,
        "query": query,
        "parameters": dict(parameters),
        "columns": list(result.columns),
        "rows": [list(r) for r in result.rows],
        "suppressedGroups": result.suppressed_groups,
        "epsilonSpent": result.epsilon_spent,
        "thresholdEpsilon": result.threshold_epsilon,
        "noise": result.noise,
        "resultHash": result_hash(result.columns, result.rows),
        "issuedAt": issued_at,
    }
    if template_id is not None:
        document["template"] = template_id
    return document


def sign_result(document: Mapping[str, Any], key: SigningKey, *, key_id: str, created: str) -> dict[str, Any]:
    """The document with the provider's ``eddsa-jcs-2022`` proof (*key*: its Ed25519 ``SigningKey``)."""
    return proofs.sign(document, key, verification_method=key_id, created=created)


def verify_result(document: Mapping[str, Any], did_document: Mapping[str, Any]) -> None:
    """Check a signed result: made by its provider (the DID *did_document* describes, with a key it lists for
    assertions), unchanged since, and its ``resultHash`` that of its columns and rows. Raises
    :class:`ResultError`."""
    if not isinstance(document, Mapping) or document.get("@type") != RESULT_TYPE:
        raise ResultError("not a signed sandbox result")
    provider = document.get("provider")
    if not isinstance(provider, str) or did_document.get("id") != provider:
        raise ResultError(f"the DID document is not that of the result's provider {provider!r}")
    columns, rows = document.get("columns"), document.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise ResultError("the result has no columns and rows")
    try:
        expected = result_hash(columns, rows)
    except proofs.ProofError as exc:
        raise ResultError(f"the result cannot be hashed: {exc}") from exc
    if document.get("resultHash") != expected:
        raise ResultError("the resultHash does not match the columns and rows")
    try:
        proof = proofs.verify(document, proofs.key_resolver(did_document))
        signer = dids.split_did_url(proof["verificationMethod"])[0]
    except (proofs.ProofError, dids.DidError) as exc:
        raise ResultError(f"the provider's proof does not verify: {exc}") from exc
    if signer != provider:
        raise ResultError(f"the result is signed by {signer}, not by its provider {provider}")

