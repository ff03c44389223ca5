"""The repositories: with :mod:`connector.store.usage` (the usage log and receipts), the node's only way to
the database.

:class:`SqliteRepository` holds participants, management tokens, the nonce cache and verified peers
(:class:`Repository` is its interface, a Protocol, so a PostgreSQL backend can follow);
:class:`ContractRepository` the catalog entries, negotiations and agreements; :class:`TransferRepository`
the transfer processes and manifests. Every query that touches business data is scoped by
``participant_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import msgspec

from connector.errors import Conflict
from connector.protocol import ids
from connector.protocol.agreement_lifecycle import EVER_IN_FORCE, NEVER_IN_FORCE, AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.negotiation import State as NegotiationState
from connector.protocol.transfer import State as TransferState
from connector.store.db import Database, Store
from connector.store.records import (
    AgreementRecord,
    Asset,
    ContractDefinition,
    NegotiationEvent,
    NegotiationRecord,
    PolicyRecord,
    TransferRecord,
    from_row,
    to_row,
)


class Participant(msgspec.Struct, frozen=True):
    id: str
    name: str
    did: str
    legal_name: str
    region: str
    industry: str = ""
    contact: str = ""
    created_at: str = ""
    #: True when the participant brought its own DID instead of a did:web under the node.
    brought_did: bool = False
    #: When the node's operator suspended it (None: it is served), and why.
    suspended_at: str | None = None
    suspended_reason: str = ""
    #: The host's share (a percentage, written plainly: "10") of what the participant earns as a provider under
    #: post-paid prices (None: none); set by the node's operator.
    platform_share: str | None = None


def _participant(row: dict[str, Any]) -> Participant:
    return Participant(**{**row, "brought_did": bool(row.get("brought_did", 0))})


class Token(msgspec.Struct, frozen=True):
    participant_id: str | None
    application: str
    admin: bool
    id: str = ""

    @property
    def metrics_only(self) -> bool:
        """A metrics token: it names no participant and is not the admin token, and reads only ``/metrics``."""
        return self.participant_id is None and not self.admin


class TokenInfo(msgspec.Struct, frozen=True):
    """A management token as it is listed: never its value, which is shown once when it is created."""

    id: str
    application: str
    created_at: str
    revoked_at: str | None = None


class Peer(msgspec.Struct, frozen=True):
    did: str
    legal_name: str
    region: str
    industry: str
    dsp_endpoint: str
    verified_at: str


#: One line of a process's history: (kind, detail).
Event = tuple[str, str]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_PEER_FIELDS = "did, legal_name, region, industry, dsp_endpoint, verified_at"


class Repository(Protocol):
    async def add_participant(self, participant: Participant, *, first_token: str | None = None) -> None: ...
    async def participants(self) -> list[Participant]: ...
    async def participant_by_name(self, name: str) -> Participant | None: ...
    async def add_token(self, token: str, participant_id: str | None, application: str, *, admin: bool,
                        now: str) -> str: ...
    async def find_token(self, token: str) -> Token | None: ...
    async def find_token_hash(self, digest: str) -> Token | None: ...
    async def remember_nonce(self, key_id: str, nonce: str, expires_at: int, now: int) -> bool: ...
    async def claim_nonce(self, key_id: str, nonce: str, expires_at: int, now: int
                          ) -> asyncio.Future[bool] | None: ...
    async def save_peer(self, participant_id: str, peer: Peer, self_description: dict[str, Any]) -> None: ...
    async def peers(self, participant_id: str) -> list[Peer]: ...
    async def peer(self, participant_id: str, did: str) -> Peer | None: ...


class SqliteRepository:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._nonce_inserts = 0
        #: Nonces claimed (:meth:`claim_nonce`) whose rows are not committed yet.
        self._claimed: set[tuple[str, str]] = set()

    # participants

    async def add_participant(self, participant: Participant, *, first_token: str | None = None) -> None:
        """Add a participant and, in the same transaction, its first management token (application "cli")."""
        row = msgspec.structs.asdict(participant)

        def insert(db: Database) -> None:
            add_participant_sync(db, row)
            if first_token is not None:
                add_token_sync(db, first_token, participant.id, "cli", False, participant.created_at)

        await self.store.write(insert)

    async def participants(self) -> list[Participant]:
        def query(db: Database) -> list[Participant]:
            return [_participant(row) for row in db.query("SELECT * FROM participants ORDER BY created_at, name")]

        return await self.store.read(query)

    async def participant_by_name(self, name: str) -> Participant | None:
        def query(db: Database) -> Participant | None:
            rows = list(db.query("SELECT * FROM participants WHERE name = ?", [name]))
            return _participant(rows[0]) if rows else None

        return await self.store.read(query)

    async def set_suspended(self, participant_id: str, at: str | None, reason: str = "") -> None:
        """Mark a participant suspended since *at* with *reason*, or (``at=None``) served again; durable."""

        def update(db: Database) -> None:
            db.execute("UPDATE participants SET suspended_at = ?, suspended_reason = ? WHERE id = ?",
                       [at, reason if at is not None else "", participant_id])

        await self.store.write(update, durable=True)

    async def set_platform_share(self, participant_id: str, percent: str | None) -> None:
        """The host's share of what the participant earns as a provider (None: none); durable."""

        def update(db: Database) -> None:
            db.execute("UPDATE participants SET platform_share = ? WHERE id = ?", [percent, participant_id])

        await self.store.write(update, durable=True)

    async def delete_participant(self, participant_id: str) -> int:
        """Delete a participant's rows from every table with a ``participant_id`` column, then the participant
        itself, in one durable transaction; return how many rows went. The tables are read from the schema, so
        a table a later migration adds is included without a change here."""

        def delete(db: Database) -> int:
            removed = 0
            for table in tables_with_column(db, "participant_id"):
                removed += db.execute(f'DELETE FROM "{table}" WHERE participant_id = ?', [participant_id]).rowcount
            removed += db.execute("DELETE FROM participants WHERE id = ?", [participant_id]).rowcount
            return removed

        return await self.store.write(delete, durable=True)

    # management tokens (stored hashed)

    async def add_token(
        self, token: str, participant_id: str | None, application: str, *, admin: bool, now: str
    ) -> str:
        """Store *token* hashed; return its public id."""
        return await self.store.write(lambda db: add_token_sync(db, token, participant_id, application, admin, now))

    async def tokens(self, participant_id: str) -> list[TokenInfo]:
        """The participant's tokens (revoked ones too, newest first); never the values."""

        def query(db: Database) -> list[TokenInfo]:
            rows = db.query("SELECT id, application, created_at, revoked_at FROM tokens WHERE participant_id = ? "
                            "AND admin = 0 ORDER BY created_at DESC, id", [participant_id])
            return [TokenInfo(**row) for row in rows]

        return await self.store.read(query)

    async def metrics_tokens(self) -> list[TokenInfo]:
        """The node's metrics tokens (revoked ones too, newest first); never the values."""

        def query(db: Database) -> list[TokenInfo]:
            rows = db.query("SELECT id, application, created_at, revoked_at FROM tokens WHERE participant_id IS NULL "
                            "AND admin = 0 ORDER BY created_at DESC, id")
            return [TokenInfo(**row) for row in rows]

        return await self.store.read(query)

    async def revoke_metrics_token(self, token_id: str, now: str) -> bool:
        """Revoke one of the node's metrics tokens; False if there is no such (unrevoked) one."""

        def revoke(db: Database) -> bool:
            cursor = db.execute("UPDATE tokens SET revoked_at = ? WHERE participant_id IS NULL AND id = ? "
                                "AND admin = 0 AND revoked_at IS NULL", [now, token_id])
            return bool(cursor.rowcount)

        return await self.store.write(revoke)

    async def revoke_token(self, participant_id: str, token_id: str, now: str) -> bool:
        """Revoke one of the participant's tokens; False if it has no such (unrevoked) token."""

        def revoke(db: Database) -> bool:
            cursor = db.execute("UPDATE tokens SET revoked_at = ? WHERE participant_id = ? AND id = ? AND admin = 0 "
                                "AND revoked_at IS NULL", [now, participant_id, token_id])
            return bool(cursor.rowcount)

        return await self.store.write(revoke)

    async def find_token(self, token: str) -> Token | None:
        return await self.find_token_hash(token_hash(token))

    async def find_token_hash(self, digest: str) -> Token | None:
        """The live token whose hash (:func:`token_hash`) is *digest*."""

        def query(db: Database) -> Token | None:
            row = db.conn.execute(
                "SELECT id, participant_id, application, admin FROM tokens WHERE hash = ? AND revoked_at IS NULL",
                [digest]).fetchone()
            return None if row is None else Token(row[1], row[2], bool(row[3]), row[0])

        return await self.store.lookup(query)  # one row by its primary key, on every management request

    # RFC 9421 nonce cache: persisted so that a restart does not reopen the validity window

    async def remember_nonce(self, key_id: str, nonce: str, expires_at: int, now: int) -> bool:
        """Record a nonce; False if it was seen before (a replay)."""
        return await self.store.write(self._nonce_insert(key_id, nonce, expires_at, now))

    async def claim_nonce(self, key_id: str, nonce: str, expires_at: int, now: int) -> asyncio.Future[bool] | None:
        """Claim a nonce for one request: None if it was seen before (a replay: committed, or claimed by a request
        still in flight). Otherwise it is claimed at once and its row queued for the next commit; the future says
        when that committed (True).

        On SQLite, what the request itself writes is queued after the nonce, so it never becomes durable without
        it; the caller answers only once the future is done. Meanwhile the request goes on instead of waiting for a
        commit of its own. On PostgreSQL other processes share the store and claim in memories of their own: only
        the committed row settles which copy of a request was first, so this returns once the row is committed
        (None if another process committed it first), before the request has written anything."""
        claim = (key_id, nonce)
        if claim in self._claimed:
            return None
        # Claimed before the lookup, which may wait (PostgreSQL): a copy arriving meanwhile is refused.
        self._claimed.add(claim)
        try:
            seen = await self.store.lookup(
                lambda db: _row(db, "SELECT 1 AS seen FROM seen_nonces WHERE key_id = ? AND nonce = ?",
                                [key_id, nonce]) is not None)
            if seen:
                self._claimed.discard(claim)
                return None
            future = self.store.submit(self._nonce_insert(key_id, nonce, expires_at, now), hold=not self.store.postgres)
        except BaseException:
            self._claimed.discard(claim)
            raise
        future.add_done_callback(lambda _: self._claimed.discard(claim))
        if self.store.postgres and not await future:
            return None
        return future

    def _nonce_insert(self, key_id: str, nonce: str, expires_at: int, now: int) -> Callable[[Database],
                                                                                             bool]:
        self._nonce_inserts += 1
        purge = self._nonce_inserts % 256 == 0

        def insert(db: Database) -> bool:
            if purge:
                db.execute("DELETE FROM seen_nonces WHERE expires_at < ?", [now])
            # A conflict is not an error (it would end a PostgreSQL transaction): the row count says.
            return bool(db.execute(
                "INSERT INTO seen_nonces (key_id, nonce, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id, nonce) DO NOTHING", [key_id, nonce, expires_at]).rowcount == 1)

        return insert

    # peers whose self-description this participant verified

    async def save_peer(self, participant_id: str, peer: Peer, self_description: dict[str, Any]) -> None:
        row = {"participant_id": participant_id, **msgspec.structs.asdict(peer),
               "self_description": msgspec.json.encode(self_description).decode()}

        await self.store.write(lambda db: _insert(db, "peers", row, replace=True))

    async def peers(self, participant_id: str) -> list[Peer]:
        def query(db: Database) -> list[Peer]:
            sql = f"SELECT {_PEER_FIELDS} FROM peers WHERE participant_id = ? ORDER BY did"
            return [Peer(**row) for row in db.query(sql, [participant_id])]

        return await self.store.read(query)

    async def peer(self, participant_id: str, did: str) -> Peer | None:
        """The peer *did* if this participant verified its self-description (a lookup by key)."""

        def query(db: Database) -> Peer | None:
            row = _row(db, f"SELECT {_PEER_FIELDS} FROM peers WHERE participant_id = ? AND did = ?",
                       [participant_id, did])
            return Peer(**row) if row is not None else None

        return await self.store.lookup(query)


