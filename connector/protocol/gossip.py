"""Gossip of signed self-descriptions: the pure core of the peer directory's anti-entropy.

Theory of operation. Each hosted participant keeps a *view*: for every participant it knows of (itself
included, when discoverable), that participant's own latest signed self-description, an *item*. Items are
never made or changed by a relay: each carries an ``eddsa-jcs-2022`` proof by its subject's key, checked
against the subject's DID document by whoever receives it, so a relay can only pass items on or hold them
back. Between two views the exchange is push-pull anti-entropy (Demers et al., "Epidemic algorithms for
replicated database maintenance", 1987) in two requests:

1. the initiator sends a :func:`View.digest`: one 64-bit fingerprint per bucket (the XOR of the
   fingerprints of the items whose DID hashes into it, :data:`BUCKETS` buckets). Views that agree cost a
   few hundred bytes;
2. the responder answers :meth:`View.entries_for` the buckets that differ: ``[DID, validFrom, digest]``
   of each of its items there;
3. the initiator works out :meth:`View.plan`: the items it has that the responder lacks or holds older
   (sent), and the DIDs the responder has newer (asked for), and sends both; the responder answers with
   the items asked for (:meth:`View.items_for`).

Whatever arrives goes through :func:`screen` (shape, size, time) and the signature check of the shell, then
:meth:`View.consider` decides: newer than what is held replaces it, older is *stale* and never replaces a
newer item (issuance dates compared; a replayed old self-description cannot roll one back), beyond the
view's size it is *over limit*. An item expires when it is not refreshed within ``item_ttl_s`` of its
issuance (a departed participant disappears); a subject re-issues its own item well before that.

Pure: no I/O and no clock; the caller passes ``now``.
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connector.identity import credentials, proof

#: Buckets of the digest (a power of two; the first byte of SHA-256(DID) picks one).
BUCKETS = 64
DIGEST_TYPE = "tds:GossipDigest"
ENTRIES_TYPE = "tds:GossipEntries"
ITEMS_TYPE = "tds:GossipItems"
#: How far in the future an item's ``validFrom`` may lie (clocks of different nodes disagree a little).
CLOCK_SKEW = timedelta(minutes=5)


class Refusal(enum.StrEnum):
    """Why an item (or part of a message) was not taken; the values label the refusal counter."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    BAD_SIGNATURE = "bad-signature"
    STALE = "stale"
    OVER_LIMIT = "over-limit"


class GossipError(ValueError):
    """A gossip message the peer should not have sent (its fault: answered 400)."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what a view keeps and what one message carries."""

    #: Canonical bytes of one item.
    max_item_bytes: int = 16 * 1024
    #: Items in one message (each way).
    max_items_per_message: int = 256
    #: ``[DID, validFrom, digest]`` entries in one answer to a digest.
    max_entries_per_message: int = 4096
    #: Bytes of one message, whatever it carries.
    max_message_bytes: int = 1024 * 1024
    #: Items in one view.
    max_entries: int = 10_000
    #: An item not re-issued within this long of its ``validFrom`` expires.
    item_ttl_s: float = 3600.0


@dataclass(frozen=True)
class Item:
    """One subject's own signed self-description, as checked by :func:`screen` (not yet its signature)."""

    did: str
    issued: datetime
    expires: datetime
    #: SHA-256 of the RFC 8785 canonical bytes, hex.
    digest: str
    size: int
    document: Mapping[str, Any] = field(repr=False, compare=False)
    bucket: int = -1

    def __post_init__(self) -> None:
        if self.bucket < 0:
            object.__setattr__(self, "bucket", bucket_of(self.did))

    @property
    def version(self) -> tuple[datetime, str]:
        """Newer is greater: issuance first, the digest breaks a tie so that every view picks the same."""
        return self.issued, self.digest

    @functools.cached_property
    def issued_text(self) -> str:
        return credentials.utc_text(self.issued)

    @functools.cached_property
    def fingerprint(self) -> int:
        return int(self.digest[:16], 16)


@dataclass(frozen=True)
class Screened:
    """What :func:`screen` made of one incoming item: the item, or the refusal and why."""

    item: Item | None
    refusal: Refusal | None = None
    reason: str = ""


def bucket_of(did: str) -> int:
    return hashlib.sha256(did.encode()).digest()[0] % BUCKETS


def _time(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"{name} is missing or not a date and time")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    return moment


