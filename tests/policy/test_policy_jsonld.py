"""JSON-LD in (every spelling of a term is the same term) and DSP out (schema-valid)."""

from __future__ import annotations

import pytest
from dsp_schema import dsp_errors, dsp_example

from usage_policies.errors import NotRepresentableError, PolicySyntaxError
from usage_policies.jsonld import parse_policy, to_dsp
from usage_policies.model import (
    ODRL,
    TDS,
    XSD,
    AssetCollection,
    Literal,
    LogicalOperand,
    PartyCollection,
    PolicyType,
    Ref,
)

DSP_PROFILE = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"
ODRL_CONTEXT = "http://www.w3.org/ns/odrl.jsonld"


def offer(constraint: dict, context: object = DSP_PROFILE, **rule) -> dict:
    doc = {"@id": "urn:p", "@type": "Offer", "target": "urn:a",
           "permission": [{"action": "use", "constraint": [constraint], **rule}]}
    if context is not None:
        doc["@context"] = context
    return doc


@pytest.mark.parametrize("operator", ["eq", "odrl:eq", ODRL + "eq", {"@id": "odrl:eq"}])
@pytest.mark.parametrize("context", [DSP_PROFILE, ODRL_CONTEXT, [ODRL_CONTEXT, {"ex": "http://example.org/"}],
                                     None, "https://w3id.org/dspace/2025/1/context.jsonld"])
def test_every_spelling_of_an_operator_is_the_same(operator, context):
    p = parse_policy(offer({"leftOperand": "purpose", "operator": operator, "rightOperand": "R&D"}, context))
    c = p.permissions[0].constraints[0]
    assert (c.left_operand, c.operator) == (ODRL + "purpose", ODRL + "eq")


def test_expanded_json_ld_with_full_iris():
    doc = {
        "@id": "urn:p", "@type": [ODRL + "Agreement"],
        ODRL + "target": [{"@id": "urn:a"}], ODRL + "assigner": [{"@id": "did:web:p"}],
        ODRL + "assignee": [{"@id": "did:web:c"}],
        ODRL + "permission": [{
            ODRL + "action": [{"@id": ODRL + "read"}],
            ODRL + "constraint": [{
                ODRL + "leftOperand": [{"@id": ODRL + "dateTime"}],
                ODRL + "operator": [{"@id": ODRL + "lt"}],
                ODRL + "rightOperand": [{"@value": "2026-01-01T00:00:00Z", "@type": XSD + "dateTime"}],
            }],
        }],
    }
    p = parse_policy(doc)
    assert p.type is PolicyType.AGREEMENT and p.target == "urn:a" and p.assignee == "did:web:c"
    c = p.permissions[0].constraints[0]
    assert c.right_operand == (Literal(value="2026-01-01T00:00:00Z", datatype=XSD + "dateTime"),)
    assert p.permissions[0].action is not None and p.permissions[0].action.name == ODRL + "read"


@pytest.mark.parametrize("name", ["tds:dataClass", TDS + "dataClass", "dataClass"])
def test_project_operand_spellings(name):
    p = parse_policy(offer({"leftOperand": name, "operator": "eq", "rightOperand": "core"},
                           context=[DSP_PROFILE, {"tds": TDS}]))
    assert p.permissions[0].constraints[0].left_operand == TDS + "dataClass"


def test_compact_rules_are_split_into_atomic_rules():
    p = parse_policy({"@context": ODRL_CONTEXT, "uid": "urn:p", "type": "Set",
                      "permission": [{"target": ["urn:a", "urn:b"], "action": ["read", "print"]}]})
    pairs = {(r.target, r.action.name if r.action else None) for r in p.permissions}
    assert pairs == {(t, ODRL + a) for t in ("urn:a", "urn:b") for a in ("read", "print")}


def test_several_policy_level_targets_are_pushed_into_rules():
    p = parse_policy({"@id": "urn:p", "@type": "Set", "target": ["urn:a", "urn:b"],
                      "permission": [{"action": "use"}]})
    assert p.target is None
    assert {r.target for r in p.permissions} == {"urn:a", "urn:b"}


def test_action_with_refinement_and_collections():
    p = parse_policy({"@id": "urn:p", "permission": [{
        "action": [{"rdf:value": {"@id": "odrl:print"}, "refinement": [
            {"leftOperand": "resolution", "operator": "lteq", "rightOperand": 1200}]}],
        "target": {"@id": "urn:col", "@type": "AssetCollection", "source": "urn:registry"},
    }]})
    rule = p.permissions[0]
    assert rule.action is not None and rule.action.name == ODRL + "print"
    assert rule.action.refinement[0].right_operand == (Literal(value="1200", datatype=XSD + "integer"),)
    assert rule.target == AssetCollection(uid="urn:col", source="urn:registry")


