"""W3C Verifiable Credentials 2.0 about participants, and presentations of them to one verifier.

Theory of operation
-------------------
A participant's memberships and verified attributes are what *issuers* say about it, not what it says about
itself (its self-description, ``connector.identity.credentials``). An issuer (an industry alliance's node, a
registry, a certification body) signs a credential of one :class:`~connector.identity.claims.Kind` about a
holder's DID with :func:`issue`. The holder keeps its credentials and shows them to a verifier that asks:

1. The verifier sends a fresh, unguessable challenge.
2. The holder answers with :func:`present`: a Verifiable Presentation of its credentials with a proof by its
   own key (``proofPurpose`` ``authentication``) over the verifier's DID (``domain``), the challenge and the
   time (``created``). So a presentation convinces that verifier only, for that challenge only, and only for
   a short while (the verifier's ``max_age``).
3. The verifier resolves the DID documents of the holder and of the issuers it cares about
   (:func:`presentation_issuers` names them) and calls :func:`verify_presentation`. The presentation is
   checked as a whole first (size, holder key, domain, challenge, age, signature); if that fails,
   :class:`PresentationError` is raised and nothing in it counts. Then each credential on its own
   (:func:`verify_credential`): one that is about someone else, expired, not yet valid, badly signed, signed
   by a key its issuer does not list for ``assertionMethod``, or from an issuer whose DID document was not
   given, is refused with the check it failed; it does not hide the good ones (:class:`PresentationResult`).

Which issuers to believe for which kind of claim, and whether a credential has been revoked, is decided
after this, by ``connector.identity.trust``; revocation lists are ``connector.identity.status_list``.

Left to the verifier's shell: keep each challenge for one answer only (the core cannot see a second use), and
check that the presentation's holder is the peer it is talking to (the DID that signed the request).
Resolve only the issuers it may trust: the others are reported as refused (``issuer-unresolved``) without a
lookup, so a peer cannot make the node fetch DID documents from hosts of its choosing.

Signatures are ``eddsa-jcs-2022`` Data Integrity proofs made and checked by ``connector.identity.proof``: on a
credential by a key in the issuer's ``assertionMethod``, on a presentation by a key in the holder's
``authentication``. As for every document with an ``@context``, the proof carries the same ``@context``
(eddsa-jcs-2022 §3.3.5). A presentation proof's ``domain`` and ``challenge`` are proof options, so they are
part of the signed proof configuration ("let proofConfig be a clone of the options object", §3.3.5; Data
Integrity 1.0 §2.1).

Every input is bounded before it is walked: nesting depth, each string's length, the overall size, and the
number of credentials in a presentation (:data:`MAX_CREDENTIALS`). A refusal is a :class:`CredentialError`
whose :attr:`~CredentialError.check` names the check that failed (:class:`Check`, the first word of the
message too). Pure: no I/O and no clock; ``now`` is an argument and DID documents are passed in.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import msgspec
from nacl.signing import VerifyKey

from connector.identity import did as dids
from connector.identity import proof
from connector.identity.claims import ClaimError, Claims, Kind, from_subject, to_subject
from connector.identity.credentials import TDS_CONTEXT, VC_CONTEXT, utc_text
from connector.identity.keys import Signer

CREDENTIAL_TYPE = "VerifiableCredential"
PRESENTATION_TYPE = "VerifiablePresentation"
#: Bitstring Status List v1.0 §2.1: the type of a ``credentialStatus`` entry.
STATUS_ENTRY_TYPE = "BitstringStatusListEntry"
#: The status purposes read (§2.1); a set bit means revoked (for good) or suspended (for now).
STATUS_PURPOSES = frozenset({"revocation", "suspension"})

#: Credentials in one presentation. A participant has a handful; more is a way to make the verifier work.
MAX_CREDENTIALS = 16
#: One credential, measured as JSON text (ours are about 1.5 KB).
MAX_CREDENTIAL_BYTES = 16 * 1024
MAX_PRESENTATION_BYTES = MAX_CREDENTIALS * MAX_CREDENTIAL_BYTES + 4 * 1024
#: Nesting of a credential or presentation (a presentation nests its credentials' subjects at depth 4).
MAX_DEPTH = 12
#: Any one string (DIDs, URLs, names, proof values); longer ones are refused, not cut.
MAX_TEXT = 2048
MAX_DID = 512
MAX_CHALLENGE = 256
#: How far ahead of the verifier's clock a presentation's ``created`` may be (the holder's clock may run fast).
CLOCK_SKEW = timedelta(minutes=1)

_DID = re.compile(r"^did:[a-z0-9]+:[^\s#?]+$")
_KINDS = frozenset(kind.value for kind in Kind)
_INDEX = re.compile(r"^(0|[1-9][0-9]{0,9})$")


class Check(enum.StrEnum):
    """The check a credential, presentation or status list failed."""

    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    CONTEXT = "context"
    TYPE = "type"
    CLAIMS = "claims"
    STATUS_ENTRY = "status-entry"
    PROOF = "proof"
    ISSUER_KEY = "issuer-key"
    SIGNATURE = "signature"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    # presentations
    TOO_MANY = "too-many-credentials"
    HOLDER_KEY = "holder-key"
    DOMAIN = "domain"
    CHALLENGE = "challenge"
    TOO_OLD = "too-old"
    WRONG_HOLDER = "wrong-holder"
    ISSUER_UNRESOLVED = "issuer-unresolved"
    # status lists (connector.identity.status_list)
    STATUS_LIST_ID = "status-list-id"
    STATUS_LIST_GARBAGE = "status-list-garbage"
    STATUS_LIST_TOO_LARGE = "status-list-too-large"
    STATUS_LIST_TOO_SHORT = "status-list-too-short"
    STATUS_PURPOSE = "status-purpose"


class CredentialError(ValueError):
    """A document refused by one check: :attr:`check` names it, and the message starts with its name."""

    def __init__(self, check: Check, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


class PresentationError(CredentialError):
    """A presentation refused as a whole: none of its credentials counts."""


@dataclass(frozen=True)
class StatusEntry:
    """A credential's ``credentialStatus``: bit ``index`` of the status list credential at ``list_url``."""

    list_url: str
    index: int
    purpose: str = "revocation"

    def to_json(self) -> dict[str, Any]:
        """The ``BitstringStatusListEntry`` (Bitstring Status List v1.0 §2.1); the index is a base-10 string."""
        return {
            "id": f"{self.list_url}#{self.index}",
            "type": STATUS_ENTRY_TYPE,
            "statusPurpose": self.purpose,
            "statusListIndex": str(self.index),
            "statusListCredential": self.list_url,
        }


