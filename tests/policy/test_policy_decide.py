"""The decide-first path (``compile`` + ``decide``) against the evaluator with its report (``evaluate``).

``decide`` must give exactly what ``evaluate`` gives: the same outcome, the same duties and the same reasons,
on a permit as on a deny, for every policy, request, world and time. The property tests generate all of
them over the whole model (nested logical constraints, every built-in operand, unknown operands and
operators, references, units, collections with refinements, refined actions, duties in every state,
prohibitions, conflict strategies, obligations); each constraint's bare test is checked against its report,
and ``plan_use(…, report=False)`` against ``plan_use`` with the report.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from usage_policies import (
    CompiledPolicy,
    Outcome,
    Request,
    UsageState,
    Verdict,
    World,
    compile,
    decide,
    evaluate,
    parse_policy,
    plan_use,
)
from usage_policies import operands as ops
from usage_policies.evaluate import compile_constraint, compile_test
from usage_policies.model import (
    ODRL,
    TDS,
    XSD,
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
)
from usage_policies.report import DeonticState, DutyState, PerformanceState
from usage_policies.values import ValueKind

BASE = datetime(2025, 1, 1, tzinfo=UTC)
PURPOSES = ["R&D", "marketing", "safety", "urn:purpose:audit", "urn:purpose:research"]
REGIONS = ["CN", "CN-GD", "CN-GD-GZ", "DE", "FR", "EU", "US"]
PARTIES = ["did:web:c", "did:web:x", "urn:member:1"]
ASSETS = ["urn:asset:a", "urn:asset:b", "urn:member:2"]
COLLECTIONS = ["urn:group:1", "urn:group:2"]
AGE = "http://example.com/age"  # an operand nobody registers: read from Request.context
LEVELS = ["bronze", "silver", "gold", "1", "2", "3"]


def _iri(op: str) -> str:
    return ODRL + op


def _lit(value: str, datatype: str | None = None) -> Literal:
    return Literal(value=value, datatype=datatype)


def _at(seconds: int) -> datetime:
    return BASE + timedelta(seconds=seconds)


seconds = st.integers(min_value=0, max_value=400 * 86400)
instants_text = seconds.map(lambda s: _at(s).isoformat().replace("+00:00", "Z"))
ORDERED = ["lt", "lteq", "gt", "gteq", "eq", "neq"]
SETS = ["isAnyOf", "isNoneOf", "isAllOf", "isPartOf", "hasPart", "isA"]


def _atomic(left: str, ops_: list[str], rights: st.SearchStrategy[tuple[Literal | Ref, ...]], **extra: object
            ) -> st.SearchStrategy[Constraint]:
    return st.builds(
        lambda op, right: Constraint(left_operand=left, operator=_iri(op), right_operand=right, **extra),
        st.sampled_from(ops_), rights,
    )


def _one(values: st.SearchStrategy[Literal | Ref]) -> st.SearchStrategy[tuple[Literal | Ref, ...]]:
    return values.map(lambda v: (v,))


def _some(values: st.SearchStrategy[Literal | Ref]) -> st.SearchStrategy[tuple[Literal | Ref, ...]]:
    return st.lists(values, min_size=1, max_size=3).map(tuple)


strings = st.one_of(st.sampled_from(PURPOSES).map(_lit), st.sampled_from(PURPOSES).map(lambda p: Ref(iri=p)))
regions = st.sampled_from(REGIONS).map(_lit)
integers = st.one_of(
    st.integers(-1, 7).map(lambda n: _lit(str(n), XSD + "integer")),
    st.integers(-1, 7).map(lambda n: _lit(str(n))),
    st.just(_lit("2.5", XSD + "decimal")),
    st.just(_lit("many", XSD + "integer")),  # unreadable: the constraint fails with a reason
)
times = st.one_of(
    instants_text.map(lambda t: _lit(t, XSD + "dateTime")),
    instants_text.map(_lit),
    seconds.map(lambda s: _lit(_at(s).date().isoformat(), XSD + "date")),
    seconds.map(lambda s: _lit(_at(s).replace(tzinfo=None).isoformat())),  # no offset: UTC
    st.just(_lit("yesterday", XSD + "dateTime")),
)
durations = st.sampled_from(["P1D", "PT1H", "P1M", "PT0S", "P2Y"]).map(lambda d: _lit(d, XSD + "duration"))
decimals = st.sampled_from(["0", "5.00", "10", "99.5"]).map(lambda d: _lit(d, XSD + "decimal"))
data_classes = st.sampled_from(["general", "important", "core", "personal"]).map(lambda c: Ref(iri=TDS + c))
levels = st.sampled_from(LEVELS).map(_lit)

atomic = st.one_of(
    _atomic(_iri("purpose"), ["eq", "neq", "isA", "isPartOf", "isAnyOf", "isNoneOf", "lt"], _one(strings)),
    _atomic(_iri("purpose"), ["isAnyOf", "isNoneOf", "isAllOf", "eq"], _some(strings)),
    _atomic(_iri("count"), ORDERED, _one(integers)),
    _atomic(_iri("dateTime"), ORDERED, _one(times)),
    _atomic(_iri("elapsedTime"), ["lteq", "lt", "gt", "eq"], _one(durations)),
    _atomic(_iri("spatial"), ["eq", "neq", *SETS], _one(regions)),
    _atomic(_iri("spatial"), ["isAnyOf", "isNoneOf", "isPartOf"], _some(regions)),
    _atomic(_iri("payAmount"), ["eq", "gteq", "lteq"], _one(decimals), unit="EUR"),
    _atomic(_iri("payAmount"), ["gteq", "lt"], _one(decimals)),
    _atomic(_iri("percentage"), ORDERED, _one(decimals)),
    _atomic(TDS + "dataClass", ["eq", "lteq", "gt", "isAnyOf"], _one(data_classes)),
    _atomic(TDS + "memberOf", ["eq", "neq", "isAnyOf", "isAllOf"], _some(st.sampled_from(COLLECTIONS).map(_lit))),
    _atomic(TDS + "certificationLevel", ["gteq", "lt", "eq"], _one(levels)),
    _atomic(TDS + "verifiedRegion", ["isPartOf", "eq"], _one(regions)),
    _atomic(TDS + "exportDestination", ["isPartOf", "isNoneOf"], _one(regions)),
    _atomic(AGE, ["gteq", "lt", "eq"], _one(integers)),
    _atomic(_iri("event"), ["eq", "lt"], _one(st.just(Ref(iri=_iri("policyUsage"))))),
    _atomic(_iri("systemDevice"), ["eq"], _one(st.sampled_from(["urn:connector:1", "urn:connector:2"]).map(_lit))),
    _atomic("http://example.com/op-less", ["eq"], _one(strings)).map(
        lambda c: msgspec.structs.replace(c, operator="http://example.com/likes")),  # unknown operator
    st.builds(lambda op: Constraint(left_operand=_iri("count"), operator=_iri(op),
                                    right_operand_reference="urn:ref:limit"), st.sampled_from(["lteq", "gt"])),
)
any_constraint: st.SearchStrategy[AnyConstraint] = st.recursive(
    atomic,
    lambda children: st.builds(
        lambda op, cs: LogicalConstraint(operand=op, constraints=tuple(cs)),
        st.sampled_from(list(LogicalOperand)), st.lists(children, min_size=0, max_size=3),
    ),
    max_leaves=6,
)
constraint_lists = st.lists(any_constraint, max_size=3).map(tuple)
refinements = st.lists(atomic, max_size=2).map(tuple)

action_names = st.sampled_from(["use", "read", "print", "distribute", "sell", "transfer", "write", "modify"])
actions = st.builds(lambda name, refinement: Action(name=_iri(name), refinement=refinement),
                    action_names, st.one_of(st.just(()), refinements))
targets = st.one_of(
    st.none(), st.sampled_from(ASSETS),
    st.builds(lambda uid, source, refinement: AssetCollection(uid=uid, source=source, refinement=refinement),
              st.one_of(st.none(), st.sampled_from(COLLECTIONS)), st.one_of(st.none(), st.sampled_from(COLLECTIONS)),
              st.one_of(st.just(()), refinements)),
)
assignees = st.one_of(
    st.none(), st.sampled_from(PARTIES),
    st.builds(lambda uid, source, refinement: PartyCollection(uid=uid, source=source, refinement=refinement),
              st.one_of(st.none(), st.sampled_from(COLLECTIONS)), st.one_of(st.none(), st.sampled_from(COLLECTIONS)),
              st.one_of(st.just(()), refinements)),
)
policy_usage = Constraint(left_operand=_iri("event"), operator=_iri("lt"),
                          right_operand=(Ref(iri=_iri("policyUsage")),))
duties = st.builds(
    lambda name, before, uid: Duty(action=Action(name=_iri(name)), constraints=(policy_usage,) if before else (),
                                   uid=uid),
    st.sampled_from(["inform", "delete", "obtainConsent", "compensate", "acceptTracking"]), st.booleans(),
    st.one_of(st.none(), st.sampled_from(["urn:duty:1", "urn:duty:2"])),
)
RULE_UIDS = st.one_of(st.none(), st.sampled_from(["urn:rule:1", "urn:rule:2"]))
permissions = st.builds(
    lambda a, t, p, cs, ds, uid: Permission(action=a, target=t, assignee=p, constraints=cs, duties=tuple(ds), uid=uid),
    st.one_of(st.none(), actions), targets, assignees, constraint_lists, st.lists(duties, max_size=2), RULE_UIDS,
)
prohibitions = st.builds(
    lambda a, t, p, cs, ds, uid: Prohibition(action=a, target=t, assignee=p, constraints=cs, remedies=tuple(ds),
                                             uid=uid),
    st.one_of(st.none(), actions), targets, assignees, constraint_lists, st.lists(duties, max_size=1), RULE_UIDS,
)
policies = st.builds(
    lambda perms, prohs, obligations, conflict, target, assignee: Policy(
        uid="urn:policy:p", permissions=tuple(perms), prohibitions=tuple(prohs), obligations=tuple(obligations),
        conflict=conflict, target=target, assignee=assignee,
    ),
    st.lists(permissions, max_size=3), st.lists(prohibitions, max_size=2), st.lists(duties, max_size=1),
    st.one_of(st.none(), st.sampled_from(list(ConflictStrategy))),
    st.one_of(st.none(), st.sampled_from(ASSETS)), st.one_of(st.none(), st.sampled_from(PARTIES)),
)
# The usual usage policy: one permission, nothing else (decided by its own closure).
single_permission_policies = st.builds(
    lambda perm, target: Policy(uid="urn:policy:one", permissions=(perm,), target=target),
    permissions, st.one_of(st.none(), st.sampled_from(ASSETS)),
)

requests = st.builds(
    lambda party, action, target, purpose, region, count, first, pay, unit, percentage, data_class, members,
    levels_, verified, export, context, event, connector: Request(
        party=party, action=action, target=target, purpose=purpose, region=region, use_count=count,
        first_use=first, pay_amount=pay, pay_unit=unit, percentage=percentage, data_class=data_class,
        member_of=tuple(members), certification_levels=tuple(levels_), verified_region=verified,
        export_destination=export, context=context, event=event, connector=connector,
        uid="urn:request:1", rule_uid="urn:rule:request",
    ),
    st.one_of(st.none(), st.sampled_from(PARTIES)),
    st.sampled_from(["use", "read", "odrl:print", "distribute", _iri("sell"), _iri("write"), "transfer",
                     "https://example.com/act"]),
    st.one_of(st.none(), st.sampled_from(ASSETS)),
    st.one_of(st.none(), st.sampled_from(PURPOSES)),
    st.one_of(st.none(), st.sampled_from(REGIONS)),
    st.integers(0, 8),
    st.one_of(st.none(), seconds.map(_at)),
    st.one_of(st.none(), st.sampled_from([Decimal("0"), Decimal("5.00"), Decimal("12.5"), Decimal("NaN")])),
    st.one_of(st.none(), st.sampled_from(["EUR", "USD"])),
    st.one_of(st.none(), st.sampled_from([Decimal("0"), Decimal("50"), Decimal("100")])),
    st.one_of(st.none(), st.sampled_from(["general", "important", "core", "personal", "secret"])),
    st.lists(st.sampled_from(COLLECTIONS), max_size=2, unique=True),
    st.lists(st.sampled_from(LEVELS), max_size=2, unique=True),
    st.one_of(st.none(), st.sampled_from(REGIONS)),
    st.one_of(st.none(), st.sampled_from(REGIONS)),
    st.one_of(st.just({}), st.fixed_dictionaries({AGE: st.one_of(st.integers(0, 99), st.just("old"))})),
    st.one_of(st.none(), st.just(_iri("policyUsage"))),
    st.one_of(st.none(), st.just("urn:connector:1")),
)
states = st.builds(lambda p, d: DutyState(performance=p, deontic=d), st.sampled_from(list(PerformanceState)),
                   st.sampled_from(list(DeonticState)))
DUTY_NAMES = ["urn:duty:1", "urn:duty:2", "permission[0].duty[0]", "permission[0].duty[1]", "permission[1].duty[0]",
              "prohibition[0].remedy[0]", "obligation[0]"]
worlds = st.builds(
    lambda part_of, duty_states, limit, parents, order: World(
        part_of=part_of, duty_states=duty_states, references={"urn:ref:limit": limit} if limit is not None else {},
        concept_parents=parents, certification_order=order,
    ),
    st.dictionaries(st.sampled_from([*PARTIES, *ASSETS]), st.frozensets(st.sampled_from(COLLECTIONS), max_size=2),
                    max_size=3),
    st.dictionaries(st.sampled_from(DUTY_NAMES), states, max_size=3),
    st.one_of(st.none(), st.sampled_from(["3", "x", "7"])),
    st.one_of(st.just({}), st.just({"R&D": frozenset({"urn:purpose:research"}),
                                    "urn:purpose:research": frozenset({"urn:purpose:audit"})})),
    st.sampled_from([(), ("bronze", "silver", "gold")]),
)
nows = st.one_of(
    seconds.map(_at),
    seconds.map(lambda s: _at(s).replace(tzinfo=None)),  # naive: read as UTC
    seconds.map(lambda s: _at(s).astimezone(timezone(timedelta(hours=8)))),
)


def _hints(policy: Policy) -> dict[str, list[object]]:
    """Request values that meet the policy's own constraints more often than chance: taken from its right
    operands (so that permits, and denies by one constraint, are common among the examples)."""
    found: dict[str, list[object]] = {}
    rules = [*policy.permissions, *policy.prohibitions]

    def walk(constraints: tuple[AnyConstraint, ...]) -> None:
        for c in constraints:
            if isinstance(c, LogicalConstraint):
                walk(c.constraints)
                continue
            for term in c.right_operand:
                text = term.iri if isinstance(term, Ref) else term.value
                field = {_iri("purpose"): "purpose", _iri("spatial"): "region",
                         TDS + "verifiedRegion": "verified_region",
                         TDS + "exportDestination": "export_destination"}.get(c.left_operand)
                if field is not None:
                    found.setdefault(field, []).append(text)
                elif c.left_operand == _iri("count") and text.lstrip("-").isdigit():
                    found.setdefault("use_count", []).extend(n for n in (int(text) - 1, int(text)) if n >= 0)
                elif c.left_operand == _iri("dateTime"):
                    try:
                        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
                    except ValueError:
                        continue
                    at = at if at.tzinfo else at.replace(tzinfo=UTC)
                    found.setdefault("now", []).extend([at - timedelta(seconds=1), at, at + timedelta(seconds=1)])

    for rule in rules:
        walk(rule.constraints)
        if rule.action is not None:
            found.setdefault("action", []).append(rule.action.name)
            walk(rule.action.refinement)
        for value, field in ((rule.target or policy.target, "target"), (rule.assignee or policy.assignee, "party")):
            if isinstance(value, str):
                found.setdefault(field, []).append(value)
            elif value is not None:  # a collection: the collection itself is in it
                found.setdefault(field, []).extend(i for i in (value.uid, value.source) if i is not None)
                walk(value.refinement)
    return found


@st.composite
def cases(draw: st.DrawFn, policy_strategy: st.SearchStrategy[Policy]) -> tuple[Policy, Request, World, datetime]:
    policy = draw(policy_strategy)
    request, world, now = draw(requests), draw(worlds), draw(nows)
    hints = _hints(policy)
    changes = {field: draw(st.sampled_from(values)) for field, values in hints.items()
               if values and field != "now" and draw(st.integers(0, 9)) < 8}
    if hints.get("now") and draw(st.booleans()):
        now = draw(st.sampled_from(hints["now"]))
    return policy, msgspec.structs.replace(request, **changes), world, now


def assert_same(policy: Policy | CompiledPolicy, request: Request, world: World, now: datetime) -> Verdict:
    """``decide`` (both spellings) gives exactly what ``evaluate`` gives; returns the verdict.

    The verdict's reasons are read last, after ``evaluate`` and the other spelling have decided the same
    request: a deny builds them only then, and they must still be ``evaluate``'s."""
    compiled = compile(policy)
    verdict = compiled.decide(request, world, now)
    decision = evaluate(policy, request, world, now)
    assert (verdict.outcome, verdict.permitted, verdict.duties) == (
        decision.outcome, decision.permitted, decision.duties)
    other = decide(policy, request, world, now)
    assert list(verdict.reasons) == decision.reasons
    assert verdict.reasons is verdict.reasons  # built once
    assert other == verdict
    return verdict


