"""The data sandbox's worker: one checked query against one sandbox table, in a process of its own.

:mod:`connector.services.sandbox_engine` starts it as a script, isolated from everything installed::

    python -I -S -B /path/to/connector/sandbox_worker.py TIME_S MEMORY_BYTES

(``-I``: no environment variables, no user or working folder on the import path; ``-S``: no ``site``, so no
installed package can be imported; ``-B``: nothing written). It imports the standard library alone, sets its
resource limits for a query of at most *TIME_S* seconds and *MEMORY_BYTES* of address space, and only then
waits for its one request on stdin — so a node can start one ahead of time (a spare) and hand it the next query.
It answers one JSON request with one JSON answer on stdout, and exits:

- request: ``{"db": "/abs/path.sqlite", "sql": "...", "parameters": {...}, "max_rows": N, "time_s": S,
  "memory_bytes": M, "functions": [...]}`` (the limits again: the query's own, never above those of the command
  line);
- answer: ``{"rows": [[...], ...]}`` or ``{"error": {"rule": "...", "message": "..."}}`` (exit status 0 either
  way; anything else — no answer, a signal — is the engine's fault, not the query's).

The query was checked by :func:`connector.protocol.sandbox.check_query` before it got here; this process does
not rely on that. Each layer below stops on its own what the checker is there to refuse, so a checker bug is
not a data leak:

1. resource limits, set before the request is read and again (only ever lower) from the request, before the
   table is opened: address space (``RLIMIT_AS``), CPU seconds, no file growth at all (``RLIMIT_FSIZE=0``: it
   cannot write a byte to any file), a handful of descriptors, no new processes (``RLIMIT_NPROC=0``; not
   enforced for root), no core files;
2. the table opened read-only and immutable by URI (``mode=ro&immutable=1``: no locks, no journal, no
   writes), SQLite's own heap limit under the address-space limit, extension loading off, SQLite's run-time
   limits (no ``ATTACH``, no compound SELECT, short SQL, shallow expressions);
3. an authorizer that allows a SELECT reading table ``data`` and calling the functions the request names
   (``connector.protocol.sandbox.SQL_FUNCTIONS``: what the checked statements call, and no more — no
   ``load_extension``, ``readfile``/``writefile``, ``zeroblob``, ``printf``, ``group_concat``, json or
   ``sqlite_*`` functions), and denies every other action (``ATTACH``, ``PRAGMA``, writes, temporary tables,
   triggers, recursive CTEs, the schema table, table-valued functions, …);
4. a progress handler that interrupts the statement once its time is up, counted from the moment the request
   was read (the parent kills the process group a little later if even that does not stop it);
5. at most ``max_rows`` rows: one more and the answer is a "size" refusal, not a cut-off result.

Only the standard library is imported, and as little of it as will do (each module costs every start): the
request and the answer are read and written with :mod:`json`, checked field by field as strictly as the engine's
msgspec types would; SQLite through the sqlite3 package's C module. All of it is imported before the limits are
set (an import after ``RLIMIT_NOFILE`` could fail). Nothing here prints a traceback: every failure is an answer
with a rule.
"""

from __future__ import annotations

import _sqlite3 as sqlite3  # the C module of the sqlite3 package (the same objects), without its Python layer
import binascii
import json
import math
import re
import resource
import signal
import sys
import time
from posix import _exit, close  # os._exit and os.close, without importing os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a few milliseconds of every start)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: The only table a query may read.
TABLE = "data"
#: The request's own size bound (the SQL and its parameters).
MAX_REQUEST_BYTES = 1 << 20
#: File descriptors the worker may hold: stdin, stdout, stderr, the table file, and a little slack.
MAX_FILES = 8
#: Virtual machine steps between two looks at the clock.
PROGRESS_STEPS = 10_000
#: What SQLite may allocate is this much under the address-space limit: the interpreter's own share.
INTERPRETER_BYTES = 48 << 20
#: SQLite's run-time limits (sqlite3_limit): longest string or row, SQL text, expression depth, …
SQLITE_LIMITS = {
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_LENGTH: 16 << 20,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 1,  # no UNION at all
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 8,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 100,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1000,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 0,
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,
}


