"""The compliance report's JSON-LD rendering in the FORCE vocabulary."""

from __future__ import annotations

from datetime import UTC, datetime

from usage_policies.model import ODRL, XSD, LogicalOperand
from usage_policies.report import (
    REPORT,
    Activation,
    ConstraintReport,
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
from usage_policies.values import parse_duration

NOW = datetime(2024, 2, 12, 11, 20, 10, 999000, tzinfo=UTC)
SAT, UNSAT = Satisfaction.SATISFIED, Satisfaction.UNSATISFIED


def render() -> dict:
    atomic = ConstraintReport(constraint="urn:c1", satisfaction=SAT, left_operand=ODRL + "dateTime",
                              operator=ODRL + "lt", left_value=NOW, right_value=NOW)
    count = ConstraintReport(constraint=None, satisfaction=UNSAT, left_value=3, right_value=2,
                             operator=ODRL + "lteq")
    elapsed = ConstraintReport(constraint=None, satisfaction=SAT, left_value=parse_duration("P2D"),
                               right_value=("a", "https://example.org/b"))
    logical = ConstraintReport(constraint="urn:c0", satisfaction=UNSAT, logical_operand=LogicalOperand.AND,
                               children=(atomic, count, elapsed))
    rule = RuleReport(
        kind=RuleKind.PERMISSION, rule="urn:rule", rule_request="urn:req", activation=Activation.INACTIVE,
        premises=(PremiseReport(kind=PremiseKind.ACTION, satisfaction=SAT, expected="use", actual="read"),),
        constraints=(logical,),
        conditions=(DutyReport(rule="urn:duty", action=ODRL + "compensate",
                               timing=DutyTiming.WITH_OR_AFTER_USE, state=DutyState(), blocking=False),),
    )
    return PolicyReport(policy="urn:p", policy_request="urn:r", created=NOW, rules=(rule,)).to_jsonld()


def nodes_of(doc: dict, kind: str) -> list[dict]:
    return [n for n in doc["@graph"] if REPORT + kind in n["@type"]]


def test_policy_report_links_its_rule_report():
    doc = render()
    (top,) = nodes_of(doc, "PolicyReport")
    (rule,) = nodes_of(doc, "PermissionReport")
    assert top[REPORT + "ruleReport"] == [{"@id": rule["@id"]}]
    assert top[REPORT + "policyRequest"] == [{"@id": "urn:r"}]
    assert top["http://purl.org/dc/terms/created"][0]["@value"] == "2024-02-12T11:20:10.999000Z"
    assert rule[REPORT + "activationState"] == [{"@id": REPORT + "Inactive"}]
    assert rule[REPORT + "ruleRequest"] == [{"@id": "urn:req"}]


def test_premises_include_nested_constraints_and_conditions():
    doc = render()
    (rule,) = nodes_of(doc, "PermissionReport")
    assert len(rule[REPORT + "premiseReport"]) == 2  # action + the top-level logical constraint
    assert len(rule[REPORT + "conditionReport"]) == 1
    assert len(nodes_of(doc, "ConstraintReport")) == 4
    (logical,) = [n for n in nodes_of(doc, "ConstraintReport") if REPORT + "constraintLogicalOperand" in n]
    assert len(logical[REPORT + "premiseReport"]) == 3
    (duty,) = nodes_of(doc, "DutyReport")
    assert duty[REPORT + "deonticState"] == [{"@id": REPORT + "NonSet"}]


def test_operand_values_are_typed_literals():
    values = {}
    for node in nodes_of(render(), "ConstraintReport"):
        if REPORT + "constraintLeftOperand" in node:
            values[node[REPORT + "constraintLeftOperand"][0].get("@type")] = node
    assert set(values) == {XSD + "dateTime", XSD + "integer", XSD + "duration"}
    sets = values[XSD + "duration"][REPORT + "constraintRightOperand"]
    assert sets == [{"@value": "a"}, {"@id": "https://example.org/b"}]