class AgreementChange(msgspec.Struct, frozen=True):
    """An agreement's row as a negotiation's move leaves it, and the state the stored row was read in (None:
    there was no row). Written with the move as a compare and set on that state, so a change committed since
    the read (a revocation, say) is never overwritten with a row worked out from the older state."""

    record: AgreementRecord
    read_in: AgreementState | None


class CatalogSnapshot(msgspec.Struct, frozen=True):
    assets: dict[str, Asset]
    policies: dict[str, PolicyRecord]
    definitions: list[ContractDefinition]


_CATALOG_TABLES: dict[type[Any], str] = {
    Asset: "assets",
    PolicyRecord: "policies",
    ContractDefinition: "contract_definitions",
}

#: Agreement states as the queries pass them (sorted: the same SQL and parameters every time).
_EVER_IN_FORCE = sorted(s.value for s in EVER_IN_FORCE)
_NEVER_IN_FORCE = sorted(s.value for s in NEVER_IN_FORCE)


def _in(values: list[str]) -> str:
    """``(?, ?, …)``: one placeholder per value, for ``IN``."""
    return f"({', '.join('?' for _ in values)})"


_CATALOG_NOUNS = {"assets": "asset", "policies": "policy", "contract_definitions": "contract definition"}

#: What still needs a catalog entry: kind of referrer ("offers", "agreements", "negotiations") -> their ids.
EntryReferences = dict[str, list[str]]
#: Negotiation states before the provider signs (from AGREED on, the agreement row names the asset).
_BEFORE_AGREEMENT = sorted(s.value for s in (NegotiationState.REQUESTED, NegotiationState.OFFERED,
                                             NegotiationState.ACCEPTED))


