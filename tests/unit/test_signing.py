"""RFC 9421 request signatures: the profile's signature base, and every way a request can be refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
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


# -- the profile checked against the http-message-signatures library ---------------------------------------
# The node builds and checks RFC 9421 signatures itself; the library is an independent implementation of the
# same RFC (with cryptography's Ed25519). Same bytes, same accept/reject.

class _Request:
    """The request view the library reads."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers


class _AnyKeyId:
    """Library key resolver: one key pair whatever the keyid (a changed keyid must fail on the signature)."""

    def __init__(self, key: SigningKey) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.private = Ed25519PrivateKey.from_private_bytes(bytes(key))
        self.public = self.private.public_key()

    def resolve_private_key(self, key_id: str):
        return self.private

    def resolve_public_key(self, key_id: str):
        return self.public


def _library_signs(key: SigningKey, method: str, url: str, body: bytes | None, *, created: int,
                   nonce: str) -> dict[str, str]:
    import datetime as dt

    from http_message_signatures import HTTPMessageSigner, algorithms

    request = _Request(method, url, {})
    when = dt.datetime.fromtimestamp(created, dt.UTC)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_AnyKeyId(key)).sign(
        request, key_id=KEY_ID, created=when, expires=when + dt.timedelta(seconds=signing.MAX_VALIDITY), nonce=nonce,
        label=signing.LABEL, covered_component_ids=("@method", "@target-uri"), body=body)
    return request.headers


def _library_accepts(key: SigningKey, method: str, url: str, headers: dict[str, str], body: bytes) -> bool:
    from http_message_signatures import HTTPMessageVerifier, InvalidSignature, algorithms

    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=_AnyKeyId(key))
    verifier.validate_created_and_expires = lambda *a, **k: None  # times are check_times' (tested above)
    required = ("@method", "@target-uri", "content-digest") if body else ("@method", "@target-uri")
    try:
        verifier.verify(_Request(method, url, dict(headers)), max_age=None, require_components=required, body=body)
    except InvalidSignature:
        return False
    return True


def _we_accept(key: SigningKey, method: str, url: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        signing.verify_request(method, url, headers, body, public_key=key.verify_key, now=NOW + 1)
    except Unauthorized:
        return False
    return True


URLS = [URL, "https://tds.example.com:8443/participants/acme/api/dsp/2025-1/negotiations/urn%3Auuid%3A1/agreement",
        "http://127.0.0.1:8080/participants/acme/api/dsp/2025-1/catalog/datasets/x?offset=0&limit=2",
        "http://[::1]:8080/participants/acme/did.json", "https://tds.example.com"]
BODIES = [b'{"@type":"ContractAgreementVerificationMessage"}', None, '{"reason":["grüße"]}'.encode()]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("body", BODIES, ids=["json", "none", "utf-8"])
def test_the_signature_is_byte_for_byte_the_librarys(key, url, body):
    ours = signing.sign_request("POST", url, body, key=key, key_id=KEY_ID, now=NOW)
    nonce = signing.read_signature_input(ours).nonce
    theirs = _library_signs(key, "POST", url, body, created=NOW, nonce=nonce)
    # Ed25519 is deterministic: the same signature base gives the same signature.
    assert ours == theirs


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("body", BODIES, ids=["json", "none", "utf-8"])
def test_a_request_signed_by_either_verifies_with_the_other(key, url, body):
    ours = signing.sign_request("POST", url, body, key=key, key_id=KEY_ID, now=NOW)
    assert _library_accepts(key, "POST", url, ours, body or b"")
    theirs = _library_signs(key, "POST", url, body, created=NOW, nonce="n-" + "0" * 22)
    assert _we_accept(key, "POST", url, theirs, body or b"")


def _with(headers: dict[str, str], name: str, old: str, new: str) -> dict[str, str]:
    assert old in headers[name], (name, old)
    return {**headers, name: headers[name].replace(old, new, 1)}


BODY = b'{"@type":"ContractNegotiationEventMessage","eventType":"FINALIZED"}'
TAMPERED = {
    "method": lambda h: ("PUT", URL, h, BODY),
    "target-path": lambda h: ("POST", URL.replace("acme", "acmf"), h, BODY),
    "target-query": lambda h: ("POST", URL + "?x=1", h, BODY),
    "target-host": lambda h: ("POST", URL.replace("tds.example.com", "tds.example.org"), h, BODY),
    "body": lambda h: ("POST", URL, h, BODY.replace(b"FINALIZED", b"ACCEPTED!")),
    "no-body": lambda h: ("POST", URL, h, b""),
    "digest-of-other-body": lambda h: ("POST", URL, {**h, "Content-Digest": signing.content_digest(b"{}")}, BODY),
    "digest-removed": lambda h: ("POST", URL, {k: v for k, v in h.items() if k != "Content-Digest"}, BODY),
    "created": lambda h: ("POST", URL, _with(h, "Signature-Input", f"created={NOW}", f"created={NOW - 1}"), BODY),
    "expires": lambda h: ("POST", URL, _with(h, "Signature-Input", f"expires={NOW + 300}", f"expires={NOW + 299}"),
                          BODY),
    "nonce": lambda h: ("POST", URL, _with(h, "Signature-Input", 'nonce="', 'nonce="x'), BODY),
    "keyid": lambda h: ("POST", URL, _with(h, "Signature-Input", "#key-1", "#key-2"), BODY),
    "components-reordered": lambda h: ("POST", URL, _with(h, "Signature-Input", '("@method" "@target-uri"',
                                                           '("@target-uri" "@method"'), BODY),
    "digest-uncovered": lambda h: ("POST", URL, _with(h, "Signature-Input", ' "content-digest"', ""), BODY),
    "signature-bit": lambda h: ("POST", URL, {**h, "Signature": _flip(h["Signature"])}, BODY),
    "signature-label": lambda h: ("POST", URL, _with(h, "Signature", "sig1=", "sig2="), BODY),
}


def _flip(header: str) -> str:
    label, _, rest = header.partition("=:")
    raw = bytearray(base64.b64decode(rest.rstrip(":")))
    raw[10] ^= 0x01
    return f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"


@pytest.mark.parametrize("signer", ["ours", "library"])
@pytest.mark.parametrize("tamper", list(TAMPERED))
def test_a_changed_component_is_refused_by_both(key, signer, tamper):
    if signer == "ours":
        headers = signing.sign_request("POST", URL, BODY, key=key, key_id=KEY_ID, now=NOW)
    else:
        headers = _library_signs(key, "POST", URL, BODY, created=NOW, nonce="n-" + "1" * 22)
    assert _we_accept(key, "POST", URL, headers, BODY) and _library_accepts(key, "POST", URL, headers, BODY)
    method, url, changed, body = TAMPERED[tamper](headers)
    assert not _we_accept(key, method, url, changed, body)
    assert not _library_accepts(key, method, url, changed, body)


def test_a_sha512_digest_from_another_signer_verifies(key):
    import datetime as dt

    from http_message_signatures import HTTPMessageSigner, algorithms

    # The library signs the Content-Digest the request already has (sha-512, which this node never sends).
    digest = "sha-512=:" + base64.b64encode(hashlib.sha512(BODY).digest()).decode() + ":"
    request = _Request("POST", URL, {"Content-Digest": digest})
    when = dt.datetime.fromtimestamp(NOW, dt.UTC)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_AnyKeyId(key)).sign(
        request, key_id=KEY_ID, created=when, expires=when + dt.timedelta(seconds=60), nonce="n-" + "3" * 22,
        label=signing.LABEL, covered_component_ids=("@method", "@target-uri", "content-digest"),
        use_existing_digest=True)
    assert _we_accept(key, "POST", URL, request.headers, BODY)
    assert _library_accepts(key, "POST", URL, request.headers, BODY)
    assert not _we_accept(key, "POST", URL, request.headers, BODY + b" ")


