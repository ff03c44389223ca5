"""Whom a node believes, for what: issuers trusted per kind of claim, and which of a peer's claims count.

Theory of operation
-------------------
There is no central authority: each node chooses its issuers. A :class:`TrustList` names, per issuer DID, the
kinds of claim it is believed for (and, for memberships, optionally which data spaces): an industry alliance
for membership of its data space, a registry for legal entities and regions, a certification body for
certifications.

After a presentation has been verified (``connector.identity.vc``) and the status lists its credentials name
have been fetched and verified (``connector.identity.status_list``), :func:`verified_claims` says what the
peer has shown that counts:

- a credential counts only if its issuer is trusted for its kind (a membership only for a data space the
  issuer is trusted for); otherwise it is *shown, not counted*, with the reason. An issuer trusted for
  memberships is not thereby trusted for regions;
- its status must be valid: a revoked or suspended credential does not count, nor does one whose status is
  unknown (a list that could not be fetched or verified): unknown fails closed, and the reason is kept;
- a single-valued claim (region, legal entity) that trusted issuers state differently does not count at all,
  since the node cannot tell which is true;
- credentials the presentation check refused are reported beside them.

Each counted claim keeps the earliest time at which something it rests on runs out (the credential's
``validUntil``, the freshness of its status list answer, and when several credentials state the same claim,
the earliest of them) so that a cache knows when to drop it; :attr:`PeerClaims.until` is the earliest of all.

A participant's own credentials count by the same rules under its own trust list (:func:`held_claims`): that
is what its usage control evaluates a policy's verified operands against on each use.

To fetch only what may count, the shell resolves the DID documents of :attr:`TrustList.issuers` only, and
fetches the lists :func:`status_lists_to_fetch` names. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from connector.identity.claims import Certification, Claims, Kind, LegalEntity, Membership, Region
from connector.identity.status_list import Status, StatusState
from connector.identity.vc import PresentationResult, VerifiedCredential

C = TypeVar("C", Membership, LegalEntity, Region, Certification)


@dataclass(frozen=True)
class TrustedIssuer:
    """What one issuer is believed for: *kinds*, and for memberships the data spaces *spaces* (None: any)."""

    kinds: frozenset[Kind]
    spaces: frozenset[str] | None = None


class TrustList:
    """The issuers a node believes, each for some kinds of claim."""

    def __init__(self, issuers: Mapping[str, TrustedIssuer | Iterable[Kind]] | None = None) -> None:
        self._issuers = {
            did: entry if isinstance(entry, TrustedIssuer) else TrustedIssuer(frozenset(entry))
            for did, entry in (issuers or {}).items()
        }

    def fingerprint(self) -> int:
        """Equal for lists that believe the same issuers for the same things (within one process)."""
        return hash(frozenset(self._issuers.items()))

    @property
    def issuers(self) -> frozenset[str]:
        """The DIDs of the issuers trusted for anything (the only ones worth resolving)."""
        return frozenset(self._issuers)

    def refusal(self, issuer: str, claims: Claims) -> str | None:
        """Why *claims* by *issuer* are not believed, or None if they are."""
        entry = self._issuers.get(issuer)
        if entry is None:
            return f"the issuer {issuer} is not trusted"
        if claims.kind not in entry.kinds:
            return f"the issuer {issuer} is not trusted for {claims.kind}"
        if isinstance(claims, Membership) and entry.spaces is not None and claims.data_space not in entry.spaces:
            return f"the issuer {issuer} is not trusted for membership of {claims.data_space}"
        return None


@dataclass(frozen=True)
class Claim(Generic[C]):
    """A counted claim, who vouches for it, and until when it may be kept."""

    value: C
    issuer: str
    credential_id: str
    until: datetime


@dataclass(frozen=True)
class NotCounted:
    """A credential shown but not counted, and why."""

    credential_id: str | None
    issuer: str | None
    kind: Kind | None
    reason: str


@dataclass(frozen=True)
class PeerClaims:
    """What a peer has shown that counts, and what it showed that does not."""

    holder: str
    memberships: tuple[Claim[Membership], ...] = ()
    legal_entity: Claim[LegalEntity] | None = None
    region: Claim[Region] | None = None
    certifications: tuple[Claim[Certification], ...] = ()
    not_counted: tuple[NotCounted, ...] = ()

    @property
    def until(self) -> datetime | None:
        """When the first counted claim runs out (None: nothing counted)."""
        claims: list[Claim[Membership] | Claim[LegalEntity] | Claim[Region] | Claim[Certification]] = [
            *self.memberships, *self.certifications
        ]
        claims += [c for c in (self.legal_entity, self.region) if c is not None]
        return min((c.until for c in claims), default=None)

    def member_of(self, space: str) -> tuple[Claim[Membership], ...]:
        """The counted memberships of data space *space* (one per role)."""
        return tuple(m for m in self.memberships if m.value.data_space == space)


def status_lists_to_fetch(result: PresentationResult, trust: TrustList) -> frozenset[str]:
    """The URLs of the status lists of the accepted credentials that may count."""
    return frozenset(
        entry.list_url
        for credential in result.accepted
        if trust.refusal(credential.issuer, credential.claims) is None
        for entry in credential.status
    )


def verified_claims(
    result: PresentationResult, trust: TrustList, status_of: Callable[[VerifiedCredential], Status]
) -> PeerClaims:
    """The peer's claims that count: by an issuer trusted for their kind, of valid status, not disputed.

    *status_of* gives a credential's status (``connector.identity.status_list.checker``); it is asked only
    about credentials by trusted issuers.
    """
    not_counted = [NotCounted(r.credential_id, r.issuer, r.kind, f"refused: {r.reason}") for r in result.refused]
    memberships: dict[Membership, Claim[Membership]] = {}
    entities: dict[LegalEntity, Claim[LegalEntity]] = {}
    regions: dict[Region, Claim[Region]] = {}
    certifications: dict[Certification, Claim[Certification]] = {}
    for credential in result.accepted:
        refusal = trust.refusal(credential.issuer, credential.claims)
        if refusal is not None:
            not_counted.append(_not_counted(credential, f"shown, not counted: {refusal}"))
            continue
        status = status_of(credential)
        if status.state is not StatusState.VALID:
            reason = f"status {status.state}: {status.reason}" if status.reason else f"status {status.state}"
            not_counted.append(_not_counted(credential, reason))
            continue
        until = credential.valid_until if status.until is None else min(credential.valid_until, status.until)
        value = credential.claims
        if isinstance(value, Membership):
            _keep(memberships, Claim(value, credential.issuer, credential.id, until))
        elif isinstance(value, LegalEntity):
            _keep(entities, Claim(value, credential.issuer, credential.id, until))
        elif isinstance(value, Region):
            _keep(regions, Claim(value, credential.issuer, credential.id, until))
        else:
            _keep(certifications, Claim(value, credential.issuer, credential.id, until))
    return PeerClaims(
        holder=result.holder,
        memberships=tuple(memberships.values()),
        legal_entity=_single(entities, Kind.LEGAL_ENTITY, not_counted),
        region=_single(regions, Kind.REGION, not_counted),
        certifications=tuple(certifications.values()),
        not_counted=tuple(not_counted),
    )


def held_claims(holder: str, held: Iterable[VerifiedCredential], trust: TrustList, now: datetime,
                status_of: Callable[[VerifiedCredential], Status] | None = None) -> PeerClaims:
    """What a participant's own credentials count for under its own trust list now, as
    :func:`verified_claims` counts a peer's: by an issuer trusted for their kind, not disputed, of valid status
    and valid now.

    *held* are the credentials it keeps, each checked when it came in (signature, validity, status). *status_of*
    gives each one's status now, from its issuer's status list, as a verifier's handshake asks it (a credential
    revoked since it came in must not go on counting for the holder's own usage control); None: valid until it
    runs out. This is what the participant's own usage control evaluates a policy's verified operands against."""
    current = tuple(c for c in held if c.holder == holder and c.valid_from <= now < c.valid_until)
    return verified_claims(PresentationResult(holder, current, ()), trust,
                           status_of or (lambda credential: Status(StatusState.VALID, until=credential.valid_until)))


def _not_counted(credential: VerifiedCredential, reason: str) -> NotCounted:
    return NotCounted(credential.id, credential.issuer, credential.kind, reason)


def _keep(found: dict[C, Claim[C]], claim: Claim[C]) -> None:
    """Keep one claim per value: the one that runs out first."""
    earlier = found.get(claim.value)
    if earlier is None or claim.until < earlier.until:
        found[claim.value] = claim


def _single(found: dict[C, Claim[C]], kind: Kind, not_counted: list[NotCounted]) -> Claim[C] | None:
    """The one value trusted issuers agree on; when they disagree, none, and each is reported."""
    if len(found) <= 1:
        return next(iter(found.values()), None)
    for claim in found.values():
        not_counted.append(NotCounted(claim.credential_id, claim.issuer, kind,
                                      f"trusted issuers disagree on the {kind} claims; none is counted"))
    return None
