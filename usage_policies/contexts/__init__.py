"""JSON-LD contexts shipped with the engine (read at import, never fetched)."""
