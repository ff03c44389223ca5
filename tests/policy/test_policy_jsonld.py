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


# --- The ODRL 2.2 Information Model's own spellings ----------------------------------------------------

FOAF, VCARD = "http://xmlns.com/foaf/0.1/", "http://www.w3.org/2006/vcard/ns#"


def im_policy(**body) -> dict:
    return {"@context": ODRL_CONTEXT, "@type": "Offer", "uid": "http://example.com/policy:1", **body}


def test_a_refined_asset_collection_is_referenced_by_its_source_without_a_uid():
    # IM Example 16 (§2.5.5): "the uid property MUST NOT be used … the source property MUST be used".
    p = parse_policy(im_policy(permission=[{"assigner": "urn:org", "action": "play", "target": {
        "@type": "AssetCollection", "source": "http://example.com/media-catalogue",
        "refinement": [{"leftOperand": "runningTime", "operator": "lt",
                        "rightOperand": {"@value": "60", "@type": "xsd:integer"}}]}}]))
    target = p.permissions[0].target
    assert isinstance(target, AssetCollection)
    assert (target.uid, target.source) == (None, "http://example.com/media-catalogue")
    assert target.refinement[0].left_operand == ODRL + "runningTime"


def test_a_refined_party_collection_is_referenced_by_its_source_and_foaf_is_the_odrl_contexts_prefix():
    # IM Example 17 (§2.5.6): foaf: is declared by the ODRL context, not by the policy.
    p = parse_policy(im_policy(permission=[{"target": "urn:photos", "action": {"@id": "ex:view"}, "assignee": {
        "@type": "PartyCollection", "source": "http://example.com/user44/friends",
        "refinement": [{"leftOperand": "foaf:age", "operator": "gt",
                        "rightOperand": {"@value": "17", "@type": "xsd:integer"}}]}}]))
    assignee = p.permissions[0].assignee
    assert isinstance(assignee, PartyCollection) and assignee.uid is None
    assert assignee.source == "http://example.com/user44/friends"
    assert assignee.refinement[0].left_operand == FOAF + "age"


@pytest.mark.parametrize("collection", [
    {"@type": "PartyCollection", "refinement": [{"leftOperand": "foaf:age", "operator": "gt", "rightOperand": 17}]},
    {"@type": "PartyCollection"},
])
def test_a_collection_that_names_no_collection_is_refused_with_the_rule_it_breaks(collection):
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(im_policy(permission=[{"target": "urn:a", "action": "use", "assignee": collection}]))
    ((path, message),) = info.value.problems
    assert path == "$.permission[0].assignee"
    assert "§2.5.6" in message if "refinement" in collection else "§2.3" in message


def test_a_refined_collection_with_a_uid_is_still_read():
    # The IM says a writer MUST NOT name a refined collection by uid; the reader takes the uid as its name.
    p = parse_policy(im_policy(permission=[{"target": "urn:a", "action": "use", "assignee": {
        "@type": "PartyCollection", "uid": "urn:team",
        "refinement": [{"leftOperand": "foaf:age", "operator": "gt", "rightOperand": 17}]}}]))
    assert p.permissions[0].assignee == PartyCollection(
        uid="urn:team", refinement=p.permissions[0].assignee.refinement)


def test_a_collection_without_a_uid_is_written_back_by_its_source():
    p = parse_policy(im_policy(permission=[{"assigner": "urn:org", "action": "play", "target": {
        "@type": "AssetCollection", "source": "urn:catalogue",
        "refinement": [{"leftOperand": "runningTime", "operator": "lt", "rightOperand": 60}]}}]))
    target = to_dsp(p)["permission"][0]["target"]
    assert "@id" not in target and target["odrl:source"] == "urn:catalogue"
    assert parse_policy(to_dsp(p)) == p


def test_a_policy_level_action_is_shared_by_every_rule_without_one():
    # IM Example 28 (§2.7.1 Compact Policy) and its expansion, Example 29.
    p = parse_policy({"@context": ODRL_CONTEXT, "@type": "Policy", "uid": "http://example.com/policy:8888",
                      "target": "http://example.com/music/1999.mp3", "assigner": "http://example.com/org/sony-music",
                      "action": "play",
                      "permission": [{"assignee": "http://example.com/people/billie"},
                                     {"assignee": "http://example.com/people/murphy"}]})
    assert [(r.assignee, r.action.name if r.action else None) for r in p.permissions] == [
        ("http://example.com/people/billie", ODRL + "play"), ("http://example.com/people/murphy", ODRL + "play")]
    assert (p.target, p.assigner) == ("http://example.com/music/1999.mp3", "http://example.com/org/sony-music")


