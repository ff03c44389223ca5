"""The usage log and its receipts in SQLite: every query of :mod:`connector.services.usage` and
:mod:`connector.services.receipts`.

Two kinds of call:

- module functions that take the writer's (or a reader's) ``db`` and run inside a job of the caller's, so
  that a check-then-append stays one transaction (a commit group of uses is checked and logged in one
  writer job: :func:`chain_check`, :func:`append_entries`). They use plain ``sqlite3`` (``db.conn``): the
  usage log is the node's hottest path;
- :class:`UsageRepository`, which runs such jobs (:meth:`~UsageRepository.write`,
  :meth:`~UsageRepository.submit`, :meth:`~UsageRepository.read`) and the queries that stand on their own.

Tables: the consumer's hash-chained ``usage_log`` with its signed ``usage_heads``, its
``scheduled_duties`` and its ``receipt_cursors`` (how far the provider acknowledged); the provider's
``received_entries``, ``received_heads`` and ``receipt_anomalies``; and both sides' ``revocations``.
Every query is scoped by ``participant_id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import msgspec

from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role
from connector.store.db import Database, Store
from connector.store.records import AgreementRecord, from_row
from usage_policies import ledger

T = TypeVar("T")
Key = tuple[str, str]  # (participant id, agreement id)

_ENTRY = msgspec.json.Decoder(ledger.Entry)


def encode(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# -- agreements, as the usage decision and a revocation see them -------------------------------------------

def agreement(db: Database, participant_id: str, agreement_id: str) -> AgreementRecord | None:
    cursor = db.conn.execute("SELECT * FROM agreements WHERE participant_id = ? AND id = ?",
                             [participant_id, agreement_id])
    row = cursor.fetchone()
    if row is None:
        return None
    record: AgreementRecord = from_row(AgreementRecord, dict(zip([d[0] for d in cursor.description], row,
                                                                 strict=True)))
    return record


def set_agreement_state(db: Database, participant_id: str, agreement_id: str,
                        state: AgreementState) -> None:
    """Store the agreement's new *state* (a move the caller checked with ``agreement_lifecycle.next_state``)."""
    db.conn.execute("UPDATE agreements SET state = ? WHERE participant_id = ? AND id = ?",
                    [state.value, participant_id, agreement_id])


# -- the consumer's usage log ---------------------------------------------------------------------------

def last_entry(db: Database, participant_id: str, agreement_id: str) -> ledger.Entry | None:
    row = db.conn.execute("SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? "
                          "ORDER BY seq DESC LIMIT 1", [participant_id, agreement_id]).fetchone()
    return _ENTRY.decode(row[0]) if row else None


def last_entry_text(db: Database, participant_id: str, agreement_id: str
                    ) -> tuple[ledger.Entry, str] | None:
    """The chain's last entry with its text as stored."""
    row = db.conn.execute("SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? "
                          "ORDER BY seq DESC LIMIT 1", [participant_id, agreement_id]).fetchone()
    return (_ENTRY.decode(row[0]), str(row[0])) if row else None


class ChainCheck(NamedTuple):
    """What one query reads of a chain before a commit group appends to it (:func:`chain_check`)."""

    #: The agreement's state, if the participant holds it as consumer (None: it does not).
    state: str | None
    #: The text of the chain's last entry (None: no entry).
    last: str | None
    #: The sequence number and text of its last signed head (None: none).
    head_seq: int | None
    head: str | None
    #: How far the provider acknowledged the chain.
    acked: int
    #: Whether an entry is logged under one of the use ids asked about.
    used: bool


