"""Settlement in SQLite: every query of :mod:`connector.services.settlement`.

Tables (migration 13): ``statements`` — each statement a participant issued (role ``provider``) or received
(role ``consumer``), with its signed document, the signed answer (acceptance or dispute), its state and its
delivery bookkeeping; a unique index keeps one statement per stretch of an agreement that is not disputed, so a
stretch is settled once. ``statement_items`` — the sandbox queries and transfers a statement billed, so that no
query or transfer is billed twice (released again when the statement is disputed). ``sandbox_results`` — the
consumer's signed results of the sandbox queries it asked (its evidence of the queries billed).

Like :mod:`connector.store.usage`: module functions take the writer's (or a reader's) ``db`` and run inside a job
of the caller's; :class:`StatementRepository` runs such jobs. What a statement counts is computed here, in SQL,
over the rows of one agreement (the receipts, the own chain, the transfers): nothing unbounded is loaded.
Times are compared as the text the node writes them in (``…T10:00:00.000000Z``: fixed width, UTC), so that
text order is time order. Every query is scoped by ``participant_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

import msgspec

from connector.store.db import Database, Store

T = TypeVar("T")

PROVIDER = "provider"
CONSUMER = "consumer"
QUERY = "query"
TRANSFER = "transfer"
DISPUTED = "disputed"
ACCEPTED = "accepted"


class StatementRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``statements`` (the document and the answer as the JSON text stored)."""

    participant_id: str
    id: str
    agreement_id: str
    role: str
    state: str
    period_label: str
    period_start: str
    period_end: str
    receipts_last: int = 0
    total: str
    currency: str
    document: str
    answer: str | None = None
    reason: str = ""
    previous_id: str | None = None
    supersedes: str | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    created_at: str
    updated_at: str

    def decoded(self) -> dict[str, Any]:
        found = msgspec.json.decode(self.document)
        return found if isinstance(found, dict) else {}

    def decoded_answer(self) -> dict[str, Any] | None:
        if not self.answer:
            return None
        found = msgspec.json.decode(self.answer)
        return found if isinstance(found, dict) else None


class ListedRow(msgspec.Struct, frozen=True, kw_only=True):
    """What a listing shows of a statement: its row without the document, and the parts of the document a summary
    needs (read in SQL: a statement's document may list thousands of queries)."""

    id: str
    agreement_id: str
    role: str
    state: str
    period_label: str
    period_start: str
    period_end: str
    total: str
    currency: str
    reason: str
    updated_at: str
    counterparty: str | None
    lines: str | None
    share: str | None
    issued: str | None


_COLUMNS = tuple(StatementRow.__struct_fields__)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM statements"


def _rows(cursor: Any) -> Iterator[StatementRow]:
    for row in cursor:
        yield StatementRow(**dict(zip(_COLUMNS, row, strict=True)))


def _one(db: Database, where: str, params: list[Any]) -> StatementRow | None:
    return next(_rows(db.conn.execute(f"{_SELECT} WHERE {where} LIMIT 1", params)), None)


# -- statements -------------------------------------------------------------------------------------------------

def get(db: Database, participant_id: str, statement_id: str) -> StatementRow | None:
    return _one(db, "participant_id = ? AND id = ?", [participant_id, statement_id])


def last_settled(db: Database, participant_id: str, agreement_id: str, role: str
                ) -> StatementRow | None:
    """The agreement's statement that ends last among those not disputed (the one the next statement follows)."""
    return _one(db, "participant_id = ? AND agreement_id = ? AND role = ? AND state != ? "
                    "ORDER BY period_end DESC, created_at DESC", [participant_id, agreement_id, role, DISPUTED])


def latest(db: Database, participant_id: str, agreement_id: str, role: str) -> StatementRow | None:
    """The agreement's statement made last, whatever its state."""
    return _one(db, "participant_id = ? AND agreement_id = ? AND role = ? ORDER BY created_at DESC, rowid DESC",
                [participant_id, agreement_id, role])


def disputed_from(db: Database, participant_id: str, agreement_id: str, role: str, period_start: str
                 ) -> str | None:
    """The id of the last disputed statement for the stretch that starts at *period_start* (what a new statement
    for that stretch supersedes)."""
    row = db.conn.execute(
        "SELECT id FROM statements WHERE participant_id = ? AND agreement_id = ? AND role = ? AND state = ? "
        "AND period_start = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
        [participant_id, agreement_id, role, DISPUTED, period_start]).fetchone()
    return str(row[0]) if row else None


def accepted_overlap(db: Database, participant_id: str, agreement_id: str, role: str, start: str,
                     end: str) -> StatementRow | None:
    """An accepted statement of the agreement whose period overlaps [*start*, *end*) (a second settlement)."""
    return _one(db, "participant_id = ? AND agreement_id = ? AND role = ? AND state = ? AND period_start < ? "
                    "AND period_end > ?", [participant_id, agreement_id, role, ACCEPTED, end, start])


