from __future__ import annotations

from connector.logging import configure

# Tests log JSON lines like a running node (and never render tracebacks with their locals).
configure("debug")
