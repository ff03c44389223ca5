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
    # 3: usage enforcement on the consumer side: counters, the hash-chained usage log, signed chain heads
    [
        """CREATE TABLE usage_counters (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            use_count INTEGER NOT NULL DEFAULT 0,
            first_use_at TEXT,
            PRIMARY KEY (participant_id, agreement_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE usage_log (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            use_id TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            entry TEXT NOT NULL,
            PRIMARY KEY (participant_id, agreement_id, seq)
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX usage_log_use ON usage_log(participant_id, agreement_id, use_id) WHERE use_id != ''",
        """CREATE TABLE usage_heads (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            head TEXT NOT NULL,
            PRIMARY KEY (participant_id, agreement_id, seq)
        ) WITHOUT ROWID""",
        # consumer side: how far the provider has acknowledged each agreement's log
        """CREATE TABLE receipt_cursors (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            acked_seq INTEGER NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (participant_id, agreement_id)
        ) WITHOUT ROWID""",
        # provider side: the consumer's log as received, and what was wrong with it
        """CREATE TABLE received_entries (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            entry TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, agreement_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE received_heads (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            head TEXT NOT NULL,
            PRIMARY KEY (participant_id, agreement_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE receipt_anomalies (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL
        )""",
        "CREATE INDEX receipt_anomalies_agreement ON receipt_anomalies(participant_id, agreement_id)",
        """CREATE TABLE revocations (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            role TEXT NOT NULL,
            reason TEXT NOT NULL,
            revoked_at TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            receipt TEXT,
            PRIMARY KEY (participant_id, agreement_id)
        ) WITHOUT ROWID""",
        # duties carried out later, on schedule (deletion at a deadline)
        """CREATE TABLE scheduled_duties (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            due_at REAL NOT NULL,
            done_at TEXT,
            PRIMARY KEY (participant_id, agreement_id, kind)
        ) WITHOUT ROWID""",
    ],
    # 4: tenancy: management tokens get a public id (listed and revoked by it, scoped to their participant);
    #    a participant may bring its own DID instead of a did:web under the node
    [
        "ALTER TABLE tokens ADD COLUMN id TEXT",
        "UPDATE tokens SET id = substr(hash, 1, 16) WHERE id IS NULL",
        "CREATE UNIQUE INDEX tokens_id ON tokens(id)",
        "ALTER TABLE participants ADD COLUMN brought_did INTEGER NOT NULL DEFAULT 0",
    ],
    # 5: transfer processes with their history, and manifests per asset version
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
    # 6: use counts live in the signed log (no separate counter to reset); a use id names one use, and its
    #    re-deliveries are logged under it; the provider's signed acknowledgement of the log; each receipt
    #    anomaly recorded once
    [
        "DROP TABLE usage_counters",
        "DROP INDEX usage_log_use",
        "CREATE UNIQUE INDEX usage_log_use ON usage_log(participant_id, agreement_id, use_id) "
        "WHERE use_id != '' AND kind = 'use'",
        "CREATE INDEX usage_log_use_id ON usage_log(participant_id, agreement_id, use_id) WHERE use_id != ''",
        "ALTER TABLE receipt_cursors ADD COLUMN ack TEXT",
        "DELETE FROM receipt_anomalies WHERE rowid NOT IN (SELECT MIN(rowid) FROM receipt_anomalies "
        "GROUP BY participant_id, agreement_id, kind, detail)",
        "CREATE UNIQUE INDEX receipt_anomalies_once ON receipt_anomalies(participant_id, agreement_id, kind, detail)",
    ],
    # 7: memberships and verified attributes: credentials a participant issued (with their place in its status
    #    lists) and the lists' bits, credentials it holds, requests holders sent it, and the issuers it trusts
    [
        """CREATE TABLE issued_credentials (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            holder TEXT NOT NULL,
            status_list INTEGER NOT NULL,
            status_index INTEGER NOT NULL,
            valid_until TEXT NOT NULL,
            document TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            revoked_at TEXT,
            delivered_at TEXT,
            delivery_error TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX issued_credentials_status ON issued_credentials(participant_id, status_list, "
        "status_index)",
        """CREATE TABLE status_lists (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id INTEGER NOT NULL,
            purpose TEXT NOT NULL,
            size INTEGER NOT NULL,
            allocated INTEGER NOT NULL DEFAULT 0,
            encoded_list TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE held_credentials (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            issuer TEXT NOT NULL,
            valid_until TEXT NOT NULL,
            document TEXT NOT NULL,
            source TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE credential_requests (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            requester TEXT NOT NULL,
            kind TEXT NOT NULL,
            claims TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            credential_id TEXT,
            received_at TEXT NOT NULL,
            decided_at TEXT,
            PRIMARY KEY (participant_id, id)
        ) WITHOUT ROWID""",
        "CREATE INDEX credential_requests_state ON credential_requests(participant_id, state, requester)",
        """CREATE TABLE trusted_issuers (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            issuer TEXT NOT NULL,
            kinds TEXT NOT NULL,
            spaces TEXT,
            added_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, issuer)
        ) WITHOUT ROWID""",
    ],
    # 8: the peer directory: per participant, the participants it learned about (by handshake or gossip),
    #    each with its own latest signed self-description, who told it, when it was last seen and when it expires
    [
        """CREATE TABLE directory (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            did TEXT NOT NULL,
            dsp_endpoint TEXT NOT NULL,
            legal_name TEXT NOT NULL,
            region TEXT NOT NULL,
            industry TEXT NOT NULL DEFAULT '',
            issued_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            digest TEXT NOT NULL,
            self_description TEXT NOT NULL,
            learned_from TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            PRIMARY KEY (participant_id, did)
        ) WITHOUT ROWID""",
        "CREATE INDEX directory_expiry ON directory(expires_at)",
    ],
    # 9: the catalog cache: per participant, the offers it saw in each known provider's catalog (searched by
    #    keyword through FTS5, filtered on indexed columns), the features of their policies, and each
    #    provider's last crawl
    [
        """CREATE TABLE catalog_cache (
            id INTEGER PRIMARY KEY,
            participant_id TEXT NOT NULL REFERENCES participants(id),
            provider_did TEXT NOT NULL,
            dsp_endpoint TEXT NOT NULL,
            dataset_id TEXT NOT NULL,
            offer_id TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            keywords TEXT NOT NULL DEFAULT '[]',
            themes TEXT NOT NULL DEFAULT '[]',
            data_class TEXT NOT NULL DEFAULT '',
            media_type TEXT NOT NULL DEFAULT '',
            provider_legal_name TEXT NOT NULL DEFAULT '',
            provider_region TEXT NOT NULL DEFAULT '',
            provider_industry TEXT NOT NULL DEFAULT '',
            policy TEXT NOT NULL,
            features TEXT NOT NULL DEFAULT '[]',
            fetched_at REAL NOT NULL
        )""",
        "CREATE UNIQUE INDEX catalog_cache_offer ON catalog_cache(participant_id, provider_did, dataset_id, offer_id)",
        "CREATE INDEX catalog_cache_offer_id ON catalog_cache(participant_id, offer_id)",
        "CREATE INDEX catalog_cache_region ON catalog_cache(participant_id, provider_region)",
        "CREATE INDEX catalog_cache_class ON catalog_cache(participant_id, data_class)",
        "CREATE INDEX catalog_cache_industry ON catalog_cache(participant_id, provider_industry)",
        # Keywords: title, description and keywords (and themes) of each row, under the row's id; facets: the
        # provider's region (and its parents) as words, so that a keyword search in a region narrows inside FTS.
        "CREATE VIRTUAL TABLE catalog_cache_text USING fts5(participant_id UNINDEXED, title, description, "
        "keywords, facets, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')",
        """CREATE TABLE catalog_cache_features (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            feature TEXT NOT NULL,
            offer_row INTEGER NOT NULL,
            PRIMARY KEY (participant_id, feature, offer_row)
        ) WITHOUT ROWID""",
        """CREATE TABLE catalog_crawls (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            provider_did TEXT NOT NULL,
            dsp_endpoint TEXT NOT NULL,
            crawled_at REAL NOT NULL,
            fetched_at REAL,
            offers INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (participant_id, provider_did)
        ) WITHOUT ROWID""",
    ],
    # 10: credentials offered to a holder (delivered by issuers it does not trust beyond what it keeps unasked),
    #     waiting for its operator to accept or decline them, in arrival order; the requests a holder sent to
    #     issuers (their delivery is accepted); how an issuer's delivery was kept (held or offered)
    [
        """CREATE TABLE offered_credentials (
            seq INTEGER PRIMARY KEY,
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            issuer TEXT NOT NULL,
            origin TEXT NOT NULL,
            valid_until TEXT NOT NULL,
            document TEXT NOT NULL,
            received_at TEXT NOT NULL
        )""",
        "CREATE UNIQUE INDEX offered_credentials_id ON offered_credentials(participant_id, id)",
        "CREATE INDEX offered_credentials_origin ON offered_credentials(participant_id, origin)",
        """CREATE TABLE asked_credentials (
            seq INTEGER PRIMARY KEY,
            participant_id TEXT NOT NULL REFERENCES participants(id),
            issuer TEXT NOT NULL,
            request_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            asked_at TEXT NOT NULL,
            credential_id TEXT
        )""",
        "CREATE INDEX asked_credentials_issuer ON asked_credentials(participant_id, issuer, kind)",
        "ALTER TABLE issued_credentials ADD COLUMN delivered_as TEXT",
    ],
    # 11: a hosted participant suspended by the node's operator (not served, its tokens refused, nothing deleted)
    [
        "ALTER TABLE participants ADD COLUMN suspended_at TEXT",
        "ALTER TABLE participants ADD COLUMN suspended_reason TEXT NOT NULL DEFAULT ''",
    ],
    # 12: an asset offered for computation only (the data sandbox): its read-only table's file and schema (JSON)
    [
        "ALTER TABLE assets ADD COLUMN sandbox TEXT",
    ],
    # 13: settlement: statements of agreements' post-paid prices, issued (provider) or received (consumer), each
    #     stretch of an agreement settled once; the queries and transfers a statement billed (each billed once);
    #     the consumer's signed sandbox results (the evidence of queries); a host's platform share per participant
    [
        """CREATE TABLE statements (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            id TEXT NOT NULL,
            agreement_id TEXT NOT NULL,
            role TEXT NOT NULL,
            state TEXT NOT NULL,
            period_label TEXT NOT NULL,
            period_start TEXT NOT NULL,
            period_end TEXT NOT NULL,
            receipts_last INTEGER NOT NULL DEFAULT 0,
            total TEXT NOT NULL,
            currency TEXT NOT NULL,
            document TEXT NOT NULL,
            answer TEXT,
            reason TEXT NOT NULL DEFAULT '',
            previous_id TEXT,
            supersedes TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (participant_id, id)
        )""",
        "CREATE UNIQUE INDEX statements_stretch ON statements(participant_id, agreement_id, role, period_start) "
        "WHERE state != 'disputed'",
        "CREATE INDEX statements_agreement ON statements(participant_id, agreement_id, period_end)",
        "CREATE INDEX statements_period ON statements(participant_id, period_start)",
        "CREATE INDEX statements_delivery ON statements(next_attempt_at) WHERE next_attempt_at IS NOT NULL",
        """CREATE TABLE statement_items (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            item_id TEXT NOT NULL,
            statement_id TEXT NOT NULL,
            PRIMARY KEY (participant_id, agreement_id, kind, item_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX statement_items_statement ON statement_items(participant_id, statement_id)",
        """CREATE TABLE sandbox_results (
            participant_id TEXT NOT NULL REFERENCES participants(id),
            agreement_id TEXT NOT NULL,
            query_id TEXT NOT NULL,
            at TEXT NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (participant_id, agreement_id, query_id)
        )""",
        "ALTER TABLE participants ADD COLUMN platform_share TEXT",
    ],
    # 14: several node processes on one (PostgreSQL) store: each process's heartbeat, and which process drives each
    #     negotiation's and transfer's retries, deadlines and own moves (NULL: one process drives them all)
    [
        """CREATE TABLE node_processes (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            alive_until REAL NOT NULL
        ) WITHOUT ROWID""",
        "ALTER TABLE negotiations ADD COLUMN driver TEXT",
        "ALTER TABLE transfers ADD COLUMN driver TEXT",
    ],
]
