"""What the store holds, counted for the node's metrics: processes by role and state, receipt anomalies by kind.

Read when the metrics are scraped (on a reader thread, never the event loop), so that the figures are the
store's own and survive a restart; each is one grouped count over the whole node (all participants).
"""

from __future__ import annotations

import msgspec

from connector.store.db import Database, Store


class StoreCounts(msgspec.Struct, frozen=True):
    #: (role, state) -> negotiations
    negotiations: dict[tuple[str, str], int] = msgspec.field(default_factory=dict)
    #: (role, state) -> transfer processes
    transfers: dict[tuple[str, str], int] = msgspec.field(default_factory=dict)
    #: kind -> receipt anomalies recorded (each once; see ``connector.services.receipts``)
    receipt_anomalies: dict[str, int] = msgspec.field(default_factory=dict)


def counts_sync(db: Database) -> StoreCounts:
    def by_role_and_state(table: str) -> dict[tuple[str, str], int]:
        rows = db.execute(f"SELECT role, state, COUNT(*) FROM {table} GROUP BY role, state").fetchall()
        return {(str(role), str(state)): int(n) for role, state, n in rows}

    anomalies = db.execute("SELECT kind, COUNT(*) FROM receipt_anomalies GROUP BY kind").fetchall()
    return StoreCounts(by_role_and_state("negotiations"), by_role_and_state("transfers"),
                       {str(kind): int(n) for kind, n in anomalies})


async def counts(store: Store) -> StoreCounts:
    """The node's processes and receipt anomalies, counted now."""
    return await store.read(counts_sync)
