from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from connector.identity import did as dids
from connector.identity.multikey import ED25519_PUB, X25519_PUB, encode_multikey


@pytest.mark.parametrize(
    ("public_url", "name", "expected"),
    [
        ("http://127.0.0.1:8181", "acme", "did:web:127.0.0.1%3A8181:participants:acme"),
        ("https://tds.example.com", "acme", "did:web:tds.example.com:participants:acme"),
        ("https://tds.example.com:8443/", "sme-1", "did:web:tds.example.com%3A8443:participants:sme-1"),
        ("https://example.com/dataspace", "a", "did:web:example.com:dataspace:participants:a"),
    ],
)
def test_did_web_for_public_url(public_url, name, expected):
    assert dids.did_web_for(public_url, name) == expected


@pytest.mark.parametrize(
    ("did", "dev", "url"),
    [
        ("did:web:127.0.0.1%3A8181:participants:acme", True, "http://127.0.0.1:8181/participants/acme/did.json"),
        ("did:web:127.0.0.1%3A8181:participants:acme", False, "https://127.0.0.1:8181/participants/acme/did.json"),
        ("did:web:localhost%3A9000:participants:x", True, "http://localhost:9000/participants/x/did.json"),
        ("did:web:tds.example.com:participants:acme", True, "https://tds.example.com/participants/acme/did.json"),
        ("did:web:example.com", False, "https://example.com/.well-known/did.json"),
    ],
)
def test_did_web_url_uses_http_only_for_loopback_in_dev_mode(did, dev, url):
    assert dids.did_web_url(did, dev_mode=dev) == url


@pytest.mark.parametrize(
    "bad", ["did:key:z6Mk", "did:web:", "did:web:a::b", "did:web:evil.com%2Fx", "did:web:a.com:..:x",
            "did:web:user%40evil.com", "did:web:%5B1.2.3.4%5D", "did:web:%5B%3A%3A%3A%5D"]
)
def test_malformed_did_web_is_refused(bad):
    with pytest.raises(dids.DidError):
        dids.did_web_url(bad, dev_mode=True)


def test_did_key_round_trip_and_document():
    key = SigningKey.generate().verify_key
    did = dids.did_key_for(bytes(key))
    assert did.startswith("did:key:z6Mk")
    assert dids.did_key_public_key(did) == bytes(key)
    document = dids.did_key_document(did)
    key_id = dids.signing_key_id(did)
    assert key_id == f"{did}#{did[len('did:key:'):]}"
    assert dids.verification_key(document, key_id, "authentication") == bytes(key)


def _web_document() -> tuple[str, bytes, dict]:
    did = "did:web:example.com:participants:a"
    key = bytes(SigningKey.generate().verify_key)
    doc = dids.did_document(did, signing_multikey=encode_multikey(ED25519_PUB, key),
                            agreement_multikey=encode_multikey(X25519_PUB, b"\x01" * 32))
    return did, key, doc


def test_verification_key_checks_relationship_and_owner():
    did, key, doc = _web_document()
    assert dids.verification_key(doc, f"{did}#key-1", "assertionMethod") == key
    with pytest.raises(dids.DidError, match="not listed"):
        dids.verification_key(doc, f"{did}#key-2", "authentication")
    with pytest.raises(dids.DidError, match="does not belong"):
        dids.verification_key(doc, "did:web:other.com#key-1", "authentication")
    with pytest.raises(dids.DidError):
        dids.verification_key(doc, f"{did}#nope", "authentication")
    assert dids.agreement_key(doc) == encode_multikey(X25519_PUB, b"\x01" * 32)


def test_split_did_url_needs_fragment():
    assert dids.split_did_url("did:web:a#key-1") == ("did:web:a", "key-1")
    for bad in ("did:web:a", "https://a#k", "did:web:a#"):
        with pytest.raises(dids.DidError):
            dids.split_did_url(bad)


def test_a_did_document_listing_dsp_services_names_the_dsp_context_after_its_own():
    did = "did:web:tds.example.com:participants:acme"
    service = {"id": f"{did}#dsp", "type": "DataService", "serviceEndpoint": "https://tds.example.com/x"}
    document = dids.did_document(did, signing_multikey="z6Mk", services=[service])
    # DataService is a term of the DSP context (DSP 2025-1 DID service entries); DID Core §4.1: its own first.
    assert document["@context"] == [dids.DID_CONTEXT, dids.MULTIKEY_CONTEXT, dids.DSP_CONTEXT]


def test_a_did_document_without_services_names_the_did_and_multikey_contexts():
    did = dids.did_key_for(bytes(SigningKey.generate().verify_key))
    assert dids.did_key_document(did)["@context"] == [dids.DID_CONTEXT, dids.MULTIKEY_CONTEXT]
