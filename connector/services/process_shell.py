"""The process shell: what the negotiation and transfer shells share. Ids, clocks, backoff, how a peer's
reason is read, and the process plumbing (:class:`ProcessShell`): a lock per process, the timer for
retries and deadlines, callers waiting for a final state, and the delivery of a process's pending
message (one attempt, a retry with backoff, or giving up with a reason that names the step and the peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar, cast

import msgspec

from connector import jsonbound
from connector.errors import Conflict, OutboundRefused, PeerError
from connector.faults import crash_point
from connector.logging import get_logger
from connector.protocol import messages as m
from connector.protocol.errors import MessageError
from connector.protocol.negotiation import Role
from connector.services.ports import OutboundClient

RETRY_BASE_S = 0.2
RETRY_MAX_S = 10.0


def now_text(at: float | None = None) -> str:
    """An ISO 8601 UTC timestamp with milliseconds: now, or the POSIX time *at*."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


log = get_logger(component="process")
Key = tuple[str, str]


def log_failure(task: asyncio.Task[Any]) -> None:
    """A background task's done-callback: an exception it ended with is logged (a JSON line with its traceback)
    at once, instead of asyncio's "exception was never retrieved" whenever the task happens to be collected."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task failed", task=task.get_name(), error=f"{type(exc).__name__}: {str(exc)[:300]}",
                  exc_info=exc)


R = TypeVar("R", bound="_Process")

#: Marks a pending message that opens a process: its acknowledgement carries the peer's pid, and a refusal
#: of it is never reconciled through the peer's view (there is none yet).
OPENING = "opening"


class ProcessType(msgspec.Struct, frozen=True):
    """What the shell needs of a process type's protocol module (``connector.protocol.negotiation`` or
    ``connector.protocol.transfer``) to deliver its messages."""

    #: "negotiation" or "transfer" (logs).
    name: str
    #: The DSP path of the processes (``…/negotiations/:pid``): where the peer's view is read.
    path: str
    kinds: type[Enum]
    states: type[Enum]
    transitions: Mapping[Any, Mapping[Any, Any]]
    #: The DSP body a peer acknowledges an opening message with (it names the provider's pid).
    ack: type[Any]
    #: Crash points right after a delivery are named ``{crash_prefix}{kind name, lower case}``.
    crash_prefix: str


class _Process(Protocol):
    """What the shell reads of a process record (read-only: the records are frozen)."""

    @property
    def participant_id(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def state(self) -> Enum: ...
    @property
    def counterparty_did(self) -> str: ...
    @property
    def counterparty_address(self) -> str: ...
    @property
    def provider_pid(self) -> str | None: ...
    @property
    def consumer_pid(self) -> str | None: ...
    @property
    def pending(self) -> dict[str, Any] | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def next_attempt_at(self) -> float | None: ...
    @property
    def deliver_by(self) -> float | None: ...
    @property
    def expires_at(self) -> float | None: ...


def _replace(record: R, **changes: Any) -> R:
    replaced: R = msgspec.structs.replace(cast(Any, record), **changes)
    return replaced


class ProcessShell(Generic[R]):
    """The plumbing both process shells (negotiation, transfer) share: a lock per process, background
    tasks, callers waiting for a final state, one timer that wakes only when a retry or a deadline of
    some process is due (never a polling loop), and the delivery of pending messages. Subclasses say what
    their process type is (:attr:`process`), how a process is loaded and committed, when it is final, what
    the node's own next move is, and what happens when its deadline passes.

    *client* sends the messages; *clock* (POSIX seconds) times the retries and deadlines."""

    process: ProcessType

    def __init__(self, client: OutboundClient, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock
        self._log = get_logger(component=self.process.name)
        #: The lock of each process someone holds or awaits: an entry goes with the last of them, so the table
        #: stays as small as the work in progress, however many processes the node has seen.
        self._locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = weakref.WeakValueDictionary()
        self._waiters: dict[Key, list[asyncio.Future[R]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: dict[Key, float] = {}
        self._wake = asyncio.Event()
        #: When the timer wakes next by itself (its sleep's deadline; infinity: only when woken).
        self._wakes_at = float("inf")
        #: Processes scheduled sooner than that during the running step (:meth:`_schedule`).
        self._to_wake: list[Key] = []
        self._timer: asyncio.Task[None] | None = None

    # what a subclass provides

    def is_final(self, record: R) -> bool:
        raise NotImplementedError

    async def load(self, key: Key) -> R | None:
        raise NotImplementedError

    async def commit(self, old: R, new: R, event: str, detail: str = "") -> R:
        """Store *new* in place of *old* (still in *old*'s state) with its history event; then notify."""
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

    async def _on_deadline(self, participant: Any, record: R, now: float) -> None:
        """The process's deadline (``expires_at``) passed and it has no message pending (with its lock)."""
        raise NotImplementedError

    async def _acknowledged(self, old: R, new: R, event: str, detail: str) -> R:
        """The peer acknowledged the pending message of *old*: store *new*, without it (*event*: the history's
        line, if any). By default committed at once."""
        return await self.commit(old, new, event, detail)

    def _delivered(self, participant: Any, record: R, kind: Enum) -> None:
        """The pending message *kind* was acknowledged (committed): by default, take the node's next move."""
        self._spawn(self._react(participant, record))

    def _undeliverable(self, record: R) -> None:
        """The process was terminated because its pending message could not be delivered (committed)."""

    # delivery

    async def _deliver(self, participant: Any, record: R) -> R:
        """One delivery attempt of the pending message (call with the process's lock); on failure, schedule
        a retry or give up."""
        pending = record.pending
        assert pending is not None
        kind = self.process.kinds[pending["kind"]]
        url = str(pending["url"])
        error: str | None = None
        ack: Any = None
        try:
            response = await self._client.request("POST", url, json_body=pending["body"], signer=participant.signer)
            # Any 2xx acknowledges. DSP 2025-1 asks for 201 on an opening message, but what matters is the
            # process it carries: peers that answer 200 (the compatibility kit does) opened it too.
            if response.status >= 300:
                error = f"answered {response.status}: {peer_reason(response.body)}"
                if 400 <= response.status < 500 and response.status not in (401, 408, 409, 425, 429):
                    if await self._peer_is_past(participant, record):
                        error = None  # it had arrived before (its answer was lost): delivered
                    else:
                        # The peer refused the message itself: retrying the same message cannot help.
                        return await self._give_up(record, kind, url, error, retry=False)
            elif pending.get(OPENING):
                ack = m.decode(response.json(), self.process.ack)
        except OutboundRefused as exc:  # the guard's answer does not change on a retry
            return await self._give_up(record, kind, url, exc.message, retry=False)
        except (PeerError, MessageError) as exc:
            error = exc.message
        if error is None:
            crash_point(f"{self.process.crash_prefix}{kind.name.lower()}")
            updated = _replace(record, pending=None, attempts=0, next_attempt_at=None, deliver_by=None)
            if ack is not None and not record.provider_pid:
                updated = _replace(updated, provider_pid=ack.providerPid)
            # A first-attempt delivery is already in the history as the message-out; a retried one is noted.
            event = "delivered" if record.attempts else ""
            updated = await self._acknowledged(record, updated, event,
                                               f"{kind.value} acknowledged after {record.attempts + 1} attempts")
            self._delivered(participant, updated, kind)
            return updated
        return await self._give_up(record, kind, url, error, retry=True)

    async def peer_state(self, participant: Any, record: R) -> Any:
        """The process's state as the peer sees it (DSP ``GET …/:pid``), or None if it does not say."""
        remote_pid = record.consumer_pid if record.role == Role.PROVIDER else record.provider_pid
        if not remote_pid:
            return None
        try:
            response = await self._client.request(
                "GET", f"{record.counterparty_address}/{self.process.path}/{m.path_segment(remote_pid)}",
                signer=participant.signer)
            if response.status != 200:
                return None
            return self.process.states(m.decode(response.json(), self.process.ack).state)
        except (PeerError, MessageError, ValueError):
            return None

    async def _peer_is_past(self, participant: Any, record: R) -> bool:
        """Whether the peer's view of the process is already where our pending message leads (or one step
        further), i.e. an earlier delivery of the same message arrived."""
        if (record.pending or {}).get(OPENING):
            return False
        theirs = await self.peer_state(participant, record)
        ours = record.state
        return theirs is not None and (theirs == ours or theirs in self.process.transitions[ours].values())

    async def _give_up(self, record: R, kind: Enum, url: str, error: str, *, retry: bool) -> R:
        """A failed attempt: retry after a backoff while ``deliver_by`` allows (and *retry*), else end the
        process (TERMINATED with the reason; a final process only drops its pending message)."""
        attempts = record.attempts + 1
        now = self._clock()
        delay = backoff(attempts)
        if retry and record.deliver_by is not None and now + delay <= record.deliver_by:
            updated = _replace(record, attempts=attempts, next_attempt_at=now + delay)
            return await self.commit(record, updated, "retry",
                                     f"{kind.value} to {url} failed ({error}); attempt {attempts + 1} in {delay:.1f} s")
        reason = (f"{kind.value} could not be delivered to {record.counterparty_did} ({url}) after {attempts} "
                  f"attempt(s): {error}")
        if self.is_final(record):
            updated = _replace(record, pending=None, next_attempt_at=None, deliver_by=None)
            return await self.commit(record, updated, "error", reason)
        updated = _replace(record, state=self.process.states["TERMINATED"], reason=reason, pending=None,
                           next_attempt_at=None, deliver_by=None)
        updated = await self.commit(record, updated, "state", f"TERMINATED: {reason}")
        self._undeliverable(updated)
        self._log.warning(f"{self.process.name} terminated", id=record.id, reason=reason)
        return updated

    # shared

    async def resume(self) -> int:
        """After a (re)start: re-deliver pending messages, take our own moves, re-arm deadlines."""
        self._start_timer()
        return await self.resume_participant(None)

    async def resume_participant(self, participant_id: str | None) -> int:
        """Re-deliver pending messages, take our own moves and re-arm deadlines of one participant's processes
        (all participants' with None): after a start, or when a suspended participant is served again.

        When several node processes share the store, only the processes this one takes over (:meth:`_claim`: no
        live process drives them) are resumed here; the others are their drivers' (:meth:`adopt`)."""
        claimed = await self._claim(participant_id)
        if claimed is not None and not claimed:
            return 0  # nothing taken over (after each heartbeat, usually): no need to read the unfinished ones
        records = [r for r in await self._unfinished() if participant_id is None or r.participant_id == participant_id]
        if claimed is not None:
            records = [r for r in records if (r.participant_id, r.id) in claimed]
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

    async def adopt(self) -> int:
        """Resume the processes whose driver died (several node processes sharing the store; the leases service
        calls this after each heartbeat). 0 when there are none, or one process has the store."""
        return await self.resume_participant(None) if await self._drives_shared() else 0

    def _process_id(self) -> str | None:
        """This node process's id among those sharing the store; None while one process has the store (it drives
        every process)."""
        return None

    async def _claim_undriven(self, participant_id: str | None) -> set[Key]:
        """Take over, in the store, the unfinished processes (of *participant_id*, or all) that no live node
        process drives; their keys. Asked only of a shared store."""
        raise NotImplementedError

    async def _driver(self, key: Key) -> str | None:
        """The node process that drives *key* as the store says (None: none named). Asked only of a shared store."""
        raise NotImplementedError

    async def _drives_shared(self) -> bool:
        """Whether several node processes may share the store (processes have drivers)."""
        return self._process_id() is not None

    async def _claim(self, participant_id: str | None) -> set[Key] | None:
        """:meth:`_claim_undriven` on a shared store; None when one process has the store."""
        return None if self._process_id() is None else await self._claim_undriven(participant_id)

    async def _driven_elsewhere(self, key: Key) -> bool:
        """Whether another node process drives *key* now (it committed its last move, or took it over)."""
        me = self._process_id()
        return me is not None and (await self._driver(key)) not in (None, me)

    async def _on_due(self, key: Key) -> None:
        """The timer's step for one process: a pending message first (also the last one of a process that
        is over), else its deadline. Nothing if another node process drives it now (its own timer does)."""
        participant = self._participant(key)
        if participant is None:
            return
        try:
            async with self.lock(key):
                record = await self.load(key)
                if record is None or await self._driven_elsewhere(key):
                    return
                now = self._clock()
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
        except Exception as exc:
            # Not forgotten: the step is taken again after a pause (a full disk that fails a commit now, for
            # one, may have room again then), so that a retry or deadline still happens.
            # Another move came first (a peer's message, another node process sharing the store): the store's
            # compare-and-set refused this one (409), nothing of it was stored; no fault.
            if isinstance(exc, Conflict) or getattr(exc, "status", None) == 409:
                log.info("timer step found the process moved meanwhile; taken again later",
                         process=type(self).__name__, id=key[1], reason=exc.message)
            else:
                log.exception("timer step failed", process=type(self).__name__, id=key[1])
            if key not in self._due:
                self._due[key] = self._clock() + RETRY_MAX_S
                self._wake.set()

    def _deliver_soon(self, key: Key) -> None:
        """Deliver the pending message just committed for *key* from a task of its own, once the caller has
        answered the peer whose message it follows (that peer holds its own lock on the process until it has
        the answer). The timer need not also look at it: the attempt's outcome schedules what comes next."""
        self._due.pop(key, None)
        self._spawn(self._on_due(key))

    def forget(self, participant_id: str) -> None:
        """A participant is no longer hosted: no retry or deadline of its processes is due any more (its
        processes are being deleted; the timer would find no participant for them anyway)."""
        for key in [k for k in self._due if k[0] == participant_id]:
            del self._due[key]
        self._wake.set()

    def lock(self, key: Key) -> asyncio.Lock:
        """The lock of process *key*: the same one for everyone who holds it or waits for it (take it with
        ``async with``; it is dropped once no one does)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)

    def _start_timer(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._run_timer())
        self._timer.add_done_callback(log_failure)

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
            self._due.pop(key, None)  # the timer may still wake for it: it then finds nothing due
        else:
            self._due[key] = due
            # Only if sooner than the timer wakes anyway (most moves push a deadline out), or if the clock has
            # passed that time already (a clock that jumps). Once the caller's step is over: a message committed
            # to be delivered at once is taken off the timer by then (``_deliver_soon``).
            if due < self._wakes_at or self._clock() >= self._wakes_at:
                if not self._to_wake:
                    asyncio.get_running_loop().call_soon(self._wake_if_due)
                self._to_wake.append(key)

    def _wake_if_due(self) -> None:
        keys, self._to_wake = self._to_wake, []
        now = self._clock()
        for key in keys:
            due = self._due.get(key)
            if due is not None and (due < self._wakes_at or now >= self._wakes_at):
                self._wake.set()
                return

    def _take_due(self, now: float) -> list[Key]:
        """The processes whose retry or deadline has come by *now* (no longer scheduled)."""
        keys = [k for k, due in self._due.items() if due <= now]
        for key in keys:
            del self._due[key]
        return keys

    async def run_due(self) -> int:
        """Take every step that is due by the clock now and wait until they are done: what the timer does
        when it wakes (for a clock that does not move by itself). Returns how many processes were due."""
        keys = self._take_due(self._clock())
        await asyncio.gather(*(self._on_due(key) for key in keys))
        return len(keys)

    async def _run_timer(self) -> None:
        while True:
            now = self._clock()
            for key in self._take_due(now):
                self._spawn(self._on_due(key))
            self._wake.clear()
            timeout = max(0.0, min(self._due.values()) - now) if self._due else None
            self._wakes_at = float("inf") if timeout is None else now + timeout
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that arrives as the
            # event is set (which happens as processes end while the node stops), and the timer then never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
