"""The model's action hierarchy against the ODRL 2.2 vocabulary, and policy-level defaults."""

from __future__ import annotations

import pytest
from rdflib import Graph, Namespace

from connector.testing import shared_dir
from usage_policies.model import (
    ACTION_INCLUDED_IN,
    ACTION_SYNONYMS,
    ODRL,
    Action,
    Permission,
    Policy,
    Prohibition,
    action_matches,
    canonical_action,
    inherit,
    rule_with_policy_defaults,
)

VOCAB = shared_dir() / "odrl-tests" / "vocab" / "ODRL22.ttl"
ODRL_NS = Namespace(ODRL)
SKOS = Namespace("http://www.w3.org/2004/02/skos/core#")


@pytest.fixture(scope="module")
def vocab() -> Graph:
    return Graph().parse(VOCAB, format="turtle")


def test_included_in_table_is_the_vocabulary(vocab):
    edges = vocab.subject_objects(ODRL_NS.includedIn)
    from_ttl = {canonical_action(str(s)): canonical_action(str(o)) for s, o in edges}
    assert from_ttl == ACTION_INCLUDED_IN


def test_every_action_synonym_is_an_exact_match_in_the_vocabulary(vocab):
    pairs = {(str(s), str(o)) for s, o in vocab.subject_objects(SKOS.exactMatch)}
    for name, representative in ACTION_SYNONYMS.items():
        assert (name, representative) in pairs


@pytest.mark.parametrize(
    ("rule_action", "requested", "covered"),
    [
        ("use", "read", True),
        ("use", "write", True),  # write ≡ modify ⊂ use
        ("modify", "write", True),
        ("write", "modify", True),
        ("use", "sell", False),  # sell ⊂ transfer, not use
        ("transfer", "sell", True),
        ("read", "use", False),
        ("use", "display", True),  # display ⊂ play ⊂ use
        ("read", "read", True),
        ("use", "pay", True),  # pay ≡ compensate ⊂ use
    ],
)
def test_action_hierarchy(rule_action, requested, covered):
    assert action_matches(ODRL + rule_action, ODRL + requested) is covered


@pytest.mark.parametrize(
    ("rule_target", "policy_target", "expected"),
    [(None, "urn:p", "urn:p"), ("urn:r", "urn:p", "urn:r"), (None, None, None)],
)
def test_policy_level_target_applies_to_rules_without_one(rule_target, policy_target, expected):
    policy = Policy(uid="urn:x", target=policy_target, permissions=(
        Permission(action=Action(name=ODRL + "use"), target=rule_target),))
    assert rule_with_policy_defaults(policy, policy.permissions[0]).target == expected


def test_inherit_adds_parent_rules_with_parent_defaults():
    parent = Policy(uid="urn:parent", target="urn:a", assigner="did:web:p",
                    prohibitions=(Prohibition(action=Action(name=ODRL + "distribute")),))
    child = Policy(uid="urn:child", inherit_from=("urn:parent",),
                   permissions=(Permission(action=Action(name=ODRL + "use"), target="urn:a"),))
    merged = inherit(child, {"urn:parent": parent})
    assert merged.inherit_from == ()
    assert merged.permissions == child.permissions
    assert merged.prohibitions == (
        Prohibition(action=Action(name=ODRL + "distribute"), target="urn:a", assigner="did:web:p"),)


def test_inherit_needs_every_parent():
    child = Policy(uid="urn:child", inherit_from=("urn:missing",))
    with pytest.raises(KeyError):
        inherit(child, {})


def test_left_operands_lists_every_operand_a_policy_names():
    from usage_policies.jsonld import parse_policy
    from usage_policies.model import ODRL, TDS, left_operands

    policy = parse_policy({
        "@id": "urn:p", "@type": "Set",
        "permission": [{"action": {"rdf:value": {"@id": "odrl:use"}, "refinement": [
                            {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"}]},
                        "constraint": [{"or": [
                            {"leftOperand": "tds:memberOf", "operator": "eq", "rightOperand": "urn:s"},
                            {"leftOperand": "spatial", "operator": "eq", "rightOperand": "CN"}]}],
                        "duty": [{"action": "delete", "constraint": [
                            {"leftOperand": "elapsedTime", "operator": "lteq", "rightOperand": "P1D"}]}]}],
        "prohibition": [{"action": "distribute", "constraint": [
            {"leftOperand": "tds:verifiedRegion", "operator": "isPartOf", "rightOperand": "DE"}]}],
        "obligation": [{"action": "compensate", "constraint": [
            {"leftOperand": "payAmount", "operator": "eq", "rightOperand": "1.00"}]}],
    })
    assert left_operands(policy) == {ODRL + "purpose", TDS + "memberOf", ODRL + "spatial", ODRL + "elapsedTime",
                                     TDS + "verifiedRegion", ODRL + "payAmount"}
