"""RFC 9421 HTTP Message Signatures for node-to-node requests, with RFC 9530 Content-Digest.

Profile (the same on both sides):

- label ``sig1``; covered components ``("@method" "@target-uri" "content-digest")``, without
  ``content-digest`` when the request has no body;
- parameters ``created``, ``expires`` (at most :data:`MAX_VALIDITY` seconds after ``created``), a random
  ``nonce``, ``keyid`` (the DID URL of the signer's Ed25519 key) and ``alg="ed25519"``;
- ``@target-uri`` is built from the receiving node's configured public URL, so a proxy or port mapping
  between the two nodes does not break signatures.

The signature base and header syntax come from the ``http-message-signatures`` library; Ed25519 is done
with PyNaCl. Replay protection (the nonce cache) and key resolution are the caller's: this module only
checks what a single request proves.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import http_sf
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from connector.errors import Unauthorized

LABEL = "sig1"
ALG = "ed25519"
MAX_VALIDITY = 300
CLOCK_SKEW = 60
MAX_HEADER_BYTES = 4096


@functools.cache
def _lib() -> SimpleNamespace:
    """The signature library, imported on first use (it pulls in ``cryptography``; start-up stays fast)."""
    from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, HTTPSignatureAlgorithm
    from http_message_signatures.exceptions import HTTPMessageSignaturesException

    class NaclEd25519(HTTPSignatureAlgorithm):
        """Ed25519 through PyNaCl keys (the library's own class wants cryptography key objects)."""

        algorithm_id = ALG

        def __init__(self, public_key: VerifyKey | None = None, private_key: SigningKey | None = None) -> None:
            self.public_key = public_key
            self.private_key = private_key

        def sign(self, message: bytes) -> bytes:
            assert self.private_key is not None
            return bytes(self.private_key.sign(message).signature)

        def verify(self, signature: bytes, message: bytes) -> None:
            assert self.public_key is not None
            self.public_key.verify(message, signature)

    class Verifier(HTTPMessageVerifier):
        def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
            """Times are checked by :func:`check_times` against the caller's ``now``, not the library's clock."""

    return SimpleNamespace(
        Signer=HTTPMessageSigner, Verifier=Verifier, Algorithm=NaclEd25519, Error=HTTPMessageSignaturesException
    )


class _Message:
    """The minimal request view the library reads: method, url, headers."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method.upper()
        self.url = url
        self.headers = headers


class _OneKey:
    def __init__(self, key_id: str, private: SigningKey | None = None, public: VerifyKey | None = None) -> None:
        self.key_id, self.private, self.public = key_id, private, public

    def resolve_private_key(self, key_id: str) -> SigningKey:
        if key_id != self.key_id or self.private is None:
            raise _lib().Error("unknown signing key")
        return self.private

    def resolve_public_key(self, key_id: str) -> VerifyKey:
        if key_id != self.key_id or self.public is None:
            raise _lib().Error("unknown verification key")
        return self.public


def sign_request(
    method: str,
    url: str,
    body: bytes | None,
    *,
    key: SigningKey,
    key_id: str,
    now: float,
    validity: int = MAX_VALIDITY,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the headers to send (the given ones plus Content-Digest, Signature-Input, Signature)."""
    out = dict(headers or {})
    message = _Message(method, url, out)
    created = dt.datetime.fromtimestamp(int(now), tz=dt.UTC)
    lib = _lib()
    signer = lib.Signer(signature_algorithm=lib.Algorithm)
    # prepare() builds the RFC 9421 signature base (and the Content-Digest); the Ed25519 signature is
    # made here, and the two headers are written directly: the library's apply() would only rebuild the
    # same base to check that the message did not change in between, which it cannot here.
    prepared = signer.prepare(
        message,
        key_id=key_id,
        created=created,
        expires=created + dt.timedelta(seconds=min(validity, MAX_VALIDITY)),
        nonce=secrets.token_urlsafe(16),
        label=LABEL,
        covered_component_ids=("@method", "@target-uri"),
        body=body if body else None,
    )
    signature = base64.b64encode(key.sign(prepared.signature_base).signature).decode("ascii")
    out["Signature-Input"] = f"{LABEL}={prepared.signature_params}"
    out["Signature"] = f"{LABEL}=:{signature}:"
    return out


@dataclass(frozen=True)
class SignatureInput:
    """What a request's ``Signature-Input`` claims, before the signature is checked."""

    key_id: str
    nonce: str
    created: int
    expires: int


def read_signature_input(headers: Mapping[str, str]) -> SignatureInput:
    """Parse the ``sig1`` member of Signature-Input and check its parameters (not the signature)."""
    raw = headers.get("Signature-Input")
    if not raw or not headers.get("Signature"):
        raise Unauthorized("request is not signed (RFC 9421 Signature and Signature-Input headers required)")
    if len(raw) > MAX_HEADER_BYTES:
        raise Unauthorized("Signature-Input header is too large")
    try:
        parsed = cast(dict[str, Any], http_sf.parse(raw.encode(), tltype="dictionary"))
    except Exception as exc:  # the parser raises plain ValueError/KeyError on malformed input
        raise Unauthorized("Signature-Input header is malformed") from exc
    if LABEL not in parsed:
        raise Unauthorized(f"Signature-Input has no '{LABEL}' signature")
    members, params = parsed[LABEL]
    if not isinstance(members, list):
        raise Unauthorized("Signature-Input member is not an inner list")
    for name in ("keyid", "nonce"):
        if not isinstance(params.get(name), str) or not params[name]:
            raise Unauthorized(f"signature parameter '{name}' is missing")
    for name in ("created", "expires"):
        if type(params.get(name)) is not int:
            raise Unauthorized(f"signature parameter '{name}' is missing")
    if params.get("alg") != ALG:
        raise Unauthorized(f"signature parameter alg must be '{ALG}'")
    # RFC 9421 §2.5 leaves the order of the covered components to the signer: require the set, not the order.
    covered = {m[0] for m in members}
    if not {"@method", "@target-uri"} <= covered:
        raise Unauthorized('signature must cover "@method" and "@target-uri"')
    return SignatureInput(params["keyid"], params["nonce"], params["created"], params["expires"])


def check_times(sig: SignatureInput, now: float) -> None:
    if sig.expires <= sig.created or sig.expires - sig.created > MAX_VALIDITY:
        raise Unauthorized(f"signature validity must be between 1 and {MAX_VALIDITY} seconds")
    if sig.created > now + CLOCK_SKEW:
        raise Unauthorized("signature is dated in the future")
    if sig.expires < now - CLOCK_SKEW:
        raise Unauthorized("signature has expired")


def verify_request(
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    public_key: VerifyKey,
    now: float,
) -> SignatureInput:
    """Verify a request's ``sig1`` signature and its body digest; return the checked parameters.

    *target_uri* is the URI the caller addressed, rebuilt from this node's public URL.
    """
    sig = read_signature_input(headers)
    check_times(sig, now)
    message = _Message(method, target_uri, dict(headers))
    lib = _lib()
    verifier = lib.Verifier(signature_algorithm=lib.Algorithm, key_resolver=_OneKey(sig.key_id, public=public_key))
    required = ("@method", "@target-uri", "content-digest") if body else ("@method", "@target-uri")
    try:
        verifier.verify(
            message,
            expect_tag=None,
            max_age=None,
            require_components=required,
            body=body,
        )
    except (lib.Error, BadSignatureError, ValueError) as exc:
        raise Unauthorized(f"signature does not verify: {exc}") from exc
    return sig
