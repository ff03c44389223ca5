"""Left operands and operators: each built-in, the region hierarchy, and the registry."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from usage_policies.evaluate import Request, World, compile_constraint
from usage_policies.model import ODRL, TDS, Constraint, Literal, Ref
from usage_policies.operands import (
    region_within,
    register_operand,
    unregister_operand,
)
from usage_policies.report import Satisfaction
from usage_policies.values import ValueKind

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def check(left: str, op: str, right, request: Request | None = None, world: World | None = None):
    values = right if isinstance(right, tuple) else (right,)
    terms = tuple(v if isinstance(v, Literal | Ref) else Literal(value=str(v)) for v in values)
    if left.startswith("tds:"):
        left = TDS + left[4:]
    elif ":" not in left:
        left = ODRL + left
    c = Constraint(left_operand=left, operator=ODRL + op, right_operand=terms)
    return compile_constraint(c)(request or Request(), world or World(), NOW)


@pytest.mark.parametrize(
    ("left", "op", "right", "request_fields", "satisfied"),
    [
        ("dateTime", "lt", "2025-06-01T12:00:00.001Z", {}, True),
        ("dateTime", "gteq", "2025-06-01T14:00:00+02:00", {}, True),
        ("dateTime", "gt", "2025-06-01T12:00:00Z", {}, False),
        ("elapsedTime", "lteq", "P30D", {"first_use": datetime(2025, 5, 2, 12, tzinfo=UTC)}, True),
        ("elapsedTime", "lteq", "P30D", {"first_use": datetime(2025, 5, 1, 11, tzinfo=UTC)}, False),
        ("elapsedTime", "lteq", "PT0S", {}, True),  # first use: nothing has elapsed
        ("count", "lteq", "3", {"use_count": 2}, True),  # the third use
        ("count", "lteq", "3", {"use_count": 3}, False),  # a fourth use
        ("purpose", "eq", "R&D", {"purpose": "R&D"}, True),
        ("purpose", "eq", "R&D", {"purpose": "marketing"}, False),
        ("purpose", "isAnyOf", ("R&D", "safety"), {"purpose": "safety"}, True),
        ("purpose", "isNoneOf", ("marketing", "ads"), {"purpose": "R&D"}, True),
        ("spatial", "isPartOf", "CN", {"region": "CN-GD-GZ"}, True),
        ("spatial", "isPartOf", "CN-GD", {"region": "CN-BJ"}, False),
        ("spatial", "eq", "CN", {"region": "CN-GD"}, False),  # eq compares codes exactly
        ("spatial", "isAnyOf", ("EU", "CH"), {"region": "DE"}, True),
        ("spatial", "hasPart", "CN-GD", {"region": "CN"}, True),
        ("recipient", "eq", Ref(iri="did:web:b"), {"recipient": "did:web:b"}, True),
        ("systemDevice", "eq", "urn:connector:1", {"connector": "urn:connector:2"}, False),
        ("event", "eq", "urn:event:audit", {"event": "urn:event:audit"}, True),
        ("payAmount", "gteq", "10.00", {"pay_amount": Decimal("10")}, True),
        ("percentage", "lt", "50", {"percentage": Decimal("49.9")}, True),
        ("tds:dataClass", "eq", "important", {"data_class": "important"}, True),
        ("tds:dataClass", "lteq", "important", {"data_class": "core"}, False),
        ("tds:exportDestination", "isPartOf", "CN", {"export_destination": "CN-SH"}, True),
        ("tds:exportDestination", "isPartOf", "CN", {"export_destination": "DE"}, False),
    ],
)
def test_builtin_operands(left, op, right, request_fields, satisfied):
    report = check(left, op, right, Request(**request_fields))
    assert report.satisfied is satisfied, report.reason
    assert (report.reason is None) is satisfied


def test_data_class_comes_from_the_world_by_target():
    world = World(data_classes={"urn:asset:1": "core"})
    assert check("tds:dataClass", "eq", "core", Request(target="urn:asset:1"), world).satisfied


def test_export_destination_comes_from_the_recipient_region():
    world = World(party_regions={"did:web:peer": "US"})
    report = check("tds:exportDestination", "isPartOf", "CN", Request(recipient="did:web:peer"), world)
    assert not report.satisfied
    assert report.reason == "export destination is 'US', policy requires within 'CN'"


@pytest.mark.parametrize(
    ("code", "container", "inside"),
    [("CN-GD-GZ", "CN-GD", True), ("CN-GD-GZ", "CN", True), ("CN", "CN-GD", False), ("FR", "EU", True),
     ("CH", "EU", False), ("cn-gd", "CN", True)],
)
def test_region_hierarchy(code, container, inside):
    assert region_within(code, container) is inside


def test_world_adds_region_edges():
    world = World(region_parents={"GBA": "CN"})
    assert region_within("GBA", "CN", world)


def test_purpose_is_a_uses_the_world_taxonomy():
    world = World(concept_parents={"clinical-trial": frozenset({"R&D"})})
    assert check("purpose", "isA", "R&D", Request(purpose="clinical-trial"), world).satisfied


def test_unknown_left_operand_is_not_satisfied_with_a_reason():
    report = check("http://example.org/temperature", "lt", "30", Request())
    assert report.satisfaction is Satisfaction.UNSATISFIED
    assert "unknown left operand http://example.org/temperature" in (report.reason or "")


def test_request_context_supplies_unregistered_operands():
    report = check("http://example.org/partner", "eq", "gold",
                   Request(context={"http://example.org/partner": "gold"}))
    assert report.satisfied


def test_missing_value_is_not_satisfied_even_for_neq():
    report = check("purpose", "neq", "marketing", Request())
    assert not report.satisfied
    assert report.reason == "purpose is not given, policy requires not 'marketing'"


def test_incomparable_values_are_not_satisfied_with_a_reason():
    report = check("purpose", "lt", "R&D", Request(purpose="R&D"))
    assert not report.satisfied
    assert "cannot be compared" in (report.reason or "")


def test_registered_operand_resolves_without_touching_the_engine():
    iri = "https://w3id.org/tds/v1#membership"
    register_operand(iri, lambda request, world, now: world.references.get("membership"),
                     kind=ValueKind.IRI, label="membership")
    try:
        world = World(references={"membership": "urn:alliance:auto"})
        value = (Literal(value="urn:alliance:auto"),)
        c = Constraint(left_operand=iri, operator=ODRL + "eq", right_operand=value)
        assert compile_constraint(c)(Request(), world, NOW).satisfied
    finally:
        unregister_operand(iri)


@pytest.mark.parametrize(
    ("op", "right", "left", "satisfied"),
    [("isAllOf", ("a", "b"), ("a", "b", "c"), True), ("isAllOf", ("a", "d"), ("a", "b"), False),
     ("hasPart", "b", ("a", "b"), True), ("isPartOf", ("a", "b", "c"), ("a", "b"), True),
     ("isAnyOf", ("x", "y"), ("a", "b"), False), ("isNoneOf", ("x", "y"), ("a", "b"), True),
     ("eq", "a", ("a",), True)],
)
def test_set_operators_on_set_values(op, right, left, satisfied):
    iri = "http://example.org/tags"
    assert check(iri, op, right, Request(context={iri: left})).satisfied is satisfied


def test_term_lteq_from_the_dsp_schema_reads_as_lteq():
    assert check("count", "term-lteq", "1", Request(use_count=0)).satisfied
    assert not check("count", "term-lteq", "1", Request(use_count=1)).satisfied


def test_right_operand_reference_is_resolved_from_the_world():
    c = Constraint(left_operand=ODRL + "count", operator=ODRL + "lteq",
                   right_operand_reference="urn:limit")
    run = compile_constraint(c)
    assert run(Request(use_count=4), World(references={"urn:limit": "5"}), NOW).satisfied
    missing = run(Request(use_count=4), World(), NOW)
    assert not missing.satisfied and "urn:limit" in (missing.reason or "")


@pytest.mark.parametrize(
    ("resolver", "reason_part"),
    [(lambda r, w, now: {}["missing"], "cannot be read"),
     (lambda r, w, now: datetime(2025, 1, 1), "cannot be compared")],  # naive vs aware
)
def test_resolver_trouble_is_a_reason_not_an_exception(resolver, reason_part):
    iri = "https://w3id.org/tds/v1#lastAudit"
    register_operand(iri, resolver, kind=ValueKind.DATETIME, label="last audit")
    try:
        report = check(iri, "lt", "2026-01-01T00:00:00Z")
        assert not report.satisfied
        assert reason_part in (report.reason or "")
    finally:
        unregister_operand(iri)


@pytest.mark.parametrize(
    ("left", "right", "request_fields", "world", "satisfied"),
    [("purpose", "R&D", {"purpose": "clinical-trial"}, {"clinical-trial": frozenset({"R&D"})}, True),
     ("purpose", "R&D", {"purpose": "R&D"}, {"clinical-trial": frozenset({"R&D"})}, False),
     ("purpose", "R&D", {"purpose": "R&D"}, {}, False),
     ("spatial", "EU", {"region": "DE"}, {}, True),
     ("spatial", "CN", {"region": "CN-GD-GZ"}, {}, True),
     ("spatial", "EU", {"region": "EU"}, {}, False),
     ("spatial", "CN-GD", {"region": "cn-gd"}, {}, False)],
)
def test_is_a_holds_for_an_instance_of_the_right_operand_not_for_the_class_itself(
    left, right, request_fields, world, satisfied
):
    # ODRL 2.2 vocabulary: isA, "a given value is an instance of the right operand".
    report = check(left, "isA", right, Request(**request_fields), World(concept_parents=world))
    assert report.satisfied is satisfied


def test_is_a_needs_an_operand_with_a_class_hierarchy():
    report = check("http://example.org/kind", "isA", "dog", Request(context={"http://example.org/kind": "dog"}))
    assert report.satisfaction is Satisfaction.UNSATISFIED
    assert "has no class hierarchy" in (report.reason or "")
