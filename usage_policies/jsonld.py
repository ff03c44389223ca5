"""ODRL policies as JSON-LD, in and out.

``parse_policy`` reads a policy written as compacted JSON-LD with the W3C ODRL context, with the DSP
2025-1 contexts (``odrl-profile.jsonld``, shipped in ``contexts/``, or ``context.jsonld``, which imports
it; neither is ever fetched),
with inline prefix/term definitions, with full IRIs (expanded JSON-LD included), or embedded in a DSP
message without a context of its own. All spellings of a term normalise to one IRI: ``eq``,
``odrl:eq`` and ``http://www.w3.org/ns/odrl/2/eq`` are the same operator. A bare term that no context
defines is read in the ODRL namespace, as the ODRL context and the DSP examples intend (``dateTime``,
``spatial``, ``read``). With the ODRL context, its prefixes (``foaf:``, ``vcard:``, ``skos:`` …) are
expanded too (``contexts/odrl-prefixes.jsonld``).

Compact policies are split into atomic rules (ODRL 2.2 IM §2.7, §2.7.1): a rule with several actions,
targets or assignees becomes one rule per combination, and a rule without an action takes the policy's
(a policy-level ``action`` is shared by its permissions, prohibitions and obligations). A collection is
named by ``uid`` or referenced by ``source`` (one with a refinement by ``source``, IM §2.5.5, §2.5.6).
Every problem found is collected with its JSON path and raised at once as :class:`PolicySyntaxError`.

``to_dsp`` writes the policy as DSP 2025-1 ODRL JSON (``negotiation/contract-schema.json``): terms the
DSP profile context defines are written bare (``use``, ``eq``), other ODRL terms as ``odrl:…``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import msgspec

from usage_policies.errors import NotRepresentableError, PolicySyntaxError, Problem
from usage_policies.model import (
    ODRL,
    RDF,
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
    PolicyType,
    Prohibition,
    Ref,
)
from usage_policies.operands import get_operand, get_operator
from usage_policies.values import ValueKind, coerce

DSP_CONTEXT = "https://w3id.org/dspace/2025/1/context.jsonld"
DSP_ODRL_PROFILE = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"
ODRL_CONTEXTS = frozenset({
    "http://www.w3.org/ns/odrl.jsonld", "https://www.w3.org/ns/odrl.jsonld",
    "http://www.w3.org/ns/odrl/2/", "https://www.w3.org/ns/odrl/2/",
})
DSPACE = "https://w3id.org/dspace/2025/1/"

JsonObject = dict[str, Any]


def _load_context(name: str) -> JsonObject:
    text = (Path(__file__).parent / "contexts" / name).read_text(encoding="utf-8")
    context: JsonObject = json.loads(text)["@context"]
    return context


_PROFILE = _load_context("dsp-odrl-profile.jsonld")

# The prefixes the W3C ODRL 2.2 context declares (``foaf:``, ``vcard:``, ``skos:`` …; see contexts/).
ODRL_CONTEXT_PREFIXES: dict[str, str] = {
    term: iri for term, iri in _load_context("odrl-prefixes.jsonld").items()
    if isinstance(iri, str) and iri.endswith(("/", "#"))
}

# Prefixes every reader knows, whatever the document declares.
BASE_PREFIXES: dict[str, str] = {
    "odrl": ODRL, "tds": TDS, "xsd": XSD, "rdf": RDF, "dspace": DSPACE,
    "dct": "http://purl.org/dc/terms/", "dcat": "http://www.w3.org/ns/dcat#",
}

# Terms the DSP ODRL profile defines, term → IRI (``odrl:eq`` expanded).
DSP_TERMS: dict[str, str] = {}
for _term, _definition in _PROFILE.items():
    _iri = _definition if isinstance(_definition, str) else _definition.get("@id", "")
    if ":" in _iri and not _iri.startswith("http"):
        _prefix, _, _rest = _iri.partition(":")
        _iri = BASE_PREFIXES.get(_prefix, _prefix + ":") + _rest
    if _iri.startswith(ODRL):
        DSP_TERMS[_term] = _iri
_DSP_SHORT = {iri: term for term, iri in DSP_TERMS.items()}

# Project operands may be written bare too (``dataClass``), as the ODRL ones are. The node's context defines
# them as terms, so a JSON-LD processor compacting with it writes them bare (a price's terms included: read as
# odrl: names they would silently drop the price's basis, period, rounding and tiers).
PROJECT_TERMS = {name: TDS + name for name in (
    "dataClass", "exportDestination", "verifiedRegion", "memberOf", "legalEntityId", "certificationLevel",
    "meteredPer", "billingPeriod", "rounding", "priceTiers")}

_KEY_ALIASES = {
    "uid": "@id", "type": "@type", "@id": "@id", "@type": "@type", "timestamp": DSPACE + "timestamp",
}


class _Reader:
    """Expands the terms of one document, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.prefixes = dict(BASE_PREFIXES)
        self.terms: dict[str, str] = {}
        self.problems: list[Problem] = []

    # -- contexts --
    def context(self, ctx: Any, path: str) -> None:
        for i, item in enumerate(ctx if isinstance(ctx, list) else [ctx]):
            where = f"{path}[{i}]" if isinstance(ctx, list) else path
            if item is None:
                continue
            if isinstance(item, str):
                if item in ODRL_CONTEXTS:
                    self.prefixes.update(ODRL_CONTEXT_PREFIXES)
                elif item not in (DSP_CONTEXT, DSP_ODRL_PROFILE):
                    self.problems.append((where, f"unknown remote context {item!r} (not fetched)"))
            elif isinstance(item, dict):
                imported = item.get("@import")  # applied first: the object's own definitions override it
                if isinstance(imported, str) and imported in ODRL_CONTEXTS:
                    self.prefixes.update(ODRL_CONTEXT_PREFIXES)
                elif imported is not None and imported != DSP_ODRL_PROFILE:
                    self.problems.append((f"{where}.@import", f"unknown remote context {imported!r}"))
                for key, value in item.items():
                    if key.startswith("@"):
                        continue
                    iri = value if isinstance(value, str) else (value or {}).get("@id") if isinstance(
                        value, dict) else None
                    if not isinstance(iri, str):
                        continue
                    if iri.endswith(("/", "#", ":")) and ":" not in key:
                        self.prefixes[key] = iri
                    else:
                        self.terms[key] = self.iri(iri, vocab=False)
            else:
                self.problems.append((where, "a context must be a string, an object or a list of them"))

    # -- terms --
    def iri(self, value: str, *, vocab: bool) -> str:
        """Expand *value*; ``vocab`` reads a bare word as an ODRL term (actions, operators, operands)."""
        if value in self.terms:
            return self.terms[value]
        if ":" in value:
            prefix, _, rest = value.partition(":")
            if prefix in self.prefixes and not rest.startswith("//"):
                return self.prefixes[prefix] + rest
            return value
        if vocab:
            return DSP_TERMS.get(value) or PROJECT_TERMS.get(value) or ODRL + value
        return value

    def key(self, key: str) -> str:
        alias = _KEY_ALIASES.get(key)
        if alias is not None:
            return alias
        return self.iri(key, vocab=True)


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict) and ("@list" in value or "@set" in value):
        inner = value.get("@list", value.get("@set"))
        return list(inner) if isinstance(inner, list) else [inner]
    return list(value) if isinstance(value, list) else [value]