def _references(db: Database, participant_id: str, kind: type[Any], entry_id: str,
                did: str) -> EntryReferences:
    """What of *participant_id*'s still needs entry *entry_id* (see :meth:`ContractRepository.delete_unreferenced`)."""
    found: EntryReferences = {}
    if kind is ContractDefinition:
        return found
    offers = [from_row(ContractDefinition, r) for r in db.query(
        "SELECT * FROM contract_definitions WHERE participant_id = ? ORDER BY id", [participant_id])]
    if kind is PolicyRecord:
        found["offers"] = [d.id for d in offers if entry_id in (d.access_policy_id, d.contract_policy_id)]
    else:
        found["offers"] = [d.id for d in offers if entry_id in d.assets]
        found["agreements"] = [r["id"] for r in db.query(
            "SELECT id, asset_id, provider_did FROM agreements WHERE participant_id = ? AND role = ? AND state != ? "
            "ORDER BY created_at, id", [participant_id, Role.PROVIDER.value, AgreementState.REVOKED.value])
            if ids.local_asset_id(r["provider_did"], r["asset_id"]) == entry_id]
        found["negotiations"] = [r["id"] for r in db.query(
            f"SELECT id, asset_id FROM negotiations WHERE participant_id = ? AND role = ? AND state IN "
            f"{_in(_BEFORE_AGREEMENT)} ORDER BY id", [participant_id, Role.PROVIDER.value, *_BEFORE_AGREEMENT])
            if ids.local_asset_id(did, r["asset_id"]) == entry_id]
    return {k: v for k, v in found.items() if v}


def _require_parts(db: Database, participant_id: str, offer: ContractDefinition) -> None:
    """409 if a policy or an asset *offer* names is gone: deleted since the caller looked."""
    for table, noun, wanted in (("policies", "policy", {offer.access_policy_id, offer.contract_policy_id}),
                                ("assets", "asset", set(offer.assets))):
        have = {r["id"] for r in db.query(f"SELECT id FROM {table} WHERE participant_id = ?", [participant_id])}
        for missing in sorted(wanted - have):
            raise Conflict(f"{noun} {missing!r} was deleted while the offer was being added")


def _row(db: Database, sql: str, params: Sequence[Any]) -> dict[str, Any] | None:
    """The first row *sql* selects, as a dict (None if none): a lookup by key, without ``Database.query``'s
    generator and column de-duplication."""
    cursor = db.conn.execute(sql, params)
    try:
        found = cursor.fetchone()
        return None if found is None else dict(zip([c[0] for c in cursor.description], found, strict=True))
    finally:
        cursor.close()  # ends the statement, and with it the read's hold on the WAL (checkpoints wait for it)


def _drive(row: dict[str, Any], store: Store) -> None:
    """Mark a negotiation's or transfer's row as driven by this process when several share the store: its retries,
    deadlines and own moves are this process's until it dies (``connector.services.leases``)."""
    if store.process_id is not None:
        row["driver"] = store.process_id


def tables_with_column(db: Database, column: str) -> list[str]:
    """The store's tables that have *column*, read from the schema itself: SQLite's ``sqlite_master``, or on
    PostgreSQL (which has none) the catalog of the store's schema."""
    if getattr(db, "dialect_name", "") == "postgresql":
        return [row[0] for row in db.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = ? ORDER BY table_name", [column]).fetchall()]
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()]
    return [table for table in tables
            if column in {row[1] for row in db.execute(f'PRAGMA table_info("{table}")').fetchall()}]


def _insert(db: Database, table: str, row: dict[str, Any], *, replace: bool = False) -> None:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    columns, marks = ", ".join(row), ", ".join("?" for _ in row)
    db.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", list(row.values()))


def _update_in_state(db: Database, table: str, row: dict[str, Any], expected_state: str,
                     skip: Collection[str] = ("participant_id", "id")) -> bool:
    """Write *row* over the row of *table* with its key if that is still in *expected_state* (every column but the
    key and *skip*); whether it was."""
    columns = [k for k in row if k not in skip]
    return bool(db.execute(
        f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE participant_id = ? AND id = ? "
        "AND state = ?", [row[c] for c in columns] + [row["participant_id"], row["id"], expected_state]).rowcount)


