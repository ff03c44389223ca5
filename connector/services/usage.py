"""Usage enforcement on the consumer's node: every use of received data is decided, counted and logged.

A use (``POST /api/management/v1/usage``) names the agreement, the action, the purpose and a use id the
application makes up; the application itself is the management token's. Uses are logged in commit groups
(group commit): the uses that arrive while a group commits form the next, and one transaction, committed
with an fsync, appends the whole group's entries (permit and deny alike) and signs each chain head it
touched once. Every caller is answered only after the commit that holds its entry returned, and before
any byte of data is released.

Where the decision is made:

- in the event loop, without a thread hop, for a chain the loop knows: its agreement (in force, held as
  consumer), its policy, and its last entry once every use queued before is appended. The policy engine
  decides with the counts that entry carries (``usage_policies.plan_use``, deciding first: the outcome,
  reasons and duties without the compliance report, which nothing here reads) and the entry is chained and
  hashed there. The group's transaction then reads, in one query per chain, whether the store is still
  as the loop saw it — the agreement in force, the chain's last entry the one the first of these uses
  follows and covered by the head signed here, no more acknowledged by the provider, none of their use
  ids logged already — and only then appends them;
- in the group's transaction (as one job of the store's writer, each use in a savepoint) for anything
  else: the first uses of a chain after the node starts, a use id used before (a retry), and every use
  of a chain whose check found it changed (a revocation, a duty logged, a use id logged before, the log
  edited behind the node's back) — decided again on what the store holds, which is then what the loop
  knows of the chain. So the loop's view is a prediction the store confirms, never a second truth.

So:

- counts are exact under any concurrency (one event loop decides a chain's uses in order, each on the
  last; the transaction decides the others in order after them);
- counts are not kept beside the log but in it: each entry carries the permitted uses so far, and the
  head they are read from must match its signed head and the provider's signed acknowledgement, so a
  count cannot be reset, nor the log cut short, without the decision refusing (409) and ``tds log verify``
  naming it;
- a use id names one use by one application for one action and purpose. A retry with the same id and
  the same parameters by the same application is decided again against the policy *now* and may deliver
  the data again at most ``usage.redeliveries`` times within ``usage.redelivery_window_s`` of the use; it
  is not counted again, but each re-delivery is a log entry of its own (kind ``redelivery``) and so a
  receipt. Anything else under a used id is a 409 naming the conflict;
- a crash before the commit leaves no trace of the group, after it every use of the group counted and
  logged, its chain head signed; a commit that fails answers each use of the group with the error and
  the loop forgets what it knew of its chains (the uses queued since are decided in their transaction);
- a dry run (``"dryRun": true``, :meth:`UsageService.check`) is the same checks and the same decision with
  the same counts, but on a reader's snapshot (query-only): it counts, logs, schedules and sends nothing, and
  takes no use id. ``"deliver": false`` is not a dry run: a use counted and logged without the data;
- each chain head touched by a commit group is signed once, inside that group's transaction
  (``Store.batch_hooks``; duties logged by other jobs of the same commit are signed there too).

A policy that names what credentials verify (``tds:verifiedRegion``, ``tds:memberOf``, ``tds:legalEntityId``,
``tds:certificationLevel``, ``tds:exportDestination``) is evaluated on each use against the participant's own
credentials that count under its own trust list (*own_claims*, ``connector.identity.trust.held_claims``):
the region in its configuration and self-description is self-asserted and never counts for them. Other
policies are decided without reading any credential.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from connector.errors import Conflict, NotFound, StorageError
from connector.faults import crash_point
from connector.identity import proof
from connector.logging import get_logger
from connector.protocol.agreement_lifecycle import IN_FORCE, AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.policy import PeerFacts
from connector.store import usage as store
from connector.store.db import Database
from usage_policies import PolicyError, Request, UsageState, ledger, parse_policy, plan_use
from usage_policies.enforce import AppendLog, DeleteAt, InformProvider, Meter
from usage_policies.evaluate import CompiledPolicy, compile_policy
from usage_policies.model import left_operands
from usage_policies.operands import EXPORT_DESTINATION, VERIFIED_OPERANDS
from usage_policies.values import parse_duration

if TYPE_CHECKING:
    from connector.config import UsageSection
    from connector.identity.status_list import Status
    from connector.identity.trust import PeerClaims, TrustList
    from connector.identity.vc import VerifiedCredential
    from connector.participant import ParticipantRuntime
    from connector.services.vault import Deletion
    from connector.store.credentials import HeldCredential
    from connector.store.records import AgreementRecord
    from connector.store.usage import UsageRepository

log = get_logger(component="usage")
HEAD_PROOF = "proof"


class UseOutcome(msgspec.Struct, frozen=True):
    decision: str
    reasons: list[str]
    entry: ledger.Entry
    #: A retry of a use id already decided (a re-delivery, or the same deny again).
    repeated: bool = False
    effects: list[str] = msgspec.field(default_factory=list)
    #: Whether this call appended a log entry (a repeated deny does not).
    appended: bool = True

    @property
    def permitted(self) -> bool:
        return self.decision == "permit"


Key = tuple[str, str]  # (participant id, agreement id): one chain

#: Use ids remembered as logged lately (see UsageService._recent).
RECENT_USE_IDS = 65536
#: A scheduled duty that failed (the vault or the store could not do it) is tried again this much later.
DUTY_RETRY_S = 30.0

_IN_FORCE = frozenset(str(state) for state in IN_FORCE)


class _Use(msgspec.Struct, eq=False):
    """A use waiting for the commit group that logs it."""

    participant: ParticipantRuntime
    agreement_id: str
    application: str
    action: str
    purpose: str
    use_id: str
    now: datetime
    claims: PeerClaims | None
    future: asyncio.Future[UseOutcome]
    #: Decided in its group's transaction (counted in UsageService._in_transaction), not in the event loop.
    in_transaction: bool = False
    #: Decided in the event loop: the entry to append, its text, and the text of the entry it follows (None: the
    #: first of its chain); what a permit carries out, and the deletion deadline it sets.
    entry: ledger.Entry | None = None
    text: str = ""
    after: str | None = None
    effects: list[str] = msgspec.field(default_factory=list)
    delete_at: float | None = None
    #: Set by the group's job: what the use is answered with.
    outcome: UseOutcome | None = None
    error: Exception | None = None


class _Chain(msgspec.Struct, eq=False):
    """A chain as the event loop knows it: its agreement (in force, held as consumer) and policy, and its last
    entry once every use queued so far is appended (each commit group checks this against the store)."""

    agreement: AgreementRecord
    policy: CompiledPolicy
    head: ledger.Entry | None
    text: str | None
    #: Use ids of the uses decided here and not yet committed.
    queued: set[str] = msgspec.field(default_factory=set)


class _ChainEnd(msgspec.Struct, frozen=True):
    """A chain as a commit group's transaction leaves it: its last entry and that entry's text, and its
    agreement where the event loop may decide the next uses (None: in the transaction)."""

    agreement: AgreementRecord | None
    head: ledger.Entry | None
    text: str | None


class CheckOutcome(msgspec.Struct, frozen=True):
    """What a use would be decided now (a dry run): nothing counted, logged or scheduled."""

    decision: str
    reasons: list[str]
    #: What a permitted use would carry out (count, log, delete at …).
    effects: list[str]
    #: Permitted uses so far.
    uses: int
    #: What is left of the count and time limits now, before the use (:func:`allowance`).
    allowance: dict[str, Any]

    @property
    def permitted(self) -> bool:
        return self.decision == "permit"


def revoked_text(revocation: dict[str, Any] | None) -> str:
    """Why a revoked agreement's data may not be used, with the provider's reason and when (as recorded)."""
    if revocation is None:
        return "the provider revoked this agreement: its data may no longer be used"
    reason = revocation.get("reason") or "none given"
    return (f"the provider revoked this agreement at {revocation.get('revokedAt')} (reason: {reason}): its data "
            "may no longer be used")


def now_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _effect_text(effect: Any) -> str:
    if isinstance(effect, InformProvider):
        return f"inform {effect.party or 'the provider'}"
    if isinstance(effect, DeleteAt):
        return f"delete at {now_text(effect.time)}"
    if isinstance(effect, Meter):
        return f"meter {effect.amount} {effect.unit or ''}".strip()
    if isinstance(effect, AppendLog):
        return "log"
    return "count"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _nothing_to_send(participant_id: str, agreement_id: str) -> None:
    """No receipts are sent (a usage service on its own)."""


#: The participant's own claims that count (``connector.identity.trust.held_claims``); None: none.
OwnClaims = Callable[["ParticipantRuntime"], Awaitable["PeerClaims | None"]]

#: The left operands whose value is what credentials verify of the participant (see the module docstring).
CLAIM_OPERANDS = VERIFIED_OPERANDS | {EXPORT_DESTINATION}


async def no_own_claims(participant: ParticipantRuntime) -> PeerClaims | None:
    """No credentials: a policy's verified operands find no value, and their constraints do not hold."""
    return None


