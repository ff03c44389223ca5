"""Compliance reports following the FORCE Compliance Report Model (``report:`` =
https://w3id.org/force/compliance-report#, v0.9.0).

One :class:`PolicyReport` per evaluation, one :class:`RuleReport` per (atomic) rule with its premises
(target, party, action, each constraint, nested constraints included) and conditions (duties), each with
its state and the values compared, so that a human can see *why*. :meth:`PolicyReport.to_jsonld`
renders it as JSON-LD in the FORCE vocabulary.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec

from usage_policies.model import XSD, LogicalOperand
from usage_policies.values import Day, Duration, Elapsed, show

REPORT = "https://w3id.org/force/compliance-report#"


class Satisfaction(enum.Enum):
    SATISFIED = REPORT + "Satisfied"
    UNSATISFIED = REPORT + "Unsatisfied"


class Activation(enum.Enum):
    ACTIVE = REPORT + "Active"
    INACTIVE = REPORT + "Inactive"


class Attempt(enum.Enum):
    ATTEMPTED = REPORT + "Attempted"
    NOT_ATTEMPTED = REPORT + "NotAttempted"


class PerformanceState(enum.Enum):
    PERFORMED = REPORT + "Performed"
    UNPERFORMED = REPORT + "Unperformed"
    UNKNOWN = REPORT + "Unknown"


class DeonticState(enum.Enum):
    FULFILLED = REPORT + "Fulfilled"
    VIOLATED = REPORT + "Violated"
    NON_SET = REPORT + "NonSet"


class PremiseKind(enum.Enum):
    TARGET = REPORT + "TargetReport"
    PARTY = REPORT + "PartyReport"
    ACTION = REPORT + "ActionReport"


class RuleKind(enum.Enum):
    PERMISSION = REPORT + "PermissionReport"
    PROHIBITION = REPORT + "ProhibitionReport"
    OBLIGATION = REPORT + "ObligationReport"


class DutyTiming(enum.Enum):
    """When a duty is due relative to the use (see :mod:`usage_policies.evaluate`)."""

    BEFORE_USE = "before-use"
    WITH_OR_AFTER_USE = "with-or-after-use"


class DutyState(msgspec.Struct, frozen=True, kw_only=True):
    """What the world knows about a duty (FORCE ``report:DutyReport`` states)."""

    performance: PerformanceState = PerformanceState.UNKNOWN
    deontic: DeonticState = DeonticState.NON_SET


class ConstraintReport(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An atomic or logical constraint's satisfaction, with the values compared or the child reports."""

    constraint: str | None
    satisfaction: Satisfaction
    left_operand: str | None = None
    operator: str | None = None
    left_value: object = None
    right_value: object = None
    logical_operand: LogicalOperand | None = None
    children: tuple[ConstraintReport, ...] = ()
    reason: str | None = None

    @property
    def satisfied(self) -> bool:
        return self.satisfaction is Satisfaction.SATISFIED


