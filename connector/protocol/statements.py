"""Settlement statements: what an agreement's post-paid prices come to for one period, signed by the provider,
checked by the consumer against its own records, then countersigned or disputed (pure: no clock, no I/O).

Theory of operation
-------------------
A statement covers one agreement and one stretch of time: from where the agreement's previous statement ended
(or the agreement's start) to the end of a billing period (``usage_policies.pricing``: calendar months by
default), or earlier when the provider closes the period early (``tds statement issue --until``). Statements of
one agreement therefore tile time without gaps or overlaps, and each names the one before it (``previous``).

Its quantities come from evidence both sides hold, never from one side's word:

- uses (``tds:use``): the consumer's usage log, which the provider holds as signed receipts. The statement names
  the *receipt range* it covers — the first and last sequence numbers and the last entry's hash — which continues
  the previous statement's range (no gap: ``first`` is the previous ``last`` + 1) and ends at the last entry
  logged before the statement's end. Its quantity is the permitted uses in the range (re-deliveries and denies
  are not uses);
- queries (``tds:query``): the ids of the sandbox queries the provider answered with a signed result, which the
  consumer keeps;
- gigabytes (``tds:gigabyte``): the transfers completed in the stretch (their provider process ids and sizes), as
  both sides record them;
- periods (``tds:period``): a subscription is due for each billing period begun, so one for a statement that
  begins a billing period (or is the agreement's first), none for the rest of a period closed early.

Amounts are the agreement's post-paid prices applied to the quantities (``usage_policies.pricing.bill``: exact
decimals, each line rounded by the agreement's rule). With a platform share (a hosting node's cut of what its
hosted providers earn), the statement shows the split.

The consumer's node checks a statement (:func:`check`) against its own records (:class:`Own`): the signature,
that it is for this agreement, these parties and a period that follows the last one it holds, that the receipt
range continues without a gap and ends at an entry of its own log with the same hash, that every quantity and
price is its own figure and the agreement's price, and that the arithmetic holds. Any :class:`Problem` makes the
node dispute the statement at once, naming the rule, the receipts it contests and its own figure; a statement
that passes waits for the consumer's operator, who accepts (countersigns) or disputes it.

States (one table, :data:`TRANSITIONS`, both roles)::

    provider:  ISSUED ──delivered──▶ DELIVERED ──accepted──▶ ACCEPTED
                  │                      └──────disputed──▶ DISPUTED
                  └──accepted / disputed (the answer may overtake the delivery's acknowledgement)
    consumer:  RECEIVED ──accepted──▶ ACCEPTED     RECEIVED ──disputed──▶ DISPUTED   (a problem: DISPUTED at once)

ACCEPTED and DISPUTED are final. A disputed statement may be replaced by a new one for the same stretch
(``supersedes``); an accepted one settles its stretch, and a second statement for it is refused.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from connector.errors import LocalProtocolError, RemoteProtocolError
from connector.identity import did as dids
from connector.identity import proof as proofs
from usage_policies import pricing
from usage_policies.ledger import Entry

STATEMENT_TYPE = "https://w3id.org/tds/v1#UsageStatement"
ACCEPTANCE_TYPE = "https://w3id.org/tds/v1#UsageStatementAcceptance"
DISPUTE_TYPE = "https://w3id.org/tds/v1#UsageStatementDispute"
BUNDLE_TYPE = "https://w3id.org/tds/v1#UsageStatementBundle"
#: The most query ids and transfers one statement lists, and problems one dispute names.
MAX_QUERIES = 20_000
MAX_TRANSFERS = 5_000
MAX_PROBLEMS = 100
MAX_CONTESTED = 1_000


class StatementError(RemoteProtocolError):
    """A statement document that cannot be read or whose signature does not verify (or, from :func:`build`, one
    the node was asked to issue that it cannot)."""

    code = "statement-invalid"


class StatementState(enum.StrEnum):
    ISSUED = "issued"
    DELIVERED = "delivered"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    DISPUTED = "disputed"


class StatementEvent(enum.Enum):
    DELIVERED = "delivered"
    ACCEPTED = "accepted"
    DISPUTED = "disputed"


TERMINAL = frozenset({StatementState.ACCEPTED, StatementState.DISPUTED})
TRANSITIONS: dict[StatementState, dict[StatementEvent, StatementState]] = {
    StatementState.ISSUED: {StatementEvent.DELIVERED: StatementState.DELIVERED,
                            StatementEvent.ACCEPTED: StatementState.ACCEPTED,
                            StatementEvent.DISPUTED: StatementState.DISPUTED},
    StatementState.DELIVERED: {StatementEvent.ACCEPTED: StatementState.ACCEPTED,
                               StatementEvent.DISPUTED: StatementState.DISPUTED},
    StatementState.RECEIVED: {StatementEvent.ACCEPTED: StatementState.ACCEPTED,
                              StatementEvent.DISPUTED: StatementState.DISPUTED},
    StatementState.ACCEPTED: {},
    StatementState.DISPUTED: {},
}


class StatementStateError(LocalProtocolError):
    """An event the statement's state does not allow (e.g. accepting a disputed statement)."""

    status = 409
    code = "conflict"