def test_logical_constraint_and_iri_right_operand():
    p = parse_policy(offer({"xone": [
        {"leftOperand": "spatial", "operator": "eq", "rightOperand": {"@id": "urn:region:eu"}},
        {"leftOperand": "spatial", "operator": "eq", "rightOperand": "CN"},
    ]}))
    c = p.permissions[0].constraints[0]
    assert c.operand is LogicalOperand.XONE
    assert c.constraints[0].right_operand == (Ref(iri="urn:region:eu"),)


def test_every_problem_is_reported_with_its_json_path():
    doc = {"@context": "https://example.org/unknown.jsonld", "@type": "Offer", "permission": [
        {"constraint": [{"leftOperand": "dateTime", "operator": "before",
                         "rightOperand": {"@value": "soon", "@type": XSD + "dateTime"}}]},
        {"action": "use", "constraint": [{"operator": "eq"}, {"and": []}]},
    ]}
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(doc)
    paths = [path for path, _ in info.value.problems]
    assert paths == [
        "$.@context", "$", "$.permission[0]", "$.permission[0].constraint[0].operator",
        "$.permission[0].constraint[0].rightOperand", "$.permission[1].constraint[0]",
        "$.permission[1].constraint[0]", "$.permission[1].constraint[1].and",
    ]
    messages = dict(info.value.problems)
    assert "unknown operator 'before'" in messages["$.permission[0].constraint[0].operator"]
    assert "no @id" in messages["$"]


@pytest.mark.parametrize("bad", [[], "policy", {"@id": "urn:p"}, {"@id": "urn:p", "@type": "Contract",
                                                                    "permission": [{"action": "use"}]}])
def test_not_a_policy(bad):
    with pytest.raises(PolicySyntaxError):
        parse_policy(bad)


@pytest.mark.parametrize(
    ("example", "pointer"),
    [("negotiation/example/contract-agreement-message-full.json", ["agreement"]),
     ("negotiation/example/contract-agreement-message.json", ["agreement"]),
     ("negotiation/example/contract-request-message_initial.json", ["offer"]),
     ("catalog/example/dataset.json", ["hasPolicy", 0])],
)
def test_dsp_examples_read_and_write_back_schema_valid(example, pointer):
    doc = dsp_example(example)
    for step in pointer:
        doc = doc[step]
    p = parse_policy(doc)
    out = to_dsp(p)
    assert parse_policy(out) == p
    if "target" in out or p.type is PolicyType.AGREEMENT:
        assert dsp_errors(out) == []


def test_written_terms_use_the_dsp_profile_or_the_odrl_prefix():
    p = parse_policy(offer({"leftOperand": ODRL + "dateTime", "operator": ODRL + "lteq",
                            "rightOperand": "2026-01-01T00:00:00Z"}, action=ODRL + "read"))
    rule = to_dsp(p)["permission"][0]
    assert rule["action"] == "odrl:read"
    assert rule["constraint"][0] == {"leftOperand": "odrl:dateTime", "operator": "lteq",
                                     "rightOperand": "2026-01-01T00:00:00Z"}
    assert dsp_errors(to_dsp(p)) == []


@pytest.mark.parametrize(
    "doc",
    [{"@id": "urn:p", "@type": "Set", "permission": [{"action": "use"}]},
     {"@id": "urn:p", "@type": "Agreement", "target": "urn:a", "permission": [{"action": "use"}]}],
)
def test_what_dsp_cannot_carry_is_refused(doc):
    with pytest.raises(NotRepresentableError):
        to_dsp(parse_policy(doc))


@pytest.mark.parametrize(
    ("assignee", "expected"),
    [({"@id": "did:web:c", "@type": "odrl:Party"}, "did:web:c"),
     ({"@id": "did:web:c"}, "did:web:c"),
     ({"@id": "urn:g", "@type": "PartyCollection"}, PartyCollection(uid="urn:g")),
     ({"@id": "urn:g", "odrl:source": "urn:registry"}, PartyCollection(uid="urn:g", source="urn:registry"))],
)
def test_a_party_object_is_a_collection_only_when_it_says_so(assignee, expected):
    p = parse_policy({"@id": "urn:p", "permission": [{"action": "use", "assignee": assignee}]})
    assert p.permissions[0].assignee == expected