def test_several_policy_level_actions_make_one_atomic_rule_each_and_a_rule_keeps_its_own():
    p = parse_policy(im_policy(target="urn:a", action=["play", "stream"], permission=[{"assignee": "urn:x"}],
                               prohibition=[{"action": "print"}], obligation=[{"action": "compensate"}, {}]))
    assert [r.action.name for r in p.permissions if r.action] == [ODRL + "play", ODRL + "stream"]
    assert [r.action.name for r in p.prohibitions if r.action] == [ODRL + "print"]
    assert [d.action.name for d in p.obligations] == [ODRL + "compensate", ODRL + "play", ODRL + "stream"]


def test_a_duty_of_a_permission_does_not_take_the_policy_level_action():
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(im_policy(target="urn:a", action="play", permission=[{"duty": [{"target": "urn:b"}]}]))
    assert [path for path, _ in info.value.problems] == ["$.permission[0].duty[0]"]


def test_a_rule_without_an_action_anywhere_cites_the_information_model():
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(im_policy(target="urn:a", permission=[{"assignee": "urn:x"}]))
    ((path, message),) = info.value.problems
    assert path == "$.permission[0]" and "§2.6" in message and "§2.7.1" in message


def test_several_policy_level_targets_reach_the_obligations_too():
    p = parse_policy(im_policy(target=["urn:a", "urn:b"], obligation=[{"action": "delete"}]))
    assert {d.target for d in p.obligations} == {"urn:a", "urn:b"}


@pytest.mark.parametrize(("prefix", "namespace"), [
    ("foaf", FOAF), ("vcard", VCARD), ("skos", "http://www.w3.org/2004/02/skos/core#"),
    ("owl", "http://www.w3.org/2002/07/owl#"), ("dct", "http://purl.org/dc/terms/"),
    ("schema", "http://schema.org/"), ("cc", "http://creativecommons.org/ns#"),
    ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"),
])
@pytest.mark.parametrize("context", [ODRL_CONTEXT, [{"@import": ODRL_CONTEXT}], [ODRL_CONTEXT, {"ex": "urn:ex:"}]])
def test_the_prefixes_of_the_published_odrl_context_are_expanded(prefix, namespace, context):
    p = parse_policy(offer({"leftOperand": f"{prefix}:term", "operator": "eq", "rightOperand": "x"}, context))
    assert p.permissions[0].constraints[0].left_operand == namespace + "term"


def test_a_documents_own_prefix_overrides_the_odrl_contexts():
    p = parse_policy(offer({"leftOperand": "foaf:age", "operator": "eq", "rightOperand": "x"},
                           [ODRL_CONTEXT, {"foaf": "urn:own:"}]))
    assert p.permissions[0].constraints[0].left_operand == "urn:own:age"
    imported = parse_policy(offer({"leftOperand": "foaf:age", "operator": "eq", "rightOperand": "x"},
                                  {"foaf": "urn:own:", "@import": ODRL_CONTEXT}))
    assert imported.permissions[0].constraints[0].left_operand == "urn:own:age"


def test_the_odrl_contexts_prefixes_are_not_assumed_without_it():
    # JSON-LD reads a compact IRI whose prefix no context declares as an IRI of that scheme.
    p = parse_policy(offer({"leftOperand": "foaf:age", "operator": "eq", "rightOperand": "x"}, DSP_PROFILE))
    assert p.permissions[0].constraints[0].left_operand == "foaf:age"


def test_a_constraint_only_referenced_is_refused_with_the_rule_that_needs_it():
    # IM Example 15 declares the xone operands C1 and C2 in documents of their own.
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(im_policy(permission=[{"target": "urn:b", "assigner": "urn:o", "action": [{
            "rdf:value": {"@id": "odrl:reproduce"},
            "refinement": {"xone": {"@list": [{"@id": "urn:c1"}, {"@id": "urn:c2"}]}}}]}]))
    assert [path for path, _ in info.value.problems] == [
        "$.permission[0].action[0].refinement.xone.@list[0]", "$.permission[0].action[0].refinement.xone.@list[1]"]
    assert all("§2.5.2" in message for _, message in info.value.problems)


def test_an_empty_rule_is_made_of_the_shared_properties():
    p = parse_policy(im_policy(target="urn:a", action="use", permission=[{}]))
    assert len(p.permissions) == 1 and p.permissions[0].action is not None
    assert p.permissions[0].action.name == ODRL + "use"