def _node_id(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("@id", "uid", "@value"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return None


class _Parser:
    def __init__(self) -> None:
        self.r = _Reader()
        self.policy_actions: list[Action] = []  # policy-level actions, shared by its rules (§2.7.1)

    @property
    def problems(self) -> list[Problem]:
        return self.r.problems

    def problem(self, path: str, message: str) -> None:
        self.r.problems.append((path, message))

    def normalise(self, obj: Any, path: str) -> JsonObject:
        """Keys expanded to IRIs (or ``@id``/``@type``); a nested ``@context`` is applied first."""
        if not isinstance(obj, dict):
            self.problem(path, f"expected an object, got {type(obj).__name__}")
            return {}
        if "@context" in obj:
            self.r.context(obj["@context"], f"{path}.@context")
        out: JsonObject = {}
        for key, value in obj.items():
            if key == "@context":
                continue
            full = self.r.key(key)
            out[full] = (key, value)
        return out

    def one_iri(self, value: Any, path: str, *, vocab: bool) -> str | None:
        items = _values(value)
        if len(items) != 1:
            self.problem(path, "expected exactly one value")
            return None
        ident = _node_id(items[0])
        if ident is None:
            self.problem(path, "expected an IRI")
            return None
        return self.r.iri(ident, vocab=vocab)

    def many_iris(self, value: Any, path: str, *, vocab: bool) -> list[str]:
        out = []
        for i, item in enumerate(_values(value)):
            ident = _node_id(item)
            if ident is None:
                self.problem(f"{path}[{i}]", "expected an IRI")
            else:
                out.append(self.r.iri(ident, vocab=vocab))
        return out

    # -- parties and assets --
    def party_or_asset(self, value: Any, path: str, party: bool) -> list[Any]:
        out: list[Any] = []
        items = _values(value)
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if isinstance(value, list) else path
            node = self.normalise(item, where) if isinstance(item, dict) else {}
            source = node.get(ODRL + "source")
            refinement = node.get(ODRL + "refinement")
            types = [
                self.r.iri(t, vocab=True) for t in _values(node.get("@type", (None, None))[1])
                if isinstance(t, str)
            ]
            collection = ODRL + ("PartyCollection" if party else "AssetCollection")
            if source or refinement or collection in types:
                # ODRL 2.2 IM §2.2, §2.3: a collection, named by its uid or referenced by its source; anything
                # else is the IRI of one party or asset. With a refinement, "the uid property MUST NOT be used
                # to identify the collection. Instead, the source property MUST be used" (§2.5.5, §2.5.6); a
                # uid there is still read as the collection's name.
                uid = self.uid_of(node)
                src = self.one_iri(source[1], f"{where}.{source[0]}", vocab=False) if source else None
                if uid is None and src is None:
                    self.problem(where, "a collection with a refinement is referenced by its source (ODRL 2.2 IM "
                                 "§2.5.5, §2.5.6: the source property MUST be used)" if refinement else
                                 "a collection needs a uid or a source to say which collection it is "
                                 "(ODRL 2.2 IM §2.2, §2.3)")
                    continue
                cls = PartyCollection if party else AssetCollection
                out.append(cls(
                    uid=uid,
                    source=src,
                    refinement=self.constraints(refinement[1], f"{where}.{refinement[0]}") if refinement
                    else (),
                ))
            else:
                ident = _node_id(item)
                if ident is None:
                    self.problem(where, "expected an IRI")
                else:
                    out.append(self.r.iri(ident, vocab=False))
        return out

    # -- constraints --
    def constraints(self, value: Any, path: str) -> tuple[AnyConstraint, ...]:
        items = _values(value)
        if isinstance(value, dict) and ("@list" in value or "@set" in value):
            path, value = f"{path}.{'@list' if '@list' in value else '@set'}", items
        return tuple(
            c for i, item in enumerate(items)
            if (c := self.constraint(item, f"{path}[{i}]" if isinstance(value, list) else path)) is not None
        )

    def constraint(self, obj: Any, path: str) -> AnyConstraint | None:
        node = self.normalise(obj, path)
        if not node:
            return None
        uid_raw = node.get("@id")
        uid = self.r.iri(str(uid_raw[1]), vocab=False) if uid_raw and isinstance(uid_raw[1], str) else None
        if uid is not None and set(node) == {"@id"}:
            # A reference to a constraint declared elsewhere (IM Example 15 declares them in other documents).
            self.problem(path, f"constraint {uid} is only referenced, not in this policy: a logical constraint's "
                         "operands are existing Constraint instances that MUST be evaluated (ODRL 2.2 IM §2.5.2), "
                         "and no other document is fetched")
            return None
        logical = [op for op in LogicalOperand if op.value in node]
        if logical:
            if len(logical) > 1:
                self.problem(path, "a logical constraint has exactly one of and, or, xone, andSequence")
            op = logical[0]
            key, value = node[op.value]
            children = self.constraints(value, f"{path}.{key}")
            if not _values(value):
                self.problem(f"{path}.{key}", "a logical constraint needs at least one constraint")
            return LogicalConstraint(operand=op, constraints=children, uid=uid)
        left = node.get(ODRL + "leftOperand")
        operator = node.get(ODRL + "operator")
        right = node.get(ODRL + "rightOperand")
        reference = node.get(ODRL + "rightOperandReference")
        ok = True
        if left is None:
            self.problem(path, "constraint has no leftOperand")
            ok = False
        if operator is None:
            self.problem(path, "constraint has no operator")
            ok = False
        if (right is None) == (reference is None):
            self.problem(path, "constraint needs exactly one of rightOperand, rightOperandReference")
            ok = False
        if not ok or left is None or operator is None:
            return None
        left_iri = self.one_iri(left[1], f"{path}.{left[0]}", vocab=True)
        op_iri = self.one_iri(operator[1], f"{path}.{operator[0]}", vocab=True)
        if op_iri is not None and get_operator(op_iri) is None:
            self.problem(f"{path}.{operator[0]}", f"unknown operator {operator[1]!r}")
        data_type = node.get(ODRL + "dataType")
        data_type_iri = (
            self.one_iri(data_type[1], f"{path}.{data_type[0]}", vocab=False) if data_type else None
        )
        unit = node.get(ODRL + "unit")
        status = node.get(ODRL + "status")
        terms: tuple[Literal | Ref, ...] = ()
        if right is not None:
            terms = self.right_operand(right[1], f"{path}.{right[0]}", data_type_iri, left_iri)
        if left_iri is None or op_iri is None:
            return None
        status_terms = self.right_operand(status[1], f"{path}.{status[0]}", None, None) if status else ()
        return Constraint(
            left_operand=left_iri,
            operator=op_iri,
            right_operand=terms,
            right_operand_reference=self.one_iri(reference[1], f"{path}.{reference[0]}", vocab=False)
            if reference else None,
            data_type=data_type_iri,
            unit=self.one_iri(unit[1], f"{path}.{unit[0]}", vocab=False) if unit else None,
            status=status_terms[0] if status_terms and isinstance(status_terms[0], Literal) else None,
            uid=uid,
        )

    def right_operand(
        self, value: Any, path: str, data_type: str | None, left: str | None
    ) -> tuple[Literal | Ref, ...]:
        out: list[Literal | Ref] = []
        items = _values(value)
        if not items:
            self.problem(path, "empty rightOperand")
        operand = get_operand(left) if left else None
        kind = operand.kind if operand else ValueKind.STRING
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if isinstance(value, list) else path
            term: Literal | Ref
            if isinstance(item, bool):
                term = Literal(value="true" if item else "false", datatype=XSD + "boolean")
            elif isinstance(item, int):
                term = Literal(value=str(item), datatype=XSD + "integer")
            elif isinstance(item, float):
                term = Literal(value=repr(item), datatype=XSD + "decimal")
            elif isinstance(item, str):
                term = Literal(value=item)
            elif isinstance(item, dict) and "@value" in item:
                raw_type = item.get("@type")
                dt = self.r.iri(raw_type, vocab=False) if isinstance(raw_type, str) else None
                term = Literal(value=str(item["@value"]), datatype=dt)
            elif isinstance(item, dict) and isinstance(item.get("@id"), str):
                term = Ref(iri=self.r.iri(item["@id"], vocab=False))
            else:
                self.problem(where, "rightOperand must be a string, number, {@value} or {@id}")
                continue
            if isinstance(term, Literal) and (term.datatype or data_type or kind is not ValueKind.STRING):
                try:
                    coerce(term.value, term.datatype or data_type, kind)
                except ValueError as exc:
                    if term.datatype or data_type:
                        self.problem(where, str(exc))
                    # An untyped value the operand cannot read is reported at evaluation time.
            out.append(term)
        return tuple(out)

    # -- actions, duties, rules --
    def actions(self, value: Any, path: str) -> list[Action]:
        out = []
        for i, item in enumerate(_values(value)):
            where = f"{path}[{i}]" if isinstance(value, list) else path
            if isinstance(item, dict) and not set(item) <= {"@id", "uid"}:
                node = self.normalise(item, where)
                name = node.get(RDF + "value") or node.get(ODRL + "value") or node.get("@id")
                if name is None:
                    self.problem(where, "an action object needs rdf:value")
                    continue
                iri = self.one_iri(name[1], f"{where}.{name[0]}", vocab=True)
                refinement = node.get(ODRL + "refinement")
                if iri is not None:
                    out.append(Action(
                        name=iri,
                        refinement=self.constraints(refinement[1], f"{where}.{refinement[0]}")
                        if refinement else (),
                    ))
            else:
                ident = _node_id(item)
                if ident is None:
                    self.problem(where, "expected an action")
                else:
                    out.append(Action(name=self.r.iri(ident, vocab=True)))
        return out

    def rule_parts(
        self, node: JsonObject, path: str, *, top: bool = False
    ) -> tuple[list[Action], list[Any], list[Any], list[Any]]:
        """A rule's actions, targets, assignees and assigners (several of each when the rule is compact).

        *top* marks a rule of the policy itself (a permission, prohibition or obligation): one without an
        action takes the policy-level actions (ODRL 2.2 IM §2.7.1 Compact Policy).
        """
        action = node.get(ODRL + "action")
        actions = self.actions(action[1], f"{path}.{action[0]}") if action else []
        if not action and top and self.policy_actions:
            actions = list(self.policy_actions)
        elif not action:
            self.problem(path, "rule has no action (ODRL 2.2 IM §2.6: a Rule MUST have one action"
                         + (", and the policy declares none for its rules to share, §2.7.1)" if top else ")"))

        def field(name: str, party: bool) -> list[Any]:
            entry = node.get(ODRL + name)
            return self.party_or_asset(entry[1], f"{path}.{entry[0]}", party) if entry else [None]

        return actions, field("target", False), field("assignee", True), field("assigner", True)

    def sub(self, node: JsonObject, name: str, path: str) -> list[tuple[Any, str]]:
        entry = node.get(ODRL + name)
        if entry is None:
            return []
        key, value = entry
        return [(item, f"{path}.{key}[{i}]" if isinstance(value, list) else f"{path}.{key}")
                for i, item in enumerate(_values(value))]

    def uid_of(self, node: JsonObject) -> str | None:
        entry = node.get("@id")
        return self.r.iri(entry[1], vocab=False) if entry and isinstance(entry[1], str) else None

    def party_iri(self, node: JsonObject, name: str, path: str) -> str | None:
        entry = node.get(ODRL + name)
        return self.one_iri(entry[1], f"{path}.{entry[0]}", vocab=False) if entry else None

    def duties(self, node: JsonObject, name: str, path: str) -> list[Duty]:
        out: list[Duty] = []
        for item, where in self.sub(node, name, path):
            d = self.normalise(item, where)
            if not isinstance(item, dict):  # reported; an empty object is a rule made of shared properties
                continue
            actions, targets, assignees, assigners = self.rule_parts(d, where, top=name == "obligation")
            constraint = d.get(ODRL + "constraint")
            constraints = self.constraints(constraint[1], f"{where}.{constraint[0]}") if constraint else ()
            consequences = tuple(self.duties(d, "consequence", where))
            for a, t, ae, ar in product(actions, targets, assignees, assigners):
                out.append(Duty(
                    action=a, uid=self.uid_of(d), target=t, assignee=ae, assigner=ar,
                    constraints=constraints, consequences=consequences,
                    informed_party=self.party_iri(d, "informedParty", where),
                    compensated_party=self.party_iri(d, "compensatedParty", where),
                ))
        return out

    def rules(self, node: JsonObject, name: str, path: str) -> list[Permission | Prohibition]:
        out: list[Permission | Prohibition] = []
        for item, where in self.sub(node, name, path):
            r = self.normalise(item, where)
            if not isinstance(item, dict):  # reported; an empty object is a rule made of shared properties
                continue
            actions, targets, assignees, assigners = self.rule_parts(r, where, top=True)
            constraint = r.get(ODRL + "constraint")
            constraints = self.constraints(constraint[1], f"{where}.{constraint[0]}") if constraint else ()
            uid = self.uid_of(r)
            # Each atomic rule carries the same duties (§2.7: "include all other … properties, in each Rule").
            duties = tuple(self.duties(r, "duty" if name == "permission" else "remedy", where))
            for a, t, ae, ar in product(actions, targets, assignees, assigners):
                if name == "permission":
                    out.append(Permission(
                        action=a, uid=uid, target=t, assignee=ae, assigner=ar, constraints=constraints,
                        duties=duties,
                    ))
                else:
                    out.append(Prohibition(
                        action=a, uid=uid, target=t, assignee=ae, assigner=ar, constraints=constraints,
                        remedies=duties,
                    ))
        return out

    def policy(self, obj: Any) -> Policy | None:
        node = self.normalise(obj, "$")
        if not node:
            return None
        uid = self.uid_of(node)
        if uid is None:
            self.problem("$", "policy has no @id (uid)")
        policy_type = PolicyType.SET
        type_entry = node.get("@type")
        if type_entry is not None:
            names = [self.r.iri(t, vocab=True) for t in _values(type_entry[1]) if isinstance(t, str)]
            known = [PolicyType(n) for n in names if n in {t.value for t in PolicyType}]
            if known:
                policy_type = known[0]
            elif ODRL + "Policy" not in names:
                self.problem(f"$.{type_entry[0]}", f"not an ODRL policy type: {type_entry[1]!r}")
        conflict = None
        conflict_entry = node.get(ODRL + "conflict")
        if conflict_entry is not None:
            value = self.one_iri(conflict_entry[1], f"$.{conflict_entry[0]}", vocab=True)
            try:
                conflict = ConflictStrategy(value)
            except ValueError:
                self.problem(f"$.{conflict_entry[0]}", "conflict must be perm, prohibit or invalid")
        profile = node.get(ODRL + "profile")
        inherit = node.get(ODRL + "inheritFrom")
        targets = self.party_or_asset(node[ODRL + "target"][1], "$.target", False) \
            if ODRL + "target" in node else [None]
        assignees = self.party_or_asset(node[ODRL + "assignee"][1], "$.assignee", True) \
            if ODRL + "assignee" in node else [None]
        assigners = self.party_or_asset(node[ODRL + "assigner"][1], "$.assigner", True) \
            if ODRL + "assigner" in node else [None]
        shared_action = node.get(ODRL + "action")  # ODRL 2.2 IM §2.7.1: shared by the rules without their own
        if shared_action is not None:
            self.policy_actions = self.actions(shared_action[1], f"$.{shared_action[0]}")
        permissions = [r for r in self.rules(node, "permission", "$") if isinstance(r, Permission)]
        prohibitions = [r for r in self.rules(node, "prohibition", "$") if isinstance(r, Prohibition)]
        obligations = self.duties(node, "obligation", "$")
        if not (permissions or prohibitions or obligations) and not self.problems:
            self.problem("$", "a policy needs at least one permission, prohibition or obligation")
        timestamp = node.get(DSPACE + "timestamp")
        # Several policy-level targets/parties (ODRL 2.2 §2.7.1) are pushed into the rules.
        target = _push_down(targets, "target", permissions, prohibitions, obligations)
        assignee = _push_down(assignees, "assignee", permissions, prohibitions, obligations)
        assigner = _push_down(assigners, "assigner", permissions, prohibitions, obligations)
        return Policy(
            uid=uid or "",
            type=policy_type,
            profile=tuple(self.many_iris(profile[1], "$.profile", vocab=False)) if profile else (),
            assigner=assigner,
            assignee=assignee,
            target=target,
            inherit_from=tuple(self.many_iris(inherit[1], "$.inheritFrom", vocab=False)) if inherit else (),
            conflict=conflict,
            permissions=tuple(permissions),
            prohibitions=tuple(prohibitions),
            obligations=tuple(obligations),
            timestamp=str(timestamp[1]) if timestamp else None,
        )


def _push_down(values: list[Any], field: str, *groups: list[Any]) -> Any:
    if len(values) <= 1:
        return values[0] if values else None
    for rules in groups:
        split = [
            msgspec.structs.replace(r, **{field: v}) if getattr(r, field) is None else r
            for r in rules for v in (values if getattr(r, field) is None else values[:1])
        ]
        rules[:] = split
    return None


def parse_policy(obj: dict[str, Any]) -> Policy:
    """Read an ODRL policy from JSON-LD (see the module docstring); raise PolicySyntaxError on problems."""
    parser = _Parser()
    policy = parser.policy(obj)
    if parser.problems or policy is None:
        raise PolicySyntaxError(parser.problems or [("$", "not a policy")])
    return policy


# --- Out: DSP 2025-1 ------------------------------------------------------------------------------------


def compact(iri: str) -> str:
    """The DSP spelling of an IRI: a DSP profile term, else ``odrl:``/``tds:`` compact IRI, else itself."""
    short = _DSP_SHORT.get(iri)
    if short is not None:
        return short
    if iri.startswith(ODRL):
        return "odrl:" + iri[len(ODRL):]
    return iri


def _operator_out(iri: str) -> str:
    if iri.startswith(ODRL):
        return iri[len(ODRL):]  # the DSP schema's operator enum is bare names
    return iri


def _term_out(term: Literal | Ref) -> Any:
    if isinstance(term, Ref):
        return {"@id": term.iri}
    if term.datatype is None:
        return term.value
    return {"@value": term.value, "@type": term.datatype}


def constraint_to_json(c: AnyConstraint) -> JsonObject:
    if isinstance(c, LogicalConstraint):
        out: JsonObject = {} if c.uid is None else {"@id": c.uid}
        out[c.operand.value[len(ODRL):]] = [constraint_to_json(ch) for ch in c.constraints]
        return out
    out = {} if c.uid is None else {"@id": c.uid}
    out["leftOperand"] = compact(c.left_operand)
    out["operator"] = _operator_out(c.operator)
    if c.right_operand_reference is not None:
        out["rightOperandReference"] = c.right_operand_reference
    else:
        values = [_term_out(t) for t in c.right_operand]
        out["rightOperand"] = values[0] if len(values) == 1 else values
    if c.data_type is not None:
        out["dataType"] = c.data_type
    if c.unit is not None:
        # The DSP context defines no "unit" term, so a JSON-LD processor drops a bare "unit" (and with it a
        # price's currency); the compact IRI survives expansion and compaction (ODRL 2.2 vocabulary, unit).
        out["odrl:unit"] = c.unit
    if c.status is not None:
        out["status"] = _term_out(c.status)
    return out


def _party_out(value: Any) -> Any:
    if isinstance(value, PartyCollection | AssetCollection):
        out: JsonObject = {} if value.uid is None else {"@id": value.uid}
        out["@type"] = "odrl:PartyCollection" if isinstance(value, PartyCollection) else "odrl:AssetCollection"
        if value.source is not None:
            out["odrl:source"] = value.source
        if value.refinement:
            out["odrl:refinement"] = [constraint_to_json(c) for c in value.refinement]
        return out
    return value


def _action_out(action: Action) -> Any:
    if not action.refinement:
        return compact(action.name)
    return {"rdf:value": {"@id": compact(action.name)},
            "odrl:refinement": [constraint_to_json(c) for c in action.refinement]}


def _rule_out(rule: Permission | Prohibition | Duty, path: str) -> JsonObject:
    if rule.action is None:
        raise NotRepresentableError(f"{path}: a DSP rule needs an action")
    out: JsonObject = {} if rule.uid is None else {"@id": rule.uid}
    out["action"] = _action_out(rule.action)
    for name in ("target", "assignee", "assigner"):
        value = getattr(rule, name)
        if value is not None:
            out[name] = _party_out(value)
    if rule.constraints:
        out["constraint"] = [constraint_to_json(c) for c in rule.constraints]
    if isinstance(rule, Permission) and rule.duties:
        out["duty"] = [_rule_out(d, f"{path}.duty[{i}]") for i, d in enumerate(rule.duties)]
    if isinstance(rule, Prohibition) and rule.remedies:
        out["odrl:remedy"] = [_rule_out(d, f"{path}.remedy[{i}]") for i, d in enumerate(rule.remedies)]
    if isinstance(rule, Duty):
        if rule.consequences:
            out["odrl:consequence"] = [
                _rule_out(d, f"{path}.consequence[{i}]") for i, d in enumerate(rule.consequences)
            ]
        if rule.informed_party is not None:
            out["odrl:informedParty"] = rule.informed_party
        if rule.compensated_party is not None:
            out["odrl:compensatedParty"] = rule.compensated_party
    return out


def to_dsp(policy: Policy) -> JsonObject:
    """The policy as DSP 2025-1 ODRL JSON (``Offer`` or ``Agreement``), for a message's body.

    Raises :class:`NotRepresentableError` for what DSP cannot carry: an ``odrl:Set``, a rule without an
    action, an ``Agreement`` without target, assigner or assignee.
    """
    if policy.type is PolicyType.SET:
        raise NotRepresentableError("DSP carries Offers and Agreements only, not an odrl:Set")
    kind = "Offer" if policy.type is PolicyType.OFFER else "Agreement"
    out: JsonObject = {"@id": policy.uid, "@type": kind}
    if policy.profile:
        out["profile"] = list(policy.profile) if len(policy.profile) > 1 else policy.profile[0]
    if policy.type is PolicyType.AGREEMENT:
        missing = [n for n in ("target", "assigner", "assignee") if not isinstance(getattr(policy, n), str)]
        if missing:
            raise NotRepresentableError(f"a DSP Agreement needs {', '.join(missing)} as IRIs")
    for name in ("target", "assigner", "assignee"):
        value = getattr(policy, name)
        if value is not None:
            out[name] = _party_out(value)
    if policy.timestamp is not None:
        out["timestamp"] = policy.timestamp
    if policy.inherit_from:
        out["odrl:inheritFrom"] = list(policy.inherit_from)
    if policy.conflict is not None:
        out["odrl:conflict"] = {"@id": "odrl:" + policy.conflict.value[len(ODRL):]}
    groups: tuple[tuple[str, tuple[Permission | Prohibition | Duty, ...]], ...] = (
        ("permission", policy.permissions), ("prohibition", policy.prohibitions),
        ("obligation", policy.obligations),
    )
    for name, rules in groups:
        if rules:
            out[name] = [_rule_out(r, f"$.{name}[{i}]") for i, r in enumerate(rules)]
    return out


def iter_problems(obj: dict[str, Any]) -> Iterator[Problem]:
    """Every problem ``parse_policy`` would raise, without raising (for validation endpoints)."""
    parser = _Parser()
    parser.policy(obj)
    yield from parser.problems
