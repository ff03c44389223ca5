"""Usage enforcement on the consumer's node: every use of received data is decided, counted and logged.

A use (``POST /api/management/v1/usage``) names the agreement, the action, the purpose and a use id the
application makes up; the application itself is the management token's. The whole decision runs as one
job on the store's writer thread: read the counters, let the policy engine decide with them
(``usage_policies.plan_use``), append the log entry (permit and deny alike), bump the counter on a
permit — one transaction, committed with an fsync before the caller gets the answer, and before any byte
of data is released. So:

- counters are exact under any concurrency (the writer serialises the read-decide-write);
- the use id makes a use idempotent: a retry with the same id gets the same decision from the log and is
  not counted again; a crash before the commit leaves no trace, after it one counted, logged use;
- concurrent uses share one commit (group commit), and each chain head touched by a commit group is
  signed once, inside that group's transaction (``Store.batch_hooks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import sqlite_utils

from connector.errors import Conflict, NotFound
from connector.faults import crash_point
from connector.identity import proof
from connector.logging import get_logger
from connector.store.records import AgreementRecord, from_row
from usage_policies import Request, UsageState, ledger, parse_policy, plan_use
from usage_policies.enforce import AppendLog, DeleteAt, InformProvider, Meter
from usage_policies.evaluate import CompiledPolicy, compile_policy

if TYPE_CHECKING:
    from connector.node import Node
    from connector.participant import ParticipantRuntime

log = get_logger(component="usage")
HEAD_PROOF = "proof"


@dataclass(frozen=True)
class UseOutcome:
    decision: str
    reasons: list[str]
    entry: ledger.Entry
    repeated: bool = False
    effects: list[str] = field(default_factory=list)

    @property
    def permitted(self) -> bool:
        return self.decision == "permit"


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


class UsageService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._compiled: dict[tuple[str, str], CompiledPolicy] = {}
        #: chains touched by the current commit group (writer thread only)
        self._touched: set[tuple[str, str]] = set()
        node.store.batch_hooks.append(self._sign_heads)
        self._deadlines_changed = False
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None

    # -- the decision, in one writer-thread job ------------------------------------------------------

    async def use(
        self, participant: ParticipantRuntime, *, application: str, agreement_id: str, action: str, purpose: str,
        use_id: str, now: datetime | None = None,
    ) -> UseOutcome:
        # The agreement is read inside the same transaction as the decision: a revocation committed a moment
        # earlier is seen, and no thread hop is spent on a separate read.
        outcome = await self.node.store.write(
            lambda db: self._decide(db, participant, self._agreement(db, participant, agreement_id), application,
                                    action, purpose, use_id, now or datetime.now(UTC)),
            durable=True,
        )
        crash_point("usage-after-commit")
        if self._deadlines_changed:
            self._deadlines_changed = False
            self._wake.set()
        if not outcome.repeated:
            self.node.receipts.notify(participant.id, agreement_id)
            log.info("use decided", participant=participant.name, agreement=agreement_id, action=action,
                     purpose=purpose, application=application, decision=outcome.decision, seq=outcome.entry.seq)
        return outcome

    def _agreement(self, db: sqlite_utils.Database, participant: ParticipantRuntime, agreement_id: str
                   ) -> AgreementRecord:
        cursor = db.conn.execute("SELECT * FROM agreements WHERE participant_id = ? AND id = ?",
                                 [participant.id, agreement_id])
        row = cursor.fetchone()
        agreement = (from_row(AgreementRecord, dict(zip([d[0] for d in cursor.description], row, strict=True)))
                     if row else None)
        if agreement is None or agreement.role != "consumer":
            raise NotFound("no such agreement (as consumer)")
        if agreement.state == "REVOKED":
            raise Conflict("the provider revoked this agreement: its data may no longer be used")
        if agreement.state != "FINALIZED":
            raise Conflict(f"the agreement is {agreement.state}, not FINALIZED")
        return agreement

    def _policy(self, participant_id: str, agreement: AgreementRecord) -> CompiledPolicy:
        key = (participant_id, agreement.id)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = compile_policy(parse_policy(agreement.agreement))
        return compiled

    def _decide(
        self, db: sqlite_utils.Database, participant: ParticipantRuntime, agreement: AgreementRecord,
        application: str, action: str, purpose: str, use_id: str, now: datetime,
    ) -> UseOutcome:
        pid = participant.id
        # Plain sqlite3 on the hot path (sqlite-utils wraps each query in a savepoint of its own).
        earlier = db.conn.execute("SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? "
                                  "AND use_id = ?", [pid, agreement.id, use_id]).fetchone()
        if earlier:
            entry = msgspec.json.decode(earlier[0], type=ledger.Entry)
            return UseOutcome(entry.decision, list(entry.reasons), entry, repeated=True, effects=list(entry.effects))
        counters = db.conn.execute("SELECT use_count, first_use_at FROM usage_counters WHERE participant_id = ? "
                                   "AND agreement_id = ?", [pid, agreement.id]).fetchone()
        use_count = int(counters[0]) if counters else 0
        first_use = (datetime.fromisoformat(counters[1].replace("Z", "+00:00"))
                     if counters and counters[1] else None)
        request = Request(
            party=participant.did, action=action, target=agreement.asset_id, purpose=purpose or None,
            region=participant.record.region, recipient=participant.did,
            export_destination=participant.record.region,
        )
        planned = plan_use(self._policy(pid, agreement), UsageState(use_count=use_count, first_use=first_use),
                           request, now)
        permitted = planned.decision.permitted
        effects = [_effect_text(e) for e in planned.effects] if permitted else []
        entry = self._append(db, pid, agreement.id, kind="use", use_id=use_id, at=now_text(now), action=action,
                             purpose=purpose, application=application,
                             decision="permit" if permitted else "deny", reasons=list(planned.decision.reasons),
                             effects=effects)
        for effect in planned.effects if permitted else ():
            if isinstance(effect, DeleteAt):
                # The earliest deadline wins; it survives restarts in the store.
                db.conn.execute(
                    "INSERT INTO scheduled_duties (participant_id, agreement_id, kind, due_at) VALUES (?, ?, "
                    "'delete', ?) ON CONFLICT (participant_id, agreement_id, kind) DO UPDATE SET "
                    "due_at = MIN(due_at, excluded.due_at) WHERE done_at IS NULL",
                    [pid, agreement.id, effect.time.timestamp()])
                self._deadlines_changed = True
        if permitted:
            db.conn.execute(
                "INSERT INTO usage_counters (participant_id, agreement_id, use_count, first_use_at) "
                "VALUES (?, ?, 1, ?) ON CONFLICT (participant_id, agreement_id) DO UPDATE SET "
                "use_count = use_count + 1, first_use_at = COALESCE(first_use_at, excluded.first_use_at)",
                [pid, agreement.id, now_text(now)],
            )
        crash_point("usage-before-commit")
        return UseOutcome(entry.decision, list(entry.reasons), entry, effects=effects)

    def _append(self, db: sqlite_utils.Database, participant_id: str, agreement_id: str, **fields: Any) -> ledger.Entry:
        # Always the head as this transaction sees it: a rolled-back job leaves nothing to forget.
        head = _head(db, participant_id, agreement_id)
        entry = ledger.append(head, agreement=agreement_id, **fields)
        db.conn.execute(
            "INSERT INTO usage_log (participant_id, agreement_id, seq, use_id, at, kind, entry) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [participant_id, agreement_id, entry.seq, entry.use_id, entry.at, entry.kind,
             msgspec.json.encode(entry).decode()],
        )
        self._touched.add((participant_id, agreement_id))
        return entry

    def append_duty(self, db: sqlite_utils.Database, participant_id: str, agreement_id: str, kind: str,
                    detail: str, at: datetime) -> ledger.Entry:
        """A duty carried out (deletion, notice …) as a log entry; call inside a writer job."""
        return self._append(db, participant_id, agreement_id, kind=kind, at=now_text(at), reasons=[detail])

    def _sign_heads(self, db: sqlite_utils.Database) -> None:
        """Batch hook: one signed head per chain this commit group touched."""
        if not self._touched:
            return
        touched, self._touched = self._touched, set()
        at = now_text(datetime.now(UTC))
        for participant_id, agreement_id in sorted(touched):
            participant = self.node.participant_by_id(participant_id)
            entry = _head(db, participant_id, agreement_id)
            if participant is None or entry is None:
                continue
            document = ledger.head_document(entry, signer=participant.did, at=at)
            signed = proof.sign(document, participant.keys.signing, verification_method=participant.key_id,
                                created=at)
            db.execute("INSERT OR REPLACE INTO usage_heads (participant_id, agreement_id, seq, head) "
                       "VALUES (?, ?, ?, ?)",
                       [participant_id, agreement_id, entry.seq, msgspec.json.encode(signed).decode()])

    # -- duties on schedule ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the duty scheduler; a deadline missed while the node was down runs at once."""
        self._scheduler = asyncio.get_running_loop().create_task(self._run_scheduler())

    async def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None

    async def _run_scheduler(self) -> None:
        while True:
            self._wake.clear()
            due = await self.node.store.read(lambda db: db.conn.execute(
                "SELECT participant_id, agreement_id, kind, due_at FROM scheduled_duties WHERE done_at IS NULL "
                "ORDER BY due_at").fetchall())
            now = time.time()
            for participant_id, agreement_id, kind, due_at in due:
                if due_at > now:
                    break
                try:
                    await self.carry_out(participant_id, agreement_id, kind)
                except Exception:
                    log.exception("scheduled duty failed", agreement=agreement_id, kind=kind)
            pending = [d[3] for d in due if d[3] > now]
            timeout = max(0.0, min(pending) - time.time()) if pending else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def carry_out(self, participant_id: str, agreement_id: str, kind: str) -> None:
        """Delete the agreement's data (its key first, then the bytes) and log it as a signed entry."""
        participant = self.node.participant_by_id(participant_id)
        if participant is None or kind != "delete":
            return
        deleted = await self.node.destroy_agreement_data(participant, agreement_id)
        at = datetime.now(UTC)

        def record(db: sqlite_utils.Database) -> None:
            self.append_duty(db, participant_id, agreement_id, "delete",
                             f"data deleted on schedule ({deleted.describe()})", at)
            db.conn.execute("UPDATE scheduled_duties SET done_at = ? WHERE participant_id = ? AND agreement_id = ? "
                            "AND kind = ?", [now_text(at), participant_id, agreement_id, kind])

        await self.node.store.write(record, durable=True)
        log.info("data deleted on schedule", participant=participant.name, agreement=agreement_id,
                 bytes_deleted=deleted.bytes_removed, key_destroyed=deleted.key_destroyed)
        self.node.receipts.notify(participant_id, agreement_id)

    # -- reading --------------------------------------------------------------------------------------

    async def log_of(self, participant: ParticipantRuntime, agreement_id: str) -> tuple[list[ledger.Entry],
                                                                                         list[dict[str, Any]]]:
        def query(db: sqlite_utils.Database) -> tuple[list[ledger.Entry], list[dict[str, Any]]]:
            entries = [msgspec.json.decode(r["entry"], type=ledger.Entry) for r in db.query(
                "SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? ORDER BY seq",
                [participant.id, agreement_id])]
            heads = [msgspec.json.decode(r["head"]) for r in db.query(
                "SELECT head FROM usage_heads WHERE participant_id = ? AND agreement_id = ? ORDER BY seq",
                [participant.id, agreement_id])]
            return entries, heads

        return await self.node.store.read(query)

    async def summary(self, participant: ParticipantRuntime, agreement_id: str, *, latest: int = 20,
                      now: datetime | None = None) -> dict[str, Any]:
        agreement = await self.node.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != "consumer":
            raise NotFound("no such agreement (as consumer)")

        def query(db: sqlite_utils.Database) -> tuple[list[dict[str, Any]], list[str]]:
            counters = list(db.query("SELECT use_count, first_use_at FROM usage_counters WHERE participant_id = ? "
                                     "AND agreement_id = ?", [participant.id, agreement_id]))
            rows = [msgspec.json.decode(r["entry"]) for r in db.query(
                "SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? ORDER BY seq DESC "
                "LIMIT ?", [participant.id, agreement_id, latest])]
            return counters, rows  # type: ignore[return-value]

        counters, rows = await self.node.store.read(query)
        use_count = int(counters[0]["use_count"]) if counters else 0
        first_use = counters[0]["first_use_at"] if counters else None
        return {
            "agreementId": agreement_id,
            "target": agreement.asset_id,
            "uses": use_count,
            "firstUse": first_use,
            "allowance": allowance(agreement.agreement, use_count, first_use, now or datetime.now(UTC)),
            "latest": [{k: r[k] for k in ("seq", "at", "kind", "action", "purpose", "application", "decision",
                                          "reasons", "useId" if "useId" in r else "use_id") if k in r}
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


def check_log(entries: list[dict[str, Any]], heads: list[dict[str, Any]],
              did_document: dict[str, Any]) -> ledger.ChainProblem | None:
    """Check a usage log as the API returns it: the chain, and every head's signature."""
    try:
        chain = [msgspec.convert(e, ledger.Entry) for e in entries]
    except msgspec.ValidationError as exc:
        return ledger.ChainProblem(0, 0, f"an entry is malformed: {exc}")
    return ledger.check_chain(chain, heads, verify_head=head_verifier(did_document))


def _head(db: sqlite_utils.Database, participant_id: str, agreement_id: str) -> ledger.Entry | None:
    row = db.conn.execute("SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? "
                          "ORDER BY seq DESC LIMIT 1", [participant_id, agreement_id]).fetchone()
    return msgspec.json.decode(row[0], type=ledger.Entry) if row else None


_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def allowance(policy: dict[str, Any], use_count: int, first_use: str | None, now: datetime) -> dict[str, Any]:
    """What is left of the agreement's count and time limits (read from its ``use`` permissions)."""
    out: dict[str, Any] = {}
    for rule in policy.get("permission", []):
        for c in rule.get("constraint", []) if isinstance(rule, dict) else []:
            left = str(c.get("leftOperand", "")).rsplit(":", 1)[-1].rsplit("/", 1)[-1]
            right = c.get("rightOperand")
            value = right.get("@value") if isinstance(right, dict) else right
            if left == "count" and c.get("operator") in ("lteq", "lt"):
                limit = int(value) - (1 if c.get("operator") == "lt" else 0)
                out["usesAllowed"] = limit
                out["usesLeft"] = max(0, limit - use_count)
            elif left == "elapsedTime" and isinstance(value, str) and (match := _DURATION.match(value)):
                days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
                span = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
                out["usePeriod"] = value
                if first_use:
                    start = datetime.fromisoformat(first_use.replace("Z", "+00:00"))
                    out["useUntil"] = now_text(start + span)
                    out["secondsLeft"] = max(0, int((start + span - now).total_seconds()))
            elif left == "dateTime" and c.get("operator") in ("lt", "lteq") and isinstance(value, str):
                out["notAfter"] = value
    return out
