"""RFC 9421 request signatures: the profile's signature base, and every way a request can be refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from nacl.signing import SigningKey

from connector.errors import Unauthorized
from connector.net import signing

URL = "https://tds.example.com/participants/acme/api/dsp/2025-1/catalog/request"
KEY_ID = "did:web:peer.example.com:participants:p#key-1"
NOW = 1_790_000_000


@pytest.fixture
def key() -> SigningKey:
    return SigningKey(b"\x07" * 32)


def test_signature_base_is_rfc9421_byte_exact(key):
    body = b'{"@type":"CatalogRequestMessage"}'
    headers = signing.sign_request("POST", URL, body, key=key, key_id=KEY_ID, now=NOW)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert headers["Content-Digest"] == f"sha-256=:{digest}:"
    params = headers["Signature-Input"][len("sig1="):]
    assert params.startswith('("@method" "@target-uri" "content-digest");created=1790000000;')
    assert f'keyid="{KEY_ID}"' in params and 'alg="ed25519"' in params and "expires=1790000300" in params
    base = (
        '"@method": POST\n'
        f'"@target-uri": {URL}\n'
        f'"content-digest": sha-256=:{digest}:\n'
        f'"@signature-params": {params}'
    ).encode()
    sig = base64.b64decode(headers["Signature"].split(":")[1])
    key.verify_key.verify(base, sig)  # raises if the base differs by a byte


def test_request_without_body_does_not_cover_content_digest(key):
    headers = signing.sign_request("GET", URL, None, key=key, key_id=KEY_ID, now=NOW)
    assert "Content-Digest" not in headers
    assert headers["Signature-Input"].startswith('sig1=("@method" "@target-uri");')
    sig = signing.verify_request("GET", URL, headers, b"", public_key=key.verify_key, now=NOW + 5)
    assert sig.key_id == KEY_ID and len(sig.nonce) >= 16


def test_nonces_are_fresh(key):
    a = signing.sign_request("GET", URL, None, key=key, key_id=KEY_ID, now=NOW)
    b = signing.sign_request("GET", URL, None, key=key, key_id=KEY_ID, now=NOW)
    assert signing.read_signature_input(a).nonce != signing.read_signature_input(b).nonce


def _refused(headers, *, method="POST", url=URL, body=b"{}", key=None, now=NOW + 1):
    with pytest.raises(Unauthorized) as info:
        signing.verify_request(method, url, headers, body, public_key=key, now=now)
    return info.value.message


def test_valid_request_verifies(key):
    headers = signing.sign_request("POST", URL, b"{}", key=key, key_id=KEY_ID, now=NOW)
    assert signing.verify_request("POST", URL, headers, b"{}", public_key=key.verify_key, now=NOW).created == NOW


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"x":1}'}, "Content-Digest"),
        ({"url": URL.replace("acme", "other")}, "does not verify"),
        ({"method": "PUT"}, "does not verify"),
        ({"now": NOW + 400}, "expired"),
        ({"now": NOW - 120}, "future"),
    ],
    ids=["body", "target-uri", "method", "expired", "future"],
)
def test_changed_or_stale_request_is_refused(key, change, reason):
    headers = signing.sign_request("POST", URL, b"{}", key=key, key_id=KEY_ID, now=NOW)
    kwargs = {"key": key.verify_key, **change}
    assert reason in _refused(headers, **kwargs)


def test_wrong_key_is_refused(key):
    headers = signing.sign_request("POST", URL, b"{}", key=key, key_id=KEY_ID, now=NOW)
    assert "does not verify" in _refused(headers, key=SigningKey.generate().verify_key)


def test_too_long_validity_is_refused(key):
    headers = signing.sign_request("POST", URL, b"{}", key=key, key_id=KEY_ID, now=NOW)
    headers["Signature-Input"] = headers["Signature-Input"].replace("expires=1790000300", "expires=1790009999")
    assert "validity" in _refused(headers, key=key.verify_key)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "not signed"),
        ({"Signature-Input": "garbage(((", "Signature": "sig1=:AA==:"}, "malformed"),
        ({"Signature-Input": 'other=("@method");created=1', "Signature": "other=:AA==:"}, "no 'sig1'"),
        ({"Signature-Input": 'sig1=("@method" "@target-uri");created=1;expires=2;keyid="k";alg="ed25519"',
          "Signature": "sig1=:AA==:"}, "nonce"),
        ({"Signature-Input": 'sig1=("@method" "@target-uri");created=1;expires=2;keyid="k";nonce="n";alg="rsa"',
          "Signature": "sig1=:AA==:"}, "alg"),
        ({"Signature-Input": 'sig1=("@method");created=1;expires=2;keyid="k";nonce="n";alg="ed25519"',
          "Signature": "sig1=:AA==:"}, "cover"),
    ],
    ids=["unsigned", "malformed", "other-label", "no-nonce", "other-alg", "too-little-covered"],
)
def test_malformed_signature_input_is_refused(headers, reason):
    with pytest.raises(Unauthorized, match=reason):
        signing.read_signature_input(headers)


def _hand_signed(key: SigningKey, components: list[str], body: bytes) -> dict[str, str]:
    """A signature made without our signer, covering *components* in the order given (RFC 9421 §2.5)."""
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    values = {"@method": "POST", "@target-uri": URL, "content-digest": digest}
    params = ("(" + " ".join(f'"{c}"' for c in components) + ")"
              f';created={NOW};expires={NOW + 60};keyid="{KEY_ID}";nonce="n-0123456789abcdef";alg="ed25519"')
    base = "".join(f'"{c}": {values[c]}\n' for c in components) + f'"@signature-params": {params}'
    signature = base64.b64encode(key.sign(base.encode()).signature).decode()
    return {"Content-Digest": digest, "Signature-Input": f"sig1={params}", "Signature": f"sig1=:{signature}:"}


@pytest.mark.parametrize("components", [
    ["@target-uri", "@method", "content-digest"],
    ["content-digest", "@method", "@target-uri"],
    ["@method", "@target-uri", "content-digest"],
])
def test_the_covered_components_may_come_in_any_order(key, components):
    headers = _hand_signed(key, components, b"{}")
    sig = signing.verify_request("POST", URL, headers, b"{}", public_key=key.verify_key, now=NOW + 1)
    assert sig.key_id == KEY_ID


@pytest.mark.parametrize("components", [["@target-uri", "content-digest"], ["@method", "content-digest"],
                                        ["@target-uri", "@method"]])
def test_a_signature_must_still_cover_method_target_and_a_bodys_digest(key, components):
    headers = _hand_signed(key, components, b"{}")
    with pytest.raises(Unauthorized):
        signing.verify_request("POST", URL, headers, b"{}", public_key=key.verify_key, now=NOW + 1)