def next_state(state: StatementState | str, event: StatementEvent) -> StatementState:
    """The state after *event*; raises :class:`StatementStateError` (and changes nothing) for a move the table
    does not allow. Two events change nothing instead: the same answer again (a retried delivery of it), and a
    delivery's acknowledgement that comes after the answer it let through or after an earlier one."""
    current = StatementState(state)
    found = TRANSITIONS[current].get(event)
    if found is None:
        if TRANSITIONS_SAME.get(current) is event or (event is StatementEvent.DELIVERED and current in _DELIVERED):
            return current
        raise StatementStateError(f"a statement that is {current} cannot be {event.value}")
    return found


#: A final state and the event that led to it: repeating that event is idempotent.
TRANSITIONS_SAME = {StatementState.ACCEPTED: StatementEvent.ACCEPTED, StatementState.DISPUTED: StatementEvent.DISPUTED}
#: The provider's states in which a (late or repeated) delivery acknowledgement changes nothing.
_DELIVERED = frozenset({StatementState.DELIVERED, StatementState.ACCEPTED, StatementState.DISPUTED})


# -- evidence -------------------------------------------------------------------------------------------------

class ReceiptRange(msgspec.Struct, frozen=True, kw_only=True):
    """A stretch of one agreement's usage log: entries ``first``..``last`` (inclusive), the last one's hash, and
    the permitted uses among them."""

    first: int
    last: int
    head: str
    uses: int


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """What one side's records say of a stretch: the basis of a statement's quantities."""

    receipts: ReceiptRange | None = None
    queries: tuple[str, ...] = ()
    #: Transfers completed in the stretch: provider process id → bytes.
    transfers: Mapping[str, int] = msgspec.field(default_factory=dict)


def receipt_range(entries: Iterable[Entry], *, after: int, before: str) -> ReceiptRange | None:
    """The entries that follow sequence number *after* and were logged before *before* (an ISO time, UTC ``Z``),
    in order: None when there are none. The range stops at the first entry logged at or after *before*, so it is
    always contiguous."""
    first: Entry | None = None
    last: Entry | None = None
    uses = 0
    for entry in entries:
        if entry.seq <= after:
            continue
        if entry.seq != (last.seq + 1 if last is not None else after + 1) or _instant(entry.at) >= _instant(before):
            break
        first = first or entry
        last = entry
        uses += 1 if entry.permitted_use else 0
    if first is None or last is None:
        return None
    return ReceiptRange(first=first.seq, last=last.seq, head=last.hash, uses=uses)


def quantities(evidence: Evidence, terms: Iterable[pricing.PriceTerm], *,
               new_period: bool = True) -> dict[pricing.Basis, Decimal]:
    """The quantity of each basis the evidence gives. A subscription (``tds:period``) is due once for each
    billing period begun: *new_period* says whether the statement begins one (see :func:`begins_period`)."""
    out: dict[pricing.Basis, Decimal] = {}
    for term in terms:
        if term.basis is pricing.Basis.USE:
            out[term.basis] = Decimal(evidence.receipts.uses if evidence.receipts else 0)
        elif term.basis is pricing.Basis.QUERY:
            out[term.basis] = Decimal(len(set(evidence.queries)))
        elif term.basis is pricing.Basis.GIGABYTE:
            out[term.basis] = pricing.gigabytes(sum(evidence.transfers.values()))
        else:
            out[term.basis] = Decimal(1 if new_period else 0)
    return out


