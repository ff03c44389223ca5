"""Properties (hypothesis): JSON-LD round trip, determinism, ``and`` = each one, ``xone`` = exactly one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
from dsp_schema import dsp_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from usage_policies.errors import PolicySyntaxError
from usage_policies.evaluate import Request, World, compile_constraint, evaluate
from usage_policies.jsonld import parse_policy, to_dsp
from usage_policies.model import (
    ODRL,
    TDS,
    XSD,
    Action,
    Constraint,
    Duty,
    Literal,
    LogicalConstraint,
    LogicalOperand,
    Permission,
    Policy,
    PolicyType,
    Prohibition,
    Ref,
)

PURPOSES = ["R&D", "marketing", "safety", "urn:purpose:audit"]
REGIONS = ["CN", "CN-GD", "CN-GD-GZ", "DE", "EU", "US"]
BASE = datetime(2025, 1, 1, tzinfo=UTC)
instants = st.integers(min_value=0, max_value=400 * 86400).map(lambda s: BASE + timedelta(seconds=s))


def _dt(t: datetime) -> Literal:
    return Literal(value=t.isoformat().replace("+00:00", "Z"), datatype=XSD + "dateTime")


atomic = st.one_of(
    st.builds(lambda op, v: Constraint(left_operand=ODRL + "purpose", operator=ODRL + op,
                                       right_operand=(Literal(value=v),)),
              st.sampled_from(["eq", "neq"]), st.sampled_from(PURPOSES)),
    st.builds(lambda vs: Constraint(left_operand=ODRL + "purpose", operator=ODRL + "isAnyOf",
                                    right_operand=tuple(Literal(value=v) for v in vs)),
              st.lists(st.sampled_from(PURPOSES), min_size=2, max_size=3, unique=True)),
    st.builds(lambda op, n: Constraint(left_operand=ODRL + "count", operator=ODRL + op,
                                       right_operand=(Literal(value=str(n), datatype=XSD + "integer"),)),
              st.sampled_from(["lteq", "lt", "gt", "gteq"]), st.integers(0, 6)),
    st.builds(lambda op, t: Constraint(left_operand=ODRL + "dateTime", operator=ODRL + op,
                                       right_operand=(_dt(t),)),
              st.sampled_from(["lt", "gteq", "lteq", "gt"]), instants),
    st.builds(lambda op, r: Constraint(left_operand=ODRL + "spatial", operator=ODRL + op,
                                       right_operand=(Literal(value=r),)),
              st.sampled_from(["isPartOf", "eq", "isA"]), st.sampled_from(REGIONS)),
    st.builds(lambda r: Constraint(left_operand=TDS + "exportDestination", operator=ODRL + "isPartOf",
                                   right_operand=(Ref(iri=r),)), st.sampled_from(["urn:region:cn"])),
)
any_constraint = st.recursive(
    atomic,
    lambda children: st.builds(
        lambda op, cs: LogicalConstraint(operand=op, constraints=tuple(cs)),
        st.sampled_from(list(LogicalOperand)), st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=6,
)
actions = st.sampled_from(["use", "read", "print", "distribute"]).map(lambda a: Action(name=ODRL + a))
duties = st.builds(lambda a: Duty(action=Action(name=ODRL + a)), st.sampled_from(["inform", "delete"]))
permissions = st.builds(
    lambda a, cs, ds, uid: Permission(action=a, constraints=tuple(cs), duties=tuple(ds), uid=uid),
    actions, st.lists(any_constraint, max_size=3), st.lists(duties, max_size=2),
    st.one_of(st.none(), st.sampled_from(["urn:rule:1", "urn:rule:2"])),
)
prohibitions = st.builds(lambda a, cs: Prohibition(action=a, constraints=tuple(cs)),
                         actions, st.lists(any_constraint, max_size=2))
policies = st.builds(
    lambda perms, prohs, kind: Policy(
        uid="urn:policy:p", type=kind, target="urn:asset:a", permissions=tuple(perms),
        prohibitions=tuple(prohs),
        **({"assigner": "did:web:p", "assignee": "did:web:c"} if kind is PolicyType.AGREEMENT else {}),
    ),
    st.lists(permissions, min_size=1, max_size=3), st.lists(prohibitions, max_size=2),
    st.sampled_from([PolicyType.OFFER, PolicyType.AGREEMENT]),
)
requests = st.builds(
    lambda purpose, count, region, action: Request(
        party="did:web:c", target="urn:asset:a", action=action, purpose=purpose, use_count=count,
        region=region, export_destination="urn:region:cn",
    ),
    st.one_of(st.none(), st.sampled_from(PURPOSES)), st.integers(0, 6),
    st.one_of(st.none(), st.sampled_from(REGIONS)),
    st.sampled_from(["use", "read", "odrl:print", "odrl:distribute", "odrl:sell"]),
)


@settings(max_examples=150, deadline=None)
@given(policies)
def test_policy_survives_the_json_ld_round_trip(policy):
    wire = json.loads(json.dumps(to_dsp(policy)))
    assert dsp_errors(wire) == []
    assert parse_policy(wire) == policy


@settings(max_examples=150, deadline=None)
@given(policies, requests, instants)
def test_evaluation_is_deterministic(policy, request, now):
    first = evaluate(policy, request, World(), now)
    again = evaluate(policy, request, World(), now)
    fresh = evaluate(msgspec.structs.replace(policy), request, World(), now)  # compiled anew
    for other in (again, fresh):
        assert (other.outcome, other.reasons, other.report, other.duties) == (
            first.outcome, first.reasons, first.report, first.duties)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_constraint, min_size=1, max_size=4), requests, instants)
def test_and_equals_evaluating_the_constraints_one_by_one(constraints, request, now):
    world = World()
    each = [compile_constraint(c)(request, world, now).satisfied for c in constraints]
    both = LogicalConstraint(operand=LogicalOperand.AND, constraints=tuple(constraints))
    assert compile_constraint(both)(request, world, now).satisfied == all(each)
    # A rule's constraint list is an implicit ``and`` too.
    policy = Policy(uid="urn:p", permissions=(Permission(action=Action(name=ODRL + "use"),
                                                         constraints=tuple(constraints)),))
    rule = evaluate(policy, msgspec.structs.replace(request, action="use"), world, now).report.rules[0]
    assert rule.active == all(each)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_constraint, min_size=1, max_size=4), requests, instants)
def test_xone_is_exactly_one(constraints, request, now):
    world = World()
    n = sum(compile_constraint(c)(request, world, now).satisfied for c in constraints)
    xone = LogicalConstraint(operand=LogicalOperand.XONE, constraints=tuple(constraints))
    assert compile_constraint(xone)(request, world, now).satisfied == (n == 1)


_KEYS = st.sampled_from([
    "@id", "@type", "@context", "uid", "permission", "prohibition", "obligation", "action", "target",
    "assignee", "constraint", "leftOperand", "operator", "rightOperand", "rightOperandReference", "and", "or",
    "xone", "duty", "refinement", "rdf:value", "dataType", "unit", "conflict", "profile", "@value", "@list",
])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4),
    st.sampled_from(["use", "eq", "Offer", "urn:x", "odrl:eq", "dateTime", "2025-01-01T00:00:00Z", "perm"]),
)
_JSON = st.recursive(
    _SCALARS, lambda ch: st.one_of(st.lists(ch, max_size=3), st.dictionaries(_KEYS, ch, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=6))
def test_any_json_is_a_policy_or_a_syntax_error(doc):
    try:
        parse_policy(doc)
    except PolicySyntaxError as exc:
        assert exc.problems and all(path.startswith("$") for path, _ in exc.problems)
