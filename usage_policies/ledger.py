"""The usage log: hash-chained entries, one chain per agreement, with signed chain heads (pure).

Every decision on a use of received data (permit and deny) and every duty carried out appends an
:class:`Entry`. An entry's ``hash`` is SHA-256 over the RFC 8785 canonical JSON of the entry without its
hash, and each entry names the hash of the one before (``prev``; the first names :data:`GENESIS`), so
changing, removing or reordering an entry breaks every hash after it. The node signs the chain *head*
(:func:`head_document`: agreement, sequence number, hash, time) once per commit group; a head signature
therefore vouches for every entry up to it. The same entries and heads travel to the provider as usage
receipts, which is how the provider can check them.

Pure: canonical JSON and hashing only; signing and verifying the head documents is the caller's (one
signer for the whole project), through the ``verify_head`` callable of :func:`check_chain`.

Counters live in the chain, not beside it: every entry carries ``uses`` (permitted uses so far, this one
included) and ``first_use`` (when the first was permitted), so the counts a decision needs are those of
the signed head and cannot be reset without breaking a hash or a signature. Entries written before these
fields existed have neither; :func:`running_counts` recounts such a chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from usage_policies.jcs import canonical

GENESIS = "0" * 64
HEAD_TYPE = "https://w3id.org/tds/v1#UsageLogHead"


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the usage log."""

    agreement: str
    seq: int
    prev: str
    at: str
    kind: str  # "use", or a duty carried out: "delete", "inform", "revoked" …
    use_id: str = ""
    action: str = ""
    purpose: str = ""
    application: str = ""
    decision: str = ""  # "permit" / "deny" for uses
    reasons: list[str] = []
    effects: list[str] = []
    #: Permitted uses of the agreement up to and including this entry, and the first one's time (None:
    #: an entry from before the chain carried its counts).
    uses: int | None = None
    first_use: str | None = None
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """The hashed content: every field but ``hash`` (and the counts where an older entry has none,
        so that its hash stays what it was)."""
        data = msgspec.to_builtins(self)
        data.pop("hash", None)
        for name in ("uses", "first_use"):
            if data.get(name) is None:
                data.pop(name, None)
        return data  # type: ignore[no-any-return]

    @property
    def permitted_use(self) -> bool:
        """A use that was permitted (re-deliveries and duties are not uses)."""
        return self.kind == "use" and self.decision == "permit"


def entry_hash(entry: Entry) -> str:
    return hashlib.sha256(canonical(entry.body())).hexdigest()


def running_counts(chain: Sequence[Entry]) -> tuple[int, str | None]:
    """Permitted uses and the first one's time after the last entry of *chain* (a whole chain, in order).

    Reads the counts the last entry carries; recounts only a chain whose entries predate them."""
    if chain and chain[-1].uses is not None:
        return chain[-1].uses, chain[-1].first_use
    permits = [e for e in chain if e.permitted_use]
    return len(permits), permits[0].at if permits else None


def append(head: Entry | None, *, counts: tuple[int, str | None] | None = None, **fields: Any) -> Entry:
    """The entry that follows *head* (None: the first of its agreement's chain), hashed.

    *counts* are the chain's permitted uses and first-use time before this entry; by default those *head*
    carries (a head from before the chain carried counts needs them given: :func:`running_counts`). A
    permitted use adds itself to them."""
    if head is not None and head.agreement != fields.get("agreement"):
        raise ValueError("an entry continues the chain of its own agreement only")
    if counts is None:
        if head is not None and head.uses is None:
            raise ValueError("the chain predates its counts: pass counts (running_counts of the chain)")
        counts = (head.uses or 0, head.first_use) if head is not None else (0, None)
    uses, first_use = counts
    if fields.get("kind") == "use" and fields.get("decision") == "permit":
        uses, first_use = uses + 1, first_use or fields.get("at")
    draft = Entry(seq=(head.seq + 1) if head else 1, prev=head.hash if head else GENESIS, uses=uses,
                  first_use=first_use, **fields)
    return msgspec.structs.replace(draft, hash=entry_hash(draft))