@dataclass(frozen=True)
class Envelope:
    """The checked outer part of a signed credential of any type (see :func:`verify_envelope`)."""

    id: str
    type: str
    issuer: str
    subject: dict[str, Any]
    valid_from: datetime
    valid_until: datetime | None
    status: tuple[StatusEntry, ...]


@dataclass(frozen=True)
class VerifiedCredential:
    """A credential whose signature, issuer key, validity and claims have been checked."""

    id: str
    kind: Kind
    issuer: str
    holder: str
    claims: Claims
    valid_from: datetime
    valid_until: datetime
    status: tuple[StatusEntry, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """A credential of a presentation that was refused, with what could be read of it."""

    index: int
    check: Check
    reason: str
    credential_id: str | None = None
    issuer: str | None = None
    kind: Kind | None = None


@dataclass(frozen=True)
class PresentationResult:
    """The outcome of a presentation whose holder proof holds: each credential accepted or refused."""

    holder: str
    accepted: tuple[VerifiedCredential, ...]
    refused: tuple[Refusal, ...]


# ---------------------------------------------------------------------------------------------------------
# Issuing and verifying credentials


def issue(
    claims: Claims,
    *,
    holder: str,
    signer: Signer,
    credential_id: str,
    now: datetime,
    valid_until: datetime,
    valid_from: datetime | None = None,
    status: StatusEntry | None = None,
) -> dict[str, Any]:
    """A credential stating *claims* about *holder*, signed by *signer* (its DID is the issuer) at *now*.

    *credential_id* is a ``urn:uuid:`` URN the caller makes (``f"urn:uuid:{uuid.uuid4()}"``); *status*, the
    credential's entry in one of the issuer's status lists, makes it revocable. Raises ``ValueError`` for
    arguments that would make a credential no verifier accepts.
    """
    issuer = dids.split_did_url(signer.key_id)[0]
    _local_did(holder, "holder")
    try:
        if not credential_id.startswith("urn:uuid:"):
            raise ValueError
        uuid.UUID(credential_id[len("urn:uuid:") :])
    except ValueError:
        raise ValueError(f"credential id {credential_id[:80]!r} is not a urn:uuid: URN") from None
    start = valid_from if valid_from is not None else now
    if utc_text(valid_until) <= utc_text(start):
        raise ValueError("validUntil must be after validFrom")
    credential: dict[str, Any] = {
        "@context": [VC_CONTEXT, TDS_CONTEXT],
        "id": credential_id,
        "type": [CREDENTIAL_TYPE, claims.kind.value],
        "issuer": issuer,
        "validFrom": utc_text(start),
        "validUntil": utc_text(valid_until),
        "credentialSubject": to_subject(claims, holder),
    }
    if status is not None:
        _status_entry(status.to_json())  # the checks a verifier will make
        credential["credentialStatus"] = status.to_json()
    return proof.sign(credential, signer.key, verification_method=signer.key_id, created=utc_text(now))


#: Credentials verified lately (by the exact JSON text of the credential and of its issuer's DID document):
#: a holder shows the same ones in every handshake, so only their validity period is checked again.
VERIFIED_MEMO_ENTRIES = 1024
_verified: OrderedDict[bytes, VerifiedCredential] = OrderedDict()


def verify_credential(document: Any, issuer_document: Mapping[str, Any], *, now: datetime) -> VerifiedCredential:
    """Check a credential of one of the :class:`Kind` s against its issuer's DID document, at *now*.

    These kinds must carry ``validUntil`` (optional in VC 2.0): a claim without an end could never leave a
    verifier's cache. Raises :class:`CredentialError` naming the failed check. Does not decide whether the
    issuer is to be believed (``connector.identity.trust``) or whether the credential was revoked (its
    :attr:`status` entries are for ``connector.identity.status_list``). A credential verified lately against
    the same issuer document has only its validity period checked again.
    """
    key = _memo_key(document, issuer_document)
    found = _verified.get(key) if key is not None else None
    if found is not None and key is not None:
        _verified.move_to_end(key)
        _check_period(found.id, found.valid_from, found.valid_until, now)
        return found
    verified = _verify_credential(document, issuer_document, now=now)
    if key is not None:
        _verified[key] = verified
        while len(_verified) > VERIFIED_MEMO_ENTRIES:
            _verified.popitem(last=False)
    return verified


def forget_verified() -> None:
    """Empty the memos of verified credentials and proofs (``connector.identity.proof``): the next check of
    every credential is a full one."""
    _verified.clear()
    proof.forget_memos()


def _memo_key(document: Any, issuer_document: Mapping[str, Any]) -> bytes | None:
    try:
        text = msgspec.json.encode(document)
        issuer_text = msgspec.json.encode(issuer_document)
    except (TypeError, ValueError, OverflowError):
        return None
    if len(text) > MAX_CREDENTIAL_BYTES:
        return None
    return hashlib.sha256(text).digest() + hashlib.sha256(issuer_text).digest()


def _check_period(credential_id: str, valid_from: datetime, valid_until: datetime | None, now: datetime) -> None:
    if now < valid_from:
        raise CredentialError(Check.NOT_YET_VALID, f"credential {credential_id} is valid from {utc_text(valid_from)}")
    if valid_until is not None and now > valid_until:
        raise CredentialError(Check.EXPIRED, f"credential {credential_id} expired at {utc_text(valid_until)}")


def _verify_credential(document: Any, issuer_document: Mapping[str, Any], *, now: datetime) -> VerifiedCredential:
    envelope = verify_envelope(
        document, issuer_document, now=now, types=_KINDS, contexts=(VC_CONTEXT, TDS_CONTEXT),
        max_bytes=MAX_CREDENTIAL_BYTES, require_valid_until=True,
    )
    kind = Kind(envelope.type)
    holder = envelope.subject.get("id")
    if not isinstance(holder, str) or not _DID.match(holder) or len(holder) > MAX_DID:
        raise CredentialError(Check.MALFORMED, "credentialSubject.id is not the holder's DID")
    try:
        claims = from_subject(kind, envelope.subject)
    except ClaimError as exc:
        raise CredentialError(Check.CLAIMS, f"{kind}: {exc}") from None
    if envelope.valid_until is None:  # required above; a claim without an end could never leave a cache
        raise CredentialError(Check.MALFORMED, "validUntil is missing")
    return VerifiedCredential(
        id=envelope.id, kind=kind, issuer=envelope.issuer, holder=holder, claims=claims,
        valid_from=envelope.valid_from, valid_until=envelope.valid_until, status=envelope.status,
    )


def verify_envelope(
    document: Any,
    issuer_document: Mapping[str, Any],
    *,
    now: datetime,
    types: Collection[str],
    contexts: Sequence[str],
    max_bytes: int,
    require_valid_until: bool,
    long_text: Collection[str] = (),
) -> Envelope:
    """The checks every signed credential passes, whatever it says (used for status lists too).

    In order: bounds (*max_bytes*, :data:`MAX_DEPTH`, :data:`MAX_TEXT` except for properties named in
    *long_text*), ``@context`` (the VC 2.0 context first, all of *contexts*), ``type`` (exactly one of
    *types*), ``id``, ``issuer``, one ``credentialSubject`` object, ``validFrom``/``validUntil``, the proof's
    key (listed for ``assertionMethod`` in *issuer_document*, which must be the issuer's), the signature,
    the validity period at *now*, and the ``credentialStatus`` entries.
    """
    _check_bounds(document, max_bytes=max_bytes, long_text=frozenset(long_text))
    _check_context(document.get("@context"), contexts)
    found = [t for t in _types(document.get("type")) if t in types]
    if CREDENTIAL_TYPE not in _types(document.get("type")) or len(found) != 1:
        raise CredentialError(Check.TYPE, f"type must be {CREDENTIAL_TYPE} and one of {sorted(types)}")
    credential_id = document.get("id")
    if not isinstance(credential_id, str) or not credential_id:
        raise CredentialError(Check.MALFORMED, "the credential has no id")
    issuer = _issuer(document.get("issuer"))
    subject = document.get("credentialSubject")
    if not isinstance(subject, dict):
        raise CredentialError(Check.MALFORMED, "credentialSubject must be one object")
    valid_from = _time(document.get("validFrom"), "validFrom")
    valid_until = None
    if require_valid_until or "validUntil" in document:
        valid_until = _time(document.get("validUntil"), "validUntil")
        if valid_until < valid_from:
            raise CredentialError(Check.MALFORMED, "validUntil is before validFrom")
    _verify_proof(document, issuer_document, did=issuer, relationship="assertionMethod", key_check=Check.ISSUER_KEY)
    _check_period(credential_id, valid_from, valid_until, now)
    return Envelope(
        id=credential_id, type=found[0], issuer=issuer, subject=subject, valid_from=valid_from,
        valid_until=valid_until, status=status_entries(document.get("credentialStatus")),
    )


# ---------------------------------------------------------------------------------------------------------
# Presentations


def present(
    credentials: Sequence[Mapping[str, Any]], *, holder: Signer, domain: str, challenge: str, now: datetime
) -> dict[str, Any]:
    """A presentation of *credentials* for the verifier *domain* (its DID), answering *challenge*.

    Signed by the holder's key (``proofPurpose`` ``authentication``) with ``domain``, ``challenge`` and
    ``created`` in the signed proof options. The credentials must all be about the holder.
    """
    holder_did = dids.split_did_url(holder.key_id)[0]
    if len(credentials) > MAX_CREDENTIALS:
        raise ValueError(f"a presentation holds at most {MAX_CREDENTIALS} credentials")
    if not domain or len(domain) > MAX_DID or not challenge or len(challenge) > MAX_CHALLENGE:
        raise ValueError(f"domain and challenge must be non-empty (at most {MAX_DID}/{MAX_CHALLENGE} characters)")
    for credential in credentials:
        subject = credential.get("credentialSubject")
        if not isinstance(subject, dict) or subject.get("id") != holder_did:
            raise ValueError(f"credential {credential.get('id')!r} is not about {holder_did}")
    presentation = {
        "@context": [VC_CONTEXT],
        "type": [PRESENTATION_TYPE],
        "holder": holder_did,
        "verifiableCredential": [dict(c) for c in credentials],
    }
    return proof.sign(presentation, holder.key, verification_method=holder.key_id, created=utc_text(now),
                      proof_purpose="authentication", options={"domain": domain, "challenge": challenge})


def presentation_issuers(presentation: Any) -> frozenset[str]:
    """The issuers named in a presentation, whose DID documents :func:`verify_presentation` will want.

    Only how many credentials it holds is checked here (:class:`PresentationError`; the rest, bounds included,
    by :func:`verify_presentation`); the caller resolves the ones it may trust.
    """
    credentials = _presentation_shape(presentation, bounds=False)
    found = set()
    for credential in credentials:
        try:
            found.add(_issuer(credential.get("issuer")) if isinstance(credential, dict) else "")
        except CredentialError:
            continue
    return frozenset(found - {""})


def verify_presentation(
    presentation: Any,
    holder_document: Mapping[str, Any],
    *,
    issuer_documents: Mapping[str, Mapping[str, Any]],
    expected_domain: str,
    expected_challenge: str,
    now: datetime,
    max_age: timedelta,
) -> PresentationResult:
    """Check a presentation made for *expected_domain* answering *expected_challenge*, then each credential.

    *holder_document* is the DID document of the peer that answered; *issuer_documents* maps issuer DIDs to
    their resolved documents (a credential whose issuer is missing is refused as ``issuer-unresolved``).
    Raises :class:`PresentationError` when the presentation as a whole fails; otherwise returns every
    credential accepted or refused with its reason.
    """
    try:
        holder, credentials = _verify_holder_proof(
            presentation, holder_document, expected_domain=expected_domain, expected_challenge=expected_challenge,
            now=now, max_age=max_age,
        )
    except PresentationError:
        raise
    except CredentialError as exc:
        raise PresentationError(exc.check, exc.detail) from None
    accepted: list[VerifiedCredential] = []
    refused: list[Refusal] = []
    for index, raw in enumerate(credentials):
        credential_id, issuer, kind = _peek(raw)
        try:
            subject = raw.get("credentialSubject") if isinstance(raw, dict) else None
            if not isinstance(subject, dict) or subject.get("id") != holder:
                raise CredentialError(Check.WRONG_HOLDER, f"the credential is not about the holder {holder}")
            if issuer is None:
                raise CredentialError(Check.MALFORMED, "the credential has no issuer DID")
            issuer_document = issuer_documents.get(issuer)
            if issuer_document is None:
                raise CredentialError(Check.ISSUER_UNRESOLVED, f"no DID document of the issuer {issuer}")
            accepted.append(verify_credential(raw, issuer_document, now=now))
        except CredentialError as exc:
            refused.append(Refusal(index, exc.check, str(exc), credential_id, issuer, kind))
    return PresentationResult(holder=holder, accepted=tuple(accepted), refused=tuple(refused))


def _presentation_shape(presentation: Any, *, bounds: bool = True) -> list[Any]:
    try:
        if bounds:
            _check_bounds(presentation, max_bytes=MAX_PRESENTATION_BYTES, long_text=frozenset())
        elif not isinstance(presentation, dict):
            raise CredentialError(Check.MALFORMED, "not a JSON object")
        credentials = presentation.get("verifiableCredential", [])
        if isinstance(credentials, dict):
            credentials = [credentials]
        if not isinstance(credentials, list):
            raise CredentialError(Check.MALFORMED, "verifiableCredential must be a list of credentials")
        if len(credentials) > MAX_CREDENTIALS:
            raise CredentialError(Check.TOO_MANY, f"{len(credentials)} credentials (at most {MAX_CREDENTIALS})")
    except CredentialError as exc:
        raise PresentationError(exc.check, exc.detail) from None
    return credentials


def _verify_holder_proof(
    presentation: Any,
    holder_document: Mapping[str, Any],
    *,
    expected_domain: str,
    expected_challenge: str,
    now: datetime,
    max_age: timedelta,
) -> tuple[str, list[Any]]:
    credentials = _presentation_shape(presentation)
    _check_context(presentation.get("@context"), (VC_CONTEXT,))
    if PRESENTATION_TYPE not in _types(presentation.get("type")):
        raise CredentialError(Check.TYPE, f"type must include {PRESENTATION_TYPE}")
    holder = _issuer(presentation.get("holder"), field="holder")
    try:
        signed = proof.proof_of(presentation)
    except proof.ProofError as exc:
        raise CredentialError(Check.PROOF, str(exc)) from None
    if signed["proofPurpose"] != "authentication":
        raise CredentialError(Check.PROOF, f"proof purpose is {signed['proofPurpose']!r}, not 'authentication'")
    domain = signed.get("domain")
    domains = domain if isinstance(domain, list) else [domain]
    if expected_domain not in domains:  # Data Integrity 1.0 §4.3: INVALID_DOMAIN_ERROR
        raise CredentialError(Check.DOMAIN, f"the presentation was made for {domain!r}, not {expected_domain!r}")
    if signed.get("challenge") != expected_challenge:  # §4.3: INVALID_CHALLENGE_ERROR
        raise CredentialError(Check.CHALLENGE, "the presentation answers another challenge")
    created = _time(signed["created"], "proof.created")
    if created > now + CLOCK_SKEW:
        raise CredentialError(Check.NOT_YET_VALID, f"the presentation was made in the future ({signed['created']})")
    if now - created > max_age:
        raise CredentialError(Check.TOO_OLD, f"the presentation was made at {signed['created']}, more than "
                                             f"{max_age} ago")
    if "expires" in signed and now > _time(signed["expires"], "proof.expires"):
        raise CredentialError(Check.EXPIRED, f"the presentation proof expired at {signed['expires']}")
    _verify_proof(presentation, holder_document, did=holder, relationship="authentication",
                  key_check=Check.HOLDER_KEY)
    return holder, credentials


# ---------------------------------------------------------------------------------------------------------
# Pieces


def _verify_proof(
    document: Mapping[str, Any], did_document: Mapping[str, Any], *, did: str, relationship: str, key_check: Check
) -> None:
    try:
        signed = proof.proof_of(document)
    except proof.ProofError as exc:
        raise CredentialError(Check.PROOF, str(exc)) from None
    if signed["proofPurpose"] != relationship:
        raise CredentialError(Check.PROOF, f"proof purpose is {signed['proofPurpose']!r}, not {relationship!r}")
    method = signed["verificationMethod"]
    if did_document.get("id") != did:
        raise CredentialError(key_check, f"the DID document given is not the one of {did}")
    try:
        if dids.split_did_url(method)[0] != did:
            raise CredentialError(key_check, f"the proof was made with {method!r}, not a key of {did}")
        key = proof.key_resolver(did_document, relationship)(method)
    except (proof.ProofError, dids.DidError) as exc:
        raise CredentialError(key_check, str(exc)) from None

    def resolve(_: str) -> VerifyKey:
        return key

    try:
        proof.verify(document, resolve, expected_purpose=relationship)
    except proof.ProofError as exc:
        raise CredentialError(Check.SIGNATURE, str(exc)) from None


def _check_bounds(value: Any, *, max_bytes: int, long_text: frozenset[str]) -> None:
    """Refuse what is not a JSON object of bounded depth, string lengths and size (measured as JSON text)."""
    if not isinstance(value, dict):
        raise CredentialError(Check.MALFORMED, "not a JSON object")
    _Bounds(max_bytes, long_text).walk(value, None, 1)


class _Bounds:
    """One walk of a document checking its depth (:data:`MAX_DEPTH`), property names, string lengths
    (:data:`MAX_TEXT`, except properties named in *long_text*) and size as JSON text (scalars counted as 24)."""

    def __init__(self, max_bytes: int, long_text: frozenset[str]) -> None:
        self.max_bytes = max_bytes
        self.long_text = long_text
        self.size = 0

    def walk(self, item: Any, key: str | None, depth: int) -> None:
        kind = type(item)
        if kind is str:
            if len(item) > MAX_TEXT and key not in self.long_text:
                raise CredentialError(Check.TOO_LARGE, f"{key or 'a string'} is {len(item)} characters long "
                                                       f"(at most {MAX_TEXT})")
            self.size += len(item) + 2
        elif kind is dict or kind is list:
            if depth > MAX_DEPTH:
                raise CredentialError(Check.TOO_LARGE, f"JSON nested deeper than {MAX_DEPTH} levels")
            self.size += 2 + len(item)
            if kind is dict:
                for name, child in item.items():
                    if type(name) is not str or len(name) > 256:
                        raise CredentialError(Check.MALFORMED, "a property name is not a short string")
                    self.size += len(name) + 3
                    self.walk(child, name, depth + 1)
            else:
                for child in item:
                    self.walk(child, key, depth + 1)
        elif item is None or isinstance(item, bool | int | float):
            self.size += 24
        else:
            raise CredentialError(Check.MALFORMED, f"not JSON: a {type(item).__name__}")
        if self.size > self.max_bytes:
            raise CredentialError(Check.TOO_LARGE, f"the document is larger than {self.max_bytes} bytes")


def _check_context(value: Any, required: Sequence[str]) -> None:
    contexts = value if isinstance(value, list) else [value]
    # VC 2.0 §4.3: the first item of @context MUST be https://www.w3.org/ns/credentials/v2.
    if not contexts or contexts[0] != VC_CONTEXT or any(c not in contexts for c in required):
        raise CredentialError(Check.CONTEXT, f"@context must start with {VC_CONTEXT} and include {list(required)}")


def _types(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str)]