#: How many negotiations' rows :class:`ContractRepository` keeps (those committed longest ago go first).
KEPT_NEGOTIATIONS = 4096


class ContractRepository:
    """Catalog entries, negotiations and agreements; every call is scoped to one participant.

    On SQLite, where this process alone writes the store, a negotiation's row as this repository last committed
    it is kept (up to :data:`KEPT_NEGOTIATIONS`, the least recently committed dropped first) and
    :meth:`negotiation` reads it from there: every message of a negotiation reads it, and the read is the costlier
    part of a lookup. Each read decodes the row afresh, as a read of the store does. A write whose outcome is not
    the kept row (a refused compare-and-set, a failure, a purge) drops the key first. Several processes share a
    PostgreSQL store: there nothing is kept, and nothing waits (:meth:`acknowledge`)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._kept: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        #: Rows ahead of the store: a pending message's delivery acknowledged, not yet written (:meth:`acknowledge`).
        self._acknowledged: dict[tuple[str, str], dict[str, Any]] = {}
        #: Participants no longer hosted (:meth:`forget`): nothing of theirs is kept from then on.
        self._gone: set[str] = set()

    def _keep(self, row: dict[str, Any]) -> None:
        if self.store.postgres or row["participant_id"] in self._gone:
            return
        key = (row["participant_id"], row["id"])
        self._kept[key] = row
        self._kept.move_to_end(key)
        while len(self._kept) > KEPT_NEGOTIATIONS:
            self._kept.popitem(last=False)

    def forget(self, participant_id: str) -> None:
        """Drop the kept rows of a participant's negotiations (it is no longer hosted), and keep none of its rows
        from now on: a step of its that was under way as it left (a commit landing, a delivery answered) would
        otherwise put one back after its rows are deleted, for a participant added again under the same name to
        read. Such a participant's negotiations are read from the store (until the node restarts)."""
        self._gone.add(participant_id)
        for rows in (self._kept, self._acknowledged):
            for key in [k for k in rows if k[0] == participant_id]:
                del rows[key]

    def acknowledge(self, record: NegotiationRecord) -> int | None:
        """Take *record*, a negotiation whose pending message the peer acknowledged (the message cleared, nothing
        else changed but the timestamps), as its row without committing it now: the negotiation's next commit
        writes it with its own change (the peer's answer to that message, usually), or
        :meth:`write_acknowledged` does (the caller says when). It is read back at once (:meth:`negotiation`).
        Returns how many such rows wait now.

        Until it is written the store holds the message as pending: lost to a crash, it is delivered once more
        after the restart, which the peer's state table settles (as a message whose answer was lost). None on
        PostgreSQL, and for a participant no longer hosted: the caller commits it itself (another process may read
        the row; the row may be gone)."""
        if self.store.postgres or record.participant_id in self._gone:
            return None
        row = to_row(record)
        self._acknowledged[(record.participant_id, record.id)] = row
        self._keep(row)
        return len(self._acknowledged)

    def acknowledgements_waiting(self) -> int:
        """How many acknowledged deliveries wait to be written (:meth:`acknowledge`)."""
        return len(self._acknowledged)

    async def write_acknowledged(self) -> int:
        """Commit every acknowledged delivery still waiting (:meth:`acknowledge`), in one write; how many rows were
        written. A row whose negotiation moved on meanwhile (another state, or gone) is left as the store has it,
        and no longer read from here. They wait, and are read from here, until the write is done: if it fails they
        wait for the next (the caller says when)."""
        rows = dict(self._acknowledged)
        if not rows:
            return 0

        def update(db: Database) -> set[tuple[str, str]]:
            return {key for key, row in rows.items() if _update_in_state(db, "negotiations", row, row["state"])}

        written = await self.store.write(update)
        for key, row in rows.items():
            # Unless the negotiation's next commit took it up meanwhile (queued after this write: see
            # update_negotiation), or one came since.
            if self._acknowledged.get(key) is row:
                del self._acknowledged[key]
            if key not in written and self._kept.get(key) is row:
                del self._kept[key]
        return len(written)

    def _wait_again(self, key: tuple[str, str], row: dict[str, Any] | None) -> None:
        """An acknowledgement taken up by a commit that did not happen waits again (unless another came since)."""
        if row is not None and key[0] not in self._gone:
            self._acknowledged.setdefault(key, row)

    # catalog entries (assets, policies, contract definitions)

    async def add_entry(self, participant_id: str, record: Asset | PolicyRecord | ContractDefinition) -> None:
        table = _CATALOG_TABLES[type(record)]
        row = to_row(record, participant_id=participant_id)

        def insert(db: Database) -> None:
            if isinstance(record, ContractDefinition):  # checked by the caller; again here, with the write
                _require_parts(db, participant_id, record)
            try:
                _insert(db, table, row)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"{_CATALOG_NOUNS[table]} {record.id!r} already exists", path="id") from exc

        await self.store.write(insert)

    async def replace_asset(self, participant_id: str, asset: Asset) -> None:
        row = to_row(asset, participant_id=participant_id)
        await self.store.write(lambda db: _insert(db, "assets", row, replace=True))

    async def entries(self, participant_id: str, kind: type[Any]) -> list[Any]:
        table = _CATALOG_TABLES[kind]

        def query(db: Database) -> list[Any]:
            rows = db.query(f"SELECT * FROM {table} WHERE participant_id = ? ORDER BY id", [participant_id])
            return [from_row(kind, row) for row in rows]

        return await self.store.read(query)

    async def entry(self, participant_id: str, kind: type[Any], entry_id: str) -> Any | None:
        table = _CATALOG_TABLES[kind]

        def query(db: Database) -> Any | None:
            rows = list(db.query(f"SELECT * FROM {table} WHERE participant_id = ? AND id = ?",
                                 [participant_id, entry_id]))
            return from_row(kind, rows[0]) if rows else None

        return await self.store.lookup(query)  # one row by its primary key (a sandbox query reads its asset)

    async def delete_entry(self, participant_id: str, kind: type[Any], entry_id: str) -> bool:
        table = _CATALOG_TABLES[kind]

        def delete(db: Database) -> bool:
            cursor = db.execute(f"DELETE FROM {table} WHERE participant_id = ? AND id = ?", [participant_id, entry_id])
            return bool(cursor.rowcount)

        return await self.store.write(delete)

    async def delete_unreferenced(self, participant_id: str, kind: type[Any], entry_id: str, *, did: str
                                  ) -> EntryReferences | None:
        """Delete the entry unless something still needs it; what does, and whether it exists, are read in the
        same write, so no offer can start naming it in between. None: no such entry. Empty references: it
        was deleted. Otherwise nothing was deleted.

        A policy is needed by the offers naming it; an asset by the offers listing it, by this participant's
        agreements as provider that are not revoked (their transfers read its data), and by its negotiations as
        provider that have no agreement yet (*did*, the participant's DID, reads the dataset ids they name). An
        offer is needed by nothing: the agreements made under it hold their own copy of its terms."""
        table = _CATALOG_TABLES[kind]

        def delete(db: Database) -> EntryReferences | None:
            if not list(db.query(f"SELECT 1 FROM {table} WHERE participant_id = ? AND id = ?",
                                 [participant_id, entry_id])):
                return None
            found = _references(db, participant_id, kind, entry_id, did)
            if not found:
                db.execute(f"DELETE FROM {table} WHERE participant_id = ? AND id = ?", [participant_id, entry_id])
            return found

        return await self.store.write(delete)

    async def catalog(self, participant_id: str) -> CatalogSnapshot:
        """Everything the catalog needs, in one read (three queries, none per asset)."""

        def query(db: Database) -> CatalogSnapshot:
            def load(kind: type[Any]) -> list[Any]:
                table = _CATALOG_TABLES[kind]
                return [from_row(kind, r) for r in db.query(
                    f"SELECT * FROM {table} WHERE participant_id = ? ORDER BY id", [participant_id])]

            return CatalogSnapshot(
                {a.id: a for a in load(Asset)}, {p.id: p for p in load(PolicyRecord)}, load(ContractDefinition)
            )

        return await self.store.read(query)

    async def offer_parts(self, participant_id: str, definition_id: str, asset_id: str) -> CatalogSnapshot:
        """What a request for *asset_id* under the contract definition *definition_id* is decided on: the
        definition, its two policies and the asset, those that exist (lookups by key, not the whole catalog)."""

        def query(db: Database) -> CatalogSnapshot:
            def one(kind: type[Any], entry_id: str) -> Any | None:
                row = _row(db, f"SELECT * FROM {_CATALOG_TABLES[kind]} WHERE participant_id = ? AND id = ?",
                           [participant_id, entry_id])
                return from_row(kind, row) if row is not None else None

            definition = one(ContractDefinition, definition_id)
            policies = {} if definition is None else {
                p.id: p for p in (one(PolicyRecord, i) for i in (definition.access_policy_id,
                                                                 definition.contract_policy_id)) if p is not None}
            asset = one(Asset, asset_id)
            return CatalogSnapshot({asset.id: asset} if asset is not None else {}, policies,
                                   [definition] if definition is not None else [])

        return await self.store.lookup(query)

    # negotiations

    async def create_negotiation(
        self, record: NegotiationRecord, event: str = "", detail: str = "", *, events: Sequence[Event] = (),
        agreement: AgreementChange | None = None, durable: bool = False,
    ) -> None:
        """Store a new negotiation with its history (*event* with *detail* if given, then *events*) and, if its
        first move made one, *agreement*'s row, in one transaction; *durable*: fsynced (see ``Store.write``)."""
        row = to_row(record)
        _drive(row, self.store)
        history = [(event, detail)] if event else []
        history += events
        agreement_row = (to_row(agreement.record, participant_id=record.participant_id) if agreement is not None
                         else None)

        def insert(db: Database) -> None:
            if agreement is not None and _agreement_state(db, record.participant_id,
                                                          agreement.record.id) != agreement.read_in:
                raise Conflict("the negotiation's agreement changed concurrently; retry")
            _insert(db, "negotiations", row)
            for kind, text in history:
                _event(db, record.participant_id, record.id, record.updated_at, kind, text)
            if agreement_row is not None:
                _insert(db, "agreements", agreement_row, replace=True)

        await self.store.write(insert, durable=durable)
        self._keep(row)

    async def update_negotiation(
        self, record: NegotiationRecord, *, expected_state: NegotiationState, event: str, detail: str = "",
        events: Sequence[Event] = (), agreement: AgreementChange | None = None, durable: bool = False,
    ) -> bool:
        """Commit *record* if the stored state is still *expected_state*, and with it its history (*event* with
        *detail* if given, then *events*) and *agreement*'s row if the stored agreement is still in the state it
        was read in (compare and set on both); False, with nothing written, if either moved on meanwhile.
        *durable*: fsynced before this returns (see ``Store.write``).

        Both checks and all writes are one job of the single writer, inside its ``BEGIN IMMEDIATE``
        transaction: no other write can come between a check and its write."""
        row = to_row(record)
        _drive(row, self.store)
        history = [(event, detail)] if event else []
        history += events
        agreement_row = (to_row(agreement.record, participant_id=record.participant_id) if agreement is not None
                         else None)

        def update(db: Database) -> bool:
            if agreement is not None and _agreement_state(db, record.participant_id,
                                                          agreement.record.id) != agreement.read_in:
                return False
            if not _update_in_state(db, "negotiations", row, expected_state):
                return False
            for kind, text in history:
                _event(db, record.participant_id, record.id, record.updated_at, kind, text)
            if agreement_row is not None:
                _insert(db, "agreements", agreement_row, replace=True)
            return True

        key = (record.participant_id, record.id)
        self._kept.pop(key, None)
        # An acknowledged delivery waiting to be written goes with this write (*record* was worked out from it). It
        # is taken out before the write is queued, so that a later write of the waiting ones cannot follow this one
        # and write the acknowledged row over it.
        waiting = self._acknowledged.pop(key, None)
        try:
            written = await self.store.write(update, durable=durable)
        except Exception:  # rolled back: nothing of it was written (a cancelled wait may still see it commit)
            self._wait_again(key, waiting)
            raise
        if not written:
            self._wait_again(key, waiting)
            return False
        self._keep(row)  # every column but the key was written: the stored row is this one
        return True

    async def add_event(self, participant_id: str, negotiation_id: str, at: str, kind: str, detail: str) -> None:
        await self.store.write(lambda db: _event(db, participant_id, negotiation_id, at, kind, detail))

    async def negotiation(self, participant_id: str, negotiation_id: str) -> NegotiationRecord | None:
        kept = self._acknowledged.get((participant_id, negotiation_id)) or self._kept.get((participant_id,
                                                                                           negotiation_id))
        if kept is not None:
            return from_row(NegotiationRecord, kept)

        def query(db: Database) -> NegotiationRecord | None:
            row = _row(db, "SELECT * FROM negotiations WHERE participant_id = ? AND id = ?",
                       [participant_id, negotiation_id])
            return from_row(NegotiationRecord, row) if row is not None else None

        return await self.store.lookup(query)

    async def negotiations(
        self, participant_id: str, *, states: list[NegotiationState] | None = None, limit: int = 100,
        offset: int = 0,
    ) -> list[NegotiationRecord]:
        def query(db: Database) -> list[NegotiationRecord]:
            where, params = "participant_id = ?", [participant_id]
            if states:
                where += f" AND state IN ({', '.join('?' for _ in states)})"
                params += states
            rows = db.query(f"SELECT * FROM negotiations WHERE {where} ORDER BY created_at DESC, id "
                            "LIMIT ? OFFSET ?", [*params, limit, offset])
            return [from_row(NegotiationRecord, r) for r in rows]

        return self._as_acknowledged(await self.store.read(query))

    async def negotiation_by_pid(
        self, participant_id: str, role: Role, counterparty: str, *, consumer_pid: str | None = None,
        provider_pid: str | None = None,
    ) -> NegotiationRecord | None:
        """A negotiation opened by the same peer with the same pid (to answer a re-delivered opening)."""
        column, value = ("consumer_pid", consumer_pid) if consumer_pid is not None else ("provider_pid", provider_pid)

        def query(db: Database) -> NegotiationRecord | None:
            # By the pid's index: without statistics SQLite would rather walk the participant's primary key range,
            # every negotiation the participant ever had.
            row = _row(db, f"SELECT * FROM negotiations INDEXED BY negotiations_{column} WHERE participant_id = ? "
                           f"AND {column} = ? AND role = ? AND counterparty_did = ?",
                       [participant_id, value, role, counterparty])
            return from_row(NegotiationRecord, row) if row is not None else None

        found = await self.store.lookup(query)
        return None if found is None else self._as_acknowledged([found])[0]

    async def claim_negotiations(self, participant_id: str | None = None) -> set[tuple[str, str]]:
        """Take over every unfinished negotiation no live process drives (:func:`claim_unfinished`); its keys."""
        return await self.store.write(lambda db: claim_unfinished(db, "negotiations", _NEGOTIATIONS_ACTIVE,
                                                                  self.store.process_id, participant_id,
                                                                  self.store.now()))

    async def driver(self, participant_id: str, negotiation_id: str) -> str | None:
        return await self.store.lookup(lambda db: _driver(db, "negotiations", participant_id, negotiation_id))

    async def all_active_negotiations(self) -> list[NegotiationRecord]:
        """Every negotiation of every participant that is not over, or whose last message is still to be
        delivered (for resuming after a restart)."""

        def query(db: Database) -> list[NegotiationRecord]:
            rows = db.query(f"SELECT * FROM negotiations WHERE {_NEGOTIATIONS_ACTIVE}")
            return [from_row(NegotiationRecord, r) for r in rows]

        return self._as_acknowledged(await self.store.read(query))

    def _as_acknowledged(self, records: list[NegotiationRecord]) -> list[NegotiationRecord]:
        """*records* as read from the store, each with its delivery's acknowledgement if one waits to be written
        (:meth:`acknowledge`)."""
        if not self._acknowledged:
            return records
        waiting = self._acknowledged
        return [r if (row := waiting.get((r.participant_id, r.id))) is None else from_row(NegotiationRecord, row)
                for r in records]

    async def events(self, participant_id: str, negotiation_id: str) -> list[NegotiationEvent]:
        def query(db: Database) -> list[NegotiationEvent]:
            rows = db.query("SELECT seq, at, kind, detail FROM negotiation_events WHERE participant_id = ? "
                            "AND negotiation_id = ? ORDER BY seq", [participant_id, negotiation_id])
            return [NegotiationEvent(**r) for r in rows]

        return await self.store.read(query)

    # agreements

    async def agreements(self, participant_id: str, *,
                         state: AgreementState | Collection[AgreementState] | None = AgreementState.FINALIZED
                         ) -> list[AgreementRecord]:
        """The participant's agreements in *state* (one state, any of several, or None: every state), newest
        first."""
        wanted = [state] if isinstance(state, AgreementState) else sorted(state or ())

        def query(db: Database) -> list[AgreementRecord]:
            sql = "SELECT * FROM agreements WHERE participant_id = ?"
            params: list[Any] = [participant_id]
            if wanted:
                values = [s.value for s in wanted]
                sql += f" AND state IN {_in(values)}"
                params.extend(values)
            return [from_row(AgreementRecord, r) for r in db.query(sql + " ORDER BY created_at DESC", params)]

        return await self.store.read(query)

    async def agreement_ids(self, participant_id: str) -> list[str]:
        """The ids of all the participant's agreements, whatever their state."""
        return [a.id for a in await self.agreements(participant_id, state=None)]

    async def add_agreement(self, participant_id: str, agreement: AgreementRecord) -> None:
        """Store an agreement made outside a negotiation of this node (conformance mode's seeded ones)."""
        row = to_row(agreement, participant_id=participant_id)
        await self.store.write(lambda db: _insert(db, "agreements", row, replace=True))

    async def agreement(self, participant_id: str, agreement_id: str) -> AgreementRecord | None:
        def query(db: Database) -> AgreementRecord | None:
            row = _row(db, "SELECT * FROM agreements WHERE participant_id = ? AND id = ?",
                       [participant_id, agreement_id])
            return from_row(AgreementRecord, row) if row is not None else None

        return await self.store.lookup(query)

    # admission of peers (connector.services.admission)

    async def known_counterparties(self) -> list[tuple[str, str]]:
        """(participant id, counterparty DID) for every agreement that reached FINALIZED (REVOKED ones did)."""

        def query(db: Database) -> list[tuple[str, str]]:
            rows = db.execute(
                "SELECT DISTINCT participant_id, CASE role WHEN 'provider' THEN consumer_did ELSE provider_did END "
                f"FROM agreements WHERE state IN {_in(_EVER_IN_FORCE)}", _EVER_IN_FORCE).fetchall()
            return [(str(r[0]), str(r[1])) for r in rows]

        return await self.store.read(query)

    async def purge_stranger_negotiations(self, updated_before: str, *, limit: int = 5000) -> int:
        """Delete (with their history) up to *limit* negotiations that a peer opened and that ended TERMINATED
        before *updated_before* without a FINALIZED agreement, where that peer is still unknown (no FINALIZED
        or REVOKED agreement with the participant). An agreement such a negotiation got as far as (AGREED or
        VERIFIED, never in force) goes with it. Returns how many went."""

        def purge(db: Database) -> int:
            keys = db.execute(
                "SELECT n.participant_id, n.id FROM negotiations n WHERE n.state = 'TERMINATED' "
                "AND n.pending IS NULL AND n.updated_at < ? AND (n.role = 'provider' OR n.requested = '{}') "
                "AND NOT EXISTS (SELECT 1 FROM agreements a WHERE a.participant_id = n.participant_id "
                f"AND a.state IN {_in(_EVER_IN_FORCE)} "
                "AND (a.negotiation_id = n.id OR n.counterparty_did IN (a.consumer_did, a.provider_did))) "
                "LIMIT ?", [updated_before, *_EVER_IN_FORCE, limit]).fetchall()
            for sql, rows in (
                ("DELETE FROM negotiation_events WHERE participant_id = ? AND negotiation_id = ?", keys),
                ("DELETE FROM agreements WHERE participant_id = ? AND negotiation_id = ? "
                 f"AND state IN {_in(_NEVER_IN_FORCE)}", [(*key, *_NEVER_IN_FORCE) for key in keys]),
                ("DELETE FROM negotiations WHERE participant_id = ? AND id = ?", keys),
            ):
                db.conn.executemany(sql, rows)
            return len(keys)

        try:
            return await self.store.write(purge)
        finally:
            self._kept.clear()


