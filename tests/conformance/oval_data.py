"""Read the OVAL monitoring suite (Turtle policy + CSV event log) into the engine's model and a usage log.

Test helper only: the engine never imports rdflib. Each CSV row becomes a performed use in a
hash-chained :mod:`usage_policies.ledger` chain; the row's party, target and feature values travel beside
the chain, keyed by the entry's ``use_id`` (the log names the agreement, not the party or asset).
CSV cells carry no datatype, so they are read as OVAL reads them: integers and decimals as numbers,
ISO 8601 dates and date-times as date-times, anything else as a string or IRI.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from rdflib import RDF, BNode, Graph, Namespace, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.collection import Collection
from rdflib.term import Node

from connector.testing import shared_dir
from usage_policies import ledger
from usage_policies.evaluate import Request
from usage_policies.model import (
    Action,
    AnyConstraint,
    Asset,
    AssetCollection,
    Constraint,
    Duty,
    Literal,
    LogicalConstraint,
    LogicalOperand,
    Party,
    PartyCollection,
    Permission,
    Policy,
    PolicyType,
    Prohibition,
    Ref,
)
from usage_policies.monitor import Event, events_from_log
from usage_policies.values import parse_datetime

SUITE = shared_dir() / "odrl-tests" / "oval-monitoring-suite"
ODRL = Namespace("http://www.w3.org/ns/odrl/2/")


def cases() -> list[dict]:
    return json.loads((SUITE / "index.json").read_text())


# --- Policy (Turtle) -----------------------------------------------------------------------------------


def _uid(node: Node) -> str | None:
    return str(node) if isinstance(node, URIRef) else None


def _id(node: Node) -> str:
    return str(node) if isinstance(node, URIRef) else f"_:{node}"


def _objects(g: Graph, node: Node, prop: URIRef) -> list[Node]:
    return sorted(g.objects(node, prop), key=str)


def _term(node: Node) -> Literal | Ref:
    if isinstance(node, RdfLiteral):
        return Literal(value=str(node), datatype=str(node.datatype) if node.datatype else None)
    return Ref(iri=_id(node))


def _members(g: Graph, value: Node) -> list[Node]:
    """The operands of a logical constraint: an RDF list ``( … )`` or repeated objects."""
    if (value, RDF.first, None) in g:
        return list(Collection(g, value))
    return [value]


def _constraint(g: Graph, node: Node) -> AnyConstraint:
    for operand in LogicalOperand:
        values = _objects(g, node, URIRef(operand.value))
        if values:
            children = [m for v in values for m in _members(g, v)]
            return LogicalConstraint(operand=operand, constraints=tuple(_constraint(g, c) for c in children),
                                     uid=_uid(node))
    unit, data_type = g.value(node, ODRL.unit), g.value(node, ODRL.dataType)
    return Constraint(
        left_operand=_id(g.value(node, ODRL.leftOperand)),
        operator=_id(g.value(node, ODRL.operator)),
        right_operand=tuple(_term(t) for t in _objects(g, node, ODRL.rightOperand)),
        unit=str(unit) if unit is not None else None,
        data_type=str(data_type) if data_type is not None else None,
        uid=_uid(node),
    )


def _constraints(g: Graph, node: Node, prop: URIRef) -> tuple[AnyConstraint, ...]:
    return tuple(_constraint(g, c) for c in _objects(g, node, prop))


def _action(g: Graph, node: Node) -> Action | None:
    value = g.value(node, ODRL.action)
    if value is None:
        return None
    if isinstance(value, BNode):  # [ rdf:value odrl:print ; odrl:refinement … ]
        return Action(name=_id(g.value(value, RDF.value)), refinement=_constraints(g, value, ODRL.refinement))
    return Action(name=_id(value))


def _collection(g: Graph, node: Node, cls: type[PartyCollection] | type[AssetCollection]) -> object:
    # A blank node with a source or a refinement is a collection even without its rdf:type (ODRL 2.2 IM §2.2,
    # §2.3): a blank node has no uid, its source says which collection it is (§2.5.5, §2.5.6). An IRI
    # without a type is a single party or asset.
    if isinstance(node, URIRef) and (node, RDF.type, None) not in g:
        return str(node)
    source = g.value(node, ODRL.source)
    return cls(uid=_uid(node), source=_id(source) if source is not None else None,
               refinement=_constraints(g, node, ODRL.refinement))


def _party(g: Graph, node: Node) -> Party | None:
    value = g.value(node, ODRL.assignee)
    return _collection(g, value, PartyCollection) if value is not None else None  # type: ignore[return-value]


def _asset(g: Graph, node: Node) -> Asset | None:
    value = g.value(node, ODRL.target)
    return _collection(g, value, AssetCollection) if value is not None else None  # type: ignore[return-value]


def _duty(g: Graph, node: Node) -> Duty:
    return Duty(
        uid=_uid(node), action=_action(g, node) or Action(name=str(ODRL.use)),
        target=_asset(g, node), assignee=_party(g, node),
        constraints=_constraints(g, node, ODRL.constraint),
        consequences=tuple(_duty(g, c) for c in _objects(g, node, ODRL.consequence)),
    )


def _rule(g: Graph, node: Node, policy_action: Action | None) -> dict:
    # ODRL 2.2 §2.7.1: a policy-level action applies to every rule that does not name its own.
    return {
        "uid": _uid(node), "action": _action(g, node) or policy_action, "target": _asset(g, node),
        "assignee": _party(g, node), "constraints": _constraints(g, node, ODRL.constraint),
    }


def policy_from(path: Path) -> Policy:
    g = Graph().parse(path, format="turtle")
    subjects = {s for p in (ODRL.permission, ODRL.prohibition, ODRL.obligation) for s in g.subjects(p, None)}
    assert len(subjects) == 1, f"expected one policy in {path.name}, found {len(subjects)}"
    node = subjects.pop()
    policy_type = next((t for t in PolicyType if (node, RDF.type, URIRef(t.value)) in g), PolicyType.SET)
    action = _action(g, node)
    return Policy(
        uid=_id(node), type=policy_type, assignee=_party(g, node), target=_asset(g, node),
        permissions=tuple(
            Permission(**_rule(g, r, action), duties=tuple(_duty(g, d) for d in _objects(g, r, ODRL.duty)))
            for r in _objects(g, node, ODRL.permission)
        ),
        prohibitions=tuple(
            Prohibition(**_rule(g, r, action), remedies=tuple(_duty(g, d) for d in _objects(g, r, ODRL.remedy)))
            for r in _objects(g, node, ODRL.prohibition)
        ),
        obligations=tuple(_duty(g, d) for d in _objects(g, node, ODRL.obligation)),
    )


# --- Event log (CSV) -> usage log chain -> events ------------------------------------------------------

_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?\d*\.\d+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")
TIME, PARTY, ACTION, ASSET = (str(ODRL[n]) for n in ("dateTime", "Party", "Action", "Asset"))
PAY_AMOUNT = str(ODRL.payAmount)


def cell(text: str) -> object:
    """A CSV cell as a typed value (OVAL's reading of untyped values)."""
    if _INTEGER.match(text):
        return int(text)
    if _DECIMAL.match(text):
        return Decimal(text)
    if _DATE.match(text):
        return parse_datetime(text)
    return text


def _request(row: dict[str, str]) -> Request:
    context: dict[str, object] = {}
    pay_amount = None
    for header, text in row.items():
        if header in (TIME, PARTY, ACTION, ASSET) or not text:
            continue
        # "<Action|Party IRI> <leftOperand>" is a feature of the action or the party; the engine resolves
        # every left operand from the request, so both land in the same place.
        feature = header.split(" ")[-1]
        assert feature not in context, f"{feature} given twice in one row"
        if feature == PAY_AMOUNT:
            pay_amount = Decimal(text)
        context[feature] = cell(text)
    return Request(party=row[PARTY] or None, action=row[ACTION], target=row[ASSET] or None,
                   pay_amount=pay_amount, context=context)


def usage_log(policy_uid: str, path: Path) -> tuple[list[ledger.Entry], dict[str, Request]]:
    """The case's event log as one agreement's usage-log chain (in time order), and each use's request."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # Rows are mostly newest first, not always (invalid/consequence5): order by time, stably.
    timed = sorted(((parse_datetime(r[TIME]), n, r) for n, r in enumerate(rows)), key=lambda t: (t[0], t[1]))
    entries: list[ledger.Entry] = []
    requests: dict[str, Request] = {}
    head: ledger.Entry | None = None
    for at, n, row in timed:
        use_id = f"row-{n + 2}"  # the CSV line
        requests[use_id] = _request(row)
        head = ledger.append(head, agreement=policy_uid, kind="use", use_id=use_id, at=_text(at),
                             action=row[ACTION], application=row[PARTY], decision="permit")
        entries.append(head)
    return entries, requests


def _text(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def events(entries: list[ledger.Entry], requests: dict[str, Request]) -> list[Event]:
    return events_from_log(entries, lambda entry: requests[entry.use_id])