def begins_period(start: datetime, previous: str | None, period: str) -> bool:
    """Whether a statement from *start* begins a billing period: the agreement's first statement does, and so
    does one that starts where a period starts; the rest of a period an earlier statement closed early does
    not (its subscription was billed then)."""
    return previous is None or pricing.period_start(start, period) == start


# -- the documents ----------------------------------------------------------------------------------------------

def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError) as exc:
        raise StatementError(f"not a date-time: {text!r}") from exc
    if moment.tzinfo is None:
        raise StatementError(f"a date-time without its time zone: {text!r}")
    return moment.astimezone(UTC)


def time_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Share(msgspec.Struct, frozen=True, kw_only=True):
    """A hosting node's cut of what a hosted provider earns."""

    platform: str  # the host's DID
    percent: Decimal


def build(
    *,
    statement_id: str,
    agreement: str,
    provider: str,
    consumer: str,
    start: datetime,
    end: datetime,
    label: str,
    previous: str | None,
    terms: Sequence[pricing.PriceTerm],
    evidence: Evidence,
    issued: datetime,
    share: Share | None = None,
    supersedes: str | None = None,
) -> dict[str, Any]:
    """The statement document (unsigned) for *evidence* under *terms* (the agreement's post-paid prices)."""
    if not terms:
        raise StatementError("the agreement has no post-paid price: nothing to bill")
    if end <= start:
        raise StatementError("a statement's end must come after its start")
    period = terms[0].period
    last_end = pricing.period_end(start, period)
    if end > last_end:
        raise StatementError(f"a statement ends with its billing period ({time_text(last_end)}), not at "
                             f"{time_text(end)}")
    if label != pricing.period_label(start, period):
        raise StatementError(f"the statement's period is {pricing.period_label(start, period)}, not {label!r}")
    try:
        lines, total = pricing.bill(terms, quantities(evidence, terms,
                                                      new_period=begins_period(start, previous, period)))
    except pricing.PricingError as exc:
        raise StatementError(f"the statement cannot be billed: {exc}") from exc
    rounding = terms[0].rounding
    doc: dict[str, Any] = {
        "@type": STATEMENT_TYPE,
        "id": statement_id,
        "agreement": agreement,
        "provider": provider,
        "consumer": consumer,
        "period": {"label": label, "start": time_text(start), "end": time_text(end)},
        "previous": previous,
        "currency": terms[0].currency,
        "rounding": str(rounding),
        "prices": pricing.terms_json(terms),
        "receipts": msgspec.to_builtins(evidence.receipts) if evidence.receipts else None,
        "queries": sorted(set(evidence.queries)),
        "transfers": [{"providerPid": pid, "bytes": size} for pid, size in sorted(evidence.transfers.items())],
        "lines": [pricing.line_json(line) for line in lines],
        "total": pricing.amount_text(total),
        "issued": time_text(issued),
    }
    if share is not None:
        try:
            platform, net = pricing.share(total, share.percent, rounding)
        except pricing.PricingError as exc:
            raise StatementError(str(exc)) from exc
        doc["share"] = {"platform": share.platform, "percent": pricing.amount_text(share.percent),
                        "platformAmount": pricing.amount_text(platform), "providerAmount": pricing.amount_text(net)}
    if supersedes is not None:
        doc["supersedes"] = supersedes
    return doc


def digest(document: Mapping[str, Any]) -> str:
    """``sha-256:<hex>`` of a signed document's RFC 8785 bytes (what an acceptance or dispute binds to)."""
    try:
        return "sha-256:" + hashlib.sha256(proofs.canonical(dict(document))).hexdigest()
    except proofs.ProofError as exc:
        raise StatementError(str(exc)) from exc


