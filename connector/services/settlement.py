"""Settlement: statements of what an agreement's post-paid prices come to, issued by the provider, checked by the
consumer against its own records, countersigned or disputed; the async shell around
:mod:`connector.protocol.statements` (which decides what a statement says and whether it is right).

The provider (:meth:`SettlementService.issue`, ``tds statement issue``, or by itself at each period's end):

1. the agreement must be the participant's as provider and have been in force; its post-paid prices
   (``usage_policies.pricing.postpaid_terms``) say what is billed, in which currency, by which billing period;
2. the stretch runs from where the agreement's last statement that was not disputed ended (or from the
   agreement's signed ``timestamp``, which both parties hold) to the end of that billing period, or earlier
   (``until``); it must have ended, and no statement of the agreement may still await the consumer's answer;
3. the evidence is read from the provider's own records, in SQL: the consumer's usage log as received in its
   signed receipts (the entries after the last statement's range, logged before the end, without a gap), the
   sandbox queries its own chain logged as answered, and the transfers of the agreement completed before the
   end; a query or transfer that an earlier statement billed is not billed again (``statement_items``);
4. the statement is built and signed (``eddsa-jcs-2022``), stored ISSUED with what it billed in one transaction,
   then delivered to the consumer's ``…/tds/statements`` (a signed request), retried with backoff until the
   consumer's node answers, across restarts. Its answer moves it to DELIVERED, or straight to ACCEPTED or
   DISPUTED when the consumer's signed answer comes with it.

With ``[settlement] auto`` the node issues each statement of an agreement in force by itself once its billing
period has ended and ``grace_s`` has passed (a timer woken at the next such moment, not a poll), unless the
agreement's last statement awaits its answer or was disputed (a disputed stretch is the operator's to issue
again: the new statement ``supersedes`` the disputed one).

The consumer (:meth:`SettlementService.receive`): the statement must come from the agreement's provider (the
request's signer and the statement's proof, checked against the provider's DID document); it is checked against
the consumer's own records (:class:`connector.protocol.statements.Own`: its usage log over the receipt range, its
uses in the period, the signed sandbox results it kept, its completed transfers, each not billed before) by
:func:`connector.protocol.statements.check`. No problem: RECEIVED, waiting for the operator, who accepts
(countersigns) or disputes it. Any problem: DISPUTED at once, with a signed dispute naming each rule broken,
the receipts contested and the consumer's own figure, delivered to the provider's ``…/tds/statements/answers``
(retried like the statements). A statement for a stretch the consumer accepted before is refused (409: double
settlement). Every statement received is kept as evidence, whatever became of it.

Both sides keep the signed statement and the signed answer; ``export`` bundles them with both parties' DID
documents so that ``tds statement verify FILE`` checks them offline. A hosting node may take a share of what its
hosted participants earn (``participants.platform_share``): their statements show the split, and the host's
report (admin) sums, per participant, what it earned and owes and the platform's share, from accepted statements.

Logs name the participant, agreement, statement, state and reason; never an amount.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import random
import sqlite3
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import msgspec

from connector.errors import BadRequest, Conflict, NotFound, PeerError, TdsError, Unauthorized
from connector.identity import did as dids
from connector.identity import proof
from connector.identity.resolver import proof_key_id
from connector.logging import get_logger
from connector.protocol import statements
from connector.protocol.agreement_lifecycle import EVER_IN_FORCE, AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.statements import StatementEvent, StatementState
from connector.store import statements as store
from connector.store.db import Database
from connector.store.statements import CONSUMER, PROVIDER, QUERY, TRANSFER, StatementRow
from usage_policies import PolicyError, parse_policy, pricing

if TYPE_CHECKING:
    from connector.config import SettlementSection
    from connector.participant import ParticipantRuntime
    from connector.services.ports import PeerRequester, Resolver
    from connector.store.records import AgreementRecord
    from connector.store.repository import ContractRepository
    from connector.store.statements import StatementRepository

log = get_logger(component="settlement")
#: The DSP extension's routes, under a participant's DSP base.
STATEMENTS_PATH = "/tds/statements"
ANSWERS_PATH = "/tds/statements/answers"
#: What the provider's chain logs a sandbox query as (``connector.services.sandbox``: APPLICATION, ACTION).
QUERY_APPLICATION = "sandbox"
QUERY_ACTION = "aggregate"
#: The longest wait between two deliveries of one statement or answer.
RETRY_MAX_S = 600.0
#: How far the consumer's clock may run behind the provider's: a statement closed "now" is not in its future.
CLOCK_SKEW = timedelta(minutes=5)
#: The longest the automatic issue sleeps before it looks again (a clock set forward, a missed wake-up).
AUTO_MAX_SLEEP_S = 6 * 3600.0
#: The most statements one agreement keeps on the consumer's side (a provider cannot grow the table without end).
MAX_KEPT = 10_000
#: Characters of a reason kept and shown; of an id, a period's fields, an amount or a currency read from a peer.
MAX_REASON = 2000
MAX_ID = 200
MAX_FIELD = 64
#: Listing: rows per answer.
MAX_LIMIT = 1000

_jitter = random.Random()


def _backoff(attempt: int) -> float:
    return float(min(RETRY_MAX_S, 0.5 * 2 ** max(0, attempt - 1)) * _jitter.uniform(0.8, 1.2))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _printable(value: object, limit: int) -> str:
    """A peer's text as the node keeps and shows it: bounded, without control characters."""
    return "".join(c if c.isprintable() else " " for c in str(value)[:limit])


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str) or len(text) > MAX_FIELD:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _problem_json(problem: statements.Problem) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": problem.rule, "detail": problem.detail,
                           "contested": list(problem.contested[:statements.MAX_CONTESTED])}
    if problem.expected is not None:
        out["expected"] = problem.expected
    return out


def _reasons(problems: list[Any]) -> str:
    """Problems (:class:`Problem`, or their JSON in a peer's dispute) as one line."""
    parts = []
    for p in problems[:statements.MAX_PROBLEMS]:
        if isinstance(p, statements.Problem):
            parts.append(f"{p.rule}: {p.detail}")
        elif isinstance(p, Mapping):
            parts.append(f"{p.get('rule')}: {p.get('detail')}")
    return _printable("; ".join(parts), MAX_REASON)


def _dispute_reasons(answer: Mapping[str, Any] | None) -> str:
    if not answer or answer.get("@type") != statements.DISPUTE_TYPE:
        return ""
    found = answer.get("problems")
    return _reasons(found if isinstance(found, list) else [])


