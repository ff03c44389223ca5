"""Whether the node can serve: ``/readyz`` on the public listener, for load balancers.

Ready means the node has started (and is not stopping), a write to the store commits, the participants'
keys are loaded, and the data folder's disk has free space above the configured threshold
(``node.min_free_disk_bytes``, ``node.min_free_disk_percent``). The answer names each check; why one fails
in detail (free bytes, the store's error) goes to the log, once per change, not to whoever asks. A check
is reused for ``cache_s`` so that probes, from anyone on the public port, cost the node at most one store
write and one ``statvfs`` per second.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import msgspec

from connector.logging import get_logger

log = get_logger(component="health")
OK = "ok"


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


def disk_problem(usage: DiskUsage, min_free_bytes: int, min_free_percent: float) -> str | None:
    """Why *usage* is below the threshold (in detail, for the log), or None."""
    if usage.free < min_free_bytes:
        return f"{usage.free} bytes free, below node.min_free_disk_bytes ({min_free_bytes})"
    if usage.total > 0 and usage.free * 100 < min_free_percent * usage.total:
        return (f"{100 * usage.free / usage.total:.2f} % free, below node.min_free_disk_percent "
                f"({min_free_percent:g} %)")
    return None


class Readiness(msgspec.Struct, frozen=True):
    #: check -> "ok", or what fails in words fit for anyone who asks
    checks: dict[str, str]
    #: check -> why it fails, in detail (for the log only)
    details: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(v == OK for v in self.checks.values())

    def body(self) -> dict[str, object]:
        """The public answer: the status, each check, and the reasons when not ready."""
        answer: dict[str, object] = {"status": "ready" if self.ready else "not-ready", "checks": self.checks}
        if not self.ready:
            answer["reasons"] = [f"{name}: {state}" for name, state in self.checks.items() if state != OK]
        return answer


class Health:
    """Readiness checks of one node. *phase* is ``starting``, ``running`` or ``stopping``; *store_problem*
    is None when a write commits (``Store.check_writable``); *keys_loaded* whether the participants' keys
    are loaded."""

    def __init__(self, data_dir: Path, *, phase: Callable[[], str],
                 store_problem: Callable[[], Awaitable[str | None]], keys_loaded: Callable[[], bool],
                 min_free_bytes: int, min_free_percent: float, cache_s: float = 1.0,
                 disk_usage: Callable[[Path], DiskUsage] = lambda path: DiskUsage(*shutil.disk_usage(path)),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir
        self.phase = phase
        self.store_problem = store_problem
        self.keys_loaded = keys_loaded
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self.cache_s = cache_s
        self.disk_usage = disk_usage
        self.clock = clock
        self._lock = asyncio.Lock()
        self._last: tuple[float, Readiness] | None = None

    async def ready(self) -> Readiness:
        """The node's readiness, checked now or at most ``cache_s`` ago (concurrent callers share one check)."""
        async with self._lock:
            if self._last is not None and self.clock() - self._last[0] < self.cache_s:
                return self._last[1]
            found = await self._check()
            before = self._last[1] if self._last is not None else None
            self._last = (self.clock(), found)
        if before is None or before.checks != found.checks:
            if found.ready:
                log.info("node ready")
            else:
                log.warning("node not ready", **found.details)
        return found

    async def _check(self) -> Readiness:
        checks: dict[str, str] = {}
        details: dict[str, str] = {}
        phase = self.phase()
        checks["node"] = OK if phase == "running" else phase
        if phase != "running":
            details["node"] = phase
        problem = await self.store_problem()
        checks["store"] = OK if problem is None else "not writable"
        if problem is not None:
            details["store"] = problem
        loaded = self.keys_loaded()
        checks["keys"] = OK if loaded else "not loaded"
        if not loaded:
            details["keys"] = "the participants' keys are not loaded"
        try:
            usage = await asyncio.to_thread(self.disk_usage, self.data_dir)
        except OSError as exc:
            checks["disk"], details["disk"] = "free space unknown", f"{type(exc).__name__}: {exc}"
        else:
            low = disk_problem(usage, self.min_free_bytes, self.min_free_percent)
            checks["disk"] = OK if low is None else "free space below the threshold"
            if low is not None:
                details["disk"] = low
        return Readiness(checks, details)