def acceptance(statement: Mapping[str, Any], *, accepted: datetime) -> dict[str, Any]:
    """The consumer's countersignature (unsigned): it accepts exactly this signed statement."""
    return {"@type": ACCEPTANCE_TYPE, "statement": statement["id"], "agreement": statement["agreement"],
            "period": statement["period"], "statementDigest": digest(statement), "total": statement["total"],
            "consumer": statement["consumer"], "accepted": time_text(accepted)}


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One reason to dispute a statement: the rule it breaks, in words, the receipts (sequence numbers) or
    items it contests, and the consumer's own figure where it has one."""

    rule: str
    detail: str
    contested: tuple[str, ...] = ()
    expected: str | None = None


def dispute(statement: Mapping[str, Any], problems: Sequence[Problem], *, disputed: datetime,
            own_total: str | None) -> dict[str, Any]:
    """The consumer's dispute (unsigned): the exact statement, each problem, and the consumer's own total."""
    return {"@type": DISPUTE_TYPE, "statement": statement.get("id"), "agreement": statement.get("agreement"),
            "period": statement.get("period"), "statementDigest": digest(statement),
            "consumer": statement.get("consumer"),
            "problems": [{"rule": p.rule, "detail": p.detail, "contested": list(p.contested[:MAX_CONTESTED]),
                          **({"expected": p.expected} if p.expected is not None else {})}
                         for p in problems[:MAX_PROBLEMS]],
            "consumerTotal": own_total, "disputed": time_text(disputed)}


# -- checking -------------------------------------------------------------------------------------------------

def verify_signed(document: Mapping[str, Any], did_document: Mapping[str, Any], *, signer_field: str) -> None:
    """The document's proof verifies with a key *did_document* lists for assertions, and that DID is the one the
    document names in *signer_field*. Raises :class:`StatementError`."""
    signer = document.get(signer_field)
    if not isinstance(signer, str) or did_document.get("id") != signer:
        raise StatementError(f"the DID document is not that of the document's {signer_field} {signer!r}")
    try:
        proof = proofs.verify(document, proofs.key_resolver(did_document))
        by = dids.split_did_url(proof["verificationMethod"])[0]
    except (proofs.ProofError, dids.DidError) as exc:
        raise StatementError(f"the {signer_field}'s signature does not verify: {exc}") from exc
    if by != signer:
        raise StatementError(f"signed by {by}, not by its {signer_field} {signer}")


