"""Decisions, reports and reasons; conflict strategies; the duty-semantics choice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from usage_policies.evaluate import DutyState, Outcome, Request, World, duty_timing, evaluate
from usage_policies.jsonld import parse_policy
from usage_policies.model import ODRL, Action, Duty
from usage_policies.report import Activation, DeonticState, DutyTiming, PremiseKind, RuleKind, Satisfaction

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ALICE, BOB, X = "did:web:alice", "did:web:bob", "urn:asset:x"


def policy(**body):
    return parse_policy({"@context": "https://w3id.org/dspace/2025/1/odrl-profile.jsonld", "@id": "urn:p",
                         "@type": "Offer", **body})


def decide(p, world: World | None = None, **request):
    fields = {"party": ALICE, "action": "use", "target": X, **request}
    return evaluate(p, Request(**fields), world or World(), NOW)


RD_UNTIL_2026 = policy(permission=[{"action": "use", "target": X, "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"},
    {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2026-01-01T00:00:00Z"},
]}])


def test_permit_when_every_constraint_holds():
    d = decide(RD_UNTIL_2026, purpose="R&D")
    assert d.outcome is Outcome.PERMIT
    assert d.outcome.value == "permit"


def test_deny_names_the_failing_constraint_and_values():
    d = decide(RD_UNTIL_2026, purpose="marketing")
    assert d.outcome is Outcome.DENY
    assert d.reasons == ["permission #1 does not apply: purpose is 'marketing', policy requires 'R&D'"]


def test_report_lists_every_premise_and_constraint_with_values():
    d = decide(RD_UNTIL_2026, purpose="marketing", action="read")
    (rule,) = d.report.rules
    assert rule.kind is RuleKind.PERMISSION and rule.activation is Activation.INACTIVE
    assert [(p.kind, p.satisfaction) for p in rule.premises] == [
        (PremiseKind.TARGET, Satisfaction.SATISFIED), (PremiseKind.ACTION, Satisfaction.SATISFIED)]
    purpose, date = rule.constraints
    assert (purpose.left_value, purpose.right_value, purpose.satisfaction) == (
        "marketing", "R&D", Satisfaction.UNSATISFIED)
    assert (date.left_value, date.satisfaction) == (NOW, Satisfaction.SATISFIED)
    assert d.report.created == NOW


@pytest.mark.parametrize(
    ("request_fields", "outcome"),
    [({"action": "read"}, Outcome.PERMIT), ({"action": "odrl:write"}, Outcome.PERMIT),
     ({"action": ODRL + "sell"}, Outcome.DENY), ({"party": BOB}, Outcome.DENY),
     ({"target": "urn:asset:y"}, Outcome.DENY)],
)
def test_target_party_action_premises(request_fields, outcome):
    p = policy(permission=[{"action": "use", "target": X, "assignee": ALICE}])
    assert decide(p, **request_fields).outcome is outcome


def test_collection_membership_comes_from_the_world():
    p = policy(permission=[{"action": "use", "assignee": {"@id": "urn:alliance", "@type": "PartyCollection",
                                                          "odrl:source": "urn:registry"}}])
    assert decide(p).outcome is Outcome.DENY
    assert decide(p, World(part_of={ALICE: frozenset({"urn:alliance"})})).outcome is Outcome.PERMIT


def test_prohibition_only_policy_is_not_applicable_when_it_does_not_apply():
    p = policy(prohibition=[{"action": "distribute"}])
    assert decide(p, action="read").outcome is Outcome.NOT_APPLICABLE
    assert decide(p, action="distribute").outcome is Outcome.DENY


@pytest.mark.parametrize(
    ("conflict", "outcome", "reason_part"),
    [(None, Outcome.DENY, "'invalid': the policy is void"), ("perm", Outcome.PERMIT, "'perm'"),
     ("prohibit", Outcome.DENY, "'prohibit'"), ("invalid", Outcome.DENY, "'invalid'")],
)
def test_conflict_strategies(conflict, outcome, reason_part):
    body = {"permission": [{"action": "use"}], "prohibition": [{"action": "distribute"}]}
    if conflict:
        body["odrl:conflict"] = {"@id": f"odrl:{conflict}"}
    d = decide(policy(**body), action="distribute")
    assert d.outcome is outcome
    assert reason_part in d.reasons[0]


@pytest.mark.parametrize(
    ("operand", "purposes", "satisfied"),
    [("and", ("a",), False), ("or", ("a",), True), ("xone", ("a",), True), ("andSequence", ("a",), False),
     ("xone", ("a", "b"), False), ("or", (), False)],
)
def test_logical_constraints(operand, purposes, satisfied):
    tags = "http://example.org/tags"
    p = policy(permission=[{"action": "use", "constraint": [{operand: [
        {"leftOperand": tags, "operator": "hasPart", "rightOperand": "a"},
        {"leftOperand": tags, "operator": "hasPart", "rightOperand": "b"},
    ]}]}])
    d = decide(p, context={tags: purposes})
    (c,) = d.report.rules[0].constraints
    assert c.satisfied is satisfied
    assert len(c.children) == 2  # children are always reported


@pytest.mark.parametrize(
    ("duty", "timing"),
    [({"action": "odrl:compensate"}, DutyTiming.WITH_OR_AFTER_USE),
     ({"action": "odrl:inform"}, DutyTiming.WITH_OR_AFTER_USE),
     ({"action": "odrl:obtainConsent"}, DutyTiming.BEFORE_USE),
     ({"action": "odrl:attribute", "constraint": [
         {"leftOperand": "event", "operator": "lt", "rightOperand": {"@id": "odrl:policyUsage"}}]},
      DutyTiming.BEFORE_USE),
     ({"action": "odrl:obtainConsent", "constraint": [
         {"leftOperand": "event", "operator": "gt", "rightOperand": {"@id": "odrl:policyUsage"}}]},
      DutyTiming.WITH_OR_AFTER_USE)],
)
def test_duty_timing(duty, timing):
    p = policy(permission=[{"action": "use", "duty": [duty]}])
    assert duty_timing(p.permissions[0].duties[0]) is timing


@pytest.mark.parametrize(
    ("action", "state", "outcome"),
    [("odrl:inform", None, Outcome.PERMIT),  # due after use: an unset duty does not block
     ("odrl:inform", DeonticState.FULFILLED, Outcome.PERMIT),
     ("odrl:inform", DeonticState.VIOLATED, Outcome.DENY),
     ("odrl:obtainConsent", None, Outcome.DENY),  # a pre-condition blocks until fulfilled
     ("odrl:obtainConsent", DeonticState.NON_SET, Outcome.DENY),
     ("odrl:obtainConsent", DeonticState.FULFILLED, Outcome.PERMIT),
     ("odrl:obtainConsent", DeonticState.VIOLATED, Outcome.DENY)],
)
def test_duty_semantics(action, state, outcome):
    p = policy(permission=[{"action": "use", "duty": [{"@id": "urn:duty", "action": action}]}])
    world = World(duty_states={"urn:duty": DutyState(deontic=state)} if state else {})
    d = decide(p, world)
    assert d.outcome is outcome
    if outcome is Outcome.DENY:
        assert "duty" in d.reasons[0]


def test_permit_carries_duties_due_after_use_and_obligations():
    p = policy(permission=[{"action": "use", "duty": [{"action": "odrl:inform"}]}],
               obligation=[{"action": "odrl:delete"}])
    d = decide(p)
    assert [duty.action.name for duty in d.duties] == [ODRL + "inform", ODRL + "delete"]
    assert decide(p, action="sell").duties == ()


def test_evaluation_does_not_depend_on_cache_state():
    p = policy(permission=[{"action": "use", "constraint": [
        {"leftOperand": "count", "operator": "lteq", "rightOperand": 2}]}])
    outcomes = [decide(p, use_count=n).outcome for n in range(4)]
    assert outcomes == [Outcome.PERMIT, Outcome.PERMIT, Outcome.DENY, Outcome.DENY]


def test_report_renders_as_force_json_ld():
    doc = decide(RD_UNTIL_2026, purpose="R&D").report.to_jsonld()
    types = [t for node in doc["@graph"] for t in node["@type"]]
    report = "https://w3id.org/force/compliance-report#"
    assert types.count(report + "ConstraintReport") == 2
    assert types.count(report + "PermissionReport") == 1
    assert types.count(report + "PolicyReport") == 1


def test_unknown_duty_state_key_is_unknown_not_fulfilled():
    duty = Duty(action=Action(name=ODRL + "obtainConsent"))  # no uid: the world cannot report on it
    assert duty_timing(duty) is DutyTiming.BEFORE_USE


def test_obligations_are_reported_but_do_not_decide():
    p = policy(permission=[{"action": "use"}], obligation=[{"@id": "urn:ob", "action": "odrl:delete"}])
    world = World(duty_states={"urn:ob": DutyState(deontic=DeonticState.VIOLATED)})
    d = decide(p, world)
    assert d.outcome is Outcome.PERMIT
    obligation = d.report.rules[-1]
    assert obligation.kind is RuleKind.OBLIGATION and obligation.rule == "urn:ob"
    assert obligation.conditions[0].state.deontic is DeonticState.VIOLATED


def test_remedies_never_block():
    p = policy(prohibition=[{"action": "distribute", "remedy": [{"action": "odrl:obtainConsent"}]}])
    d = decide(p, action="distribute")
    assert d.outcome is Outcome.DENY
    assert [c.blocking for c in d.report.rules[0].conditions] == [False]


def test_naive_now_is_read_as_utc():
    p = policy(permission=[{"action": "use", "constraint": [
        {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2025-06-01T12:00:01Z"}]}])
    naive = evaluate(p, Request(action="use"), World(), NOW.replace(tzinfo=None))
    assert naive.outcome is Outcome.PERMIT


def test_permit_reasons_name_the_duties_due():
    p = policy(permission=[{"action": "use", "duty": [{"action": "odrl:inform"}]}])
    assert decide(p).reasons == ["permission #1 allows this", "duty 'inform' is due with or after the use"]