def head_document(entry: Entry, *, signer: str, at: str) -> dict[str, Any]:
    """What a head signature covers: this chain up to *entry*."""
    return {
        "@type": HEAD_TYPE,
        "agreement": entry.agreement,
        "seq": entry.seq,
        "hash": entry.hash,
        "signer": signer,
        "at": at,
    }


class ChainProblem(msgspec.Struct, frozen=True):
    """The first thing wrong with a chain: which entry (by position and sequence number) and what."""

    index: int
    seq: int
    problem: str


def check_chain(
    entries: Sequence[Entry],
    heads: Sequence[dict[str, Any]] = (),
    *,
    verify_head: Callable[[dict[str, Any]], bool] | None = None,
    start: Entry | None = None,
    agreement: str | None = None,
) -> ChainProblem | None:
    """Check one agreement's chain (continuing *start*, if given) and its signed heads.

    Returns the first problem, or None. Every entry and head must name *agreement* (by default the
    agreement of *start* or of the first entry): a chain is bound to its agreement, so one agreement's
    entries cannot be passed off as another's. Each head must name an entry of the chain with its exact
    hash, and, when *verify_head* is given, carry a valid signature; the last entry must be covered by a
    head.
    """
    prev, seq = (start.hash, start.seq) if start is not None else (GENESIS, 0)
    if agreement is None:
        agreement = start.agreement if start is not None else (entries[0].agreement if entries else "")
    # The permitted uses before the next entry, where known (a chain continued from an entry without counts
    # is not known until an entry carries them).
    uses: int | None = 0 if start is None else start.uses
    by_seq: dict[int, Entry] = {}
    for i, entry in enumerate(entries):
        if entry.agreement != agreement:
            return ChainProblem(i, entry.seq, f"entry belongs to agreement {entry.agreement}, not {agreement}")
        if entry.seq != seq + 1:
            return ChainProblem(i, entry.seq, f"sequence number {entry.seq} follows {seq} (an entry is missing "
                                              "or out of order)")
        if entry.prev != prev:
            return ChainProblem(i, entry.seq, "does not continue the chain (previous hash differs)")
        if entry_hash(entry) != entry.hash:
            return ChainProblem(i, entry.seq, "content does not match its hash (the entry was changed)")
        expected = None if uses is None else uses + (1 if entry.permitted_use else 0)
        if entry.uses is not None and expected is not None and entry.uses != expected:
            return ChainProblem(i, entry.seq, f"counts {entry.uses} permitted uses where the chain before it has "
                                              f"{expected}")
        uses = entry.uses if entry.uses is not None else expected
        prev, seq = entry.hash, entry.seq
        by_seq[entry.seq] = entry
    covered = start.seq if start is not None else 0
    for head in heads:
        if head.get("agreement") != agreement:
            named = head.get("seq")
            return ChainProblem(len(entries), named if isinstance(named, int) else -1,
                                f"a signed head belongs to agreement {head.get('agreement')}, not {agreement}")
        head_seq = head.get("seq")
        target = by_seq.get(head_seq) if isinstance(head_seq, int) else None
        if target is None:
            if isinstance(head_seq, int) and head_seq <= covered:
                continue
            return ChainProblem(len(entries), int(head_seq) if isinstance(head_seq, int) else -1,
                                "a signed head names an entry that is not in the chain")
        if head.get("hash") != target.hash or head.get("agreement") != agreement:
            index = entries.index(target)
            return ChainProblem(index, target.seq, "a signed head does not match this entry (the entry was changed)")
        if verify_head is not None and not verify_head(head):
            return ChainProblem(entries.index(target), target.seq, "the head signature does not verify")
        covered = max(covered, target.seq)
    if entries and covered < entries[-1].seq:
        first_unsigned = next(i for i, e in enumerate(entries) if e.seq > covered)
        return ChainProblem(first_unsigned, entries[first_unsigned].seq, "no signed head covers this entry")
    return None