class PremiseReport(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Whether the request's target / party / action is the one the rule is about."""

    kind: PremiseKind
    satisfaction: Satisfaction
    expected: str
    actual: str | None
    refinements: tuple[ConstraintReport, ...] = ()
    reason: str | None = None


class DutyReport(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A duty attached to a permission (a *condition* of it, in FORCE terms) or a policy obligation.

    ``rule`` is the duty's ``uid``; ``path`` (``permission[0].duty[1]``) and ``key`` (its content key) are
    the other names the world may report its state under (:class:`usage_policies.evaluate.World`).
    """

    rule: str | None
    action: str
    timing: DutyTiming
    state: DutyState
    blocking: bool
    reason: str | None = None
    path: str | None = None
    key: str | None = None


class RuleReport(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    kind: RuleKind
    rule: str | None
    rule_request: str | None
    activation: Activation
    premises: tuple[PremiseReport, ...] = ()
    constraints: tuple[ConstraintReport, ...] = ()
    conditions: tuple[DutyReport, ...] = ()
    attempt: Attempt = Attempt.ATTEMPTED

    @property
    def active(self) -> bool:
        return self.activation is Activation.ACTIVE


class PolicyReport(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    policy: str
    policy_request: str | None
    created: datetime
    rules: tuple[RuleReport, ...]

    def to_jsonld(self) -> dict[str, Any]:
        """The report as expanded-IRI JSON-LD in the FORCE vocabulary (blank nodes for sub-reports)."""
        nodes: list[dict[str, Any]] = []
        counter = iter(range(1 << 30))

        def bnode() -> str:
            return f"_:r{next(counter)}"

        def constraint_node(c: ConstraintReport) -> str:
            node_id = bnode()
            node: dict[str, Any] = {
                "@id": node_id,
                "@type": [REPORT + "ConstraintReport"],
                REPORT + "satisfactionState": [{"@id": c.satisfaction.value}],
            }
            if c.constraint is not None:
                node[REPORT + "constraint"] = [{"@id": c.constraint}]
            if c.logical_operand is not None:
                node[REPORT + "constraintLogicalOperand"] = [{"@id": c.logical_operand.value}]
                node[REPORT + "premiseReport"] = [{"@id": constraint_node(ch)} for ch in c.children]
            else:
                if c.left_value is not None:
                    node[REPORT + "constraintLeftOperand"] = [_literal(c.left_value)]
                if c.operator is not None:
                    node[REPORT + "constraintOperator"] = [{"@id": c.operator}]
                if c.right_value is not None:
                    node[REPORT + "constraintRightOperand"] = [_literal(v) for v in _many(c.right_value)]
            nodes.append(node)
            return node_id

        rule_ids = []
        for rule in self.rules:
            rule_id = bnode()
            rule_ids.append({"@id": rule_id})
            premises = []
            for p in rule.premises:
                pid = bnode()
                nodes.append({
                    "@id": pid,
                    "@type": [p.kind.value],
                    REPORT + "satisfactionState": [{"@id": p.satisfaction.value}],
                })
                premises.append({"@id": pid})
            premises.extend({"@id": constraint_node(c)} for c in rule.constraints)
            conditions = []
            for d in rule.conditions:
                did = bnode()
                node = {
                    "@id": did,
                    "@type": [REPORT + "DutyReport"],
                    REPORT + "performanceState": [{"@id": d.state.performance.value}],
                    REPORT + "deonticState": [{"@id": d.state.deontic.value}],
                }
                if d.rule is not None:
                    node[REPORT + "rule"] = [{"@id": d.rule}]
                nodes.append(node)
                conditions.append({"@id": did})
            rule_node: dict[str, Any] = {
                "@id": rule_id,
                "@type": [rule.kind.value],
                REPORT + "attemptState": [{"@id": rule.attempt.value}],
                REPORT + "activationState": [{"@id": rule.activation.value}],
            }
            if rule.rule is not None:
                rule_node[REPORT + "rule"] = [{"@id": rule.rule}]
            if rule.rule_request is not None:
                rule_node[REPORT + "ruleRequest"] = [{"@id": rule.rule_request}]
            if premises:
                rule_node[REPORT + "premiseReport"] = premises
            if conditions:
                rule_node[REPORT + "conditionReport"] = conditions
            nodes.append(rule_node)
        top: dict[str, Any] = {
            "@id": bnode(),
            "@type": [REPORT + "PolicyReport"],
            "http://purl.org/dc/terms/created": [
                {"@value": show(self.created), "@type": XSD + "dateTime"}
            ],
            REPORT + "policy": [{"@id": self.policy}],
            REPORT + "ruleReport": rule_ids,
        }
        if self.policy_request is not None:
            top[REPORT + "policyRequest"] = [{"@id": self.policy_request}]
        return {"@graph": [top, *nodes]}


def _many(value: object) -> tuple[object, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _literal(value: object) -> dict[str, str]:
    if isinstance(value, datetime):
        return {"@value": show(value), "@type": XSD + "dateTime"}
    if isinstance(value, Day):
        return {"@value": str(value), "@type": XSD + "date"}
    if isinstance(value, Duration | Elapsed):
        return {"@value": str(value), "@type": XSD + "duration"}
    if isinstance(value, bool):
        return {"@value": "true" if value else "false", "@type": XSD + "boolean"}
    if isinstance(value, int):
        return {"@value": str(value), "@type": XSD + "integer"}
    if isinstance(value, str) and value.startswith(("http://", "https://", "urn:")):
        return {"@id": value}
    return {"@value": value if isinstance(value, str) else show(value)}

