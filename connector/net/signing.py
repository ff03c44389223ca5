"""RFC 9421 HTTP Message Signatures for node-to-node requests, with RFC 9530 Content-Digest.

Profile (the same on both sides):

- label ``sig1``; covered components ``("@method" "@target-uri" "content-digest")``, without
  ``content-digest`` when the request has no body; a signature may list them in any order (RFC 9421 §2.5
  leaves the order to the signer) but covers no other component;
- parameters ``created``, ``expires`` (at most :data:`MAX_VALIDITY` seconds after ``created``), a random
  ``nonce``, ``keyid`` (the DID URL of the signer's Ed25519 key) and ``alg="ed25519"`` (and, as RFC 9421
  §2.3 allows, a ``tag``);
- ``@target-uri`` is built from the receiving node's configured public URL, so a proxy or port mapping
  between the two nodes does not break signatures;
- ``Content-Digest`` holds ``sha-256`` (a received one may also, or instead, hold ``sha-512``; every member
  must match the body).

This module builds the signature base itself (RFC 9421 §2.5: one line per covered component, then
``"@signature-params"``, whose value is the canonical Structured Fields serialisation of the signature's
inner list, RFC 8941 §4.1) for this profile alone; the headers are parsed with ``http_sf``, and Ed25519 is
PyNaCl's. The unit tests check it byte for byte against the ``http-message-signatures`` library: a request
signed by either verifies with the other, and a changed component is refused by both. Replay protection
(the nonce cache) and key resolution are the caller's: this module only checks what a single request proves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Mapping
from typing import Any, cast

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from connector.errors import Unauthorized

LABEL = "sig1"
ALG = "ed25519"
MAX_VALIDITY = 300
CLOCK_SKEW = 60
MAX_HEADER_BYTES = 4096

#: The components a signature of this profile may cover; the first two it must.
REQUIRED = ("@method", "@target-uri")
DIGEST = "content-digest"
_COVERABLE = frozenset({*REQUIRED, DIGEST})
#: The signature parameters RFC 9421 §2.3 defines, and the type of each.
_PARAMETERS: dict[str, type] = {"created": int, "expires": int, "keyid": str, "nonce": str, "alg": str, "tag": str}
_HASHES = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_OUR_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/]{43}=):")
# The headers as this profile's signers write them (one member, single spaces, integer and plain string
# parameters, each once), read without the general parser; anything else goes through ``http_sf``.
_PLAIN_INPUT = re.compile(r'(?P<label>[a-z][a-z0-9_.*-]*)=\((?P<components>"[a-z@-]+"(?: "[a-z@-]+")*)\)'
                          r'(?P<params>(?:;[a-z][a-z0-9_.*-]*=(?:-?[0-9]{1,15}|"[\x20\x21\x23-\x5b\x5d-\x7e]*"))*)')
_PLAIN_PARAM = re.compile(r';([a-z][a-z0-9_.*-]*)=(?:(-?[0-9]{1,15})|"([^"]*)")')
_PLAIN_SIGNATURE = re.compile(r"(?P<label>[a-z][a-z0-9_.*-]*)=:(?P<value>(?:[A-Za-z0-9+/]{4})*"
                              r"(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?):")

# An absolute URI as RFC 3986 §3 spells it (ASCII; percent escapes well formed), whose authority has a host.
_UNRESERVED = r"A-Za-z0-9._~\-"
_CHARS = _UNRESERVED + r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_URI = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://"
    rf"(?:(?:[{_CHARS}:]|{_PCT})*@)?"
    rf"(?P<host>\[(?:[0-9A-Fa-f:.]+(?:%25(?:[{_UNRESERVED}]|{_PCT})+)?|[vV][0-9A-Fa-f]+\.[{_CHARS}:]+)\]"
    rf"|(?:[{_CHARS}]|{_PCT})+)"
    r"(?P<port>:[0-9]*)?"
    rf"(?P<path>/(?:[{_CHARS}:@/]|{_PCT})*)?"
    rf"(?P<query>\?(?:[{_CHARS}:@/?]|{_PCT})*)?"
    rf"(?:\#(?:[{_CHARS}:@/?]|{_PCT})*)?"
)


def target_uri(url: str) -> str:
    """The ``@target-uri`` of a request to *url* (RFC 9421 §2.2.2): scheme, authority, path (``/`` when empty)
    and query as given, without user info or fragment. Raises ``ValueError`` for anything but an absolute
    ASCII URI with a host."""
    match = _URI.fullmatch(url)
    if match is None:
        raise ValueError("not an absolute URI with a host")
    host = match["host"]
    if host.startswith("[") and host[1] not in "vV":
        ipaddress.IPv6Address(host[1:-1].partition("%25")[0])  # raises ValueError
    return f"{match['scheme']}://{host}{match['port'] or ''}{match['path'] or '/'}{match['query'] or ''}"


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` of *body* (RFC 9530 §2): ``sha-256=:<base64>:``."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}:"


def _sf_string(value: str) -> str:
    """A Structured Field String (RFC 8941 §4.1.6)."""
    if not value.isascii() or not value.isprintable():
        raise ValueError("a signature parameter must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _signature_params(components: tuple[str, ...], params: Mapping[str, int | str]) -> str:
    """The canonical serialisation of the signature's inner list (RFC 8941 §4.1.1.1) with its parameters."""
    inner = " ".join(_sf_string(c) for c in components)
    rendered = "".join(f";{name}={value}" if type(value) is int else f";{name}={_sf_string(str(value))}"
                       for name, value in params.items())
    return f"({inner}){rendered}"