#: Each held credential's status now, given the credentials and the trust list (``CredentialService.statuses``).
Statuses = Callable[[list["VerifiedCredential"], "TrustList"], Awaitable[Callable[["VerifiedCredential"], "Status"]]]


def held_claims_of(held: Callable[[ParticipantRuntime], Awaitable[list[HeldCredential]]],
                   trust_of: Callable[[str], Awaitable[TrustList]],
                   clock: Callable[[], datetime] = _utc_now, *, statuses: Statuses | None = None) -> OwnClaims:
    """*own_claims* from the credentials a participant holds (*held*), its trust list (*trust_of*) and, with
    *statuses*, each credential's status now on its issuer's list (one revoked since it came in counts no more;
    without, valid until it runs out). The credential machinery is loaded when a policy first asks for them."""

    def parsed(participant: ParticipantRuntime, row: HeldCredential) -> VerifiedCredential | None:
        from connector.identity.claims import KIND_NAMES, ClaimError, from_subject
        from connector.identity.vc import CredentialError, VerifiedCredential, status_entries

        subject, kind = row.document.get("credentialSubject"), KIND_NAMES.get(row.kind)
        if not isinstance(subject, dict) or kind is None:
            return None
        try:
            claims = from_subject(kind, subject)
            until = datetime.fromisoformat(row.valid_until.replace("Z", "+00:00"))
            since = row.document.get("validFrom")
            start = datetime.fromisoformat(since.replace("Z", "+00:00")) if isinstance(since, str) else datetime.min
            status = status_entries(row.document.get("credentialStatus"))
        except (ClaimError, CredentialError, ValueError):
            return None
        return VerifiedCredential(row.id, kind, row.issuer, participant.did, claims,
                                  start if start.tzinfo else start.replace(tzinfo=UTC), until, status)

    async def own_claims(participant: ParticipantRuntime) -> PeerClaims:
        from connector.identity import trust

        found = [c for c in (parsed(participant, row) for row in await held(participant)) if c is not None]
        trusted = await trust_of(participant.id)
        status_of = await statuses(found, trusted) if statuses is not None and found else None
        return trust.held_claims(participant.did, found, trusted, clock(), status_of)

    return own_claims