class Own(msgspec.Struct, frozen=True, kw_only=True):
    """What the consumer's node holds, for checking a statement of one agreement."""

    agreement: str
    provider: str
    consumer: str
    #: The agreement's post-paid prices, and when it came into force.
    terms: tuple[pricing.PriceTerm, ...]
    agreed: datetime
    #: The last statement it holds for the agreement that was not disputed (its id, end, and receipt range's last
    #: sequence number), or None.
    previous_id: str | None
    previous_end: datetime | None
    previous_last: int
    #: Its own log over the statement's receipt range (None when the range names entries it does not have).
    receipts: ReceiptRange | None
    #: The permitted uses it logged after the previous statement's receipt range (sequence numbers above
    #: ``previous_last``) and before the statement's end (its own figure).
    own_uses: int
    #: Its queries answered by the provider (signed results it keeps) that no earlier statement billed.
    queries: frozenset[str]
    #: Its completed transfers under the agreement that no earlier statement billed: provider pid → bytes.
    transfers: Mapping[str, int]
    #: Statement ids it already holds (any agreement).
    seen_ids: frozenset[str] = frozenset()
    now: datetime


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def _shown(value: object) -> str:
    """A value of the provider's document as a dispute quotes it: its repr, cut short (the dispute is signed and
    kept, so it holds no more of the provider's text than it needs)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def check(statement: Mapping[str, Any], own: Own) -> list[Problem]:
    """Every reason to dispute *statement* (already signature-checked) given the consumer's records *own*."""
    problems: list[Problem] = []

    def add(rule: str, detail: str, contested: Iterable[Any] = (), expected: object = None) -> None:
        problems.append(Problem(rule=rule, detail=detail, contested=tuple(str(c) for c in contested),
                                expected=None if expected is None else str(expected)))

    sid = _text(statement, "id")
    if statement.get("@type") != STATEMENT_TYPE:
        add("document", "not a usage statement")
        return problems
    if not sid.startswith("urn:uuid:"):
        add("document", "the statement's id is not a urn:uuid:")
    if _text(statement, "agreement") != own.agreement:
        add("replay", f"the statement is for agreement {_shown(statement.get('agreement'))}, not {own.agreement}")
        return problems
    if _text(statement, "provider") != own.provider or _text(statement, "consumer") != own.consumer:
        add("parties", "the statement names other parties than the agreement's")
    if sid in own.seen_ids:
        add("replay", f"statement {_shown(sid)} was received before")
    period = statement.get("period")
    try:
        if not isinstance(period, Mapping):
            raise StatementError("no period")
        start, end = _instant(str(period.get("start"))), _instant(str(period.get("end")))
    except StatementError as exc:
        add("period", f"the period cannot be read: {exc}")
        return problems
    expected_start = own.previous_end or own.agreed
    if start != expected_start:
        where = "the previous statement ended" if own.previous_end is not None else "the agreement came into force"
        add("period", f"the period starts at {time_text(start)}, not where {where} ({time_text(expected_start)})",
            expected=time_text(expected_start))
    terms_period = own.terms[0].period if own.terms else pricing.DEFAULT_PERIOD
    try:
        period_end, label = pricing.period_end(start, terms_period), pricing.period_label(start, terms_period)
    except pricing.PricingError as exc:
        add("period", f"the period cannot be read: {exc}")
        return problems
    if end > period_end:
        add("period", f"the period runs past the end of its billing period ({time_text(period_end)})")
    if period.get("label") != label:
        add("period", f"the period is labelled {_shown(period.get('label'))}, but it lies in {label}", expected=label)
    if end <= start:
        add("period", "the period ends before it starts")
    if end > own.now:
        add("period", f"the period ends in the future ({time_text(end)})")
    if (statement.get("previous") or None) != own.previous_id:
        add("previous", f"the statement follows {_shown(statement.get('previous'))}, but the last one held is "
                        f"{own.previous_id!r}", expected=own.previous_id)
    # prices: exactly the agreement's post-paid prices
    quoted = statement.get("prices")
    if quoted != pricing.terms_json(own.terms):
        add("price", "the statement's prices are not the agreement's", expected=str(pricing.terms_json(own.terms)))
    if own.terms and (statement.get("currency") != own.terms[0].currency
                      or statement.get("rounding") != str(own.terms[0].rounding)):
        add("price", f"the statement is in {_shown(statement.get('currency'))} rounded "
                     f"{_shown(statement.get('rounding'))}, not in the agreement's {own.terms[0].currency} rounded "
                     f"{own.terms[0].rounding}",
            expected=own.terms[0].currency)
    # receipts
    rng = statement.get("receipts")
    theirs: ReceiptRange | None = None
    if rng is not None:
        try:
            theirs = msgspec.convert(rng, ReceiptRange)
        except msgspec.ValidationError as exc:
            add("receipts", f"the receipt range cannot be read: {exc}")
    if theirs is not None:
        if theirs.first != own.previous_last + 1:
            kind = "a gap" if theirs.first > own.previous_last + 1 else "an overlap"
            # The receipts skipped (a gap) or billed again (an overlap), at most MAX_CONTESTED of them.
            low = min(theirs.first, own.previous_last + 1)
            high = min(own.previous_last + 1, theirs.last + 1) if kind == "an overlap" else theirs.first
            add("gap", f"the receipt range starts at {theirs.first}: {kind} after the last receipt billed "
                       f"({own.previous_last})",
                contested=range(low, max(low, min(high, low + MAX_CONTESTED))), expected=own.previous_last + 1)
        if theirs.last < theirs.first:
            add("receipts", "the receipt range ends before it starts")
        elif own.receipts is None or own.receipts.head != theirs.head or own.receipts.last != theirs.last:
            add("receipts", f"receipt {theirs.last} is not the entry of this log with hash {theirs.head[:16]}…",
                contested=[theirs.last])
        elif own.receipts.uses != theirs.uses:
            add("count", f"the receipts {theirs.first} to {theirs.last} hold {own.receipts.uses} permitted uses, not "
                         f"{theirs.uses}", contested=[f"{theirs.first}-{theirs.last}"], expected=own.receipts.uses)
        elif theirs.uses > own.own_uses:
            add("count", f"the statement bills {theirs.uses} uses, but {own.own_uses} were logged in its period",
                contested=[f"{theirs.first}-{theirs.last}"], expected=own.own_uses)
    elif own.own_uses and any(t.basis is pricing.Basis.USE for t in own.terms):
        add("count", f"the statement bills no receipts, but {own.own_uses} uses were logged in its period",
            expected=own.own_uses)
    # queries and transfers
    queries = statement.get("queries")
    if not isinstance(queries, list) or len(queries) > MAX_QUERIES or not all(isinstance(q, str) for q in queries):
        add("queries", "the statement's queries cannot be read")
        queries = []
    unknown = [q for q in queries if q not in own.queries]
    if unknown:
        add("queries", f"{len(unknown)} queries are not answered queries of this agreement that are still unbilled",
            contested=unknown, expected=len(set(queries)) - len(set(unknown)))
    transfers = statement.get("transfers")
    billed: dict[str, int] = {}
    if isinstance(transfers, list) and len(transfers) <= MAX_TRANSFERS:
        for item in transfers:
            pid = item.get("providerPid") if isinstance(item, Mapping) else None
            size = item.get("bytes") if isinstance(item, Mapping) else None
            if isinstance(pid, str) and isinstance(size, int) and not isinstance(size, bool) and pid not in billed:
                billed[pid] = size
            else:
                add("transfers", "a transfer of the statement cannot be read")
    else:
        add("transfers", "the statement's transfers cannot be read")
    wrong = [pid for pid, size in billed.items() if own.transfers.get(pid) != size]
    if wrong:
        add("transfers", f"{len(wrong)} transfers are not completed, unbilled transfers of this agreement of that "
                         f"size", contested=wrong)
    # amounts: recomputed from the statement's own quantities under the agreement's prices
    evidence = Evidence(receipts=theirs, queries=tuple(q for q in queries if isinstance(q, str)), transfers=billed)
    new_period = begins_period(start, own.previous_id, terms_period)
    try:
        lines, total = pricing.bill(own.terms, quantities(evidence, own.terms, new_period=new_period))
    except pricing.PricingError as exc:
        add("amount", f"the statement's quantities cannot be billed: {exc}")
        return problems
    if statement.get("lines") != [pricing.line_json(line) for line in lines]:
        add("amount", "the statement's lines are not its quantities at the agreement's prices",
            expected=pricing.amount_text(total))
    if statement.get("total") != pricing.amount_text(total):
        add("amount", f"the total is {_shown(statement.get('total'))}, not {pricing.amount_text(total)}",
            expected=pricing.amount_text(total))
    split = statement.get("share")
    if split is not None and own.terms:
        problem = _share_problem(split, total, own.terms[0].rounding)
        if problem:
            add("share", problem)
    return problems