def chain_check(db: Database, participant_id: str, agreement_id: str, use_ids: list[str]
                ) -> ChainCheck:
    """The agreement's state, the chain's last entry and last signed head, the provider's acknowledgement and
    whether any of *use_ids* is logged: one statement (a commit group asks it once per chain it appends to)."""
    key = [participant_id, agreement_id]
    # The use ids as a list of values (not a JSON array read by json_each): each is then looked up in the use-id
    # index whatever the planner knows of the table (PostgreSQL without statistics would read the whole chain).
    ids = [i for i in dict.fromkeys(use_ids) if i] or [""]
    marks = ", ".join(f"?{n}" for n in range(4, 4 + len(ids)))
    row = db.conn.execute(
        "SELECT (SELECT state FROM agreements WHERE participant_id = ?1 AND id = ?2 AND role = ?3), "
        "(SELECT entry FROM usage_log WHERE participant_id = ?1 AND agreement_id = ?2 ORDER BY seq DESC LIMIT 1), "
        "(SELECT seq FROM usage_heads WHERE participant_id = ?1 AND agreement_id = ?2 ORDER BY seq DESC LIMIT 1), "
        "(SELECT head FROM usage_heads WHERE participant_id = ?1 AND agreement_id = ?2 ORDER BY seq DESC LIMIT 1), "
        "(SELECT acked_seq FROM receipt_cursors WHERE participant_id = ?1 AND agreement_id = ?2), "
        "EXISTS (SELECT 1 FROM usage_log WHERE participant_id = ?1 AND agreement_id = ?2 AND use_id != '' "
        f"AND use_id IN ({marks}))",
        [*key, Role.CONSUMER.value, *ids]).fetchone()
    return ChainCheck(row[0], row[1], row[2], row[3], int(row[4] or 0), bool(row[5]))


