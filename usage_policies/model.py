"""ODRL 2.2 Information Model as frozen structs.

Every term is held as a full IRI (``http://www.w3.org/ns/odrl/2/eq``, never ``eq`` or ``odrl:eq``):
:mod:`usage_policies.jsonld` normalises on the way in and compacts on the way out, so that the
evaluator compares one spelling only.

Compact policies (ODRL 2.2 IM §2.7, §2.7.1) are split into atomic rules when read: a rule with several
actions, targets or assignees becomes several rules with the same ``uid``. A policy-level ``action`` is
copied into every permission, prohibition and obligation that names none. Policy-level ``target``,
``assigner`` and ``assignee`` stay on the :class:`Policy` (the DSP ``Agreement`` needs them there) and
apply to every rule that does not set its own (:func:`rule_with_policy_defaults`), obligations included.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import TypeAlias, TypeVar

import msgspec

ODRL = "http://www.w3.org/ns/odrl/2/"
TDS = "https://w3id.org/tds/v1#"
XSD = "http://www.w3.org/2001/XMLSchema#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
CC = "http://creativecommons.org/ns#"


class PolicyType(enum.Enum):
    """ODRL 2.2 §2.1 policy subclasses."""

    SET = ODRL + "Set"
    OFFER = ODRL + "Offer"
    AGREEMENT = ODRL + "Agreement"


class ConflictStrategy(enum.Enum):
    """ODRL 2.2 §2.8: how a permission and a prohibition that both apply are resolved."""

    PERM = ODRL + "perm"
    PROHIBIT = ODRL + "prohibit"
    INVALID = ODRL + "invalid"


class LogicalOperand(enum.Enum):
    """ODRL 2.2 §2.6.2 logical constraint operands."""

    AND = ODRL + "and"
    OR = ODRL + "or"
    XONE = ODRL + "xone"
    AND_SEQUENCE = ODRL + "andSequence"


class Literal(msgspec.Struct, frozen=True):
    """A typed literal (``{"@value": …, "@type": …}``); ``datatype`` None means a plain string."""

    value: str
    datatype: str | None = None


class Ref(msgspec.Struct, frozen=True):
    """An IRI used as a value (``{"@id": …}``)."""

    iri: str


Term: TypeAlias = Literal | Ref


class Constraint(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 §2.5.1 atomic constraint (also used as a refinement, §2.5.2)."""

    left_operand: str
    operator: str
    right_operand: tuple[Term, ...] = ()
    right_operand_reference: str | None = None
    data_type: str | None = None
    unit: str | None = None
    status: Literal | None = None
    uid: str | None = None


