"""Import the real ``usage_policies`` package, not ``tests/usage_policies`` as a namespace package.

pytest puts ``tests/`` on ``sys.path`` (its conftest), where a directory named ``usage_policies`` would
shadow the editable install's package ``__init__``. Putting the repository root first avoids that.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import usage_policies  # noqa: E402

assert usage_policies.__file__ is not None, "usage_policies was imported as a namespace package"
