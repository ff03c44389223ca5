"""What the negotiation and transfer shells share about delivering DSP messages: ids, clocks, backoff,
and how a peer's reason is read."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

RETRY_BASE_S = 0.2
RETRY_MAX_S = 10.0


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_pid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def backoff(attempt: int) -> float:
    """Exponential backoff with ±20 % jitter: 0.2 s, 0.4 s, 0.8 s … capped at 10 s."""
    delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, attempt - 1))
    return float(delay * random.uniform(0.8, 1.2))


def message_reason(message: Any, who: str, verb: str = "terminated") -> str:
    """A termination's (or suspension's) code and reasons as one bounded line."""
    reasons = [str(r if not isinstance(r, dict) else r.get("@value", r)) for r in (message.reason or [])][:8]
    text = "; ".join(reasons) if reasons else "no reason given"
    code = f" (code {message.code})" if message.code else ""
    return f"{verb} by {who}{code}: {text}"[:1000]


def peer_reason(body: bytes) -> str:
    """The reason a peer gave in an error body, bounded."""
    try:
        data = json.loads(body)
    except ValueError:
        return "a non-JSON body"
    if isinstance(data, dict):
        reason = data.get("reason") or data.get("message")
        if isinstance(reason, list):
            reason = "; ".join(str(r) for r in reason[:4])
        if reason:
            return str(reason)[:300]
    return "no reason given"