# -- what the management API shows ---------------------------------------------------------------------------

class StatementPeriod(msgspec.Struct, frozen=True):
    label: str
    start: str
    end: str


class StatementShare(msgspec.Struct, frozen=True, rename="camel"):
    """A hosting node's cut: its DID, the percentage, its amount and what is left for the provider."""

    platform: str
    percent: str
    platform_amount: str
    provider_amount: str


class StatementLine(msgspec.Struct, frozen=True, rename="camel"):
    """One line: a quantity of one basis at its price, the amount rounded by the agreement's rule."""

    basis: str
    quantity: str
    unit_price: str
    tiers: list[str]
    amount: str
    currency: str


class StatementSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A statement as lists show it."""

    id: str
    agreement: str
    #: ``provider``: issued by this participant; ``consumer``: received by it.
    role: str
    #: issued, delivered, received, accepted or disputed.
    state: str
    #: The other party's DID.
    counterparty: str
    period: StatementPeriod
    currency: str
    #: Per basis of the agreement's prices (use, query, gigabyte, period): the quantity billed.
    quantities: dict[str, str]
    lines: list[StatementLine]
    total: str
    share: StatementShare | None
    #: Why it was disputed (each rule and detail), or why its delivery has not succeeded yet.
    reason: str
    issued: str
    updated: str


class StatementDetail(StatementSummary, frozen=True, kw_only=True):
    """A statement with its signed document and the consumer's signed answer (acceptance or dispute), if any."""

    document: dict[str, Any]
    answer: dict[str, Any] | None


class StatementList(msgspec.Struct, frozen=True):
    statements: list[StatementSummary]


class ParticipantAccount(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What one hosted participant's accepted statements come to, per currency."""

    name: str
    did: str
    #: As provider, net of the platform's share.
    earned: dict[str, str]
    #: The platform's share of what it earned.
    platform_share: dict[str, str]
    #: As consumer.
    owes: dict[str, str]
    statements: int


class SettlementReport(msgspec.Struct, frozen=True):
    participants: list[ParticipantAccount]
    #: The platform's shares, summed over the hosted participants, per currency.
    platform: dict[str, str]


def _lines(value: Any) -> list[StatementLine]:
    try:
        return msgspec.convert(value, list[StatementLine]) if value is not None else []
    except (msgspec.ValidationError, TypeError):
        return []


def _share(value: Any) -> StatementShare | None:
    try:
        return msgspec.convert(value, StatementShare | None)
    except (msgspec.ValidationError, TypeError):
        return None


def _summary(*, statement_id: str, agreement_id: str, role: str, state: str, counterparty: Any, label: str,
             start: str, end: str, currency: str, lines: Any, total: str, share: Any, reason: str, issued: Any,
             updated: str) -> StatementSummary:
    shown = _lines(lines)
    return StatementSummary(
        id=statement_id, agreement=agreement_id, role=role, state=state,
        counterparty=counterparty if isinstance(counterparty, str) else "",
        period=StatementPeriod(label=label, start=start, end=end), currency=currency,
        quantities={line.basis: line.quantity for line in shown}, lines=shown, total=total, share=_share(share),
        reason=reason, issued=issued if isinstance(issued, str) else "", updated=updated)


def summary_of(row: StatementRow, document: Mapping[str, Any] | None = None) -> StatementSummary:
    doc = document if document is not None else row.decoded()
    counterparty = doc.get("consumer") if row.role == PROVIDER else doc.get("provider")
    return _summary(statement_id=row.id, agreement_id=row.agreement_id, role=row.role, state=row.state,
                    counterparty=counterparty, label=row.period_label, start=row.period_start, end=row.period_end,
                    currency=row.currency, lines=doc.get("lines"), total=row.total, share=doc.get("share"),
                    reason=row.reason, issued=doc.get("issued"), updated=row.updated_at)


def _listed_summary(row: store.ListedRow) -> StatementSummary:
    def decoded(text: str | None) -> Any:
        try:
            return msgspec.json.decode(text) if text else None
        except msgspec.DecodeError:
            return None

    return _summary(statement_id=row.id, agreement_id=row.agreement_id, role=row.role, state=row.state,
                    counterparty=row.counterparty, label=row.period_label, start=row.period_start,
                    end=row.period_end, currency=row.currency, lines=decoded(row.lines), total=row.total,
                    share=decoded(row.share), reason=row.reason, issued=row.issued, updated=row.updated_at)


def csv_text(row: StatementRow) -> str:
    """The statement as CSV for accounting: one line per line of the statement."""
    doc = row.decoded()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["statement", "agreement", "period", "basis", "quantity", "unit_price", "amount", "currency",
                     "state"])
    for line in _lines(doc.get("lines")):
        writer.writerow([_cell(v) for v in (row.id, row.agreement_id, row.period_label, line.basis, line.quantity,
                                            line.unit_price, line.amount, line.currency, row.state)])
    return out.getvalue()


