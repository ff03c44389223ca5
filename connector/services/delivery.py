"""What the negotiation and transfer shells share: ids, clocks, backoff, how a peer's reason is read, and
the process plumbing (:class:`ProcessShell`)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from connector import jsonbound
from connector.logging import get_logger

RETRY_BASE_S = 0.2
RETRY_MAX_S = 10.0


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_pid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


#: The jitter's own generator: whoever seeds the global one (a test framework, a library) would otherwise
#: line up the retries of every process, and the node's draws would disturb theirs.
_jitter = random.Random()


def backoff(attempt: int) -> float:
    """Exponential backoff with ±20 % jitter: 0.2 s, 0.4 s, 0.8 s … capped at 10 s."""
    delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, attempt - 1))
    return float(delay * _jitter.uniform(0.8, 1.2))


def message_reason(message: Any, who: str, verb: str = "terminated") -> str:
    """A termination's (or suspension's) code and reasons as one bounded line."""
    reasons = [str(r if not isinstance(r, dict) else r.get("@value", r)) for r in (message.reason or [])][:8]
    text = "; ".join(reasons) if reasons else "no reason given"
    code = f" (code {message.code})" if message.code else ""
    return f"{verb} by {who}{code}: {text}"[:1000]


def peer_reason(body: bytes) -> str:
    """The reason a peer gave in an error body, bounded."""
    try:
        data = jsonbound.loads(body)
    except ValueError:
        return "a non-JSON body"
    if isinstance(data, dict):
        reason = data.get("reason") or data.get("message")
        if isinstance(reason, list):
            reason = "; ".join(str(r) for r in reason[:4])
        if reason:
            return str(reason)[:300]
    return "no reason given"


log = get_logger(component="delivery")
Key = tuple[str, str]
R = TypeVar("R", bound="_Process")


class _Process(Protocol):
    """What the shell reads of a process record (read-only: the records are frozen)."""

    @property
    def participant_id(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def pending(self) -> dict[str, Any] | None: ...
    @property
    def next_attempt_at(self) -> float | None: ...
    @property
    def expires_at(self) -> float | None: ...


class ProcessShell(Generic[R]):
    """The plumbing both process shells (negotiation, transfer) share: a lock per process, background
    tasks, callers waiting for a final state, and one timer that wakes only when a retry or a deadline of
    some process is due (never a polling loop). Subclasses say how a process is loaded, when it is final,
    how its pending message is delivered, and what happens when its deadline passes."""

    def __init__(self) -> None:
        self._locks: dict[Key, asyncio.Lock] = {}
        self._waiters: dict[Key, list[asyncio.Future[R]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

    # what a subclass provides

    def is_final(self, record: R) -> bool:
        raise NotImplementedError

    async def load(self, key: Key) -> R | None:
        raise NotImplementedError

    def _participant(self, key: Key) -> Any:
        """The participant a process belongs to (None if it is no longer hosted)."""
        raise NotImplementedError

    async def _unfinished(self) -> list[R]:
        """Every process not over, or whose last message is still to be delivered (for :meth:`resume`)."""
        raise NotImplementedError

    async def _react(self, participant: Any, record: R) -> None:
        """Take this node's own next move on a process, if it has one."""
        raise NotImplementedError

    async def _deliver(self, participant: Any, record: R) -> R:
        """One delivery attempt of the process's pending message (call with its lock)."""
        raise NotImplementedError

    async def _on_deadline(self, participant: Any, record: R, now: float) -> None:
        """The process's deadline (``expires_at``) passed and it has no message pending (with its lock)."""
        raise NotImplementedError

    # shared

    async def resume(self) -> int:
        """After a (re)start: re-deliver pending messages, take our own moves, re-arm deadlines."""
        self._start_timer()
        records = await self._unfinished()
        for record in records:
            participant = self._participant((record.participant_id, record.id))
            if participant is None:
                continue
            self._schedule(record)
            if record.pending is None:
                self._spawn(self._react(participant, record))
        if records:
            log.info("processes resumed", process=type(self).__name__, count=len(records))
        return len(records)

    async def _on_due(self, key: Key) -> None:
        """The timer's step for one process: a pending message first (also the last one of a process that
        is over), else its deadline."""
        participant = self._participant(key)
        if participant is None:
            return
        try:
            async with self.lock(key):
                record = await self.load(key)
                if record is None:
                    return
                now = time.time()
                if record.pending is not None:
                    if (record.next_attempt_at or 0) <= now:
                        await self._deliver(participant, record)
                    else:
                        self._schedule(record)
                    return
                if self.is_final(record) or record.expires_at is None:
                    return
                if record.expires_at > now:
                    self._schedule(record)
                    return
                await self._on_deadline(participant, record, now)
        except Exception:
            log.exception("timer step failed", process=type(self).__name__, id=key[1])

    def forget(self, participant_id: str) -> None:
        """A participant is no longer hosted: no retry or deadline of its processes is due any more (its
        processes are being deleted; the timer would find no participant for them anyway)."""
        for key in [k for k in self._due if k[0] == participant_id]:
            del self._due[key]
        self._wake.set()

    def lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_timer(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._run_timer())

    async def _close(self, *others: asyncio.Task[Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        tasks = [*self._tasks, *others]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *([self._timer] if self._timer else []), return_exceptions=True)
        self._timer = None

    def _notify(self, record: R) -> None:
        """After every commit: re-arm the timer, and wake the callers waiting for a final state."""
        self._schedule(record)
        if not self.is_final(record):
            return
        for future in self._waiters.pop((record.participant_id, record.id), []):
            if not future.done():
                future.set_result(record)

    async def wait(self, participant_id: str, process_id: str, timeout_s: float) -> R | None:
        """Wait until the process is in a final state (or *timeout_s* passes); return it."""
        key = (participant_id, process_id)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            record = await self.load(key)
            if record is None or self.is_final(record) or timeout_s <= 0:
                return record
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout_s)
            except TimeoutError:
                return await self.load(key)
        finally:
            waiters = self._waiters.get(key, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(key, None)

    def _schedule(self, record: R) -> None:
        """The next time the timer must look at *record*: its retry, else its deadline, else never."""
        key = (record.participant_id, record.id)
        due = record.next_attempt_at if record.pending is not None else record.expires_at
        if due is None:
            self._due.pop(key, None)
        else:
            self._due[key] = due
        self._wake.set()

    async def _run_timer(self) -> None:
        while True:
            now = time.time()
            for key in [k for k, due in self._due.items() if due <= now]:
                del self._due[key]
                self._spawn(self._on_due(key))
            self._wake.clear()
            timeout = max(0.0, min(self._due.values()) - now) if self._due else None
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that arrives as the
            # event is set (which happens as processes end while the node stops), and the timer then never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