@settings(max_examples=400, deadline=None)
@given(cases(policies))
def test_decide_gives_what_evaluate_gives(case):
    event(assert_same(*case).outcome.value)  # --hypothesis-show-statistics shows the mix of outcomes


@settings(max_examples=300, deadline=None)
@given(cases(single_permission_policies))
def test_decide_gives_what_evaluate_gives_for_a_single_permission(case):
    event(assert_same(*case).outcome.value)


@settings(max_examples=400, deadline=None)
@given(any_constraint, requests, worlds, nows.map(lambda t: t if t.tzinfo else t.replace(tzinfo=UTC)))
def test_a_constraints_test_is_true_exactly_when_its_report_says_satisfied(constraint, request, world, now):
    report = compile_constraint(constraint)(request, world, now)
    assert compile_test(constraint)(request, world, now) is report.satisfied


# --- Examples -----------------------------------------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
USAGE = parse_policy({
    "@context": "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
    "@id": "urn:p:usage", "@type": "Offer", "target": "urn:asset:a",
    "permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"},
        {"and": [
            {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "2025-01-01T00:00:00Z"},
            {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2026-01-01T00:00:00Z"},
        ]},
        {"leftOperand": "count", "operator": "lteq", "rightOperand": "10"},
    ], "duty": [{"action": "inform"}]}],
})
USE = Request(party="did:web:c", action="read", target="urn:asset:a", purpose="R&D", use_count=3)