def _signature_base(values: Mapping[str, str], components: tuple[str, ...], signature_params: str) -> bytes:
    """The signature base (RFC 9421 §2.5) over *components*, whose values are in *values*: ASCII, one line each
    (a field's value may hold a tab; a derived component's has no space at either end)."""
    lines = []
    for c in components:
        value = values[c]
        derived = c.startswith("@")
        if not value.isascii() or not (value if derived else value.replace("\t", " ")).isprintable() or (
                derived and value != value.strip(" ")):
            raise ValueError(f"the value of {c!r} cannot go into a signature base")
        lines.append(f'"{c}": {value}')
    lines.append(f'"@signature-params": {signature_params}')
    return "\n".join(lines).encode("ascii")


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
    values = {"@method": method.upper(), "@target-uri": target_uri(url)}
    components: tuple[str, ...] = REQUIRED
    if body:
        if any(name.lower() == DIGEST for name in out):
            raise ValueError("Content-Digest is already set")
        values[DIGEST] = out["Content-Digest"] = content_digest(body)
        components = (*REQUIRED, DIGEST)
    created = int(now)
    params = _signature_params(components, {
        "created": created, "keyid": key_id, "alg": ALG,
        "expires": created + min(validity, MAX_VALIDITY), "nonce": secrets.token_urlsafe(16),
    })
    signature = key.sign(_signature_base(values, components, params)).signature
    out["Signature-Input"] = f"{LABEL}={params}"
    out["Signature"] = f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:"
    return out


class SignatureInput(msgspec.Struct, frozen=True):
    """What a request's ``Signature-Input`` claims, before the signature is checked."""

    key_id: str
    nonce: str
    created: int
    expires: int
    #: The covered components, in the signer's order.
    components: tuple[str, ...] = REQUIRED
    #: The ``@signature-params`` value: the inner list and its parameters, serialised canonically.
    signature_params: str = ""


def _parse_dictionary(raw: str, header: str) -> dict[str, Any]:
    """A Structured Field Dictionary (RFC 8941 §3.2) as ``http_sf`` parses it: {key: (value, parameters)}."""
    if len(raw) > MAX_HEADER_BYTES:
        raise Unauthorized(f"{header} header is too large")
    plain = _plain_dictionary(raw)
    if plain is not None:
        return plain
    import http_sf  # the general parser, loaded when a header first needs it

    try:
        return cast(dict[str, Any], http_sf.parse(raw.encode(), tltype="dictionary"))
    except Exception as exc:  # the parser raises plain ValueError/KeyError on malformed input
        raise Unauthorized(f"{header} header is malformed") from exc


def _plain_dictionary(raw: str) -> dict[str, Any] | None:
    """*raw* parsed as ``http_sf`` would, if it has the plain form this profile's signers write; else None."""
    match = _PLAIN_INPUT.fullmatch(raw)
    if match is not None:
        params: dict[str, int | str] = {}
        for name, number, text in _PLAIN_PARAM.findall(match["params"]):
            if name in params:
                return None  # a repeated parameter: the general parser says which one counts
            params[name] = int(number) if number else text
        components: list[tuple[str, dict[str, Any]]] = [(c[1:-1], {}) for c in match["components"].split(" ")]
        return {match["label"]: (components, params)}
    match = _PLAIN_SIGNATURE.fullmatch(raw)
    if match is not None:
        return {match["label"]: (base64.b64decode(match["value"]), {})}
    return None