class Refusal(Exception):
    """A query this worker will not run or finish; *rule* is the short code the answer carries."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class Request:
    """One query to run (see the module docstring); :func:`decode_request` reads it from JSON."""

    __slots__ = ("db", "functions", "max_rows", "memory_bytes", "parameters", "sql", "time_s")

    def __init__(self, *, db: str, sql: str, parameters: dict[str, int | float | str | None], max_rows: int,
                 time_s: float, memory_bytes: int, functions: list[str]) -> None:
        self.db = db
        self.sql = sql
        self.parameters = parameters
        self.max_rows = max_rows
        self.time_s = time_s
        self.memory_bytes = memory_bytes
        #: The functions the query may call (lower case): ``connector.protocol.sandbox.SQL_FUNCTIONS``.
        self.functions = functions


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_value(value: object) -> bool:
    return value is None or isinstance(value, str | float) or _is_int(value)


#: Each field of a request, and the check of its value.
_FIELDS: dict[str, Callable[[object], bool]] = {
    "db": lambda v: isinstance(v, str),
    "sql": lambda v: isinstance(v, str),
    "parameters": lambda v: isinstance(v, dict) and all(map(_is_value, v.values())),
    "max_rows": _is_int,
    "time_s": lambda v: isinstance(v, float) or _is_int(v),
    "memory_bytes": _is_int,
    "functions": lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v),
}


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def decode_request(raw: bytes) -> Request:
    """The request in *raw* (UTF-8 JSON), refused ("engine") unless it is an object with exactly the fields of
    :class:`Request`, each of its type: a bool is not a number, NaN and Infinity are not JSON, and a time may be
    an integer."""
    try:
        fields = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Refusal("engine", f"a malformed request ({type(exc).__name__})") from None
    if not isinstance(fields, dict):
        raise Refusal("engine", "a malformed request (not an object)")
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise Refusal("engine", f"a malformed request (unknown field {unknown[0][:40]!r})")
    for name, check in _FIELDS.items():
        if name not in fields:
            raise Refusal("engine", f"a malformed request (no {name})")
        if not check(fields[name]):
            raise Refusal("engine", f"a malformed request ({name} has the wrong type)")
    fields["time_s"] = float(fields["time_s"])
    return Request(**fields)


def set_limits(time_s: float, memory_bytes: int) -> None:
    """The process's resource limits (see the module docstring) for a query of *time_s* seconds and
    *memory_bytes* of address space. A limit is only ever lowered: called again with larger values, the
    first ones hold."""
    # A write past RLIMIT_FSIZE fails with EFBIG instead of killing the process, so the answer says why.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    cpu = max(1, math.ceil(time_s)) + 1
    limits = [
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_NOFILE, MAX_FILES),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in limits:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)  # a hard limit may only be lowered
        resource.setrlimit(which, (value, value))
    # A hard limit we may not lower: the others still hold (not contextlib.suppress: one import less).
    try:  # noqa: SIM105
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass

class Guard:
    """The authorizer and the progress handler of one statement, and what they stopped (for the answer)."""

    def __init__(self, deadline: float, functions: list[str]) -> None:
        self.deadline = deadline
        self.functions = frozenset(name.lower() for name in functions)
        self.refusal: Refusal | None = None

    def authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, _source: str | None) -> int:
        if action == sqlite3.SQLITE_SELECT:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            # ``count(*)`` reads the table with no column and no database name: SQLite's own read of it.
            if arg1 == TABLE and db in ("main", None):
                return sqlite3.SQLITE_OK
            return self._deny("table", f"only the table {TABLE} may be read, not {arg1}")
        if action == sqlite3.SQLITE_FUNCTION:
            if arg2 is not None and arg2.lower() in self.functions:
                return sqlite3.SQLITE_OK
            return self._deny("function", f"the function {arg2} is not allowed")
        what = _ACTIONS.get(action, f"action {action}") + (f" {arg1}" if arg1 else "")
        return self._deny("not-select", f"only a SELECT may run here (refused: {what})")

    def _deny(self, rule: str, message: str) -> int:
        if self.refusal is None:
            self.refusal = Refusal(rule, message)
        return sqlite3.SQLITE_DENY

    def progress(self) -> int:
        """Non-zero interrupts the statement (sqlite3_progress_handler)."""
        return 1 if time.monotonic() > self.deadline else 0


#: Action codes by name, for a refusal's message.
_ACTIONS = {getattr(sqlite3, name): name.removeprefix("SQLITE_").replace("_", " ").lower()
            for name in ("SQLITE_ATTACH", "SQLITE_DETACH", "SQLITE_PRAGMA", "SQLITE_INSERT", "SQLITE_UPDATE",
                         "SQLITE_DELETE", "SQLITE_CREATE_TABLE", "SQLITE_CREATE_TEMP_TABLE", "SQLITE_CREATE_VIEW",
                         "SQLITE_CREATE_TEMP_VIEW", "SQLITE_CREATE_TRIGGER", "SQLITE_CREATE_TEMP_TRIGGER",
                         "SQLITE_CREATE_INDEX", "SQLITE_CREATE_TEMP_INDEX", "SQLITE_DROP_TABLE",
                         "SQLITE_TRANSACTION", "SQLITE_SAVEPOINT", "SQLITE_RECURSIVE", "SQLITE_ANALYZE",
                         "SQLITE_ALTER_TABLE", "SQLITE_REINDEX", "SQLITE_CREATE_VTABLE")}


def uri_path(path: str) -> str:
    """*path* as the path of an SQLite URI filename (https://sqlite.org/uri.html §3.1): ``%``, ``?`` and ``#``
    escaped as ``%HH``, every other character as it is (SQLite reads the rest, UTF-8 included, literally)."""
    return path.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


def open_table(request: Request, guard: Guard) -> sqlite3.Connection:
    """The table, read-only and immutable, with every guard installed before the query is prepared."""
    uri = f"file:{uri_path(request.db)}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise Refusal("engine", "the table cannot be opened") from exc
    if hasattr(conn, "enable_load_extension"):  # absent when Python was built without it
        conn.enable_load_extension(False)
    # Settings the authorizer would refuse once installed: SQLite's heap bounded, the schema not trusted,
    # nothing written. Sorts (GROUP BY, ORDER BY) stay in memory up to the page cache's size, a quarter of the
    # heap; a larger one would spill to a temporary file, which RLIMIT_FSIZE stops at its first byte (a
    # "memory" refusal). Not temp_store = MEMORY: SQLite's sorter then allocates each record on its own and a
    # GROUP BY over a million rows takes twice as long.
    heap = max(request.memory_bytes // 2, request.memory_bytes - INTERPRETER_BYTES)
    cache_kib = heap // 4 // 1024
    for pragma in (f"hard_heap_limit = {heap}", f"cache_size = -{cache_kib}", "trusted_schema = OFF",
                   "query_only = ON"):
        conn.execute(f"PRAGMA {pragma}")
    for limit, value in SQLITE_LIMITS.items():
        conn.setlimit(limit, value)
    conn.set_authorizer(guard.authorize)
    conn.set_progress_handler(guard.progress, PROGRESS_STEPS)
    return conn


def run(request: Request, guard: Guard) -> list[tuple[Any, ...]]:
    conn = open_table(request, guard)
    try:
        cursor = conn.execute(request.sql, request.parameters)
        rows = cursor.fetchmany(request.max_rows + 1)
    except Exception as exc:
        raise refusal_of(exc, guard) from None
    finally:
        conn.close()
    if len(rows) > request.max_rows:
        raise Refusal("size", f"the result has more than {request.max_rows} rows")
    return rows


_MISSING = re.compile(r"no such (function|table|column): (.*)")


def refusal_of(exc: BaseException, guard: Guard) -> Refusal:
    """What stopped the query, as a rule and a message (SQLite's own words for an error in the query: they
    name the query's parts, never a value of the table)."""
    if guard.refusal is not None:
        return guard.refusal
    text = str(exc)
    # A sort too large for memory spills to a temporary file, whose first write RLIMIT_FSIZE refuses.
    if isinstance(exc, MemoryError) or any(words in text for words in ("out of memory", "disk is full", "disk I/O")):
        return Refusal("memory", "the query needs more memory than the sandbox allows")
    if "interrupted" in text:
        return Refusal("time", "the query ran out of time")
    if isinstance(exc, sqlite3.DataError) or "too big" in text:
        return Refusal("size", "a value of the query is larger than the sandbox allows")
    if isinstance(exc, sqlite3.ProgrammingError) and "binding" in text:
        return Refusal("parameter", text[:300])
    if isinstance(exc, sqlite3.Warning | sqlite3.ProgrammingError) and "one statement" in text:
        return Refusal("not-select", "only one statement may run")
    missing = _MISSING.match(text)
    if missing:  # SQLite did not get as far as asking the authorizer: what it names does not exist here
        rule = {"function": "function", "table": "table"}.get(missing.group(1), "column")
        return Refusal(rule, f"the {missing.group(1)} {missing.group(2)[:100]} is not allowed")
    if "compound SELECT" in text:  # SQLITE_LIMIT_COMPOUND_SELECT: a UNION, or a recursive CTE
        return Refusal("union", "UNION, INTERSECT, EXCEPT and recursive queries are not allowed")
    if isinstance(exc, sqlite3.OperationalError):
        return Refusal("sql", text[:300])
    if isinstance(exc, sqlite3.Error):
        return Refusal("engine", "the query failed in the engine")
    return Refusal("engine", f"the query failed in the engine ({type(exc).__name__})")


def _bytes_as_text(value: object) -> str:
    """A BLOB in the answer: base64, as msgspec writes ``bytes``."""
    if isinstance(value, bytes):
        return binascii.b2a_base64(value, newline=False).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not a value of a row")


def _finite(row: tuple[Any, ...]) -> list[Any]:
    return [None if isinstance(value, float) and not math.isfinite(value) else value for value in row]


def _encode(answer: dict[str, Any], *, allow_nan: bool = True, ascii_only: bool = False) -> bytes:
    return json.dumps(answer, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=allow_nan,
                      default=_bytes_as_text).encode("utf-8")


def encode_rows(rows: list[tuple[Any, ...]]) -> bytes:
    """The answer ``{"rows": …}``: the values as msgspec writes them (an infinite real is ``null``, as JSON has no
    infinity — SQLite itself turns NaN into NULL — and a BLOB is base64 text)."""
    try:
        return _encode({"rows": rows}, allow_nan=False)
    except ValueError:  # an infinity, rare: the rows again, each such value null
        return _encode({"rows": [_finite(row) for row in rows]})


def error_answer(rule: str, message: str) -> bytes:
    """The answer ``{"error": {"rule", "message"}}``, in ASCII (escaped: it cannot fail to encode)."""
    return _encode({"error": {"rule": rule, "message": message}}, ascii_only=True)


def answer(request_bytes: bytes, started: float) -> bytes:
    """The answer to one request (never raises); its time runs from *started*."""
    try:
        if len(request_bytes) > MAX_REQUEST_BYTES:
            raise Refusal("size", "the request is too large")
        request = decode_request(request_bytes)
        set_limits(request.time_s, request.memory_bytes)
        guard = Guard(started + request.time_s, request.functions)
        rows = run(request, guard)
        try:
            return encode_rows(rows)
        except MemoryError:
            raise Refusal("memory", "the result needs more memory than the sandbox allows") from None
    except Refusal as refusal:
        return error_answer(refusal.rule, refusal.message)
    except MemoryError:
        return b'{"error":{"rule":"memory","message":"the query needs more memory than the sandbox allows"}}'
    except Exception as exc:  # never a traceback: the rule says it was the engine
        return error_answer("engine", f"the engine failed ({type(exc).__name__})")


def main(argv: list[str]) -> None:
    """Limits from the command line (``TIME_S MEMORY_BYTES``), then the one request from stdin, its answer to
    stdout, and an exit without the interpreter's teardown (nothing is left to flush or close: the table was
    opened read-only)."""
    try:
        if len(argv) == 3:
            set_limits(float(argv[1]), int(argv[2]))
        elif len(argv) != 1:
            raise ValueError("usage: sandbox_worker.py [TIME_S MEMORY_BYTES]")
    except (ValueError, OverflowError, OSError) as exc:
        out = error_answer("engine", f"the worker cannot set its limits ({type(exc).__name__})")
    else:
        request = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
        if not request:  # stdin closed with no request: the node that started this spare is gone
            _exit(0)
        out = answer(request, time.monotonic())
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
        close(1)  # the answer ends here, not once the process is torn down: the node reads it a little sooner
    except OSError:  # no one reads the answer any more
        pass
    _exit(0)


if __name__ == "__main__":
    main(sys.argv)
