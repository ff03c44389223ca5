"""The node's store: SQLite (WAL, the default) or PostgreSQL; migrations in code, one writer thread with group
commit, pooled readers.

- Every write runs as a job on the single writer thread. The writer drains the jobs that are waiting,
  runs each inside its own SAVEPOINT (one job's failure rolls back only that job) and commits them all
  with one COMMIT, so concurrent writers share one commit. The event loop never waits for a write.
- Durability: in WAL mode every commit that returned survives a crash of the node's process
  (``synchronous=NORMAL``). A job that must also survive a power loss or an OS crash (the usage log, for
  instance) asks for ``durable=True``; its whole batch is then committed with ``synchronous=FULL``, i.e.
  fsynced before the job's caller continues.
- Reads run on a small thread pool; each thread has its own read connection (WAL lets them read while
  the writer writes). A lookup of a few rows by an index runs on the event loop's own read connection
  (:meth:`Store.lookup`): it takes less time than the hop to a reader thread.
- One database for all participants of the node; every business table carries ``participant_id``.
- PostgreSQL (:mod:`connector.store.pg`): the same SQL, translated; the same writer thread and readers, each
  with a connection of its own. Several node processes may share the database: each write transaction first
  takes the schema's advisory lock, so writes are serialised across processes as they are in one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from connector import filemodes
from connector.errors import SchemaVersionError, StorageError
from connector.store.location import PgLocation
from connector.store.migrations import MIGRATIONS
from connector.store.sqlite import Database

if TYPE_CHECKING:  # the driver and the SQL translation load only for a store on PostgreSQL
    from connector.store import pg

T = TypeVar("T")
Job = tuple[Callable[[Database], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]", bool]

MAX_BATCH = 512


#: Where a store is: an SQLite file, or a schema of a PostgreSQL database.
Location = Path | PgLocation


def _connect(path: Location, *, readonly: bool = False, dialect: pg.Dialect | None = None) -> Database:
    if isinstance(path, PgLocation):
        from connector.store import pg

        return pg.open_database(path, dialect or pg.Dialect(), readonly=readonly)  # type: ignore[return-value]
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
    return Database(conn)


#: A schema version above this is no release's (each release adds a handful of migrations): the file is
#: damaged or not a TDS Connector database, rather than one written by a later release.
MAX_SCHEMA_VERSION = 10_000


def check_schema_version(found: int, where: object = "the database") -> None:
    """Refuse a database whose schema version (``PRAGMA user_version``) this software cannot run on.

    Newer than the newest migration here: a later release wrote it, and running on it could misread or damage
    what that release keeps (SQLite has no notion of "forward compatible"); the operator is told which release
    to install. Negative or absurdly high: no release wrote that number at all.
    """
    known = len(MIGRATIONS)
    if 0 <= found <= known:
        return
    if found < 0 or found > MAX_SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has schema version {found}, which no release of this software writes (schema versions "
            f"run from 0 to {known} in this one): the file is damaged or not a TDS Connector database; restore it "
            "from a backup. Nothing was changed.", found=found, known=known)
    raise SchemaVersionError(
        f"{where} has schema version {found}, but the newest schema this software knows is {known}: a later "
        f"release wrote it. Install a release that knows schema {found} or newer (or restore a backup made with "
        "this release). Nothing was changed.", found=found, known=known)


def migrate(db: Database, where: object = "the database", *, upto: int | None = None) -> int:
    """Apply the migrations the database has not seen yet (those up to schema *upto* only, if given: how the
    upgrade tests build a database as an earlier release left it); return the schema version.

    Raises :class:`~connector.errors.SchemaVersionError` (before changing anything) for a schema version this
    software does not know, and :class:`~connector.errors.StorageError` for a migration that fails (rolled back:
    the database stays at the version before it)."""
    if getattr(db, "dialect_name", "") == "postgresql":
        return _migrate_postgres(db, where, upto=upto)  # type: ignore[arg-type]
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    check_schema_version(version, where)
    for number, statements in enumerate(MIGRATIONS[:upto], start=1):
        if number <= version:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"{where}: schema migration {number} failed ({exc}); the database stays at "
                                   f"schema {version}") from exc
            raise
        version = number
    return version


def _migrate_postgres(db: pg.PgDatabase, where: object, *, upto: int | None) -> int:
    """:func:`migrate` on PostgreSQL: under the schema's write lock (processes starting together migrate once),
    each migration's DDL translated (:func:`connector.store.pg.translate_ddl`), each in its own transaction."""
    import psycopg

    from connector.store import pg

    raw = db.raw()
    raw.execute("BEGIN")
    try:
        raw.execute("SELECT pg_advisory_xact_lock(%s)", [db.location.lock_key])
        version = pg.prepare_schema(db)
        check_schema_version(version, where)
        stale = True  # the dialect's knowledge of the tables (read only when a statement needs it: it takes time)
        for number, statements in enumerate(MIGRATIONS[:upto], start=1):
            if number <= version:
                continue
            raw.execute("SAVEPOINT migration")
            try:
                for statement in statements:
                    if statement.lstrip()[:6].upper() in ("CREATE", "ALTER ", "DROP T", "DROP I"):
                        for translated in pg.translate_ddl(statement):
                            raw.execute(translated)
                        stale = True
                    else:
                        if stale:
                            db.dialect.load(raw, db.location.schema)
                            stale = False
                        db.execute(statement)
                raw.execute("UPDATE tds_schema SET version = %s", [number])
                raw.execute("RELEASE migration")
            except (psycopg.Error, sqlite3.Error) as exc:
                raw.execute("ROLLBACK TO migration")
                raise StorageError(f"{where}: schema migration {number} failed ({str(exc).strip()}); the database "
                                   f"stays at schema {version}") from exc
            version = number
        raw.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            raw.execute("ROLLBACK")
        raise
    db.dialect.load(raw, db.location.schema)
    return version


