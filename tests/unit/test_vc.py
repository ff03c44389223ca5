"""Verifiable Credentials 2.0 of each kind, and presentations bound to one verifier, one challenge, one moment."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from vc_setup import (
    ALL_CLAIMS,
    MEMBERSHIP,
    NOW,
    REGION,
    credential,
    party,
    sign_presentation,
)

from connector.identity import did as dids
from connector.identity import proof, vc
from connector.identity.claims import Kind, Membership
from connector.identity.credentials import TDS_CONTEXT, VC_CONTEXT, utc_text
from connector.identity.keys import ParticipantKeys, Signer
from connector.identity.vc import Check, CredentialError, PresentationError

ALLIANCE = party("alliance")
HOLDER = party("acme")
VERIFIER = party("buyer")
CHALLENGE = "c2lnbiBtZSB3aXRoIHRoaXMgbm9uY2U"
MAX_AGE = timedelta(minutes=5)
ID = "urn:uuid:0b6e4c1e-3f0e-4ac2-9d51-1f0d4a8e7b10"


def _verify(document, issuer=ALLIANCE, *, now=NOW + timedelta(hours=1)):
    return vc.verify_credential(document, issuer.document, now=now)


def _refused(document, check: Check, *, issuer=ALLIANCE, now=NOW + timedelta(hours=1)) -> CredentialError:
    with pytest.raises(CredentialError) as caught:
        _verify(document, issuer, now=now)
    assert caught.value.check is check, str(caught.value)
    assert str(caught.value).startswith(f"{check}: ")
    return caught.value


def _resign(document, signer: Signer = ALLIANCE.signer):
    return proof.sign(document, signer.key, verification_method=signer.key_id, created=utc_text(NOW))


# ---------------------------------------------------------------------------------------------------------
# Credentials


@pytest.mark.parametrize("claims", ALL_CLAIMS, ids=[c.kind for c in ALL_CLAIMS])
def test_each_kind_round_trips(claims):
    status = vc.StatusEntry("https://alliance.example/status/1", 94567)
    document = credential(claims, ALLIANCE, HOLDER, status=status)
    got = _verify(document)
    assert got.kind is claims.kind
    assert got.claims == claims
    assert (got.issuer, got.holder) == (ALLIANCE.did, HOLDER.did)
    assert got.id == document["id"] and got.id.startswith("urn:uuid:")
    assert (got.valid_from, got.valid_until) == (NOW, NOW + timedelta(days=30))
    assert got.status == (status,)


def test_the_wire_form_is_vc_2_with_an_eddsa_jcs_2022_proof():
    document = credential(REGION, ALLIANCE, HOLDER, status=vc.StatusEntry("https://alliance.example/status/1", 7))
    assert document["@context"] == [VC_CONTEXT, TDS_CONTEXT]
    assert document["type"] == ["VerifiableCredential", "TdsRegionCredential"]
    assert document["issuer"] == ALLIANCE.did
    assert document["credentialSubject"] == {"id": HOLDER.did, "region": "CN-GD"}
    assert document["credentialStatus"] == {
        "id": "https://alliance.example/status/1#7", "type": "BitstringStatusListEntry",
        "statusPurpose": "revocation", "statusListIndex": "7",
        "statusListCredential": "https://alliance.example/status/1",
    }
    signed = document["proof"]
    assert (signed["type"], signed["cryptosuite"], signed["proofPurpose"]) == (
        "DataIntegrityProof", "eddsa-jcs-2022", "assertionMethod")
    assert signed["verificationMethod"] == f"{ALLIANCE.did}#key-1"
    # eddsa-jcs-2022 §3.3.5: the proof configuration of a document with an @context carries it.
    assert signed["@context"] == document["@context"]


def test_a_credential_is_still_valid_at_its_last_second():
    document = credential(MEMBERSHIP, ALLIANCE, HOLDER, days=1)
    assert _verify(document, now=NOW + timedelta(days=1)).claims == MEMBERSHIP


def test_an_expired_credential_is_refused():
    error = _refused(credential(MEMBERSHIP, ALLIANCE, HOLDER, days=30), Check.EXPIRED, now=NOW + timedelta(days=31))
    assert "expired at 2026-05-31T08:00:00Z" in str(error)


def test_a_credential_not_yet_valid_is_refused():
    _refused(credential(MEMBERSHIP, ALLIANCE, HOLDER), Check.NOT_YET_VALID, now=NOW - timedelta(seconds=1))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["credentialSubject"].__setitem__("dataSpace", "urn:tds:space:other"),
        lambda d: d["credentialSubject"].__setitem__("role", "admin"),
        lambda d: d["credentialSubject"].__setitem__("id", "did:web:evil.example"),
        lambda d: d.__setitem__("validUntil", "2036-01-01T00:00:00Z"),
        lambda d: d["proof"].__setitem__("created", "2026-05-01T08:00:01Z"),
    ],
    ids=["space", "role", "holder", "validity", "proof-option"],
)
def test_a_tampered_credential_is_refused_as_wrongly_signed(tamper):
    document = copy.deepcopy(credential(MEMBERSHIP, ALLIANCE, HOLDER))
    tamper(document)
    _refused(document, Check.SIGNATURE)


def test_a_credential_signed_by_a_key_not_in_the_issuers_document_is_refused():
    stranger = ParticipantKeys.generate()
    # Names the issuer's own key id but is signed with another key: the signature does not match.
    forged = _resign(credential(MEMBERSHIP, ALLIANCE, HOLDER), Signer(stranger.signing, ALLIANCE.signer.key_id))
    _refused(forged, Check.SIGNATURE)
    # Names a key the issuer's document does not list.
    unlisted = _resign(credential(MEMBERSHIP, ALLIANCE, HOLDER), Signer(stranger.signing, f"{ALLIANCE.did}#key-9"))
    assert "not listed for assertionMethod" in str(_refused(unlisted, Check.ISSUER_KEY))
    # Signed by another party's key while naming the alliance as issuer.
    other = party("mallory")
    _refused(_resign(credential(MEMBERSHIP, ALLIANCE, HOLDER), other.signer), Check.ISSUER_KEY)


def test_a_key_listed_only_for_authentication_cannot_issue():
    document = ALLIANCE.document
    document["assertionMethod"] = []
    with pytest.raises(CredentialError) as caught:
        vc.verify_credential(credential(MEMBERSHIP, ALLIANCE, HOLDER), document, now=NOW)
    assert caught.value.check is Check.ISSUER_KEY


def test_the_issuer_document_must_be_the_issuers():
    _refused(credential(MEMBERSHIP, ALLIANCE, HOLDER), Check.ISSUER_KEY, issuer=VERIFIER)


def test_an_issuer_signing_invalid_claims_is_refused_naming_the_claims():
    document = credential(REGION, ALLIANCE, HOLDER)
    document["credentialSubject"]["region"] = "Guangdong"
    error = _refused(_resign(document), Check.CLAIMS)
    assert "ISO 3166-2" in str(error)


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda d: d.__setitem__("@context", [TDS_CONTEXT, VC_CONTEXT]), Check.CONTEXT),
        (lambda d: d.__setitem__("@context", [VC_CONTEXT]), Check.CONTEXT),
        (lambda d: d.__setitem__("type", ["VerifiableCredential"]), Check.TYPE),
        (lambda d: d.__setitem__("type", ["TdsRegionCredential"]), Check.TYPE),
        (lambda d: d.__setitem__("type", ["VerifiableCredential", "TdsRegionCredential", "TdsMembershipCredential"]),
         Check.TYPE),
        (lambda d: d.pop("id"), Check.MALFORMED),
        (lambda d: d.__setitem__("issuer", "https://alliance.example"), Check.MALFORMED),
        (lambda d: d.__setitem__("credentialSubject", [d["credentialSubject"]]), Check.MALFORMED),
        (lambda d: d["credentialSubject"].__setitem__("id", "acme"), Check.MALFORMED),
        (lambda d: d.__setitem__("validFrom", "yesterday"), Check.MALFORMED),
        (lambda d: d.__setitem__("validFrom", "2026-05-01T08:00:00"), Check.MALFORMED),
        (lambda d: d.pop("validUntil"), Check.MALFORMED),
        (lambda d: d.__setitem__("validUntil", "2026-04-01T08:00:00Z"), Check.MALFORMED),
        (lambda d: d.__setitem__("credentialStatus", {"type": "StatusList2021Entry"}), Check.STATUS_ENTRY),
        (lambda d: d.__setitem__("credentialStatus", {**_entry(), "statusListIndex": 7}), Check.STATUS_ENTRY),
        (lambda d: d.__setitem__("credentialStatus", {**_entry(), "statusPurpose": "message"}), Check.STATUS_ENTRY),
        (lambda d: d.__setitem__("credentialStatus", {**_entry(), "statusSize": 2}), Check.STATUS_ENTRY),
        (lambda d: d.__setitem__("credentialStatus", {**_entry(), "statusListCredential": "file:///x"}),
         Check.STATUS_ENTRY),
        (lambda d: d["credentialSubject"].__setitem__("note", "x" * 3000), Check.TOO_LARGE),
        (lambda d: d["credentialSubject"].__setitem__("notes", ["x" * 2000] * 9), Check.TOO_LARGE),
        (lambda d: d["credentialSubject"].__setitem__("deep", _nested(20)), Check.TOO_LARGE),
    ],
    ids=["context-order", "context-tds", "type-base", "type-no-vc", "type-two-kinds", "no-id", "issuer-url",
         "subject-list", "holder-not-did", "valid-from", "no-time-zone", "no-valid-until", "until-before-from",
         "status-type", "status-index", "status-purpose", "status-size", "status-url", "long-string", "large",
         "deep"],
)
def test_malformed_credentials_are_refused_naming_the_check(change, check):
    document = credential(REGION, ALLIANCE, HOLDER)
    change(document)
    _refused(_resign(document), check)  # signed, so that the named check is the one that fails


def test_a_credential_without_a_proof_is_refused():
    document = credential(REGION, ALLIANCE, HOLDER)
    del document["proof"]
    _refused(document, Check.PROOF)


@pytest.mark.parametrize("value", [None, "text", [], 7])
def test_what_is_not_an_object_is_refused(value):
    _refused(value, Check.MALFORMED)


def test_issuing_refuses_what_no_verifier_would_accept():
    signer = ALLIANCE.signer
    with pytest.raises(ValueError, match="urn:uuid"):
        vc.issue(REGION, holder=HOLDER.did, signer=signer, credential_id="42", now=NOW, valid_until=NOW)
    with pytest.raises(ValueError, match="after validFrom"):
        vc.issue(REGION, holder=HOLDER.did, signer=signer, credential_id=ID,
                 now=NOW, valid_until=NOW)
    with pytest.raises(ValueError, match="not a DID"):
        vc.issue(REGION, holder="acme", signer=signer, credential_id=ID,
                 now=NOW, valid_until=NOW + timedelta(days=1))


def test_a_credential_valid_in_the_future_can_be_issued_now():
    document = vc.issue(
        MEMBERSHIP, holder=HOLDER.did, signer=ALLIANCE.signer, credential_id=ID,
        now=NOW, valid_from=NOW + timedelta(days=1), valid_until=NOW + timedelta(days=2),
    )
    assert document["proof"]["created"] == "2026-05-01T08:00:00Z"
    _refused(document, Check.NOT_YET_VALID)
    assert _verify(document, now=NOW + timedelta(days=1, hours=1)).claims == MEMBERSHIP


def _entry() -> dict:
    return vc.StatusEntry("https://alliance.example/status/1", 7).to_json()


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# ---------------------------------------------------------------------------------------------------------
# Presentations


def _present(credentials, *, holder=HOLDER, domain=VERIFIER.did, challenge=CHALLENGE, now=NOW):
    return vc.present(credentials, holder=holder.signer, domain=domain, challenge=challenge, now=now)


def _check(presentation, *, holder=HOLDER, issuers=(ALLIANCE,), domain=VERIFIER.did, challenge=CHALLENGE,
           now=NOW + timedelta(seconds=5)):
    return vc.verify_presentation(
        presentation, holder.document, issuer_documents={p.did: p.document for p in issuers},
        expected_domain=domain, expected_challenge=challenge, now=now, max_age=MAX_AGE,
    )


def _refused_presentation(presentation, check: Check, **kwargs) -> PresentationError:
    with pytest.raises(PresentationError) as caught:
        _check(presentation, **kwargs)
    assert caught.value.check is check, str(caught.value)
    assert str(caught.value).startswith(f"{check}: ")
    return caught.value


def test_a_presentation_of_every_kind_is_accepted():
    credentials = [credential(c, ALLIANCE, HOLDER) for c in ALL_CLAIMS]
    result = _check(_present(credentials))
    assert result.holder == HOLDER.did
    assert [c.claims for c in result.accepted] == ALL_CLAIMS
    assert result.refused == ()


def test_the_presentation_proof_binds_verifier_challenge_and_time():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)])
    assert presentation["@context"] == [VC_CONTEXT]
    assert presentation["type"] == ["VerifiablePresentation"]
    assert presentation["holder"] == HOLDER.did
    signed = presentation["proof"]
    assert signed["proofPurpose"] == "authentication"
    assert (signed["domain"], signed["challenge"], signed["created"]) == (VERIFIER.did, CHALLENGE, utc_text(NOW))
    assert signed["verificationMethod"] == HOLDER.signer.key_id
    assert signed["@context"] == presentation["@context"]
    # The options are signed: the one signer's verifier checks them like the rest of the proof.
    proof.verify(presentation, proof.key_resolver(HOLDER.document, "authentication"),
                 expected_purpose="authentication")
    for option, value in (("domain", "did:web:other.example"), ("challenge", "other"), ("created", utc_text(NOW))):
        tampered = copy.deepcopy(presentation)
        tampered["proof"][option] = value + ("" if option != "created" else "x")
        with pytest.raises(proof.ProofError):
            proof.verify(tampered, proof.key_resolver(HOLDER.document, "authentication"),
                         expected_purpose="authentication")


def test_a_presentation_replayed_to_another_verifier_is_refused():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)], domain="did:web:first.example")
    _refused_presentation(presentation, Check.DOMAIN)


def test_a_presentation_answering_another_challenge_is_refused():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)], challenge="an-earlier-challenge")
    _refused_presentation(presentation, Check.CHALLENGE)


def test_a_presentation_older_than_max_age_is_refused():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)])
    assert _check(presentation, now=NOW + MAX_AGE).accepted
    _refused_presentation(presentation, Check.TOO_OLD, now=NOW + MAX_AGE + timedelta(seconds=1))


def test_a_presentation_from_the_future_is_refused_beyond_the_clock_skew():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)], now=NOW + timedelta(minutes=2))
    _refused_presentation(presentation, Check.NOT_YET_VALID, now=NOW)
    assert _check(presentation, now=NOW + timedelta(minutes=1, seconds=30)).accepted


def test_a_presentation_with_an_expired_proof_is_refused():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)])
    presentation["proof"]["expires"] = utc_text(NOW + timedelta(seconds=1))
    _refused_presentation(presentation, Check.EXPIRED)


def test_a_tampered_presentation_is_refused_as_wrongly_signed():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)])
    presentation["verifiableCredential"].append(credential(REGION, ALLIANCE, HOLDER))
    _refused_presentation(presentation, Check.SIGNATURE)


def test_a_presentation_signed_by_someone_else_is_refused():
    mallory = party("mallory")
    # Claims to be the holder but is signed by mallory's key.
    forged = sign_presentation([credential(MEMBERSHIP, ALLIANCE, HOLDER)], mallory, domain=VERIFIER.did,
                               challenge=CHALLENGE, holder_did=HOLDER.did)
    _refused_presentation(forged, Check.HOLDER_KEY)
    # The verifier was given the document of another DID than the presentation's holder.
    _refused_presentation(_present([credential(MEMBERSHIP, ALLIANCE, HOLDER)]), Check.HOLDER_KEY, holder=mallory)


def test_a_presentation_signed_with_an_assertion_only_key_is_refused():
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)])
    document = HOLDER.document
    document["authentication"] = []
    with pytest.raises(PresentationError) as caught:
        vc.verify_presentation(presentation, document, issuer_documents={ALLIANCE.did: ALLIANCE.document},
                               expected_domain=VERIFIER.did, expected_challenge=CHALLENGE, now=NOW, max_age=MAX_AGE)
    assert caught.value.check is Check.HOLDER_KEY


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda p: p.__setitem__("type", ["VerifiableCredential"]), Check.TYPE),
        (lambda p: p.__setitem__("@context", ["https://www.w3.org/2018/credentials/v1"]), Check.CONTEXT),
        (lambda p: p.__setitem__("holder", "acme"), Check.MALFORMED),
        (lambda p: p.__setitem__("verifiableCredential", "all of them"), Check.MALFORMED),
        (lambda p: p.pop("proof"), Check.PROOF),
        (lambda p: p["proof"].__setitem__("proofPurpose", "assertionMethod"), Check.PROOF),
        (lambda p: p.__setitem__("verifiableCredential", [p["verifiableCredential"][0]] * 17), Check.TOO_MANY),
        (lambda p: p.__setitem__("padding", ["x" * 2000] * 140), Check.TOO_LARGE),
    ],
    ids=["type", "context", "holder", "credentials", "no-proof", "purpose", "too-many", "too-large"],
)
def test_malformed_presentations_are_refused_as_a_whole(change, check):
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER)])
    change(presentation)
    _refused_presentation(presentation, check)


def test_one_bad_credential_does_not_hide_the_good_ones():
    stranger = party("stranger")
    good = credential(MEMBERSHIP, ALLIANCE, HOLDER)
    expired = credential(REGION, ALLIANCE, HOLDER, now=NOW - timedelta(days=40))
    tampered = credential(Membership(data_space="urn:tds:space:x"), ALLIANCE, HOLDER)
    tampered["credentialSubject"]["role"] = "admin"
    someone_elses = credential(REGION, ALLIANCE, stranger)
    unresolved = credential(REGION, party("unknown-issuer"), HOLDER)
    presentation = sign_presentation(
        [good, expired, tampered, someone_elses, unresolved, "not a credential"], HOLDER,
        domain=VERIFIER.did, challenge=CHALLENGE,
    )
    result = _check(presentation)
    assert [c.id for c in result.accepted] == [good["id"]]
    assert [(r.index, r.check) for r in result.refused] == [
        (1, Check.EXPIRED), (2, Check.SIGNATURE), (3, Check.WRONG_HOLDER), (4, Check.ISSUER_UNRESOLVED),
        (5, Check.WRONG_HOLDER),
    ]
    expired_refusal = result.refused[0]
    assert (expired_refusal.credential_id, expired_refusal.issuer, expired_refusal.kind) == (
        expired["id"], ALLIANCE.did, Kind.REGION)
    assert expired_refusal.reason.startswith("expired: ")


def test_present_refuses_credentials_about_someone_else():
    with pytest.raises(ValueError, match="is not about"):
        _present([credential(REGION, ALLIANCE, party("stranger"))])
    with pytest.raises(ValueError, match="at most 16"):
        _present([credential(REGION, ALLIANCE, HOLDER)] * 17)
    with pytest.raises(ValueError, match="non-empty"):
        _present([], challenge="")


def test_presentation_issuers_names_the_documents_to_resolve():
    registry = party("registry")
    presentation = _present([credential(MEMBERSHIP, ALLIANCE, HOLDER), credential(REGION, registry, HOLDER),
                             credential(MEMBERSHIP, registry, HOLDER)])
    assert vc.presentation_issuers(presentation) == {ALLIANCE.did, registry.did}
    with pytest.raises(PresentationError, match="too-many-credentials"):
        vc.presentation_issuers({"verifiableCredential": [{}] * 17})


def test_an_empty_presentation_proves_only_the_holder():
    result = _check(_present([]))
    assert (result.holder, result.accepted, result.refused) == (HOLDER.did, (), ())


def test_a_did_key_issuer_and_holder():
    issuer_keys, holder_keys = ParticipantKeys.generate(), ParticipantKeys.generate()
    issuer = dids.did_key_for(bytes(issuer_keys.verify_key))
    holder = dids.did_key_for(bytes(holder_keys.verify_key))
    document = vc.issue(MEMBERSHIP, holder=holder, signer=Signer(issuer_keys.signing, dids.signing_key_id(issuer)),
                        credential_id=ID, now=NOW, valid_until=NOW + timedelta(days=1))
    presentation = vc.present([document], holder=Signer(holder_keys.signing, dids.signing_key_id(holder)),
                              domain=VERIFIER.did, challenge=CHALLENGE, now=NOW)
    result = vc.verify_presentation(
        presentation, dids.did_key_document(holder), issuer_documents={issuer: dids.did_key_document(issuer)},
        expected_domain=VERIFIER.did, expected_challenge=CHALLENGE, now=NOW, max_age=MAX_AGE,
    )
    assert [(c.issuer, c.holder, c.claims) for c in result.accepted] == [(issuer, holder, MEMBERSHIP)]
