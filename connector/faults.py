"""Crash points for the crash-safety tests.

``TDS_CRASH_AT=name`` makes the node kill itself with SIGKILL when it reaches the named point — exactly
what ``kill -9`` at that moment would do. Points are placed right after a commit and before the message
or answer that follows it, where a crash is hardest to survive. Unset (always, outside those tests),
a crash point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("TDS_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