def test_a_permit_carries_the_rules_reasons_and_the_duties_due():
    verdict = assert_same(USAGE, USE, World(), NOW)
    assert verdict.permitted
    assert verdict.reasons == ("permission #1 allows this", "duty 'inform' is due with or after the use")
    assert [d.action.name for d in verdict.duties] == [ODRL + "inform"]


def test_a_deny_names_every_unmet_constraint_in_the_reports_order():
    late = msgspec.structs.replace(USE, purpose="marketing", use_count=10)
    verdict = assert_same(USAGE, late, World(), datetime(2026, 3, 1, tzinfo=UTC))
    assert verdict.outcome is Outcome.DENY and verdict.duties == ()
    (reason,) = verdict.reasons
    assert reason.startswith("permission #1 does not apply: purpose is 'marketing'")
    assert "less than 2026-01-01T00:00:00Z" in reason and reason.endswith("use count is 11, policy requires at most 10")


TIER = Policy(uid="urn:p:tier", permissions=(Permission(
    action=Action(name=ODRL + "use"),
    constraints=(Constraint(left_operand="urn:op:tier", operator=ODRL + "eq", right_operand=(_lit("gold"),)),),
),))


def test_a_deny_is_explained_only_when_its_reasons_are_read():
    reads: list[Request] = []

    def tier(request: Request, world: World, now: datetime) -> object:
        reads.append(request)
        return "silver"

    ops.register_operand("urn:op:tier", tier, label="tier")
    try:
        verdict = compile(TIER).decide(Request(), World(), NOW)
        assert verdict.outcome is Outcome.DENY and not verdict.permitted and verdict.duties == ()
        decided = len(reads)
        assert decided > 0
        assert verdict.reasons == ("permission #1 does not apply: tier is 'silver', policy requires 'gold'",)
        explained = len(reads)
        assert explained > decided  # the tier was read again, to explain the deny
        assert verdict.reasons == ("permission #1 does not apply: tier is 'silver', policy requires 'gold'",)
        assert len(reads) == explained  # once explained, the reasons are kept
    finally:
        ops.unregister_operand("urn:op:tier")


