"""W3C Data Integrity proofs with the ``eddsa-jcs-2022`` cryptosuite.

The one signer and verifier of JSON documents in the project (self-descriptions, agreements, manifests,
usage receipts). Algorithm per *Data Integrity EdDSA Cryptosuites v1.0* §3.3:

    hashData  = SHA-256(JCS(proofConfig)) || SHA-256(JCS(unsecuredDocument))
    proofValue = multibase-base58btc(Ed25519-sign(hashData))

``proofConfig`` is the proof without ``proofValue``; when the document has an ``@context`` the proof
carries the same ``@context`` (§3.3.5). Canonical bytes come from RFC 8785 (``rfc8785``), never from a
JSON encoder's own output. Pure: the creation time is an argument.

Two bounded memos spare repeated work without changing a result: the SHA-256 of a large document's canonical
bytes, keyed by the digest of its exact JSON text (a holder presents the same credentials in every
handshake, and a verifier sees them again and again), and the Ed25519 verifications that succeeded, keyed by
key, message and signature. A miss costs one ``msgspec`` encoding; nothing else is cached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import rfc8785
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from connector.identity.multikey import MultikeyError, decode_multibase, encode_multibase

CRYPTOSUITE = "eddsa-jcs-2022"
PROOF_TYPE = "DataIntegrityProof"

JsonObject = dict[str, Any]


class ProofError(Exception):
    """A proof that is missing, malformed, from the wrong key, or does not match the document."""


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes, from the ``rfc8785`` package itself: what is signed is never another
    encoder's output (``usage_policies.jcs`` serves hashes only)."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ProofError(f"document cannot be canonicalized: {exc}") from exc


#: Documents whose JSON text is at least this long have their canonical digest memoised: an agreement (about 500
#: bytes) is signed and verified by both sides, each from the same text. Below, canonicalisation costs about what
#: the lookup saves.
MEMO_MIN_BYTES = 256
#: Entries kept in each memo (least recently used dropped first).
MEMO_ENTRIES = 2048


class _Memo:
    """A bounded LRU map of bytes to bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, key: bytes) -> bytes | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: bytes, value: bytes) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


_digests = _Memo(MEMO_ENTRIES)
_verified = _Memo(MEMO_ENTRIES)


def forget_memos() -> None:
    """Empty both memos."""
    _digests.entries.clear()
    _verified.entries.clear()


def _document_digest(document: Mapping[str, Any]) -> bytes:
    """SHA-256 of the RFC 8785 bytes of *document*, memoised for large documents by their exact JSON text.

    Two documents with the same JSON text have the same canonical form. (``msgspec`` writes a NaN as ``null``,
    which RFC 8785 refuses; no document read from the wire holds one: ``connector.jsonbound`` and
    ``msgspec`` refuse NaN, and a NaN document is never memoised, since canonicalising it fails.)"""
    try:
        text = msgspec.json.encode(document)
    except (TypeError, ValueError, OverflowError):
        text = b""
    if len(text) < MEMO_MIN_BYTES:
        return hashlib.sha256(canonical(document)).digest()
    key = hashlib.sha256(text).digest()
    found = _digests.get(key)
    if found is None:
        found = hashlib.sha256(canonical(document)).digest()
        _digests.put(key, found)
    return found


def _hash_data(document: Mapping[str, Any], proof_config: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical(proof_config)).digest() + _document_digest(document)


def sign(
    document: Mapping[str, Any],
    key: SigningKey,
    *,
    verification_method: str,
    created: str,
    proof_purpose: str = "assertionMethod",
    proof_property: str = "proof",
    options: Mapping[str, str] | None = None,
) -> JsonObject:
    """Return a copy of *document* with an ``eddsa-jcs-2022`` proof under *proof_property*.

    *created* is an XML Schema dateTime string (the caller owns the clock). *options* are further proof
    options (a presentation's ``domain`` and ``challenge``): they are part of the signed proof configuration
    (eddsa-jcs-2022 §3.3.5), so they cannot be added afterwards. An existing proof under the same property
    is replaced, so re-signing is idempotent.
    """
    unsecured = {k: v for k, v in document.items() if k != proof_property}
    proof: JsonObject = {
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "created": created,
        "verificationMethod": verification_method,
        "proofPurpose": proof_purpose,
        **(options or {}),
    }
    if "@context" in unsecured:
        proof["@context"] = unsecured["@context"]
    signature = key.sign(_hash_data(unsecured, proof)).signature
    proof["proofValue"] = encode_multibase(signature)
    return {**unsecured, proof_property: proof}


def proof_of(document: Mapping[str, Any], proof_property: str = "proof") -> JsonObject:
    proof = document.get(proof_property)
    if not isinstance(proof, dict):
        raise ProofError(f"document has no '{proof_property}' object")
    if proof.get("type") != PROOF_TYPE or proof.get("cryptosuite") != CRYPTOSUITE:
        raise ProofError(f"proof is not a {PROOF_TYPE} with cryptosuite {CRYPTOSUITE}")
    for field in ("verificationMethod", "proofValue", "created", "proofPurpose"):
        if not isinstance(proof.get(field), str):
            raise ProofError(f"proof.{field} is missing or not a string")
    return proof


def key_resolver(did_document: Mapping[str, Any], relationship: str = "assertionMethod") -> Callable[[str], VerifyKey]:
    """``resolve_key`` for :func:`verify`: keys the DID document lists for *relationship*."""
    from connector.identity import did as dids

    def resolve(vm: str) -> VerifyKey:
        try:
            return VerifyKey(dids.verification_key(dict(did_document), vm, relationship))
        except dids.DidError as exc:
            raise ProofError(str(exc)) from exc

    return resolve


def verify(
    document: Mapping[str, Any],
    resolve_key: Callable[[str], VerifyKey],
    *,
    proof_property: str = "proof",
    expected_purpose: str | None = "assertionMethod",
) -> JsonObject:
    """Verify the proof under *proof_property* and return it.

    *resolve_key* maps the proof's ``verificationMethod`` to an Ed25519 key (it raises
    :class:`ProofError` for an unknown or unacceptable method). Raises :class:`ProofError` on any failure.
    """
    proof = proof_of(document, proof_property)
    if expected_purpose is not None and proof["proofPurpose"] != expected_purpose:
        raise ProofError(f"proof purpose is {proof['proofPurpose']!r}, expected {expected_purpose!r}")
    unsecured = {k: v for k, v in document.items() if k != proof_property}
    # §3.3.2 step 5: a proof @context must be a prefix of the document's @context.
    if "@context" in proof:
        doc_ctx = unsecured.get("@context")
        proof_ctx = proof["@context"]
        doc_list = doc_ctx if isinstance(doc_ctx, list) else [doc_ctx]
        proof_list = proof_ctx if isinstance(proof_ctx, list) else [proof_ctx]
        if doc_list[: len(proof_list)] != proof_list:
            raise ProofError("proof @context does not match the document @context")
    config = {k: v for k, v in proof.items() if k != "proofValue"}
    key = resolve_key(proof["verificationMethod"])
    message = _hash_data(unsecured, config)
    seen = hashlib.sha256(bytes(key) + message + proof["proofValue"].encode()).digest()
    if _verified.get(seen) is None:
        try:
            signature = decode_multibase(proof["proofValue"])
        except MultikeyError as exc:
            raise ProofError(f"proofValue: {exc}") from exc
        try:
            key.verify(message, signature)
        except (BadSignatureError, ValueError) as exc:
            raise ProofError("signature does not match the document") from exc
        _verified.put(seen, b"1")
    return proof
