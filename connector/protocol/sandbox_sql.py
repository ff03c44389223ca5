"""The data sandbox's SQL check (:func:`check_query`), apart from :mod:`connector.protocol.sandbox` so that sqlglot
is imported with the first query, not with the node (it is a fifth of a node's start-up).

Parses a consumer's statement with sqlglot (SQLite dialect), checks it against the agreement's terms and the
table's schema, and rebuilds it from an allow-list of nodes (see :mod:`connector.protocol.sandbox`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import TokenType

from connector.protocol.errors import QueryRefused
from connector.protocol.sandbox import (
    _INT64,
    _INTEGER_TEXT,
    _NUMBER,
    _REAL_TEXT,
    _SAFE_INTEGER,
    AGGREGATES,
    DP_AGGREGATES,
    GROUP_SIZE_COLUMN,
    MAX_DEPTH,
    MAX_NAME_CHARS,
    MAX_OUTPUTS,
    MAX_PARAMETER_CHARS,
    MAX_PARENTHESES,
    MAX_SQL_CHARS,
    MAX_STRFTIME_CHARS,
    MAX_TOKENS,
    TABLE,
    CheckedQuery,
    Output,
    QueryTemplate,
    SandboxTerms,
    TableSchema,
    threshold_source,
)

_DIALECT = Dialect.get_or_raise("sqlite")


def _refuse(rule: str, message: str) -> QueryRefused:
    return QueryRefused(rule, message)


def _shown(node: exp.Expr) -> str:
    text = " ".join(node.sql(dialect="sqlite").split())
    return text if len(text) <= 80 else text[:79] + "…"


def _tokens(text: str) -> None:
    """Bounds and statement shape, on tokens (before anything is parsed)."""
    if len(text) > MAX_SQL_CHARS:
        raise _refuse("size", f"the query is {len(text)} characters long, more than {MAX_SQL_CHARS}")
    try:
        tokens = _DIALECT.tokenize(text)
    except TokenError as exc:
        raise _refuse("syntax", "the query cannot be read: a string, identifier or comment is not closed, or a "
                                "character is not SQL") from exc
    if not tokens:
        raise _refuse("not-select", "the query is empty")
    if len(tokens) > MAX_TOKENS:
        raise _refuse("size", f"the query has more than {MAX_TOKENS} tokens")
    depth = 0
    for i, token in enumerate(tokens):
        if token.token_type is TokenType.L_PAREN:
            depth += 1
            if depth > MAX_PARENTHESES:
                raise _refuse("size", f"the query nests parentheses more than {MAX_PARENTHESES} deep")
        elif token.token_type is TokenType.R_PAREN:
            depth -= 1
        elif token.token_type is TokenType.SEMICOLON and i != len(tokens) - 1:
            raise _refuse("not-select", "one statement only: the query goes on after a ';'")
    first = tokens[0].token_type
    if first is TokenType.WITH:
        raise _refuse("subquery", "common table expressions (WITH) are not allowed")
    if first is not TokenType.SELECT:
        raise _refuse("not-select", f"only SELECT statements run, not {tokens[0].text.upper()}")


def _parse(text: str) -> exp.Select:
    _tokens(text)
    try:
        statements = [s for s in sqlglot.parse(text, read="sqlite") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" (line {first.get('line')}, column {first.get('col')})" if first else ""
        reason = " ".join(str(first.get("description") or "not valid SQL").split())[:120]
        raise _refuse("syntax", f"the query cannot be read{where}: {reason}") from exc
    except TokenError as exc:
        raise _refuse("syntax", "the query cannot be read") from exc
    except RecursionError as exc:
        raise _refuse("size", "the query nests too deeply") from exc
    if len(statements) != 1:
        raise _refuse("not-select", "one SELECT statement only")
    statement = statements[0]
    if isinstance(statement, exp.SetOperation):
        raise _refuse("union", "UNION, INTERSECT and EXCEPT are not allowed: one SELECT from data")
    if type(statement) is not exp.Select:
        raise _refuse("not-select", "only SELECT statements run")
    stack: list[tuple[exp.Expr, int]] = [(statement, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _refuse("size", f"the query nests expressions more than {MAX_DEPTH} deep")
        stack.extend((child, depth + 1) for child in node.iter_expressions())
    return statement


def _bind(parameters: Mapping[str, Any], template: QueryTemplate | None) -> dict[str, Any]:
    """The template's parameters, each of its declared type (a number may come as its text)."""
    if template is None:
        if parameters:
            raise _refuse("parameter", "a free-form query takes no parameters: write the values into the query")
        return {}
    declared = template.parameters
    extra = sorted(set(parameters) - set(declared))
    if extra:
        raise _refuse("parameter", f"template {template.id!r} has no parameter {', '.join(extra)}")
    missing = sorted(set(declared) - set(parameters))
    if missing:
        raise _refuse("parameter", f"template {template.id!r} needs the parameter {', '.join(missing)}")
    bound: dict[str, Any] = {}
    for name, kind in declared.items():
        value = parameters[name]
        bound[name] = _typed(name, kind, value)
    return bound