def test_reasons_read_later_explain_the_decision_made():
    compiled = compile(USAGE)
    world = World()
    late = msgspec.structs.replace(USE, purpose="marketing")
    permit = compiled.decide(USE, world, NOW)
    deny = compiled.decide(late, world, NOW)
    expected = evaluate(USAGE, late, world, NOW).reasons
    # The same compiled policy and world decide other requests, at other times, before the reasons are read.
    assert compiled.decide(msgspec.structs.replace(late, purpose="R&D"), world, NOW).permitted
    assert not compiled.decide(msgspec.structs.replace(late, use_count=20), world, datetime(2027, 1, 1, tzinfo=UTC)
                               ).permitted
    assert list(deny.reasons) == expected
    assert list(permit.reasons) == evaluate(USAGE, USE, world, NOW).reasons == [
        "permission #1 allows this", "duty 'inform' is due with or after the use"]

    # The world moves on (the duty is fulfilled): the earlier deny is still explained by the world it saw.
    consent = Policy(uid="urn:p:consent", permissions=(
        Permission(action=Action(name=ODRL + "use"), duties=(Duty(action=Action(name=ODRL + "obtainConsent")),)),
        Permission(action=Action(name=ODRL + "print"), constraints=(
            Constraint(left_operand=ODRL + "purpose", operator=ODRL + "eq", right_operand=(_lit("R&D"),)),)),
    ))
    before = compile(consent).decide(late, world, NOW)
    expected = evaluate(consent, late, world, NOW).reasons
    done = msgspec.structs.replace(
        world, duty_states={"permission[0].duty[0]": DutyState(deontic=DeonticState.FULFILLED)})
    assert compile(consent).decide(late, done, NOW).permitted
    assert list(before.reasons) == expected and len(expected) == 2
    assert "duty 'obtainConsent' must be fulfilled before use" in expected[0]

    # An operand registered after the decision: the reasons are those of the policy as it was decided.
    silver = Request(context={"urn:op:tier": "silver"})
    unregistered = compile(TIER).decide(silver, world, NOW)
    expected = evaluate(TIER, silver, world, NOW).reasons
    ops.register_operand("urn:op:tier", lambda r, w, now: "gold", label="tier")
    try:
        assert compile(TIER).decide(silver, world, NOW).permitted
        assert list(unregistered.reasons) == expected
        assert expected == ["permission #1 does not apply: urn:op:tier is 'silver', policy requires 'gold'"]
    finally:
        ops.unregister_operand("urn:op:tier")


