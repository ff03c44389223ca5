"""The data sandbox's reads of the provider's own usage chain (``usage_log``): what a query needs to know, inside
the writer job that logs it (``connector.services.sandbox``); and whether the node offers any sandbox table.

A sandbox query is logged on the provider's node, in the provider's own chain for the agreement, as a use
(``kind`` ``use``, ``action`` ``aggregate``). A permitted query under a differential-privacy budget carries the
budget it spends as one of its effects, ``epsilon <value>`` (the value as Python's ``repr`` writes a float,
which reads back exactly). The budget spent so far is the sum of those: kept in the signed chain, not beside it,
so it cannot be reset without breaking a hash or a signature.
"""

from __future__ import annotations

from connector.store.db import Database

#: How a permitted query's entry names the budget it spent (``EPSILON_EFFECT + repr(epsilon)``).
EPSILON_EFFECT = "epsilon "


def epsilon_effect(epsilon: float) -> str:
    """The effect that records *epsilon* spent."""
    return f"{EPSILON_EFFECT}{epsilon!r}"


def epsilon_spent(db: Database, participant_id: str, consumer_did: str, asset_id: str) -> float:
    """The privacy budget the permitted queries of *consumer_did* on *asset_id* have spent, from the participant's
    own chains: under every agreement the participant made with that consumer for that asset, so that a fresh
    agreement on the same offer is not a fresh budget over the same rows."""
    row = db.conn.execute(
        "SELECT COALESCE(SUM(CAST(substr(e.value, ?) AS REAL)), 0) FROM usage_log AS l, "
        "json_each(l.entry, '$.effects') AS e WHERE l.participant_id = ? AND l.agreement_id IN ("
        "SELECT id FROM agreements WHERE participant_id = ? AND role = 'provider' AND consumer_did = ? "
        "AND asset_id = ?) AND l.kind = 'use' AND json_extract(l.entry, '$.decision') = 'permit' AND e.value LIKE ?",
        [len(EPSILON_EFFECT) + 1, participant_id, participant_id, consumer_did, asset_id,
         EPSILON_EFFECT + "%"]).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def offers_tables(db: Database) -> bool:
    """Whether any participant of the node offers an asset for computation only (it has a sandbox table)."""
    return db.conn.execute("SELECT 1 FROM assets WHERE sandbox IS NOT NULL LIMIT 1").fetchone() is not None