def _typed(name: str, kind: str, value: Any) -> Any:
    wrong = _refuse("parameter", f"parameter {name} must be {'an' if kind == 'integer' else 'a'} {kind}, "
                                 f"not {type(value).__name__} {str(value)[:40]!r}")
    if isinstance(value, bool):
        raise wrong
    if kind == "integer":
        if isinstance(value, str) and _INTEGER_TEXT.match(value.strip()):
            value = int(value.strip())
        if not isinstance(value, int) or not -_INT64 <= value < _INT64:
            raise wrong
        return value
    if kind == "real":
        if isinstance(value, str) and _REAL_TEXT.match(value.strip()):
            value = float(value.strip())
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise wrong
        return float(value)
    if not isinstance(value, str):
        raise wrong
    if len(value) > MAX_PARAMETER_CHARS:
        raise _refuse("parameter", f"parameter {name} is longer than {MAX_PARAMETER_CHARS} characters")
    return value


class _Refs:
    """What an expression refers to: columns outside aggregates, aggregates, output aliases."""

    __slots__ = ("aggregates", "aliases", "outside")

    def __init__(self) -> None:
        self.outside: set[str] = set()
        self.aggregates = 0
        self.aliases: set[str] = set()


_AGGREGATE_NODES: dict[type[exp.Expr], str] = {
    exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max", exp.Stddev: "stddev",
}
_BINARY_NODES: tuple[type[exp.Expr], ...] = (
    exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod,
    exp.DPipe, exp.Like, exp.Is,
)
_UNARY_NODES: tuple[type[exp.Expr], ...] = (exp.Not, exp.Neg)
# Scalar functions: sqlglot's node → (SQLite name, its arguments in order).
_SCALAR_NODES: dict[type[exp.Expr], tuple[str, tuple[str, ...]]] = {
    exp.Abs: ("abs", ("this",)),
    exp.Round: ("round", ("this", "decimals")),
    exp.Lower: ("lower", ("this",)),
    exp.Upper: ("upper", ("this",)),
    exp.Length: ("length", ("this",)),
    exp.Substring: ("substr", ("this", "start", "length")),
    exp.Nullif: ("nullif", ("this", "expression")),
}
_CAST_TYPES = {
    "INT": "INTEGER", "BIGINT": "INTEGER", "SMALLINT": "INTEGER", "TINYINT": "INTEGER",
    "DOUBLE": "REAL", "FLOAT": "REAL", "DECIMAL": "REAL",
    "TEXT": "TEXT", "VARCHAR": "TEXT", "CHAR": "TEXT", "NVARCHAR": "TEXT", "NCHAR": "TEXT",
}
_SELECT_ARGS = frozenset({"expressions", "from", "from_", "where", "group", "having", "order", "limit", "offset"})
_ALLOWED_FUNCTIONS = "count, sum, avg, min, max, stddev (as the agreement allows), abs, round, lower, upper, " \
                     "length, substr, coalesce, ifnull, nullif, iif, cast, strftime"


_FUNCTION_NODES: frozenset[type[exp.Expr]] = frozenset({
    *_AGGREGATE_NODES, *_SCALAR_NODES, exp.Case, exp.If, exp.Coalesce, exp.Cast, exp.TimeToStr, exp.TsOrDsToTimestamp,
    exp.And, exp.Or,  # sqlglot counts AND and OR as functions
})


def _scan(statement: exp.Select) -> None:
    """Refuse what reaches beyond the one table or calls a function not on the list, wherever it stands in
    the statement (before the clause-by-clause check, so the refusal names the worst of it)."""
    for node in statement.walk():
        if node is statement:
            continue
        if isinstance(node, exp.Select | exp.Subquery | exp.Exists | exp.With | exp.CTE):
            raise _refuse("subquery", f"subqueries are not allowed: {_shown(node)}")
        if isinstance(node, exp.SetOperation):
            raise _refuse("union", "UNION, INTERSECT and EXCEPT are not allowed")
        if isinstance(node, exp.Join | exp.Lateral):
            raise _refuse("join", "joins are not allowed: one table, data")
        if isinstance(node, exp.Window | exp.Filter):
            raise _refuse("function", f"window functions and FILTER are not allowed: {_shown(node)}")
        if isinstance(node, exp.Anonymous):
            raise _refuse("function", f"function {node.name.lower()}() is not allowed; allowed: {_ALLOWED_FUNCTIONS}")
        if isinstance(node, exp.Func) and type(node) not in _FUNCTION_NODES:
            raise _refuse("function", f"function {node.sql_name().lower()}() is not allowed; allowed: "
                                      f"{_ALLOWED_FUNCTIONS}")


def _filled(value: Any) -> bool:
    return value is not None and value is not False and value != []