def count_for(db: Database, participant_id: str, agreement_id: str) -> int:
    row = db.conn.execute("SELECT COUNT(*) FROM statements WHERE participant_id = ? AND agreement_id = ?",
                          [participant_id, agreement_id]).fetchone()
    return int(row[0])


def insert(db: Database, row: StatementRow) -> None:
    """Add *row* (raises ``sqlite3.IntegrityError`` for a stretch already settled, or an id held already)."""
    data = msgspec.structs.asdict(row)
    db.conn.execute(f"INSERT INTO statements ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    [data[c] for c in _COLUMNS])


def update(db: Database, participant_id: str, statement_id: str, **columns: Any) -> None:
    """Set *columns* of the statement (names of :class:`StatementRow` fields)."""
    unknown = set(columns) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"not columns of statements: {sorted(unknown)}")
    names = sorted(columns)
    db.conn.execute(f"UPDATE statements SET {', '.join(f'{n} = ?' for n in names)} WHERE participant_id = ? "
                    "AND id = ?", [*(columns[n] for n in names), participant_id, statement_id])


def attempted(db: Database, participant_id: str, statement_id: str, next_at: float | None,
              reason: str) -> None:
    """A delivery failed: count it, keep why, and when to try again (None: not again)."""
    db.conn.execute("UPDATE statements SET attempts = attempts + 1, next_attempt_at = ?, reason = ? "
                    "WHERE participant_id = ? AND id = ?", [next_at, reason, participant_id, statement_id])


def pending_deliveries(db: Database) -> list[tuple[str, str]]:
    """Every statement (provider) or answer (consumer) still to be delivered: (participant id, statement id)."""
    return [(str(r[0]), str(r[1])) for r in db.conn.execute(
        "SELECT participant_id, id FROM statements WHERE next_attempt_at IS NOT NULL ORDER BY next_attempt_at")]


def add_items(db: Database, participant_id: str, agreement_id: str, statement_id: str, kind: str,
              item_ids: Collection[str]) -> None:
    """Record the queries or transfers *statement_id* billed (raises ``IntegrityError`` for one billed before)."""
    db.conn.executemany(
        "INSERT INTO statement_items (participant_id, agreement_id, kind, item_id, statement_id) "
        "VALUES (?, ?, ?, ?, ?)", [(participant_id, agreement_id, kind, i, statement_id) for i in item_ids])


def release_items(db: Database, participant_id: str, statement_id: str) -> None:
    """A disputed statement bills nothing: its queries and transfers may be billed again."""
    db.conn.execute("DELETE FROM statement_items WHERE participant_id = ? AND statement_id = ?",
                    [participant_id, statement_id])


# -- the provider's evidence ------------------------------------------------------------------------------------

def receipt_range(db: Database, participant_id: str, agreement_id: str, *, after: int, before: str
                 ) -> tuple[int, int, str, int] | None:
    """The consumer's usage log as received (``received_entries``) from entry *after* + 1 on, as long as the entries
    follow one another and were logged before *before*: (first, last, the last one's hash, permitted uses), or None
    when there is no such entry (``connector.protocol.statements.receipt_range``, in SQL)."""
    row = db.conn.execute(
        "SELECT MIN(seq), MAX(seq), SUM(permitted) FROM ("
        "SELECT seq, CASE WHEN json_extract(entry, '$.kind') = 'use' AND json_extract(entry, '$.decision') = "
        "'permit' THEN 1 ELSE 0 END AS permitted, ROW_NUMBER() OVER w AS n, "
        "MAX(CASE WHEN json_extract(entry, '$.at') >= ?4 THEN 1 ELSE 0 END) OVER w AS late "
        "FROM received_entries WHERE participant_id = ?1 AND agreement_id = ?2 AND seq > ?3 "
        "WINDOW w AS (ORDER BY seq ROWS UNBOUNDED PRECEDING)) AS entries WHERE seq - ?3 = n AND late = 0",
        [participant_id, agreement_id, after, before]).fetchone()
    if row is None or row[0] is None:
        return None
    head = db.conn.execute("SELECT json_extract(entry, '$.hash') FROM received_entries WHERE participant_id = ? "
                           "AND agreement_id = ? AND seq = ?", [participant_id, agreement_id, row[1]]).fetchone()
    return int(row[0]), int(row[1]), str(head[0]), int(row[2] or 0)


