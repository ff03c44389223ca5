"""Fair use: token buckets keyed by who is asking (a participant's token, a calling peer's DID).

Pure: the caller passes ``now`` (monotonic seconds). A bucket holds up to ``burst`` tokens and refills at
``rate`` per second; each request takes one. When a key has none left, :meth:`RateLimiter.take` returns
how long to wait for the next one, which becomes ``Retry-After`` on a 429. The number of keys is bounded:
when full, buckets that have refilled completely (idle callers, indistinguishable from new ones) are
dropped first, then the oldest. :func:`check_rate` turns an empty bucket into the 429 the error
middleware renders. Used by the management API (per participant) and by admission of peers (per known
peer, and one bucket for all unknown peers), so it sits below both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from connector.errors import TooManyRequests


class _Bucket(msgspec.Struct):
    tokens: float
    at: float


@dataclass
class RateLimiter:
    rate: float
    burst: int
    max_keys: int = 100_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict, repr=False)

    def take(self, key: str, now: float) -> float:
        """Take one token for *key*; return 0.0 if allowed, else the seconds until a token is available."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate if self.rate > 0 else math.inf

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]


def retry_after(seconds: float) -> int:
    """Whole seconds for a ``Retry-After`` header (RFC 9110 §10.2.3), at least 1."""
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 3600


def check_rate(limiter: RateLimiter, key: str, what: str, now: float, *, limit: str = "other") -> None:
    """Take one request from *key*'s bucket at *now* (monotonic seconds) or raise 429 saying when to come
    back; *limit* names the budget in the node's metrics."""
    wait = limiter.take(key, now)
    if wait > 0:
        seconds = retry_after(wait)
        raise TooManyRequests(f"too many {what}: at most {limiter.rate:g} per second (bursts of "
                              f"{limiter.burst}); retry after {seconds} s", retry_after=seconds, limit=limit)
