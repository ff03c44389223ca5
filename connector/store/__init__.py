"""Storage: SQLite schema and migrations, the writer thread, repositories."""
