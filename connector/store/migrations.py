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
    # 2: catalog (assets, policies, contract definitions), negotiations with their history, agreements
    [
        """CREATE TABLE assets (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            content_type TEXT NOT NULL DEFAULT 'application/octet-stream',
            data_class TEXT NOT NULL DEFAULT 'general',
            keywords TEXT NOT NULL DEFAULT '[]',
            data_address TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE policies (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            policy TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE contract_definitions (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            access_policy_id TEXT NOT NULL,
            contract_policy_id TEXT NOT NULL,
            assets TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE negotiations (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            role TEXT NOT NULL,
            state TEXT NOT NULL,
            provider_pid TEXT,
            consumer_pid TEXT,
            counterparty_did TEXT NOT NULL,
            counterparty_address TEXT NOT NULL DEFAULT '',
            asset_id TEXT NOT NULL DEFAULT '',
            offer_id TEXT NOT NULL DEFAULT '',
            offer TEXT NOT NULL DEFAULT '{}',
            requested TEXT NOT NULL DEFAULT '{}',
            agreement TEXT,
            reason TEXT NOT NULL DEFAULT '',
            pending TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            deliver_by REAL,
            expires_at REAL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        "CREATE INDEX negotiations_state ON negotiations(participant_id, state)",
        "CREATE INDEX negotiations_consumer_pid ON negotiations(participant_id, consumer_pid)",
        "CREATE INDEX negotiations_provider_pid ON negotiations(participant_id, provider_pid)",
        """CREATE TABLE negotiation_events (
            participant_id TEXT NOT NULL,
            negotiation_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (participant_id, negotiation_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE agreements (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            negotiation_id TEXT NOT NULL,
            role TEXT NOT NULL,
            provider_did TEXT NOT NULL,
            consumer_did TEXT NOT NULL,
            asset_id TEXT NOT NULL,
            agreement TEXT NOT NULL,
            provider_proof TEXT,
            consumer_proof TEXT,
            did_documents TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX agreements_negotiation ON agreements(participant_id, negotiation_id)",
    ],
    # 3: transfer processes with their history, and manifests per asset version
    [
        """CREATE TABLE transfers (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            role TEXT NOT NULL,
            state TEXT NOT NULL,
            provider_pid TEXT,
            consumer_pid TEXT,
            counterparty_did TEXT NOT NULL,
            counterparty_address TEXT NOT NULL DEFAULT '',
            agreement_id TEXT NOT NULL,
            asset_id TEXT NOT NULL DEFAULT '',
            format TEXT NOT NULL DEFAULT '',
            data_address TEXT,
            token_hash TEXT,
            token_expires_at REAL,
            manifest TEXT,
            envelope TEXT,
            size INTEGER,
            received INTEGER NOT NULL DEFAULT 0,
            vault_path TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            pending TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            deliver_by REAL,
            expires_at REAL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        "CREATE INDEX transfers_state ON transfers(participant_id, state)",
        "CREATE INDEX transfers_consumer_pid ON transfers(participant_id, consumer_pid)",
        "CREATE INDEX transfers_agreement ON transfers(participant_id, agreement_id)",
        """CREATE TABLE transfer_events (
            participant_id TEXT NOT NULL,
            transfer_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (participant_id, transfer_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE manifests (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            asset_id TEXT NOT NULL,
            version TEXT NOT NULL,
            manifest TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, asset_id, version)
        ) WITHOUT ROWID""",
    ],
]
