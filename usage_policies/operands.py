"""Registries of left operands and operators (ODRL 2.2 §2.5.1), the engine's extension points.

A left operand is resolved from the request, the state of the world and ``now`` by a resolver
registered under its IRI; the node adds its own with :func:`register_operand` without touching the
engine. A left operand that is neither registered nor given in ``Request.context`` makes its
constraint *not satisfied* with a reason: never an exception, never silently true.

Built in (ODRL 2.2 vocabulary § Constraint Left Operands, plus project operands):

==========================  ==============================================================  ==========
operand                     value                                                           kind
==========================  ==============================================================  ==========
``odrl:dateTime``           ``now``                                                         dateTime
``odrl:elapsedTime``        span from ``Request.first_use`` (or ``now``) to ``now``         duration
``odrl:count``              ``Request.use_count + 1``: uses *including* the attempted one   integer
``odrl:purpose``            ``Request.purpose``                                             IRI/string
``odrl:spatial``            ``Request.region``, a region code with a hierarchy              region
``odrl:recipient``          ``Request.recipient``                                           IRI
``odrl:systemDevice``       ``Request.connector``                                           IRI
``odrl:event``              ``Request.event``                                               IRI
``odrl:payAmount``          ``Request.pay_amount``                                          decimal
``odrl:percentage``         ``Request.percentage``                                          decimal
``tds:dataClass``           ``Request.data_class`` or ``World.data_classes[target]``        data class
``tds:exportDestination``   ``Request.export_destination`` or region of the recipient       region
``tds:verifiedRegion``      ``Request.verified_region``                                     region
``tds:memberOf``            ``Request.member_of``: data spaces of verified membership      IRI (each)
``tds:legalEntityId``       ``Request.legal_entity_ids``: credit code and/or LEI            string (each)
``tds:certificationLevel``  ``Request.certification_levels``                                level (each)
==========================  ==============================================================  ==========

The last four are what credentials by issuers the caller trusts verify of the party (the node fills them
from its trust list, never from what the party says of itself). A party without such a value leaves the
constraint unsatisfied with a reason naming what is missing (``no verified region: …``). A party may hold
several values of an operand marked *each* (memberships of several data spaces, a credit code and an LEI):
``eq`` asks whether it holds the right operand, ``neq`` whether it holds none equal to it, an ordered
operator whether one of its values meets it, and ``isAnyOf``/``isAllOf``/``isNoneOf`` compare the sets.
Certification levels are ordered by ``World.certification_order`` (lowest first) when it is given, else as
whole numbers (``1 < 2 < 3``); a level with no order makes an ordered constraint unsatisfied with the reason.

Regions: ISO 3166 codes, with ``CN-GD-GZ ⊂ CN-GD ⊂ CN`` read from the hyphens, ``EU`` holding its
member states, and more edges from ``World.region_parents``. ``eq`` compares codes exactly;
``isPartOf``, ``isA``, ``isAnyOf``, ``isNoneOf`` and ``hasPart`` follow the hierarchy; ``isA`` holds only
strictly below the right operand (``DE isA EU``, not ``EU isA EU``: a class is not an instance of itself),
and only for an operand with a hierarchy (regions, purposes with ``World.concept_parents``).

Terms. Some operands state a term that is applied where the use happens rather than a condition of the
decision: the data sandbox's (``connector.protocol.sandbox``) ``tds:queryColumns``, ``tds:queryAggregates``,
``tds:minGroupSize``, ``tds:epsilonPerQuery``, ``tds:epsilonTotal`` and ``tds:queryTemplates``
(:data:`SANDBOX_OPERANDS`), on a permission whose action is ``odrl:aggregate``. They are registered with a
``term`` (where the term is applied): their right operands are read and checked like any other, and a
decision counts their constraints satisfied, with that as the reason. The number of queries is the usual
``odrl:count``, decided as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Protocol

import msgspec

from usage_policies.model import ODRL, TDS
from usage_policies.pricing import BILLING_PERIOD, METERED_PER, PRICE_TIERS, ROUNDING
from usage_policies.values import DataClass, Elapsed, ValueKind, compare, parse_data_class, show, values_equal

if TYPE_CHECKING:
    from usage_policies.evaluate import Request, World

DATA_CLASS = TDS + "dataClass"
EXPORT_DESTINATION = TDS + "exportDestination"
VERIFIED_REGION = TDS + "verifiedRegion"
MEMBER_OF = TDS + "memberOf"
LEGAL_ENTITY_ID = TDS + "legalEntityId"
CERTIFICATION_LEVEL = TDS + "certificationLevel"
#: The operands whose values come from credentials by trusted issuers (see the module's table).
VERIFIED_OPERANDS = frozenset({VERIFIED_REGION, MEMBER_OF, LEGAL_ENTITY_ID, CERTIFICATION_LEVEL})
QUERY_COLUMNS = TDS + "queryColumns"
QUERY_AGGREGATES = TDS + "queryAggregates"
MIN_GROUP_SIZE = TDS + "minGroupSize"
EPSILON_PER_QUERY = TDS + "epsilonPerQuery"
EPSILON_TOTAL = TDS + "epsilonTotal"
QUERY_TEMPLATES = TDS + "queryTemplates"
#: The data sandbox's terms (see "Terms" in the module's docstring).
SANDBOX_OPERANDS = frozenset({QUERY_COLUMNS, QUERY_AGGREGATES, MIN_GROUP_SIZE, EPSILON_PER_QUERY, EPSILON_TOTAL,
                              QUERY_TEMPLATES})


class OperandResolver(Protocol):
    """Returns the current value of a left operand, or None when the request does not tell."""

    def __call__(self, request: Request, world: World, now: datetime, /) -> object | None: ...


class RequestField:
    """A resolver that returns one attribute of the request as it is: ``RequestField("purpose")``.

    The value is the same as any resolver's; a compiled policy recognises it and reads the attribute
    directly (``operator.attrgetter``) instead of calling a resolver on every decision.
    """

    __slots__ = ("name", "read")

    def __init__(self, name: str) -> None:
        self.name = name
        self.read: Callable[[Request], object | None] = attrgetter(name)

    def __call__(self, request: Request, world: World, now: datetime, /) -> object | None:
        return self.read(request)

    def __repr__(self) -> str:
        return f"RequestField({self.name!r})"


def evaluation_time(request: Request, world: World, now: datetime, /) -> datetime:
    """The resolver of ``odrl:dateTime``: the evaluation time. A compiled policy recognises it (by identity)
    and compares ``now`` without calling it."""
    return now


def attempted_uses(request: Request, world: World, now: datetime, /) -> int:
    """The resolver of ``odrl:count``: the uses made so far plus the one attempted. A compiled policy
    recognises it (by identity) and computes it without calling it."""
    return request.use_count + 1


Within = Callable[[object, object, "World"], bool]
#: A value's place in an operand's order, for the ordered operators (lt, gteq, …).
Rank = Callable[[object, "World"], int]


class LeftOperand(msgspec.Struct, frozen=True, kw_only=True):
    """A registered left operand: how to resolve it and how to read values compared with it."""

    iri: str
    resolve: OperandResolver
    kind: ValueKind = ValueKind.STRING
    label: str = ""
    within: Within | None = None  # hierarchy for isA/isPartOf/isAnyOf…: is the left value within right?
    missing: str = ""  # the reason when the request has no value ("<label> is not given" if empty)
    each: bool = False  # the value is a set the party holds each of: eq/neq/ordered ask about any one
    rank: Rank | None = None  # an order for lt/lteq/gt/gteq over values that have none of their own
    term: str = ""  # a term applied where the use happens (how, in words): its constraints hold at decision time


_OPERANDS: dict[str, LeftOperand] = {}
#: Bumped on every change of either registry, so compiled policies know when to recompile (one item, read
#: in place by :func:`usage_policies.evaluate.decide`).
GENERATION = [0]
_generation = GENERATION


def generation() -> int:
    """Bumped on every change of either registry, so compiled policies know when to recompile."""
    return _generation[0]


def register_operand(
    iri: str,
    resolver: OperandResolver,
    *,
    kind: ValueKind = ValueKind.STRING,
    label: str | None = None,
    within: Within | None = None,
    missing: str = "",
    each: bool = False,
    rank: Rank | None = None,
    term: str = "",
) -> LeftOperand:
    """Register (or replace) the resolver of left operand *iri*. Policies compiled before keep theirs."""
    operand = LeftOperand(iri=iri, resolve=resolver, kind=kind, label=label or _short(iri), within=within,
                          missing=missing, each=each, rank=rank, term=term)
    _OPERANDS[iri] = operand
    _generation[0] += 1
    return operand


def unregister_operand(iri: str) -> None:
    _OPERANDS.pop(iri, None)
    _generation[0] += 1


def get_operand(iri: str) -> LeftOperand | None:
    return _OPERANDS.get(iri)


def _short(iri: str) -> str:
    return iri.rsplit("#", 1)[-1].rsplit("/", 1)[-1]


# --- Regions ------------------------------------------------------------------------------------------

EU_MEMBERS = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT",
    "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
})


def region_parent(code: str, world: World | None = None) -> str | None:
    """The region directly containing *code*: an explicit edge first, then the ISO 3166-2 prefix."""
    if world is not None and code in world.region_parents:
        return world.region_parents[code]
    if "-" in code:
        return code.rsplit("-", 1)[0]
    if code in EU_MEMBERS:
        return "EU"
    return None


def region_within(code: object, container: object, world: World | None = None) -> bool:
    """True when region *code* is *container* or lies inside it (CN-GD-GZ ⊂ CN-GD ⊂ CN)."""
    if not isinstance(code, str) or not isinstance(container, str):
        return False
    current: str | None = code.upper()
    target = container.upper()
    seen = 0
    while current is not None and seen < 32:
        if current == target:
            return True
        current = region_parent(current, world)
        seen += 1
    return False


def concept_within(value: object, container: object, world: World) -> bool:
    """``isA`` over a taxonomy from ``World.concept_parents`` (e.g. purposes)."""
    if value == container:
        return True
    if not isinstance(value, str):
        return False
    frontier, seen = [value], {value}
    while frontier:
        for parent in world.concept_parents.get(frontier.pop(), ()):
            if parent == container:
                return True
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return False


# --- Built-in left operands ----------------------------------------------------------------------------


def _elapsed(request: Request, world: World, now: datetime) -> Elapsed:
    return Elapsed(start=request.first_use or now, end=now)


def _data_class(request: Request, world: World, now: datetime) -> DataClass | None:
    name = request.data_class
    if name is None and request.target is not None:
        name = world.data_classes.get(request.target)
    return parse_data_class(name) if name is not None else None


def _export_destination(request: Request, world: World, now: datetime) -> str | None:
    if request.export_destination is not None:
        return request.export_destination
    if request.recipient is not None:
        return world.party_regions.get(request.recipient)
    return None


def certification_rank(level: object, world: World) -> int:
    """The place of a certification level in ``World.certification_order`` (lowest first) or, without one,
    the level itself when it is a whole number (``"2"``)."""
    order = world.certification_order
    if order:
        if isinstance(level, str) and level in order:
            return order.index(level)
        raise ValueError(f"certification level {show(level)} is not in the order {show(order)}")
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and level.isascii() and level.isdigit():
        return int(level)
    raise TypeError(f"certification level {show(level)} has no order (no certification order is given, "
                    "and it is not a whole number)")


def _verified(values: tuple[str, ...]) -> tuple[str, ...] | None:
    return values or None


def _no_value(request: Request, world: World, now: datetime, /) -> None:
    """The resolver of a term operand: a term has no value in a request (it is applied, not decided)."""
    return None


def _install_builtins() -> None:
    reg = register_operand
    field = RequestField
    reg(ODRL + "dateTime", evaluation_time, kind=ValueKind.DATETIME, label="date-time")
    reg(ODRL + "elapsedTime", _elapsed, kind=ValueKind.DURATION, label="elapsed time")
    reg(ODRL + "count", attempted_uses, kind=ValueKind.INTEGER, label="use count")
    reg(ODRL + "purpose", field("purpose"), kind=ValueKind.IRI, label="purpose",
        within=concept_within)
    reg(ODRL + "spatial", field("region"), kind=ValueKind.REGION, label="region",
        within=region_within)
    reg(ODRL + "recipient", field("recipient"), kind=ValueKind.IRI, label="recipient")
    reg(ODRL + "systemDevice", field("connector"), kind=ValueKind.IRI, label="connector")
    reg(ODRL + "event", field("event"), kind=ValueKind.IRI, label="event")
    reg(ODRL + "payAmount", field("pay_amount"), kind=ValueKind.DECIMAL, label="pay amount")
    reg(ODRL + "percentage", field("percentage"), kind=ValueKind.DECIMAL, label="percentage")
    reg(DATA_CLASS, _data_class, kind=ValueKind.DATA_CLASS, label="data class")
    reg(EXPORT_DESTINATION, _export_destination, kind=ValueKind.REGION, label="export destination",
        within=region_within, missing="the export destination is not known: no verified region of the recipient")
    reg(VERIFIED_REGION, field("verified_region"), kind=ValueKind.REGION, label="verified region",
        within=region_within, missing="no verified region: no credential from an issuer trusted for regions")
    reg(MEMBER_OF, lambda r, w, now: _verified(r.member_of), kind=ValueKind.IRI, label="verified membership",
        each=True, missing="no verified membership: no membership credential from an issuer trusted for it")
    reg(LEGAL_ENTITY_ID, lambda r, w, now: _verified(r.legal_entity_ids), label="verified legal entity id",
        each=True, missing="no verified legal entity: no credential from an issuer trusted for legal entities")
    reg(CERTIFICATION_LEVEL, lambda r, w, now: _verified(r.certification_levels), label="verified certification level",
        each=True, rank=certification_rank,
        missing="no verified certification: no credential from an issuer trusted for certifications")
    # The data sandbox's terms: applied to each query by the provider's sandbox, not decided here.
    applied = "the provider's data sandbox applies to each query"
    for iri, kind, label in (
        (QUERY_COLUMNS, ValueKind.STRING, "query columns"),
        (QUERY_AGGREGATES, ValueKind.STRING, "query aggregates"),
        (MIN_GROUP_SIZE, ValueKind.INTEGER, "minimum group size"),
        (EPSILON_PER_QUERY, ValueKind.DECIMAL, "privacy budget per query"),
        (EPSILON_TOTAL, ValueKind.DECIMAL, "total privacy budget"),
        (QUERY_TEMPLATES, ValueKind.STRING, "query templates"),
    ):
        reg(iri, _no_value, kind=kind, label=label, term=applied)
    # A price's terms (usage_policies.pricing), on a compensate duty: applied by its statements.
    settled = "the agreement's statements apply to each period"
    for iri, kind, label in (
        (METERED_PER, ValueKind.IRI, "what the price is paid for"),
        (BILLING_PERIOD, ValueKind.STRING, "billing period"),
        (ROUNDING, ValueKind.STRING, "rounding of a statement"),
        (PRICE_TIERS, ValueKind.STRING, "price tiers"),
    ):
        reg(iri, _no_value, kind=kind, label=label, term=settled)


_install_builtins()


def context_operand(iri: str) -> LeftOperand:
    """An operand read from ``Request.context[iri]``: the request supplies values the engine lacks."""
    return LeftOperand(iri=iri, resolve=lambda r, w, now: r.context.get(iri), label=_short(iri))


# --- Operators (ODRL 2.2 §2.5.1 Operators, plus the DSP 2025-1 contract schema enum) -------------------


class OperatorFunction(Protocol):
    """Decides ``left OP right``. Raises TypeError/ValueError when the values do not fit the operator."""

    def __call__(
        self, left: object, right: tuple[object, ...], operand: LeftOperand, world: World, /,
    ) -> bool: ...


class Operator(msgspec.Struct, frozen=True, kw_only=True):
    iri: str
    apply: OperatorFunction
    wording: str  # how a reason says it: "policy requires <wording><right>"


_OPERATORS: dict[str, Operator] = {}


def register_operator(iri: str, apply: OperatorFunction, *, wording: str = "") -> Operator:
    op = Operator(iri=iri, apply=apply, wording=wording)
    _OPERATORS[iri] = op
    _generation[0] += 1
    return op


def get_operator(iri: str) -> Operator | None:
    return _OPERATORS.get(iri)


def _one(right: tuple[object, ...]) -> object:
    if len(right) != 1:
        raise ValueError(f"this operator takes one right operand, got {len(right)}")
    return right[0]


def _as_set(value: object) -> tuple[object, ...]:
    if isinstance(value, tuple | list | set | frozenset):
        return tuple(value)
    return (value,)


def _in(value: object, container: object, operand: LeftOperand, world: World) -> bool:
    if operand.within is not None:
        return operand.within(value, container, world)
    return values_equal(value, container)


def _eq(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    r = _one(right)
    if isinstance(left, tuple | list | frozenset | set):
        if operand.each:  # the party holds each of these: does it hold the right operand?
            return any(values_equal(v, r) for v in left)
        return len(left) == 1 and values_equal(next(iter(left)), r)
    return left == r if type(left) is type(r) and type(left) is not Elapsed else values_equal(left, r)


def _neq(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    return not _eq(left, right, operand, world)


def _ordered(test: Callable[[int], bool]) -> OperatorFunction:
    def apply(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
        r = _one(right)
        if operand.rank is not None:  # an order the operand defines (certification levels)
            rank = operand.rank
            values = left if operand.each and isinstance(left, tuple | list | frozenset | set) else (left,)
            bound = rank(r, world)
            return any(test(compare(rank(v, world), bound)) for v in values)
        if isinstance(left, str) or isinstance(r, str):
            raise TypeError("strings and IRIs have no order")
        return test(compare(left, r))

    return apply


def _is_a(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    # ODRL 2.2 vocabulary: isA holds when "a given value is an instance of the right operand". A class is
    # not an instance of itself, so the value must lie strictly below the right operand in the operand's
    # hierarchy; an operand without one has no instances to tell.
    r = _one(right)
    within = operand.within
    if within is None:
        raise TypeError(f"{operand.label or 'this operand'} has no class hierarchy to find instances of {show(r)}")
    return within(left, r, world) and not within(r, left, world)


def _is_part_of(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    # Left (a value or a set) lies within the right operand (a value or a set).
    return all(any(_in(v, r, operand, world) for r in right) for v in _as_set(left))


def _has_part(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    # Left (a set or a region) contains every right value.
    values = _as_set(left)
    return all(any(_in(r, v, operand, world) for v in values) for r in right)


def _is_any_of(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    return any(_in(v, r, operand, world) for v in _as_set(left) for r in right)


def _is_all_of(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    # "A given value is all of the right operand": every right value is among the left values.
    values = _as_set(left)
    return all(any(values_equal(v, r) for v in values) for r in right)


def _is_none_of(left: object, right: tuple[object, ...], operand: LeftOperand, world: World) -> bool:
    return not _is_any_of(left, right, operand, world)


def _install_operators() -> None:
    reg = register_operator
    reg(ODRL + "eq", _eq, wording="")
    reg(ODRL + "neq", _neq, wording="not ")
    reg(ODRL + "lt", _ordered(lambda c: c < 0), wording="less than ")
    reg(ODRL + "lteq", _ordered(lambda c: c <= 0), wording="at most ")
    reg(ODRL + "gt", _ordered(lambda c: c > 0), wording="more than ")
    reg(ODRL + "gteq", _ordered(lambda c: c >= 0), wording="at least ")
    # ``term-lteq`` is in the DSP 2025-1 contract schema's operator enum without a definition; it is
    # read as ``lteq`` so that a schema-valid policy is never rejected.
    reg(ODRL + "term-lteq", _ordered(lambda c: c <= 0), wording="at most ")
    reg(ODRL + "isA", _is_a, wording="a kind of ")
    reg(ODRL + "isPartOf", _is_part_of, wording="within ")
    reg(ODRL + "hasPart", _has_part, wording="to include ")
    reg(ODRL + "isAnyOf", _is_any_of, wording="one of ")
    reg(ODRL + "isAllOf", _is_all_of, wording="all of ")
    reg(ODRL + "isNoneOf", _is_none_of, wording="none of ")


_install_operators()


def builtin_operand_iris() -> Iterable[str]:
    return tuple(_OPERANDS)