def _share_problem(split: object, total: Decimal, rounding: pricing.Rounding) -> str:
    """What is wrong with a statement's platform share of *total*: '' when it is the percentage of the total,
    rounded by the statement's rule, and the provider's amount the rest."""
    try:
        if not isinstance(split, Mapping) or not isinstance(split.get("platform"), str):
            raise pricing.PricingError("no platform")
        percent = pricing.parse_decimal(split.get("percent"), "the platform share")
        platform, net = pricing.share(total, percent, rounding)
    except pricing.PricingError:
        return "the platform share cannot be read"
    if split.get("platformAmount") != pricing.amount_text(platform) or \
            split.get("providerAmount") != pricing.amount_text(net):
        return (f"{pricing.amount_text(percent)}% of {pricing.amount_text(total)} is {pricing.amount_text(platform)} "
                f"for the platform and {pricing.amount_text(net)} for the provider")
    return ""


def own_total(own: Own) -> str:
    """The consumer's own figure for the stretch: its own uses, unbilled queries and transfers, at the prices."""
    receipts = ReceiptRange(first=0, last=0, head="", uses=own.own_uses)
    evidence = Evidence(receipts=receipts, queries=tuple(own.queries), transfers=own.transfers)
    period = own.terms[0].period if own.terms else pricing.DEFAULT_PERIOD
    new_period = begins_period(own.previous_end or own.agreed, own.previous_id, period)
    return pricing.amount_text(pricing.bill(own.terms, quantities(evidence, own.terms, new_period=new_period))[1])