def _only(node: exp.Expr, allowed: set[str] | frozenset[str], rule: str = "expression") -> None:
    """Refuse a node that carries anything beyond the arguments this checker understands."""
    extra = [k for k, v in node.args.items() if k not in allowed and _filled(v)]
    if extra:
        raise _refuse(rule, f"this is not allowed here: {_shown(node)}")


def _wrap(node: exp.Expr) -> exp.Expr:
    """Parenthesise an operand that is itself an operation, so the emitted text keeps the checked tree's
    meaning whatever the generator's precedence rules."""
    atomic = (exp.Column, exp.Literal, exp.Paren, exp.Func, exp.Boolean, exp.Null, exp.Placeholder, exp.Star)
    return node if isinstance(node, atomic) and not isinstance(node, exp.Connector) else exp.Paren(this=node)


def _number_literal(value: float) -> exp.Expr:
    text = str(int(value)) if float(value).is_integer() and abs(value) <= _SAFE_INTEGER else repr(float(value))
    literal = exp.Literal.number(text.lstrip("-"))
    return exp.Paren(this=exp.Neg(this=literal)) if text.startswith("-") else literal


def _clip(column: exp.Expr, bounds: tuple[float, float]) -> exp.Expr:
    """``CASE WHEN x < low THEN low WHEN x > high THEN high ELSE x END``: one record moves a sum by at most
    ``max(|low|, |high|)``. NULL stays NULL (``ELSE x``)."""
    low, high = bounds
    return exp.Case(ifs=[
        exp.If(this=exp.LT(this=column.copy(), expression=_number_literal(low)), true=_number_literal(low)),
        exp.If(this=exp.GT(this=column.copy(), expression=_number_literal(high)), true=_number_literal(high)),
    ], default=column.copy())


def _call(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=list(args))


def _stddev(x: exp.Expr) -> exp.Expr:
    """The sample standard deviation in SQLite's own functions: ``sqrt(max(0, (Σx² - (Σx)²/n) / (n - 1)))``
    (NULL for fewer than two values)."""
    n = exp.Count(this=x.copy())
    sum_x = _call("total", x.copy())
    sum_sq = _call("total", exp.Mul(this=_wrap(x.copy()), expression=_wrap(x.copy())))
    spread = exp.Sub(this=sum_sq, expression=exp.Paren(this=exp.Div(
        this=exp.Mul(this=sum_x, expression=sum_x.copy()), expression=n, typed=True, safe=True)))
    variance = exp.Div(this=exp.Paren(this=spread), expression=exp.Paren(
        this=exp.Sub(this=n.copy(), expression=exp.Literal.number(1))), typed=True, safe=True)
    return _call("sqrt", _call("max", exp.Literal.number("0.0"), variance))