@pytest.mark.parametrize("covered", [('"@method" "@target-uri" "content-type"', "content-type"),
                                     ('"@method" "@target-uri" "@method"', "@method"),
                                     ('"@method";req "@target-uri"', "with parameters")])
def test_a_signature_covering_components_outside_the_profile_is_refused(covered):
    inner, named = covered
    headers = {"Signature-Input": f'sig1=({inner});created=1;expires=2;keyid="k";nonce="n";alg="ed25519"',
               "Signature": "sig1=:AA==:"}
    with pytest.raises(Unauthorized, match=named):
        signing.read_signature_input(headers)


def test_unknown_signature_parameters_are_refused():
    headers = {"Signature-Input": 'sig1=("@method" "@target-uri");created=1;expires=2;keyid="k";nonce="n";'
                                  'alg="ed25519";foo="bar"', "Signature": "sig1=:AA==:"}
    with pytest.raises(Unauthorized, match="foo"):
        signing.read_signature_input(headers)


_SF_TEXT = st.text(alphabet=st.sampled_from(' !#$%&()*+,-./0123456789:;<=>?@ABZaz[]^_`{|}~"\\'), max_size=12)
_SF_HEADER = st.one_of(
    st.builds(lambda label, comps, params, sep: f"{label}=(" + sep.join(f'"{c}"' for c in comps) + ")" + "".join(
        f";{k}={v}" for k, v in params), st.sampled_from(["sig1", "sig2", "Sig1", "a*b"]),
        st.lists(st.sampled_from(["@method", "@target-uri", "content-digest", "@Method", "x y"]), max_size=4),
        st.lists(st.tuples(st.sampled_from(["created", "keyid", "nonce", "alg", "expires", "k-1", "K"]),
                           st.one_of(st.integers(-10**16, 10**16).map(str), _SF_TEXT.map(lambda t: f'"{t}"'),
                                     st.sampled_from(["?1", "tok", "1.5", ":YQ==:"]))), max_size=6),
        st.sampled_from([" ", "  "])),
    st.builds(lambda label, raw: f"{label}=:{base64.b64encode(raw).decode()[:len(raw) * 2]}:",
              st.sampled_from(["sig1", "x"]), st.binary(max_size=70)),
    _SF_TEXT,
)


@given(_SF_HEADER)
def test_the_plain_header_reader_agrees_with_the_structured_fields_parser(raw):
    """The fast path for the headers this profile's signers write reads them exactly as ``http_sf`` does, and leaves
    everything else to it."""
    import http_sf

    plain = signing._plain_dictionary(raw)
    if plain is None:
        return
    assert plain == http_sf.parse(raw.encode(), tltype="dictionary")