def unbilled_queries(db: Database, participant_id: str, agreement_id: str, *, before: str,
                     application: str, action: str, limit: int) -> list[str]:
    """The ids of the queries the participant's own chain for the agreement logged as permitted before *before*,
    that the sandbox did not stop (no ``failed`` entry) and that no statement billed yet, oldest first."""
    return [str(r[0]) for r in db.conn.execute(
        "SELECT l.use_id FROM usage_log l WHERE l.participant_id = ?1 AND l.agreement_id = ?2 AND l.kind = 'use' "
        "AND l.use_id != '' AND l.at < ?3 AND json_extract(l.entry, '$.decision') = 'permit' "
        "AND json_extract(l.entry, '$.application') = ?4 AND json_extract(l.entry, '$.action') = ?5 "
        "AND NOT EXISTS (SELECT 1 FROM usage_log f WHERE f.participant_id = ?1 AND f.agreement_id = ?2 "
        "AND f.use_id = l.use_id AND f.kind = 'failed') "
        "AND NOT EXISTS (SELECT 1 FROM statement_items i WHERE i.participant_id = ?1 AND i.agreement_id = ?2 "
        "AND i.kind = 'query' AND i.item_id = l.use_id) ORDER BY l.seq LIMIT ?6",
        [participant_id, agreement_id, before, application, action, limit])]


def unbilled_transfers(db: Database, participant_id: str, agreement_id: str, *, role: str,
                       before: str | None, limit: int, only: Collection[str] | None = None) -> dict[str, int]:
    """The participant's transfers of the agreement in *role* that COMPLETED (before *before*, if given) and that
    no statement billed yet (*only*: of these provider process ids): provider process id → bytes."""
    sql = ("SELECT t.provider_pid, t.size FROM transfers t WHERE t.participant_id = ?1 AND t.agreement_id = ?2 "
           "AND t.role = ?3 AND t.state = 'COMPLETED' AND t.size IS NOT NULL AND t.provider_pid IS NOT NULL "
           "AND NOT EXISTS (SELECT 1 FROM statement_items i WHERE i.participant_id = ?1 AND i.agreement_id = ?2 "
           "AND i.kind = 'transfer' AND i.item_id = t.provider_pid)")
    params: list[Any] = [participant_id, agreement_id, role]
    if before is not None:
        sql += f" AND t.updated_at < ?{len(params) + 1}"
        params.append(before)
    if only is not None:
        sql += f" AND t.provider_pid IN (SELECT value FROM json_each(?{len(params) + 1}))"
        params.append(msgspec.json.encode(sorted(only)).decode())
    sql += f" ORDER BY t.updated_at LIMIT ?{len(params) + 1}"
    params.append(limit)
    return {str(r[0]): int(r[1]) for r in db.conn.execute(sql, params)}


# -- the consumer's own records ---------------------------------------------------------------------------------

def own_range(db: Database, participant_id: str, agreement_id: str, first: int, last: int
             ) -> tuple[str, int] | None:
    """The participant's own usage log over entries *first*..*last*: the hash of entry *last* and the permitted uses
    among them; None when it holds no entry *last*."""
    head = db.conn.execute("SELECT json_extract(entry, '$.hash') FROM usage_log WHERE participant_id = ? "
                           "AND agreement_id = ? AND seq = ?", [participant_id, agreement_id, last]).fetchone()
    if head is None:
        return None
    uses = db.conn.execute(
        "SELECT COUNT(*) FROM usage_log WHERE participant_id = ? AND agreement_id = ? AND seq >= ? AND seq <= ? "
        "AND kind = 'use' AND json_extract(entry, '$.decision') = 'permit'",
        [participant_id, agreement_id, first, last]).fetchone()
    return str(head[0]), int(uses[0])


def own_uses(db: Database, participant_id: str, agreement_id: str, *, after: int, before: str) -> int:
    """The permitted uses the participant's own log holds after entry *after*, logged before *before*."""
    row = db.conn.execute(
        "SELECT COUNT(*) FROM usage_log WHERE participant_id = ? AND agreement_id = ? AND seq > ? AND at < ? "
        "AND kind = 'use' AND json_extract(entry, '$.decision') = 'permit'",
        [participant_id, agreement_id, after, before]).fetchone()
    return int(row[0])


def own_queries(db: Database, participant_id: str, agreement_id: str, ids: Collection[str]
               ) -> frozenset[str]:
    """Which of *ids* are queries whose signed result the participant keeps for the agreement, not billed yet."""
    if not ids:
        return frozenset()
    return frozenset(str(r[0]) for r in db.conn.execute(
        "SELECT r.query_id FROM sandbox_results r WHERE r.participant_id = ?1 AND r.agreement_id = ?2 "
        "AND r.query_id IN (SELECT value FROM json_each(?3)) AND NOT EXISTS (SELECT 1 FROM statement_items i "
        "WHERE i.participant_id = ?1 AND i.agreement_id = ?2 AND i.kind = 'query' AND i.item_id = r.query_id)",
        [participant_id, agreement_id, msgspec.json.encode(sorted(ids)).decode()]))


