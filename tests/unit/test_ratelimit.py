"""Token buckets for fair use: bursts, refill, Retry-After, bounded keys."""

from __future__ import annotations

from connector.ratelimit import RateLimiter, retry_after


def test_burst_then_refused_with_the_wait():
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == 0.5
    assert limiter.take("a", 0.5) == 0.0  # one token refilled


def test_keys_are_independent():
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0


def test_refill_is_capped_at_the_burst():
    limiter = RateLimiter(rate=10.0, burst=2)
    limiter.take("a", 0.0)
    assert [limiter.take("a", 100.0) for _ in range(3)][-1] > 0


def test_keys_are_bounded_idle_ones_first():
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2)
    limiter.take("busy", 0.0)
    limiter.take("idle", 0.0)
    limiter.take("new", 5.0)  # both have refilled by now: dropped
    assert len(limiter._buckets) <= 2
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2)
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    limiter.take("c", 0.0)  # none refilled: the oldest goes
    assert set(limiter._buckets) == {"b", "c"}


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after(0.01) == 1
    assert retry_after(2.3) == 3