def test_a_verdict_is_a_read_only_value():
    deny = compile(USAGE).decide(msgspec.structs.replace(USE, purpose="marketing"), World(), NOW)
    reasons = ("permission #1 does not apply: purpose is 'marketing', policy requires 'R&D'",)
    told = Verdict(outcome=Outcome.DENY, reasons=reasons)
    assert deny == told and hash(deny) == hash(told)
    assert deny != Verdict(outcome=Outcome.DENY, reasons=())
    assert repr(deny) == f"Verdict(outcome={Outcome.DENY!r}, reasons={reasons!r}, duties=())"
    assert pickle.loads(pickle.dumps(deny)) == deny
    with pytest.raises(AttributeError):
        deny.outcome = Outcome.PERMIT  # type: ignore[misc]
    with pytest.raises(AttributeError):
        deny.reasons = ()  # type: ignore[misc]


def test_a_blocking_duty_alone_denies_with_its_reason():
    consent = parse_policy({
        "@context": "https://w3id.org/dspace/2025/1/odrl-profile.jsonld", "@id": "urn:p:consent", "@type": "Offer",
        "permission": [{"action": "use", "target": "urn:asset:a", "duty": [{"action": "obtainConsent"}]}],
    })
    verdict = assert_same(consent, USE, World(), NOW)
    assert verdict.reasons == ("permission #1 does not apply: duty 'obtainConsent' must be fulfilled before use",)
    done = World(duty_states={"permission[0].duty[0]": DutyState(deontic=DeonticState.FULFILLED)})
    assert assert_same(consent, USE, done, NOW).permitted


