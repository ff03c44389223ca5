"""Storage: the store (one writer thread, group commit) on SQLite or PostgreSQL, migrations, typed records, and
every SQL statement of the node: :mod:`connector.store.repository` and :mod:`connector.store.usage`."""
