"""SQLite storage: WAL, migrations in code, one writer thread with group commit, pooled readers.

- Every write runs as a job on the single writer thread. The writer drains the jobs that are waiting,
  runs each inside its own SAVEPOINT (one job's failure rolls back only that job) and commits them all
  with one COMMIT, so concurrent writers share one commit. The event loop never blocks on SQLite.
- Durability: in WAL mode every commit that returned survives a crash of the node's process
  (``synchronous=NORMAL``). A job that must also survive a power loss or an OS crash (the usage log, for
  instance) asks for ``durable=True``; its whole batch is then committed with ``synchronous=FULL``, i.e.
  fsynced before the job's caller continues.
- Reads run on a small thread pool; each thread has its own read connection (WAL lets them read while
  the writer writes).
- One database for all participants of the node; every business table carries ``participant_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from connector import filemodes
from connector.errors import StorageError
from connector.store.migrations import MIGRATIONS

T = TypeVar("T")
Job = tuple[Callable[[sqlite_utils.Database], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]", bool]

MAX_BATCH = 512


def _connect(path: Path, *, readonly: bool = False) -> sqlite_utils.Database:
    if not readonly:
        # SQLite would make a new database 0644; its -wal and -shm files take the database's mode.
        filemodes.ensure_private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    else:
        conn.execute("PRAGMA query_only = ON")
    return sqlite_utils.Database(conn)


def migrate(db: sqlite_utils.Database) -> int:
    """Apply the migrations the database has not seen yet; return the schema version."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    for number, statements in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version = number
    return version


class Store:
    """The node's database. Use :meth:`write` for changes and :meth:`read` for queries."""

    def __init__(self, path: Path, *, readers: int = 4) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="tds-store-read")
        self._local = threading.local()
        self._read_connections: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()
        self.commits = 0
        self.jobs = 0
        #: Run on the writer thread at the end of every batch, inside its transaction, before COMMIT (the
        #: usage log signs its chain heads there: once per commit group).
        self.batch_hooks: list[Callable[[sqlite_utils.Database], None]] = []

    def open_sync(self) -> None:
        """Create or migrate the database and start the writer thread."""
        filemodes.make_dir(self.path.parent)
        db = _connect(self.path)
        # -wal and -shm left by an earlier run keep whatever mode they had then.
        for companion in (self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                companion.chmod(filemodes.PRIVATE_FILE)
        migrate(db)
        self._writer = threading.Thread(target=self._run_writer, args=(db,), name="tds-store-writer", daemon=True)
        self._writer.start()

    async def open(self) -> None:
        await asyncio.to_thread(self.open_sync)

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._readers.shutdown(wait=True)
        with self._lock:
            for db in self._read_connections:
                db.conn.close()
            self._read_connections.clear()

    # -- writes -------------------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite_utils.Database], T], *, durable: bool = False) -> T:
        """Run *fn* on the writer thread inside a transaction; return once it is committed.

        ``durable=True``: committed with an fsync (survives a power loss, not only a process crash).
        """
        if self._writer is None:
            raise StorageError("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, loop, future, durable))
        return await future

    def _run_writer(self, db: sqlite_utils.Database) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch: list[Job] = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit_batch(db, batch)
        db.conn.close()

    def _commit_batch(self, db: sqlite_utils.Database, batch: list[Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        durable = any(job[3] for job in batch)
        try:
            if durable:
                db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            for fn, _, _, _ in batch:
                db.execute("SAVEPOINT job")
                try:
                    result = fn(db)
                except BaseException as exc:
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    db.execute("RELEASE job")
                    outcomes.append((True, result))
            for hook in self.batch_hooks:
                hook(db)
            db.execute("COMMIT")
            self.commits += 1
            self.jobs += len(batch)
        except Exception as exc:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            error = StorageError(f"commit failed: {exc}")
            outcomes = [(False, error)] * len(batch)
        finally:
            if durable:
                db.execute("PRAGMA synchronous = NORMAL")
        # One wake-up per event loop for the whole batch, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, loop, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)

    # -- reads --------------------------------------------------------------------------------------

    def _reader(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path, readonly=True)
            self._local.db = db
            with self._lock:
                self._read_connections.append(db)
        return db

    async def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))

    def read_sync(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """For command-line tools that run before or without the node (e.g. ``tds init``)."""
        db = _connect(self.path)
        try:
            return fn(db)
        finally:
            db.conn.close()


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        _settle(future, ok, value)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
