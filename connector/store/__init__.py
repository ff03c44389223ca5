"""Storage: the SQLite store (one writer thread, group commit), migrations, typed records, and every SQL
statement of the node: :mod:`connector.store.repository` and :mod:`connector.store.usage`."""

from __future__ import annotations

import sys as _sys


def _import_sqlite_utils() -> None:
    """Import sqlite-utils without numpy and pandas. It imports both whenever they are installed, for column types
    of theirs that the store never writes: about 60 ms and 17 MiB of every node start on a machine that has them.
    They are kept out of that one import only (a later ``import numpy`` works as usual), unless something imported
    them already."""
    if "sqlite_utils" in _sys.modules:
        return
    kept_out = [name for name in ("numpy", "pandas") if name not in _sys.modules]
    for name in kept_out:
        _sys.modules[name] = None  # type: ignore[assignment]  # import fails: ModuleNotFoundError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in kept_out:
            if _sys.modules.get(name, False) is None:
                del _sys.modules[name]


_import_sqlite_utils()
