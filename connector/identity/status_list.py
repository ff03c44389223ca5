"""W3C Bitstring Status List v1.0: revoking credentials without learning who checks which one.

Theory of operation
-------------------
An issuer keeps, per status purpose, a list of bits with one place per credential it issued; a credential's
``credentialStatus`` (:class:`~connector.identity.vc.StatusEntry`) names the list's URL and its place. Bit set:
revoked (or suspended, for a suspension list). The issuer publishes the list as a signed credential
(:func:`issue_status_list`) whose ``encodedList`` is the bitstring GZIP-compressed (RFC 1952), then base64url
without padding behind the multibase prefix ``u`` (§2.2). Index 0 is the left-most bit: the most significant
bit of the first byte. A verifier fetches the whole list, so the issuer does not learn which credential is
being checked; that is why a list holds at least :data:`MIN_ENTRIES` (131,072 bits, 16 KB; §2.2, §6).

Verifying a list (:func:`verify_status_list`) is verifying a credential (``connector.identity.vc``: issuer key
listed for ``assertionMethod``, signature, validity), then: its ``id`` is the URL it was fetched from, its
subject is a ``BitstringStatusList`` of a known purpose, and its ``encodedList`` is bounded before and while it
is inflated, since a few kilobytes of GZIP inflate to gigabytes (:data:`MAX_LIST_BYTES`). Garbage (not
multibase base64url, not GZIP, cut short, trailing bytes) and lists shorter than the minimum
(STATUS_LIST_LENGTH_ERROR, §3.2) are refused. The list is only inflated once its signature holds.

Looking up a credential (:func:`check`) in the verified lists at hand gives a :class:`Status`: valid (until
the list's answer goes stale: its ``validUntil``, or its ``ttl`` counted from when it was verified, else
:data:`DEFAULT_TTL`), revoked, suspended, or unknown with the reason: no list, a list signed by someone other
than the credential's issuer (else whoever can serve that URL could vouch for a revoked credential), of
another purpose, stale, or too short for the index (RANGE_ERROR, §3.2). Unknown fails closed: no claim of a
credential whose status is unknown is counted (``connector.identity.trust``).

Pure: no I/O, no clock; the shell fetches the list from the entry's URL (through the outbound guard) and
resolves the issuer's DID document.
"""

from __future__ import annotations

import base64
import enum
import gzip
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connector.identity import did as dids
from connector.identity import proof
from connector.identity.credentials import VC_CONTEXT, utc_text
from connector.identity.keys import Signer
from connector.identity.vc import (
    CREDENTIAL_TYPE,
    STATUS_PURPOSES,
    Check,
    CredentialError,
    VerifiedCredential,
    verify_envelope,
)

LIST_CREDENTIAL_TYPE = "BitstringStatusListCredential"
LIST_TYPE = "BitstringStatusList"
#: §2.2: "The uncompressed bitstring MUST be at least 16KB in size": 131,072 one-bit entries.
MIN_ENTRIES = 16 * 1024 * 8
#: The largest inflated list read: 64 times the minimum, 8,388,608 entries. A list that inflates to more is
#: refused as it inflates, never held whole.
MAX_LIST_BYTES = 1024 * 1024
#: How long a list's answer holds when it says nothing (no ``ttl``); 300,000 ms, the figure earlier drafts
#: of the specification prescribed.
DEFAULT_TTL = timedelta(minutes=5)

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class StatusListError(CredentialError):
    """A status list refused: garbage, too large, too short, badly signed or not the list asked for."""


