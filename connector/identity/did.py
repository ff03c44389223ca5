"""DIDs of participants: ``did:web`` (default, one per participant under the node) and ``did:key``.

Pure: encoding, decoding and DID-document building only; resolution over the network lives in
``connector.identity.resolver``.

- ``did:web`` (W3C did:web method §3.2): ``did:web:HOST%3APORT:participants:NAME`` is served at
  ``https://HOST:PORT/participants/NAME/did.json``. Plain http is used only for loopback hosts and only
  when the node runs in dev mode.
- ``did:key`` (W3C did:key §3.1): ``did:key:<Ed25519 Multikey>``; its document is derived from the DID.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import msgspec

from connector.identity.multikey import ED25519_PUB, MultikeyError, decode_multikey

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
DSP_CONTEXT = "https://w3id.org/dspace/2025/1/context.jsonld"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
SIGNING_KEY_ID = "key-1"
#: A did:web host after percent-decoding: a DNS name or an IP literal, and an optional port (did:web §3.2.1).
#: Anything else could only fail later, in name resolution, where it would look like an unreachable peer.
_WEB_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$", re.ASCII)
AGREEMENT_KEY_ID = "key-2"


class DidError(ValueError):
    """A DID or DID URL that is malformed or of an unsupported method."""


class RetiredKey(msgspec.Struct, frozen=True):
    """A key a participant used before a rotation: still listed in its DID document, so that what it signed
    (agreements, manifests, receipts) keeps verifying, but no longer current.

    *kind* is ``ed25519`` (kept under ``assertionMethod``, dropped from ``authentication``: it can no longer
    authenticate a request or a presentation) or ``x25519`` (kept as a verification method only, dropped from
    ``keyAgreement``: nobody encrypts to it any more). *retired* is when it stopped being current."""

    id: str
    kind: str
    multikey: str
    retired: str = ""


def did_web_for(public_url: str, participant: str) -> str:
    """The did:web of a participant hosted under a node's public URL."""
    parts = urlsplit(public_url)
    if not parts.hostname:
        raise DidError(f"public URL has no host: {public_url!r}")
    host = parts.netloc.rsplit("@", 1)[-1]
    segments = [quote(host, safe="")]
    segments += [quote(s, safe="") for s in parts.path.strip("/").split("/") if s]
    segments += ["participants", participant]
    return "did:web:" + ":".join(segments)


def did_web_url(did: str, *, dev_mode: bool) -> str:
    """The URL of a did:web document. Plain http only for loopback hosts in dev mode."""
    if not did.startswith("did:web:"):
        raise DidError(f"not a did:web: {did!r}")
    segments = did[len("did:web:") :].split(":")
    if not segments[0] or any(not s for s in segments):
        raise DidError(f"malformed did:web: {did!r}")
    host = unquote(segments[0])
    if not _WEB_HOST.match(host):
        raise DidError(f"malformed did:web host: {did!r}")
    path = "/".join(unquote(s) for s in segments[1:])
    if ".." in path.split("/"):
        raise DidError(f"malformed did:web path: {did!r}")
    try:
        hostname = urlsplit(f"//{host}").hostname or ""
    except ValueError as exc:  # brackets around what is no IPv6 address
        raise DidError(f"malformed did:web host: {did!r}") from exc
    scheme = "http" if dev_mode and (hostname in LOOPBACK_HOSTS or host in LOOPBACK_HOSTS) else "https"
    suffix = f"/{path}/did.json" if path else "/.well-known/did.json"
    return f"{scheme}://{host}{suffix}"


def did_key_for(verify_key: bytes) -> str:
    from connector.identity.multikey import encode_multikey

    return "did:key:" + encode_multikey(ED25519_PUB, verify_key)


def did_key_public_key(did: str) -> bytes:
    """The raw Ed25519 public key a did:key encodes."""
    if not did.startswith("did:key:"):
        raise DidError(f"not a did:key: {did!r}")
    try:
        return decode_multikey(did[len("did:key:") :], ED25519_PUB)
    except MultikeyError as exc:
        raise DidError(f"did:key is not an Ed25519 Multikey: {exc}") from exc


def split_did_url(did_url: str) -> tuple[str, str]:
    """``did:x:y#frag`` → (``did:x:y``, ``frag``). The fragment is required."""
    did, sep, fragment = did_url.partition("#")
    if not sep or not fragment or not did.startswith("did:"):
        raise DidError(f"not a DID URL with a key fragment: {did_url!r}")
    return did, fragment


def signing_key_id(did: str) -> str:
    """The DID URL of a participant's Ed25519 signing key."""
    if did.startswith("did:key:"):
        return f"{did}#{did[len('did:key:'):]}"
    return f"{did}#{SIGNING_KEY_ID}"


