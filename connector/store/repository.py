"""The repository: the node's only way to the database.

:class:`Repository` is the interface (a Protocol, so a PostgreSQL backend can follow);
:class:`SqliteRepository` implements it on :class:`~connector.store.db.Store`. Every query that touches
business data is scoped by ``participant_id``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any, Protocol

import msgspec
import sqlite_utils

from connector.store.db import Store


class Participant(msgspec.Struct, frozen=True):
    id: str
    name: str
    did: str
    legal_name: str
    region: str
    industry: str = ""
    contact: str = ""
    created_at: str = ""


class Token(msgspec.Struct, frozen=True):
    participant_id: str | None
    application: str
    admin: bool


class Peer(msgspec.Struct, frozen=True):
    did: str
    legal_name: str
    region: str
    industry: str
    dsp_endpoint: str
    verified_at: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Repository(Protocol):
    async def add_participant(self, participant: Participant) -> None: ...
    async def participants(self) -> list[Participant]: ...
    async def participant_by_name(self, name: str) -> Participant | None: ...
    async def add_token(self, token: str, participant_id: str | None, application: str, *, admin: bool,
                        now: str) -> None: ...
    async def find_token(self, token: str) -> Token | None: ...
    async def remember_nonce(self, key_id: str, nonce: str, expires_at: int, now: int) -> bool: ...
    async def save_peer(self, participant_id: str, peer: Peer, self_description: dict[str, Any]) -> None: ...
    async def peers(self, participant_id: str) -> list[Peer]: ...


class SqliteRepository:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._nonce_inserts = 0

    # participants

    async def add_participant(self, participant: Participant) -> None:
        row = msgspec.structs.asdict(participant)
        await self.store.write(lambda db: add_participant_sync(db, row))

    async def participants(self) -> list[Participant]:
        def query(db: sqlite_utils.Database) -> list[Participant]:
            return [Participant(**row) for row in db.query("SELECT * FROM participants ORDER BY created_at, name")]

        return await self.store.read(query)

    async def participant_by_name(self, name: str) -> Participant | None:
        def query(db: sqlite_utils.Database) -> Participant | None:
            rows = list(db.query("SELECT * FROM participants WHERE name = ?", [name]))
            return Participant(**rows[0]) if rows else None

        return await self.store.read(query)

    # management tokens (stored hashed)

    async def add_token(
        self, token: str, participant_id: str | None, application: str, *, admin: bool, now: str
    ) -> None:
        await self.store.write(lambda db: add_token_sync(db, token, participant_id, application, admin, now))

    async def find_token(self, token: str) -> Token | None:
        digest = token_hash(token)

        def query(db: sqlite_utils.Database) -> Token | None:
            rows = list(
                db.query(
                    "SELECT participant_id, application, admin FROM tokens WHERE hash = ? AND revoked_at IS NULL",
                    [digest],
                )
            )
            if not rows:
                return None
            return Token(rows[0]["participant_id"], rows[0]["application"], bool(rows[0]["admin"]))

        return await self.store.read(query)

    # RFC 9421 nonce cache: persisted so that a restart does not reopen the validity window

    async def remember_nonce(self, key_id: str, nonce: str, expires_at: int, now: int) -> bool:
        """Record a nonce; False if it was seen before (a replay)."""
        self._nonce_inserts += 1
        purge = self._nonce_inserts % 256 == 0

        def insert(db: sqlite_utils.Database) -> bool:
            if purge:
                db.execute("DELETE FROM seen_nonces WHERE expires_at < ?", [now])
            try:
                db.execute(
                    "INSERT INTO seen_nonces (key_id, nonce, expires_at) VALUES (?, ?, ?)",
                    [key_id, nonce, expires_at],
                )
            except sqlite3.IntegrityError:
                return False
            return True

        return await self.store.write(insert)

    # peers whose self-description this participant verified

    async def save_peer(self, participant_id: str, peer: Peer, self_description: dict[str, Any]) -> None:
        row = {"participant_id": participant_id, **msgspec.structs.asdict(peer),
               "self_description": msgspec.json.encode(self_description).decode()}

        def upsert(db: sqlite_utils.Database) -> None:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            db.execute(f"INSERT OR REPLACE INTO peers ({columns}) VALUES ({marks})", list(row.values()))

        await self.store.write(upsert)

    async def peers(self, participant_id: str) -> list[Peer]:
        def query(db: sqlite_utils.Database) -> list[Peer]:
            fields = "did, legal_name, region, industry, dsp_endpoint, verified_at"
            sql = f"SELECT {fields} FROM peers WHERE participant_id = ? ORDER BY did"
            return [Peer(**row) for row in db.query(sql, [participant_id])]

        return await self.store.read(query)


def add_participant_sync(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    db.execute(
        f"INSERT INTO participants ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values())
    )


def add_token_sync(
    db: sqlite_utils.Database, token: str, participant_id: str | None, application: str, admin: bool, now: str
) -> None:
    db.execute(
        "INSERT INTO tokens (hash, participant_id, application, admin, created_at) VALUES (?, ?, ?, ?, ?)",
        [token_hash(token), participant_id, application, int(admin), now],
    )
