"""Storage: the SQLite store (one writer thread, group commit), migrations, typed records, and every SQL
statement of the node: :mod:`connector.store.repository` and :mod:`connector.store.usage`."""
