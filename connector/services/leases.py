"""Several node processes on one store: each process's heartbeat, and who takes over a dead process's work.

A node whose store is PostgreSQL may run as several processes behind one address (``tds serve --port …``); every
process serves every request. What a process does on its own afterwards — a negotiation's or a transfer's
retries, deadlines and next moves, a pull in progress — is driven by the process that committed the process's
last move: its row names that process (``driver``), and any other process's timer for it does nothing.

Each process records itself in ``node_processes`` and renews its heartbeat every :data:`HEARTBEAT_S` seconds,
for :data:`ALIVE_S` seconds. After each heartbeat it takes over (``claim``: one write, so each row goes to one
process) the unfinished negotiations and transfers whose driver's heartbeat ran out or which have none, and
resumes them as after a restart; so the work of a process that was killed is picked up within about
:data:`ALIVE_S` + :data:`HEARTBEAT_S` seconds, and a process stopped gracefully hands its work on at once (its
row goes with it). A process whose heartbeat ran out while it stalled renews it when it runs again; what was
taken over meanwhile is no longer its own: its timers find another driver and do nothing, and its state changes
are refused by the store's compare-and-set, but a pull it had in progress is not stopped (the data plane is not
fenced by the driver), hence a heartbeat well above the longest pause a process may take.

Also after each heartbeat:

- the participants other processes added, removed, suspended or resumed are taken up
  (:meth:`~connector.services.participants.ParticipantRegistry.follow`);
- the fair-use rate limits are split between the live processes (each allows its share of the configured
  rate), so that the node as a whole allows what its configuration says.

With SQLite (one process) none of this runs: :attr:`Store.process_id` stays None and the node drives
everything, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from connector.logging import get_logger
from connector.store.db import Database, Store

log = get_logger(component="leases")

#: How long a heartbeat keeps a process alive, and how often it is renewed.
ALIVE_S = 10.0
HEARTBEAT_S = 3.0
#: A dead process's row is deleted this long after its heartbeat ran out (its work was taken over by then).
FORGET_AFTER_S = 300.0


class Leases:
    """The heartbeat of this process among those sharing the store, and the take-over of dead ones' work.

    *adopters*: each resumes the unfinished processes of its kind no live node process drives, returning how
    many (``ProcessShell.adopt``); *followers*: take up what other processes changed (participants);
    *processes*: told how many node processes are alive after each heartbeat (the rate limits' split)."""

    def __init__(self, store: Store, *, adopters: Sequence[Callable[[], Awaitable[int]]] = (),
                 followers: Sequence[Callable[[], Awaitable[object]]] = (),
                 processes: Callable[[int], None] = lambda _: None, heartbeat_s: float = HEARTBEAT_S,
                 alive_s: float = ALIVE_S) -> None:
        self.store = store
        self.adopters = list(adopters)
        self.followers = list(followers)
        self.processes = processes
        self.heartbeat_s = heartbeat_s
        self.alive_s = alive_s
        self.alive = 1
        self._task: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """Whether several processes may share the store (PostgreSQL)."""
        return self.store.postgres

    async def register(self) -> None:
        """Give this process its id and its first heartbeat (before it resumes or commits anything)."""
        if not self.shared:
            return
        process_id = f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.store.process_id = process_id
        await self.store.write(self._beat, durable=True)
        log.info("node process registered", process=process_id, alive_s=self.alive_s)

    def start(self) -> None:
        if self.shared and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tds-leases")

    async def stop(self) -> None:
        """Stop the heartbeat and leave: the other processes take this one's work over at their next heartbeat."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        me = self.store.process_id
        if me is not None:
            with contextlib.suppress(Exception):  # a store that is gone: the heartbeat runs out instead
                await self.store.write(lambda db: db.execute("DELETE FROM node_processes WHERE id = ?", [me]))
            log.info("node process left", process=me)

    def _beat(self, db: Database) -> int:
        """Renew this process's heartbeat (registering it again if it was given up), forget long-dead processes;
        the number of live processes. Times are the database server's: processes on machines whose clocks
        differ still agree on who is alive."""
        server = db.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0]
        self.store.clock_offset = float(server) - time.time()
        now = self.store.now()
        me = self.store.process_id
        renewed = db.execute("UPDATE node_processes SET alive_until = ? WHERE id = ?", [now + self.alive_s, me])
        if renewed.rowcount == 0:
            db.execute("INSERT INTO node_processes (id, host, pid, started_at, alive_until) VALUES (?, ?, ?, ?, ?)",
                       [me, socket.gethostname()[:64], os.getpid(), now, now + self.alive_s])
        db.execute("DELETE FROM node_processes WHERE alive_until < ?", [now - FORGET_AFTER_S])
        return int(db.execute("SELECT COUNT(*) FROM node_processes WHERE alive_until >= ?", [now]).fetchone()[0])

    async def tick(self) -> int:
        """One heartbeat, then the take-over and the rest; the number of processes taken over."""
        alive = await self.store.write(self._beat, durable=True)
        if alive != self.alive:
            log.info("node processes alive", count=alive, was=self.alive)
        self.alive = max(1, alive)
        self.processes(self.alive)
        for follow in self.followers:
            await follow()
        adopted = 0
        for adopt in self.adopters:
            adopted += await adopt()
        if adopted:
            log.warning("took over the work of node processes that stopped", processes_taken_over=adopted)
        return adopted

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store unreachable for a while: the next heartbeat tries again
                log.warning("heartbeat failed", error=str(exc)[:300])
