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
:meth:`View.consider` decides (:meth:`View.admit`: the same for the items of a message, holding those taken):
newer than what is held replaces it, older is *stale* and never replaces a newer item (issuance dates
compared; a replayed old self-description cannot roll one back), beyond the view's size it is *over limit*,
unless the shell first lets go of entries least worth keeping (:func:`evictions`). An item expires when it is
not refreshed within ``item_ttl_s`` of its issuance (a departed participant disappears); a subject re-issues
its own item well before that.

Cost: a view keeps each bucket's fingerprint and entries up to date as items come and go, so a digest is
written once per change and an answer is its buckets' entries as kept; a plan sets aside the entries alike on
both sides a whole column at a time (C-level dict and set operations), and compares one by one only those that
differ. While two views are far apart an exchange still reads up to ``max_entries_per_message`` entries a
side: that is what the protocol sends.

Pure: no I/O and no clock; the caller passes ``now``.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import heapq
import itertools
import operator
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec

from connector.identity import credentials, proof

#: Buckets of the digest (a power of two; the first byte of SHA-256(DID) picks one).
BUCKETS = 64
DIGEST_TYPE = "tds:GossipDigest"
ENTRIES_TYPE = "tds:GossipEntries"
ITEMS_TYPE = "tds:GossipItems"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
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


class Limits(msgspec.Struct, frozen=True):
    """Bounds on what a view keeps and what one message carries."""

    #: Canonical bytes of one item.
    max_item_bytes: int = 16 * 1024
    #: Items in one message (each way).
    max_items_per_message: int = 256
    #: ``[DID, validFrom, digest]`` entries in one answer to a digest.
    max_entries_per_message: int = 512
    #: Bytes of one message, whatever it carries.
    max_message_bytes: int = 1024 * 1024
    #: Items in one view.
    max_entries: int = 10_000
    #: An item not re-issued within this long of its ``validFrom`` expires.
    item_ttl_s: float = 3600.0


