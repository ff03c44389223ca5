"""How the node reads the policies of offers and agreements (connector.protocol.policy.parsed_policy, memoised by
the policy's JSON text) and compares their terms (connector.protocol.contracts.same_terms)."""

from __future__ import annotations

import pytest

from connector.protocol import contracts, policy
from connector.protocol.errors import MessageError
from usage_policies import PolicySyntaxError, parse_policy

RESEARCH = {"@id": "urn:tds:policy:research", "@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"}]}]}


def test_a_policy_read_again_is_the_policy_read_before():
    assert policy.parsed_policy(RESEARCH) is policy.parsed_policy({**RESEARCH})


def test_a_memoised_policy_reads_as_the_engine_reads_it():
    reordered = {"permission": RESEARCH["permission"], "@type": "Set", "@id": "urn:tds:policy:research"}
    assert policy.parsed_policy(reordered) == parse_policy(RESEARCH)


def test_a_change_of_the_operand_registry_reads_the_policy_again(monkeypatch):
    before = policy.parsed_policy(RESEARCH)
    monkeypatch.setattr(policy, "operands_generation", lambda: -1)
    assert policy.parsed_policy(RESEARCH) is not before


def test_a_policy_longer_than_the_memo_keeps_is_read_every_time():
    long = {**RESEARCH, "@id": "urn:tds:policy:" + "x" * policy.PARSED_MAX_BYTES}
    assert policy.parsed_policy(long) is not policy.parsed_policy(long)


def test_an_invalid_policy_is_refused_every_time():
    invalid = {"@id": "urn:tds:policy:bad", "@type": "Set", "permission": "nonsense"}
    for _ in range(2):
        with pytest.raises(PolicySyntaxError):
            policy.parsed_policy(invalid)


def test_a_value_json_cannot_hold_is_read_as_it_is_not_as_its_json_text():
    nan = {"@id": "urn:tds:policy:odd", "@type": "Set", "permission": [{"action": "use", "constraint": [
        {"leftOperand": "count", "operator": "lteq", "rightOperand": float("nan")}]}]}
    with pytest.raises(PolicySyntaxError, match="not a finite number"):  # msgspec would write it as null
        policy.parsed_policy(nan)


def test_each_reading_of_a_policy_is_a_new_object():
    first = contracts.read_policy(RESEARCH, "offer")
    first["permission"].clear()
    assert contracts.read_policy(RESEARCH, "offer")["permission"]


def test_a_refused_policy_names_its_field_every_time():
    for _ in range(2):
        with pytest.raises(MessageError) as raised:
            contracts.read_policy({"@id": "urn:tds:policy:bad", "permission": "nonsense"}, "offer")
        assert raised.value.path == "offer"


TERMS = [
    ("the same terms", {"permission": [{"action": "use"}]}, {"permission": [{"action": "use"}]}, True),
    ("offer id, target and parties are not terms",
     {"@id": "urn:a", "target": "x", "assigner": "did:web:a", "permission": [{"action": "use"}]},
     {"@id": "urn:b", "target": "y", "assignee": "did:web:b", "permission": [{"action": "use"}]}, True),
    ("the order of properties does not count",
     {"permission": [{"action": "use", "constraint": [{"leftOperand": "count", "operator": "lteq",
                                                       "rightOperand": 5}]}]},
     {"permission": [{"constraint": [{"rightOperand": 5, "operator": "lteq", "leftOperand": "count"}],
                      "action": "use"}]}, True),
    ("a number written otherwise is the same number (RFC 8785)",
     {"permission": [{"action": "use", "constraint": [{"leftOperand": "count", "operator": "lteq",
                                                       "rightOperand": 5}]}]},
     {"permission": [{"action": "use", "constraint": [{"leftOperand": "count", "operator": "lteq",
                                                       "rightOperand": 5.0}]}]}, True),
    ("other rules", {"permission": [{"action": "use"}]}, {"permission": [{"action": "read"}]}, False),
    ("one more rule", {"permission": [{"action": "use"}]},
     {"permission": [{"action": "use"}], "prohibition": [{"action": "distribute"}]}, False),
    ("a null is compared canonically", {"permission": [{"action": "use", "x": None}]},
     {"permission": [{"action": "use", "x": None}]}, True),
]


@pytest.mark.parametrize(("a", "b", "same"), [c[1:] for c in TERMS], ids=[c[0] for c in TERMS])
def test_terms_are_compared_as_rfc_8785_reads_them(a, b, same):
    assert contracts.same_terms(a, b) is same
