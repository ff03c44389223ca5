"""The data sandbox's engine: a provider's CSV as a read-only SQLite table, and checked queries run against it.

- :func:`prepare_table` (at publish time, in a thread): the CSV becomes table ``data`` of a new SQLite file,
  column types inferred from the values, written atomically and made read-only (0400). What comes back is the
  table's :class:`~connector.protocol.sandbox.TableSchema`: columns, types, the bounds the provider declares
  for numeric columns, and the row count rounded to two significant digits (the exact count is itself a fact
  about the data).
- :func:`run_query` runs one :class:`~connector.protocol.sandbox.CheckedQuery` in a child process of its own
  (``python -I -S -B …/connector/sandbox_worker.py``: the standard library alone, no shell, an environment with
  nothing but SQLite's temporary folder, a private empty working folder, its own process group). JSON goes in
  on its stdin and comes back on its stdout; the answer is bounded in size, and the process group is killed
  when the time is up. The worker locks itself down before it opens the table (resource limits, read-only
  immutable open, an authorizer, a progress handler; see :mod:`connector.sandbox_worker`), so a statement the
  checker should have refused still cannot read another table, write, attach, load code, or run for ever.
- :class:`Workers` does the same for a node: still one process per query, but the next ones started ahead of
  time (:data:`SPARES` spares that have set their limits and wait on their stdin, from the moment the node offers
  a sandbox table), and at most :data:`MAX_RUNNING` at once.

Refusals are :class:`SandboxError` (a :class:`~connector.protocol.errors.QueryRefused`: status 422 with a
rule), never a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import functools
import itertools
import math
import os
import re
import secrets
import signal
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

import connector
from connector import filemodes
from connector.errors import BadRequest
from connector.logging import get_logger
from connector.protocol.errors import QueryRefused
from connector.protocol.sandbox import (
    MAX_NAME_CHARS,
    SQL_FUNCTIONS,
    TABLE,
    CheckedQuery,
    Column,
    ColumnType,
    TableSchema,
)

__all__ = ["Limits", "SandboxBusy", "SandboxError", "SandboxFailure", "Workers", "prepare_table", "rounded",
           "run_query"]

log = get_logger(component="sandbox")

MiB = 1 << 20
#: Bounds on a CSV a provider may publish for the sandbox (beside ``max_rows``, which the caller sets).
MAX_COLUMNS = 200
MAX_CELL_CHARS = 10_000
#: The default bound on a worker's answer, in bytes.
MAX_OUTPUT_BYTES = 32 * MiB
#: The default bound on a worker's address space, in bytes.
MEMORY_BYTES = 256 * MiB
#: At most this many queries run in worker processes at once on one node; further ones wait at most MAX_WAIT_S
#: seconds, behind at most MAX_WAITING others, before they are refused (503, Retry-After). The wait is short
#: beside a consumer's default wait for a provider's answer (10 s), which must also cover the query's own time.
MAX_RUNNING = 4
MAX_WAIT_S = 2.0
MAX_WAITING = 32
#: How many spare workers a node keeps waiting. Two: an interpreter takes some 20 ms to start (longer on a busy
#: machine), about as long as a small query takes end to end, so the spare started when a query takes one is
#: often still starting when the next query comes; the older one has had two queries' time.
SPARES = 2
#: How many times in a row a spare worker that exits while it waits is replaced at once.
SPARE_RESTARTS = 3
#: How much longer than the query's own time the parent waits before it kills the worker's process group: the
#: worker's start, and its own interruption (which answers "time" more precisely than a kill).
GRACE_S = 1.0
#: The worker's file mode once written: read-only, and the node's alone.
TABLE_MODE = 0o400

#: Integers and reals as the table keeps them (ASCII digits only: ``str.isdigit`` would take other scripts'
#: digits, which SQLite does not read as numbers). A number with a leading zero ("007", a postcode, an id) keeps
#: its text; SQLite's column affinity turns exactly these spellings into numbers.
_INTEGER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_REAL = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT64 = 2**63
#: The same, for a chunk of a column's values joined by newlines (an empty line is an empty cell).
_INTEGERS = re.compile(r"(?:[+-]?(?:0|[1-9][0-9]*))?(?:\n(?:[+-]?(?:0|[1-9][0-9]*))?)*")
_REALS = re.compile(r"(?:[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+))?"
                    r"(?:\n(?:[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+))?)*")
#: Records whose types are inferred together.
_CHUNK_ROWS = 4096
#: Inferred types, in the order a column widens through them.
_EMPTY, _INTEGER_TYPE, _REAL_TYPE, _TEXT_TYPE = 0, 1, 2, 3
_TYPE_NAMES: dict[int, ColumnType] = {_EMPTY: "text", _INTEGER_TYPE: "integer", _REAL_TYPE: "real", _TEXT_TYPE: "text"}
#: Column names the sandbox keeps for itself (the checked statements' hidden ``__n``).
_RESERVED_PREFIX = "__"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SandboxError(QueryRefused):
    """A query the engine refused or stopped; ``rule`` says why: "time", "size" (too many rows, too large an
    answer or value), "memory", "not-select", "table", "function" (what the worker's authorizer denied), "union",
    "sql", "parameter", "engine" (the worker failed without saying why)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(rule, message)
        #: The error body carries the rule (``connector.http.middleware.error_body``).
        self.details = {"rule": rule}


class SandboxFailure(SandboxError):
    """The engine could not run the query at all (its worker could not be started): the node's fault."""

    status = 503
    code = "sandbox-unavailable"


# --- Publishing: CSV to a read-only table ---------------------------------------------------------------------


def rounded(count: int) -> int:
    """*count* rounded to two significant digits (1234 → 1200, 87 → 87)."""
    if count < 100:
        return count
    return int(round(count, 2 - len(str(count))))


@dataclass
class _Scan:
    names: list[str]
    types: list[int]
    rows: int


class _Limits(NamedTuple):
    max_rows: int
    max_columns: int
    max_cell_chars: int

    @property
    def line_chars(self) -> int:
        """The longest physical line read at once: a longer one is read in pieces, which then fail as records
        of the wrong width or as values too long, with memory bounded either way."""
        return self.max_columns * (self.max_cell_chars + 3) + 2


def _utf8_error(csv_path: Path) -> str:
    """Where *csv_path* stops being UTF-8, in words (the slow way: only once a decoding error was seen)."""
    with open(csv_path, "rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number} is not UTF-8 text (byte {exc.start + 1} of the line)"
    return "the file is not UTF-8 text"


@contextlib.contextmanager
def _reader(csv_path: Path, limits: _Limits) -> Iterator[Any]:
    """A ``csv.reader`` (records, and ``line_num``) over *csv_path* decoded as UTF-8 (a BOM at the start is
    dropped); a decoding or CSV error in the ``with`` body becomes a :class:`~connector.errors.BadRequest` that
    names the line."""
    try:
        file = open(csv_path, encoding="utf-8-sig", errors="strict", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise BadRequest(f"the file cannot be read ({exc.strerror})") from None
    with file:
        # Lines by a C-level iterator (the reading is a fair part of a large import), each bounded.
        reader = csv.reader(iter(functools.partial(file.readline, limits.line_chars), ""), strict=True)
        try:
            yield reader
        except UnicodeDecodeError:
            raise BadRequest(_utf8_error(csv_path)) from None
        except csv.Error as exc:
            raise BadRequest(f"line {reader.line_num} is not valid CSV ({exc})") from None


def _chunks(reader: Iterator[list[str]]) -> Iterator[list[list[str]]]:
    """The reader's records in chunks of :data:`_CHUNK_ROWS` (fewer at the end), blank lines left out."""
    while chunk := list(itertools.islice(reader, _CHUNK_ROWS)):
        yield chunk if all(chunk) else [record for record in chunk if record]


def _line_of(csv_path: Path, limits: _Limits, index: int) -> int:
    """The line record *index* starts on (0: the header; blank lines are not records). The slow way: only
    to name the line of a problem."""
    with _reader(csv_path, limits) as reader:
        start, seen = 1, -1
        for record in reader:
            if record:
                seen += 1
                if seen == index:
                    return start
            start = reader.line_num + 1
    return start


def _header(record: list[str], max_columns: int) -> list[str]:
    if len(record) > max_columns:
        raise BadRequest(f"the header names {len(record)} columns; at most {max_columns} are allowed")
    names: list[str] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(record, 1):
        name = raw.strip()
        if not name:
            raise BadRequest(f"column {position} of the header has no name")
        if len(name) > MAX_NAME_CHARS:
            raise BadRequest(f"column {position} of the header: names are at most {MAX_NAME_CHARS} characters")
        if _CONTROL.search(name):
            raise BadRequest(f"column {position} of the header: a name may not hold control characters")
        if name.startswith(_RESERVED_PREFIX):
            raise BadRequest(f"column {position} of the header: names beginning with {_RESERVED_PREFIX!r} are "
                             "kept for the sandbox's own columns")
        folded = name.casefold()
        if folded in seen:  # SQL names are the same whatever their case
            raise BadRequest(f"column {position} of the header, {name!r}, repeats column {seen[folded]}")
        seen[folded] = position
        names.append(name)
    return names


def _widen(kind: int, cell: str) -> int:
    """The type a column of type *kind* has once it also holds *cell* (not empty)."""
    if kind <= _INTEGER_TYPE and _INTEGER.fullmatch(cell) and (len(cell) < 19 or -_INT64 <= int(cell) < _INT64):
        return _INTEGER_TYPE
    if _REAL.fullmatch(cell) and ((len(cell) < 16 and "e" not in cell and "E" not in cell)
                                  or math.isfinite(float(cell))):
        return _REAL_TYPE
    return _TEXT_TYPE


def _widen_all(kind: int, values: tuple[str, ...]) -> int:
    """:func:`_widen` over a chunk of a column's values (empty ones included), with one regular-expression
    match over the chunk joined by newlines in the common case; a cell that holds a newline itself, a long
    one (an integer or a real that may be out of range), an exponent and a mixed chunk go cell by cell."""
    joined = "\n".join(values)
    if joined.count("\n") == len(values) - 1 and max(map(len, values)) < 16:
        if kind <= _INTEGER_TYPE and _INTEGERS.fullmatch(joined):
            return _INTEGER_TYPE if joined.replace("\n", "") else kind
        if kind <= _REAL_TYPE and "e" not in joined and "E" not in joined and _REALS.fullmatch(joined):
            return _REAL_TYPE
    for cell in values:
        if cell and kind != _TEXT_TYPE:
            kind = max(kind, _widen(kind, cell))
    return kind


def _scan(csv_path: Path, limits: _Limits) -> _Scan:
    """The first pass: everything checked, the types inferred, the rows counted. The checks run on chunks of
    records at C speed; only a problem's line is looked for record by record (:func:`_line_of`)."""
    with _reader(csv_path, limits) as reader:
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
        if header is None:
            raise BadRequest("the file is empty: its first line must name the columns")
        names = _header(header, limits.max_columns)
        width = len(names)
        types = [_EMPTY] * width
        rows = 0
        for chunk in _chunks(reader):
            if set(map(len, chunk)) != {width}:
                at = next(n for n, record in enumerate(chunk) if len(record) != width)
                line = _line_of(csv_path, limits, rows + at + 1)
                raise BadRequest(f"line {line} has {len(chunk[at])} fields; the header has {width}")
            for index, values in enumerate(zip(*chunk, strict=True)):
                if max(map(len, values)) > limits.max_cell_chars:
                    at = next(n for n, cell in enumerate(values) if len(cell) > limits.max_cell_chars)
                    line = _line_of(csv_path, limits, rows + at + 1)
                    raise BadRequest(f"line {line}, column {names[index]!r}: a value is longer than "
                                     f"{limits.max_cell_chars} characters")
                if types[index] != _TEXT_TYPE:
                    types[index] = _widen_all(types[index], values)
            rows += len(chunk)
            if rows > limits.max_rows:
                raise BadRequest(f"the file has more than {limits.max_rows} rows")
    return _Scan(names, types, rows)


def _columns(scan: _Scan, declared: dict[str, tuple[float, float]]) -> list[Column]:
    by_name = {name.casefold(): index for index, name in enumerate(scan.names)}
    bounds: dict[int, tuple[float, float]] = {}
    for name, pair in declared.items():
        index = by_name.get(name.strip().casefold())
        if index is None:
            raise BadRequest(f"bounds for column {name!r}: the table has no such column", path="bounds")
        if scan.types[index] in (_EMPTY, _TEXT_TYPE):
            raise BadRequest(f"bounds for column {name!r}: it holds text; bounds are for numeric columns",
                             path="bounds")
        try:
            low, high = (float(value) for value in pair)
        except (TypeError, ValueError):
            raise BadRequest(f"bounds for column {name!r} must be two numbers, low and high", path="bounds") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise BadRequest(f"bounds for column {name!r} must be finite numbers with low <= high", path="bounds")
        bounds[index] = (low, high)
    return [Column(name=name, type=_TYPE_NAMES[scan.types[index]],
                   low=bounds[index][0] if index in bounds else None,
                   high=bounds[index][1] if index in bounds else None)
            for index, name in enumerate(scan.names)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(target: Path, csv_path: Path, scan: _Scan, columns: list[Column], limits: _Limits) -> None:
    """The second pass: the rows into table ``data`` of the new file *target* (an empty cell is NULL; each
    column's affinity turns the numbers' text into numbers)."""
    definition = ", ".join(f"{_quote(c.name)} {c.type.upper()}" for c in columns)
    placeholders = ", ".join(["nullif(?, '')"] * len(columns))
    width = len(columns)
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        # One writer, a file nobody sees until it is complete: no journal, no syncs but the one at the end.
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "locking_mode = EXCLUSIVE"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(f"CREATE TABLE {TABLE} ({definition})")
        conn.execute("BEGIN")
        with _reader(csv_path, limits) as reader:
            next(record for record in reader if record)  # the header
            inserted = 0
            for chunk in _chunks(reader):
                inserted += len(chunk)
                if inserted > scan.rows or set(map(len, chunk)) != {width}:
                    raise BadRequest("the file changed while it was read")
                conn.executemany(f"INSERT INTO {TABLE} VALUES ({placeholders})", chunk)
        conn.execute("COMMIT")
    finally:
        conn.close()
    if inserted != scan.rows:
        raise BadRequest("the file changed while it was read")


def prepare_table(csv_path: Path, db_path: Path, *, declared: dict[str, tuple[float, float]] | None = None,
                  max_rows: int, max_columns: int = MAX_COLUMNS, max_cell_chars: int = MAX_CELL_CHARS) -> TableSchema:
    """Import *csv_path* (UTF-8, a header row naming the columns) into table ``data`` of a new SQLite file at
    *db_path* and return the table's schema. Synchronous: call it in a thread.

    Each column's type is inferred from its values: ``integer`` if every value is an integer, ``real`` if
    every value is a number, else ``text``; an empty cell is NULL. *declared* gives numeric columns their
    bounds (``{"salary": (0, 200000)}``). The file is written beside *db_path* under a temporary name, synced,
    made read-only (0400) and renamed into place, so *db_path* is either the whole table or not there (an
    existing file is replaced). A CSV that is not UTF-8, has ragged rows, an empty or repeated column name,
    more than *max_columns* columns, more than *max_rows* rows or a value longer than *max_cell_chars* is
    refused with a :class:`~connector.errors.BadRequest` that names the line.
    """
    limits = _Limits(max_rows, max_columns, max_cell_chars)
    scan = _scan(csv_path, limits)
    columns = _columns(scan, declared or {})
    schema = TableSchema(columns=columns, rows_rounded=rounded(scan.rows), queryable=[c.name for c in columns])
    filemodes.make_dir(db_path.parent)
    temporary = db_path.with_name(f".{db_path.name}.{secrets.token_hex(6)}.tmp")
    os.close(filemodes.open_private(temporary, os.O_WRONLY | os.O_EXCL))  # 0600 before SQLite opens it
    try:
        _fill(temporary, csv_path, scan, columns, limits)
        _fsync(temporary)
        os.chmod(temporary, TABLE_MODE)
        os.replace(temporary, db_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync(db_path.parent)
    return schema


# --- Running a query ------------------------------------------------------------------------------------------


class _Failure(msgspec.Struct):
    rule: str
    message: str


class _Answer(msgspec.Struct):
    rows: list[tuple[Any, ...]] | None = None
    error: _Failure | None = None


class Limits(NamedTuple):
    """What one worker process may use: *time_s* seconds for its query (its CPU limit follows) and
    *memory_bytes* of address space. A spare worker has set them before it waits for its query."""

    time_s: float
    memory_bytes: int


#: The worker's script, run by its path: isolated, nothing installed is on its import path, and it needs nothing
#: but the standard library.
WORKER = Path(connector.__file__).resolve().parent / "sandbox_worker.py"


def interpreter_command() -> list[str]:
    """The interpreter the worker runs in: this one, isolated (``-I``: no ``PYTHON*`` environment variables, no
    user site folder, no working or script folder on the import path), without ``site`` (``-S``: no installed
    package can be imported, and none of their start-up hooks runs) and writing no bytecode (``-B``)."""
    return [sys.executable, "-I", "-S", "-B"]


def worker_command(limits: Limits | None = None) -> list[str]:
    """How the worker (:mod:`connector.sandbox_worker`) is started; with *limits*, it sets them before it reads
    its request (a spare can wait with its limits set)."""
    command = [*interpreter_command(), str(WORKER)]
    if limits is not None:
        command += [repr(float(limits.time_s)), str(int(limits.memory_bytes))]
    return command


def worker_environment(folder: str) -> dict[str, str]:
    """Nothing but the private *folder* as SQLite's temporary folder (a sort too large for memory opens a file
    there, and cannot write to it); the interpreter reads no ``PYTHON*`` variable (``-I``)."""
    return {"SQLITE_TMPDIR": folder}


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass(eq=False)
class _Worker:
    """A started worker process, its private folder (its working folder and SQLite's temporary one, mode 0700)
    and the limits it was started with."""

    process: asyncio.subprocess.Process
    folder: tempfile.TemporaryDirectory[str]
    limits: Limits | None


async def _start(command: list[str], limits: Limits | None = None) -> _Worker:
    """Start *command* in a process group of its own, in a private empty folder, with :func:`worker_environment`
    and pipes on stdin and stdout (stderr goes nowhere)."""
    # Mode 0700. A spare may wait for days: should a cleaner of /tmp remove its folder meanwhile, its removal here
    # must not hide the query's answer.
    folder = tempfile.TemporaryDirectory(prefix="tds-sandbox-", ignore_cleanup_errors=True)
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, cwd=folder.name, env=worker_environment(folder.name),
            start_new_session=True)
    except OSError as exc:
        folder.cleanup()
        raise SandboxFailure("engine", f"the sandbox's worker cannot start ({exc.strerror})") from exc
    except BaseException:  # cancelled: asyncio has killed and reaped the process it was starting
        folder.cleanup()
        raise
    return _Worker(process, folder, limits)


async def _finish(worker: _Worker) -> None:
    """Kill *worker*'s whole process group, reap the process and remove its folder."""
    _kill_group(worker.process.pid)
    try:
        await worker.process.wait()
    finally:
        worker.folder.cleanup()


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(1 << 16):
        size += len(chunk)
        if size > limit:
            raise SandboxError("size", f"the result is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _exit_error(returncode: int) -> SandboxError:
    if returncode == -signal.SIGXCPU:
        return SandboxError("time", "the query used up its processor time")
    if returncode == -signal.SIGXFSZ:
        return SandboxError("not-select", "the query tried to write a file")
    return SandboxError("engine", f"the sandbox's worker stopped without an answer (exit status {returncode})")


async def _talk(worker: _Worker, request: bytes, *, timeout_s: float, max_output_bytes: int,
                on_start: Callable[[int], None] | None = None,
                finish: Callable[[_Worker], None] | None = None) -> bytes:
    """Write *request* to *worker*'s stdin and return what it writes to its stdout (see :func:`exchange`); the
    worker is finished (:func:`_finish`) whatever happens. Without *finish*, before this returns. With it, an
    answer read whole (up to the end of the worker's stdout, a JSON object's closing brace last) returns at once
    and *finish* is handed the worker, to finish it at once in a task of its own: the worker closes its stdout
    just before it exits, so its exit status could tell nothing more, and the answer need not wait for the
    process to be torn down and reaped. Anything else waits for the exit, whose status may say why."""
    process = worker.process
    assert process.stdin is not None and process.stdout is not None
    handed = False
    try:
        if on_start is not None:
            on_start(process.pid)
        async with asyncio.timeout(timeout_s):
            process.stdin.write(request)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it stopped: its exit says why
                await process.stdin.drain()
            process.stdin.close()
            answer = await _read_bounded(process.stdout, max_output_bytes)
            if finish is not None and answer.endswith(b"}"):
                finish(worker)
                handed = True
                return answer
            returncode = await process.wait()
    except TimeoutError:
        raise SandboxError("time", f"the sandbox's worker gave no answer within {timeout_s:g} s") from None
    finally:
        if not handed:
            await _finish(worker)
    if returncode != 0:
        log.warning("sandbox worker failed", returncode=returncode)
        raise _exit_error(returncode)
    return answer


async def exchange(command: list[str], request: bytes, *, timeout_s: float, max_output_bytes: int,
                   on_start: Callable[[int], None] | None = None) -> bytes:
    """Start *command* in a process group of its own, in a private empty folder, with :func:`worker_environment`:
    write *request* to its stdin and return what it writes to its stdout. Refused (:class:`SandboxError`) when
    it runs longer than *timeout_s* ("time"), writes more than *max_output_bytes* ("size") or exits with a
    failure ("engine"). Whatever happens — cancellation too — the whole process group is killed, the process
    reaped and its folder removed before this returns. *on_start* is called with the process id once it runs."""
    return await _talk(await _start(command), request, timeout_s=timeout_s, max_output_bytes=max_output_bytes,
                       on_start=on_start)


def _request(db_path: Path, checked: CheckedQuery, *, max_rows: int, limits: Limits) -> bytes:
    """The worker's request (:mod:`connector.sandbox_worker`); the path absolute, as the worker runs elsewhere."""
    for name, value in checked.parameters.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str | None):
            raise SandboxError("parameter", f"parameter {name} is not a number or text")
    try:
        return msgspec.json.encode({
            "db": os.path.abspath(db_path), "sql": checked.sql, "parameters": checked.parameters,
            "max_rows": max_rows, "time_s": limits.time_s, "memory_bytes": limits.memory_bytes,
            "functions": sorted(SQL_FUNCTIONS),
        })
    except (TypeError, msgspec.EncodeError) as exc:
        raise SandboxError("parameter", f"a parameter is not a number or text ({exc})") from None


def _rows(raw: bytes) -> list[tuple[Any, ...]]:
    """The rows of the worker's answer *raw*, or the refusal it names."""
    try:
        answer = msgspec.json.decode(raw, type=_Answer)
    except msgspec.DecodeError:
        raise SandboxError("engine", "the sandbox's worker gave no readable answer") from None
    if answer.error is not None:
        raise SandboxError(answer.error.rule, answer.error.message)
    if answer.rows is None:
        raise SandboxError("engine", "the sandbox's worker gave no rows")
    return answer.rows


async def run_query(db_path: Path, checked: CheckedQuery, *, timeout_s: float = 10.0, max_rows: int = 10_000,
                    memory_bytes: int = MEMORY_BYTES, max_output_bytes: int = MAX_OUTPUT_BYTES,
                    on_start: Callable[[int], None] | None = None) -> list[tuple[Any, ...]]:
    """Run *checked* against the table file *db_path* in a worker process started for it
    (:mod:`connector.sandbox_worker`) and return its rows (JSON values: integers, reals, text, None). A node runs
    its queries through its :class:`Workers` instead, which has a worker started ahead of time.

    The worker interrupts the query after *timeout_s* seconds and the process group is killed a little after
    that (:data:`GRACE_S`); *memory_bytes* bounds its address space; a result of more than *max_rows* rows or
    *max_output_bytes* bytes is refused, never cut off. *on_start* is called with the worker's process id.
    Raises :class:`SandboxError` with the rule that stopped the query.
    """
    limits = Limits(timeout_s, memory_bytes)
    request = _request(db_path, checked, max_rows=max_rows, limits=limits)
    return _rows(await exchange(worker_command(limits), request, timeout_s=timeout_s + GRACE_S,
                                max_output_bytes=max_output_bytes, on_start=on_start))


class SandboxBusy(SandboxFailure):
    """As many queries run as the node allows and the wait for one to end was too long: answered 503 with
    ``Retry-After`` (*retry_after* seconds), before anything of the query was counted or spent."""

    code = "sandbox-busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__("busy", message)
        self.retry_after = retry_after


class Slot:
    """The right to run one query in one of a node's workers (:meth:`Workers.slot`)."""

    def __init__(self, workers: Workers) -> None:
        self._workers = workers

    async def run_query(self, db_path: Path, checked: CheckedQuery, *, timeout_s: float = 10.0,
                        max_rows: int = 10_000, memory_bytes: int = MEMORY_BYTES,
                        max_output_bytes: int = MAX_OUTPUT_BYTES,
                        on_start: Callable[[int], None] | None = None) -> list[tuple[Any, ...]]:
        """:func:`run_query`, in the node's spare worker when it has one with these limits."""
        limits = Limits(timeout_s, memory_bytes)
        request = _request(db_path, checked, max_rows=max_rows, limits=limits)
        workers = self._workers
        worker = await workers.take(limits)
        try:
            return _rows(await _talk(worker, request, timeout_s=timeout_s + GRACE_S,
                                     max_output_bytes=max_output_bytes, on_start=on_start, finish=workers.finish))
        finally:
            # The spare taken is replaced once the query is over: started while it runs, it would take the
            # processor from the query's worker, and the event loop from the answer (another spare waits).
            workers.prime(limits)


class Workers:
    """The worker processes of one node: still one process per query, at most *max_running* of them at once,
    and *spares* (:data:`SPARES`) started ahead of time so that a query does not wait for an interpreter to start.

    - :meth:`prime` starts the spares in the background. The node calls it when a participant publishes a sandbox
      table and when it starts with one (``SandboxService.tables_changed``: a node that offers no sandbox table
      runs no worker at all); a query calls it too. Each query takes the oldest spare (the one surest to have
      finished starting) and another is started in the background once the query is over (:meth:`take`); a
      spare has set its limits and waits on its stdin, having opened nothing (:mod:`connector.sandbox_worker`).
      Spares wait, they run no query: they take no slot. One that exits while it waits is replaced (up to
      :data:`SPARE_RESTARTS` times in a row, then the next query starts them again). :meth:`drop_spares` ends
      them (the node's last sandbox table is gone), :meth:`close` too (the node stops).
    - :meth:`slot` admits a query: while *max_running* run, it waits up to *max_wait_s* seconds behind at most
      *max_waiting* others, else it is refused with :class:`SandboxBusy` (503, Retry-After).
    """

    def __init__(self, *, max_running: int = MAX_RUNNING, max_wait_s: float = MAX_WAIT_S,
                 max_waiting: int = MAX_WAITING, spares: int = SPARES,
                 command: Callable[[Limits], list[str]] = worker_command) -> None:
        self.max_running = max_running
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting
        self.spares = spares
        self._command = command
        self._slots = asyncio.Semaphore(max_running)
        self._waiting = 0
        #: The spares waiting, oldest (the next query's) first.
        self._spares: collections.deque[_Worker] = collections.deque()
        #: Spares being started.
        self._starting: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: How many queries found no spare, waiting or being started, and waited for a worker of their own to
        #: start (a count to watch: more than the first query's say that queries come faster than spares start).
        self.cold_starts = 0
        self._restarts = 0
        self._closed = False

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Admission of one query (see the class docstring); the slot is held until the block ends."""
        if self._closed:
            raise SandboxFailure("engine", "the node is stopping: no more queries run")
        if self._slots.locked():
            if self._waiting >= self.max_waiting:
                raise self._busy()
            self._waiting += 1
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise self._busy() from None
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        try:
            yield Slot(self)
        finally:
            self._slots.release()

    def _busy(self) -> SandboxBusy:
        return SandboxBusy(f"the sandbox runs {self.max_running} queries already; try again shortly",
                           retry_after=max(1, math.ceil(self.max_wait_s)))

    async def run_query(self, db_path: Path, checked: CheckedQuery, **options: Any) -> list[tuple[Any, ...]]:
        """:meth:`Slot.run_query` in a slot of its own."""
        async with self.slot() as slot:
            return await slot.run_query(db_path, checked, **options)

    async def take(self, limits: Limits) -> _Worker:
        """A worker with *limits* for one query: the oldest spare that has them and still waits (spares with other
        limits are ended), else the first spare being started once it has started (it began before this query
        came), else one started now (counted in :attr:`cold_starts`). The spare taken is replaced once the query
        is over (:meth:`Slot.run_query`), unless none is left: then spares start in the background at once (a
        burst of queries)."""
        worker: _Worker | None = None
        while True:
            if self._closed:
                raise SandboxFailure("engine", "the node is stopping: no more queries run")
            while worker is None and self._spares:
                spare = self._spares.popleft()
                if spare.limits == limits and spare.process.returncode is None:
                    worker = spare
                else:
                    self._later(_finish(spare))
            if worker is not None or not self._starting:
                break
            await asyncio.wait(set(self._starting), return_when=asyncio.FIRST_COMPLETED)
        if worker is not None:
            self._restarts = 0
        if not self._spares:
            self.prime(limits)
        if worker is None:
            self.cold_starts += 1
            worker = await _start(self._command(limits), limits)
        return worker

    @property
    def waiting(self) -> int:
        """How many queries wait for a slot now."""
        return self._waiting

    @property
    def spare_pids(self) -> list[int]:
        """The process ids of the spares waiting now, the next query's first."""
        return [spare.process.pid for spare in self._spares]

    @property
    def spare_pid(self) -> int | None:
        """The process id of the spare the next query takes (None: no spare now)."""
        return self._spares[0].process.pid if self._spares else None

    async def ready(self) -> int | None:
        """:attr:`spare_pid` once the spares being started have started."""
        while self._starting:
            await asyncio.wait(set(self._starting))
        return self.spare_pid

    def prime(self, limits: Limits) -> None:
        """Start spares with *limits* in the background until :attr:`spares` wait or are being started (none once
        the workers are closed)."""
        if self._closed:
            return
        for _ in range(self.spares - len(self._spares) - len(self._starting)):
            task = asyncio.create_task(self._start_spare(limits))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_spare(self, limits: Limits) -> None:
        try:
            worker = await _start(self._command(limits), limits)
        except SandboxError as exc:
            log.warning("sandbox spare worker not started", reason=exc.message)
            return
        if self._closed or len(self._spares) >= self.spares:
            await _finish(worker)
            return
        self._spares.append(worker)
        self._later(self._watch(worker))

    async def _watch(self, worker: _Worker) -> None:
        """Replace a spare that exits while it waits (a spare taken is its query's to finish)."""
        returncode = await worker.process.wait()
        if worker not in self._spares:
            return
        self._spares.remove(worker)
        await _finish(worker)
        self._restarts += 1
        log.warning("sandbox spare worker exited while it waited", returncode=returncode, restarts=self._restarts)
        if self._restarts <= SPARE_RESTARTS and worker.limits is not None:
            self.prime(worker.limits)

    def finish(self, worker: _Worker) -> None:
        """Finish *worker* (:func:`_finish`: its process group killed, the process reaped, its folder removed) in
        a task of its own, which :meth:`close` waits for."""
        self._later(_finish(worker))

    def _later(self, work: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drop_spares(self) -> None:
        """End the spares, those being started too (the next query, or :meth:`prime`, starts them again). A
        cancelled call leaves their ending to run on (:meth:`close` waits for it)."""
        while self._starting:
            await asyncio.wait(set(self._starting))
        spares = list(self._spares)
        self._spares.clear()
        if spares:
            await asyncio.wait({self._later(_finish(spare)) for spare in spares})

    async def close(self) -> None:
        """Start no more workers and end the spares; running queries end with their own deadlines (or their
        cancellation), each killing its worker."""
        self._closed = True
        await self.drop_spares()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
