"""Which of a peer's verified credentials count: trusted issuer for the kind, valid status, no dispute."""

from __future__ import annotations

from datetime import timedelta

import pytest
from vc_setup import CERTIFICATION, LEGAL_ENTITY, MEMBERSHIP, NOW, REGION, SPACE, credential, party

from connector.identity import status_list, trust, vc
from connector.identity.claims import Kind, Membership, Region
from connector.identity.status_list import Bitstring, Status, StatusState
from connector.identity.trust import TrustedIssuer, TrustList

ALLIANCE = party("alliance")
REGISTRY = party("registry")
STRANGER = party("stranger")
HOLDER = party("acme")
VERIFIER = party("buyer")
CHALLENGE = "5f8c0f1e2d3c4b5a"
AT = NOW + timedelta(seconds=5)
STATUS_URL = "https://alliance.example/participants/alliance/status/1"

TRUST = TrustList({
    ALLIANCE.did: {Kind.MEMBERSHIP},
    REGISTRY.did: {Kind.LEGAL_ENTITY, Kind.REGION, Kind.CERTIFICATION},
})


def _result(*credentials, issuers=(ALLIANCE, REGISTRY, STRANGER)) -> vc.PresentationResult:
    presentation = vc.present(list(credentials), holder=HOLDER.signer, domain=VERIFIER.did, challenge=CHALLENGE,
                              now=NOW)
    return vc.verify_presentation(
        presentation, HOLDER.document, issuer_documents={p.did: p.document for p in issuers},
        expected_domain=VERIFIER.did, expected_challenge=CHALLENGE, now=AT, max_age=timedelta(minutes=5),
    )


def _all_valid(_: vc.VerifiedCredential) -> Status:
    return Status(StatusState.VALID)


def test_claims_by_trusted_issuers_count():
    result = _result(
        credential(MEMBERSHIP, ALLIANCE, HOLDER), credential(LEGAL_ENTITY, REGISTRY, HOLDER),
        credential(REGION, REGISTRY, HOLDER), credential(CERTIFICATION, REGISTRY, HOLDER),
    )
    claims = trust.verified_claims(result, TRUST, _all_valid)
    assert claims.holder == HOLDER.did
    assert [(m.value, m.issuer) for m in claims.memberships] == [(MEMBERSHIP, ALLIANCE.did)]
    assert claims.member_of(SPACE) == claims.memberships
    assert claims.member_of("urn:tds:space:other") == ()
    assert claims.legal_entity is not None and claims.legal_entity.value == LEGAL_ENTITY
    assert claims.region is not None and (claims.region.value, claims.region.issuer) == (REGION, REGISTRY.did)
    assert [c.value for c in claims.certifications] == [CERTIFICATION]
    assert claims.not_counted == ()
    assert claims.until == NOW + timedelta(days=30)


def test_an_untrusted_issuers_credential_is_shown_not_counted():
    document = credential(MEMBERSHIP, STRANGER, HOLDER)
    claims = trust.verified_claims(_result(document), TRUST, _all_valid)
    assert claims.memberships == ()
    assert [(n.credential_id, n.issuer, n.kind) for n in claims.not_counted] == [
        (document["id"], STRANGER.did, Kind.MEMBERSHIP)]
    assert claims.not_counted[0].reason == f"shown, not counted: the issuer {STRANGER.did} is not trusted"
    assert claims.until is None


def test_an_issuer_trusted_for_membership_is_not_trusted_for_region():
    result = _result(credential(MEMBERSHIP, ALLIANCE, HOLDER), credential(REGION, ALLIANCE, HOLDER))
    claims = trust.verified_claims(result, TRUST, _all_valid)
    assert [m.value for m in claims.memberships] == [MEMBERSHIP]
    assert claims.region is None
    assert [n.kind for n in claims.not_counted] == [Kind.REGION]
    assert "not trusted for TdsRegionCredential" in claims.not_counted[0].reason


