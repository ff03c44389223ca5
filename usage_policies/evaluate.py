"""Policy evaluation: ``evaluate(policy, request, world, now) -> Decision``.

Pure: the evaluation time ``now`` and the state of the world are arguments; nothing is read from a
clock, a file or the network. A policy is compiled once (right operands parsed, operands and operators
looked up) and the compiled form is memoised, so repeated decisions cost only the comparisons.

Decide first: ``compile(policy).decide(request, world, now)`` (or ``decide(policy, …)``) gives the same
outcome, reasons and duties as ``evaluate`` without building the report. Every constraint and premise is
compiled twice from one reading: to a function that builds its report and to a bare test, true exactly when
that report would say satisfied. A rule's tests stop at the first that fails; a permit's reasons and duties
are prepared at compile time; a deny because no permission applies explains only the parts that fail, by
the same report functions, so its reasons are ``evaluate``'s own, and only when they are first read
(:class:`Verdict`): the decision itself costs about what a permit costs.

Rule activation (FORCE compliance-report model, the ODRL Formal Semantics draft's vocabulary):

* A rule's *premises* are its target, assignee and action (when it has them; a rule without them
  matches every request) and each of its constraints. Target and party match by equality or by
  ``odrl:partOf`` membership in ``World.part_of``, and for a collection with a refinement also by meeting
  the refinement (ODRL 2.2 IM §2.5.5, §2.5.6: both, not either); the action matches along the ODRL 2.2 vocabulary's
  ``includedIn`` hierarchy (read ⊂ use, write ≡ modify ⊂ use, sell ⊂ transfer but not use).
* Logical constraints: ``and`` = all, ``or`` = at least one, ``xone`` = exactly one, ``andSequence`` =
  all (at one instant there is no order to check). Children are always evaluated and reported.
* A prohibition is active when all its premises hold.
* A permission is active when all its premises hold and none of its duties blocks it.

**Duty semantics (an explicit choice).** Each duty is classified by *when* it is due:

* *before use* — the duty carries the ODRL idiom ``event lt|lteq odrl:policyUsage`` (ODRL 2.2 vocabulary,
  ``policyUsage``), or its action is one that only makes sense beforehand (``obtainConsent``,
  ``reviewPolicy``). Such a duty is a pre-condition: the permission is inactive until the world
  reports it *Fulfilled*.
* *with or after use* — every other duty (``inform``, ``acceptTracking`` (log), ``delete`` later,
  ``compensate`` per use, …). Its state does not block the use unless the world reports it
  *Violated*; a permit carries it in :attr:`Decision.duties`, and :mod:`usage_policies.enforce` turns
  it into effects for the node to carry out. This is the FORCE suite's expectation ("given that
  eventually the duty is fulfilled": an unset duty does not block, a violated one does), so it is the
  default for all of its cases.

Decision: an active permission and no active prohibition → ``permit``. An active prohibition →
``deny``, unless a permission is active too, when the policy's conflict strategy decides (ODRL 2.2
§2.8; ``perm`` → permit, ``prohibit`` → deny, ``invalid`` (the default) → deny, the policy is void).
No active rule → ``deny`` when the policy has permissions (closed world: nothing permits the request),
``not-applicable`` when it has only prohibitions and none applies. Policy-level obligations are reported
(``ObligationReport``) and travel with a permit in :attr:`Decision.duties`; they do not decide a request.
A duty's own constraints say *when* it is due (``event`` vs ``policyUsage``) and by when or how much
(:mod:`usage_policies.enforce` reads ``dateTime``, ``elapsedTime``, ``payAmount``); they are not
evaluated as conditions of the permission.
"""

from __future__ import annotations

import enum
import operator as _op
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from itertools import repeat
from typing import Any, NamedTuple

import msgspec

from usage_policies import operands as _ops
from usage_policies.model import (
    ODRL,
    TDS,
    Action,
    AnyConstraint,
    AssetCollection,
    ConflictStrategy,
    Constraint,
    Duty,
    Literal,
    LogicalConstraint,
    LogicalOperand,
    PartyCollection,
    Permission,
    Policy,
    Prohibition,
    Ref,
    action_matches,
    collection_ids,
    duty_key,
    rule_with_policy_defaults,
)
from usage_policies.report import (
    Activation,
    ConstraintReport,
    DeonticState,
    DutyReport,
    DutyState,
    DutyTiming,
    PolicyReport,
    PremiseKind,
    PremiseReport,
    RuleKind,
    RuleReport,
    Satisfaction,
)
from usage_policies.values import DataClass, ValueKind, coerce, parse_data_class, show

# Enum members as module constants: the hot path reads them on every decision.
SATISFIED = Satisfaction.SATISFIED
UNSATISFIED = Satisfaction.UNSATISFIED
ACTIVE = Activation.ACTIVE
INACTIVE = Activation.INACTIVE
PERMISSION = RuleKind.PERMISSION
ACTION = PremiseKind.ACTION


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """Who wants to do what with which asset, and the context of the attempt.

    ``action`` may be a full IRI or an ODRL term (``"use"``, ``"odrl:use"``). ``use_count`` is the
    number of uses already made under the agreement (``odrl:count`` resolves to ``use_count + 1``, the
    count including this attempt); ``first_use`` the time of the first use (``odrl:elapsedTime`` runs
    from it). ``region`` is where the party says it is (``odrl:spatial``); ``verified_region``,
    ``member_of``, ``legal_entity_ids`` and ``certification_levels`` are what credentials by issuers the
    caller trusts verify of it. ``context`` carries values for left operands the engine does not know, by IRI.
    """

    party: str | None = None
    action: str = ODRL + "use"
    target: str | None = None
    purpose: str | None = None
    region: str | None = None
    connector: str | None = None
    recipient: str | None = None
    export_destination: str | None = None
    event: str | None = None
    pay_amount: Decimal | None = None
    pay_unit: str | None = None
    percentage: Decimal | None = None
    use_count: int = 0
    first_use: datetime | None = None
    data_class: str | None = None
    #: What trusted issuers' credentials verify of the party (``tds:verifiedRegion``, ``tds:memberOf``,
    #: ``tds:legalEntityId``, ``tds:certificationLevel``); empty or None: nothing verified.
    verified_region: str | None = None
    member_of: tuple[str, ...] = ()
    legal_entity_ids: tuple[str, ...] = ()
    certification_levels: tuple[str, ...] = ()
    context: Mapping[str, object] = msgspec.field(default_factory=dict)
    uid: str | None = None
    rule_uid: str | None = None