def schema_version_of(path: Location) -> int | None:
    """The schema version of the database at *path*, read through a read-only connection (nothing in the database
    changes, and no database is created); None if there is no file. Raises :class:`~connector.errors.StorageError`
    if the file is not an SQLite database."""
    if isinstance(path, PgLocation):
        return _postgres_version_of(path)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{path} cannot be read as a database: {exc}") from exc


def _postgres_version_of(location: PgLocation) -> int | None:
    from connector.store import pg

    db = pg.open_database(location, pg.Dialect(), readonly=True)
    try:
        raw = db.raw()
        found = raw.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                            "AND table_name = 'tds_schema'", [location.schema]).fetchone()
        if found is None:
            return None
        row = raw.execute("SELECT version FROM tds_schema").fetchone()
        return None if row is None else int(row[0])
    finally:
        db.close()


class Store:
    """The node's database. Use :meth:`write` for changes and :meth:`read` for queries."""

    def __init__(self, path: Location, *, readers: int = 4,
                 commit_seconds: Callable[[float, bool], None] | None = None) -> None:
        #: An SQLite file, or a :class:`~connector.store.pg.PgLocation`.
        self.path = path
        self.postgres = isinstance(path, PgLocation)
        #: The translation of the store's SQL for PostgreSQL, shared by every connection of this store.
        self._dialect: pg.Dialect | None = None
        if self.postgres:
            from connector.store import pg

            self._dialect = pg.Dialect()
        #: This process's id among the node processes sharing the store (``connector.services.leases``); None
        #: while one process has the store to itself (SQLite, always).
        self.process_id: str | None = None
        #: The database server's clock minus this machine's, in seconds, as last measured (the processes sharing a
        #: store compare heartbeats by the server's clock, so that machines whose clocks differ agree).
        self.clock_offset = 0.0
        #: Told how long each committed batch took (seconds, from BEGIN to COMMIT) and whether it was durable;
        #: called on the writer thread.
        self.commit_seconds = commit_seconds
        #: The schema version (migrations applied), once the store is open.
        self.schema_version = 0
        #: Why the last batch failed to commit, until one commits again (None: the last one committed).
        self.commit_failure: str | None = None
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="tds-store-read")
        self._local = threading.local()
        self._read_connections: list[Database] = []
        self._lock = threading.Lock()
        self.commits = 0
        self.jobs = 0
        #: Run on the writer thread at the end of every batch, inside its transaction, before COMMIT (the
        #: usage log signs its chain heads there: once per commit group).
        self.batch_hooks: list[Callable[[Database], None]] = []
        #: Whether the writer's connection commits with ``synchronous=FULL`` now (writer thread only).
        self._synchronous_full = False
        #: Jobs submitted with ``hold=True`` that wait for the next job (event loop thread only).
        self._held: list[Job] = []

    def now(self) -> float:
        """POSIX time by the store's clock (this machine's, corrected by :attr:`clock_offset`)."""
        return time.time() + self.clock_offset

    def describe(self) -> str:
        """The store as messages name it: its file, or its PostgreSQL server and schema (no password)."""
        return self.path.redacted() if isinstance(self.path, PgLocation) else str(self.path)

    def open_sync(self) -> None:
        """Create or migrate the database and start the writer thread."""
        if isinstance(self.path, PgLocation):
            db = _connect(self.path, dialect=self._dialect)
            try:
                self.schema_version = migrate(db, self.path.redacted())
            except BaseException:
                db.conn.close()
                raise
            self._writer = threading.Thread(target=self._run_writer, args=(db,), name="tds-store-writer",
                                            daemon=True)
            self._writer.start()
            return
        filemodes.make_dir(self.path.parent)
        # Read before anything is written (not even the journal mode): a database of a later release, or a file
        # that is none, is refused as it is.
        found = schema_version_of(self.path)
        if found is not None:
            check_schema_version(found, self.path)
        db = _connect(self.path)
        # -wal and -shm left by an earlier run keep whatever mode they had then.
        for companion in (self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                companion.chmod(filemodes.PRIVATE_FILE)
        try:
            self.schema_version = migrate(db, self.path)
        except BaseException:
            db.conn.close()
            raise
        self._writer = threading.Thread(target=self._run_writer, args=(db,), name="tds-store-writer", daemon=True)
        self._writer.start()

    async def open(self) -> None:
        await asyncio.to_thread(self.open_sync)

    async def close(self) -> None:
        if self._writer is not None:
            self._release_held()
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._readers.shutdown(wait=True)
        with self._lock:
            for db in self._read_connections:
                db.conn.close()
            self._read_connections.clear()

    async def check_writable(self, timeout_s: float = 5.0) -> str | None:
        """None if a write commits now; otherwise why not (the writer is not running, a commit fails, or the
        write lock is not had within *timeout_s*). The write changes nothing."""
        if self._writer is None or not self._writer.is_alive():
            return "the store's writer is not running"
        try:
            await asyncio.wait_for(self.write(_no_change), timeout_s)
        except TimeoutError:
            return f"a write did not commit within {timeout_s:g} s"
        except StorageError as exc:
            return exc.message
        return None

    # -- writes -------------------------------------------------------------------------------------

    async def write(self, fn: Callable[[Database], T], *, durable: bool = False) -> T:
        """Run *fn* on the writer thread inside a transaction; return once it is committed.

        ``durable=True``: committed with an fsync (survives a power loss, not only a process crash).
        """
        return await self.submit(fn, durable=durable)

    def submit(self, fn: Callable[[Database], T], *, durable: bool = False,
               hold: bool = False) -> asyncio.Future[T]:
        """:meth:`write` for a caller that waits by a callback rather than a task: queue *fn* and return the
        future (of the running loop) that is settled once it is committed, or failed.

        *hold*: the job waits for the next one queued, at most until the running task next yields, and goes
        with it: one wake-up of the writer and one commit for both (a request's nonce and the state change the
        request makes, say). Jobs keep their order either way."""
        if self._writer is None:
            raise StorageError("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if hold:
            if not self._held:
                loop.call_soon(self._release_held)
            self._held.append((fn, loop, future, durable))
            return future
        self._release_held()
        self._queue.put((fn, loop, future, durable))
        return future

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for job in held:
            self._queue.put(job)

    def _run_writer(self, db: Database) -> None:
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

    def _begin(self, db: Database) -> None:
        db.execute("BEGIN IMMEDIATE")
        if isinstance(self.path, PgLocation):  # one writer at a time across the processes sharing it
            db.execute("SELECT pg_advisory_xact_lock(?)", [self.path.lock_key])

    def _commit_batch(self, db: Database, batch: list[Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        durable = any(job[3] for job in batch)
        took: float | None = None
        try:
            if durable != self._synchronous_full:  # set only when it changes (the usage log commits back to back)
                db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._synchronous_full = durable
            started = time.perf_counter()
            self._begin(db)
            if len(batch) == 1:
                # A job alone needs no savepoint: if it fails, its transaction is rolled back whole (two statements
                # fewer per commit: two round trips on PostgreSQL).
                try:
                    outcomes.append((True, batch[0][0](db)))
                except BaseException as exc:
                    outcomes.append((False, exc))
            else:
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
            if len(batch) == 1 and not outcomes[0][0]:
                db.execute("ROLLBACK")
                self._begin(db)  # the hooks still run, as after a job rolled back to its savepoint
            for hook in self.batch_hooks:
                hook(db)
            db.execute("COMMIT")
            self.commits += 1
            took = time.perf_counter() - started
            self.jobs += len(batch)
            self.commit_failure = None
        except Exception as exc:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            error = StorageError(f"commit failed: {exc}")
            self.commit_failure = error.message
            outcomes = [(False, error)] * len(batch)
        if took is not None and self.commit_seconds is not None:
            with contextlib.suppress(Exception):  # a metric must never fail a commit that happened
                self.commit_seconds(took, durable)
        # One wake-up per event loop for the whole batch, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, loop, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)

    # -- reads --------------------------------------------------------------------------------------

    def _reader(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path, readonly=True, dialect=self._dialect)
            self._local.db = db
            with self._lock:
                self._read_connections.append(db)
        return db

    async def read(self, fn: Callable[[Database], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))

    async def snapshot(self, fn: Callable[[Database], T]) -> T:
        """Run *fn* on a reader in one read transaction: every query it makes sees the same committed state
        (a plain :meth:`read` sees each query's own). Readers are query-only: *fn* cannot write."""

        def in_transaction(db: Database) -> T:
            db.conn.execute("BEGIN")
            try:
                return fn(db)
            finally:
                db.conn.execute("ROLLBACK")

        return await self.read(in_transaction)

    async def lookup(self, fn: Callable[[Database], T]) -> T:
        """Run *fn*, a read of a few rows by an index (tens of microseconds), on the calling thread's own read
        connection: the hop to a reader thread and back would cost it ten times over. Anything that may scan
        goes through :meth:`read`. WAL readers never wait for the writer.

        On PostgreSQL a lookup is a round trip to the server, which the event loop must not wait for: it goes
        through :meth:`read`."""
        if self.postgres:
            return await self.read(fn)
        return fn(self._reader())

    def read_sync(self, fn: Callable[[Database], T]) -> T:
        """For command-line tools that run before or without the node (e.g. ``tds init``)."""
        db = _connect(self.path, dialect=self._dialect)
        try:
            if isinstance(self.path, PgLocation):
                self._dialect.load(db.conn.raw(), self.path.schema)  # type: ignore[attr-defined]
            return fn(db)
        finally:
            db.conn.close()


def _no_change(_: Database) -> None:
    """A write job that writes nothing (:meth:`Store.check_writable`)."""


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