def test_a_membership_counts_only_for_the_spaces_its_issuer_is_trusted_for():
    scoped = TrustList({ALLIANCE.did: TrustedIssuer(frozenset({Kind.MEMBERSHIP}), spaces=frozenset({SPACE}))})
    other = Membership(data_space="urn:tds:space:pharma")
    claims = trust.verified_claims(
        _result(credential(MEMBERSHIP, ALLIANCE, HOLDER), credential(other, ALLIANCE, HOLDER)), scoped, _all_valid
    )
    assert [m.value for m in claims.memberships] == [MEMBERSHIP]
    assert "not trusted for membership of urn:tds:space:pharma" in claims.not_counted[0].reason


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (Status(StatusState.REVOKED, "revoked in the list (index 3)"), "status revoked: revoked in the list (index 3)"),
        (Status(StatusState.SUSPENDED), "status suspended"),
        (Status.unknown("the status list is not at hand"), "status unknown: the status list is not at hand"),
    ],
    ids=["revoked", "suspended", "unknown"],
)
def test_a_credential_not_of_valid_status_does_not_count(status, reason):
    document = credential(MEMBERSHIP, ALLIANCE, HOLDER)
    claims = trust.verified_claims(_result(document), TRUST, lambda _: status)
    assert claims.memberships == ()
    assert [(n.credential_id, n.reason) for n in claims.not_counted] == [(document["id"], reason)]


def test_status_is_asked_only_about_credentials_of_trusted_issuers():
    asked = []

    def status_of(credential: vc.VerifiedCredential) -> Status:
        asked.append(credential.issuer)
        return Status(StatusState.VALID)

    trust.verified_claims(
        _result(credential(MEMBERSHIP, STRANGER, HOLDER), credential(MEMBERSHIP, ALLIANCE, HOLDER)), TRUST, status_of
    )
    assert asked == [ALLIANCE.did]


def test_a_claim_keeps_the_earliest_expiry_it_rests_on():
    short = credential(MEMBERSHIP, ALLIANCE, HOLDER, days=10)
    long = credential(MEMBERSHIP, ALLIANCE, HOLDER, days=60)
    region = credential(REGION, REGISTRY, HOLDER, days=90)
    list_until = NOW + timedelta(days=20)

    def status_of(credential: vc.VerifiedCredential) -> Status:
        return Status(StatusState.VALID, until=list_until if credential.kind is Kind.REGION else None)

    claims = trust.verified_claims(_result(long, short, region), TRUST, status_of)
    # The same membership shown twice is one claim, kept until the first of its credentials runs out.
    assert [(m.credential_id, m.until) for m in claims.memberships] == [(short["id"], NOW + timedelta(days=10))]
    # The region rests on a status answer that goes stale before the credential expires.
    assert claims.region is not None and claims.region.until == list_until
    assert claims.until == NOW + timedelta(days=10)


def test_trusted_issuers_that_disagree_on_a_region_count_for_neither():
    second = party("second-registry")
    both = TrustList({REGISTRY.did: {Kind.REGION}, second.did: {Kind.REGION}})
    result = _result(credential(REGION, REGISTRY, HOLDER), credential(Region("CN-BJ"), second, HOLDER),
                     issuers=(REGISTRY, second))
    claims = trust.verified_claims(result, both, _all_valid)
    assert claims.region is None
    assert {n.issuer for n in claims.not_counted} == {REGISTRY.did, second.did}
    assert all("disagree" in n.reason for n in claims.not_counted)


def test_trusted_issuers_that_agree_on_a_region_count_once():
    second = party("second-registry")
    both = TrustList({REGISTRY.did: {Kind.REGION}, second.did: {Kind.REGION}})
    result = _result(credential(REGION, REGISTRY, HOLDER), credential(REGION, second, HOLDER, days=5),
                     issuers=(REGISTRY, second))
    claims = trust.verified_claims(result, both, _all_valid)
    assert claims.region is not None and (claims.region.issuer, claims.region.until) == (
        second.did, NOW + timedelta(days=5))
    assert claims.not_counted == ()


def test_refused_credentials_are_reported_beside_the_claims():
    expired = credential(REGION, REGISTRY, HOLDER, now=NOW - timedelta(days=40))
    claims = trust.verified_claims(_result(expired, credential(MEMBERSHIP, ALLIANCE, HOLDER)), TRUST, _all_valid)
    assert [m.value for m in claims.memberships] == [MEMBERSHIP]
    assert [(n.credential_id, n.kind) for n in claims.not_counted] == [(expired["id"], Kind.REGION)]
    assert claims.not_counted[0].reason.startswith("refused: expired: ")