def append_entries(db: Database, participant_id: str, agreement_id: str,
                   entries: list[tuple[ledger.Entry, str]]) -> None:
    """Append *entries* (each with its text, ``encode(entry)``), in order."""
    db.conn.executemany(
        "INSERT INTO usage_log (participant_id, agreement_id, seq, use_id, at, kind, entry) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(participant_id, agreement_id, e.seq, e.use_id, e.at, e.kind, text) for e, text in entries])


def chain(db: Database, participant_id: str, agreement_id: str) -> list[ledger.Entry]:
    return [_ENTRY.decode(r[0]) for r in db.conn.execute(
        "SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? ORDER BY seq",
        [participant_id, agreement_id])]


def entries_of_use(db: Database, participant_id: str, agreement_id: str, use_id: str
                   ) -> list[ledger.Entry]:
    """The entries logged under *use_id* (the use and its re-deliveries), in order."""
    return [_ENTRY.decode(r[0]) for r in db.conn.execute(
        "SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? AND use_id = ? ORDER BY seq",
        [participant_id, agreement_id, use_id])]


def append_entry(db: Database, participant_id: str, agreement_id: str, entry: ledger.Entry) -> None:
    db.conn.execute(
        "INSERT INTO usage_log (participant_id, agreement_id, seq, use_id, at, kind, entry) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [participant_id, agreement_id, entry.seq, entry.use_id, entry.at, entry.kind, encode(entry)])


def last_seq(db: Database, participant_id: str, agreement_id: str) -> int:
    row = db.conn.execute("SELECT MAX(seq) FROM usage_log WHERE participant_id = ? AND agreement_id = ?",
                          [participant_id, agreement_id]).fetchone()
    return int(row[0]) if row and row[0] else 0


def chains(db: Database) -> list[Key]:
    """Every chain with entries, a signed head or a receipt cursor (one acknowledged by a provider)."""
    return [(str(r[0]), str(r[1])) for r in db.conn.execute(
        "SELECT DISTINCT participant_id, agreement_id FROM usage_log UNION "
        "SELECT DISTINCT participant_id, agreement_id FROM usage_heads UNION "
        "SELECT participant_id, agreement_id FROM receipt_cursors")]


def last_signed_head(db: Database, participant_id: str, agreement_id: str) -> tuple[int, str] | None:
    """The sequence number and text of the chain's last signed head."""
    row = db.conn.execute("SELECT seq, head FROM usage_heads WHERE participant_id = ? AND agreement_id = ? "
                          "ORDER BY seq DESC LIMIT 1", [participant_id, agreement_id]).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def save_head(db: Database, participant_id: str, agreement_id: str, seq: int, text: str) -> None:
    db.conn.execute("INSERT OR REPLACE INTO usage_heads (participant_id, agreement_id, seq, head) VALUES (?, ?, ?, ?)",
                    [participant_id, agreement_id, seq, text])


def head_at(db: Database, participant_id: str, agreement_id: str, seq: int) -> dict[str, Any] | None:
    row = db.conn.execute("SELECT head FROM usage_heads WHERE participant_id = ? AND agreement_id = ? AND seq = ?",
                          [participant_id, agreement_id, seq]).fetchone()
    return dict(msgspec.json.decode(row[0])) if row else None


def signed_heads(db: Database, participant_id: str, agreement_id: str, *, after: int = 0) -> list[str]:
    """The texts of the chain's signed heads after entry *after*, in order."""
    return [str(r[0]) for r in db.conn.execute(
        "SELECT head FROM usage_heads WHERE participant_id = ? AND agreement_id = ? AND seq > ? ORDER BY seq",
        [participant_id, agreement_id, after])]


def entry_texts(db: Database, participant_id: str, agreement_id: str, after: int, through: int
                ) -> list[str]:
    """The texts of the entries after *after* up to *through*, in order (what a receipt batch carries)."""
    return [str(r[0]) for r in db.conn.execute(
        "SELECT entry FROM usage_log WHERE participant_id = ? AND agreement_id = ? AND seq > ? AND seq <= ? "
        "ORDER BY seq", [participant_id, agreement_id, after, through])]


# duties on schedule

def schedule_duty(db: Database, participant_id: str, agreement_id: str, kind: str, due_at: float
                  ) -> None:
    """Schedule a duty; the earliest deadline of one not yet done wins. One done already is due again (a deletion
    carried out, and the agreement's data received and used again since)."""
    db.conn.execute(
        "INSERT INTO scheduled_duties (participant_id, agreement_id, kind, due_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (participant_id, agreement_id, kind) DO UPDATE SET "
        "due_at = CASE WHEN scheduled_duties.done_at IS NULL THEN MIN(scheduled_duties.due_at, excluded.due_at) "
        "ELSE excluded.due_at END, done_at = NULL",
        [participant_id, agreement_id, kind, due_at])


def duty_done(db: Database, participant_id: str, agreement_id: str, kind: str, at: str) -> None:
    db.conn.execute("UPDATE scheduled_duties SET done_at = ? WHERE participant_id = ? AND agreement_id = ? "
                    "AND kind = ?", [at, participant_id, agreement_id, kind])


def duties_due(db: Database) -> list[tuple[str, str, str, float]]:
    """Every duty not yet done, earliest first: (participant id, agreement id, kind, due at)."""
    return [(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in db.conn.execute(
        "SELECT participant_id, agreement_id, kind, due_at FROM scheduled_duties WHERE done_at IS NULL "
        "ORDER BY due_at")]


# how far the provider acknowledged (the consumer's receipt cursor)

def acked_seq(db: Database, participant_id: str, agreement_id: str) -> int:
    row = db.conn.execute("SELECT acked_seq FROM receipt_cursors WHERE participant_id = ? AND agreement_id = ?",
                          [participant_id, agreement_id]).fetchone()
    return int(row[0]) if row and row[0] else 0


def acknowledgement(db: Database, participant_id: str, agreement_id: str) -> dict[str, Any] | None:
    """The provider's signed acknowledgement kept with the cursor, if any."""
    row = db.conn.execute("SELECT ack FROM receipt_cursors WHERE participant_id = ? AND agreement_id = ?",
                          [participant_id, agreement_id]).fetchone()
    return dict(msgspec.json.decode(row[0])) if row and row[0] else None


def set_cursor(db: Database, participant_id: str, agreement_id: str, acked: int, ack: str | None
               ) -> None:
    """Move the cursor to *acked*, clear the last error, keep *ack* (or the one kept before, if None)."""
    db.conn.execute(
        "INSERT INTO receipt_cursors (participant_id, agreement_id, acked_seq, last_error, ack) "
        "VALUES (?, ?, ?, '', ?) ON CONFLICT (participant_id, agreement_id) DO UPDATE SET "
        "acked_seq = excluded.acked_seq, last_error = '', ack = COALESCE(excluded.ack, receipt_cursors.ack)",
        [participant_id, agreement_id, acked, ack])


def set_cursor_error(db: Database, participant_id: str, agreement_id: str, error: str) -> None:
    db.conn.execute(
        "INSERT INTO receipt_cursors (participant_id, agreement_id, last_error) VALUES (?, ?, ?) "
        "ON CONFLICT (participant_id, agreement_id) DO UPDATE SET last_error = excluded.last_error",
        [participant_id, agreement_id, error])


def unacknowledged(db: Database) -> list[Key]:
    """Every chain with entries its provider has not acknowledged."""
    return [(str(r[0]), str(r[1])) for r in db.conn.execute(
        "SELECT l.participant_id, l.agreement_id FROM usage_log l "
        "LEFT JOIN receipt_cursors c ON c.participant_id = l.participant_id AND c.agreement_id = l.agreement_id "
        "GROUP BY l.participant_id, l.agreement_id HAVING MAX(l.seq) > COALESCE(MAX(c.acked_seq), 0)")]


# -- the provider's received receipts ---------------------------------------------------------------------

def received_texts(db: Database, key: Key) -> dict[int, str]:
    """The entries received for the agreement, by sequence number (as received)."""
    return {int(r[0]): str(r[1]) for r in db.conn.execute(
        "SELECT seq, entry FROM received_entries WHERE participant_id = ? AND agreement_id = ?", key)}


def received_chain(db: Database, key: Key) -> list[ledger.Entry]:
    return [_ENTRY.decode(r[0]) for r in db.conn.execute(
        "SELECT entry FROM received_entries WHERE participant_id = ? AND agreement_id = ? ORDER BY seq", key)]


def received_entry(db: Database, key: Key, seq: int) -> ledger.Entry | None:
    row = db.conn.execute("SELECT entry FROM received_entries WHERE participant_id = ? AND agreement_id = ? "
                          "AND seq = ?", [*key, seq]).fetchone()
    return _ENTRY.decode(row[0]) if row else None


def add_received_entry(db: Database, key: Key, entry: ledger.Entry, received_at: str) -> None:
    db.conn.execute("INSERT INTO received_entries (participant_id, agreement_id, seq, entry, received_at) "
                    "VALUES (?, ?, ?, ?, ?)", [*key, entry.seq, encode(entry), received_at])


def put_received_head(db: Database, key: Key, seq: int, head: dict[str, Any]) -> None:
    db.conn.execute("INSERT OR REPLACE INTO received_heads (participant_id, agreement_id, seq, head) "
                    "VALUES (?, ?, ?, ?)", [*key, seq, encode(head)])


def received_heads(db: Database, key: Key) -> list[dict[str, Any]]:
    return [msgspec.json.decode(r[0]) for r in db.conn.execute(
        "SELECT head FROM received_heads WHERE participant_id = ? AND agreement_id = ? ORDER BY seq", key)]


def last_received_at(db: Database, key: Key) -> str | None:
    row = db.conn.execute("SELECT MAX(received_at) FROM received_entries WHERE participant_id = ? "
                          "AND agreement_id = ?", key).fetchone()
    return str(row[0]) if row and row[0] is not None else None


def add_anomaly(db: Database, key: Key, at: str, kind: str, detail: str, *, cap: int) -> None:
    """Record an anomaly once (the same kind and detail again adds nothing), and only while the agreement
    has fewer than *cap* (a peer cannot grow the table without bound by varying the details)."""
    db.conn.execute("INSERT OR IGNORE INTO receipt_anomalies (participant_id, agreement_id, at, kind, detail) "
                    "SELECT ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM receipt_anomalies WHERE participant_id = ? "
                    "AND agreement_id = ?) < ?", [*key, at, kind, detail, *key, cap])


def anomalies(db: Database, key: Key) -> list[dict[str, Any]]:
    return [{"at": r[0], "kind": r[1], "detail": r[2]} for r in db.conn.execute(
        "SELECT at, kind, detail FROM receipt_anomalies WHERE participant_id = ? AND agreement_id = ? "
        "ORDER BY rowid", key)]


# -- revocations ------------------------------------------------------------------------------------------

def add_revocation(db: Database, participant_id: str, agreement_id: str, reason: str, at: str) -> None:
    """The provider's revocation, pending delivery (a second one of the same agreement adds nothing)."""
    db.conn.execute("INSERT OR IGNORE INTO revocations (participant_id, agreement_id, role, reason, revoked_at, "
                    "status) VALUES (?, ?, 'provider', ?, ?, 'pending')", [participant_id, agreement_id, reason, at])


def applied_revocation(db: Database, participant_id: str, agreement_id: str, reason: str, at: str,
                       receipt: str) -> None:
    """The consumer's record of a revocation it carried out, with its deletion receipt."""
    db.conn.execute("INSERT OR REPLACE INTO revocations (participant_id, agreement_id, role, reason, revoked_at, "
                    "status, receipt) VALUES (?, ?, 'consumer', ?, ?, 'applied', ?)",
                    [participant_id, agreement_id, reason, at, receipt])


def received_revocation(db: Database, participant_id: str, agreement_id: str, reason: str, at: str
                        ) -> None:
    """The consumer's record of a revocation as it arrives, before the data is deleted, so that its reason is
    shown from the moment use is blocked (:func:`applied_revocation` completes it with the deletion receipt)."""
    db.conn.execute("INSERT OR IGNORE INTO revocations (participant_id, agreement_id, role, reason, revoked_at, "
                    "status) VALUES (?, ?, 'consumer', ?, ?, 'received')", [participant_id, agreement_id, reason, at])


def endings(db: Database, participant_id: str, agreement_id: str | None = None
            ) -> dict[str, dict[str, Any]]:
    """How the participant's agreements (or the one *agreement_id*) were revoked or lost their data: per
    agreement id, ``revocation`` (reason, revokedAt, status) and ``dataDeleted`` (at, reason: the last deletion
    on this node, on schedule or after a revocation), each only where there is one. Two indexed reads, not
    the usage log (which may be long)."""
    only, params = ("", [participant_id]) if agreement_id is None else (" AND agreement_id = ?",
                                                                         [participant_id, agreement_id])
    out: dict[str, dict[str, Any]] = {}
    for aid, reason, at, status in db.conn.execute(
            f"SELECT agreement_id, reason, revoked_at, status FROM revocations WHERE participant_id = ?{only}",
            params):
        out.setdefault(aid, {})["revocation"] = {"reason": reason, "revokedAt": at, "status": status}
        if status == "applied":  # the consumer deleted the data as it applied the revocation
            out[aid]["dataDeleted"] = {"at": at, "reason": "after the provider's revocation"}
    for aid, at in db.conn.execute(
            "SELECT agreement_id, done_at FROM scheduled_duties WHERE participant_id = ? AND kind = 'delete' "
            f"AND done_at IS NOT NULL{only}", params):
        earlier = out.get(aid, {}).get("dataDeleted")
        if earlier is None or str(at) > str(earlier["at"]):
            out.setdefault(aid, {})["dataDeleted"] = {"at": at, "reason": "on schedule (a deletion duty of the "
                                                                         "agreement's policy)"}
    return out


def revocation(db: Database, participant_id: str, agreement_id: str) -> dict[str, Any] | None:
    """The agreement's revocation: reason, revokedAt, status and the deletion receipt (decoded, or None)."""
    row = db.conn.execute("SELECT reason, revoked_at, status, receipt FROM revocations WHERE participant_id = ? "
                          "AND agreement_id = ?", [participant_id, agreement_id]).fetchone()
    if row is None:
        return None
    return {"reason": row[0], "revokedAt": row[1], "status": row[2],
            "deletionReceipt": msgspec.json.decode(row[3]) if row[3] else None}


def pending_revocations(db: Database) -> list[Key]:
    """The provider's revocations not yet acknowledged by the consumer."""
    return [(str(r[0]), str(r[1])) for r in db.conn.execute(
        "SELECT participant_id, agreement_id FROM revocations WHERE role = 'provider' AND status = 'pending'")]


def revocation_attempted(db: Database, participant_id: str, agreement_id: str) -> None:
    db.conn.execute("UPDATE revocations SET attempts = attempts + 1 WHERE participant_id = ? AND agreement_id = ?",
                    [participant_id, agreement_id])


def revocation_answered(db: Database, participant_id: str, agreement_id: str, status: str,
                        receipt: str | None) -> None:
    db.conn.execute("UPDATE revocations SET status = ?, receipt = ? WHERE participant_id = ? AND agreement_id = ?",
                    [status, receipt, participant_id, agreement_id])


class UsageRepository:
    """Runs the usage log's and the receipts' jobs on the store: :meth:`write` and :meth:`read` take a
    function of ``db`` that calls this module's functions (one transaction, one snapshot), and
    :meth:`before_commit` adds a hook that runs once per commit group inside its transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def write(self, job: Callable[[Database], T], *, durable: bool = False) -> T:
        """Run *job* on the writer thread in a transaction; ``durable``: committed with an fsync."""
        return await self.store.write(job, durable=durable)

    def submit(self, job: Callable[[Database], T], *, durable: bool = False) -> asyncio.Future[T]:
        """:meth:`write`, waited for by a callback: the future settled once *job* is committed (or failed)."""
        return self.store.submit(job, durable=durable)

    async def read(self, job: Callable[[Database], T]) -> T:
        return await self.store.read(job)

    async def snapshot(self, job: Callable[[Database], T]) -> T:
        """Run *job* on a reader in one read transaction (:meth:`Store.snapshot`)."""
        return await self.store.snapshot(job)

    def before_commit(self, hook: Callable[[Database], None]) -> None:
        """Run *hook* on the writer thread at the end of every commit group, before its COMMIT."""
        self.store.batch_hooks.append(hook)

    async def log_of(self, participant_id: str, agreement_id: str
                     ) -> tuple[list[ledger.Entry], list[dict[str, Any]], dict[str, Any] | None]:
        """The chain, its signed heads and the provider's acknowledgement, from one snapshot."""

        def query(db: Database) -> tuple[list[ledger.Entry], list[dict[str, Any]],
                                                      dict[str, Any] | None]:
            heads = [msgspec.json.decode(h) for h in signed_heads(db, participant_id, agreement_id)]
            return chain(db, participant_id, agreement_id), heads, acknowledgement(db, participant_id, agreement_id)

        return await self.read(query)

    async def chain(self, participant_id: str, agreement_id: str) -> list[ledger.Entry]:
        return await self.read(lambda db: chain(db, participant_id, agreement_id))

    async def duties_due(self) -> list[tuple[str, str, str, float]]:
        return await self.read(duties_due)

    async def last_seq(self, participant_id: str, agreement_id: str) -> int:
        return await self.read(lambda db: last_seq(db, participant_id, agreement_id))

    async def head_at(self, participant_id: str, agreement_id: str, seq: int) -> dict[str, Any] | None:
        return await self.read(lambda db: head_at(db, participant_id, agreement_id, seq))

    async def set_cursor(self, participant_id: str, agreement_id: str, acked: int, ack: str | None) -> None:
        await self.write(lambda db: set_cursor(db, participant_id, agreement_id, acked, ack))

    async def set_cursor_error(self, participant_id: str, agreement_id: str, error: str) -> None:
        await self.write(lambda db: set_cursor_error(db, participant_id, agreement_id, error))

    async def received_chain(self, key: Key) -> list[ledger.Entry]:
        return await self.read(lambda db: received_chain(db, key))

    async def received_entry(self, key: Key, seq: int) -> ledger.Entry | None:
        return await self.read(lambda db: received_entry(db, key, seq))

    async def revocation(self, participant_id: str, agreement_id: str) -> dict[str, Any] | None:
        return await self.read(lambda db: revocation(db, participant_id, agreement_id))

    async def revocation_attempted(self, participant_id: str, agreement_id: str) -> None:
        await self.write(lambda db: revocation_attempted(db, participant_id, agreement_id))

    async def revocation_answered(self, participant_id: str, agreement_id: str, status: str, receipt: str | None
                                  ) -> None:
        await self.write(lambda db: revocation_answered(db, participant_id, agreement_id, status, receipt))

    async def applied_revocation(self, participant_id: str, agreement_id: str, reason: str, at: str,
                                 receipt: str) -> None:
        await self.write(lambda db: applied_revocation(db, participant_id, agreement_id, reason, at, receipt))