@dataclass(frozen=True, slots=True)
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
    # Worked out once (an item is compared and listed in every exchange that reads its bucket):
    #: ``validFrom`` as :func:`credentials.utc_text` writes it, and in microseconds since 1970 (to sort by).
    issued_text: str = field(init=False, repr=False, compare=False)
    issued_us: int = field(init=False, repr=False, compare=False)
    #: The first 64 bits of the digest: what the item adds to its bucket's fingerprint.
    fingerprint: int = field(init=False, repr=False, compare=False)
    #: ``[DID, validFrom, digest]``, as an answer to a digest lists the item.
    entry: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bucket < 0:
            object.__setattr__(self, "bucket", bucket_of(self.did))
        issued_text = credentials.utc_text(self.issued)
        object.__setattr__(self, "issued_text", issued_text)
        object.__setattr__(self, "issued_us", (self.issued - _EPOCH) // _MICROSECOND)
        object.__setattr__(self, "fingerprint", int(self.digest[:16], 16))
        object.__setattr__(self, "entry", (self.did, issued_text, self.digest))

    @property
    def version(self) -> tuple[datetime, str]:
        """Newer is greater: issuance first, the digest breaks a tie so that every view picks the same."""
        return self.issued, self.digest


class Screened(msgspec.Struct, frozen=True):
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


#: A digest's bucket fingerprints, joined: 16 hex digits each.
_FINGERPRINTS = re.compile(f"[0-9a-fA-F]{{{16 * BUCKETS}}}")
_FINGERPRINT_SLICES = [slice(i, i + 16) for i in range(0, 16 * BUCKETS, 16)]
_DID = operator.itemgetter(0)
_ISSUED = operator.attrgetter("issued_us")
_SIZE = operator.attrgetter("size")
#: What an answer to a digest holds, checked in one pass (wire JSON: arrays of strings, bucket numbers).
_Entries = list[tuple[Annotated[str, msgspec.Meta(max_length=512)], str, str]]
_Covered = list[Annotated[int, msgspec.Meta(ge=0, lt=BUCKETS)]]


class View(msgspec.Struct):
    """One participant's gossip state: the items it holds, by DID, with each bucket's fingerprint and
    ``[DID, validFrom, digest]`` entries kept up to date as items come and go (so that an exchange reads only
    the buckets that differ). *own* are the DIDs hosted here, whose items only this node issues."""

    limits: Limits
    own: frozenset[str] = frozenset()
    items: dict[str, Item] = msgspec.field(default_factory=dict)
    _buckets: list[int] = msgspec.field(default_factory=lambda: [0] * BUCKETS)
    #: The entries of each bucket, by DID; and all of them, by DID.
    _members: list[dict[str, tuple[str, str, str]]] = msgspec.field(
        default_factory=lambda: [{} for _ in range(BUCKETS)])
    _entries: dict[str, tuple[str, str, str]] = msgspec.field(default_factory=dict)
    #: The bucket fingerprints as a digest writes them (written again after a change).
    _written: list[str] | None = None

    def __post_init__(self) -> None:
        for item in list(self.items.values()):
            self._buckets[item.bucket] ^= item.fingerprint
            self._members[item.bucket][item.did] = self._entries[item.did] = item.entry

    # -- keeping items ---------------------------------------------------------------------------------

    def put(self, item: Item) -> None:
        """Hold *item* (replacing what is held for its DID), whatever its version: use :meth:`consider`
        first for items from elsewhere."""
        did, b = item.did, item.bucket
        old = self.items.get(did)
        if old is not None:
            self._buckets[b] ^= old.fingerprint
        self.items[did] = item
        self._buckets[b] ^= item.fingerprint
        self._members[b][did] = self._entries[did] = item.entry
        self._written = None

    def remove(self, did: str) -> Item | None:
        old = self.items.pop(did, None)
        if old is not None:
            self._buckets[old.bucket] ^= old.fingerprint
            del self._members[old.bucket][did], self._entries[did]
            self._written = None
        return old

    def expire(self, now: datetime) -> list[str]:
        """Drop the items that have expired; return their DIDs."""
        gone = [did for did, item in self.items.items() if item.expires <= now]
        for did in gone:
            self.remove(did)
        return gone

    def admit(self, items: Iterable[Item]) -> tuple[list[Item], list[Refusal]]:
        """:meth:`consider`, then :meth:`put` what is to be held, for each of *items* in turn (their signatures
        checked by the caller): the items taken, and a refusal for each one refused (an item already held, or
        of a DID hosted here, is neither)."""
        taken: list[Item] = []
        refused: list[Refusal] = []
        held, own, room = self.items, self.own, self.limits.max_entries
        buckets, members, entries = self._buckets, self._members, self._entries
        for item in items:
            did = item.did
            if did in own:
                continue
            old = held.get(did)
            b = item.bucket
            if old is None:
                if len(held) >= room:
                    refused.append(Refusal.OVER_LIMIT)
                    continue
            elif item.issued != old.issued or item.digest != old.digest:
                if (item.issued, item.digest) < (old.issued, old.digest):
                    refused.append(Refusal.STALE)
                    continue
                buckets[b] ^= old.fingerprint
            else:
                continue
            held[did] = item
            buckets[b] ^= item.fingerprint
            members[b][did] = entries[did] = item.entry
            taken.append(item)
        if taken:
            self._written = None
        return taken, refused

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

    def _fingerprints(self) -> list[str]:
        if self._written is None:
            text = struct.pack(f">{BUCKETS}Q", *self._buckets).hex()
            self._written = list(map(text.__getitem__, _FINGERPRINT_SLICES))
        return self._written

    def digest(self) -> dict[str, Any]:
        """Step 1 (initiator): the fingerprint of each bucket."""
        return {"@type": DIGEST_TYPE, "buckets": list(self._fingerprints())}

    def differing(self, digest: Any) -> list[int]:
        """The buckets whose fingerprint in *digest* differs from ours; :class:`GossipError` if malformed."""
        buckets = digest.get("buckets") if isinstance(digest, dict) else None
        if not isinstance(buckets, list) or len(buckets) != BUCKETS:
            raise GossipError(f"a digest names exactly {BUCKETS} bucket fingerprints")
        if set(map(type, buckets)) != {str} or set(map(len, buckets)) != {16}:
            raise GossipError("a bucket fingerprint is 16 hex digits")
        text = "".join(buckets)
        if not _FINGERPRINTS.fullmatch(text):
            raise GossipError("a bucket fingerprint is 16 hex digits")
        ours = self._fingerprints()
        if buckets == ours:
            return []
        theirs = map(text.lower().__getitem__, _FINGERPRINT_SLICES)
        return list(itertools.compress(range(BUCKETS), map(operator.ne, theirs, ours)))

    def entries_for(self, digest: Any) -> dict[str, Any]:
        """Step 2 (responder): ``[DID, validFrom, digest]`` of our items in the buckets that differ from
        *digest*'s (at most ``max_entries_per_message``; the rest in a later round)."""
        wanted = self.differing(digest)
        entries: list[tuple[str, str, str]] = []
        covered: list[int] = []
        for b in wanted:
            members = self._members[b]
            if entries and len(entries) + len(members) > self.limits.max_entries_per_message:
                break  # whole buckets only: the rest in a later round
            covered.append(b)
            entries += members.values()
        return {"@type": ENTRIES_TYPE, "buckets": covered, "entries": entries[: self.limits.max_entries_per_message]}

    def plan(self, answer: Any, *, hidden: Iterable[str] = ()) -> tuple[list[Item], list[str], int]:
        """Step 3 (initiator): from the responder's entries, the items to send it (ours, newer or missing
        there; never those of *hidden* DIDs) and the DIDs to ask for (newer or missing here); and how many
        entries were over the limit of one message (not read)."""
        if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
            raise GossipError("an answer to a digest lists entries")
        try:
            covered = set(msgspec.convert(answer.get("buckets"), _Covered))
        except msgspec.ValidationError as exc:
            raise GossipError("an answer to a digest names the buckets it covers") from exc
        entries = answer["entries"]
        over = max(0, len(entries) - self.limits.max_entries_per_message)
        theirs = _entries_by_did(entries[: self.limits.max_entries_per_message])
        # Entries alike on both sides are set aside a whole column at a time; only those that differ are compared
        # one by one (what is newer), and there are few of them once views are close.
        alike = list(map(operator.eq, map(self._entries.get, theirs), theirs.values()))
        differ = set(self._entries) if len(covered) == BUCKETS else set().union(*(self._members[b] for b in covered))
        differ.difference_update(itertools.compress(theirs, alike))
        differ.difference_update(hidden)
        missing_there = differ.difference(theirs)
        send = list(map(self.items.__getitem__, missing_there))
        send += [self.items[d] for d in differ.difference(missing_there) if _newer(self.items[d], theirs[d][1:])]
        fresh = set(itertools.compress(theirs, map(operator.not_, alike)))
        fresh.difference_update(self.own)
        missing_here = fresh.difference(self.items)
        wanted = missing_here.union(d for d in fresh.difference(missing_here) if _older(self.items[d], *theirs[d][1:]))
        want = list(itertools.islice(filter(wanted.__contains__, theirs), self.limits.max_items_per_message))
        send.sort(key=_ISSUED, reverse=True)  # the freshest first: what a cut-off leaves out waits
        return self.bounded(send), want, over

    def bounded(self, items: list[Item]) -> list[Item]:
        """The first of *items* that fit one message (count and bytes)."""
        first = items[: self.limits.max_items_per_message]
        return first[: bisect.bisect_right(list(itertools.accumulate(map(_SIZE, first))),
                                           self.limits.max_message_bytes // 2)]

    def items_for(self, wanted: Any, *, hidden: Iterable[str] = ()) -> list[Item]:
        """Step 3 (responder): the items asked for that we hold (not *hidden* ones), bounded."""
        if not isinstance(wanted, list) or not set(map(type, wanted)) <= {str}:
            raise GossipError("want lists DIDs")
        asked = wanted[: self.limits.max_items_per_message]
        hide = set(hidden)
        if hide:
            asked = list(itertools.filterfalse(hide.__contains__, asked))
        return self.bounded([i for i in map(self.items.get, asked) if i is not None])


def _key(issued: str, digest: str) -> tuple[str, str] | None:
    """A peer's entry as a comparable version: ``validFrom`` as :func:`credentials.utc_text` writes it (which
    sorts as text), else parsed and rewritten so; None if it is no date."""
    if len(issued) != 20 or not issued.endswith("Z"):
        try:
            issued = credentials.utc_text(_time(issued, "validFrom"))
        except ValueError:
            return None
    return issued, digest


def _entries_by_did(entries: list[Any]) -> dict[str, tuple[str, str, str]]:
    """A peer's entries by DID (a DID listed twice: its last entry), each ``[DID, validFrom, digest]`` of
    strings; :class:`GossipError` if one is not."""
    try:
        rows = msgspec.convert(entries, _Entries)
    except msgspec.ValidationError as exc:
        raise GossipError("an entry is [DID, validFrom, digest]") from exc
    return dict(zip(map(_DID, rows), rows, strict=True))


def _newer(item: Item, there: tuple[str, str]) -> bool:
    key = _key(*there)
    return key is None or (item.issued_text, item.digest) > key


def _older(held: Item, issued_text: str, digest: str) -> bool:
    key = _key(issued_text, digest)
    return key is not None and (held.issued_text, held.digest) < key


def evictions(standing: Iterable[tuple[str, str, str]], count: int) -> list[str]:
    """The DIDs a full view lets go to make room for *count* newcomers, least worth keeping first.

    *standing* is ``(DID, learned from, last seen)`` of each entry that may go: the caller leaves out those it
    verified itself (by handshake, or bootstrap peers) and its own. The source that brought the most entries
    loses one first, so that a peer flooding the directory with made-up identities crowds out mostly its own;
    of a source's entries, the one seen longest ago (then the smallest DID, so that every run picks the same).
    """
    by_source: dict[str, list[tuple[str, str]]] = {}
    for did, source, last_seen in standing:
        by_source.setdefault(source, []).append((last_seen, did))
    queue = [(-len(entries), source) for source, entries in by_source.items()]
    heapq.heapify(queue)
    for entries in by_source.values():
        entries.sort(reverse=True)  # the one seen longest ago last, for pop()
    out: list[str] = []
    while queue and len(out) < count:
        negative, source = heapq.heappop(queue)
        out.append(by_source[source].pop()[1])
        if negative < -1:
            heapq.heappush(queue, (negative + 1, source))
    return out


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