class TransferRepository:
    """Transfer processes, their history and the manifests of asset versions; scoped to one participant."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, record: TransferRecord, event: str, detail: str = "") -> None:
        row = to_row(record)
        _drive(row, self.store)

        def insert(db: Database) -> None:
            _insert(db, "transfers", row)
            _transfer_event(db, record.participant_id, record.id, record.updated_at, event, detail)

        await self.store.write(insert)

    async def update(self, record: TransferRecord, *, expected_state: TransferState, event: str, detail: str = "",
                     keep_received: bool = False) -> bool:
        """Commit *record* if the stored state is still *expected_state* (compare and set).

        *keep_received*: leave the stored resume point as it is (a data plane advances it on its own,
        :meth:`set_received`, and a state change read before that must not move it back)."""
        row = to_row(record)
        _drive(row, self.store)
        skip = ("participant_id", "id", "received") if keep_received else ("participant_id", "id")

        def update(db: Database) -> bool:
            if not _update_in_state(db, "transfers", row, expected_state, skip):
                return False
            if event:
                _transfer_event(db, record.participant_id, record.id, record.updated_at, event, detail)
            return True

        return await self.store.write(update)

    async def set_received(self, participant_id: str, transfer_id: str, received: int) -> None:
        """Record the consumer's resume point (bytes verified and written) while STARTED, or SUSPENDED meanwhile
        (a suspension that cuts a stream off keeps what was verified)."""
        await self.store.write(lambda db: db.execute(
            "UPDATE transfers SET received = ? WHERE participant_id = ? AND id = ? "
            "AND state IN ('STARTED', 'SUSPENDED')",
            [received, participant_id, transfer_id]))

    async def add_event(self, participant_id: str, transfer_id: str, at: str, kind: str, detail: str) -> None:
        await self.store.write(lambda db: _transfer_event(db, participant_id, transfer_id, at, kind, detail))

    async def get(self, participant_id: str, transfer_id: str) -> TransferRecord | None:
        def query(db: Database) -> TransferRecord | None:
            rows = list(db.query("SELECT * FROM transfers WHERE participant_id = ? AND id = ?",
                                 [participant_id, transfer_id]))
            return from_row(TransferRecord, rows[0]) if rows else None

        return await self.store.read(query)

    async def by_consumer_pid(self, participant_id: str, counterparty: str, consumer_pid: str) -> TransferRecord | None:
        """The transfer the same peer requested with the same consumer pid (to answer a re-delivered request)."""

        def query(db: Database) -> TransferRecord | None:
            # By the pid's index: without statistics SQLite would rather walk the participant's primary key range,
            # every transfer the participant ever had.
            row = _row(db, "SELECT * FROM transfers INDEXED BY transfers_consumer_pid WHERE participant_id = ? "
                           "AND consumer_pid = ? AND role = 'provider' AND counterparty_did = ?",
                       [participant_id, consumer_pid, counterparty])
            return from_row(TransferRecord, row) if row is not None else None

        return await self.store.lookup(query)

    async def find(self, participant_id: str, *, states: list[TransferState] | None = None, limit: int = 100,
                   offset: int = 0, agreement_id: str | None = None) -> list[TransferRecord]:
        def query(db: Database) -> list[TransferRecord]:
            where, params = "participant_id = ?", [participant_id]
            if states:
                where += f" AND state IN ({', '.join('?' for _ in states)})"
                params += states
            if agreement_id is not None:
                where += " AND agreement_id = ?"
                params.append(agreement_id)
            rows = db.query(f"SELECT * FROM transfers WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                            [*params, limit, offset])
            return [from_row(TransferRecord, r) for r in rows]

        return await self.store.read(query)

    async def claim(self, participant_id: str | None = None) -> set[tuple[str, str]]:
        """Take over every unfinished transfer no live process drives (:func:`claim_unfinished`); its keys."""
        return await self.store.write(lambda db: claim_unfinished(db, "transfers", _TRANSFERS_ACTIVE,
                                                                  self.store.process_id, participant_id,
                                                                  self.store.now()))

    async def driver(self, participant_id: str, transfer_id: str) -> str | None:
        return await self.store.lookup(lambda db: _driver(db, "transfers", participant_id, transfer_id))

    async def all_active(self) -> list[TransferRecord]:
        """Every transfer of every participant that is not over, or whose last message is still to be
        delivered (for resuming after a restart)."""

        def query(db: Database) -> list[TransferRecord]:
            rows = db.query(f"SELECT * FROM transfers WHERE {_TRANSFERS_ACTIVE}")
            return [from_row(TransferRecord, r) for r in rows]

        return await self.store.read(query)

    async def events(self, participant_id: str, transfer_id: str) -> list[NegotiationEvent]:
        def query(db: Database) -> list[NegotiationEvent]:
            rows = db.query("SELECT seq, at, kind, detail FROM transfer_events WHERE participant_id = ? "
                            "AND transfer_id = ? ORDER BY seq", [participant_id, transfer_id])
            return [NegotiationEvent(**r) for r in rows]

        return await self.store.read(query)

    async def manifest(self, participant_id: str, asset_id: str, version: str) -> dict[str, Any] | None:
        def query(db: Database) -> dict[str, Any] | None:
            rows = list(db.query("SELECT manifest FROM manifests WHERE participant_id = ? AND asset_id = ? "
                                 "AND version = ?", [participant_id, asset_id, version]))
            return msgspec.json.decode(rows[0]["manifest"]) if rows else None

        return await self.store.read(query)

    async def save_manifest(self, participant_id: str, asset_id: str, version: str, manifest: dict[str, Any],
                            now: str) -> None:
        row = {"participant_id": participant_id, "asset_id": asset_id, "version": version,
               "manifest": msgspec.json.encode(manifest).decode(), "created_at": now}
        await self.store.write(lambda db: _insert(db, "manifests", row, replace=True))


def _agreement_state(db: Database, participant_id: str, agreement_id: str) -> str | None:
    """The stored state of an agreement (its wire value), or None if there is no such row."""
    found = db.execute("SELECT state FROM agreements WHERE participant_id = ? AND id = ?",
                       [participant_id, agreement_id]).fetchone()
    return None if found is None else str(found[0])


_NEGOTIATIONS_ACTIVE = "(state NOT IN ('FINALIZED', 'TERMINATED') OR pending IS NOT NULL)"
_TRANSFERS_ACTIVE = "(state NOT IN ('COMPLETED', 'TERMINATED') OR pending IS NOT NULL)"


def claim_unfinished(db: Database, table: str, active: str, me: str | None,
                     participant_id: str | None, now: float) -> set[tuple[str, str]]:
    """Make *me* the driver of every unfinished row of *table* (of *participant_id*, or all) that no live process
    drives (no driver yet, or one whose heartbeat ran out); return the keys of the rows it took over. Runs on the
    writer: the store's write lock makes each row go to one process."""
    if me is None:
        raise ValueError("claiming needs a process id")
    scope, params = ("AND participant_id = ?", [participant_id]) if participant_id is not None else ("", [])
    return {(str(r[0]), str(r[1])) for r in db.execute(
        f"UPDATE {table} SET driver = ? WHERE {active} {scope} AND (driver IS NULL OR driver NOT IN "
        "(SELECT id FROM node_processes WHERE alive_until >= ?)) RETURNING participant_id, id",
        [me, *params, now]).fetchall()}


