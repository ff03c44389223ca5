"""Which terms of an agreement decide a transfer (connector.protocol.policy.decide_transfer)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector.protocol.policy import PeerFacts, decide_transfer, transfer_view
from usage_policies import templates

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PEER = PeerFacts("did:web:parts.example", self_asserted_region="CN-GD", verified_region="CN-GD",
                 region_issuer="did:web:registry.example")
#: The same peer with nothing verified: only the region its self-description states.
SELF_ASSERTED = PeerFacts("did:web:parts.example", self_asserted_region="CN-GD")


def policy(*constraints):
    return {"@id": "urn:p", "@type": "Agreement", "target": "qi",
            "permission": [{"action": "use", "constraint": list(constraints)}]}


def test_use_time_terms_are_left_to_usage_control():
    usage = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 3),
                              templates.for_duration("qi", "P30D"), templates.log_each_use("qi"))
    assert decide_transfer(usage, PEER, target="qi", now=NOW).permitted
    assert transfer_view(usage)["permission"][0]["constraint"] == []


@pytest.mark.parametrize(("constraint", "permitted"), [
    ({"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2026-01-01T00:00:00Z"}, False),
    ({"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2027-01-01T00:00:00Z"}, True),
    ({"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "CN-BJ"}, False),
    ({"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "CN"}, True),
])
def test_dates_and_regions_decide_now(constraint, permitted):
    purpose = {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "R&D"}
    decision = decide_transfer(policy(constraint, purpose), PEER, target="qi", now=NOW)
    assert decision.permitted is permitted, decision.reasons


@pytest.mark.parametrize(("peer", "permitted", "reason"), [
    (PEER, True, None),
    (SELF_ASSERTED, False, "the export destination is not known: no verified region of the recipient"),
    (PeerFacts("did:web:parts.example", self_asserted_region="CN-GD", verified_region="DE"), False,
     "export destination is 'DE', policy requires within 'CN'"),
])
def test_the_export_destination_is_the_verified_region(peer, permitted, reason):
    decision = decide_transfer(templates.no_export_outside("qi", "CN"), peer, target="qi", now=NOW)
    assert decision.permitted is permitted
    if reason is not None:
        assert reason in decision.reasons[0]


@pytest.mark.parametrize(("peer", "permitted"), [(PEER, True), (SELF_ASSERTED, False)])
def test_verified_claims_are_checked_again_at_transfer_time(peer, permitted):
    assert decide_transfer(templates.verified_region("qi", "CN"), peer, target="qi", now=NOW).permitted is permitted


# -- prices: a post-paid price is met by the period's statement, never at transfer time ----------------------------

PRICES = [templates.price_duty("0.50", "CNY"), templates.price_duty("2", "CNY", per="query"),
          templates.price_duty("10", "CNY", per="gigabyte", tiers=["100:8"]),
          templates.price_duty("99", "CNY", per="period", period="P1W")]


def priced(duty: dict) -> dict:
    return {"@id": "urn:p", "@type": "Agreement", "target": "qi", "assigner": "did:web:acme.example",
            "assignee": PEER.did, "permission": [{"action": "use", "duty": [duty]}]}


@pytest.mark.parametrize("duty", PRICES, ids=lambda d: d["constraint"][1]["rightOperand"]["@id"])
def test_a_post_paid_price_lets_the_transfer_go(duty):
    decision = decide_transfer(priced(duty), PEER, target="qi", now=NOW)
    assert decision.permitted, decision.reasons


@pytest.mark.parametrize("duty", PRICES, ids=lambda d: d["constraint"][1]["rightOperand"]["@id"])
def test_the_transfer_view_keeps_the_price_as_agreed(duty):
    from usage_policies import parse_policy, pricing

    view = transfer_view(priced(duty))
    assert view["permission"][0]["duty"] == [duty]
    assert pricing.price_terms(parse_policy(view)) == pricing.price_terms(parse_policy(priced(duty)))


@pytest.mark.parametrize("duty", PRICES, ids=lambda d: d["constraint"][1]["rightOperand"]["@id"])
def test_a_negotiations_normalisation_keeps_the_price(duty):
    from connector.protocol import contracts
    from usage_policies import parse_policy, pricing

    normalised = contracts.read_policy(priced(duty), "agreement")
    assert pricing.price_terms(parse_policy(normalised)) == pricing.price_terms(parse_policy(priced(duty)))


def test_another_price_is_other_terms_in_a_negotiation():
    from connector.protocol import contracts

    ours = contracts.read_policy(priced(templates.price_duty("0.50", "CNY")), "offer")
    cheaper = contracts.read_policy(priced(templates.price_duty("0.05", "CNY")), "request")
    assert not contracts.same_terms(ours, cheaper)