def screen(document: Any, *, now: datetime, limits: Limits) -> Screened:
    """Check an incoming item's shape, size and time, before its signature is checked (which needs the
    subject's DID document: the shell's part)."""
    if not isinstance(document, dict):
        return Screened(None, Refusal.MALFORMED, "item is not a JSON object")
    types = document.get("type")
    issuer = document.get("issuer")
    subject = document.get("credentialSubject")
    if not isinstance(types, list) or credentials.CREDENTIAL_TYPE not in types:
        return Screened(None, Refusal.MALFORMED, f"item is not a {credentials.CREDENTIAL_TYPE}")
    if not isinstance(issuer, str) or not issuer.startswith("did:") or len(issuer) > 512:
        return Screened(None, Refusal.MALFORMED, "item names no issuer DID")
    if not isinstance(subject, dict) or subject.get("id") != issuer:
        return Screened(None, Refusal.MALFORMED, "item is not self-issued")
    try:
        issued = _time(document.get("validFrom"), "validFrom")
        until = _time(document.get("validUntil"), "validUntil")
        raw = proof.canonical(document)
    except (ValueError, proof.ProofError) as exc:
        return Screened(None, Refusal.MALFORMED, str(exc)[:200])
    if len(raw) > limits.max_item_bytes:
        return Screened(None, Refusal.OVERSIZED, f"item is {len(raw)} bytes, more than {limits.max_item_bytes}")
    if issued > now + CLOCK_SKEW:
        return Screened(None, Refusal.MALFORMED, "item is issued in the future")
    expires = min(until, issued + timedelta(seconds=limits.item_ttl_s))
    if expires <= now:
        return Screened(None, Refusal.STALE, "item has expired")
    return Screened(Item(issuer, issued, expires, hashlib.sha256(raw).hexdigest(), len(raw), document))


def verify(item: Item, did_document: Mapping[str, Any], *, now: datetime) -> credentials.Subject:
    """The item's verified subject: its proof must be by a key of the subject's own DID document (a relay's
    key, or any other, is refused). Raises :class:`credentials.SelfDescriptionError`."""
    return credentials.verify(dict(item.document), dict(did_document), now=now)