def keep_result(db: Database, participant_id: str, agreement_id: str, query_id: str, at: str,
                document: str) -> None:
    """Keep a verified signed sandbox result (the consumer's evidence of the query); once per query id."""
    db.conn.execute("INSERT OR IGNORE INTO sandbox_results (participant_id, agreement_id, query_id, at, document) "
                    "VALUES (?, ?, ?, ?, ?)", [participant_id, agreement_id, query_id, at, document])


# -- listing and reporting --------------------------------------------------------------------------------------

_LISTED = ("id, agreement_id, role, state, period_label, period_start, period_end, total, currency, reason, "
           "updated_at, CASE role WHEN 'provider' THEN json_extract(document, '$.consumer') "
           "ELSE json_extract(document, '$.provider') END, json_extract(document, '$.lines'), "
           "json_extract(document, '$.share'), json_extract(document, '$.issued')")


def listed(db: Database, participant_id: str, *, agreement_id: str | None = None,
           period: tuple[str, str] | None = None, role: str | None = None, statement_id: str | None = None,
           limit: int = 100) -> list[ListedRow]:
    """The participant's statements, newest first: of one agreement, starting within [*period*), in one role."""
    where, params = ["participant_id = ?"], [participant_id]
    if agreement_id is not None:
        where.append("agreement_id = ?")
        params.append(agreement_id)
    if period is not None:
        where.append("period_start >= ? AND period_start < ?")
        params += list(period)
    if role is not None:
        where.append("role = ?")
        params.append(role)
    if statement_id is not None:
        where.append("id = ?")
        params.append(statement_id)
    cursor = db.conn.execute(f"SELECT {_LISTED} FROM statements WHERE {' AND '.join(where)} "
                             "ORDER BY created_at DESC, rowid DESC LIMIT ?", [*params, limit])
    return [ListedRow(**dict(zip(ListedRow.__struct_fields__, row, strict=True))) for row in cursor]


def accepted_amounts(db: Database, period: tuple[str, str] | None
                    ) -> Iterator[tuple[str, str, str, str, str | None]]:
    """Every accepted statement of the node (starting within [*period*), if given): (participant id, role,
    currency, total, the platform's amount or None). Read row by row."""
    sql = ("SELECT participant_id, role, currency, total, json_extract(document, '$.share.platformAmount') "
           "FROM statements WHERE state = ?")
    params: list[Any] = [ACCEPTED]
    if period is not None:
        sql += " AND period_start >= ? AND period_start < ?"
        params += list(period)
    for row in db.conn.execute(sql, params):
        yield str(row[0]), str(row[1]), str(row[2]), str(row[3]), None if row[4] is None else str(row[4])


def provider_agreements(db: Database, state: str) -> list[tuple[str, str, str, str | None, str | None]]:
    """Every agreement held as provider in *state* that states a price, with the end of its last statement not
    disputed and the state of its last statement: (participant id, agreement id, agreement JSON, end or None, state
    or None)."""
    return [(str(r[0]), str(r[1]), str(r[2]), r[3], r[4]) for r in db.conn.execute(
        "SELECT a.participant_id, a.id, a.agreement, "
        "(SELECT s.period_end FROM statements s WHERE s.participant_id = a.participant_id AND s.agreement_id = a.id "
        "AND s.role = 'provider' AND s.state != 'disputed' ORDER BY s.period_end DESC LIMIT 1), "
        "(SELECT s.state FROM statements s WHERE s.participant_id = a.participant_id AND s.agreement_id = a.id "
        "AND s.role = 'provider' ORDER BY s.created_at DESC, s.rowid DESC LIMIT 1) "
        # Only an agreement with a price can owe a statement (a compensate duty): the others are not read.
        "FROM agreements a WHERE a.role = 'provider' AND a.state = ? AND a.agreement LIKE '%compensate%'", [state])]


class StatementRepository:
    """Runs this module's jobs on the store: :meth:`write` and :meth:`read` take a function of ``db``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def write(self, job: Callable[[Database], T], *, durable: bool = False) -> T:
        return await self.store.write(job, durable=durable)

    async def read(self, job: Callable[[Database], T]) -> T:
        return await self.store.read(job)

    async def snapshot(self, job: Callable[[Database], T]) -> T:
        """*job* on a reader in one read transaction (:meth:`Store.snapshot`)."""
        return await self.store.snapshot(job)

    async def get(self, participant_id: str, statement_id: str) -> StatementRow | None:
        return await self.read(lambda db: get(db, participant_id, statement_id))
