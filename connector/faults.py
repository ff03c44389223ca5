"""Crash points for the crash-safety tests.

``TDS_CRASH_AT=name`` makes the node kill itself with SIGKILL when it reaches the named point — exactly
what ``kill -9`` at that moment would do. Points are placed right after a commit and before the message
or answer that follows it, where a crash is hardest to survive. The variable is read once, when the node's
process loads this module (the tests set it in the environment of the node process they start); unset (always,
outside those tests), a crash point costs one comparison.
"""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("TDS_CRASH_AT")


def crash_point(name: str) -> None:
    if name == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
