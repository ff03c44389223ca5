"""Console sessions: a browser logs in once with a management token and then carries a session cookie.

The token stays in the node's memory, never in the cookie; the cookie holds a random session id (256 bits),
looked up by its SHA-256 hash. A session ends at logout, after :data:`IDLE_S` without a request, after
:data:`LIFETIME_S` in all, when the node restarts, or as soon as its token is revoked (the token is checked
on every request). State-changing requests of a session must carry its CSRF token (a form field or the
``X-CSRF-Token`` header), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

#: A session ends after this long without a request ...
IDLE_S = 8 * 3600.0
#: ... and this long after login, whatever happens.
LIFETIME_S = 24 * 3600.0
#: The most sessions the node keeps. Over it, the token that holds the most sessions gives up its least recently
#: used one: a flood of logins with one token (or a few) evicts its own sessions, not others'.
MAX_SESSIONS = 10_000
#: The most sessions one token holds at once; a login beyond ends that token's least recently used session.
MAX_SESSIONS_PER_TOKEN = 20


@dataclass
class Session:
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    seen: float
    #: Messages shown once on the next page: (kind, text) with kind "ok" or "error".
    flashes: list[tuple[str, str]] = field(default_factory=list)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_key: dict[str, Session] = {}
        self._clock = clock

    def open(self, token: str) -> tuple[str, Session]:
        """A new session for *token*: its id (for the cookie) and the session."""
        now = self._clock()
        self._expire(now)
        own = [k for k, s in self._by_key.items() if s.token == token]
        if len(own) >= MAX_SESSIONS_PER_TOKEN:
            del self._by_key[min(own, key=lambda k: self._by_key[k].seen)]
        elif len(self._by_key) >= MAX_SESSIONS:
            held = Counter(s.token for s in self._by_key.values())
            most = max(held.values())
            del self._by_key[min((k for k, s in self._by_key.items() if held[s.token] == most),
                                 key=lambda k: self._by_key[k].seen)]
        session_id = secrets.token_urlsafe(32)
        session = Session(token=token, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        self._by_key[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        key = _key(session_id)
        session = self._by_key.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > IDLE_S or now - session.created > LIFETIME_S:
            del self._by_key[key]
            return None
        session.seen = now
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_key.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._by_key)

    def _expire(self, now: float) -> None:
        dead = [k for k, s in self._by_key.items() if now - s.seen > IDLE_S or now - s.created > LIFETIME_S]
        for key in dead:
            del self._by_key[key]


def csrf_ok(session: Session, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode(), session.csrf.encode())