class _Checker:
    def __init__(self, terms: SandboxTerms, schema: TableSchema, template: QueryTemplate | None) -> None:
        self.private = terms.private
        self.epsilon = float(terms.epsilon_per_query) if terms.private and terms.epsilon_per_query else 0.0
        self.threshold_output: int | None = None
        self.threshold_epsilon = 0.0
        self.aggregates = {a.lower() for a in terms.aggregates}
        queryable = {q.lower() for q in schema.queryable}
        if terms.columns is not None:
            queryable &= {c.lower() for c in terms.columns}
        self.known = {c.name.lower(): c for c in schema.columns}
        self.columns = {name: c for name, c in self.known.items() if name in queryable}
        self.declared: dict[str, str] = dict(template.parameters) if template is not None else {}
        self.free_form = template is None
        self.used: set[str] = set()
        self.aliases: dict[str, Output] = {}

    # -- expressions --------------------------------------------------------------------------------------
    def expr(self, node: exp.Expr, clause: str, refs: _Refs, in_aggregate: bool = False) -> exp.Expr:
        """A rebuilt copy of *node*, checked, built only of what is allowed."""
        kind = type(node)
        if kind is exp.Column:
            return self.column(node, clause, refs, in_aggregate)
        if kind is exp.Literal:
            return self.literal(node)
        if kind is exp.Boolean:
            return exp.Boolean(this=bool(node.this))
        if kind is exp.Null:
            return exp.Null()
        if kind is exp.Placeholder:
            return self.placeholder(node)
        if kind is exp.Paren:
            _only(node, {"this"})
            return exp.Paren(this=self.expr(node.this, clause, refs, in_aggregate))
        if kind in _BINARY_NODES:
            _only(node, {"this", "expression", "typed", "safe"})
            if self.private:
                self.refuse_value_failures(node)
            left = _wrap(self.expr(node.this, clause, refs, in_aggregate))
            right = _wrap(self.expr(node.expression, clause, refs, in_aggregate))
            extra = {"typed": True, "safe": True} if kind in (exp.Div, exp.DPipe) else {}
            return kind(this=left, expression=right, **extra)
        if kind in _UNARY_NODES:
            _only(node, {"this"})
            return kind(this=_wrap(self.expr(node.this, clause, refs, in_aggregate)))
        if kind is exp.Between:
            _only(node, {"this", "low", "high"})
            return exp.Between(**{k: _wrap(self.expr(node.args[k], clause, refs, in_aggregate))
                                  for k in ("this", "low", "high")})
        if kind is exp.In:
            if _filled(node.args.get("query")) or _filled(node.args.get("field")) or _filled(node.args.get("unnest")):
                raise _refuse("subquery", f"IN reads only a list of values, not a query or a table: {_shown(node)}")
            _only(node, {"this", "expressions"})
            return exp.In(this=_wrap(self.expr(node.this, clause, refs, in_aggregate)),
                          expressions=[self.expr(e, clause, refs, in_aggregate) for e in node.expressions])
        if kind is exp.Case:
            return self.case(node, clause, refs, in_aggregate)
        if kind is exp.If:
            _only(node, {"this", "true", "false"})
            parts = [node.this, node.args["true"], node.args.get("false") or exp.Null()]
            return _call("iif", *(self.expr(p, clause, refs, in_aggregate) for p in parts))
        if kind is exp.Coalesce:
            _only(node, {"this", "expressions", "is_nvl", "is_null"})
            args = [node.this, *node.expressions]
            if len(args) < 2:
                raise _refuse("function", "coalesce takes at least two arguments")
            return _call("coalesce", *(self.expr(a, clause, refs, in_aggregate) for a in args))
        if kind is exp.Cast:
            return self.cast(node, clause, refs, in_aggregate)
        if kind is exp.TimeToStr:
            return self.strftime(node, clause, refs, in_aggregate)
        if kind in _SCALAR_NODES:
            name, order = _SCALAR_NODES[kind]
            _only(node, set(order), "function")
            args = [self.expr(node.args[k], clause, refs, in_aggregate) for k in order if node.args.get(k) is not None]
            if kind is exp.Abs and self.private:
                # abs() of the least integer fails ("integer overflow"); of a real number it never does.
                args = [exp.Cast(this=args[0], to=exp.DataType.build("REAL"))]
            return _call(name, *args)
        if kind in _AGGREGATE_NODES:
            return self.aggregate(node, clause, refs, in_aggregate)
        return self.refused(node)

    def refuse_value_failures(self, node: exp.Expr) -> None:
        """Under differential privacy no query may fail on some rows' values and not on others': whether it failed
        would tell of one row what the noise hides (an error leaves without noise). So nothing that SQLite can
        refuse for a value: no concatenation (a result over SQLite's length limit), no LIKE pattern read from the
        table (one over the pattern length limit)."""
        if type(node) is exp.DPipe:
            raise _refuse("dp-expression", "under differential privacy || is not allowed: on long values it fails, "
                                           "and the failure would tell of single rows")
        if type(node) is exp.Like and type(node.expression) not in (exp.Literal, exp.Placeholder):
            raise _refuse("dp-expression", "under differential privacy a LIKE pattern is a literal (or a template's "
                                           f"parameter), not read from the table: {_shown(node)}")

    def refused(self, node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Subquery | exp.Select | exp.Exists):
            raise _refuse("subquery", f"subqueries are not allowed: {_shown(node)}")
        if isinstance(node, exp.SetOperation):
            raise _refuse("union", "UNION, INTERSECT and EXCEPT are not allowed")
        if isinstance(node, exp.Window):
            raise _refuse("function", f"window functions (OVER) are not allowed: {_shown(node)}")
        if isinstance(node, exp.Filter):
            raise _refuse("function", f"FILTER clauses are not allowed: {_shown(node)}")
        if isinstance(node, exp.Parameter):
            raise _refuse("parameter", "parameters are named :name, and only a template has them")
        if isinstance(node, exp.Star):
            raise _refuse("raw-rows", "* selects raw rows: select aggregates and GROUP BY keys")
        if isinstance(node, exp.Anonymous):
            raise _refuse("function", f"function {node.name.lower()}() is not allowed; allowed: {_ALLOWED_FUNCTIONS}")
        if isinstance(node, exp.Func):
            raise _refuse("function", f"function {node.sql_name().lower()}() is not allowed; allowed: "
                                      f"{_ALLOWED_FUNCTIONS}")
        raise _refuse("expression", f"this is not allowed in a sandbox query: {_shown(node)}")

    def column(self, node: exp.Expr, clause: str, refs: _Refs, in_aggregate: bool) -> exp.Expr:
        _only(node, {"this", "table", "db", "catalog"}, "column")
        if _filled(node.args.get("db")) or _filled(node.args.get("catalog")):
            raise _refuse("table", f"columns belong to the table data: {_shown(node)}")
        table = node.args.get("table")
        if table is not None and (not isinstance(table, exp.Identifier) or table.name.lower() != TABLE):
            raise _refuse("table", f"the only table is data: {_shown(node)}")
        if isinstance(node.this, exp.Star):
            raise _refuse("raw-rows", "data.* selects raw rows: select aggregates and GROUP BY keys")
        if not isinstance(node.this, exp.Identifier):
            raise _refuse("column", f"not a column name: {_shown(node)}")
        name = node.this.name
        key = name.lower()
        if clause == "order" and table is None and key in self.aliases and key not in self.known:
            refs.aliases.add(key)
            return exp.column(self.aliases[key].name, quoted=True)
        column = self.columns.get(key)
        if column is None:
            if key in self.known:
                raise _refuse("column", f"column {name!r} is not open to queries under this agreement; open: "
                                        f"{', '.join(c.name for c in self.columns.values()) or 'none'}")
            raise _refuse("column", f"the table has no column {name!r}; open: "
                                    f"{', '.join(c.name for c in self.columns.values()) or 'none'}")
        if not in_aggregate:
            refs.outside.add(key)
        return exp.column(column.name, quoted=True)

    def literal(self, node: exp.Expr) -> exp.Expr:
        _only(node, {"this", "is_string"})
        if node.is_string:
            return exp.Literal.string(str(node.this))
        text = str(node.this)
        if not _NUMBER.match(text):
            raise _refuse("expression", f"not a number: {text[:40]}")
        return exp.Literal.number(text)

    def placeholder(self, node: exp.Expr) -> exp.Expr:
        _only(node, {"this"}, "parameter")
        name = node.name
        if self.free_form:
            raise _refuse("parameter", "a free-form query takes no parameters: write the values into the query")
        if not name:
            raise _refuse("parameter", "parameters are named (:name)")
        if name not in self.declared:
            raise _refuse("parameter", f"the template uses :{name}, which it does not declare")
        self.used.add(name)
        return exp.Placeholder(this=name)

    def case(self, node: exp.Expr, clause: str, refs: _Refs, in_aggregate: bool) -> exp.Expr:
        _only(node, {"this", "ifs", "default"})
        ifs = []
        for branch in node.args["ifs"]:
            if type(branch) is not exp.If:
                return self.refused(branch)
            _only(branch, {"this", "true"})
            ifs.append(exp.If(this=self.expr(branch.this, clause, refs, in_aggregate),
                              true=self.expr(branch.args["true"], clause, refs, in_aggregate)))
        subject, default = node.this, node.args.get("default")
        return exp.Case(
            this=self.expr(subject, clause, refs, in_aggregate) if subject is not None else None, ifs=ifs,
            default=self.expr(default, clause, refs, in_aggregate) if default is not None else None,
        )

    def cast(self, node: exp.Expr, clause: str, refs: _Refs, in_aggregate: bool) -> exp.Expr:
        _only(node, {"this", "to"}, "function")
        to = node.args["to"]
        target = _CAST_TYPES.get(to.this.name if isinstance(to, exp.DataType) else "")
        if target is None:
            raise _refuse("function", f"cast only to INTEGER, REAL or TEXT: {_shown(node)}")
        return exp.Cast(this=self.expr(node.this, clause, refs, in_aggregate), to=exp.DataType.build(target))

    def strftime(self, node: exp.Expr, clause: str, refs: _Refs, in_aggregate: bool) -> exp.Expr:
        _only(node, {"this", "format"}, "function")
        fmt = node.args["format"]
        if type(fmt) is not exp.Literal or not fmt.is_string or len(str(fmt.this)) > MAX_STRFTIME_CHARS:
            raise _refuse("function", "strftime takes a literal format ('%Y-%m', …) and a value, no modifiers")
        value = node.this
        if type(value) is exp.TsOrDsToTimestamp:
            _only(value, {"this"}, "function")
            value = value.this
        return _call("strftime", exp.Literal.string(str(fmt.this)), self.expr(value, clause, refs, in_aggregate))

    def aggregate(self, node: exp.Expr, clause: str, refs: _Refs, in_aggregate: bool) -> exp.Expr:
        name, argument, distinct = self.aggregate_parts(node, clause, in_aggregate)
        refs.aggregates += 1
        if argument is None:
            return exp.Count(this=exp.Star())
        inner = self.expr(argument, clause, refs, in_aggregate=True)
        if name == "stddev":
            return _stddev(inner)
        if distinct:
            return exp.Count(this=exp.Distinct(expressions=[inner]))
        return type(node)(this=inner)

    def aggregate_parts(self, node: exp.Expr, clause: str,
                        in_aggregate: bool) -> tuple[str, exp.Expr | None, bool]:
        """The aggregate's name, its argument (None: ``count(*)``) and whether it counts distinct values."""
        name = _AGGREGATE_NODES[type(node)]
        if clause in ("where", "group"):
            raise _refuse("aggregate", f"aggregates belong in the select list or HAVING, not in "
                                       f"{'WHERE' if clause == 'where' else 'GROUP BY'}: {_shown(node)}")
        if in_aggregate:
            raise _refuse("aggregate", f"aggregates cannot be nested: {_shown(node)}")
        if name not in self.aggregates:
            raise _refuse("aggregate", f"{name} is not among the aggregates this agreement allows: "
                                       f"{', '.join(a for a in AGGREGATES if a in self.aggregates)}")
        if self.private and name not in DP_AGGREGATES:
            raise _refuse("dp-aggregate", f"{name} cannot be asked under differential privacy (one record can move "
                                          "it without bound): ask count, sum or avg")
        if _filled(node.args.get("expressions")):
            raise _refuse("function", f"{name} with several arguments is not an aggregate: {_shown(node)}")
        _only(node, {"this", "expressions", "big_int"}, "function")
        argument = node.this
        if argument is None:
            raise _refuse("function", "count() needs an argument: count(*) or count(column)")
        if isinstance(argument, exp.Star):
            if name != "count":
                raise _refuse("raw-rows", f"{name}(*) is not an aggregate of a column")
            return name, None, False
        distinct = False
        if isinstance(argument, exp.Distinct):
            _only(argument, {"expressions"})
            if name != "count" or len(argument.expressions) != 1:
                raise _refuse("function", "DISTINCT only in count(DISTINCT column)")
            argument, distinct = argument.expressions[0], True
        if any(type(inner) in _AGGREGATE_NODES for inner in argument.walk()):
            raise _refuse("aggregate", f"aggregates cannot be nested: {_shown(node)}")
        return name, argument, distinct

    # -- the statement ------------------------------------------------------------------------------------
    def table(self, statement: exp.Select) -> None:
        source = statement.args.get("from_") or statement.args.get("from")
        if source is None:
            raise _refuse("table", "a query reads FROM data")
        _only(source, {"this"}, "table")
        table = source.this
        if isinstance(table, exp.Subquery | exp.Select):
            raise _refuse("subquery", "subqueries are not allowed: read FROM data")
        if type(table) is not exp.Table or not isinstance(table.this, exp.Identifier):
            raise _refuse("table", f"the only table is data, not {_shown(table)}")
        if _filled(table.args.get("joins")) or _filled(table.args.get("laterals")):
            raise _refuse("join", "joins are not allowed: one table, data")
        _only(table, {"this"}, "table")
        if table.this.name.lower() != TABLE:
            raise _refuse("table", f"the only table is data, not {table.this.name!r}")

    def statement(self, statement: exp.Select) -> tuple[exp.Select, list[Output]]:
        for key, value in statement.args.items():
            if key in _SELECT_ARGS or not _filled(value):
                continue
            if key in ("joins", "laterals"):
                raise _refuse("join", "joins are not allowed: one table, data")
            if key in ("with", "with_"):
                raise _refuse("subquery", "common table expressions (WITH) are not allowed")
            if key == "windows":
                raise _refuse("function", "window functions (WINDOW) are not allowed")
            if key == "distinct":
                raise _refuse("expression", "SELECT DISTINCT is not allowed: group with GROUP BY")
            raise _refuse("expression", f"this clause is not allowed: {key.upper()}")
        self.table(statement)
        where = statement.args.get("where")
        new_where = None
        if where is not None:
            _only(where, {"this"})
            new_where = self.expr(where.this, "where", _Refs())
        groups, group_sql, keys = self.group(statement)
        outputs, projections = self.outputs(statement, group_sql, keys)
        built = exp.select(*projections, exp.alias_(exp.Count(this=exp.Star()), GROUP_SIZE_COLUMN, quoted=True))
        built = built.from_(exp.Table(this=exp.to_identifier(TABLE, quoted=True)), copy=False)
        if new_where is not None:
            built = built.where(new_where, copy=False)
        if groups:
            built = built.group_by(*groups, copy=False)
        having = statement.args.get("having")
        if having is not None:
            _only(having, {"this"})
            refs = _Refs()
            condition = self.expr(having.this, "having", refs)
            self.keys_only(refs, keys, "HAVING")
            if self.private and refs.aggregates:
                raise _refuse("dp-aggregate", "under differential privacy HAVING cannot test aggregates: it would "
                                              "filter on exact values")
            built = built.having(condition, copy=False)
        order = self.order(statement, group_sql, keys)
        if order:
            built = built.order_by(*order, copy=False)
        for clause in ("limit", "offset"):
            node = statement.args.get(clause)
            if node is not None:
                if self.private:
                    # They apply before the small groups are dropped: a group too small to leave would still move
                    # the groups that do, and so tell whether it is there.
                    raise _refuse("dp-expression", f"under differential privacy {clause.upper()} is not allowed: it "
                                                   "would apply to groups before the small ones are dropped")
                _only(node, {"expression"})
                count = self.count_value(node.expression, clause.upper())
                built = built.limit(count, copy=False) if clause == "limit" else built.offset(count, copy=False)
        return built, outputs

    def group(self, statement: exp.Select) -> tuple[list[exp.Expr], set[str], set[str]]:
        group = statement.args.get("group")
        if group is None:
            return [], set(), set()
        _only(group, {"expressions"})
        groups, group_sql, keys = [], set(), set()
        for node in group.expressions:
            if isinstance(node, exp.Literal):
                raise _refuse("column", "GROUP BY names columns, not positions")
            rebuilt = self.expr(node, "group", _Refs())
            groups.append(rebuilt)
            group_sql.add(rebuilt.sql(dialect="sqlite"))
            if isinstance(rebuilt, exp.Column):
                keys.add(rebuilt.name.lower())
        return groups, group_sql, keys

    def keys_only(self, refs: _Refs, keys: set[str], where: str) -> None:
        loose = sorted(refs.outside - keys)
        if loose:
            raise _refuse("raw-rows", f"{where} uses {', '.join(loose)} outside an aggregate, and it is not a GROUP "
                                      "BY key: that would read single rows")

    def outputs(self, statement: exp.Select, group_sql: set[str],
                keys: set[str]) -> tuple[list[Output], list[exp.Expr]]:
        items = statement.expressions
        if len(items) > MAX_OUTPUTS:
            raise _refuse("size", f"a query has at most {MAX_OUTPUTS} outputs")
        drafts: list[tuple[Output, list[exp.Expr], str | None]] = []
        for item in items:
            alias: str | None = None
            node = item
            if type(item) is exp.Alias:
                _only(item, {"this", "alias"})
                alias, node = item.alias, item.this
                self.check_alias(alias, node)
            if isinstance(node, exp.Star) or (type(node) is exp.Column and isinstance(node.this, exp.Star)):
                raise _refuse("raw-rows", "SELECT * returns raw rows: select aggregates (count, sum, avg …) and "
                                          "GROUP BY keys")
            drafts.append((*self.output(node, alias, group_sql, keys), alias))
        if not any(o.kind != "key" for o, _, _ in drafts):
            raise _refuse("raw-rows", "a query computes at least one aggregate (count, sum, avg …): raw rows never "
                                      "leave the sandbox")
        noisy = [o for o, _, _ in drafts if o.sensitivity is not None]
        shares = len(noisy)
        if self.private and noisy:
            # Which groups leave is decided on a noisy count (connector.protocol.sandbox.apply_privacy): an
            # output's, or one of its own, which takes an equal share of epsilon beside the outputs'.
            self.threshold_output = threshold_source([o for o, _, _ in drafts])
            if self.threshold_output is None:
                shares += 1
        share = (self.epsilon / shares) if noisy else 0.0
        if self.private and noisy and self.threshold_output is None:
            self.threshold_epsilon = share
        outputs: list[Output] = []
        projections: list[exp.Expr] = []
        for output, parts, alias in drafts:
            if output.sensitivity is not None:
                output = msgspec.structs.replace(output, epsilon=share)
            outputs.append(output)
            if alias is not None:
                self.aliases[alias.lower()] = output
            if alias is not None and len(parts) == 1:
                projections.append(exp.alias_(parts[0], alias, quoted=True))
            else:
                projections.extend(parts)
        return outputs, projections

    def check_alias(self, alias: str, node: exp.Expr) -> None:
        if not alias or len(alias) > MAX_NAME_CHARS:
            raise _refuse("column", f"an output name has 1 to {MAX_NAME_CHARS} characters")
        if alias.startswith("__"):
            raise _refuse("column", f"output names beginning with __ are reserved: {alias!r}")
        same_column = type(node) is exp.Column and node.name.lower() == alias.lower()
        if alias.lower() in self.known and not same_column:
            raise _refuse("column", f"the output name {alias!r} is a column's name: choose another")

    def output(self, node: exp.Expr, alias: str | None, group_sql: set[str],
               keys: set[str]) -> tuple[Output, list[exp.Expr]]:
        """One output: what it is, and the expressions the statement computes for it."""
        name = alias or (node.name if type(node) is exp.Column else _shown(node))
        if type(node) in _AGGREGATE_NODES:
            kind, argument, distinct = self.aggregate_parts(node, "select", False)
            column = argument.name.lower() if type(argument) is exp.Column else None
            if self.private:
                return self.private_output(node, name, kind, argument, distinct)
            rebuilt = self.aggregate(node, "select", _Refs(), False)
            return Output(name=name, kind=kind, column=self.columns[column].name if column else None), [rebuilt]
        refs = _Refs()
        rebuilt = self.expr(node, "select", refs)
        if refs.aggregates:
            if self.private:
                raise _refuse("dp-aggregate", f"under differential privacy each output is a GROUP BY key or one "
                                              f"aggregate, not a computation over aggregates: {_shown(node)}")
            kind = "expression"
        else:
            kind = "key"
        if rebuilt.sql(dialect="sqlite") not in group_sql:
            self.keys_only(refs, keys, f"the output {name}")
        column = self.columns[rebuilt.name.lower()].name if type(rebuilt) is exp.Column else None
        return Output(name=name, kind=kind, column=column), [rebuilt]

    def private_output(self, node: exp.Expr, name: str, kind: str, argument: exp.Expr | None,
                       distinct: bool) -> tuple[Output, list[exp.Expr]]:
        """An aggregate under differential privacy: of a plain column, values clipped to its bounds."""
        if argument is None:
            return Output(name=name, kind="count", sensitivity=1.0), [exp.Count(this=exp.Star())]
        if type(argument) is not exp.Column:
            raise _refuse("dp-aggregate", f"under differential privacy an aggregate reads a column, not an "
                                          f"expression: {_shown(node)}")
        column_node = self.expr(argument, "select", _Refs(), in_aggregate=True)
        column = self.columns[column_node.name.lower()]
        if kind == "count":
            counted = exp.Distinct(expressions=[column_node]) if distinct else column_node
            return Output(name=name, kind="count", column=column.name, sensitivity=1.0), [exp.Count(this=counted)]
        bounds = column.bounds
        if bounds is None:
            raise _refuse("dp-bounds", f"{kind}({column.name}) under differential privacy needs bounds the "
                                       f"provider declares for {column.name}; it has none")
        sensitivity = max(abs(bounds[0]), abs(bounds[1]))
        # total(), not sum(): a sum of integers past 2**63 fails ("integer overflow"), a total never does.
        clipped = _call("total", _clip(column_node, bounds))
        if kind == "sum":
            return Output(name=name, kind="sum", column=column.name, sensitivity=sensitivity, bounds=bounds), [clipped]
        return (Output(name=name, kind="avg", column=column.name, sensitivity=sensitivity, bounds=bounds, width=2),
                [clipped, exp.Count(this=column_node.copy())])

    def order(self, statement: exp.Select, group_sql: set[str], keys: set[str]) -> list[exp.Expr]:
        order = statement.args.get("order")
        if order is None:
            return []
        _only(order, {"expressions"})
        ordered: list[exp.Expr] = []
        for item in order.expressions:
            if type(item) is not exp.Ordered:
                return [self.refused(item)]
            _only(item, {"this", "desc", "nulls_first"})
            if isinstance(item.this, exp.Literal):
                raise _refuse("column", "ORDER BY names columns or outputs, not positions")
            refs = _Refs()
            rebuilt = self.expr(item.this, "order", refs)
            if rebuilt.sql(dialect="sqlite") not in group_sql:
                self.keys_only(refs, keys, "ORDER BY")
            if self.private and (refs.aggregates or any(self.aliases[a].kind != "key" for a in refs.aliases)):
                raise _refuse("dp-aggregate", "under differential privacy ORDER BY cannot use aggregates: the "
                                              "order of exact values would leak past the noise")
            ordered.append(exp.Ordered(this=rebuilt, desc=bool(item.args.get("desc")),
                                       nulls_first=bool(item.args.get("nulls_first"))))
        return ordered

    def count_value(self, node: exp.Expr, clause: str) -> exp.Expr:
        if type(node) is exp.Literal and not node.is_string and str(node.this).isdigit():
            return exp.Literal.number(str(int(str(node.this))))
        if type(node) is exp.Placeholder:
            rebuilt = self.placeholder(node)
            if self.declared.get(rebuilt.name) != "integer":
                raise _refuse("parameter", f"{clause} takes an integer parameter, :{rebuilt.name} is not one")
            return rebuilt
        raise _refuse("expression", f"{clause} takes a whole number")


