"""Decisions, reports and reasons; conflict strategies; the duty-semantics choice."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from connector.testing import shared_dir
from usage_policies.evaluate import DutyState, Outcome, Request, World, duties_by_path, duty_timing, evaluate
from usage_policies.jsonld import parse_policy
from usage_policies.model import ODRL, Action, Duty, Policy, duty_key
from usage_policies.report import Activation, DeonticState, DutyTiming, PremiseKind, RuleKind, Satisfaction

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PUBLISHED = shared_dir() / "odrl-tests" / "published-policies"


def published(name: str) -> Policy:
    """A policy example of the ODRL 2.2 Information Model or of the IDS-G (tests/shared/README.md)."""
    return parse_policy(json.loads((PUBLISHED / name).read_text(encoding="utf-8")))
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
    duty = Duty(action=Action(name=ODRL + "obtainConsent"))  # no uid: the world names it by path or key
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


# --- Collections with a refinement (ODRL 2.2 IM §2.5.5, §2.5.6) ----------------------------------------

LEVEL = "http://example.org/adminLevel"
REFINEMENT = [{"leftOperand": LEVEL, "operator": "gt", "rightOperand": 10}]


@pytest.mark.parametrize("named", [{"odrl:source": "urn:team"}, {"@id": "urn:team"}])
@pytest.mark.parametrize(
    ("member", "level", "outcome"),
    [(True, 11, Outcome.PERMIT), (True, 10, Outcome.DENY), (False, 11, Outcome.DENY), (False, 10, Outcome.DENY)],
)
def test_a_refined_collection_admits_a_member_that_meets_the_refinement(named, member, level, outcome):
    # "the refinement property applies to the characteristics of each member of the collection": a party
    # must be in the collection *and* meet all its refinements.
    p = policy(permission=[{"action": "use", "assignee": {"@type": "PartyCollection", **named,
                                                          "refinement": REFINEMENT}}])
    world = World(part_of={ALICE: frozenset({"urn:team"})} if member else {})
    assert decide(p, world, context={LEVEL: level}).outcome is outcome


def test_why_a_refined_collection_does_not_admit_a_party():
    p = policy(permission=[{"action": "use", "assignee": {"@type": "PartyCollection", "odrl:source": "urn:team",
                                                          "refinement": REFINEMENT}}])
    outsider = decide(p, context={LEVEL: 11}).report.rules[0].premises[0]
    assert outsider.reason == f"party is {ALICE!r}, rule is about 'urn:team'"
    member = decide(p, World(part_of={ALICE: frozenset({"urn:team"})}), context={LEVEL: 3})
    premise = member.report.rules[0].premises[0]
    assert "is in 'urn:team' but does not meet its refinement" in (premise.reason or "")
    assert [r.satisfied for r in premise.refinements] == [False]


def test_the_source_itself_is_in_its_collection():
    p = policy(permission=[{"action": "use", "assignee": {"@type": "PartyCollection", "odrl:source": ALICE,
                                                          "refinement": REFINEMENT}}])
    assert decide(p, context={LEVEL: 11}).outcome is Outcome.PERMIT


def test_the_information_models_refined_party_collection_example():
    # IM Example 17: friends of user44 over 17 may view the photos.
    p = published("IM-eg22.jsonld")
    friends = World(part_of={"urn:bob": frozenset({"http://example.com/user44/friends"})})
    age = "http://xmlns.com/foaf/0.1/age"

    def view(party: str, years: int) -> Outcome:
        return evaluate(p, Request(party=party, action="ex:view", target="http://example.com/myPhotos:BdayParty",
                                   context={age: years}), friends, NOW).outcome

    assert view("urn:bob", 18) is Outcome.PERMIT
    assert view("urn:bob", 17) is Outcome.DENY
    assert view("urn:carol", 40) is Outcome.DENY  # not a friend, however old


# --- Compact policies (IM §2.7.1) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("party", "action", "outcome"),
    [("http://example.com/people/billie", "play", Outcome.PERMIT),
     ("http://example.com/people/murphy", "odrl:play", Outcome.PERMIT),
     ("http://example.com/people/murphy", "print", Outcome.DENY),
     ("http://example.com/people/other", "play", Outcome.DENY)],
)
def test_the_information_models_compact_policy_example(party, action, outcome):
    # IM Example 28: target, assigner and action declared once, on the policy.
    p = published("IM-eg26.jsonld")
    request = Request(party=party, action=action, target="http://example.com/music/1999.mp3")
    assert evaluate(p, request, World(), NOW).outcome is outcome


def test_obligations_take_the_policy_level_parties_and_target():
    p = policy(assigner="urn:org", assignee=ALICE, target=X, permission=[{"action": "use"}],
               obligation=[{"action": "odrl:delete"}, {"action": "odrl:inform", "assignee": BOB}])
    d = decide(p)
    assert [(o.assigner, o.assignee, o.target) for o in d.duties] == [("urn:org", ALICE, X), ("urn:org", BOB, X)]


# --- Duties without a uid: named by path or by content key ---------------------------------------------

CONSENT = published("IDS-pc23-odrl-obtain-consent-example-repaired.jsonld")  # obtainConsent, no uid
CONSENT_REQUEST = Request(party="http://example.com/ids/party/456", action="use",
                          target="http://example.com/ids/data/health-data-collection1")
FULFILLED = DutyState(deontic=DeonticState.FULFILLED)


def test_a_before_use_duty_without_a_uid_blocks_until_the_world_reports_it_done():
    d = evaluate(CONSENT, CONSENT_REQUEST, World(), NOW)
    assert d.outcome is Outcome.DENY
    (duty,) = d.report.rules[0].conditions
    assert (duty.rule, duty.path, duty.blocking) == (None, "permission[0].duty[0]", True)
    assert duty.key == duty_key(CONSENT.permissions[0].duties[0])


@pytest.mark.parametrize("name", ["path", "key"])
def test_the_world_reports_a_duty_without_a_uid_by_its_path_or_its_content_key(name):
    duty = CONSENT.permissions[0].duties[0]
    ref = "permission[0].duty[0]" if name == "path" else duty_key(duty)
    d = evaluate(CONSENT, CONSENT_REQUEST, World(duty_states={ref: FULFILLED}), NOW)
    assert d.outcome is Outcome.PERMIT
    assert d.report.rules[0].conditions[0].state is FULFILLED


def test_pay_before_use_from_the_information_model_is_unblocked_by_key():
    p = published("IM-eg15.jsonld")  # compensate 5.00 EUR, event lt policyUsage
    request = Request(action="play", target="http://example.com/music/1999.mp3")
    assert evaluate(p, request, World(), NOW).outcome is Outcome.DENY
    paid = World(duty_states={duty_key(p.permissions[0].duties[0]): FULFILLED})
    assert evaluate(p, request, paid, NOW).outcome is Outcome.PERMIT


def test_the_uid_wins_over_the_path_and_the_path_over_the_key():
    p = policy(permission=[{"action": "use", "duty": [{"@id": "urn:consent", "action": "odrl:obtainConsent"}]}])
    violated = DutyState(deontic=DeonticState.VIOLATED)
    duty = p.permissions[0].duties[0]
    world = World(duty_states={"urn:consent": FULFILLED, "permission[0].duty[0]": violated, duty_key(duty): violated})
    assert decide(p, world).outcome is Outcome.PERMIT
    world = World(duty_states={"permission[0].duty[0]": FULFILLED, duty_key(duty): violated})
    assert decide(p, world).outcome is Outcome.PERMIT


def test_a_path_tells_apart_the_same_duty_of_two_rules_a_key_does_not():
    consent = {"action": "odrl:obtainConsent"}
    p = policy(permission=[{"action": "read", "duty": [consent]}, {"action": "print", "duty": [consent]}])
    by_path = World(duty_states={"permission[1].duty[0]": FULFILLED})
    assert (decide(p, by_path, action="read").outcome, decide(p, by_path, action="print").outcome) == (
        Outcome.DENY, Outcome.PERMIT)
    by_key = World(duty_states={duty_key(p.permissions[0].duties[0]): FULFILLED})
    assert decide(p, by_key, action="read").outcome is decide(p, by_key, action="print").outcome is Outcome.PERMIT


def test_every_duty_is_listed_by_its_path():
    p = policy(permission=[{"action": "use", "duty": [{"action": "odrl:inform"}, {"action": "odrl:delete"}]}],
               prohibition=[{"action": "distribute", "remedy": [{"action": "odrl:anonymize"}]}],
               obligation=[{"action": "odrl:compensate"}])
    assert {path: d.action.name for path, d in duties_by_path(p).items()} == {
        "permission[0].duty[0]": ODRL + "inform", "permission[0].duty[1]": ODRL + "delete",
        "prohibition[0].remedy[0]": ODRL + "anonymize", "obligation[0]": ODRL + "compensate"}


def test_the_content_key_is_the_same_for_every_spelling_of_a_duty():
    spellings = [{"action": "odrl:obtainConsent"}, {"action": ODRL + "obtainConsent"},
                 {"odrl:action": [{"@id": "obtainConsent"}]}]
    keys = {duty_key(policy(permission=[{"action": "use", "duty": [d]}]).permissions[0].duties[0]) for d in spellings}
    assert len(keys) == 1
    (key,) = keys
    assert key.startswith("ni:///sha-256;") and len(key) == len("ni:///sha-256;") + 43


# --- xsd:date bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "now", "outcome"),
    [("IM-eg13.jsonld", "2017-12-31T12:00:00Z", Outcome.PERMIT),  # lteq 2017-12-31: "until the end of 2017"
     ("IM-eg13.jsonld", "2017-12-31T23:59:59Z", Outcome.PERMIT),
     ("IM-eg13.jsonld", "2018-01-01T00:00:00Z", Outcome.DENY),
     ("IM-eg1799.jsonld", "2017-12-31T23:59:59Z", Outcome.PERMIT),  # lt 2018-01-01: "until 2018-01-01"
     ("IM-eg1799.jsonld", "2018-01-01T00:00:00Z", Outcome.DENY)],
)
def test_a_date_bound_covers_the_whole_day(example, now, outcome):
    p = published(example)
    rule = p.permissions[0]
    request = Request(action=rule.action.name if rule.action else "use", target=rule.target)  # type: ignore[arg-type]
    assert evaluate(p, request, World(), datetime.fromisoformat(now)).outcome is outcome


def test_a_date_equals_every_instant_of_its_day():
    p = policy(permission=[{"action": "use", "constraint": [
        {"leftOperand": "dateTime", "operator": "eq", "rightOperand": {"@value": "2025-06-01", "@type": "xsd:date"}}]}])
    assert decide(p).outcome is Outcome.PERMIT  # NOW is 2025-06-01T12:00Z
