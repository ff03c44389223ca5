"""The signed self-description: a VC 2.0-shaped credential a participant issues about itself.

It names the participant (legal name, DID, region such as ``CN-GD``, industry, contact), where it speaks
DSP and which version, and its public keys, and carries an ``eddsa-jcs-2022`` proof by the
participant's own signing key (the issuer is the subject). Pure: the caller passes ``now`` and the
issuer's resolved DID document.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from nacl.signing import SigningKey

from connector.identity import did as dids
from connector.identity import proof
from connector.protocol import contexts

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
#: The node's own context: it defines the credential type and every claim of the subject (shipped, served
#: at ``/contexts/tds/v1``; ``connector.protocol.contexts``).
TDS_CONTEXT = contexts.TDS
TDS_NS = contexts.TDS_NS
CREDENTIAL_TYPE = "TdsSelfDescription"
DSP_VERSION = "2025-1"
VALIDITY = timedelta(days=30)


class SelfDescriptionError(ValueError):
    """A self-description that is malformed, expired, not self-issued or badly signed."""


class Subject(msgspec.Struct, frozen=True, rename="camel"):
    """The verified facts of a self-description."""

    id: str
    legal_name: str
    region: str
    dsp_endpoint: str
    dsp_version: str
    industry: str = ""
    contact: str = ""
    signing_key: str = ""
    agreement_key: str = ""


def utc_text(moment: datetime) -> str:
    """XML Schema dateTime in UTC with a ``Z``, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise SelfDescriptionError(f"{field} is missing")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SelfDescriptionError(f"{field} is not an XML Schema dateTime: {value!r}") from exc
    if moment.tzinfo is None:
        raise SelfDescriptionError(f"{field} has no time zone")
    return moment


def issue(subject: Subject, key: SigningKey, *, now: datetime, key_id: str | None = None) -> dict[str, Any]:
    """Build and sign the self-description of *subject*, valid for 30 days from *now*, with *key* (whose DID URL
    is *key_id*: the subject's first key unless given)."""
    credential = {
        "@context": [VC_CONTEXT, TDS_CONTEXT],
        "id": f"{subject.id}#self-description",
        "type": ["VerifiableCredential", CREDENTIAL_TYPE],
        "issuer": subject.id,
        "validFrom": utc_text(now),
        "validUntil": utc_text(now + VALIDITY),
        "credentialSubject": msgspec.to_builtins(subject),
    }
    return proof.sign(credential, key, verification_method=key_id or dids.signing_key_id(subject.id),
                      created=utc_text(now))


def verification_method(credential: dict[str, Any]) -> str:
    """The DID URL named by the credential's proof (to resolve before :func:`verify`)."""
    try:
        return str(proof.proof_of(credential)["verificationMethod"])
    except proof.ProofError as exc:
        raise SelfDescriptionError(str(exc)) from exc


def verify(credential: dict[str, Any], issuer_document: dict[str, Any], *, now: datetime) -> Subject:
    """Check a self-description against its issuer's DID document and return its subject."""
    if not isinstance(credential, dict):
        raise SelfDescriptionError("self-description is not a JSON object")
    types = credential.get("type")
    if not isinstance(types, list) or CREDENTIAL_TYPE not in types or "VerifiableCredential" not in types:
        raise SelfDescriptionError(f"type must include VerifiableCredential and {CREDENTIAL_TYPE}")
    issuer = credential.get("issuer")
    raw_subject = credential.get("credentialSubject")
    if not isinstance(raw_subject, dict) or raw_subject.get("id") != issuer:
        raise SelfDescriptionError("credentialSubject.id must equal the issuer (self-issued)")
    if issuer_document.get("id") != issuer:
        raise SelfDescriptionError("issuer DID document does not belong to the issuer")
    valid_from = _parse_time(credential.get("validFrom"), "validFrom")
    valid_until = _parse_time(credential.get("validUntil"), "validUntil")
    if not valid_from <= now <= valid_until:
        raise SelfDescriptionError(f"self-description is not valid now (valid {valid_from} to {valid_until})")
    method = verification_method(credential)

    try:
        if dids.split_did_url(method)[0] != issuer:
            raise SelfDescriptionError("proof was made by a key of another DID")
        proof.verify(credential, proof.key_resolver(issuer_document))
    except (proof.ProofError, dids.DidError) as exc:
        raise SelfDescriptionError(f"proof does not verify: {exc}") from exc
    try:
        return msgspec.convert(raw_subject, Subject)
    except msgspec.ValidationError as exc:
        raise SelfDescriptionError(f"credentialSubject: {exc}") from exc