def test_a_naive_now_is_read_as_utc():
    naive = datetime(2025, 12, 31, 23, 30)
    assert assert_same(USAGE, USE, World(), naive).permitted
    assert compile(USAGE).decide(USE, World(), naive) == compile(USAGE).decide(USE, World(), naive.replace(tzinfo=UTC))


def test_compile_is_memoised_and_accepts_its_own_result():
    compiled = compile(USAGE)
    assert compile(USAGE) is compiled
    assert compile(compiled) is compiled


def test_a_registry_change_recompiles_the_policy_on_its_next_decision():
    policy = Policy(uid="urn:p:custom", permissions=(Permission(
        action=Action(name=ODRL + "use"),
        constraints=(Constraint(left_operand="urn:op:tier", operator=ODRL + "eq", right_operand=(_lit("gold"),)),),
    ),))
    request = Request(context={"urn:op:tier": "gold"})
    compiled = compile(policy)
    assert assert_same(compiled, request, World(), NOW).permitted  # read from the context
    ops.register_operand("urn:op:tier", lambda r, w, now: "silver", label="tier")
    try:
        verdict = assert_same(compiled, request, World(), NOW)  # the stale compiled policy is not used
        assert verdict.reasons == ("permission #1 does not apply: tier is 'silver', policy requires 'gold'",)
    finally:
        ops.unregister_operand("urn:op:tier")
    assert assert_same(compiled, request, World(), NOW).permitted