def _issuer(value: Any, field: str = "issuer") -> str:
    """A DID, written as a string or as an object with an ``id`` (VC 2.0 §4.7)."""
    did = value.get("id") if isinstance(value, dict) else value
    if not isinstance(did, str) or len(did) > MAX_DID or not _DID.match(did):
        raise CredentialError(Check.MALFORMED, f"{field} is not a DID")
    return did


def _local_did(value: str, field: str) -> None:
    if len(value) > MAX_DID or not _DID.match(value):
        raise ValueError(f"{field} {value[:80]!r} is not a DID")


def _time(value: Any, field: str) -> datetime:
    """An XML Schema ``dateTimeStamp`` (VC 2.0 §4.9): a date and time with its time zone."""
    if not isinstance(value, str) or len(value) > 40:
        raise CredentialError(Check.MALFORMED, f"{field} is missing or not a date and time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CredentialError(Check.MALFORMED, f"{field} is not a date and time: {value!r}") from None
    if moment.tzinfo is None:
        raise CredentialError(Check.MALFORMED, f"{field} has no time zone: {value!r}")
    return moment


def status_entries(value: Any) -> tuple[StatusEntry, ...]:
    """A credential's ``credentialStatus`` entries (none, one or a list of at most 4); CredentialError if not."""
    if value is None:
        return ()
    entries = value if isinstance(value, list) else [value]
    if len(entries) > 4:
        raise CredentialError(Check.STATUS_ENTRY, f"{len(entries)} status entries (at most 4)")
    return tuple(_status_entry(entry) for entry in entries)


def _status_entry(value: Any) -> StatusEntry:
    """A ``BitstringStatusListEntry`` (Bitstring Status List v1.0 §2.1) of one bit (``statusSize`` 1)."""
    if not isinstance(value, dict) or value.get("type") != STATUS_ENTRY_TYPE:
        raise CredentialError(Check.STATUS_ENTRY, f"credentialStatus is not a {STATUS_ENTRY_TYPE}")
    purpose = value.get("statusPurpose")
    if purpose not in STATUS_PURPOSES:
        raise CredentialError(Check.STATUS_ENTRY, f"status purpose {purpose!r} is not one of {sorted(STATUS_PURPOSES)}")
    index = value.get("statusListIndex")
    if not isinstance(index, str) or not _INDEX.match(index):
        raise CredentialError(Check.STATUS_ENTRY, "statusListIndex is not a base-10 number in a string")
    if value.get("statusSize", 1) != 1:
        raise CredentialError(Check.STATUS_ENTRY, "only status entries of one bit (statusSize 1) are read")
    url = value.get("statusListCredential")
    if not isinstance(url, str) or not _is_http_url(url):
        raise CredentialError(Check.STATUS_ENTRY, "statusListCredential is not an http(s) URL")
    return StatusEntry(list_url=url, index=int(index), purpose=str(purpose))


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("https", "http") and bool(parts.netloc) and not parts.fragment


def _peek(raw: Any) -> tuple[str | None, str | None, Kind | None]:
    """What can be read of a credential before it is checked, to say which one was refused."""
    if not isinstance(raw, dict):
        return None, None, None
    credential_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    try:
        issuer: str | None = _issuer(raw.get("issuer"))
    except CredentialError:
        issuer = None
    kinds = [Kind(t) for t in _types(raw.get("type")) if t in _KINDS]
    return credential_id, issuer, kinds[0] if len(kinds) == 1 else None
