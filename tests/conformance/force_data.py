"""Read the FORCE ODRL test suite (Turtle) with rdflib into the engine's model, and score reports.

Test helper only: the engine never imports rdflib. The metric is the suite's recommended
"Rule-Activation-Constraint-satisfaction-similarity" (odrl-tests/INDEX.md §1.4).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache

from rdflib import RDF, BNode, Graph, Namespace, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.term import Node

from connector.testing import shared_dir
from usage_policies.evaluate import DutyState, Request, World
from usage_policies.model import (
    Action,
    AnyConstraint,
    AssetCollection,
    Constraint,
    Duty,
    Literal,
    LogicalConstraint,
    LogicalOperand,
    PartyCollection,
    Permission,
    Policy,
    PolicyType,
    Prohibition,
    Ref,
)
from usage_policies.report import DeonticState, PerformanceState
from usage_policies.values import parse_datetime

SHARED = shared_dir()
SUITE = SHARED / "odrl-tests" / "force-test-suite"

ODRL = Namespace("http://www.w3.org/ns/odrl/2/")
REPORT = Namespace("https://w3id.org/force/compliance-report#")
EX = Namespace("http://example.org/")
DCT = Namespace("http://purl.org/dc/terms/")
TEMP = Namespace("http://example.com/request/")


def cases() -> list[dict]:
    return json.loads((SUITE / "index.json").read_text())


@cache
def graph(relative: str) -> Graph:
    return Graph().parse(SUITE / relative, format="turtle")


def _subject_of_type(g: Graph, rdf_type: URIRef) -> Node:
    subjects = list(g.subjects(RDF.type, rdf_type))
    assert len(subjects) == 1, f"expected one {rdf_type}, found {len(subjects)}"
    return subjects[0]


def _iri(node: Node) -> str:
    assert isinstance(node, URIRef | BNode)
    return str(node)


def _term(node: Node) -> Literal | Ref:
    if isinstance(node, RdfLiteral):
        return Literal(value=str(node), datatype=str(node.datatype) if node.datatype else None)
    return Ref(iri=_iri(node))


def _sorted(nodes) -> list[Node]:
    return sorted(nodes, key=str)


def _constraint(g: Graph, node: Node) -> AnyConstraint:
    for operand in LogicalOperand:
        children = _sorted(g.objects(node, URIRef(operand.value)))
        if children:
            return LogicalConstraint(
                operand=operand, constraints=tuple(_constraint(g, c) for c in children), uid=_iri(node)
            )
    return Constraint(
        left_operand=_iri(g.value(node, ODRL.leftOperand)),
        operator=_iri(g.value(node, ODRL.operator)),
        right_operand=tuple(_term(t) for t in _sorted(g.objects(node, ODRL.rightOperand))),
        uid=_iri(node),
    )


def _collection(g: Graph, node: Node, collection_type: URIRef, cls: type) -> object:
    if (node, RDF.type, collection_type) in g:
        source = g.value(node, ODRL.source)
        return cls(uid=_iri(node), source=_iri(source) if source is not None else None)
    return _iri(node)


def _action(g: Graph, node: Node) -> Action | None:
    value = g.value(node, ODRL.action)
    if value is None:
        return None
    if isinstance(value, BNode):  # [ rdf:value odrl:print ; odrl:refinement … ]
        return Action(
            name=_iri(g.value(value, RDF.value)),
            refinement=tuple(_constraint(g, c) for c in _sorted(g.objects(value, ODRL.refinement))),
        )
    return Action(name=_iri(value))


def _rule_fields(g: Graph, node: Node) -> dict:
    fields: dict = {"uid": _iri(node), "action": _action(g, node)}
    target = g.value(node, ODRL.target)
    if target is not None:
        fields["target"] = _collection(g, target, ODRL.AssetCollection, AssetCollection)
    assignee = g.value(node, ODRL.assignee)
    if assignee is not None:
        fields["assignee"] = _collection(g, assignee, ODRL.PartyCollection, PartyCollection)
    fields["constraints"] = tuple(_constraint(g, c) for c in _sorted(g.objects(node, ODRL.constraint)))
    return fields


def policy_from(relative: str) -> Policy:
    g = graph(relative)
    subjects = [s for t in PolicyType for s in g.subjects(RDF.type, URIRef(t.value))]
    assert len(subjects) == 1
    node = subjects[0]
    policy_type = next(t for t in PolicyType if (node, RDF.type, URIRef(t.value)) in g)
    permissions = []
    for rule in _sorted(g.objects(node, ODRL.permission)):
        duties = tuple(
            Duty(uid=_iri(d), action=_action(g, d) or Action(name=str(ODRL.use)),
                 constraints=tuple(_constraint(g, c) for c in _sorted(g.objects(d, ODRL.constraint))))
            for d in _sorted(g.objects(rule, ODRL.duty))
        )
        permissions.append(Permission(**_rule_fields(g, rule), duties=duties))
    prohibitions = [Prohibition(**_rule_fields(g, r)) for r in _sorted(g.objects(node, ODRL.prohibition))]
    return Policy(
        uid=_iri(node), type=policy_type, permissions=tuple(permissions), prohibitions=tuple(prohibitions)
    )


def request_from(relative: str) -> Request:
    g = graph(relative)
    node = _subject_of_type(g, ODRL.Request)
    rule = g.value(node, ODRL.permission)
    assignee, action, target = (g.value(rule, p) for p in (ODRL.assignee, ODRL.action, ODRL.target))
    return Request(
        uid=_iri(node), rule_uid=_iri(rule),
        party=_iri(assignee) if assignee is not None else None,
        action=_iri(action),
        target=_iri(target) if target is not None else None,
    )


def world_from(relative: str) -> tuple[World, datetime]:
    g = graph(relative)
    now = parse_datetime(str(g.value(TEMP.currentTime, DCT.issued)))
    part_of: dict[str, set[str]] = {}
    for member, collection in g.subject_objects(ODRL.partOf):
        part_of.setdefault(_iri(member), set()).add(_iri(collection))
    duty_states = {}
    for report in g.subjects(RDF.type, REPORT.DutyReport):
        duty_states[_iri(g.value(report, REPORT.rule))] = DutyState(
            performance=PerformanceState(str(g.value(report, REPORT.performanceState))),
            deontic=DeonticState(str(g.value(report, REPORT.deonticState))),
        )
    world = World(part_of={k: frozenset(v) for k, v in part_of.items()}, duty_states=duty_states)
    return world, now


# --- The metric ----------------------------------------------------------------------------------------

PREMISE_TYPES = (REPORT.TargetReport, REPORT.ActionReport, REPORT.PartyReport)
COUNTED_TYPES = (*PREMISE_TYPES, REPORT.ConstraintReport)


def _rule_report(g: Graph) -> tuple[list[str], Node | None]:
    policy_reports = list(g.subjects(RDF.type, REPORT.PolicyReport))
    if len(policy_reports) != 1:
        return [f"{len(policy_reports)} policy reports"], None
    rules = list(g.objects(policy_reports[0], REPORT.ruleReport))
    if len(rules) != 1:
        return [f"{len(rules)} rule reports"], None
    return [], rules[0]


def rule_activation_constraint_satisfaction(expected: Graph, produced: Graph) -> list[str]:
    """Problems found by the metric; an empty list means the reports agree."""
    problems, exp_rule = _rule_report(expected)
    more, got_rule = _rule_report(produced)
    problems += [f"produced: {p}" for p in more]
    if exp_rule is None or got_rule is None:
        return problems or ["no rule report"]
    for prop in (REPORT.activationState, REPORT.attemptState, REPORT.ruleRequest, REPORT.rule):
        want, got = expected.value(exp_rule, prop), produced.value(got_rule, prop)
        if want != got:
            problems.append(f"{prop.fragment}: expected {want}, produced {got}")
    for rdf_type in COUNTED_TYPES:
        want_n = len(set(expected.subjects(RDF.type, rdf_type)))
        got_n = len(set(produced.subjects(RDF.type, rdf_type)))
        if want_n != got_n:
            problems.append(f"{rdf_type.fragment}: expected {want_n} nodes, produced {got_n}")
    produced_states: dict[Node, set[Node]] = {}
    for node in produced.subjects(RDF.type, REPORT.ConstraintReport):
        produced_states.setdefault(produced.value(node, REPORT.constraint), set()).add(
            produced.value(node, REPORT.satisfactionState)
        )
    for node in expected.subjects(RDF.type, REPORT.ConstraintReport):
        constraint = expected.value(node, REPORT.constraint)
        want = expected.value(node, REPORT.satisfactionState)
        got = produced_states.get(constraint)
        if got != {want}:
            problems.append(f"constraint {constraint}: expected {want}, produced {got}")
    state = REPORT.satisfactionState
    for rdf_type in PREMISE_TYPES:
        want_states = {expected.value(n, state) for n in expected.subjects(RDF.type, rdf_type)}
        got_states = {produced.value(n, state) for n in produced.subjects(RDF.type, rdf_type)}
        if want_states != got_states:
            problems.append(f"{rdf_type.fragment}: expected {want_states}, produced {got_states}")
    return problems