class UsageService:
    """Uses decided, counted and logged; duties carried out on schedule.

    *repo* holds the log; *config* is ``[usage]`` (re-deliveries); *participant_by_id* finds a hosted
    participant (its keys sign the chain heads); *destroy_data* deletes an agreement's data in the vault
    (a deletion duty); *logged* is told of new log entries of an agreement (the receipts to send); *clock*
    is the time of a use and of a signed head; *own_claims* the participant's own verified claims, read for
    a policy that names them; *decided* is told the outcome of every use answered (``permit``, ``deny``)."""

    def __init__(
        self, repo: UsageRepository, config: UsageSection, *,
        participant_by_id: Callable[[str], ParticipantRuntime | None],
        destroy_data: Callable[[ParticipantRuntime, str], Awaitable[Deletion]],
        logged: Callable[[str, str], None] = _nothing_to_send, clock: Callable[[], datetime] = _utc_now,
        own_claims: OwnClaims = no_own_claims, decided: Callable[[str], None] = lambda _decision: None,
    ) -> None:
        self.repo = repo
        self.decided = decided
        self.own_claims = own_claims
        #: Whether an agreement's policy names a verified operand, per (participant, agreement).
        self._asks_claims: dict[tuple[str, str], bool] = {}
        self.config = config
        self.participant_by_id = participant_by_id
        self.destroy_data = destroy_data
        self.logged = logged
        self.clock = clock
        self._compiled: dict[tuple[str, str], CompiledPolicy] = {}
        #: chains touched by the current commit group, with the last entry appended to each (writer thread only)
        self._touched: dict[tuple[str, str], tuple[int, str]] = {}
        repo.before_commit(self._sign_heads)
        self._deadlines_changed = False
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        #: The text of the last signed head known to be good, per chain (signed here, or verified): the hot
        #: path compares text instead of verifying a signature (writer thread only).
        self._good_heads: dict[tuple[str, str], str] = {}
        #: The highest entry this process saw committed, per chain: a last entry below it while the node
        #: runs means entries were removed, even before the provider acknowledged them. Raised only after
        #: a commit returned, so a rolled-back group never makes it run ahead of the log.
        self._committed: dict[tuple[str, str], int] = {}
        #: The chains whose next uses the event loop decides itself (see _decide_now).
        self._chains: dict[Key, _Chain] = {}
        #: Per chain, how many uses queued or committing are decided in their group's transaction: while any
        #: is, the chain's head is not known before that transaction, and so neither are the next uses decided
        #: in the event loop.
        self._in_transaction: dict[Key, int] = {}
        #: (participant id, agreement id, use id) logged lately, oldest first (bounded): a use under one of them
        #: is most likely a retry, decided in the transaction straight away. (Any other use id logged before is
        #: found by the group's check, which has the chain's uses decided again.)
        self._recent: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        #: The uses waiting for the next commit group, per chain in order; the group committing now.
        self._open: dict[Key, list[_Use]] = {}
        self._flight: asyncio.Future[dict[Key, _ChainEnd]] | None = None
        self._flush_soon = False

    # -- the decision: in the event loop where it can be, logged by a commit group ------------------------

    async def use(
        self, participant: ParticipantRuntime, *, application: str, agreement_id: str, action: str, purpose: str,
        use_id: str, now: datetime | None = None,
    ) -> UseOutcome:
        key = (participant.id, agreement_id)
        # The agreement's policy never changes, so whether it names verified claims is read once, before.
        asks = self._asks_claims.get(key)
        if asks is None:
            asks = await self._asks_for_claims(participant, agreement_id)
        claims = await self.own_claims(participant) if asks else None
        loop = asyncio.get_running_loop()
        pending = _Use(participant, agreement_id, application, action, purpose, use_id, now or self.clock(), claims,
                       loop.create_future())
        chain = self._chains.get(key)
        if chain is None or key in self._in_transaction or not self._decide_now(chain, pending):
            self._in_transaction[key] = self._in_transaction.get(key, 0) + 1
            pending.in_transaction = True
        queued = self._open.get(key)
        if queued is None:
            self._open[key] = [pending]
        else:
            queued.append(pending)
        if self._flight is None and not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        outcome = await pending.future
        crash_point("usage-after-commit")
        if self._deadlines_changed:
            self._deadlines_changed = False
            self._wake.set()
        if outcome.appended:
            self._committed[key] = max(self._committed.get(key, 0), outcome.entry.seq)
            self.logged(participant.id, agreement_id)
            log.info("use re-delivered" if outcome.repeated else "use decided", participant=participant.name,
                     agreement=agreement_id, action=action, purpose=purpose, application=application,
                     decision=outcome.decision, seq=outcome.entry.seq)
        self.decided(outcome.decision)
        return outcome

    def _decide_now(self, chain: _Chain, pending: _Use) -> bool:
        """Decide *pending* on the chain as the event loop knows it (every use queued before it appended), or
        return False: a use id used before is a retry, decided in the transaction against what is logged
        under it."""
        use_id = pending.use_id
        if use_id in chain.queued or (pending.participant.id, pending.agreement_id, use_id) in self._recent:
            return False
        head = chain.head
        counts = (head.uses or 0, head.first_use) if head is not None else (0, None)
        planned = plan_use(chain.policy, _state(counts),
                           self._request(pending.participant, chain.agreement, pending.action, pending.purpose,
                                         pending.claims), pending.now, report=False)
        permitted = planned.decision.permitted
        effects = [_effect_text(e) for e in planned.effects] if permitted else []
        entry = ledger.append(head, agreement=pending.agreement_id, kind="use", use_id=use_id,
                              at=now_text(pending.now), action=pending.action, purpose=pending.purpose,
                              application=pending.application, decision="permit" if permitted else "deny",
                              reasons=list(planned.decision.reasons), effects=effects)
        deletes = [e.time.timestamp() for e in planned.effects if isinstance(e, DeleteAt)] if permitted else []
        pending.entry, pending.text, pending.after = entry, store.encode(entry), chain.text
        pending.effects, pending.delete_at = effects, min(deletes) if deletes else None
        chain.head, chain.text = entry, pending.text
        chain.queued.add(use_id)
        return True

    def _flush(self) -> None:
        """Hand the uses queued to the store as one commit group (one at a time: the uses that arrive while a
        group commits form the next)."""
        self._flush_soon = False
        if self._flight is not None or not self._open:
            return
        group, self._open = self._open, {}
        try:
            self._flight = self.repo.submit(lambda db: self._log_group(db, group), durable=True)
        except Exception as exc:  # the store is closed
            self._group_failed(group, exc)
            return
        self._flight.add_done_callback(lambda done: self._committed_group(group, done))

    def _committed_group(self, group: dict[Key, list[_Use]], done: asyncio.Future[dict[Key, _ChainEnd]]) -> None:
        self._flight = None
        try:
            if done.cancelled():
                self._group_failed(group, StorageError("the use was not logged"))
            elif (exc := done.exception()) is not None:
                self._group_failed(group, exc if isinstance(exc, Exception) else StorageError("the use was not "
                                                                                             "logged"))
            else:
                self._group_logged(group, done.result())
        finally:
            if self._open:
                self._flush()

    def _log_group(self, db: Database, group: dict[Key, list[_Use]]) -> dict[Key, _ChainEnd]:
        """The commit group's job (writer thread): append each chain's uses decided in the event loop, once one
        query shows the chain, its agreement and its signed head as they were when they were decided;
        decide the others here, in the transaction (a retry; a chain the event loop does not know yet; a
        chain that changed meanwhile: a revocation, a duty logged, a use id found used, the log tampered
        with). Returns, per chain where anything was decided here, the chain as this transaction leaves it."""
        ends: dict[Key, _ChainEnd] = {}
        for key, uses in group.items():
            participant = uses[0].participant
            # Decided in the event loop: a prefix of the chain's uses (see UsageService.use).
            first_here = next((i for i, u in enumerate(uses) if u.in_transaction), len(uses))
            decided, rest = uses[:first_here], uses[first_here:]
            if decided and not self._still_holds(db, key, decided):
                decided, rest = [], uses  # decided again, here
            if decided:
                store.append_entries(db, *key, [(u.entry, u.text) for u in decided if u.entry is not None])
                deletes = [u.delete_at for u in decided if u.delete_at is not None]
                if deletes:  # the earliest deadline wins; it survives restarts in the store
                    store.schedule_duty(db, *key, "delete", min(deletes))
                    self._deadlines_changed = True
                last = decided[-1].entry
                assert last is not None
                self._touched[key] = (last.seq, last.hash)
                for u in decided:
                    assert u.entry is not None
                    u.outcome = UseOutcome(u.entry.decision, list(u.entry.reasons), u.entry, effects=u.effects)
            for u in rest:
                db.execute("SAVEPOINT use")
                try:
                    u.outcome = self._decide(db, participant, self._agreement(db, participant, u.agreement_id),
                                             u.application, u.action, u.purpose, u.use_id, u.now, u.claims)
                except Exception as exc:
                    db.execute("ROLLBACK TO use")
                    u.error = exc
                db.execute("RELEASE use")
            if rest:
                ends[key] = self._chain_end(db, participant, key[1])
        crash_point("usage-before-commit")
        return ends

    def _still_holds(self, db: Database, key: Key, decided: list[_Use]) -> bool:
        """Whether the store is as the event loop saw it when it decided *decided* (a chain's uses, in order):
        the agreement still in force, the chain's last entry the one the first use follows and covered by the
        head signed here, no more acknowledged than that, and no use id among them logged already."""
        first = decided[0].entry
        assert first is not None
        after = first.seq - 1
        found = store.chain_check(db, *key, [u.use_id for u in decided])
        if found.state not in _IN_FORCE or found.used or found.acked > after or found.last != decided[0].after:
            return False
        if after == 0:
            return found.head_seq is None
        return found.head_seq == after and found.head is not None and found.head == self._good_heads.get(key)

    def _chain_end(self, db: Database, participant: ParticipantRuntime, agreement_id: str
                   ) -> _ChainEnd:
        """The chain as this transaction leaves it; its agreement only where the event loop may decide the next
        uses itself (in force, the head checked, the counts carried by the head)."""
        agreement = store.agreement(db, participant.id, agreement_id)
        last = store.last_entry_text(db, participant.id, agreement_id)
        head, text = last if last is not None else (None, None)
        if agreement is None or agreement.role != Role.CONSUMER or agreement.state not in IN_FORCE or \
                (head is not None and head.uses is None) or \
                self._head_problem(db, participant, agreement_id, head) is not None:
            return _ChainEnd(None, head, text)
        return _ChainEnd(agreement, head, text)

    def _group_logged(self, group: dict[Key, list[_Use]], ends: dict[Key, _ChainEnd]) -> None:
        """A commit group is durable: answer its uses; take up what its transaction says of each chain."""
        for key, uses in group.items():
            self._settled(key, uses)
            chain = self._chains.get(key)
            for u in uses:
                if chain is not None:
                    chain.queued.discard(u.use_id)
                if u.outcome is not None:
                    self._recent[(*key, u.use_id)] = None
            while len(self._recent) > RECENT_USE_IDS:
                self._recent.popitem(last=False)
            end = ends.get(key)
            if end is not None:
                self._take_up(key, end)
            for u in uses:
                if u.future.done():
                    continue
                if u.outcome is not None:
                    u.future.set_result(u.outcome)
                else:
                    u.future.set_exception(u.error or StorageError("the use was not logged"))

    def _group_failed(self, group: dict[Key, list[_Use]], exc: Exception) -> None:
        """A commit group did not commit: nothing of it is logged; its uses are answered with the error, and the
        event loop forgets what it knew of its chains (the uses queued since follow entries that are not
        there)."""
        for key, uses in group.items():
            self._settled(key, uses)
            self._take_up(key, None)
            for u in uses:
                if not u.future.done():
                    u.future.set_exception(exc)

    def _settled(self, key: Key, uses: list[_Use]) -> None:
        left = self._in_transaction.get(key, 0) - sum(u.in_transaction for u in uses)
        if left > 0:
            self._in_transaction[key] = left
        else:
            self._in_transaction.pop(key, None)

    def _take_up(self, key: Key, end: _ChainEnd | None) -> None:
        """What the event loop knows of chain *key* is *end* (None: nothing); uses queued on what it knew
        before are decided in their transaction instead."""
        before = [u for u in self._open.get(key, ()) if not u.in_transaction]
        for u in before:
            u.in_transaction, u.entry = True, None
        if before:
            self._in_transaction[key] = self._in_transaction.get(key, 0) + len(before)
        if end is None or end.agreement is None or key in self._in_transaction:
            self._chains.pop(key, None)
            return
        self._chains[key] = _Chain(end.agreement, self._policy(key[0], end.agreement), end.head, end.text)

    async def check(
        self, participant: ParticipantRuntime, *, agreement_id: str, action: str, purpose: str,
        now: datetime | None = None,
    ) -> CheckOutcome:
        """A dry run: what a use of the agreement's data for *action* and *purpose* would be decided now.

        The same checks as :meth:`use` (the agreement in force, revocation, the log's head against its signed
        head and the provider's acknowledgement: the same 404 and 409) and the same policy decision with the
        same counts, time window, purpose, claims and export rules; but it runs on a reader's snapshot, which
        is query-only, so it counts nothing, logs nothing, schedules no duty and sends no receipt. A use
        decided a moment later may be decided otherwise (another use may take the last one first)."""
        claims = await self.own_claims(participant) if await self._asks_for_claims(participant, agreement_id) \
            else None
        # Captured before the snapshot begins, so that the snapshot holds every entry it names (see _head_problem).
        committed = self._committed.get((participant.id, agreement_id), 0)
        at = now or self.clock()

        def decide(db: Database) -> CheckOutcome:
            agreement = self._agreement(db, participant, agreement_id)
            _, counts = self._chain_state(db, participant, agreement.id, reader=committed)
            planned = plan_use(self._policy(participant.id, agreement), _state(counts),
                               self._request(participant, agreement, action, purpose, claims), at, report=False)
            permitted = planned.decision.permitted
            return CheckOutcome("permit" if permitted else "deny", list(planned.decision.reasons),
                                [_effect_text(e) for e in planned.effects] if permitted else [], counts[0],
                                allowance(agreement.agreement, counts[0], counts[1], at))

        outcome = await self.repo.snapshot(decide)
        log.debug("use checked (dry run)", participant=participant.name, agreement=agreement_id, action=action,
                  purpose=purpose, decision=outcome.decision)
        return outcome

    async def endings(self, participant: ParticipantRuntime, agreement_id: str | None = None
                      ) -> dict[str, dict[str, Any]]:
        """Per agreement of the participant's (or the one named), its revocation and its data's deletion, where
        there is one (``connector.store.usage.endings``)."""
        return await self.repo.read(lambda db: store.endings(db, participant.id, agreement_id))

    async def no_data_reason(self, participant: ParticipantRuntime, agreement_id: str) -> str:
        """Why no data of the agreement can be released, when the vault holds none: the same 404 or 409 as a
        use for an agreement that may not be used (revoked, not in force); otherwise what became of the data."""

        def query(db: Database) -> str:
            self._agreement(db, participant, agreement_id)
            deleted = store.endings(db, participant.id, agreement_id).get(agreement_id, {}).get("dataDeleted")
            if deleted is not None:
                return (f"the data of this agreement was deleted here at {deleted['at']} ({deleted['reason']}) "
                        "and has not been received again (nothing was counted)")
            return "no data has been received for this agreement (nothing was counted)"

        return await self.repo.snapshot(query)

    async def _asks_for_claims(self, participant: ParticipantRuntime, agreement_id: str) -> bool:
        key = (participant.id, agreement_id)
        asks = self._asks_claims.get(key)
        if asks is None:
            agreement = await self.repo.read(lambda db: store.agreement(db, participant.id, agreement_id))
            if agreement is None:
                return False  # the use is refused in the transaction, with its reason
            try:
                asks = bool(left_operands(parse_policy(agreement.agreement)) & CLAIM_OPERANDS)
            except PolicyError:
                asks = False  # the decision explains the policy's problem
            self._asks_claims[key] = asks
        return asks

    def _agreement(self, db: Database, participant: ParticipantRuntime, agreement_id: str
                   ) -> AgreementRecord:
        agreement = store.agreement(db, participant.id, agreement_id)
        if agreement is None or agreement.role != Role.CONSUMER:
            raise NotFound("no such agreement (as consumer)")
        if agreement.state == AgreementState.REVOKED:
            raise Conflict(revoked_text(store.revocation(db, participant.id, agreement_id)))
        if agreement.state not in IN_FORCE:
            raise Conflict(f"the agreement is {agreement.state}, not FINALIZED")
        return agreement

    def _policy(self, participant_id: str, agreement: AgreementRecord) -> CompiledPolicy:
        key = (participant_id, agreement.id)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = compile_policy(parse_policy(agreement.agreement))
        return compiled

    def _decide(
        self, db: Database, participant: ParticipantRuntime, agreement: AgreementRecord,
        application: str, action: str, purpose: str, use_id: str, now: datetime, claims: PeerClaims | None = None,
    ) -> UseOutcome:
        pid = participant.id
        head, counts = self._chain_state(db, participant, agreement.id)
        earlier = store.entries_of_use(db, pid, agreement.id, use_id)
        if earlier:
            return self._retry(db, participant, agreement, head, earlier, application, action, purpose, now,
                               claims)
        planned = plan_use(self._policy(pid, agreement), _state(counts),
                           self._request(participant, agreement, action, purpose, claims), now, report=False)
        permitted = planned.decision.permitted
        effects = [_effect_text(e) for e in planned.effects] if permitted else []
        entry = self._append(db, pid, agreement.id, head, counts, kind="use", use_id=use_id, at=now_text(now),
                             action=action, purpose=purpose, application=application,
                             decision="permit" if permitted else "deny", reasons=list(planned.decision.reasons),
                             effects=effects)
        for effect in planned.effects if permitted else ():
            if isinstance(effect, DeleteAt):
                # The earliest deadline wins; it survives restarts in the store.
                store.schedule_duty(db, pid, agreement.id, "delete", effect.time.timestamp())
                self._deadlines_changed = True
        return UseOutcome(entry.decision, list(entry.reasons), entry, effects=effects)

    def _request(self, participant: ParticipantRuntime, agreement: AgreementRecord, action: str,
                 purpose: str, claims: PeerClaims | None) -> Request:
        if claims is None:  # the policy names no verified claim (or the participant has none)
            return Request(party=participant.did, action=action, target=agreement.asset_id, purpose=purpose or None,
                           region=participant.record.region, recipient=participant.did)
        own = PeerFacts(participant.did, self_asserted_region=participant.record.region).with_claims(claims)
        asked = own.request(action=action, target=agreement.asset_id, export_destination=own.verified_region)
        return msgspec.structs.replace(asked, purpose=purpose or None)

    def _retry(
        self, db: Database, participant: ParticipantRuntime, agreement: AgreementRecord,
        head: ledger.Entry | None, earlier: list[ledger.Entry], application: str, action: str, purpose: str,
        now: datetime, claims: PeerClaims | None,
    ) -> UseOutcome:
        """A use id seen before: the same use retried (re-delivered, bounded) or a conflict (409)."""
        original = next((e for e in earlier if e.kind == "use"), None)
        if original is None:  # only re-deliveries under this id: the log was changed behind the node's back
            raise Conflict(f"use id {earlier[0].use_id!r} has no use in the log")
        use_id = original.use_id
        differs = [name for name, mine, theirs in (("application", application, original.application),
                                                   ("action", action, original.action),
                                                   ("purpose", purpose, original.purpose)) if mine != theirs]
        if differs:
            err = Conflict(f"use id {use_id!r} names another use (its {' and '.join(differs)} "
                           f"{'differs' if len(differs) == 1 else 'differ'}): a use id is one use by one application "
                           "for one action and purpose; make up a new use id for a new use")
            err.details = {"conflict": differs}  # type: ignore[attr-defined]
            raise err
        if original.decision != "permit":
            # The same denied use asked again: the same answer, nothing released, nothing logged.
            return UseOutcome(original.decision, list(original.reasons), original, repeated=True, appended=False)
        cfg = self.config
        again = [e for e in earlier if e.kind == "redelivery"]
        used_at = datetime.fromisoformat(original.at.replace("Z", "+00:00"))
        if (now - used_at).total_seconds() > cfg.redelivery_window_s:
            err = Conflict(f"use id {use_id!r} was used at {original.at}; it may be retried for "
                           f"{cfg.redelivery_window_s:g} s (usage.redelivery_window_s): make up a new use id")
            err.details = {"conflict": ["window"]}  # type: ignore[attr-defined]
            raise err
        if len(again) >= cfg.redeliveries:
            err = Conflict(f"use id {use_id!r} was already retried {len(again)} times (usage.redeliveries = "
                           f"{cfg.redeliveries}): make up a new use id")
            err.details = {"conflict": ["redeliveries"]}  # type: ignore[attr-defined]
            raise err
        # Decided again against the policy now, as the use it repeats: with the count from before that use, so
        # the retry is not refused for the count it already took, but with the time window the first use opened,
        # so a window closed since refuses it.
        before = (original.uses - 1 if original.uses is not None else 0, original.first_use or original.at)
        planned = plan_use(self._policy(participant.id, agreement), _state(before),
                           self._request(participant, agreement, action, purpose, claims), now, report=False)
        permitted = planned.decision.permitted
        reasons = [f"retry {len(again) + 1} of {cfg.redeliveries} of use #{original.seq} (counted once)",
                   *planned.decision.reasons]
        entry = self._append(db, participant.id, agreement.id, head, None, kind="redelivery", use_id=use_id,
                             at=now_text(now), action=action, purpose=purpose, application=application,
                             decision="permit" if permitted else "deny", reasons=reasons)
        return UseOutcome(entry.decision, reasons, entry, repeated=True)

    def _chain_state(self, db: Database, participant: ParticipantRuntime, agreement_id: str,
                     *, reader: int | None = None) -> tuple[ledger.Entry | None, tuple[int, str | None]]:
        """The chain's last entry and the counts after it, once the head is shown to be the one the node
        signed and no shorter than what the provider acknowledged; otherwise 409 (uses are blocked).
        *reader*: see :meth:`_head_problem`."""
        head = store.last_entry(db, participant.id, agreement_id)
        problem = self._head_problem(db, participant, agreement_id, head, reader=reader)
        if problem is not None:
            log.error("usage log does not verify: uses blocked", participant=participant.name,
                      agreement=agreement_id, problem=problem)
            raise Conflict(f"the usage log of this agreement does not verify ({problem}): its data may not be used "
                           "until this is resolved; `tds log verify` shows the log")
        if head is None:
            return None, (0, None)
        if head.uses is not None:
            return head, (head.uses, head.first_use)
        return head, ledger.running_counts(store.chain(db, participant.id, agreement_id))

    def _head_problem(self, db: Database, participant: ParticipantRuntime, agreement_id: str,
                      head: ledger.Entry | None, *, reader: int | None = None) -> str | None:
        """What is wrong with a chain's last entry *head*, or None: it must hash right, be covered by the last
        signed head (signed by this participant) and reach at least as far as the provider acknowledged.

        *reader*: checked on a reader's snapshot (a dry run), not on the writer thread; the value is the
        highest entry known committed before the snapshot began (a later commit is not in the snapshot, and
        so no sign of removed entries). A reader sees only committed entries, so no entry of an open commit
        group, and it leaves the writer's cache of good heads alone."""
        pid = participant.id
        acked = store.acked_seq(db, pid, agreement_id)
        if acked > (head.seq if head else 0):
            return (f"the provider acknowledged entries up to #{acked} but the log ends at "
                    f"#{head.seq if head else 0}: entries were removed")
        committed = self._committed.get((pid, agreement_id), 0) if reader is None else reader
        if committed > (head.seq if head else 0):
            return (f"entry #{committed} was logged here but the log ends at #{head.seq if head else 0}: entries "
                    "were removed")
        if head is None:
            signed = store.last_signed_head(db, pid, agreement_id)
            if signed is not None:  # (a reader's snapshot holds every head signed before it, as every entry)
                return f"entry #{signed[0]} was signed as the log's head but the log is empty: entries were removed"
            return None
        if head.agreement != agreement_id or ledger.entry_hash(head) != head.hash:
            return f"entry #{head.seq} was changed"
        if reader is None and self._touched.get((pid, agreement_id)) == (head.seq, head.hash):
            return None  # appended by this commit group: its head is signed at the group's end
        signed = store.last_signed_head(db, pid, agreement_id)
        if signed is None or signed[0] != head.seq:
            return f"entry #{head.seq} is not the last signed head"
        key = (pid, agreement_id)
        document = msgspec.json.decode(signed[1])
        if self._good_heads.get(key) != signed[1]:
            if not head_verifier(participant.did_document())(document):
                return f"the signed head of entry #{head.seq} does not verify"
            if reader is None:
                self._good_heads[key] = signed[1]
        if document.get("hash") != head.hash or document.get("agreement") != agreement_id:
            return f"entry #{head.seq} does not match its signed head"
        return None

    def _append(self, db: Database, participant_id: str, agreement_id: str, head: ledger.Entry | None,
                counts: tuple[int, str | None] | None, **fields: Any) -> ledger.Entry:
        """Append to the chain whose last entry is *head* (as this transaction sees it: a rolled-back job
        leaves nothing to forget); *counts* are the counts after *head* (None: those it carries)."""
        if head is not None and head.uses is None and counts is None:
            counts = ledger.running_counts(store.chain(db, participant_id, agreement_id))
        entry = ledger.append(head, counts=counts, agreement=agreement_id, **fields)
        store.append_entry(db, participant_id, agreement_id, entry)
        self._touched[(participant_id, agreement_id)] = (entry.seq, entry.hash)
        return entry

    def append_duty(self, db: Database, participant_id: str, agreement_id: str, kind: str,
                    detail: str, at: datetime) -> ledger.Entry:
        """A duty carried out (deletion, notice …) as a log entry; call inside a writer job."""
        return self._append(db, participant_id, agreement_id, store.last_entry(db, participant_id, agreement_id),
                            None, kind=kind, at=now_text(at), reasons=[detail])

    def append_own_use(self, db: Database, participant: ParticipantRuntime, agreement_id: str,
                       fields: Callable[[ledger.Entry | None, tuple[int, str | None]], dict[str, Any]]
                       ) -> ledger.Entry:
        """Log a use decided on this node of data it keeps itself (a data sandbox query, on the provider's node)
        in the participant's own chain for the agreement; call inside a writer job. The chain's last entry is
        checked as a use's is (409 naming the problem when it does not verify); *fields* gets it and the counts
        after it (permitted uses, the first one's time) and returns the new entry's fields. The chain's head is
        signed at the end of the commit group."""
        head, counts = self._chain_state(db, participant, agreement_id)
        return self._append(db, participant.id, agreement_id, head, counts, **fields(head, counts))

    def _sign_heads(self, db: Database) -> None:
        """Commit-group hook: one signed head per chain this commit group touched."""
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        at = now_text(self.clock())
        for participant_id, agreement_id in sorted(touched):
            participant = self.participant_by_id(participant_id)
            entry = store.last_entry(db, participant_id, agreement_id)
            if participant is None or entry is None:
                continue
            document = ledger.head_document(entry, signer=participant.did, at=at)
            signer = participant.signer  # key and id read together (a rotation may switch them meanwhile)
            signed = proof.sign(document, signer.key, verification_method=signer.key_id, created=at)
            text = msgspec.json.encode(signed).decode()
            store.save_head(db, participant_id, agreement_id, entry.seq, text)
            # Signed here a moment ago: good (if this commit fails, the text simply will not match).
            self._good_heads[(participant_id, agreement_id)] = text

    # -- duties on schedule ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check every chain's head; run the duty scheduler (a deadline missed while the node was down runs at
        once)."""
        await self.check_heads()
        self._scheduler = asyncio.get_running_loop().create_task(self._run_scheduler())

    async def check_heads(self) -> dict[tuple[str, str], str]:
        """Check the head of every usage log chain (hash, signed head, the provider's acknowledgement); log
        each one that does not verify (its uses are refused until resolved). Returns the problems."""

        def query(db: Database) -> dict[tuple[str, str], str]:
            problems = {}
            for participant_id, agreement_id in store.chains(db):
                participant = self.participant_by_id(participant_id)
                if participant is None:
                    continue
                head = store.last_entry(db, participant_id, agreement_id)
                problem = self._head_problem(db, participant, agreement_id, head)
                if problem is not None:
                    problems[(participant_id, agreement_id)] = problem
            return problems

        problems = await self.repo.write(query)
        for (participant_id, agreement_id), problem in problems.items():
            log.error("usage log does not verify: uses blocked", participant=participant_id, agreement=agreement_id,
                      problem=problem)
        return problems

    def forget(self, participant_id: str) -> None:
        """The participant is no longer hosted (its rows are being deleted): drop what the event loop keeps of its
        chains, so that memory follows the participants hosted now."""
        for table in (self._asks_claims, self._compiled, self._committed, self._chains):
            for key in [k for k in table if k[0] == participant_id]:
                del table[key]
        for used in [k for k in self._recent if k[0] == participant_id]:
            del self._recent[used]

    async def close(self) -> None:
        # Every use queued is answered, each once its group committed.
        while self._flight is not None or self._open:
            if self._flight is None:
                self._flush()
            if self._flight is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flight)
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None

    async def _run_scheduler(self) -> None:
        while True:
            self._wake.clear()
            due = await self.repo.duties_due()
            now = self.clock().timestamp()
            failed = False
            for participant_id, agreement_id, kind, due_at in due:
                if due_at > now:
                    break
                try:
                    await self.carry_out(participant_id, agreement_id, kind)
                except Exception:
                    log.exception("scheduled duty failed; tried again later", agreement=agreement_id, kind=kind,
                                  retry_in_s=DUTY_RETRY_S)
                    failed = True
            pending = [d[3] - self.clock().timestamp() for d in due if d[3] > now]
            if failed:  # still due: not done
                pending.append(DUTY_RETRY_S)
            timeout = max(0.0, min(pending)) if pending else None
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation that arrives as the
            # event is set, and the scheduler then never ends when the node stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def carry_out(self, participant_id: str, agreement_id: str, kind: str) -> None:
        """Delete the agreement's data (its key first, then the bytes) and log it as a signed entry."""
        participant = self.participant_by_id(participant_id)
        if participant is None or kind != "delete":
            return
        deleted = await self.destroy_data(participant, agreement_id)
        at = self.clock()

        def record(db: Database) -> None:
            self.append_duty(db, participant_id, agreement_id, "delete",
                             f"data deleted on schedule ({deleted.describe()})", at)
            store.duty_done(db, participant_id, agreement_id, kind, now_text(at))

        await self.repo.write(record, durable=True)
        log.info("data deleted on schedule", participant=participant.name, agreement=agreement_id,
                 bytes_deleted=deleted.bytes_removed, key_destroyed=deleted.key_destroyed)
        self.logged(participant_id, agreement_id)

    # -- reading --------------------------------------------------------------------------------------

    async def log_of(self, participant: ParticipantRuntime, agreement_id: str
                     ) -> tuple[list[ledger.Entry], list[dict[str, Any]], dict[str, Any] | None]:
        """The agreement's chain, its signed heads, and the provider's signed acknowledgement (if any)."""
        return await self.repo.log_of(participant.id, agreement_id)

    async def summary(self, participant: ParticipantRuntime, agreement_id: str, *, latest: int = 20,
                      now: datetime | None = None) -> dict[str, Any]:
        def query(db: Database) -> tuple[AgreementRecord | None, list[ledger.Entry],
                                                      dict[str, Any]]:
            return (store.agreement(db, participant.id, agreement_id), store.chain(db, participant.id, agreement_id),
                    store.endings(db, participant.id, agreement_id).get(agreement_id, {}))

        agreement, chain, ended = await self.repo.snapshot(query)
        if agreement is None or agreement.role != Role.CONSUMER:
            raise NotFound("no such agreement (as consumer)")
        use_count, first_use = ledger.running_counts(chain)
        rows = [msgspec.to_builtins(e) for e in reversed(chain[-latest:])] if latest > 0 else []
        left = allowance(agreement.agreement, use_count, first_use, now or self.clock())
        if agreement.state not in IN_FORCE:  # revoked, or not yet in force: no use is left, whatever the policy
            left.update({k: 0 for k in ("usesLeft", "secondsLeft") if k in left})
        return {
            "agreementId": agreement_id,
            "target": agreement.asset_id,
            "state": str(agreement.state),  # only a FINALIZED agreement may be used
            "revocation": ended.get("revocation"),
            "dataDeleted": ended.get("dataDeleted"),
            "uses": use_count,
            "firstUse": first_use,
            "allowance": left,
            "latest": [{k: r[k] for k in ("seq", "at", "kind", "action", "purpose", "application", "decision",
                                          "reasons", "use_id") if k in r}
                       for r in rows],
        }


def head_verifier(did_document: dict[str, Any]) -> Any:
    """A ``verify_head`` for :func:`usage_policies.ledger.check_chain`: the head must be signed by the
    DID document's subject with a key it lists for assertions."""
    signer = did_document.get("id")
    resolve = proof.key_resolver(did_document)

    def verify(head: dict[str, Any]) -> bool:
        if head.get("signer") != signer:
            return False
        try:
            proof.verify(head, resolve)
        except proof.ProofError:
            return False
        return True

    return verify


def check_log(entries: list[dict[str, Any]], heads: list[dict[str, Any]], did_document: dict[str, Any],
              acknowledgement: dict[str, Any] | None = None, provider_document: dict[str, Any] | None = None,
              ) -> ledger.ChainProblem | None:
    """Check a usage log as the API returns it: the chain with its counts, every head's signature, and that
    it holds what the provider acknowledged (signed by the provider: a log cut short or rewritten below
    that point is named)."""
    try:
        chain = [msgspec.convert(e, ledger.Entry) for e in entries]
    except msgspec.ValidationError as exc:
        return ledger.ChainProblem(0, 0, f"an entry is malformed: {exc}")
    problem = ledger.check_chain(chain, heads, verify_head=head_verifier(did_document))
    if problem is not None or acknowledgement is None:
        return problem
    seq = acknowledgement.get("seq")
    if not isinstance(seq, int) or (chain and acknowledgement.get("agreement") != chain[0].agreement):
        return ledger.ChainProblem(len(chain), -1, "the provider's acknowledgement is malformed")
    if provider_document is not None and not head_verifier(provider_document)(acknowledgement):
        return ledger.ChainProblem(len(chain), seq, "the provider's acknowledgement does not verify")
    last = chain[-1].seq if chain else 0
    if seq > last:
        return ledger.ChainProblem(len(chain), seq, f"the provider acknowledged entries up to #{seq} but the log "
                                                    f"ends at #{last}: entries were removed")
    acked = chain[seq - 1] if seq >= 1 else None
    if acked is not None and acked.hash != acknowledgement.get("hash"):
        return ledger.ChainProblem(seq - 1, seq, "differs from the entry the provider acknowledged (the log was "
                                                 "rewritten)")
    return None


def _state(counts: tuple[int, str | None]) -> UsageState:
    uses, first = counts
    return UsageState(use_count=uses, first_use=datetime.fromisoformat(first.replace("Z", "+00:00")) if first else None)


def allowance(policy: dict[str, Any], use_count: int, first_use: str | None, now: datetime) -> dict[str, Any]:
    """What is left of the agreement's count and time limits (read from its ``use`` permissions). Durations
    are the engine's (``xsd:duration`` with months and years, as the policy decides them); a value the
    engine would not read is left out rather than guessed."""
    out: dict[str, Any] = {}
    for rule in policy.get("permission", []):
        for c in rule.get("constraint", []) if isinstance(rule, dict) else []:
            if not isinstance(c, dict):
                continue
            left = str(c.get("leftOperand", "")).rsplit(":", 1)[-1].rsplit("/", 1)[-1]
            right = c.get("rightOperand")
            value = right.get("@value") if isinstance(right, dict) else right
            if left == "count" and c.get("operator") in ("lteq", "lt") and str(value).isascii() \
                    and str(value).isdigit():
                limit = int(str(value)) - (1 if c.get("operator") == "lt" else 0)
                out["usesAllowed"] = limit
                out["usesLeft"] = max(0, limit - use_count)
            elif left == "elapsedTime" and isinstance(value, str):
                try:
                    span = parse_duration(value)
                except ValueError:
                    continue
                out["usePeriod"] = value
                if first_use:
                    until = span.add_to(datetime.fromisoformat(first_use.replace("Z", "+00:00")))
                    out["useUntil"] = now_text(until)
                    out["secondsLeft"] = max(0, int((until - now).total_seconds()))
            elif left == "dateTime" and c.get("operator") in ("lt", "lteq") and isinstance(value, str):
                out["notAfter"] = value
    return out