class LogicalConstraint(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 §2.6.2: ``or``, ``xone``, ``and``, ``andSequence`` over constraints."""

    operand: LogicalOperand
    constraints: tuple[AnyConstraint, ...]
    uid: str | None = None


AnyConstraint: TypeAlias = "Constraint | LogicalConstraint"


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 §2.4 action, with optional refinements."""

    name: str
    refinement: tuple[AnyConstraint, ...] = ()


class PartyCollection(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 IM §2.3: a group of parties, named by ``uid`` or referenced by ``source``.

    A party is a member when it is the collection or ``odrl:partOf`` it (§2.3.2), *and* meets every
    refinement (§2.5.6: "all of the Constraints/Logical Constraints referenced by the refinement property
    MUST be satisfied"). A collection with a refinement is referenced by ``source``, not ``uid`` (§2.5.6).
    """

    uid: str | None = None
    source: str | None = None
    refinement: tuple[AnyConstraint, ...] = ()


class AssetCollection(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 IM §2.2: a group of assets, named by ``uid`` or referenced by ``source``.

    An asset is a member when it is the collection or ``odrl:partOf`` it (§2.2.2), *and* meets every
    refinement (§2.5.5). A collection with a refinement is referenced by ``source``, not ``uid`` (§2.5.5).
    """

    uid: str | None = None
    source: str | None = None
    refinement: tuple[AnyConstraint, ...] = ()


def collection_ids(collection: PartyCollection | AssetCollection) -> tuple[str, ...]:
    """The IRIs a collection is known by (its ``uid`` and its ``source``): membership is ``partOf`` either."""
    return tuple(i for i in (collection.uid, collection.source) if i is not None)


Party: TypeAlias = str | PartyCollection
Asset: TypeAlias = str | AssetCollection


class Duty(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 §2.6.4 duty (also obligation, remedy, consequence)."""

    action: Action
    uid: str | None = None
    target: Asset | None = None
    assignee: Party | None = None
    assigner: Party | None = None
    constraints: tuple[AnyConstraint, ...] = ()
    consequences: tuple[Duty, ...] = ()
    informed_party: str | None = None
    compensated_party: str | None = None


class Permission(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 §2.6.2 permission. ``action`` None only where the source omitted it (FORCE policy-1)."""

    action: Action | None = None
    uid: str | None = None
    target: Asset | None = None
    assignee: Party | None = None
    assigner: Party | None = None
    constraints: tuple[AnyConstraint, ...] = ()
    duties: tuple[Duty, ...] = ()


class Prohibition(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 §2.6.3 prohibition, with remedies."""

    action: Action | None = None
    uid: str | None = None
    target: Asset | None = None
    assignee: Party | None = None
    assigner: Party | None = None
    constraints: tuple[AnyConstraint, ...] = ()
    remedies: tuple[Duty, ...] = ()


Rule: TypeAlias = "Permission | Prohibition | Duty"
RuleT = TypeVar("RuleT", bound="Permission | Prohibition | Duty")


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """ODRL 2.2 §2.1 policy."""

    uid: str
    type: PolicyType = PolicyType.SET
    profile: tuple[str, ...] = ()
    assigner: Party | None = None
    assignee: Party | None = None
    target: Asset | None = None
    inherit_from: tuple[str, ...] = ()
    conflict: ConflictStrategy | None = None
    permissions: tuple[Permission, ...] = ()
    prohibitions: tuple[Prohibition, ...] = ()
    obligations: tuple[Duty, ...] = ()
    timestamp: str | None = None

    def rules(self) -> Iterator[Permission | Prohibition]:
        yield from self.permissions
        yield from self.prohibitions


def rule_with_policy_defaults(policy: Policy, rule: RuleT) -> RuleT:
    """ODRL 2.2 IM §2.7.1: policy-level target/assigner/assignee apply to rules that do not set them.

    *rule* is a permission, a prohibition or a policy obligation (§2.7.1 names "all its Rules"; the
    duties of a permission take their parties from the permission instead, §2.6.5).
    """
    changes: dict[str, Asset | Party] = {}
    if rule.target is None and policy.target is not None:
        changes["target"] = policy.target
    if rule.assignee is None and policy.assignee is not None:
        changes["assignee"] = policy.assignee
    if rule.assigner is None and policy.assigner is not None:
        changes["assigner"] = policy.assigner
    return msgspec.structs.replace(rule, **changes) if changes else rule


def duty_key(duty: Duty) -> str:
    """A content key of *duty*: ``ni:///sha-256;…`` (RFC 6920) of its canonical form.

    The canonical form is the duty as this engine holds it (every term a full IRI, so every spelling of
    the same duty has the same key), with absent and empty properties left out, as JSON with sorted keys
    and no whitespace. Two duties that say the same thing have the same key, wherever they stand.
    """
    canonical = json.dumps(_without_empty(msgspec.to_builtins(duty)), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return "ni:///sha-256;" + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _without_empty(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def iter_constraints(constraints: tuple[AnyConstraint, ...]) -> Iterator[Constraint]:
    """Every atomic constraint, depth first."""
    for c in constraints:
        if isinstance(c, LogicalConstraint):
            yield from iter_constraints(c.constraints)
        else:
            yield c


def left_operands(policy: Policy) -> frozenset[str]:
    """The IRI of every left operand *policy* names: in its rules' constraints, their actions' and their
    parties' and assets' refinements, and their duties, remedies and consequences, policy obligations
    included."""
    found: set[str] = set()

    def add(constraints: tuple[AnyConstraint, ...]) -> None:
        found.update(c.left_operand for c in iter_constraints(constraints))

    def add_rule(rule: Permission | Prohibition | Duty) -> None:
        add(rule.constraints)
        if rule.action is not None:
            add(rule.action.refinement)
        for party_or_asset in (rule.target, rule.assignee, rule.assigner):
            if isinstance(party_or_asset, PartyCollection | AssetCollection):
                add(party_or_asset.refinement)
        for consequence in rule.consequences if isinstance(rule, Duty) else ():
            add_rule(consequence)

    for rule in policy.rules():
        add_rule(rule)
        for duty in rule.duties if isinstance(rule, Permission) else rule.remedies:
            add_rule(duty)
    for duty in policy.obligations:
        add_rule(duty)
    return frozenset(found)


# --- Action hierarchy ---------------------------------------------------------------------------------
# From the ODRL 2.2 vocabulary (vocab/ODRL22.ttl): ``odrl:includedIn`` edges, and ``skos:exactMatch``
# synonyms folded to one name (write ≡ modify, copy ≡ reproduce, pay ≡ compensate, …). A test checks this
# table against the Turtle file, so it cannot drift.
ACTION_INCLUDED_IN: dict[str, str] = {
    **{ODRL + a: ODRL + "use" for a in (
        "acceptTracking", "aggregate", "annotate", "anonymize", "archive", "attribute", "compensate",
        "concurrentUse", "delete", "derive", "digitize", "distribute", "ensureExclusivity", "execute",
        "grantUse", "include", "index", "inform", "install", "modify", "move", "nextPolicy",
        "obtainConsent", "play", "present", "print", "read", "reproduce", "reviewPolicy", "stream",
        "synchronize", "textToSpeech", "transform", "translate", "uninstall", "watermark",
    )},
    **{CC + a: ODRL + "use" for a in (
        "Attribution", "CommercialUse", "DerivativeWorks", "Distribution", "Notice", "Reproduction",
        "ShareAlike", "Sharing", "SourceCode",
    )},
    ODRL + "display": ODRL + "play",
    ODRL + "extract": ODRL + "reproduce",
    ODRL + "give": ODRL + "transfer",
    ODRL + "sell": ODRL + "transfer",
}

ACTION_SYNONYMS: dict[str, str] = {
    ODRL + "append": ODRL + "modify",
    ODRL + "appendTo": ODRL + "modify",
    ODRL + "write": ODRL + "modify",
    ODRL + "writeTo": ODRL + "modify",
    ODRL + "copy": ODRL + "reproduce",
    ODRL + "export": ODRL + "transform",
    ODRL + "license": ODRL + "grantUse",
    ODRL + "pay": ODRL + "compensate",
    ODRL + "attachPolicy": CC + "Notice",
    ODRL + "attachSource": CC + "SourceCode",
    ODRL + "commercialize": CC + "CommercialUse",
    ODRL + "share": CC + "Sharing",
    ODRL + "shareAlike": CC + "ShareAlike",
}


def canonical_action(name: str) -> str:
    """The representative of *name*'s ``skos:exactMatch`` class."""
    return ACTION_SYNONYMS.get(name, name)


def action_ancestors(name: str) -> frozenset[str]:
    """*name* and every action that includes it (ODRL 2.2 vocabulary §, ``includedIn``, transitive)."""
    seen: list[str] = []
    current: str | None = canonical_action(name)
    while current is not None and current not in seen:
        seen.append(current)
        parent = ACTION_INCLUDED_IN.get(current)
        current = canonical_action(parent) if parent is not None else None
    return frozenset(seen)


def action_matches(rule_action: str, requested: str) -> bool:
    """True when a rule about *rule_action* covers a request for *requested* (read ⊂ use, sell ⊄ use)."""
    return canonical_action(rule_action) in action_ancestors(requested)


def inherit(child: Policy, parents: Mapping[str, Policy]) -> Policy:
    """ODRL 2.2 §2.9: *child* with the rules of every policy it ``inheritFrom``s, looked up in *parents*.

    Parent rules get the parent's policy-level target/assigner/assignee first (§2.7.1), so they keep
    their meaning inside the child. A parent missing from *parents* raises ``KeyError``: evaluating a
    policy without the rules it inherits would be wrong, and fetching it is the caller's I/O. The
    child's conflict strategy wins; without one, the first parent's applies.
    """
    permissions: list[Permission | Prohibition] = list(child.permissions)
    prohibitions: list[Permission | Prohibition] = list(child.prohibitions)
    obligations: list[Duty] = []
    conflict = child.conflict
    for uid in child.inherit_from:
        parent = inherit(parents[uid], parents) if parents[uid].inherit_from else parents[uid]
        permissions += [rule_with_policy_defaults(parent, r) for r in parent.permissions]
        prohibitions += [rule_with_policy_defaults(parent, r) for r in parent.prohibitions]
        obligations += [rule_with_policy_defaults(parent, d) for d in parent.obligations]
        conflict = conflict or parent.conflict
    return msgspec.structs.replace(
        child,
        inherit_from=(),
        permissions=tuple(p for p in permissions if isinstance(p, Permission)),
        prohibitions=tuple(p for p in prohibitions if isinstance(p, Prohibition)),
        obligations=(*child.obligations, *obligations),
        conflict=conflict,
    )