class World(msgspec.Struct, frozen=True, kw_only=True):
    """The state of the world the evaluation needs, supplied by the caller (the node's store).

    * ``part_of``: member IRI → collections it is ``odrl:partOf`` (party and asset collections);
    * ``duty_states``: duty → :class:`DutyState`. A duty is named by its ``uid``; a duty without one (as in
      most published policies) by its path in the policy's atomic rules, ``permission[i].duty[j]``,
      ``prohibition[i].remedy[j]`` or ``obligation[k]`` (:func:`duties_by_path`), or by its content key
      (:func:`usage_policies.model.duty_key`, the same for every copy of the same duty). The uid is looked
      up first, then the path, then the key;
    * ``data_classes``: asset → data class (``general``/``important``/``core``/``personal``);
    * ``party_regions``: participant → region code (``tds:exportDestination`` of a recipient);
    * ``region_parents``: extra region edges, child → parent (beside ISO 3166-2 prefixes and EU);
    * ``concept_parents``: taxonomy for ``isA`` (e.g. purposes), concept → broader concepts;
    * ``certification_order``: certification levels by name, lowest first (``tds:certificationLevel gteq``);
      levels that are whole numbers are ordered as numbers without it;
    * ``references``: values of ``rightOperandReference`` IRIs.
    """

    part_of: Mapping[str, frozenset[str]] = msgspec.field(default_factory=dict)
    duty_states: Mapping[str, DutyState] = msgspec.field(default_factory=dict)
    data_classes: Mapping[str, str] = msgspec.field(default_factory=dict)
    party_regions: Mapping[str, str] = msgspec.field(default_factory=dict)
    region_parents: Mapping[str, str] = msgspec.field(default_factory=dict)
    concept_parents: Mapping[str, frozenset[str]] = msgspec.field(default_factory=dict)
    certification_order: tuple[str, ...] = ()
    references: Mapping[str, object] = msgspec.field(default_factory=dict)


EMPTY_WORLD = World()


class Outcome(enum.Enum):
    PERMIT = "permit"
    DENY = "deny"
    NOT_APPLICABLE = "not-applicable"