def did_document(
    did: str,
    *,
    signing_multikey: str,
    agreement_multikey: str | None = None,
    services: list[dict[str, Any]] | None = None,
    signing_fragment: str = SIGNING_KEY_ID,
    agreement_fragment: str = AGREEMENT_KEY_ID,
    retired: Sequence[RetiredKey] = (),
) -> dict[str, Any]:
    """A DID document with a Multikey verification method for signing (authentication + assertion)
    and, if given, an X25519 key for key agreement.

    After key rotations the current keys have later fragments (``#key-3``, ``#key-4`` …) and the *retired* ones
    stay listed (see :class:`RetiredKey`): current keys first, each relationship's current key first."""
    signing_id = signing_key_id(did) if did.startswith("did:key:") else f"{did}#{signing_fragment}"
    methods: list[dict[str, Any]] = [
        {"id": signing_id, "type": "Multikey", "controller": did, "publicKeyMultibase": signing_multikey}
    ]
    doc: dict[str, Any] = {
        # The DSP context defines the service types a DSP participant lists (DataService, CatalogService: the
        # DSP 2025-1 DID service entries, common/example/*-did-service.json); DID Core §4.1 wants its own first.
        "@context": [DID_CONTEXT, MULTIKEY_CONTEXT, *([DSP_CONTEXT] if services else [])],
        "id": did,
        "verificationMethod": methods,
        "authentication": [signing_id],
        "assertionMethod": [signing_id],
    }
    if agreement_multikey is not None:
        agreement_id = f"{did}#{agreement_fragment}"
        methods.append(
            {"id": agreement_id, "type": "Multikey", "controller": did, "publicKeyMultibase": agreement_multikey}
        )
        doc["keyAgreement"] = [agreement_id]
    for old in retired:
        old_id = f"{did}#{old.id}"
        methods.append({"id": old_id, "type": "Multikey", "controller": did, "publicKeyMultibase": old.multikey})
        if old.kind == "ed25519":
            doc["assertionMethod"].append(old_id)
    if services:
        doc["service"] = services
    return doc


def did_key_document(did: str) -> dict[str, Any]:
    """The DID document a did:key resolves to (derived, offline)."""
    key = did_key_public_key(did)
    from connector.identity.multikey import encode_multikey

    return did_document(did, signing_multikey=encode_multikey(ED25519_PUB, key))


def _absolute(did: str, ref: str) -> str:
    return did + ref if ref.startswith("#") else ref


def verification_key(document: dict[str, Any], key_id: str, relationship: str) -> bytes:
    """The raw Ed25519 key of *key_id* in *document*, if the key is listed under *relationship*.

    Raises :class:`DidError` when the key is absent, not Ed25519, or not authorised for the purpose.
    """
    did = document.get("id")
    if not isinstance(did, str):
        raise DidError("DID document has no id")
    if split_did_url(key_id)[0] != did:
        raise DidError(f"key {key_id!r} does not belong to {did!r}")
    allowed = document.get(relationship, [])
    if not isinstance(allowed, list):
        raise DidError(f"DID document {relationship} is not a list")
    refs = {_absolute(did, r) if isinstance(r, str) else _absolute(did, str(r.get("id", "")))
            for r in allowed if isinstance(r, str | dict)}
    if key_id not in refs:
        raise DidError(f"key {key_id!r} is not listed for {relationship}")
    methods = document.get("verificationMethod", [])
    embedded = [r for r in allowed if isinstance(r, dict)]
    for method in [*methods, *embedded] if isinstance(methods, list) else embedded:
        if not isinstance(method, dict) or _absolute(did, str(method.get("id", ""))) != key_id:
            continue
        multibase = method.get("publicKeyMultibase")
        if method.get("type") not in ("Multikey", "Ed25519VerificationKey2020") or not isinstance(multibase, str):
            raise DidError(f"key {key_id!r} is not an Ed25519 Multikey")
        try:
            return decode_multikey(multibase, ED25519_PUB)
        except MultikeyError as exc:
            raise DidError(f"key {key_id!r}: {exc}") from exc
    raise DidError(f"key {key_id!r} is not in the DID document")


def agreement_key(document: dict[str, Any]) -> str | None:
    """The X25519 Multikey listed for keyAgreement, if any."""
    did = document.get("id", "")
    refs = document.get("keyAgreement", [])
    if not isinstance(refs, list):
        return None
    wanted = {_absolute(str(did), r) for r in refs if isinstance(r, str)}
    for method in document.get("verificationMethod", []):
        if isinstance(method, dict) and _absolute(str(did), str(method.get("id", ""))) in wanted:
            value = method.get("publicKeyMultibase")
            return value if isinstance(value, str) else None
    return None