def test_only_the_status_lists_of_trusted_credentials_are_fetched():
    result = _result(
        credential(MEMBERSHIP, ALLIANCE, HOLDER, status=vc.StatusEntry(STATUS_URL, 3)),
        credential(REGION, ALLIANCE, HOLDER, status=vc.StatusEntry("https://alliance.example/status/9", 4)),
        credential(MEMBERSHIP, STRANGER, HOLDER, status=vc.StatusEntry("https://stranger.example/status", 5)),
    )
    assert trust.status_lists_to_fetch(result, TRUST) == {STATUS_URL}
    assert TRUST.issuers == {ALLIANCE.did, REGISTRY.did}


def test_revocation_end_to_end():
    bits = Bitstring()
    kept = credential(MEMBERSHIP, ALLIANCE, HOLDER, status=vc.StatusEntry(STATUS_URL, 11))
    revoked = credential(Membership(data_space="urn:tds:space:pharma"), ALLIANCE, HOLDER,
                         status=vc.StatusEntry(STATUS_URL, 12))
    bits.set(12)
    published = status_list.issue_status_list(bits, url=STATUS_URL, signer=ALLIANCE.signer, now=NOW,
                                              valid_until=NOW + timedelta(days=1), ttl=timedelta(hours=1))
    result = _result(kept, revoked)
    assert trust.status_lists_to_fetch(result, TRUST) == {STATUS_URL}
    lists = {STATUS_URL: status_list.verify_status_list(published, ALLIANCE.document, url=STATUS_URL, now=AT)}
    claims = trust.verified_claims(result, TRUST, status_list.checker(lists, now=AT))
    assert [(m.value, m.until) for m in claims.memberships] == [(MEMBERSHIP, AT + timedelta(hours=1))]
    assert [(n.credential_id, n.reason.split(":")[0]) for n in claims.not_counted] == [
        (revoked["id"], "status revoked")]
    # Without the list at hand, nothing revocable counts (fail closed).
    unknown = trust.verified_claims(result, TRUST, status_list.checker({}, now=AT))
    assert unknown.memberships == ()
    assert all(n.reason.startswith("status unknown: ") for n in unknown.not_counted)


def _held(claims, issuer, *, valid_from=NOW, days=30, holder=HOLDER) -> vc.VerifiedCredential:
    """A credential the holder keeps, as it was checked when it came in."""
    return vc.VerifiedCredential(f"urn:uuid:{issuer.did}:{claims.kind}", claims.kind, issuer.did, holder.did, claims,
                                 valid_from, valid_from + timedelta(days=days))


def test_held_credentials_count_under_the_holders_own_trust_list():
    held = [_held(REGION, REGISTRY), _held(MEMBERSHIP, ALLIANCE), _held(Region("DE"), STRANGER)]
    claims = trust.held_claims(HOLDER.did, held, TRUST, AT)
    assert claims.region is not None and (claims.region.value, claims.region.issuer) == (REGION, REGISTRY.did)
    assert [m.value for m in claims.memberships] == [MEMBERSHIP]
    assert [(n.issuer, n.reason) for n in claims.not_counted] == [
        (STRANGER.did, f"shown, not counted: the issuer {STRANGER.did} is not trusted")]


@pytest.mark.parametrize("credential_", [
    _held(REGION, REGISTRY, valid_from=NOW - timedelta(days=31)),  # ran out
    _held(REGION, REGISTRY, valid_from=AT + timedelta(days=1)),  # not yet valid
    _held(REGION, REGISTRY, holder=VERIFIER),  # about another participant
])
def test_held_credentials_count_only_while_valid_and_about_the_holder(credential_):
    assert trust.held_claims(HOLDER.did, [credential_], TRUST, AT).region is None


def test_a_held_claim_lasts_until_its_credential_runs_out():
    claims = trust.held_claims(HOLDER.did, [_held(REGION, REGISTRY, days=2)], TRUST, AT)
    assert claims.until == NOW + timedelta(days=2)