def read_signature_input(headers: Mapping[str, str]) -> SignatureInput:
    """Parse the ``sig1`` member of Signature-Input and check its parameters (not the signature)."""
    raw = headers.get("Signature-Input")
    if not raw or not headers.get("Signature"):
        raise Unauthorized("request is not signed (RFC 9421 Signature and Signature-Input headers required)")
    parsed = _parse_dictionary(raw, "Signature-Input")
    if LABEL not in parsed:
        raise Unauthorized(f"Signature-Input has no '{LABEL}' signature")
    if len(parsed) > 1:
        raise Unauthorized(f"Signature-Input names other signatures than '{LABEL}'")
    members, params = parsed[LABEL]
    if not isinstance(members, list):
        raise Unauthorized("Signature-Input member is not an inner list")
    for name in ("keyid", "nonce"):
        if not isinstance(params.get(name), str) or not params[name]:
            raise Unauthorized(f"signature parameter '{name}' is missing")
    for name in ("created", "expires"):
        if type(params.get(name)) is not int:
            raise Unauthorized(f"signature parameter '{name}' is missing")
    if params.get("alg") != ALG or type(params["alg"]) is not str:
        raise Unauthorized(f"signature parameter alg must be '{ALG}'")
    for name, value in params.items():
        if name not in _PARAMETERS or type(value) is not _PARAMETERS[name]:
            raise Unauthorized(f"signature parameter '{name}' is not one of RFC 9421's")
    components: list[str] = []
    for value, item_params in members:
        if type(value) is not str or item_params or value not in _COVERABLE or value in components:
            raise Unauthorized(f"signature covers {str(value)[:100]!r}{' with parameters' if item_params else ''}, "
                               f"which this profile does not (it covers {', '.join(sorted(_COVERABLE))}, each once)")
        components.append(value)
    # RFC 9421 §2.5 leaves the order of the covered components to the signer: require the set, not the order.
    if not set(REQUIRED) <= set(components):
        raise Unauthorized('signature must cover "@method" and "@target-uri"')
    return SignatureInput(params["keyid"], params["nonce"], params["created"], params["expires"],
                          tuple(components), _signature_params(tuple(components), params))


def check_times(sig: SignatureInput, now: float) -> None:
    if sig.expires <= sig.created or sig.expires - sig.created > MAX_VALIDITY:
        raise Unauthorized(f"signature validity must be between 1 and {MAX_VALIDITY} seconds")
    if sig.created > now + CLOCK_SKEW:
        raise Unauthorized("signature is dated in the future")
    if sig.expires < now - CLOCK_SKEW:
        raise Unauthorized("signature has expired")


def _signature(headers: Mapping[str, str]) -> bytes:
    """The ``sig1`` signature's bytes from the Signature header."""
    parsed = _parse_dictionary(headers.get("Signature", ""), "Signature")
    if set(parsed) != {LABEL}:
        raise Unauthorized(f"Signature header must hold the '{LABEL}' signature alone")
    value, _ = parsed[LABEL]
    if not isinstance(value, bytes):
        raise Unauthorized("Signature member is not a byte sequence")
    return value


def _digest_matches(field: str, body: bytes) -> bool:
    """Whether every member of a Content-Digest *field* (sha-256, sha-512) is the digest of *body*."""
    ours = _OUR_DIGEST.fullmatch(field)
    if ours is not None:  # the form this node sends, read without the general parser
        members = {"sha-256": binascii.a2b_base64(ours[1])}
    else:
        members = {}
        for algorithm, (value, _) in _parse_dictionary(field, "Content-Digest").items():
            hasher = _HASHES.get(algorithm)
            if hasher is None or not isinstance(value, bytes) or len(value) != hasher().digest_size:
                raise Unauthorized(f"Content-Digest member {algorithm!r} is not a sha-256 or sha-512 digest")
            members[algorithm] = value
        if not members:
            raise Unauthorized("Content-Digest holds no digest")
    return all(hmac.compare_digest(value, _HASHES[algorithm](body).digest()) for algorithm, value in members.items())


def verify_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    public_key: VerifyKey,
    now: float,
    sig: SignatureInput | None = None,
) -> SignatureInput:
    """Verify a request's ``sig1`` signature and its body digest; return the checked parameters.

    *target* is the URI the caller addressed, rebuilt from this node's public URL. *sig*: the request's
    Signature-Input as :func:`read_signature_input` read it already (else it is read here).
    """
    if sig is None:
        sig = read_signature_input(headers)
    check_times(sig, now)
    signature = _signature(headers)
    digest = headers.get("Content-Digest")
    covers_digest = DIGEST in sig.components
    if covers_digest and digest is None:
        raise Unauthorized("signature does not verify: it covers a Content-Digest the request does not have")
    try:
        values = {"@method": method.upper(), "@target-uri": target_uri(target), DIGEST: digest or ""}
        public_key.verify(_signature_base(values, sig.components, sig.signature_params), signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise Unauthorized(f"signature does not verify: {exc}") from exc
    # RFC 9530 with RFC 9421 §7.2.8: a body (or a Content-Digest sent with an empty one) counts only if the
    # signature covers its digest and the digest matches it.
    if covers_digest:
        if digest is None or not _digest_matches(digest, body):
            raise Unauthorized("signature does not verify: Content-Digest does not match the message body")
    elif body or digest is not None:
        raise Unauthorized("signature does not verify: the message body requires a signed Content-Digest")
    return sig