class Decision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The answer: outcome, human-readable reasons, the full report, and the duties due with a permit."""

    outcome: Outcome
    reasons: list[str]
    report: PolicyReport
    duties: tuple[Duty, ...] = ()

    @property
    def permitted(self) -> bool:
        return self.outcome is Outcome.PERMIT


class Verdict:
    """What :func:`decide` answers: a :class:`Decision` without its report.

    ``outcome``, ``reasons`` and ``duties`` are those :func:`evaluate` gives for the same input; the report
    is built only when asked for, by :func:`evaluate` on the same compiled policy.

    A deny's reasons are built when ``reasons`` is first read, not when the request is decided: explaining
    a deny (the reports of the parts that fail, both values shown, the rule's sentence) costs two to four
    times what deciding it costs, and a caller that only asks whether the use is permitted should not pay
    for it. Until they are read the verdict holds what explains it: the compiled rules (so a registry change
    after the decision does not change them), the request, the world and ``now``. These are held, not
    copied: ``Request`` and ``World`` are frozen, their mappings are read-only to the engine and the node
    builds them for each decision, so a later read explains the decision made, whatever is decided
    afterwards. (A caller that changes a dict it put in a world or a request must read the reasons first;
    copying every mapping on every deny would cost more than the explanation saves.) Once read, the reasons
    are kept and the request and world let go. Read-only; compared and hashed by outcome, reasons and duties.
    """

    __slots__ = ("_duties", "_outcome", "_reasons")

    _outcome: Outcome
    _duties: tuple[Duty, ...]
    _reasons: tuple[str, ...]

    def __init__(self, *, outcome: Outcome, reasons: tuple[str, ...], duties: tuple[Duty, ...] = ()) -> None:
        self._outcome, self._reasons, self._duties = outcome, reasons, duties

    @property
    def outcome(self) -> Outcome:
        return self._outcome

    @property
    def duties(self) -> tuple[Duty, ...]:
        return self._duties

    @property
    def reasons(self) -> tuple[str, ...]:
        return self._reasons

    @property
    def permitted(self) -> bool:
        return self._outcome is Outcome.PERMIT

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return (self._outcome, self.reasons, self._duties) == (other._outcome, other.reasons, other._duties)

    def __hash__(self) -> int:
        return hash((self._outcome, self.reasons, self._duties))

    def __repr__(self) -> str:
        return f"Verdict(outcome={self._outcome!r}, reasons={self.reasons!r}, duties={self._duties!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return _verdict, (self._outcome, self.reasons, self._duties)


def _verdict(outcome: Outcome, reasons: tuple[str, ...], duties: tuple[Duty, ...]) -> Verdict:
    return Verdict(outcome=outcome, reasons=reasons, duties=duties)


class _Unexplained(Verdict):
    """A deny whose reasons ``explain(*args)`` builds when they are first read (see :class:`Verdict`).

    Made by ``_unexplained(_Unexplained)`` and one store of ``_why = (explain, *args)``, without an
    ``__init__``: the deny costs about what a permit costs. Its reasons slot stays empty until read."""

    __slots__ = ("_why",)

    _outcome = Outcome.DENY  # shadows the slot: nothing to store per deny
    _duties = ()
    _why: tuple[Any, ...] | None

    @property
    def reasons(self) -> tuple[str, ...]:
        why = self._why
        if why is None:  # explained already (the reasons are stored before this is cleared)
            return self._reasons
        reasons: tuple[str, ...] = why[0](*why[1:])
        self._reasons = reasons
        self._why = None  # the request and world are no longer needed
        return reasons


_unexplained = object.__new__  # an _Unexplained without a call of __init__ (see its docstring)


# --- Compilation ---------------------------------------------------------------------------------------

Check = Callable[[Request, World, datetime], ConstraintReport]
Premise = Callable[[Request, World, datetime], PremiseReport]
#: The decision of a check or a premise without its report: True exactly when the report says satisfied.
Test = Callable[[Request, World, datetime], bool]


class _Part(NamedTuple):
    """A constraint compiled twice from one reading: its report, and its bare decision (with the tests
    whose conjunction it is: its children for ``and``, itself otherwise) for :func:`decide`."""

    check: Check
    test: Test
    conjuncts: tuple[Test, ...]


def expand_action(name: str) -> str:
    """``use``, ``odrl:use`` → the ODRL IRI; other IRIs unchanged."""
    if name.startswith("odrl:"):
        return ODRL + name[5:]
    if ":" not in name:
        return ODRL + name
    return name


# What a resolver may raise for a request it cannot read (the constraint is then not satisfied).
_RESOLVER_ERRORS = (TypeError, ValueError, LookupError)
# What a comparison may raise for values that do not compare: a type mismatch, or a decimal NaN from the
# request (``decimal.InvalidOperation`` is an ArithmeticError). The constraint is then not satisfied.
_COMPARE_ERRORS = (TypeError, ValueError, ArithmeticError)
_FAST_ERRORS = (*_RESOLVER_ERRORS, ArithmeticError)


def _never(request: Request, world: World, now: datetime) -> bool:
    return False


def _fail(uid: str | None, left_operand: str, operator: str, reason: str) -> _Part:
    report = ConstraintReport(
        constraint=uid, satisfaction=UNSATISFIED, left_operand=left_operand, operator=operator, reason=reason
    )
    return _Part(lambda request, world, now: report, _never, (_never,))


def _always(request: Request, world: World, now: datetime) -> bool:
    return True


def _term(uid: str | None, left_operand: str, operator: str, operand: _ops.LeftOperand,
          right: tuple[object, ...]) -> _Part:
    """A constraint on a term operand (``LeftOperand.term``): the term is applied where the use happens (the
    data sandbox's query terms), so at decision time the constraint holds, with where it is applied as the
    reason. Its right operand has been read like any other."""
    report = ConstraintReport(
        constraint=uid, satisfaction=SATISFIED, left_operand=left_operand, operator=operator,
        right_value=right[0] if len(right) == 1 else right, reason=f"{operand.label} is a term {operand.term}",
    )
    return _Part(lambda request, world, now: report, _always, (_always,))


def _coerce_term(term: Literal | Ref, data_type: str | None, kind: ValueKind) -> object:
    if isinstance(term, Ref):
        if kind is ValueKind.DATA_CLASS:
            return parse_data_class(term.iri)
        return term.iri
    return coerce(term.value, term.datatype or data_type, kind)


def _compile_atomic(c: Constraint) -> _Part:
    operand = _ops.get_operand(c.left_operand)
    operator = _ops.get_operator(c.operator)
    uid, lo, op_iri = c.uid, c.left_operand, c.operator
    if operator is None:
        return _fail(uid, lo, op_iri, f"unknown operator {op_iri}")
    kind = operand.kind if operand is not None else ValueKind.STRING
    try:
        right = tuple(_coerce_term(t, c.data_type, kind) for t in c.right_operand)
    except ValueError as exc:
        return _fail(uid, lo, op_iri, f"right operand of {_short(lo)} is unreadable: {exc}")
    if operand is not None and operand.term:
        return _term(uid, lo, op_iri, operand, right)
    if operand is None:
        operand_def = _ops.context_operand(lo)
        label = _short(lo)
        missing = f"unknown left operand {lo}: not registered and not given in the request"
    else:
        operand_def = operand
        label = operand.label
        missing = operand.missing or f"{label} is not given"
    resolve = operand_def.resolve
    reference = c.right_operand_reference
    apply, wording = operator.apply, operator.wording
    unit = c.unit if lo == ODRL + "payAmount" else None
    shown_right: object = right[0] if len(right) == 1 else right
    fast = _fast_comparison(op_iri, right) if reference is None and unit is None else None
    if fast is not None:
        compare_fast, r0 = fast
        r_type = type(r0)

        def check_fast(request: Request, world: World, now: datetime) -> ConstraintReport:
            # Same answer as the general path below, for a value of the right operand's own type;
            # anything unusual (another type, an error) goes to the general path, which explains it.
            try:
                left = resolve(request, world, now)
                ok = type(left) is r_type and compare_fast(left, r0)
            except _FAST_ERRORS:
                return check(request, world, now)
            if type(left) is not r_type:
                return check(request, world, now)
            if ok:
                return ConstraintReport(
                    constraint=uid, satisfaction=SATISFIED, left_operand=lo, operator=op_iri,
                    left_value=left, right_value=r0,
                )
            return ConstraintReport(
                constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
                left_value=left, right_value=r0,
                reason=f"{label} is {show(left)}, policy requires {wording}{show(r0)}",
            )

    def check(request: Request, world: World, now: datetime) -> ConstraintReport:
        rhs, rhs_shown = right, shown_right
        if reference is not None:
            value = world.references.get(reference)
            if value is None:
                return ConstraintReport(
                    constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
                    reason=f"right operand reference {reference} is not known",
                )
            try:
                rhs = tuple(
                    coerce(v, None, kind) if isinstance(v, str) else v
                    for v in (value if isinstance(value, tuple | list) else (value,))
                )
            except ValueError as exc:
                return ConstraintReport(
                    constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
                    reason=f"right operand reference {reference} is unreadable: {exc}",
                )
            rhs_shown = rhs[0] if len(rhs) == 1 else rhs
        try:
            left = resolve(request, world, now)
        except _RESOLVER_ERRORS as exc:
            return ConstraintReport(
                constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
                right_value=rhs_shown, reason=f"{label} cannot be read: {exc}",
            )
        if left is None:
            return ConstraintReport(
                constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
                right_value=rhs_shown, reason=f"{missing}, policy requires {wording}{show(rhs_shown)}",
            )
        try:
            ok = apply(left, rhs, operand_def, world)
        except _COMPARE_ERRORS as exc:
            return ConstraintReport(
                constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
                left_value=left, right_value=rhs_shown,
                reason=f"{label} {show(left)} cannot be compared with {show(rhs_shown)}: {exc}",
            )
        if ok and unit is not None and request.pay_unit is not None and request.pay_unit != unit:
            return ConstraintReport(
                constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
                left_value=left, right_value=rhs_shown,
                reason=f"{label} is in {request.pay_unit}, policy requires {unit}",
            )
        if ok:
            return ConstraintReport(
                constraint=uid, satisfaction=SATISFIED, left_operand=lo, operator=op_iri,
                left_value=left, right_value=rhs_shown,
            )
        return ConstraintReport(
            constraint=uid, satisfaction=UNSATISFIED, left_operand=lo, operator=op_iri,
            left_value=left, right_value=rhs_shown,
            reason=f"{label} is {show(left)}, policy requires {wording}{show(rhs_shown)}",
        )

    def test(request: Request, world: World, now: datetime) -> bool:
        return check(request, world, now).satisfaction is SATISFIED

    if fast is None:
        return _Part(check, test, (test,))
    quick = _fast_test(resolve, *fast, test)
    return _Part(check_fast, quick, (quick,))


def _fast_test(resolve: _ops.OperandResolver, compare: _Compare, r0: object, general: Test) -> Test:
    """``check_fast`` without its report: the same comparison for a value of the right operand's own type,
    and the general path's answer for anything else. The built-in resolvers that only read the request or
    ``now`` are read directly, without a call."""
    r_type = type(r0)
    if resolve is _ops.evaluation_time:

        def test_now(request: Request, world: World, now: datetime) -> bool:
            if type(now) is r_type:
                try:
                    return compare(now, r0)
                except _FAST_ERRORS:
                    pass
            return general(request, world, now)

        return test_now
    if resolve is _ops.attempted_uses:

        def test_count(request: Request, world: World, now: datetime) -> bool:
            left = request.use_count + 1
            if type(left) is r_type:
                try:
                    return compare(left, r0)
                except _FAST_ERRORS:
                    pass
            return general(request, world, now)

        return test_count
    if isinstance(resolve, _ops.RequestField):
        read = resolve.read

        def test_field(request: Request, world: World, now: datetime) -> bool:
            left = read(request)
            if type(left) is r_type:
                try:
                    return compare(left, r0)
                except _FAST_ERRORS:
                    pass
            return general(request, world, now)

        return test_field

    def test_resolved(request: Request, world: World, now: datetime) -> bool:
        try:
            left = resolve(request, world, now)
            if type(left) is r_type:
                return compare(left, r0)
        except _FAST_ERRORS:
            pass
        return general(request, world, now)

    return test_resolved


_Compare = Callable[[Any, Any], bool]
_EQUALITY: dict[str, _Compare] = {ODRL + "eq": _op.eq, ODRL + "neq": _op.ne}
_ORDER: dict[str, _Compare] = {
    ODRL + "lt": _op.lt, ODRL + "lteq": _op.le, ODRL + "term-lteq": _op.le,
    ODRL + "gt": _op.gt, ODRL + "gteq": _op.ge,
}


def _fast_comparison(
    op_iri: str, right: tuple[object, ...]
) -> tuple[_Compare, object] | None:
    """A direct Python comparison where it agrees with :func:`usage_policies.values.compare`: one right
    value of a plain type, compared with a left value of the same type (checked at run time)."""
    if len(right) != 1 or _ops.get_operator(op_iri) is not _BUILTIN_OPERATORS.get(op_iri):
        return None
    r0 = right[0]
    if op_iri in _EQUALITY and type(r0) in (str, int, Decimal, datetime):
        return _EQUALITY[op_iri], r0
    if op_iri in _ORDER and type(r0) in (int, Decimal, datetime):
        return _ORDER[op_iri], r0
    return None


_BUILTIN_OPERATORS = {iri: _ops.get_operator(iri) for iri in (*_EQUALITY, *_ORDER)}


def _compile_logical(c: LogicalConstraint) -> _Part:
    parts = tuple(_compile(ch) for ch in c.constraints)
    children = tuple(p.check for p in parts)
    uid, operand = c.uid, c.operand
    # How many satisfied children make the whole satisfied: and/andSequence all, or some, xone one.
    is_or, is_xone, size = operand is LogicalOperand.OR, operand is LogicalOperand.XONE, len(children)

    def check(request: Request, world: World, now: datetime) -> ConstraintReport:
        results = []
        n = 0
        for child in children:  # no short-circuit: every child is reported
            r = child(request, world, now)
            results.append(r)
            if r.satisfaction is SATISFIED:
                n += 1
        ok = n > 0 if is_or else (n == 1 if is_xone else n == size)
        reports = tuple(results)
        return ConstraintReport(
            constraint=uid, satisfaction=SATISFIED if ok else UNSATISFIED, logical_operand=operand,
            children=reports, reason=None if ok else _logical_reason(operand, reports, n),
        )

    # The bare decisions may stop at the first child that settles them (nothing is reported).
    tests = tuple(p.test for p in parts)
    if is_or:

        def test_or(request: Request, world: World, now: datetime) -> bool:
            for t in tests:  # noqa: SIM110 (a plain loop: no generator object on every decision)
                if t(request, world, now):
                    return True
            return False

        return _Part(check, test_or, (test_or,))
    if is_xone:

        def test_xone(request: Request, world: World, now: datetime) -> bool:
            held = 0
            for t in tests:
                if t(request, world, now):
                    held += 1
                    if held > 1:
                        return False
            return held == 1

        return _Part(check, test_xone, (test_xone,))
    # and, andSequence: the conjunction of the children's conjuncts, which a rule takes in as its own.
    conjuncts = tuple(t for p in parts for t in p.conjuncts)
    return _Part(check, _all(conjuncts), conjuncts)


def _all(tests: tuple[Test, ...]) -> Test:
    def test_all(request: Request, world: World, now: datetime) -> bool:
        for t in tests:  # noqa: SIM110 (a plain loop: no generator object on every decision)
            if not t(request, world, now):
                return False
        return True

    return test_all


def _logical_reason(operand: LogicalOperand, reports: tuple[ConstraintReport, ...], n: int) -> str:
    failing = [r.reason for r in reports if r.satisfaction is UNSATISFIED and r.reason]
    if operand is LogicalOperand.XONE and n > 1:
        return f"{n} alternatives hold, the policy requires exactly one"
    if operand in (LogicalOperand.OR, LogicalOperand.XONE):
        example = f", e.g. {failing[0]}" if failing else ""
        return f"none of the {len(reports)} alternatives holds{example}"
    return "; ".join(failing[:3]) + ("; …" if len(failing) > 3 else "")


def _compile(c: AnyConstraint) -> _Part:
    if isinstance(c, LogicalConstraint):
        return _compile_logical(c)
    return _compile_atomic(c)


def compile_constraint(c: AnyConstraint) -> Check:
    """A function from (request, world, now) to the constraint's report."""
    return _compile(c).check


def compile_test(c: AnyConstraint) -> Test:
    """A function from (request, world, now) to whether the constraint is satisfied: the report of
    :func:`compile_constraint` says satisfied exactly when it returns True (it builds no report)."""
    return _compile(c).test


def _short(iri: str) -> str:
    for prefix, short in ((ODRL, ""), (TDS, "tds:")):
        if iri.startswith(prefix):
            return short + iri[len(prefix):]
    return iri


def _compile_membership(
    kind: PremiseKind, expected: str | PartyCollection | AssetCollection, field: str
) -> tuple[Premise, Test]:
    """The target or party premise. A collection admits a member of it (the collection itself, or
    ``odrl:partOf`` its ``uid`` or ``source``) that also meets *all* its refinements: ODRL 2.2 IM §2.5.5 and
    §2.5.6, "the refinement property applies to the characteristics of each member of the collection"."""
    noun = "target" if kind is PremiseKind.TARGET else "party"
    refinement: tuple[Check, ...] = ()
    if isinstance(expected, str):
        ids: tuple[str, ...] = (expected,)
    else:
        ids, refinement = collection_ids(expected), tuple(compile_constraint(r) for r in expected.refinement)
    name = ids[0] if ids else "a collection"
    single = ids[0] if len(ids) == 1 else None

    get_actual = _op.attrgetter(field)

    def premise(request: Request, world: World, now: datetime) -> PremiseReport:
        actual: str | None = get_actual(request)
        if actual is None:
            return PremiseReport(kind=kind, satisfaction=UNSATISFIED, expected=name, actual=None,
                                 reason=f"request names no {noun}, rule is about {name!r}")
        if actual == single:
            member = True
        else:
            parents = world.part_of.get(actual, ())
            member = not ids or any(actual == i or i in parents for i in ids)
        if not member:
            return PremiseReport(kind=kind, satisfaction=UNSATISFIED, expected=name, actual=actual,
                                 reason=f"{noun} is {actual!r}, rule is about {name!r}")
        if not refinement:
            return PremiseReport(kind=kind, satisfaction=SATISFIED, expected=name, actual=actual)
        refined = tuple([r(request, world, now) for r in refinement])
        if all(r.satisfaction is SATISFIED for r in refined):
            return PremiseReport(kind=kind, satisfaction=SATISFIED, expected=name, actual=actual,
                                 refinements=refined)
        unmet = "; ".join(r.reason or "" for r in refined if r.satisfaction is UNSATISFIED)
        return PremiseReport(
            kind=kind, satisfaction=UNSATISFIED, expected=name, actual=actual, refinements=refined,
            reason=f"{noun} {actual!r} is in {name!r} but does not meet its refinement: {unmet}",
        )

    if single is None or refinement:
        return premise, _satisfied(premise)

    def test(request: Request, world: World, now: datetime) -> bool:
        # The premise above for one IRI and no refinement: the IRI itself, or a member of it.
        actual: str | None = get_actual(request)
        if actual is None:
            return False
        return actual == single or single in world.part_of.get(actual, ())

    return premise, test


def _satisfied(explain: Callable[[Request, World, datetime], PremiseReport | ConstraintReport]) -> Test:
    def test(request: Request, world: World, now: datetime) -> bool:
        return explain(request, world, now).satisfaction is SATISFIED

    return test


# How many requested action names a compiled action premise remembers the answer for.
_ACTION_MEMO = 64


def _compile_action(action: Action) -> tuple[Premise, Test]:
    name = action.name
    refinement = tuple(compile_constraint(r) for r in action.refinement)
    matches: dict[str, bool] = {}

    def covers(requested: str) -> bool:
        ok = action_matches(name, expand_action(requested))
        if len(matches) < _ACTION_MEMO:  # bounded: the requested name comes from the caller
            matches[requested] = ok
        return ok

    def premise(request: Request, world: World, now: datetime) -> PremiseReport:
        requested = request.action
        ok = matches.get(requested)
        if ok is None:
            ok = covers(requested)
        if not ok:
            return PremiseReport(
                kind=PremiseKind.ACTION, satisfaction=UNSATISFIED, expected=name, actual=requested,
                reason=f"action {_short(expand_action(requested))!r} is not covered by "
                f"{_short(name)!r}",
            )
        if not refinement:
            return PremiseReport(kind=ACTION, satisfaction=SATISFIED, expected=name, actual=requested)
        refined = tuple([r(request, world, now) for r in refinement])
        if all(r.satisfaction is SATISFIED for r in refined):
            return PremiseReport(kind=ACTION, satisfaction=SATISFIED, expected=name,
                                 actual=requested, refinements=refined)
        reasons = "; ".join(r.reason or "" for r in refined if r.satisfaction is UNSATISFIED)
        return PremiseReport(
            kind=PremiseKind.ACTION, satisfaction=UNSATISFIED, expected=name, actual=requested,
            refinements=refined, reason=f"refinement of {_short(name)!r} not met: {reasons}",
        )

    if refinement:
        return premise, _satisfied(premise)

    def test(request: Request, world: World, now: datetime) -> bool:
        requested = request.action
        ok = matches.get(requested)
        return covers(requested) if ok is None else ok

    return premise, test


# Duties whose action only makes sense before the use (see the module docstring).
BEFORE_USE_ACTIONS = frozenset({ODRL + "obtainConsent", ODRL + "reviewPolicy"})
_POLICY_USAGE = ODRL + "policyUsage"


def duty_timing(duty: Duty) -> DutyTiming:
    """When *duty* is due: before the use (a pre-condition) or with / after it (an effect)."""
    for c in duty.constraints:
        if isinstance(c, Constraint) and c.left_operand == ODRL + "event" and any(
            isinstance(t, Ref) and t.iri == _POLICY_USAGE for t in c.right_operand
        ):
            if c.operator in (ODRL + "lt", ODRL + "lteq"):
                return DutyTiming.BEFORE_USE
            return DutyTiming.WITH_OR_AFTER_USE
    if duty.action.name in BEFORE_USE_ACTIONS:
        return DutyTiming.BEFORE_USE
    return DutyTiming.WITH_OR_AFTER_USE


_UNKNOWN_DUTY = DutyState()


class _CompiledDuty(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A duty with what the world may call it (see :attr:`World.duty_states`) and when it is due."""

    duty: Duty
    path: str
    key: str
    timing: DutyTiming


def _compile_duty(duty: Duty, path: str) -> _CompiledDuty:
    return _CompiledDuty(duty=duty, path=path, key=duty_key(duty), timing=duty_timing(duty))


def _duty_state(compiled: _CompiledDuty, world: World) -> DutyState:
    states = world.duty_states
    if states:  # the world names a duty by its uid, its path or its content key (see World)
        for ref in (compiled.duty.uid, compiled.path, compiled.key):
            if ref is not None and ref in states:
                return states[ref]
    return _UNKNOWN_DUTY


def _blocking(compiled: _CompiledDuty, world: World) -> str | None:
    """Why the duty keeps its permission from applying, or None when it does not."""
    state = _duty_state(compiled, world)
    if state.deontic is DeonticState.VIOLATED:
        return f"duty {_short(compiled.duty.action.name)!r} has been violated"
    if compiled.timing is DutyTiming.BEFORE_USE and state.deontic is not DeonticState.FULFILLED:
        return f"duty {_short(compiled.duty.action.name)!r} must be fulfilled before use"
    return None


def _duty_report(compiled: _CompiledDuty, world: World, can_block: bool = True) -> DutyReport:
    duty = compiled.duty
    # A remedy or a policy obligation (can_block False) is reported, never a condition of a permission.
    reason = _blocking(compiled, world) if can_block else None
    return DutyReport(rule=duty.uid, action=duty.action.name, timing=compiled.timing,
                      state=_duty_state(compiled, world), blocking=reason is not None, reason=reason,
                      path=compiled.path, key=compiled.key)


Explain = Callable[[Request, World, datetime], PremiseReport | ConstraintReport]
Decide = Callable[[Request, World, datetime], Verdict]
#: -1 when a rule applies, else the index in its ``parts`` of the first premise or constraint that does not
#: hold, or ``len(parts)`` when they all hold and a duty blocks it.
Unmet = Callable[[Request, World, datetime], int]


def _unmet(conjuncts: tuple[Test, ...], owners: tuple[int, ...], duties: tuple[_CompiledDuty, ...]) -> Unmet:
    """Whether a rule applies, stopping at the first test that says no. ``owners[i]`` is the part that
    ``conjuncts[i]`` belongs to.

    The failing test's place is found after the loop, by ``tuple.index``, so that the loop counts
    nothing: a test object appears once, except the constants ``_never`` (whose first place is then the
    first to fail anyway) and ``_always`` (which never fails)."""
    blocked = owners[-1] + 1 if owners else 0

    def unmet(request: Request, world: World, now: datetime) -> int:
        for t in conjuncts:
            if not t(request, world, now):
                return owners[conjuncts.index(t)]
        if duties and any(_blocking(duty, world) is not None for duty in duties):
            return blocked
        return -1

    return unmet


class _CompiledRule(msgspec.Struct, frozen=True, kw_only=True):
    kind: RuleKind
    rule: Permission | Prohibition
    label: str
    permit_reasons: tuple[str, ...]  # what a permit by this rule says, duties due included
    premises: tuple[Premise, ...]
    constraints: tuple[Check, ...]
    duties: tuple[_CompiledDuty, ...]
    due_after: tuple[Duty, ...]  # the duties a permit by this rule carries (with or after the use)
    # For decide(): each premise and constraint as (bare decision, report), in the report's order; the
    # tests whose conjunction they are, each with the part it belongs to (an ``and`` of a rule's constraints
    # brings its children in as its own); and which of them is the first that does not hold (see _unmet).
    parts: tuple[tuple[Test, Explain], ...] = ()
    conjuncts: tuple[Test, ...] = ()
    owners: tuple[int, ...] = ()
    unmet: Unmet = _unmet((), (), ())


class CompiledPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A policy compiled once (:func:`compile`) for :func:`decide` and :func:`evaluate`."""

    policy: Policy
    rules: tuple[_CompiledRule, ...]
    has_permissions: bool
    generation: int
    obligations: tuple[_CompiledDuty, ...] = ()  # with the policy-level parties and target (§2.7.1)
    obligation_duties: tuple[Duty, ...] = ()  # the duties of ``obligations``, carried by every permit
    #: ``decide(request, world, now) -> Verdict``: :func:`decide` for this policy, without looking it up.
    decide: Decide


def _compile_rule(policy: Policy, rule: Permission | Prohibition, index: int) -> _CompiledRule:
    rule = rule_with_policy_defaults(policy, rule)
    compiled_premises: list[tuple[Premise, Test]] = []
    if rule.target is not None:
        compiled_premises.append(_compile_membership(PremiseKind.TARGET, rule.target, "target"))
    if rule.assignee is not None:
        compiled_premises.append(_compile_membership(PremiseKind.PARTY, rule.assignee, "party"))
    if rule.action is not None:
        compiled_premises.append(_compile_action(rule.action))
    premises = tuple(premise for premise, _ in compiled_premises)
    constraints = tuple(_compile(c) for c in rule.constraints)
    is_permission = isinstance(rule, Permission)
    kind = RuleKind.PERMISSION if is_permission else RuleKind.PROHIBITION
    noun = "permission" if is_permission else "prohibition"
    label = f"{noun} {rule.uid}" if rule.uid else f"{noun} #{index + 1}"
    duties = rule.duties if isinstance(rule, Permission) else rule.remedies
    where = f"permission[{index}].duty" if is_permission else f"prohibition[{index}].remedy"
    compiled = tuple(_compile_duty(d, f"{where}[{j}]") for j, d in enumerate(duties))
    due_after = tuple(d.duty for d in compiled if d.timing is DutyTiming.WITH_OR_AFTER_USE)
    parts: tuple[tuple[Test, Explain], ...] = (
        *((test, premise) for premise, test in compiled_premises),
        *((c.test, c.check) for c in constraints),
    )
    owned = [(test, i) for i, (_, test) in enumerate(compiled_premises)]
    owned += [(t, len(compiled_premises) + k) for k, c in enumerate(constraints) for t in c.conjuncts]
    return _CompiledRule(
        kind=kind,
        rule=rule,
        label=label,
        permit_reasons=(
            f"{label} allows this",
            *(f"duty {_short(d.action.name)!r} is due with or after the use" for d in due_after),
        ),
        premises=premises,
        constraints=tuple(c.check for c in constraints),
        duties=compiled,
        due_after=due_after if is_permission else (),
        parts=parts,
        conjuncts=tuple(t for t, _ in owned),
        owners=tuple(i for _, i in owned),
        # Only a permission's duties can keep it from applying (a prohibition's remedies never do).
        unmet=_unmet(tuple(t for t, _ in owned), tuple(i for _, i in owned), compiled if is_permission else ()),
    )


def duties_by_path(policy: Policy) -> dict[str, Duty]:
    """Every duty of *policy* the world may report on, by its path: ``permission[i].duty[j]``,
    ``prohibition[i].remedy[j]`` and ``obligation[k]``, indexes from 0 into ``policy.permissions``,
    ``policy.prohibitions`` and ``policy.obligations`` (the atomic rules :func:`parse_policy` returns,
    which are the document's own rules when none of them is compact)."""
    out: dict[str, Duty] = {}
    for i, permission in enumerate(policy.permissions):
        out.update({f"permission[{i}].duty[{j}]": d for j, d in enumerate(permission.duties)})
    for i, prohibition in enumerate(policy.prohibitions):
        out.update({f"prohibition[{i}].remedy[{j}]": d for j, d in enumerate(prohibition.remedies)})
    out.update({f"obligation[{k}]": d for k, d in enumerate(policy.obligations)})
    return out


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Compile *policy* for repeated evaluation (``evaluate`` does this and memoises it)."""
    rules = [_compile_rule(policy, r, i) for i, r in enumerate(policy.permissions)]
    rules += [_compile_rule(policy, r, i) for i, r in enumerate(policy.prohibitions)]
    obligations = tuple(
        _compile_duty(rule_with_policy_defaults(policy, d), f"obligation[{k}]")
        for k, d in enumerate(policy.obligations)
    )
    obligation_duties = tuple(d.duty for d in obligations)
    generation = _ops.generation()
    return CompiledPolicy(
        policy=policy, rules=tuple(rules), has_permissions=bool(policy.permissions), generation=generation,
        obligations=obligations, obligation_duties=obligation_duties,
        decide=_decider(policy, tuple(rules), obligation_duties, generation),
    )


_CACHE: dict[int, CompiledPolicy] = {}
_CACHE_SIZE = 512


def _compiled(policy: Policy | CompiledPolicy) -> CompiledPolicy:
    if isinstance(policy, CompiledPolicy):
        if policy.generation == _ops.generation():
            return policy
        policy = policy.policy  # compiled before a registry changed: compiled again (and memoised)
    hit = _CACHE.get(id(policy))
    if hit is not None and hit.policy is policy and hit.generation == _ops.generation():
        return hit
    compiled = compile_policy(policy)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()  # simple and safe under threads; recompiling is cheap next to the I/O around it
    _CACHE[id(policy)] = compiled  # holds the policy, so its id cannot be reused while cached
    return compiled


# --- Evaluation ----------------------------------------------------------------------------------------


def _rule_report(rule: _CompiledRule, request: Request, world: World, now: datetime) -> RuleReport:
    active = True
    premise_list = []
    for premise in rule.premises:
        p = premise(request, world, now)
        premise_list.append(p)
        if p.satisfaction is not SATISFIED:
            active = False
    constraint_list = []
    for check in rule.constraints:  # every constraint is evaluated and reported, even after a failure
        c = check(request, world, now)
        constraint_list.append(c)
        if c.satisfaction is not SATISFIED:
            active = False
    premises, constraints = tuple(premise_list), tuple(constraint_list)
    conditions = (
        tuple([_duty_report(d, world, rule.kind is PERMISSION) for d in rule.duties]) if rule.duties else ()
    )
    if active and conditions and rule.kind is PERMISSION and any(d.blocking for d in conditions):
        active = False
    return RuleReport(
        kind=rule.kind, rule=rule.rule.uid, rule_request=request.rule_uid,
        activation=ACTIVE if active else INACTIVE,
        premises=premises, constraints=constraints, conditions=conditions,
    )


def _why_inactive(label: str, report: RuleReport) -> str:
    parts = [p.reason for p in report.premises if p.satisfaction is UNSATISFIED and p.reason]
    parts += [c.reason for c in report.constraints if c.satisfaction is UNSATISFIED and c.reason]
    parts += [d.reason for d in report.conditions if d.blocking and d.reason]
    return f"{label} does not apply: " + "; ".join(parts)


def evaluate(policy: Policy | CompiledPolicy, request: Request, world: World, now: datetime) -> Decision:
    """Decide *request* against *policy* at time *now* in *world*, with reasons and a full report.

    Never raises for what a policy or a request says: unknown operands, values that do not compare and
    missing context make a constraint unsatisfied, with a reason. A naive *now* is taken as UTC.
    """
    if now.tzinfo is None:  # as for literals: a date-time without an offset is UTC
        now = now.replace(tzinfo=UTC)
    compiled = _compiled(policy)
    pol = compiled.policy
    rules = compiled.rules
    reports = tuple(map(_rule_report, rules, repeat(request), repeat(world), repeat(now)))
    if compiled.obligations:
        # Policy-level obligations (ODRL 2.2 §2.6.4) are reported; they do not decide this request.
        reports += tuple([
            RuleReport(kind=RuleKind.OBLIGATION, rule=d.duty.uid, rule_request=None, activation=ACTIVE,
                       conditions=(_duty_report(d, world, False),))
            for d in compiled.obligations
        ])
    report = PolicyReport(policy=pol.uid, policy_request=request.uid, created=now, rules=reports)
    permits: list[int] = []
    prohibits: list[int] = []
    for i, rule in enumerate(rules):
        if reports[i].activation is ACTIVE:
            (permits if rule.kind is PERMISSION else prohibits).append(i)
    concluded = _conclude(rules, pol.conflict, permits, prohibits)
    if concluded is None and compiled.has_permissions:
        outcome = Outcome.DENY
        reasons = [
            _why_inactive(rules[i].label, r) for i, r in enumerate(reports) if r.kind is RuleKind.PERMISSION
        ]
    else:
        outcome, reasons = concluded or _NONE_APPLIES
    duties = _duties_due(rules, permits, compiled.obligation_duties) if outcome is Outcome.PERMIT else ()
    return Decision(outcome=outcome, reasons=list(reasons), report=report, duties=duties)


_NONE_APPLIES = (Outcome.NOT_APPLICABLE, ["no rule of the policy applies to this request"])


def _conclude(
    rules: tuple[_CompiledRule, ...], conflict: ConflictStrategy | None, permits: list[int], prohibits: list[int]
) -> tuple[Outcome, list[str]] | None:
    """The outcome and reasons that follow from which permissions and prohibitions are active, or None when
    none is: a deny when the policy has permissions (closed world: the reasons say what each permission
    lacks; the caller tells), else not applicable (``_NONE_APPLIES``)."""
    if prohibits and permits:
        # ODRL 2.2 vocabulary, odrl:conflict: "If no strategy is specified, the default is invalid."
        strategy = conflict or ConflictStrategy.INVALID
        both = f"{rules[permits[0]].label} and {rules[prohibits[0]].label} both apply"
        if strategy is ConflictStrategy.PERM:
            return Outcome.PERMIT, [f"{both}; conflict strategy 'perm' lets the permission win"]
        if strategy is ConflictStrategy.PROHIBIT:
            return Outcome.DENY, [f"{both}; conflict strategy 'prohibit': the prohibition wins"]
        return Outcome.DENY, [f"{both}; conflict strategy 'invalid': the policy is void"]
    if prohibits:
        return Outcome.DENY, [f"{rules[i].label} forbids this" for i in prohibits]
    if permits:
        return Outcome.PERMIT, list(rules[permits[0]].permit_reasons)
    return None


def _duties_due(rules: tuple[_CompiledRule, ...], permits: list[int], obligations: tuple[Duty, ...]
                ) -> tuple[Duty, ...]:
    """The duties a permit carries: those due with or after the use of every active permission, then the
    policy's obligations."""
    duties: tuple[Duty, ...] = ()
    for i in permits:
        duties += rules[i].due_after
    return duties + obligations


# --- Deciding first ------------------------------------------------------------------------------------


def compile(policy: Policy | CompiledPolicy) -> CompiledPolicy:
    """*policy* compiled once for :func:`decide` and :func:`evaluate`: right operands read, operands and
    operators looked up, every constraint turned into closures. Memoised (the same policy object gives the
    same compiled policy); compiled again when an operand or operator is registered afterwards."""
    return _compiled(policy)


def decide(policy: Policy | CompiledPolicy, request: Request, world: World, now: datetime) -> Verdict:
    """Decide *request* as :func:`evaluate` does, building no report: the same outcome, reasons and duties.

    Premises, constraints and duties are decided as bare booleans, stopping at the first that settles a
    rule; a permit's reasons and duties are the rule's own, prepared when the policy was compiled. Only a
    deny because no permission applies needs more: its reasons say what each permission lacks, so the
    premises and constraints that do not hold are explained again, by the very functions that build
    :func:`evaluate`'s report, when the verdict's ``reasons`` are first read (with the request, world and
    ``now`` decided on). For the report itself, call :func:`evaluate` on the same compiled policy.

    ``compile(policy).decide(request, world, now)`` is the same without the look-up of the compiled policy.
    Never raises where :func:`evaluate` answers. (Where it raises, for a registered resolver or operator
    that raises an error other than TypeError, ValueError or LookupError, this may answer instead, having
    decided without the constraint that raises, and reading a deny's reasons may raise that error.)
    """
    if now.tzinfo is None:  # as for literals: a date-time without an offset is UTC
        now = now.replace(tzinfo=UTC)
    return _compiled(policy).decide(request, world, now)


_GENERATION = _ops.GENERATION


def _decider(policy: Policy, rules: tuple[_CompiledRule, ...], obligations: tuple[Duty, ...], generation: int
             ) -> Decide:
    """:func:`decide` for one compiled policy, as a closure over its rules."""
    # The verdict when permission i (rules[i]: the permissions come first) is the only active rule.
    alone = tuple(
        Verdict(outcome=Outcome.PERMIT, reasons=r.permit_reasons, duties=(*r.due_after, *obligations))
        for r in rules if r.kind is PERMISSION
    )
    conflict = policy.conflict
    permissions = rules[:len(alone)]

    def again(request: Request, world: World, now: datetime) -> Verdict:
        # A naive now, or a policy compiled before a registry changed: decide() reads the one and
        # compiles the other again.
        return decide(policy, request, world, now)

    if len(rules) == 1 and rules[0].kind is PERMISSION:  # the usual usage policy: one permission
        rule = rules[0]
        tests, duties, permit = rule.conjuncts, rule.duties, alone[0]

        def decide_one(request: Request, world: World, now: datetime) -> Verdict:
            if now.tzinfo is None or _GENERATION[0] != generation:
                return again(request, world, now)
            for t in tests:  # rule.unmet() written out: one call less
                if not t(request, world, now):
                    denied = _unexplained(_Unexplained)
                    denied._why = (_why_test, rule, request, world, now, t)
                    return denied
            if duties and any(_blocking(duty, world) is not None for duty in duties):
                denied = _unexplained(_Unexplained)
                denied._why = (_why_one, rule, request, world, now, len(rule.parts))
                return denied
            return permit

        return decide_one

    def decide_any(request: Request, world: World, now: datetime) -> Verdict:
        if now.tzinfo is None or _GENERATION[0] != generation:
            return again(request, world, now)
        permits: list[int] = []
        prohibits: list[int] = []
        unmet = [rule.unmet(request, world, now) for rule in rules]
        for i, rule in enumerate(rules):
            if unmet[i] < 0:
                (permits if rule.kind is PERMISSION else prohibits).append(i)
        if not prohibits and len(permits) == 1:
            return alone[permits[0]]
        concluded = _conclude(rules, conflict, permits, prohibits)
        if concluded is None and alone:  # no rule applies, and the policy has permissions: closed world
            denied = _unexplained(_Unexplained)
            denied._why = (_why_each, permissions, request, world, now, unmet)
            return denied
        outcome, why = concluded or _NONE_APPLIES
        duties = _duties_due(rules, permits, obligations) if outcome is Outcome.PERMIT else ()
        return Verdict(outcome=outcome, reasons=tuple(why), duties=duties)

    return decide_any


def _why_one(rule: _CompiledRule, request: Request, world: World, now: datetime, first: int) -> tuple[str]:
    """The reasons of a deny by the only rule of a policy, a permission (see :func:`_why_not`)."""
    return (_why_not(rule, request, world, now, first),)


def _why_test(rule: _CompiledRule, request: Request, world: World, now: datetime, failed: Test) -> tuple[str]:
    """:func:`_why_one` where the first test of the rule that fails is *failed* (one of ``rule.conjuncts``:
    which part it belongs to is looked up only when the deny is explained)."""
    return _why_one(rule, request, world, now, rule.owners[rule.conjuncts.index(failed)])


def _why_each(permissions: tuple[_CompiledRule, ...], request: Request, world: World, now: datetime,
              unmet: list[int]) -> tuple[str, ...]:
    """The reasons of a deny because no permission applies: what each of them lacks (see :func:`_why_not`)."""
    return tuple(_why_not(rule, request, world, now, unmet[i]) for i, rule in enumerate(permissions))


def _why_not(rule: _CompiledRule, request: Request, world: World, now: datetime, first: int) -> str:
    """:func:`_why_inactive` of an inactive permission whose first unmet part is *first* (see
    :data:`Unmet`), built from the reports of only the parts that do not hold."""
    reasons = []
    parts = rule.parts
    if first < len(parts):
        report = parts[first][1](request, world, now)
        if report.satisfaction is UNSATISFIED and report.reason:
            reasons.append(report.reason)
        for test, explain in parts[first + 1:]:
            if not test(request, world, now):
                report = explain(request, world, now)
                if report.satisfaction is UNSATISFIED and report.reason:
                    reasons.append(report.reason)
    for duty in rule.duties:
        reason = _blocking(duty, world)
        if reason is not None:
            reasons.append(reason)
    return f"{rule.label} does not apply: " + "; ".join(reasons)


__all__ = [
    "EMPTY_WORLD",
    "CompiledPolicy",
    "DataClass",
    "Decision",
    "DutyState",
    "Outcome",
    "Request",
    "Verdict",
    "World",
    "compile",
    "compile_constraint",
    "compile_policy",
    "compile_test",
    "decide",
    "duties_by_path",
    "duty_timing",
    "evaluate",
]