class Bitstring:
    """The bits of a status list; index 0 is the most significant bit of the first byte (§2.2)."""

    __slots__ = ("_bytes",)

    def __init__(self, entries: int = MIN_ENTRIES) -> None:
        if entries < MIN_ENTRIES or entries % 8:
            raise ValueError(f"a status list holds a multiple of 8 entries, at least {MIN_ENTRIES}")
        self._bytes = bytearray(entries // 8)

    def __len__(self) -> int:
        return len(self._bytes) * 8

    def __getitem__(self, index: int) -> bool:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside the list of {len(self)} entries")
        return bool(self._bytes[index // 8] & (0x80 >> (index % 8)))

    def set(self, index: int, value: bool = True) -> None:
        """Set (revoke) or clear the bit at *index*."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside the list of {len(self)} entries")
        mask = 0x80 >> (index % 8)
        if value:
            self._bytes[index // 8] |= mask
        else:
            self._bytes[index // 8] &= ~mask & 0xFF

    def encode(self) -> str:
        """The ``encodedList``: ``u`` + base64url without padding of the GZIP-compressed bits (§2.2)."""
        compressed = gzip.compress(bytes(self._bytes), mtime=0)  # mtime 0: the same bits encode the same
        return "u" + base64.urlsafe_b64encode(compressed).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, encoded: Any, *, max_bytes: int = MAX_LIST_BYTES) -> Bitstring:
        """Read an ``encodedList``, inflating at most *max_bytes*; :class:`StatusListError` otherwise."""
        if not isinstance(encoded, str) or not encoded.startswith("u"):
            raise StatusListError(Check.STATUS_LIST_GARBAGE, "encodedList is not multibase base64url (prefix 'u')")
        body = encoded[1:]
        if len(body) > max_encoded_length(max_bytes):
            raise StatusListError(Check.STATUS_LIST_TOO_LARGE, f"encodedList is {len(encoded)} characters long")
        if not _BASE64URL.match(body) or len(body) % 4 == 1:
            raise StatusListError(Check.STATUS_LIST_GARBAGE, "encodedList is not base64url without padding")
        compressed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # a GZIP member only (RFC 1952)
        try:
            data = inflater.decompress(compressed, max_bytes + 1)
        except zlib.error as exc:
            raise StatusListError(Check.STATUS_LIST_GARBAGE, f"encodedList is not GZIP: {exc}") from None
        if len(data) > max_bytes:
            raise StatusListError(Check.STATUS_LIST_TOO_LARGE, f"the list inflates to more than {max_bytes} bytes")
        if not inflater.eof:
            raise StatusListError(Check.STATUS_LIST_GARBAGE, "the GZIP stream of encodedList is cut short")
        if inflater.unused_data:
            raise StatusListError(Check.STATUS_LIST_GARBAGE, "encodedList has bytes after its GZIP stream")
        if len(data) * 8 < MIN_ENTRIES:  # §3.2: STATUS_LIST_LENGTH_ERROR
            raise StatusListError(Check.STATUS_LIST_TOO_SHORT, f"the list holds {len(data) * 8} entries, fewer "
                                                               f"than the {MIN_ENTRIES} required")
        bits = cls.__new__(cls)
        bits._bytes = bytearray(data)
        return bits


def max_encoded_length(max_bytes: int) -> int:
    """The longest ``encodedList`` (after its prefix) that can hold a list of *max_bytes*.

    GZIP adds at most 5 bytes per 16 KB stored block and 18 bytes of header and trailer (RFC 1951 §3.2.4,
    RFC 1952 §2.3); base64 makes 4 characters of 3 bytes.
    """
    return (max_bytes + 5 * (max_bytes // 16384 + 1) + 18 + 2) * 4 // 3 + 4


@dataclass(frozen=True)
class StatusList:
    """A verified status list credential: whose it is, what for, its bits and until when it holds."""

    url: str
    issuer: str
    purpose: str
    bits: Bitstring
    fresh_until: datetime


class StatusState(enum.StrEnum):
    VALID = "valid"
    REVOKED = "revoked"
    SUSPENDED = "suspended"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Status:
    """A credential's status; ``until`` bounds a valid answer, ``reason`` says why it is not one."""

    state: StatusState
    reason: str = ""
    until: datetime | None = None

    @classmethod
    def unknown(cls, reason: str) -> Status:
        return cls(StatusState.UNKNOWN, reason)


def issue_status_list(
    bits: Bitstring,
    *,
    url: str,
    signer: Signer,
    now: datetime,
    valid_until: datetime,
    purpose: str = "revocation",
    ttl: timedelta | None = None,
) -> dict[str, Any]:
    """The status list credential published at *url*, signed by *signer* (the issuer of its credentials)."""
    if purpose not in STATUS_PURPOSES:
        raise ValueError(f"status purpose {purpose!r} is not one of {sorted(STATUS_PURPOSES)}")
    subject: dict[str, Any] = {"id": f"{url}#list", "type": LIST_TYPE, "statusPurpose": purpose,
                               "encodedList": bits.encode()}
    if ttl is not None:
        subject["ttl"] = int(ttl.total_seconds() * 1000)  # §2.2: milliseconds
    credential = {
        "@context": [VC_CONTEXT],
        "id": url,
        "type": [CREDENTIAL_TYPE, LIST_CREDENTIAL_TYPE],
        "issuer": dids.split_did_url(signer.key_id)[0],
        "validFrom": utc_text(now),
        "validUntil": utc_text(valid_until),
        "credentialSubject": subject,
    }
    return proof.sign(credential, signer.key, verification_method=signer.key_id, created=utc_text(now))


def verify_status_list(
    document: Any,
    issuer_document: Mapping[str, Any],
    *,
    url: str,
    now: datetime,
    max_bytes: int = MAX_LIST_BYTES,
) -> StatusList:
    """Check the status list credential fetched from *url* against its issuer's DID document, at *now*.

    Raises :class:`StatusListError` (or its base :class:`~connector.identity.vc.CredentialError`) naming the
    failed check.
    """
    try:
        envelope = verify_envelope(
            document, issuer_document, now=now, types={LIST_CREDENTIAL_TYPE}, contexts=(VC_CONTEXT,),
            max_bytes=max_encoded_length(max_bytes) + 8 * 1024, require_valid_until=False,
            long_text={"encodedList"},
        )
    except StatusListError:
        raise
    except CredentialError as exc:
        raise StatusListError(exc.check, exc.detail) from None
    if envelope.id != url:
        raise StatusListError(Check.STATUS_LIST_ID, f"the list at {url} says it is {envelope.id}")
    subject = envelope.subject
    if subject.get("type") != LIST_TYPE:
        raise StatusListError(Check.TYPE, f"credentialSubject.type is not {LIST_TYPE}")
    purpose = subject.get("statusPurpose")
    if purpose not in STATUS_PURPOSES:
        raise StatusListError(Check.STATUS_PURPOSE, f"status purpose {purpose!r} is not one of "
                                                    f"{sorted(STATUS_PURPOSES)}")
    ttl = subject.get("ttl")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 2**40):
        raise StatusListError(Check.MALFORMED, "ttl is not a number of milliseconds")
    bits = Bitstring.decode(subject.get("encodedList"), max_bytes=max_bytes)
    fresh_until = now + (DEFAULT_TTL if ttl is None else timedelta(milliseconds=ttl))
    if envelope.valid_until is not None:
        fresh_until = min(fresh_until, envelope.valid_until)
    return StatusList(url=url, issuer=envelope.issuer, purpose=str(purpose), bits=bits, fresh_until=fresh_until)


def check(credential: VerifiedCredential, lists: Mapping[str, StatusList], *, now: datetime) -> Status:
    """The status of *credential* according to the verified *lists* (by URL); unknown when they cannot say."""
    until: datetime | None = None
    for entry in credential.status:
        found = lists.get(entry.list_url)
        if found is None:
            return Status.unknown(f"the status list {entry.list_url} is not at hand")
        if found.issuer != credential.issuer:
            return Status.unknown(f"the status list {entry.list_url} is signed by {found.issuer}, "
                                  f"not by the issuer {credential.issuer}")
        if found.purpose != entry.purpose:
            return Status.unknown(f"the status list {entry.list_url} is for {found.purpose}, not {entry.purpose}")
        if now > found.fresh_until:
            return Status.unknown(f"the status list {entry.list_url} is stale since {utc_text(found.fresh_until)}")
        if entry.index >= len(found.bits):  # §3.2: RANGE_ERROR
            return Status.unknown(f"index {entry.index} is outside the status list {entry.list_url} "
                                  f"of {len(found.bits)} entries")
        if found.bits[entry.index]:
            state = StatusState.REVOKED if entry.purpose == "revocation" else StatusState.SUSPENDED
            return Status(state, f"{state} in {entry.list_url} (index {entry.index})")
        until = found.fresh_until if until is None else min(until, found.fresh_until)
    return Status(StatusState.VALID, until=until)


def checker(lists: Mapping[str, StatusList], *, now: datetime) -> Callable[[VerifiedCredential], Status]:
    """:func:`check` with the lists and time bound, as ``connector.identity.trust`` wants it."""

    def status_of(credential: VerifiedCredential) -> Status:
        return check(credential, lists, now=now)

    return status_of
