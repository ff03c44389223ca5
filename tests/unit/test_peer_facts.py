"""What a participant knows of a peer (connector.protocol.policy.PeerFacts): what the peer asserts of itself and
what trusted issuers' credentials verify, kept apart, and how each reaches the policy engine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector.identity.trust import NotCounted, PeerClaims
from connector.protocol.export_control import RecipientRegion
from connector.protocol.policy import PeerFacts, decide_access
from connector.testing import REGISTRY_DID, peer_claims
from usage_policies import templates

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PEER = "did:web:parts.example"
SPACE = "urn:tds:space:auto-parts"
CREDIT_CODE = "91350100M000100Y43"
LEI = "5493001KJTIIGC8Y1R12"
STATED = PeerFacts(PEER, self_asserted_region="CN-GD", self_asserted_legal_name="Parts Co", self_described=True)


def test_the_claims_that_count_become_the_verified_facts():
    claims = peer_claims(PEER, region="CN-GD", spaces=[SPACE, (SPACE, "operator")], legal_name="Pearl River Parts",
                         credit_code=CREDIT_CODE, lei=LEI, levels=["2", "3"])
    facts = STATED.with_claims(claims)
    assert (facts.verified_region, facts.region_issuer) == ("CN-GD", REGISTRY_DID)
    assert facts.memberships == ((SPACE, "member"), (SPACE, "operator"))
    assert (facts.verified_legal_name, facts.legal_entity_ids) == ("Pearl River Parts", (CREDIT_CODE, LEI))
    assert facts.certification_levels == ("2", "3")
    # the self-asserted facts stay as they were, beside the verified ones
    assert (facts.self_asserted_region, facts.self_asserted_legal_name, facts.self_described) == (
        "CN-GD", "Parts Co", True)


@pytest.mark.parametrize("claims", [
    None,  # the peer presented nothing
    PeerClaims(holder=PEER, not_counted=(NotCounted("urn:x", "did:web:other", None, "the issuer is not trusted"),)),
    peer_claims("did:web:someone-else.example", region="CN-GD"),  # claims about another peer
], ids=["none", "nothing-counted", "another-holder"])
def test_without_counted_claims_nothing_is_verified(claims):
    facts = STATED.with_claims(claims)
    assert facts == STATED
    assert facts.recipient_region == RecipientRegion(verified=None, issuer=None, self_asserted="CN-GD")


def test_fresh_claims_replace_earlier_ones():
    earlier = STATED.with_claims(peer_claims(PEER, region="CN-GD", spaces=[SPACE]))
    assert earlier.with_claims(peer_claims(PEER, region="CN-BJ")).memberships == ()
    assert earlier.with_claims(None).verified_region is None


def test_the_engine_gets_the_stated_region_for_spatial_and_only_verified_values_for_the_rest():
    request = STATED.with_claims(peer_claims(PEER, region="CN-BJ", spaces=[SPACE, (SPACE, "operator")])).request(
        target="qi", data_class="core")
    assert (request.region, request.verified_region) == ("CN-GD", "CN-BJ")
    assert request.member_of == (SPACE,)  # one space, whatever the roles
    assert (request.party, request.recipient, request.target, request.data_class) == (PEER, PEER, "qi", "core")


@pytest.mark.parametrize(("policy", "facts", "permitted"), [
    (templates.member_of("qi", SPACE), STATED.with_claims(peer_claims(PEER, spaces=[SPACE])), True),
    (templates.member_of("qi", SPACE), STATED, False),
    (templates.verified_region("qi", "CN"), STATED.with_claims(peer_claims(PEER, region="CN-GD")), True),
    (templates.verified_region("qi", "CN"), STATED, False),  # CN-GD is only stated
    (templates.verified_region("qi", "CN"), STATED.with_claims(peer_claims(PEER, region="DE")), False),
    (templates.region("qi", "CN"), STATED, True),  # odrl:spatial reads what the peer states
    (templates.no_export_outside("qi", "CN"), STATED, False),  # the export destination is verified only
    (templates.no_export_outside("qi", "CN"), STATED.with_claims(peer_claims(PEER, region="CN-GD")), True),
])
def test_access_decisions_read_verified_claims(policy, facts, permitted):
    assert decide_access(policy, facts, target="qi", now=NOW).permitted is permitted


def test_a_denial_names_the_missing_verified_claim():
    decision = decide_access(templates.verified_region("qi", "CN"), STATED, target="qi", now=NOW)
    assert "no verified region: no credential from an issuer trusted for regions" in decision.reasons[0]