def check_query(sql: str, parameters: Mapping[str, Any], terms: SandboxTerms, schema: TableSchema, *,
                template_id: str | None = None) -> CheckedQuery:
    """Check a query against the agreement's terms and the table's schema; raise :class:`QueryRefused` with
    the rule it breaks. *template_id* names one of ``terms.templates`` (then *sql* is empty or the template's
    own text, and *parameters* are the template's); otherwise *sql* is a free-form query, which needs a
    differential-privacy budget in the terms."""
    template: QueryTemplate | None = None
    if template_id is not None:
        template = next((t for t in terms.templates if t.id == template_id), None)
        if template is None:
            offered = ", ".join(t.id for t in terms.templates) or "none"
            raise _refuse("template", f"the agreement has no query template {template_id!r}; it has: {offered}")
        if sql.strip() and sql.strip() != template.sql.strip():
            raise _refuse("template", "give a query or a template, not both")
        text = template.sql
    else:
        if not terms.private:
            offered = ", ".join(t.id for t in terms.templates) or "none"
            raise _refuse("dp-required", "free-form queries need a differential-privacy budget, which this "
                                         f"agreement does not give: ask one of its query templates ({offered})")
        text = sql
    bound = _bind(parameters, template)
    statement = _parse(text)
    _scan(statement)
    checker = _Checker(terms, schema, template)
    built, outputs = checker.statement(statement)
    return CheckedQuery(sql=built.sql(dialect="sqlite"), parameters=bound, outputs=outputs, epsilon=checker.epsilon,
                        template_id=template.id if template is not None else None,
                        threshold_output=checker.threshold_output, threshold_epsilon=checker.threshold_epsilon)
