"""Schema migrations, in order. Each entry is one migration: a list of SQL statements applied in one
transaction; ``PRAGMA user_version`` records how many have run. Never edit a released migration: add one.

Every business table carries ``participant_id`` (tenancy is in the data model from the start).
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: participants, management tokens, the signature nonce cache, verified peers
    [
        """CREATE TABLE participants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            did TEXT NOT NULL UNIQUE,
            legal_name TEXT NOT NULL,
            region TEXT NOT NULL,
            industry TEXT NOT NULL DEFAULT '',
            contact TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE tokens (
            hash TEXT PRIMARY KEY,
            participant_id TEXT REFERENCES participants(id),
            application TEXT NOT NULL,
            admin INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        "CREATE INDEX tokens_participant ON tokens(participant_id)",
        """CREATE TABLE seen_nonces (
            key_id TEXT NOT NULL,
            nonce TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (key_id, nonce)
        ) WITHOUT ROWID""",
        "CREATE INDEX seen_nonces_expiry ON seen_nonces(expires_at)",
        """CREATE TABLE peers (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            did TEXT NOT NULL,
            legal_name TEXT NOT NULL,
            region TEXT NOT NULL,
            industry TEXT NOT NULL DEFAULT '',
            dsp_endpoint TEXT NOT NULL,
            self_description TEXT NOT NULL,
            verified_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, did)
        )""",
    ],
]
