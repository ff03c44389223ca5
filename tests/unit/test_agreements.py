"""Agreement proofs by both parties, and the offline evidence check."""

from __future__ import annotations

import copy

import pytest

from connector.identity import did as dids
from connector.identity.keys import ParticipantKeys
from connector.protocol import agreements

PROVIDER = "did:web:provider.example:participants:p"
T1 = "2026-01-01T00:00:01Z"


def _party(did: str | None = None) -> tuple[str, ParticipantKeys, dict]:
    keys = ParticipantKeys.generate()
    did = did or dids.did_key_for(bytes(keys.verify_key))
    doc = dids.did_document(did, signing_multikey=keys.signing_multikey) if did.startswith("did:web") else \
        dids.did_key_document(did)
    return did, keys, doc


def _agreement(provider: str, consumer: str) -> dict:
    return {"@id": "urn:uuid:a", "@type": "Agreement", "target": "qi", "assigner": provider, "assignee": consumer,
            "timestamp": "2026-01-01T00:00:00Z", "permission": [{"action": "use"}]}


def _signed():
    p_did, p_keys, p_doc = _party(PROVIDER)
    c_did, c_keys, c_doc = _party()
    agreement = _agreement(p_did, c_did)
    p_proof = agreements.sign(agreement, p_keys.signing, key_id=dids.signing_key_id(p_did), created=T1)
    c_proof = agreements.sign(agreement, c_keys.signing, key_id=dids.signing_key_id(c_did), created=T1)
    return agreement, p_proof, c_proof, {p_did: p_doc, c_did: c_doc}


def test_both_proofs_verify_offline():
    agreement, p_proof, c_proof, docs = _signed()
    results = agreements.check_bundle(agreements.bundle(agreement, p_proof, c_proof, docs))
    assert [(r.role, r.status) for r in results] == [("provider", "valid"), ("consumer", "valid")]
    assert agreements.PROOF_PROPERTY not in agreement  # the agreement itself is not changed by signing


def test_agreement_changed_after_signing_is_detected():
    agreement, p_proof, c_proof, docs = _signed()
    changed = copy.deepcopy(agreement)
    changed["permission"][0]["action"] = "transfer"
    results = agreements.check_bundle(agreements.bundle(changed, p_proof, c_proof, docs))
    assert [r.status for r in results] == ["invalid", "invalid"]
    assert "does not verify" in results[0].detail


def test_proof_from_another_key_is_detected():
    agreement, _, c_proof, docs = _signed()
    _, stranger, _ = _party()
    forged = agreements.sign(agreement, stranger.signing, key_id=dids.signing_key_id(PROVIDER), created=T1)
    results = agreements.check_bundle(agreements.bundle(agreement, forged, c_proof, docs))
    assert results[0].status == "invalid" and results[1].status == "valid"


def test_proof_by_someone_else_than_the_party():
    agreement, p_proof, _, docs = _signed()
    with pytest.raises(agreements.AgreementProofError, match="not by"):
        agreements.verify(agreement, p_proof, docs[PROVIDER], party=agreement["assignee"])


def test_single_signed_and_missing_documents():
    agreement, p_proof, _, docs = _signed()
    results = agreements.check_bundle(agreements.bundle(agreement, p_proof, None, {}))
    assert results[0].status == "invalid" and "no DID document" in results[0].detail
    assert results[1].status == "missing"
    results = agreements.check_bundle(agreements.bundle(agreement, p_proof, None, docs))
    assert [r.status for r in results] == ["valid", "missing"]


def test_not_a_bundle():
    with pytest.raises(agreements.AgreementProofError):
        agreements.check_bundle({"x": 1})


def test_a_bundle_is_a_json_ld_document_in_the_nodes_context():
    agreement, p_proof, c_proof, docs = _signed()
    bundle = agreements.bundle(agreement, p_proof, c_proof, docs)
    assert bundle["@context"] == ["https://w3id.org/tds/v1"] and bundle["@type"] == "AgreementEvidence"
    assert bundle["agreement"] == agreement and bundle["providerProof"] == p_proof  # kept as signed