def test_a_replaced_built_in_resolver_is_called_not_bypassed():
    original = ops.get_operand(ODRL + "purpose")
    assert original is not None and isinstance(original.resolve, ops.RequestField)
    ops.register_operand(ODRL + "purpose", lambda r, w, now: "R&D", kind=ValueKind.IRI, label="purpose")
    try:
        assert assert_same(USAGE, msgspec.structs.replace(USE, purpose="marketing"), World(), NOW).permitted
    finally:
        ops.register_operand(original.iri, original.resolve, kind=original.kind, label=original.label,
                             within=original.within)
    assert not assert_same(USAGE, msgspec.structs.replace(USE, purpose="marketing"), World(), NOW).permitted


@pytest.mark.parametrize("operator", ["gteq", "lt", "eq"])
def test_a_decimal_nan_from_the_request_is_unsatisfied_with_a_reason(operator):
    pay = Policy(uid="urn:p:pay", permissions=(Permission(action=Action(name=ODRL + "use"), constraints=(
        Constraint(left_operand=ODRL + "payAmount", operator=ODRL + operator,
                   right_operand=(_lit("5.00", XSD + "decimal"),)),)),))
    verdict = assert_same(pay, Request(pay_amount=Decimal("NaN")), World(), NOW)
    assert verdict.outcome is Outcome.DENY
    assert "pay amount" in verdict.reasons[0]


