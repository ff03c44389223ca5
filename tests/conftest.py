from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

from connector.logging import configure  # noqa: E402

configure("debug")