@dataclass
class View:
    """One participant's gossip state: the items it holds, by DID, with each bucket's fingerprint kept up
    to date as items come and go. *own* are the DIDs hosted here, whose items only this node issues."""

    limits: Limits
    own: frozenset[str] = frozenset()
    items: dict[str, Item] = field(default_factory=dict)
    _buckets: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    #: The DIDs of each bucket (so that an exchange reads only the buckets that differ).
    _members: list[set[str]] = field(default_factory=lambda: [set() for _ in range(BUCKETS)])

    def __post_init__(self) -> None:
        for item in list(self.items.values()):
            self._buckets[item.bucket] ^= item.fingerprint
            self._members[item.bucket].add(item.did)

    # -- keeping items ---------------------------------------------------------------------------------

    def put(self, item: Item) -> None:
        """Hold *item* (replacing what is held for its DID), whatever its version: use :meth:`consider`
        first for items from elsewhere."""
        old = self.items.get(item.did)
        b = item.bucket
        if old is not None:
            self._buckets[b] ^= old.fingerprint
        self.items[item.did] = item
        self._buckets[b] ^= item.fingerprint
        self._members[b].add(item.did)

    def remove(self, did: str) -> Item | None:
        old = self.items.pop(did, None)
        if old is not None:
            self._buckets[old.bucket] ^= old.fingerprint
            self._members[old.bucket].discard(did)
        return old

    def expire(self, now: datetime) -> list[str]:
        """Drop the items that have expired; return their DIDs."""
        gone = [did for did, item in self.items.items() if item.expires <= now]
        for did in gone:
            self.remove(did)
        return gone

    def consider(self, item: Item, *, own_ok: bool = False) -> Refusal | bool | None:
        """Whether *item* should be held: True (newer, or new and there is room), False (the same item
        again, or an item of a DID hosted here: nothing to do), or the refusal."""
        if item.did in self.own and not own_ok:
            return False
        held = self.items.get(item.did)
        if held is None:
            return Refusal.OVER_LIMIT if len(self.items) >= self.limits.max_entries else True
        if item.version == held.version:
            return False
        return True if item.version > held.version else Refusal.STALE

    # -- the exchange ------------------------------------------------------------------------------------

    def digest(self) -> dict[str, Any]:
        """Step 1 (initiator): the fingerprint of each bucket."""
        return {"@type": DIGEST_TYPE, "buckets": [f"{b:016x}" for b in self._buckets]}

    def differing(self, digest: Any) -> list[int]:
        """The buckets whose fingerprint in *digest* differs from ours; :class:`GossipError` if malformed."""
        buckets = digest.get("buckets") if isinstance(digest, dict) else None
        if not isinstance(buckets, list) or len(buckets) != BUCKETS:
            raise GossipError(f"a digest names exactly {BUCKETS} bucket fingerprints")
        theirs: list[int] = []
        for value in buckets:
            if not isinstance(value, str) or len(value) != 16:
                raise GossipError("a bucket fingerprint is 16 hex digits")
            try:
                theirs.append(int(value, 16))
            except ValueError as exc:
                raise GossipError("a bucket fingerprint is 16 hex digits") from exc
        return [i for i in range(BUCKETS) if theirs[i] != self._buckets[i]]

    def entries_for(self, digest: Any) -> dict[str, Any]:
        """Step 2 (responder): ``[DID, validFrom, digest]`` of our items in the buckets that differ from
        *digest*'s (at most ``max_entries_per_message``; the rest in a later round)."""
        wanted = self.differing(digest)
        entries: list[list[str]] = []
        covered: list[int] = []
        for b in wanted:
            members = self._members[b]
            if entries and len(entries) + len(members) > self.limits.max_entries_per_message:
                break  # whole buckets only: the rest in a later round
            covered.append(b)
            entries += [[did, self.items[did].issued_text, self.items[did].digest] for did in members]
        return {"@type": ENTRIES_TYPE, "buckets": covered, "entries": entries[: self.limits.max_entries_per_message]}

    def plan(self, answer: Any, *, hidden: Iterable[str] = ()) -> tuple[list[Item], list[str], int]:
        """Step 3 (initiator): from the responder's entries, the items to send it (ours, newer or missing
        there; never those of *hidden* DIDs) and the DIDs to ask for (newer or missing here); and how many
        entries were over the limit of one message (not read)."""
        if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
            raise GossipError("an answer to a digest lists entries")
        raw_buckets = answer.get("buckets")
        if not isinstance(raw_buckets, list) or not all(isinstance(b, int) and 0 <= b < BUCKETS
                                                        for b in raw_buckets):
            raise GossipError("an answer to a digest names the buckets it covers")
        entries = answer["entries"]
        over = max(0, len(entries) - self.limits.max_entries_per_message)
        theirs: dict[str, tuple[str, str]] = {}
        for entry in entries[: self.limits.max_entries_per_message]:
            if type(entry) is not list or len(entry) != 3:
                raise GossipError("an entry is [DID, validFrom, digest]")
            did, issued, digest = entry
            if type(did) is not str or type(issued) is not str or type(digest) is not str or len(did) > 512:
                raise GossipError("an entry is [DID, validFrom, digest]")
            theirs[did] = (issued, digest)
        covered = set(raw_buckets)
        hide = set(hidden)
        send: list[Item] = []
        for did in (d for b in covered for d in self._members[b]):
            item = self.items[did]
            if did in hide:
                continue
            there = theirs.get(did)
            if there is None or _newer(item, there):
                send.append(item)
        want: list[str] = []
        for did, (issued, digest) in theirs.items():
            held = self.items.get(did)
            if did in self.own:
                continue
            if held is None or _older(held, issued, digest):
                want.append(did)
        send.sort(key=lambda i: i.issued, reverse=True)  # the freshest first: what a cut-off leaves out waits
        return self.bounded(send), want[: self.limits.max_items_per_message], over

    def bounded(self, items: list[Item]) -> list[Item]:
        """The first of *items* that fit one message (count and bytes)."""
        out: list[Item] = []
        size = 0
        for item in items:
            if len(out) >= self.limits.max_items_per_message or size + item.size > self.limits.max_message_bytes // 2:
                break
            out.append(item)
            size += item.size
        return out

    def items_for(self, wanted: Any, *, hidden: Iterable[str] = ()) -> list[Item]:
        """Step 3 (responder): the items asked for that we hold (not *hidden* ones), bounded."""
        if not isinstance(wanted, list) or not all(isinstance(d, str) for d in wanted):
            raise GossipError("want lists DIDs")
        hide = set(hidden)
        found = [self.items[d] for d in wanted[: self.limits.max_items_per_message]
                 if d in self.items and d not in hide]
        return self.bounded(found)


def _key(issued: str, digest: str) -> tuple[str, str] | None:
    """A peer's entry as a comparable version: ``validFrom`` as :func:`credentials.utc_text` writes it (which
    sorts as text), else parsed and rewritten so; None if it is no date."""
    if len(issued) != 20 or not issued.endswith("Z"):
        try:
            issued = credentials.utc_text(_time(issued, "validFrom"))
        except ValueError:
            return None
    return issued, digest


def _newer(item: Item, there: tuple[str, str]) -> bool:
    key = _key(*there)
    return key is None or (item.issued_text, item.digest) > key


def _older(held: Item, issued_text: str, digest: str) -> bool:
    key = _key(issued_text, digest)
    return key is not None and (held.issued_text, held.digest) < key


def items_message(items: Iterable[Item], want: Iterable[str] = ()) -> dict[str, Any]:
    """Items (and DIDs asked for), as sent."""
    return {"@type": ITEMS_TYPE, "items": [dict(i.document) for i in items], "want": list(want)}


def received_items(message: Any, limits: Limits) -> tuple[list[Any], int]:
    """The items of an items message, at most ``max_items_per_message`` (the rest counted as over the
    limit, and not read)."""
    if not isinstance(message, dict) or message.get("@type") != ITEMS_TYPE:
        raise GossipError(f"expected a {ITEMS_TYPE}")
    items = message.get("items", [])
    if not isinstance(items, list):
        raise GossipError("items is a list")
    keep = items[: limits.max_items_per_message]
    return keep, len(items) - len(keep)