def _driver(db: Database, table: str, participant_id: str, row_id: str) -> str | None:
    row = db.execute(f"SELECT driver FROM {table} WHERE participant_id = ? AND id = ?",
                     [participant_id, row_id]).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _transfer_event(db: Database, participant_id: str, transfer_id: str, at: str, kind: str,
                    detail: str) -> None:
    db.execute(
        "INSERT INTO transfer_events (participant_id, transfer_id, seq, at, kind, detail) "
        "SELECT ?, ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM transfer_events "
        "WHERE participant_id = ? AND transfer_id = ?",
        [participant_id, transfer_id, at, kind, detail[:2000], participant_id, transfer_id],
    )


def _event(db: Database, participant_id: str, negotiation_id: str, at: str, kind: str,
           detail: str) -> None:
    db.execute(
        "INSERT INTO negotiation_events (participant_id, negotiation_id, seq, at, kind, detail) "
        "SELECT ?, ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM negotiation_events "
        "WHERE participant_id = ? AND negotiation_id = ?",
        [participant_id, negotiation_id, at, kind, detail[:2000], participant_id, negotiation_id],
    )


def add_participant_sync(db: Database, row: dict[str, Any]) -> None:
    _insert(db, "participants", row)


def add_token_sync(
    db: Database, token: str, participant_id: str | None, application: str, admin: bool, now: str
) -> str:
    token_id = "tok-" + secrets.token_hex(8)
    db.execute(
        "INSERT INTO tokens (id, hash, participant_id, application, admin, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [token_id, token_hash(token), participant_id, application, int(admin), now],
    )
    return token_id