def _cell(value: str) -> str:
    """A value a spreadsheet shows as text, never runs as a formula (a peer chooses some of them)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def owes_statements(agreement: AgreementRecord) -> bool:
    """Whether *agreement* may make statements fall due here: held as provider, with a price (a ``compensate``
    duty), as :func:`connector.store.statements.provider_agreements` selects them."""
    return agreement.role == Role.PROVIDER and b"compensate" in msgspec.json.encode(agreement.agreement)


class SettlementService:
    """Statements, both roles (see the module docstring).

    *repo* holds the statements, their items and the consumer's sandbox results; *contracts* the agreements and
    their negotiations (the peer's address); *client* sends the signed requests and *resolver* finds the peers'
    DID documents; *participant_by_id* finds a served participant, *host* the node's own participant (the
    platform of a platform share) and *hosted* every participant hosted (for the host's report); *settings* is
    ``[settlement]``; *clock* the time of statements and answers."""

    def __init__(
        self, repo: StatementRepository, contracts: ContractRepository, client: PeerRequester, resolver: Resolver,
        *, participant_by_id: Callable[[str], ParticipantRuntime | None],
        host: Callable[[], ParticipantRuntime | None], hosted: Callable[[], list[ParticipantRuntime]],
        settings: SettlementSection, clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.repo = repo
        self.contracts = contracts
        self.client = client
        self.resolver = resolver
        self.participant_by_id = participant_by_id
        self.host = host
        self.hosted = hosted
        self.settings = settings
        self.clock = clock
        self._deliveries: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        #: The post-paid prices of agreements and when each came into force (an agreement never changes), for the
        #: automatic issue.
        self._terms_cache: dict[tuple[str, str], tuple[tuple[pricing.PriceTerm, ...], datetime | None]] = {}
        self._wake = asyncio.Event()
        self._auto: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        """Deliver what is still undelivered; start the automatic issue (``[settlement] auto``)."""
        await self.resume()
        if self.settings.auto and self._auto is None:
            self._auto = self._spawn(self._run_auto())

    async def resume(self, only: str | None = None) -> None:
        """Deliver every statement (provider) and answer (consumer) not yet delivered (of participant *only*)."""
        for participant_id, statement_id in await self.repo.read(store.pending_deliveries):
            if only is None or participant_id == only:
                self._deliver_later(participant_id, statement_id)

    def forget(self, participant_id: str) -> None:
        """The participant is no longer served: stop delivering its statements and answers."""
        for key in [k for k in self._deliveries if k[0] == participant_id]:
            self._deliveries.pop(key).cancel()

    def wake(self) -> None:
        """Something changed that may make a statement due (an agreement in force, an answer): look again."""
        self._wake.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._auto = None

    def _lock(self, participant_id: str, agreement_id: str) -> asyncio.Lock:
        key = (participant_id, agreement_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    # -- reading an agreement --------------------------------------------------------------------------------

    @staticmethod
    def _terms(agreement: AgreementRecord) -> tuple[pricing.PriceTerm, ...]:
        try:
            return pricing.postpaid_terms(parse_policy(agreement.agreement))
        except PolicyError as exc:
            raise BadRequest(f"the prices of agreement {agreement.id} cannot be read: {exc}") from exc

    @staticmethod
    def _agreed(agreement: Mapping[str, Any]) -> datetime | None:
        """When the agreement came into force as both parties signed it (its ``timestamp``)."""
        return _instant(agreement.get("timestamp"))

    async def _verify(self, document: Mapping[str, Any], did: str, field: str) -> None:
        """*document*'s proof verifies against *did*'s DID document, and *did* is the document's *field*."""
        try:
            did_document = await self.resolver.resolve(did, key_id=proof_key_id(document))
        except (dids.DidError, TdsError) as exc:
            raise PeerError(f"the DID document of {did} cannot be resolved: "
                            f"{exc.message if isinstance(exc, TdsError) else exc}") from exc
        try:
            statements.verify_signed(document, did_document, signer_field=field)
        except statements.StatementError as exc:
            raise Unauthorized(str(exc)) from exc

    async def _address(self, participant_id: str, agreement_id: str) -> str | None:
        agreement = await self.contracts.agreement(participant_id, agreement_id)
        if agreement is None:
            return None
        negotiation = await self.contracts.negotiation(participant_id, agreement.negotiation_id)
        if negotiation is None or not negotiation.counterparty_address:
            return None
        return negotiation.counterparty_address.rstrip("/")

    def _signed(self, participant: ParticipantRuntime, document: Mapping[str, Any], at: datetime) -> dict[str, Any]:
        signer = participant.signer  # key and id read together (a rotation may switch them meanwhile)
        return proof.sign(document, signer.key, verification_method=signer.key_id, created=statements.time_text(at))

    # -- the provider: issuing -------------------------------------------------------------------------------

    async def issue(self, participant: ParticipantRuntime, agreement_id: str, until: str | None
                    ) -> StatementSummary:
        """Issue the agreement's next statement, up to the end of its billing period or *until* (``"now"`` or an
        ISO 8601 time; None: the period's end, which must have passed), and deliver it. See the module
        docstring; 400 no post-paid price or a bad *until*, 404 not an agreement of this participant's as
        provider, 409 the stretch is settled already or a statement awaits its answer."""
        agreement = await self.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != Role.PROVIDER or agreement.state not in EVER_IN_FORCE:
            raise NotFound(f"no agreement {agreement_id[:MAX_ID]!r} where this participant is the provider")
        terms = self._terms(agreement)
        if not terms:
            raise BadRequest(f"agreement {agreement.id} states no post-paid price: there is nothing to bill "
                             "(a pre-paid price is paid before use)", path="$.agreement")
        now = self.clock()
        requested: datetime | None = None
        if until is not None:
            requested = now if until.strip().lower() == "now" else _instant(until.strip())
            if requested is None:
                raise BadRequest(f"until must be 'now' or an ISO 8601 time with its time zone "
                                 f"(2026-11-30T00:00:00Z), not {until[:MAX_FIELD]!r}", path="$.until")
        async with self._lock(participant.id, agreement.id):
            row = await self._issue(participant, agreement, terms, requested, now)
        log.info("statement issued", participant=participant.name, agreement=agreement.id, statement=row.id,
                 state=row.state, period=row.period_label, start=row.period_start, end=row.period_end,
                 supersedes=row.supersedes)
        self._deliver_later(participant.id, row.id)
        return summary_of(row)

    async def _issue(self, participant: ParticipantRuntime, agreement: AgreementRecord,
                     terms: tuple[pricing.PriceTerm, ...], requested: datetime | None, now: datetime) -> StatementRow:
        key = (participant.id, agreement.id)
        last = await self.repo.read(lambda db: store.last_settled(db, *key, PROVIDER))
        if last is not None and last.state in (StatementState.ISSUED, StatementState.DELIVERED):
            raise Conflict(f"statement {last.id} of this agreement ({last.period_start} to {last.period_end}) is "
                           f"{last.state}: it awaits the consumer's answer before the next one is issued")
        agreed = self._agreed(agreement.agreement)
        start = _instant(last.period_end) if last is not None else agreed
        if start is None:
            raise BadRequest(f"agreement {agreement.id} states no readable timestamp: its billing periods cannot "
                             "be told")
        period = terms[0].period
        period_end = pricing.period_end(start, period)
        end = period_end if requested is None else min(period_end, requested)
        if end <= start:
            if last is not None:
                raise Conflict(f"the stretch up to {statements.time_text(end)} is settled already: statement "
                               f"{last.id} ({last.state}) runs to {last.period_end}")
            raise BadRequest(f"the agreement came into force at {statements.time_text(start)}: there is nothing to "
                             f"bill up to {statements.time_text(end)}", path="$.until")
        if end > now:
            raise BadRequest(f"the billing period ends at {statements.time_text(end)}, which has not passed; give "
                             "until (\"now\" or a time) to close the stretch early", path="$.until")
        start_text, end_text = statements.time_text(start), statements.time_text(end)
        after = last.receipts_last if last is not None else 0
        bases = {t.basis for t in terms}

        def evidence(db: Database) -> tuple[tuple[int, int, str, int] | None, list[str], dict[str, int],
                     str | None]:
            found = store.receipt_range(db, *key, after=after, before=end_text)
            queries = store.unbilled_queries(db, *key, before=end_text, application=QUERY_APPLICATION,
                                             action=QUERY_ACTION, limit=statements.MAX_QUERIES) \
                if pricing.Basis.QUERY in bases else []
            transfers = store.unbilled_transfers(db, *key, role=PROVIDER, before=end_text,
                                                 limit=statements.MAX_TRANSFERS) \
                if pricing.Basis.GIGABYTE in bases else {}
            return found, queries, transfers, store.disputed_from(db, *key, PROVIDER, start_text)

        found, queries, transfers, supersedes = await self.repo.snapshot(evidence)
        receipts = statements.ReceiptRange(first=found[0], last=found[1], head=found[2], uses=found[3]) \
            if found is not None else None
        statement_id = f"urn:uuid:{uuid.uuid4()}"
        try:
            document = statements.build(
                statement_id=statement_id, agreement=agreement.id, provider=agreement.provider_did,
                consumer=agreement.consumer_did, start=start, end=end, label=pricing.period_label(start, period),
                previous=last.id if last is not None else None, terms=terms,
                evidence=statements.Evidence(receipts=receipts, queries=tuple(queries), transfers=transfers),
                issued=now, share=self._platform_share(participant), supersedes=supersedes)
        except (statements.StatementError, pricing.PricingError) as exc:
            raise BadRequest(f"the statement cannot be made: {exc}") from exc
        signed = self._signed(participant, document, now)
        at = statements.time_text(now)
        row = StatementRow(
            participant_id=participant.id, id=statement_id, agreement_id=agreement.id, role=PROVIDER,
            state=StatementState.ISSUED.value, period_label=document["period"]["label"], period_start=start_text,
            period_end=end_text, receipts_last=receipts.last if receipts is not None else after,
            total=document["total"], currency=document["currency"], document=msgspec.json.encode(signed).decode(),
            previous_id=last.id if last is not None else None, supersedes=supersedes,
            next_attempt_at=now.timestamp(), created_at=at, updated_at=at)

        def save(db: Database) -> None:
            # The stretch may have been settled since it was read (another issue won the race): the unique index on
            # a stretch's start and the items' keys refuse a second statement, but the last one must be the same.
            current = store.last_settled(db, *key, PROVIDER)
            if (current.id if current is not None else None) != (last.id if last is not None else None):
                raise Conflict("another statement of this agreement was issued meanwhile")
            store.insert(db, row)
            store.add_items(db, *key, statement_id, QUERY, queries)
            store.add_items(db, *key, statement_id, TRANSFER, list(transfers))

        try:
            await self.repo.write(save, durable=True)
        except sqlite3.IntegrityError as exc:
            raise Conflict("this stretch of the agreement, or a query or transfer of it, was billed meanwhile by "
                           "another statement") from exc
        return row

    def _platform_share(self, participant: ParticipantRuntime) -> statements.Share | None:
        """The host's share of what *participant* earns, if its operator set one (the host itself pays none)."""
        text = participant.record.platform_share
        host = self.host()
        if not text or host is None or host.id == participant.id:
            return None
        try:
            percent = pricing.parse_decimal(text, "platform share")
        except pricing.PricingError:
            log.warning("platform share unreadable; statements issued without it", participant=participant.name)
            return None
        return statements.Share(platform=host.did, percent=percent) if 0 < percent <= 100 else None

    # -- the provider: answers -------------------------------------------------------------------------------

    async def answer(self, participant: ParticipantRuntime, caller: str, body: Any) -> dict[str, Any]:
        """The consumer's signed acceptance or dispute of a statement (``…/tds/statements/answers``):
        ``{"state"}``. 400 not an answer, 401 not the agreement's consumer or its signature fails, 404 no such
        statement issued by this participant, 409 the statement's state refuses it (or it answers another
        version of the statement)."""
        if not isinstance(body, dict) or body.get("@type") not in (statements.ACCEPTANCE_TYPE,
                                                                    statements.DISPUTE_TYPE):
            raise BadRequest("not an acceptance or dispute of a usage statement", path="@type")
        statement_id = body.get("statement")
        if not isinstance(statement_id, str) or not 0 < len(statement_id) <= MAX_ID:
            raise BadRequest("an answer names its statement (at most 200 characters)", path="statement")
        row = await self.repo.get(participant.id, statement_id)
        if row is None or row.role != PROVIDER:
            raise NotFound(f"no statement {statement_id!r} issued by this participant")
        agreement = await self.contracts.agreement(participant.id, row.agreement_id)
        if agreement is None or agreement.consumer_did != caller:
            raise Unauthorized("only the agreement's consumer answers its statements")
        state = await self._apply_answer(participant, row, agreement, body)
        return {"state": state.value}

    async def _apply_answer(self, participant: ParticipantRuntime, row: StatementRow, agreement: AgreementRecord,
                            document: Mapping[str, Any]) -> StatementState:
        if document.get("consumer") != agreement.consumer_did:
            raise Unauthorized("the answer is not by the agreement's consumer")
        await self._verify(document, agreement.consumer_did, "consumer")
        if document.get("agreement") != row.agreement_id:
            raise BadRequest("the answer names another agreement than its statement's", path="agreement")
        if document.get("statementDigest") != statements.digest(row.decoded()):
            raise Conflict(f"the answer is about another version of statement {row.id} (its digest differs)")
        event = StatementEvent.ACCEPTED if document.get("@type") == statements.ACCEPTANCE_TYPE \
            else StatementEvent.DISPUTED
        reason = _dispute_reasons(document)
        text = msgspec.json.encode(document).decode()
        at = statements.time_text(self.clock())

        def save(db: Database) -> tuple[StatementState, bool]:
            current = store.get(db, participant.id, row.id)
            assert current is not None  # statements are removed only with their participant
            try:
                new = statements.next_state(current.state, event)
            except statements.StatementStateError as exc:
                raise Conflict(f"statement {row.id} is {current.state}: {exc}") from exc
            if current.answer and new.value == current.state:
                return new, False  # the same answer again (a retried delivery)
            store.update(db, participant.id, row.id, state=new.value, answer=text, reason=reason,
                         next_attempt_at=None, updated_at=at)
            if new is StatementState.DISPUTED:
                store.release_items(db, participant.id, row.id)
            return new, True

        new, changed = await self.repo.write(save, durable=True)
        if changed:
            log.info("statement answered", participant=participant.name, agreement=row.agreement_id,
                     statement=row.id, state=new.value, reason=reason or None)
            self.wake()
        return new

    # -- the consumer: receiving -----------------------------------------------------------------------------

    async def receive(self, participant: ParticipantRuntime, caller: str, body: Any) -> dict[str, Any]:
        """A statement from the provider of one of this participant's agreements (``…/tds/statements``):
        ``{"state": "received"|"disputed", "problems", "answer"}``. 400 unreadable, 401 not from the
        agreement's provider (the request's signer or the statement's proof), 404 no such agreement, 409 a
        statement for a stretch already accepted (double settlement)."""
        document = self._statement_document(body)
        agreement_id = document["agreement"]
        agreement = await self.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != Role.CONSUMER:
            raise NotFound(f"no agreement {agreement_id[:MAX_ID]!r} where this participant is the consumer")
        if caller != agreement.provider_did:
            raise Unauthorized("only the agreement's provider sends its statements")
        await self._verify(document, agreement.provider_did, "provider")
        digest = statements.digest(document)
        async with self._lock(participant.id, agreement.id):
            return await self._receive(participant, agreement, document, digest)

    @staticmethod
    def _statement_document(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("@type") != statements.STATEMENT_TYPE:
            raise BadRequest("not a usage statement", path="@type")
        for name in ("id", "agreement"):
            value = body.get(name)
            if not isinstance(value, str) or not 0 < len(value) <= (MAX_ID if name == "id" else 512):
                raise BadRequest(f"a usage statement names its {name} (a string, at most "
                                 f"{MAX_ID if name == 'id' else 512} characters)", path=name)
        if not isinstance(body.get("proof"), dict):
            raise Unauthorized("the statement is not signed")
        return body

    async def _receive(self, participant: ParticipantRuntime, agreement: AgreementRecord, document: dict[str, Any],
                       digest: str) -> dict[str, Any]:
        statement_id = document["id"]
        key = (participant.id, agreement.id)
        given_period = document.get("period")
        period: dict[str, Any] = given_period if isinstance(given_period, dict) else {}
        start, end = _instant(period.get("start")), _instant(period.get("end"))
        start_text = statements.time_text(start) if start else _printable(period.get("start", ""), MAX_FIELD)
        end_text = statements.time_text(end) if end else _printable(period.get("end", ""), MAX_FIELD)
        replay_id = f"{statement_id}#{digest.removeprefix('sha-256:')[:16]}"

        def held(db: Database) -> tuple[StatementRow | None, StatementRow | None, StatementRow | None, int]:
            return (store.get(db, participant.id, statement_id), store.get(db, participant.id, replay_id),
                    store.accepted_overlap(db, *key, CONSUMER, start_text, end_text) if start and end else None,
                    store.count_for(db, *key))

        same, replayed, accepted, kept = await self.repo.read(held)
        for earlier in (same, replayed):
            if earlier is not None and earlier.agreement_id == agreement.id and \
                    statements.digest(earlier.decoded()) == digest:
                # This very statement again (a retried delivery): the same answer.
                given = earlier.decoded_answer()
                found = given.get("problems", []) if given and earlier.state == "disputed" else []
                return {"state": earlier.state, "problems": found, "answer": given}
        if accepted is not None:
            log.warning("statement refused: its stretch is settled already", participant=participant.name,
                        agreement=agreement.id, statement=statement_id, accepted=accepted.id)
            raise Conflict(f"double settlement: statement {accepted.id}, accepted, settles {accepted.period_start} "
                           f"to {accepted.period_end} of this agreement already")
        if kept >= MAX_KEPT:
            raise Conflict(f"this participant keeps {MAX_KEPT} statements of agreement {agreement.id} already")
        now = self.clock()
        try:
            terms = self._terms(agreement)
        except BadRequest:
            terms = ()  # the check names every price quoted as one the agreement does not have
        seen = same is not None
        own = await self.repo.snapshot(lambda db: self._own(db, participant, agreement, document, terms, now,
                                                            seen=seen))
        problems = self._problems(document, own)
        state = StatementState.DISPUTED if problems else StatementState.RECEIVED
        answer: dict[str, Any] | None = None
        if problems:
            answer = self._signed(participant, statements.dispute(
                document, problems, disputed=now, own_total=self._own_total(own)), now)
        at = statements.time_text(now)
        receipts = document.get("receipts")
        last = receipts.get("last") if isinstance(receipts, dict) else None
        row = StatementRow(
            participant_id=participant.id, id=replay_id if seen else statement_id, agreement_id=agreement.id,
            role=CONSUMER, state=state.value, period_label=_printable(period.get("label", ""), MAX_FIELD),
            period_start=start_text, period_end=end_text,
            receipts_last=last if not problems and isinstance(last, int) else own.previous_last,
            total=_printable(document.get("total", ""), MAX_FIELD),
            currency=_printable(document.get("currency", ""), MAX_FIELD),
            document=msgspec.json.encode(document).decode(),
            answer=msgspec.json.encode(answer).decode() if answer is not None else None, reason=_reasons(problems),
            previous_id=_printable(document["previous"], MAX_ID) if isinstance(document.get("previous"), str)
            else None,
            supersedes=_printable(document["supersedes"], MAX_ID) if isinstance(document.get("supersedes"), str)
            else None,
            # A dispute goes to the provider (retried); not one of a statement whose id it holds already (a replay):
            # the provider holds another statement under that id, and the dispute could not be applied.
            next_attempt_at=now.timestamp() if problems and not seen else None, created_at=at, updated_at=at)
        queries = list(dict.fromkeys(q for q in document.get("queries") or [] if isinstance(q, str)))
        transfers = [t["providerPid"] for t in document.get("transfers") or []
                     if isinstance(t, dict) and isinstance(t.get("providerPid"), str)]

        def save(db: Database) -> None:
            store.insert(db, row)
            if not problems:
                store.add_items(db, *key, statement_id, QUERY, queries)
                store.add_items(db, *key, statement_id, TRANSFER, transfers)

        try:
            await self.repo.write(save, durable=True)
        except sqlite3.IntegrityError as exc:
            raise Conflict("a statement for this stretch, or billing one of its queries or transfers, was received "
                           "meanwhile") from exc
        log.info("statement received", participant=participant.name, agreement=agreement.id, statement=statement_id,
                 state=state.value, reason=row.reason or None, replay=seen or None)
        if row.next_attempt_at is not None:
            self._deliver_later(participant.id, row.id)
        return {"state": state.value, "problems": [_problem_json(p) for p in problems], "answer": answer}

    @staticmethod
    def _problems(document: Mapping[str, Any], own: statements.Own) -> list[statements.Problem]:
        try:
            return statements.check(document, own)
        except (statements.StatementError, pricing.PricingError, ArithmeticError, ValueError, TypeError) as exc:
            # Numbers out of every bound (a quantity of 10^20 uses, a negative size): the statement is wrong.
            return [statements.Problem(rule="document", detail=f"the statement cannot be checked: {exc}"[:500])]

    @staticmethod
    def _own_total(own: statements.Own) -> str | None:
        try:
            return statements.own_total(own)
        except (pricing.PricingError, ArithmeticError, ValueError):
            return None

    def _own(self, db: Database, participant: ParticipantRuntime, agreement: AgreementRecord,
             document: Mapping[str, Any], terms: tuple[pricing.PriceTerm, ...], now: datetime, *, seen: bool
            ) -> statements.Own:
        """What this participant's records say of the stretch *document* bills (one snapshot)."""
        key = (participant.id, agreement.id)
        previous = store.last_settled(db, *key, CONSUMER)
        previous_last = previous.receipts_last if previous is not None else 0
        receipts = document.get("receipts")
        own_range = None
        if isinstance(receipts, dict):
            first, last = receipts.get("first"), receipts.get("last")
            if isinstance(first, int) and isinstance(last, int) and 0 < first <= last < 2**62:
                found = store.own_range(db, *key, first, last)
                if found is not None:
                    own_range = statements.ReceiptRange(first=first, last=last, head=found[0], uses=found[1])
        period = document.get("period")
        end = (_instant(period.get("end")) if isinstance(period, dict) else None) or now
        listed = document.get("queries")
        queries = [q for q in listed if isinstance(q, str) and len(q) <= MAX_ID] \
            if isinstance(listed, list) and len(listed) <= statements.MAX_QUERIES else []
        billed = document.get("transfers")
        pids = [t["providerPid"] for t in billed if isinstance(t, dict) and isinstance(t.get("providerPid"), str)
                and len(t["providerPid"]) <= 512] \
            if isinstance(billed, list) and len(billed) <= statements.MAX_TRANSFERS else []
        agreed = self._agreed(agreement.agreement) or _instant(agreement.created_at) or datetime.min.replace(tzinfo=UTC)
        return statements.Own(
            agreement=agreement.id, provider=agreement.provider_did, consumer=agreement.consumer_did, terms=terms,
            agreed=agreed, previous_id=previous.id if previous is not None else None,
            previous_end=_instant(previous.period_end) if previous is not None else None,
            previous_last=previous_last, receipts=own_range,
            own_uses=store.own_uses(db, *key, after=previous_last, before=statements.time_text(end)),
            queries=store.own_queries(db, *key, queries),
            transfers=store.unbilled_transfers(db, *key, role=CONSUMER, before=None, only=pids,
                                               limit=statements.MAX_TRANSFERS),
            seen_ids=frozenset({str(document.get("id"))}) if seen else frozenset(), now=now + CLOCK_SKEW)

    # -- the consumer: the operator's answer -----------------------------------------------------------------

    async def accept(self, participant: ParticipantRuntime, statement_id: str) -> StatementSummary:
        """Countersign a RECEIVED statement and deliver the acceptance to the provider (409 in any other state)."""
        return await self._answer_as_consumer(participant, statement_id, StatementEvent.ACCEPTED, "")

    async def dispute(self, participant: ParticipantRuntime, statement_id: str, reason: str) -> StatementSummary:
        """Dispute a RECEIVED statement, with the operator's *reason* (rule ``operator``), and deliver the dispute."""
        reason = _printable(reason, 1000).strip()
        if not reason:
            raise BadRequest("a dispute says why", path="$.reason")
        return await self._answer_as_consumer(participant, statement_id, StatementEvent.DISPUTED, reason)

    async def _answer_as_consumer(self, participant: ParticipantRuntime, statement_id: str, event: StatementEvent,
                                  reason: str) -> StatementSummary:
        row = await self._row(participant, statement_id)
        verb = "accepted" if event is StatementEvent.ACCEPTED else "disputed"
        if row.role != CONSUMER:
            raise Conflict(f"statement {row.id} was issued by this participant: only its consumer can answer it")
        if row.state != StatementState.RECEIVED:
            raise Conflict(f"statement {row.id} is {row.state}: only a received statement can be {verb}")
        agreement = await self.contracts.agreement(participant.id, row.agreement_id)
        if agreement is None:
            raise NotFound(f"no statement {statement_id[:MAX_ID]!r} received by this participant")
        document = row.decoded()
        now = self.clock()
        terms: tuple[pricing.PriceTerm, ...] = ()
        if event is StatementEvent.DISPUTED:
            try:
                terms = self._terms(agreement)
            except BadRequest:
                terms = ()
        at = statements.time_text(now)
        new = statements.next_state(row.state, event)
        shown_reason = f"operator: {reason}" if reason else ""

        def save(db: Database) -> StatementRow:
            current = store.get(db, participant.id, row.id)
            if current is None or current.state != StatementState.RECEIVED:
                raise Conflict(f"statement {row.id} is {current.state if current else 'gone'}: only a received "
                               f"statement can be {verb}")
            if event is StatementEvent.ACCEPTED:
                unsigned = statements.acceptance(document, accepted=now)
                store.update(db, participant.id, row.id, state=new.value, updated_at=at)
            else:
                # The consumer's own figure leaves this statement out: it no longer settles its stretch, nor bills
                # its queries and transfers, so the figure is what the consumer's records say of the stretch.
                store.update(db, participant.id, row.id, state=new.value, updated_at=at)
                store.release_items(db, participant.id, row.id)
                own = self._own(db, participant, agreement, document, terms, now, seen=False)
                problem = statements.Problem(rule="operator", detail=reason)
                unsigned = statements.dispute(document, [problem], disputed=now, own_total=self._own_total(own))
            text = msgspec.json.encode(self._signed(participant, unsigned, now)).decode()
            store.update(db, participant.id, row.id, answer=text, reason=shown_reason,
                         next_attempt_at=now.timestamp(), attempts=0)
            updated = store.get(db, participant.id, row.id)
            assert updated is not None
            return updated

        updated = await self.repo.write(save, durable=True)
        log.info("statement answered by the operator", participant=participant.name, agreement=row.agreement_id,
                 statement=row.id, state=new.value, reason=reason or None)
        self._deliver_later(participant.id, row.id)
        return summary_of(updated, document)

    # -- delivery (both roles) -------------------------------------------------------------------------------

    def _deliver_later(self, participant_id: str, statement_id: str) -> None:
        key = (participant_id, statement_id)
        running = self._deliveries.get(key)
        if running is not None and not running.done():
            return
        task = self._spawn(self._deliver(participant_id, statement_id))
        self._deliveries[key] = task
        task.add_done_callback(lambda done: self._deliveries.pop(key, None) if self._deliveries.get(key) is done
                               else None)

    async def _deliver(self, participant_id: str, statement_id: str) -> None:
        """Deliver the statement (provider) or its answer (consumer) until the peer's node answered."""
        while True:
            row = await self.repo.get(participant_id, statement_id)
            if row is None or row.next_attempt_at is None:
                return
            wait = row.next_attempt_at - self.clock().timestamp()
            if wait > 0:
                await asyncio.sleep(wait)  # ok-sleep: the retry's backoff (persisted: a restart resumes it)
                continue  # read again: an answer may have overtaken the delivery
            participant = self.participant_by_id(participant_id)
            if participant is None:
                return  # suspended or gone: resumed with the participant
            address = await self._address(participant_id, row.agreement_id)
            if address is None:
                await self.repo.write(lambda db: store.attempted(db, participant_id, statement_id, None,
                                                                 "the peer's address is not known"))
                return
            if row.role == PROVIDER:
                done = await self._send_statement(participant, row, address)
            else:
                done = await self._send_answer(participant, row, address)
            if done:
                return

    async def _failed(self, row: StatementRow, error: str, *, again: bool) -> None:
        attempt = row.attempts + 1
        next_at = self.clock().timestamp() + _backoff(attempt) if again else None
        base = _dispute_reasons(row.decoded_answer())
        reason = _printable((f"{base}; " if base else "") + ("not delivered yet: " if again else "refused: ")
                            + error, MAX_REASON)
        await self.repo.write(lambda db: store.attempted(db, row.participant_id, row.id, next_at, reason))
        (log.info if again else log.warning)(
            "statement not delivered" if row.role == PROVIDER else "statement answer not delivered",
            participant=row.participant_id, agreement=row.agreement_id, statement=row.id, state=row.state,
            reason=error, attempt=attempt, retrying=again)

    async def _post(self, participant: ParticipantRuntime, url: str, body: Any) -> tuple[int, dict[str, Any], str]:
        try:
            response = await self.client.request("POST", url, json_body=body, signer=participant.signer)
        except PeerError as exc:
            return 0, {}, exc.message
        try:
            data = response.json() if response.body[:1] == b"{" else {}
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        message = _printable(data.get("message") or data.get("reason") or "", 500)
        return response.status, data, f"{url} answered {response.status}" + (f": {message}" if message else "")

    async def _send_statement(self, participant: ParticipantRuntime, row: StatementRow, address: str) -> bool:
        status, data, error = await self._post(participant, address + STATEMENTS_PATH, row.decoded())
        if status != 200:
            await self._failed(row, error, again=status not in (400, 404, 409))
            return status in (400, 404, 409)
        answer = data.get("answer")
        agreement = await self.contracts.agreement(participant.id, row.agreement_id)
        if isinstance(answer, dict) and agreement is not None:
            # The consumer's node answered at once (a problem it found, or an answer given before): applied as if
            # it came on its own, signature and all.
            try:
                await self._apply_answer(participant, row, agreement, answer)
                return True
            except TdsError as exc:
                log.warning("the consumer's answer with its acknowledgement does not apply",
                            participant=participant.name, agreement=row.agreement_id, statement=row.id,
                            reason=exc.message)
        at = statements.time_text(self.clock())
        problems = data.get("problems")
        reason = _reasons(problems) if isinstance(problems, list) else ""

        def delivered(db: Database) -> str | None:
            current = store.get(db, row.participant_id, row.id)
            if current is None:
                return None
            if current.state == StatementState.ISSUED:
                store.update(db, row.participant_id, row.id, state=StatementState.DELIVERED.value,
                             next_attempt_at=None, reason=reason, updated_at=at)
                return StatementState.DELIVERED.value
            store.update(db, row.participant_id, row.id, next_attempt_at=None)
            return current.state

        state = await self.repo.write(delivered, durable=True)
        log.info("statement delivered", participant=participant.name, agreement=row.agreement_id, statement=row.id,
                 state=state, reason=reason or None)
        return True

    async def _send_answer(self, participant: ParticipantRuntime, row: StatementRow, address: str) -> bool:
        answer = row.decoded_answer()
        if answer is None:
            await self.repo.write(lambda db: store.update(db, row.participant_id, row.id, next_attempt_at=None))
            return True
        status, _data, error = await self._post(participant, address + ANSWERS_PATH, answer)
        if status != 200:
            await self._failed(row, error, again=status not in (400, 404, 409))
            return status in (400, 404, 409)
        reason = _dispute_reasons(answer)
        await self.repo.write(lambda db: store.update(db, row.participant_id, row.id, next_attempt_at=None,
                                                      reason=reason))
        log.info("statement answer delivered", participant=participant.name, agreement=row.agreement_id,
                 statement=row.id, state=row.state)
        return True

    # -- issuing at each period's end ------------------------------------------------------------------------

    async def _run_auto(self) -> None:
        while True:
            self._wake.clear()
            try:
                due = await self._issue_due()
            except Exception:
                log.exception("automatic statements failed; trying again later")
                due = None
            wait = AUTO_MAX_SLEEP_S if due is None else min(AUTO_MAX_SLEEP_S, max(0.0, due - self.clock().timestamp()))
            # asyncio.timeout, not wait_for (see UsageService._run_scheduler).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _cached_terms(self, participant_id: str, agreement_id: str, text: str
                      ) -> tuple[tuple[pricing.PriceTerm, ...], datetime | None]:
        key = (participant_id, agreement_id)
        found = self._terms_cache.get(key)
        if found is None:
            agreement = msgspec.json.decode(text)
            agreed = self._agreed(agreement) if isinstance(agreement, dict) else None
            try:
                found = pricing.postpaid_terms(parse_policy(agreement)), agreed
            except PolicyError:
                found = (), agreed
            self._terms_cache[key] = found
        return found

    async def _issue_due(self) -> float | None:
        """Issue every statement due now; the time (epoch seconds) the next one falls due, if any."""
        rows = await self.repo.read(lambda db: store.provider_agreements(db, AgreementState.FINALIZED.value))
        now = self.clock()
        grace = timedelta(seconds=self.settings.grace_s)
        following: float | None = None
        for participant_id, agreement_id, text, last_end, last_state in rows:
            participant = self.participant_by_id(participant_id)
            # Awaiting the consumer's answer, or disputed (the operator issues the stretch again): not now.
            if participant is None or last_state in ("issued", "delivered", "disputed"):
                continue
            terms, agreed = self._cached_terms(participant_id, agreement_id, text)
            start = _instant(last_end) if last_end else agreed
            if not terms or start is None:
                continue
            due = pricing.period_end(start, terms[0].period) + grace
            if due > now:
                following = min(following or due.timestamp(), due.timestamp())
                continue
            try:
                await self.issue(participant, agreement_id, None)
            except TdsError as exc:
                log.warning("automatic statement not issued", participant=participant.name, agreement=agreement_id,
                            reason=exc.message)
        return following

    # -- reading -----------------------------------------------------------------------------------------------

    async def find(self, participant: ParticipantRuntime, *, agreement_id: str | None = None,
                   period: str | None = None, role: str | None = None, limit: int = 100) -> StatementList:
        """The participant's statements, newest first (of one agreement, starting in one period, in one role)."""
        bounds = _period_bounds(period) if period else None
        if role is not None and role not in (PROVIDER, CONSUMER):
            raise BadRequest("role is provider or consumer", path="role")
        rows = await self.repo.read(lambda db: store.listed(db, participant.id, agreement_id=agreement_id,
                                                            period=bounds, role=role, limit=limit))
        return StatementList(statements=[_listed_summary(r) for r in rows])

    async def _row(self, participant: ParticipantRuntime, statement_id: str) -> StatementRow:
        row = await self.repo.get(participant.id, statement_id)
        if row is None:
            raise NotFound(f"no statement {statement_id[:MAX_ID]!r} of this participant's")
        return row

    async def show(self, participant: ParticipantRuntime, statement_id: str) -> StatementDetail:
        row = await self._row(participant, statement_id)
        document = row.decoded()
        shown = summary_of(row, document)
        return StatementDetail(**msgspec.structs.asdict(shown), document=document, answer=row.decoded_answer())

    async def export(self, participant: ParticipantRuntime, statement_id: str, fmt: str) -> tuple[str, str]:
        """The statement as a bundle to check offline (``json``: the signed statement and answer with both
        parties' DID documents) or as CSV lines for accounting (``csv``): (text, media type)."""
        row = await self._row(participant, statement_id)
        if fmt == "csv":
            return csv_text(row), "text/csv"
        if fmt != "json":
            raise BadRequest("format is json or csv", path="format")
        document, answer = row.decoded(), row.decoded_answer()
        own = participant.did
        counterparty = document.get("consumer") if row.role == PROVIDER else document.get("provider")
        documents: dict[str, Any] = {own: participant.did_document()}
        if isinstance(counterparty, str) and counterparty != own:
            signed = answer if row.role == PROVIDER else document
            documents[counterparty] = await self._did_document(participant, row.agreement_id, counterparty,
                                                               proof_key_id(signed) if signed else None)
        bundle = statements.bundle(document, answer, {k: v for k, v in documents.items() if v is not None})
        return msgspec.json.encode(bundle).decode(), "application/json"

    async def _did_document(self, participant: ParticipantRuntime, agreement_id: str, did: str, key_id: str | None
                            ) -> dict[str, Any] | None:
        """The counterparty's DID document now (listing the key it signed with), else as kept with the agreement."""
        try:
            return await self.resolver.resolve(did, key_id=key_id)
        except (dids.DidError, TdsError):
            agreement = await self.contracts.agreement(participant.id, agreement_id)
            kept = agreement.did_documents.get(did) if agreement is not None else None
            return kept if isinstance(kept, dict) else None

    async def report(self, period: str | None) -> SettlementReport:
        """The host's report: per hosted participant, what its accepted statements (starting in *period*, if
        given) come to as provider (net of the platform's share) and as consumer, and the platform's share."""
        bounds = _period_bounds(period) if period else None
        hosted = self.hosted()

        def total(db: Database) -> tuple[dict[str, dict[str, dict[str, Decimal]]], dict[str, int]]:
            sums: dict[str, dict[str, dict[str, Decimal]]] = {}
            counts: dict[str, int] = {}
            for participant_id, role, currency, amount, platform in store.accepted_amounts(db, bounds):
                try:
                    whole = Decimal(amount)
                    cut = Decimal(platform) if platform is not None and role == PROVIDER else Decimal(0)
                except InvalidOperation:
                    continue
                if not (whole.is_finite() and cut.is_finite()):
                    continue
                mine = sums.setdefault(participant_id, {"earned": {}, "platformShare": {}, "owes": {}})
                if role == PROVIDER:
                    mine["earned"][currency] = mine["earned"].get(currency, Decimal(0)) + whole - cut
                    mine["platformShare"][currency] = mine["platformShare"].get(currency, Decimal(0)) + cut
                else:
                    mine["owes"][currency] = mine["owes"].get(currency, Decimal(0)) + whole
                counts[participant_id] = counts.get(participant_id, 0) + 1
            return sums, counts

        sums, counts = await self.repo.read(total)
        platform: dict[str, Decimal] = {}
        accounts = []
        for p in hosted:
            mine = sums.get(p.id, {"earned": {}, "platformShare": {}, "owes": {}})
            for currency, cut in mine["platformShare"].items():
                platform[currency] = platform.get(currency, Decimal(0)) + cut
            accounts.append(ParticipantAccount(
                name=p.name, did=p.did, earned=_texts(mine["earned"]), platform_share=_texts(mine["platformShare"]),
                owes=_texts(mine["owes"]), statements=counts.get(p.id, 0)))
        return SettlementReport(participants=accounts, platform=_texts(platform))


def _texts(amounts: Mapping[str, Decimal]) -> dict[str, str]:
    return {currency: pricing.amount_text(amount) for currency, amount in sorted(amounts.items())}


def _period_bounds(label: str) -> tuple[str, str]:
    """A period label (``2026-11``, ``2026-W48``, ``2026-11-30``) as [start, end) in stored form."""
    try:
        start, kind = pricing.parse_period_label(label[:MAX_FIELD])
    except pricing.PricingError as exc:
        raise BadRequest(str(exc), path="period") from exc
    return statements.time_text(start), statements.time_text(pricing.period_end(start, kind))