def test_the_action_memo_stays_bounded():
    compiled = compile(USAGE)
    for n in range(300):  # action names chosen by the caller must not grow the compiled policy without end
        assert not compiled.decide(msgspec.structs.replace(USE, action=f"urn:action:{n}"), World(), NOW).permitted
    premise = compiled.rules[0].premises[-1]
    memo = next(c.cell_contents for c in premise.__closure__ or () if isinstance(c.cell_contents, dict))
    assert len(memo) <= 64


@pytest.mark.parametrize("conflict, outcome", [
    (ConflictStrategy.PERM, Outcome.PERMIT), (ConflictStrategy.PROHIBIT, Outcome.DENY),
    (ConflictStrategy.INVALID, Outcome.DENY), (None, Outcome.DENY),
])
def test_conflicts_are_resolved_as_evaluate_resolves_them(conflict, outcome):
    both = Policy(uid="urn:p:both", conflict=conflict, obligations=(Duty(action=Action(name=ODRL + "inform")),),
                  permissions=(Permission(action=Action(name=ODRL + "use"), duties=(
                      Duty(action=Action(name=ODRL + "delete")),)),),
                  prohibitions=(Prohibition(action=Action(name=ODRL + "read")),))
    verdict = assert_same(both, USE, World(), NOW)
    assert verdict.outcome is outcome and "both apply" in verdict.reasons[0]


def test_a_policy_of_prohibitions_only_is_not_applicable_when_none_applies():
    only = Policy(uid="urn:p:no", prohibitions=(Prohibition(action=Action(name=ODRL + "distribute")),))
    verdict = assert_same(only, USE, World(), NOW)
    assert verdict.outcome is Outcome.NOT_APPLICABLE
    assert assert_same(only, msgspec.structs.replace(USE, action="distribute"), World(), NOW).outcome is Outcome.DENY


@settings(max_examples=200, deadline=None)
@given(cases(policies))
def test_planning_a_use_without_the_report_plans_the_same(case):
    policy, request, world, now = case
    state = UsageState(use_count=request.use_count, first_use=request.first_use, world=world)
    with_report = plan_use(policy, state, request, now)
    without = plan_use(compile(policy), state, request, now, report=False)
    assert isinstance(without.decision, Verdict)
    assert (without.decision.outcome, list(without.decision.reasons), without.decision.duties, without.effects) == (
        with_report.decision.outcome, with_report.decision.reasons, with_report.decision.duties, with_report.effects)


def test_a_permit_with_a_duty_the_node_cannot_carry_out_is_denied_without_the_report_too():
    print_duty = msgspec.structs.replace(USAGE, permissions=(msgspec.structs.replace(
        USAGE.permissions[0], duties=(Duty(action=Action(name=ODRL + "print")),)),))
    planned = plan_use(print_duty, UsageState(), USE, NOW, report=False)
    assert planned.decision.outcome is Outcome.DENY and planned.effects == ()
    assert planned.decision.reasons[-1] == f"duty {ODRL + 'print'!r} cannot be carried out by this node"
    assert list(planned.decision.reasons) == plan_use(print_duty, UsageState(), USE, NOW).decision.reasons