# -- offline verification of an exported bundle --------------------------------------------------------------

class Verified(msgspec.Struct, frozen=True, kw_only=True):
    statement: str
    agreement: str
    total: str
    answer: str  # "accepted", "disputed" or "none"
    notes: tuple[str, ...] = ()


def bundle(statement: Mapping[str, Any], answer: Mapping[str, Any] | None,
           did_documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What ``tds statement export`` writes: the signed statement, the signed answer (if any), and the DID
    documents of both parties, so that :func:`verify_bundle` needs nothing else."""
    return {"@type": BUNDLE_TYPE, "statement": dict(statement), "answer": dict(answer) if answer else None,
            "didDocuments": {k: dict(v) for k, v in did_documents.items()}}


def _did_document(docs: Mapping[str, Any], did: str) -> Mapping[str, Any]:
    # A did:key is its own document: one embedded in the bundle is never read (it could name any key).
    if did.startswith("did:key:"):
        try:
            return dids.did_key_document(did)
        except dids.DidError as exc:
            raise StatementError(f"{did}: {exc}") from exc
    found = docs.get(did) if isinstance(docs, Mapping) else None
    if isinstance(found, Mapping):
        return found
    raise StatementError(f"the bundle holds no DID document for {did or 'its signer'}")


def verify_bundle(document: Mapping[str, Any]) -> Verified:
    """Check an exported statement (or a bare signed statement) offline: every signature against the DID
    documents it carries, the answer bound to this exact statement, and the statement's arithmetic under the
    prices it quotes. Raises :class:`StatementError` naming the first thing wrong."""
    if not isinstance(document, Mapping):
        raise StatementError("not a usage statement or an exported statement")
    if document.get("@type") == STATEMENT_TYPE:
        document = {"statement": document, "answer": None, "didDocuments": {}}
    elif document.get("@type") != BUNDLE_TYPE:
        raise StatementError("not a usage statement or an exported statement")
    statement, answer, docs = document.get("statement"), document.get("answer"), document.get("didDocuments") or {}
    if not isinstance(statement, Mapping) or statement.get("@type") != STATEMENT_TYPE:
        raise StatementError("the bundle holds no usage statement")
    provider, consumer = _text(statement, "provider"), _text(statement, "consumer")
    verify_signed(statement, _did_document(docs, provider), signer_field="provider")
    _check_arithmetic(statement)
    notes: list[str] = []
    kind = "none"
    if answer is not None:
        if not isinstance(answer, Mapping) or answer.get("@type") not in (ACCEPTANCE_TYPE, DISPUTE_TYPE):
            raise StatementError("the answer is neither an acceptance nor a dispute")
        if answer.get("consumer") != consumer:
            raise StatementError("the answer is not by the statement's consumer")
        verify_signed(answer, _did_document(docs, consumer), signer_field="consumer")
        if answer.get("statementDigest") != digest(statement) or answer.get("statement") != statement.get("id"):
            raise StatementError("the answer is about another statement (its digest differs)")
        kind = "accepted" if answer.get("@type") == ACCEPTANCE_TYPE else "disputed"
        problems = answer.get("problems")
        if kind == "disputed" and isinstance(problems, list):
            notes.extend(f"{p.get('rule')}: {p.get('detail')}" for p in problems[:MAX_PROBLEMS]
                         if isinstance(p, Mapping))
    return Verified(statement=_text(statement, "id"), agreement=_text(statement, "agreement"),
                    total=_text(statement, "total"), answer=kind, notes=tuple(notes))


def _evidence_quantity(statement: Mapping[str, Any], basis: pricing.Basis) -> Decimal | None:
    """The quantity of *basis* the statement's own evidence lists (None for a subscription's period)."""
    if basis is pricing.Basis.USE:
        receipts = statement["receipts"]
        return Decimal(0) if receipts is None else Decimal(msgspec.convert(receipts, ReceiptRange).uses)
    if basis is pricing.Basis.QUERY:
        queries = statement["queries"]
        if not isinstance(queries, list) or len(queries) > MAX_QUERIES or not all(isinstance(q, str) for q in queries):
            raise TypeError("the queries are not a list of ids")
        return Decimal(len(set(queries)))
    if basis is pricing.Basis.GIGABYTE:
        transfers = statement["transfers"]
        if not isinstance(transfers, list) or len(transfers) > MAX_TRANSFERS:
            raise TypeError("the transfers are not a list")
        sizes = [t["bytes"] for t in transfers]
        if len({t["providerPid"] for t in transfers}) != len(sizes) or \
                not all(isinstance(b, int) and not isinstance(b, bool) for b in sizes):
            raise TypeError("a transfer is listed twice or without its size in bytes")
        return pricing.gigabytes(sum(sizes))
    return None


def _check_arithmetic(statement: Mapping[str, Any]) -> None:
    """One line per quoted price; each line's quantity is what the statement's evidence lists (receipts,
    queries, transfers), its amount the quoted price applied to it, in the statement's currency; the total is
    the lines' sum, and a platform share is its percentage of the total."""
    try:
        total = Decimal(0)
        currency, rounding_text = statement["currency"], statement["rounding"]
        rounding = pricing.parse_rounding(rounding_text)
        quotes = statement["prices"]
        lines = statement["lines"]
        if not isinstance(quotes, list) or not isinstance(lines, list):
            raise TypeError("the prices and the lines are lists")
        prices = {p["basis"]: p for p in quotes}
        if len(prices) != len(quotes) or sorted(prices) != sorted(line["basis"] for line in lines):
            raise StatementError("the statement does not have exactly one line for each price it quotes")
        for line in lines:
            quote = prices[line["basis"]]
            basis = pricing.Basis(line["basis"])
            if quote["rounding"] != rounding_text or quote["currency"] != currency or line["currency"] != currency:
                raise StatementError(f"the {basis} line is not in the statement's currency and rounding")
            if len(quote["tiers"]) > pricing.MAX_TIERS:
                raise StatementError(f"the {basis} price has more than {pricing.MAX_TIERS} tiers")
            term = pricing.PriceTerm(basis=basis,
                                     unit_price=pricing.parse_decimal(quote["unitPrice"], "unitPrice"),
                                     currency=currency, rounding=rounding,
                                     tiers=tuple(pricing.parse_tier(t) for t in quote["tiers"]))
            quantity = pricing.parse_decimal(line["quantity"], "quantity")
            listed = _evidence_quantity(statement, basis)
            if listed is not None and listed != quantity:
                raise StatementError(f"the {basis} line bills {line['quantity']}, but the statement's evidence "
                                     f"lists {pricing.amount_text(listed)}")
            amount = rounding.apply(pricing.charge(term, quantity))
            if pricing.amount_text(amount) != line["amount"]:
                raise StatementError(f"the {basis} line comes to {pricing.amount_text(amount)}, not {line['amount']}")
            total += amount
    except (KeyError, TypeError, ValueError, ArithmeticError, msgspec.ValidationError, pricing.PricingError) as exc:
        raise StatementError(f"the statement's lines cannot be read: {exc}") from exc
    if pricing.amount_text(total) != statement.get("total"):
        raise StatementError(f"the lines add up to {pricing.amount_text(total)}, not {statement.get('total')}")
    split = statement.get("share")
    if split is not None:
        problem = _share_problem(split, total, rounding)
        if problem:
            raise StatementError(problem)
