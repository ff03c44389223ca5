"""eddsa-jcs-2022 proofs, checked byte for byte against the W3C test vector."""

from __future__ import annotations

import copy
import json

import pytest
from nacl.signing import SigningKey, VerifyKey

from connector.identity import proof
from connector.identity.multikey import ED25519_PRIV, ED25519_PUB, decode_multikey
from connector.testing import shared_dir

VECTORS = shared_dir() / "vectors" / "eddsa-jcs-2022"


@pytest.fixture(scope="module")
def vector() -> tuple[dict, SigningKey, VerifyKey]:
    pair = json.loads((VECTORS / "keyPair.json").read_text())
    signed = json.loads((VECTORS / "signedJCS.json").read_text())
    seed = decode_multikey(pair["privateKeyMultibase"], ED25519_PRIV)
    public = VerifyKey(decode_multikey(pair["publicKeyMultibase"], ED25519_PUB))
    return signed, SigningKey(seed), public


def test_w3c_vector_verifies(vector):
    signed, _, public = vector
    got = proof.verify(signed, lambda vm: public)
    assert got["proofValue"] == signed["proof"]["proofValue"]


def test_w3c_vector_signs_byte_for_byte(vector):
    signed, key, public = vector
    assert key.verify_key == public
    unsecured = {k: v for k, v in signed.items() if k != "proof"}
    p = signed["proof"]
    out = proof.sign(
        unsecured, key, verification_method=p["verificationMethod"], created=p["created"],
        proof_purpose=p["proofPurpose"],
    )
    assert out["proof"]["proofValue"] == p["proofValue"]
    assert proof.canonical(out) == proof.canonical(signed)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.__setitem__("name", "Changed"),
        lambda d: d["credentialSubject"].__setitem__("alumniOf", "Elsewhere"),
        lambda d: d["proof"].__setitem__("created", "2024-01-01T00:00:00Z"),
        lambda d: d["proof"].__setitem__("@context", ["https://www.w3.org/ns/credentials/v2"] * 2),
    ],
    ids=["field", "nested", "proof-option", "proof-context"],
)
def test_tampering_is_detected(vector, mutate):
    signed, _, public = vector
    doc = copy.deepcopy(signed)
    mutate(doc)
    with pytest.raises(proof.ProofError):
        proof.verify(doc, lambda vm: public)


def test_other_key_is_rejected(vector):
    signed, _, _ = vector
    other = SigningKey.generate().verify_key
    with pytest.raises(proof.ProofError, match="does not match"):
        proof.verify(signed, lambda vm: other)


@pytest.mark.parametrize("bad", [None, {"type": "Ed25519Signature2020"}, {"type": "DataIntegrityProof"}])
def test_malformed_proof_is_rejected(vector, bad):
    signed, _, public = vector
    doc = {**signed, "proof": bad}
    with pytest.raises(proof.ProofError):
        proof.verify(doc, lambda vm: public)


def test_custom_proof_property_round_trip():
    key = SigningKey.generate()
    doc = {"@id": "urn:a", "b": [1, 2, {"c": "ü"}]}
    signed = proof.sign(doc, key, verification_method="did:key:x#x", created="2026-01-01T00:00:00Z",
                        proof_property="https://w3id.org/tds/v1#proof")
    assert "proof" not in signed
    proof.verify(signed, lambda vm: key.verify_key, proof_property="https://w3id.org/tds/v1#proof")


def test_a_large_documents_memoised_digest_and_verification_never_pass_a_changed_document(monkeypatch):
    key = SigningKey.generate()
    document = {"id": "urn:uuid:large", "rows": [{"n": i, "text": "x" * 40} for i in range(40)]}
    signed = proof.sign(document, key, verification_method="did:key:z#k", created="2026-01-01T00:00:00Z")
    for _ in range(2):  # the second time from the memos
        proof.verify(signed, lambda vm: key.verify_key)
    for change in ({"n": 0, "text": "y" * 40}, {"text": "x" * 40, "n": 0}, {"n": 0.5, "text": "x" * 40}):
        changed = copy.deepcopy(signed)
        changed["rows"][0] = change
        if change == {"text": "x" * 40, "n": 0}:  # the same object, its keys in another order: same canonical form
            proof.verify(changed, lambda vm: key.verify_key)
            continue
        with pytest.raises(proof.ProofError, match="does not match"):
            proof.verify(changed, lambda vm: key.verify_key)
    with pytest.raises(proof.ProofError, match="does not match"):  # another key, the same document and signature
        proof.verify(signed, lambda vm: SigningKey.generate().verify_key)
    monkeypatch.setattr(proof, "_digests", proof._Memo(2))
    for i in range(5):
        proof.sign({**document, "id": f"urn:uuid:{i}"}, key, verification_method="did:key:z#k",
                   created="2026-01-01T00:00:00Z")
    assert len(proof._digests.entries) == 2


def test_multibase_is_written_as_the_base58_package_writes_it():
    import random

    import base58

    from connector.identity.multikey import decode_multibase, encode_multibase

    rng = random.Random(58)
    for length in [*range(0, 70), 64, 64, 34, 34]:
        for zeros in (0, 1, 3):
            data = b"\0" * zeros + rng.randbytes(length)
            assert encode_multibase(data) == "z" + base58.b58encode(data).decode()
            assert decode_multibase(encode_multibase(data)) == data
    assert encode_multibase(b"\xff" * 64) == "z" + base58.b58encode(b"\xff" * 64).decode()
