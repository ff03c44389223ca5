"""The peer directory in SQLite: every SQL statement of ``connector.services.directory``.

Per hosted participant (every query is scoped by ``participant_id``): the participants it learned about,
each with its own latest signed self-description (verified before it was stored), who it was learned from
(a peer's DID, ``handshake`` or ``bootstrap``), when it was last seen and when it expires.
"""

from __future__ import annotations

from typing import Any

import msgspec

from connector.store.db import Database, Store


class DirectoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A participant in the directory: what its own signed self-description says (self-asserted), and how
    this node came to know it."""

    did: str
    dsp_endpoint: str
    legal_name: str
    #: The region the participant states about itself (self-asserted: not a verified region).
    region: str
    industry: str = ""
    #: ``validFrom`` of the self-description held.
    issued_at: str
    #: When the entry goes unless a newer self-description comes.
    expires_at: str
    #: SHA-256 of the self-description's RFC 8785 bytes.
    digest: str
    #: A peer's DID, ``handshake`` (verified directly) or ``bootstrap``.
    learned_from: str
    last_seen: str
    self_description: dict[str, Any] = {}


_COLUMNS = ("did", "dsp_endpoint", "legal_name", "region", "industry", "issued_at", "expires_at", "digest",
            "learned_from", "last_seen", "self_description")


def _record(row: dict[str, Any]) -> DirectoryEntry:
    values = {k: row[k] for k in _COLUMNS}
    values["self_description"] = msgspec.json.decode(row["self_description"])
    return DirectoryEntry(**values)


class DirectoryRepository:
    """The directory's rows, per participant."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def save(self, participant_id: str, entries: list[DirectoryEntry]) -> None:
        """Insert or replace *entries* in one transaction."""
        rows = []
        for entry in entries:
            row: dict[str, Any] = {"participant_id": participant_id, **msgspec.structs.asdict(entry)}
            row["self_description"] = msgspec.json.encode(entry.self_description).decode()
            rows.append(row)
        if not rows:
            return
        columns = ("participant_id", *_COLUMNS)
        sql = (f"INSERT OR REPLACE INTO directory ({', '.join(columns)}) "
               f"VALUES ({', '.join('?' for _ in columns)})")

        def write(db: Database) -> None:
            for row in rows:
                db.execute(sql, [row[c] for c in columns])

        await self.store.write(write)

    async def touch(self, participant_id: str, did: str, last_seen: str) -> None:
        await self.store.write(lambda db: db.execute(
            "UPDATE directory SET last_seen = ? WHERE participant_id = ? AND did = ?",
            [last_seen, participant_id, did]))

    async def remove(self, participant_id: str, dids: list[str]) -> None:
        if not dids:
            return

        def write(db: Database) -> None:
            for did in dids:
                db.execute("DELETE FROM directory WHERE participant_id = ? AND did = ?", [participant_id, did])

        await self.store.write(write)

    async def forget(self, participant_id: str) -> None:
        await self.store.write(lambda db: db.execute("DELETE FROM directory WHERE participant_id = ?",
                                                     [participant_id]))

    async def entries(self, participant_id: str) -> list[DirectoryEntry]:
        def query(db: Database) -> list[DirectoryEntry]:
            rows = db.query("SELECT * FROM directory WHERE participant_id = ? ORDER BY did", [participant_id])
            return [_record(r) for r in rows]

        return await self.store.read(query)
