"""The data sandbox's engine, without processes: a CSV into a read-only table (types, bounds, rounded row
count, an atomic read-only file), bad CSVs refused by line, and the worker's guards in this process (the
authorizer and the words of its refusals). Queries in a worker process: tests/security/test_sandbox_worker.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
import urllib.parse
from pathlib import Path

import msgspec
import pytest

from connector import sandbox_worker as worker
from connector.errors import BadRequest
from connector.protocol.sandbox import SQL_FUNCTIONS, Column
from connector.services import sandbox_engine as engine
from connector.services.sandbox_engine import prepare_table, rounded


def write(folder: Path, text: str | bytes, name: str = "in.csv") -> Path:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def typed(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[1] for r in conn.execute("SELECT * FROM pragma_table_info('data')")]
        select = ", ".join(f'"{n}", typeof("{n}")' for n in names)
        return conn.execute(f"SELECT {select} FROM data ORDER BY rowid").fetchall()
    finally:
        conn.close()


# --- Good CSVs ------------------------------------------------------------------------------------------------

def test_types_are_inferred_from_the_values(tmp_path):
    csv_file = write(tmp_path, "id,score,name,zip,blank,mixed,big,exp\r\n"
                               "1,2.5,ann,0123,,7,9223372036854775807,1e3\r\n"
                               "-2,3,bob,4567,,x,9223372036854775808,-2.5E-2\r\n"
                               "+3,.5,,0,,8,1,.5\r\n")
    schema = prepare_table(csv_file, tmp_path / "t.db", max_rows=10)
    assert [(c.name, c.type) for c in schema.columns] == [
        ("id", "integer"), ("score", "real"), ("name", "text"), ("zip", "text"), ("blank", "text"),
        ("mixed", "text"), ("big", "real"), ("exp", "real")]
    assert schema.queryable == ["id", "score", "name", "zip", "blank", "mixed", "big", "exp"]
    assert schema.rows_rounded == 3


def test_the_table_holds_numbers_as_numbers_and_empty_cells_as_null(tmp_path):
    csv_file = write(tmp_path, "\ufeffid,score,name,zip\n1,2.5,\"Ann, \"\"the\"\" first\",0123\n\n2,,\"two\nlines\",\n")
    db = tmp_path / "t.db"
    prepare_table(csv_file, db, max_rows=10)
    assert typed(db) == [
        (1, "integer", 2.5, "real", 'Ann, "the" first', "text", "0123", "text"),
        (2, "integer", None, "null", "two\nlines", "text", None, "null"),
    ]


def test_types_hold_across_chunks(tmp_path):
    """A column that is whole numbers for thousands of rows and then has one real is real; one text value
    at the end makes a column text."""
    lines = ["n,x,t"] + [f"{i},{i},{i}" for i in range(engine._CHUNK_ROWS + 10)] + ["5,5.5,five"]
    schema = prepare_table(write(tmp_path, "\n".join(lines) + "\n"), tmp_path / "t.db", max_rows=100_000)
    assert [c.type for c in schema.columns] == ["integer", "real", "text"]


def test_declared_bounds_are_in_the_schema(tmp_path):
    csv_file = write(tmp_path, "region,salary,age\nnorth,1000,30\nsouth,2000.5,41\n")
    schema = prepare_table(csv_file, tmp_path / "t.db", declared={"salary": (0, 5000), "age": (18, 99.5)},
                           max_rows=10)
    assert schema.columns == [Column("region", "text"), Column("salary", "real", 0.0, 5000.0),
                              Column("age", "integer", 18.0, 99.5)]


@pytest.mark.parametrize(("count", "expected"), [
    (0, 0), (7, 7), (99, 99), (100, 100), (1234, 1200), (1250, 1200), (1260, 1300), (98_765, 99_000),
    (1_000_000, 1_000_000), (1_049_999, 1_000_000),
])
def test_rows_are_rounded_to_two_significant_digits(count, expected):
    assert rounded(count) == expected


def test_the_file_is_read_only_and_nothing_else_is_left(tmp_path):
    db = tmp_path / "tables" / "t.db"
    prepare_table(write(tmp_path, "a\n1\n"), db, max_rows=10)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o400
    assert sorted(p.name for p in db.parent.iterdir()) == ["t.db"]
    assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700


def test_publishing_again_replaces_the_table_whole(tmp_path):
    db = tmp_path / "t.db"
    prepare_table(write(tmp_path, "id\n1\n2\n"), db, max_rows=10)
    with pytest.raises(BadRequest):
        prepare_table(write(tmp_path, "id\n1\n2,3\n"), db, max_rows=10)
    assert [r[0] for r in typed(db)] == [1, 2]  # a refused import leaves the old table as it was
    prepare_table(write(tmp_path, "id,name\n7,x\n"), db, max_rows=10)
    assert typed(db) == [(7, "integer", "x", "text")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "t.db"]


# --- Bad CSVs -------------------------------------------------------------------------------------------------

BAD: dict[str, tuple[bytes, str]] = {
    "not-utf8": (b"a,b\n1,2\n3,\xff\xfe\n", "line 3 is not UTF-8 text"),
    "latin-1": ("name\nJos\u00e9\n".encode("latin-1"), "line 2 is not UTF-8 text"),
    "ragged-short": (b"a,b,c\n1,2,3\n4,5\n", "line 3 has 2 fields; the header has 3"),
    "ragged-long": (b"a,b\n1,2\n3,4\n5,6,7\n", "line 4 has 3 fields; the header has 2"),
    "ragged-after-multiline": (b'a,b\n1,"x\ny"\n3\n', "line 4 has 1 fields; the header has 2"),
    "duplicate": (b"id,name,ID\n1,a,2\n", "column 3 of the header, 'ID', repeats column 1"),
    "empty-name": (b"id,,name\n1,2,3\n", "column 2 of the header has no name"),
    "blank-name": (b"id,  ,name\n1,2,3\n", "column 2 of the header has no name"),
    "reserved-name": (b"id,__n\n1,2\n", "names beginning with '__' are kept"),
    "control-name": (b"id,a\x07b\n1,2\n", "control characters"),
    "empty-file": (b"", "the file is empty"),
    "only-blank-lines": (b"\n\n\n", "the file is empty"),
    "bad-quoting": (b'a,b\n1,"x"y\n', "line 2 is not valid CSV"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_csv_is_refused_with_the_line(tmp_path, case):
    content, words = BAD[case]
    db = tmp_path / "t.db"
    with pytest.raises(BadRequest) as refused:
        prepare_table(write(tmp_path, content), db, max_rows=100)
    assert words in refused.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no table, no temporary file


def test_too_many_columns_are_refused(tmp_path):
    header = ",".join(f"c{i}" for i in range(201))
    with pytest.raises(BadRequest, match="the header names 201 columns; at most 200 are allowed"):
        prepare_table(write(tmp_path, header + "\n" + ",".join("1" * 201) + "\n"), tmp_path / "t.db", max_rows=10)


def test_too_many_rows_are_refused(tmp_path):
    text = "a\n" + "1\n" * 11
    with pytest.raises(BadRequest, match="the file has more than 10 rows"):
        prepare_table(write(tmp_path, text), tmp_path / "t.db", max_rows=10)
    prepare_table(write(tmp_path, "a\n" + "1\n" * 10), tmp_path / "t.db", max_rows=10)


def test_a_value_too_long_is_refused_with_its_line(tmp_path):
    text = "id,text\n" + "".join(f"{i},short\n" for i in range(engine._CHUNK_ROWS + 5)) + "9," + "x" * 101 + "\n"
    with pytest.raises(BadRequest) as refused:
        prepare_table(write(tmp_path, text), tmp_path / "t.db", max_rows=100_000, max_cell_chars=100)
    assert refused.value.message == (f"line {engine._CHUNK_ROWS + 7}, column 'text': a value is longer than 100 "
                                     "characters")


def test_a_line_longer_than_any_record_can_be_is_refused(tmp_path):
    text = "a,b\n" + "1," + "2" * 10_000 + "\n"
    with pytest.raises(BadRequest):
        prepare_table(write(tmp_path, text), tmp_path / "t.db", max_rows=10, max_columns=2, max_cell_chars=100)


@pytest.mark.parametrize(("declared", "words"), [
    ({"wage": (0, 1)}, "bounds for column 'wage': the table has no such column"),
    ({"region": (0, 1)}, "bounds for column 'region': it holds text"),
    ({"salary": (10, 1)}, "bounds for column 'salary' must be finite numbers with low <= high"),
    ({"salary": (0, float("inf"))}, "must be finite numbers"),
    ({"salary": ("a", "b")}, "must be two numbers"),
])
def test_bad_bounds_are_refused(tmp_path, declared, words):
    with pytest.raises(BadRequest) as refused:
        prepare_table(write(tmp_path, "region,salary\nnorth,10\n"), tmp_path / "t.db", declared=declared,
                      max_rows=10)
    assert words in refused.value.message
    assert refused.value.path == "bounds"
    assert not (tmp_path / "t.db").exists()


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(BadRequest, match="the file cannot be read"):
        prepare_table(tmp_path / "nope.csv", tmp_path / "t.db", max_rows=10)


# --- The worker's guards, in this process ---------------------------------------------------------------------

def guarded(tmp_path: Path, *, functions: frozenset[str] = SQL_FUNCTIONS) -> tuple[sqlite3.Connection, worker.Guard]:
    db = tmp_path / "t.db"
    prepare_table(write(tmp_path, "id,region\n1,north\n2,south\n3,north\n"), db, max_rows=10)
    request = worker.Request(db=str(db), sql="", parameters={}, max_rows=10, time_s=10.0, memory_bytes=256 << 20,
                             functions=sorted(functions))
    guard = worker.Guard(time.monotonic() + 10.0, request.functions)
    return worker.open_table(request, guard), guard


def test_a_function_off_the_list_is_refused_even_where_it_exists(tmp_path):
    """``readfile`` and ``writefile`` belong to the sqlite3 shell, not the library; were a build to have them,
    the authorizer still refuses them by name."""
    conn, guard = guarded(tmp_path)
    try:
        conn.create_function("readfile", 1, lambda path: "secret")
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute("SELECT readfile('/etc/passwd')")
        assert guard.refusal is not None
        assert (guard.refusal.rule, guard.refusal.message) == ("function", "the function readfile is not allowed")
    finally:
        conn.close()


def test_the_listed_functions_run(tmp_path):
    conn, guard = guarded(tmp_path)
    try:
        rows = conn.execute("SELECT upper(region), count(*), total(id), sqrt(max(0.0, 4)) FROM data "
                            "GROUP BY region ORDER BY 1").fetchall()
        assert rows == [("NORTH", 2, 4.0, 2.0), ("SOUTH", 1, 2.0, 2.0)]
        assert guard.refusal is None
    finally:
        conn.close()


@pytest.mark.parametrize(("sql", "rule", "words"), [
    ("SELECT * FROM sqlite_master", "table", "only the table data may be read, not sqlite_master"),
    ("SELECT count(*) FROM pragma_function_list", "not-select", "only a SELECT may run here"),
    ("PRAGMA writable_schema = ON", "not-select", "refused: pragma writable_schema"),
    ("ATTACH DATABASE ':memory:' AS other", "not-select", "refused: attach"),
    ("CREATE TEMP TABLE t (a)", "not-select", "refused: insert sqlite_temp_master"),
    ("SELECT group_concat(region) FROM data", "function", "the function group_concat is not allowed"),
])
def test_the_authorizer_names_what_it_refused(tmp_path, sql, rule, words):
    conn, guard = guarded(tmp_path)
    try:
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(sql).fetchall()
        refusal = worker.refusal_of(sqlite3.DatabaseError("not authorized"), guard)
        assert refusal.rule == rule
        assert words in refusal.message
    finally:
        conn.close()


@pytest.mark.parametrize(("error", "rule"), [
    (sqlite3.OperationalError("interrupted"), "time"),
    (MemoryError(), "memory"),
    (sqlite3.OperationalError("database or disk is full"), "memory"),
    (sqlite3.DataError("string or blob too big"), "size"),
    (sqlite3.ProgrammingError("Incorrect number of bindings supplied."), "parameter"),
    (sqlite3.ProgrammingError("You can only execute one statement at a time."), "not-select"),
    (sqlite3.OperationalError("no such function: readfile"), "function"),
    (sqlite3.OperationalError("no such table: secrets"), "table"),
    (sqlite3.OperationalError("too many terms in compound SELECT"), "union"),
    (sqlite3.OperationalError('near "FROM": syntax error'), "sql"),
    (sqlite3.IntegrityError("whatever"), "engine"),
    (ValueError("boom"), "engine"),
])
def test_what_stopped_a_query_is_named_by_a_rule(error, rule):
    refusal = worker.refusal_of(error, worker.Guard(0.0, []))
    assert refusal.rule == rule
    assert "Traceback" not in refusal.message


@pytest.mark.parametrize("request_bytes", [b"", b"not json", b"[]", b'{"db": 1}', b"{" * 2_000_000])
def test_a_malformed_request_is_answered_with_a_rule(request_bytes):
    """(No request here is valid: a valid one would set this process's resource limits.)"""
    answer = worker.answer(request_bytes, time.monotonic())
    assert answer.startswith(b'{"error":{"rule":')
    assert b"Traceback" not in answer


# --- The worker's JSON, read and written with the standard library: as msgspec would ---------------------------

class ReferenceRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The request as the engine's msgspec types describe it (what the worker's own reading must match)."""

    db: str
    sql: str
    parameters: dict[str, int | float | str | None]
    max_rows: int
    time_s: float
    memory_bytes: int
    functions: list[str]


GOOD = {"db": "/t.db", "sql": "SELECT 1", "parameters": {"a": 1, "b": 2.5, "c": "x", "d": None}, "max_rows": 10,
        "time_s": 5.0, "memory_bytes": 1 << 28, "functions": ["count"]}


#: A field left out of the request.
_DROP = object()


def _with(**changes: object) -> bytes:
    fields = {**GOOD, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not _DROP}).encode()

REQUESTS = [
    _with(),
    _with(time_s=5),  # an integer time
    _with(parameters={}),
    _with(functions=[]),
    _with(extra=1),
    _with(db=_DROP),
    _with(db=1),
    _with(sql=None),
    _with(max_rows=True),
    _with(max_rows=1.5),
    _with(memory_bytes="1"),
    _with(time_s="5"),
    _with(time_s=False),
    _with(parameters={"a": True}),
    _with(parameters={"a": [1]}),
    _with(parameters={"a": {"b": 1}}),
    _with(parameters=[1]),
    _with(functions=[1]),
    _with(functions="count"),
    json.dumps(GOOD).replace('"time_s": 5.0', '"time_s": NaN').encode(),
    json.dumps(GOOD).replace('"time_s": 5.0', '"time_s": Infinity').encode(),
    json.dumps(GOOD, ensure_ascii=False).replace('"x"', '"é ☃ \\u2603"').encode(),
    json.dumps(GOOD).encode("utf-16"),
    b"\xff\xfe not utf-8",
    b"[]",
    b"null",
    b"",
    b"{",
    b"[" * 100_000,
    json.dumps(GOOD).encode() + b" trailing",
]


@pytest.mark.parametrize("raw", REQUESTS)
def test_the_worker_reads_a_request_as_msgspec_would(raw):
    try:
        expected = msgspec.json.decode(raw, type=ReferenceRequest)
    except (msgspec.DecodeError, msgspec.ValidationError):
        expected = None
    try:
        request = worker.decode_request(raw)
    except worker.Refusal as refusal:
        assert refusal.rule == "engine"
        request = None
    if expected is None:
        assert request is None
    else:
        assert request is not None
        assert {name: getattr(request, name) for name in ReferenceRequest.__struct_fields__} == \
            msgspec.structs.asdict(expected)
        assert type(request.time_s) is float


ROWS = [
    [(1, -2, 0, 2**63 - 1, -(2**63))],
    [(0.1, -0.0, 1e16, 1.5e-300, 123456789.125, 2.0**60)],
    [(float("inf"), 1), (float("-inf"), 2.5)],
    [("plain", 'quote " backslash \\ slash /', "tab\tnewline\n\x00\x1f\x7f", "é ☃ 𝄞 \u2028\u2029")],
    [(None, None)],
    [(b"\x00\x01binary\xff",)],
    [],
]


@pytest.mark.parametrize("rows", ROWS)
def test_the_workers_answer_reads_back_as_msgspecs_would(rows):
    ours = worker.encode_rows(rows)
    theirs = msgspec.json.encode({"rows": rows})
    assert msgspec.json.decode(ours, type=engine._Answer) == msgspec.json.decode(theirs, type=engine._Answer)
    assert engine._rows(ours) == engine._rows(theirs)


def test_an_error_answer_is_read_as_a_refusal():
    with pytest.raises(engine.SandboxError) as refused:
        engine._rows(worker.error_answer("time", 'the "query" ran out of time'))
    assert (refused.value.rule, refused.value.message) == ("time", 'the "query" ran out of time')


def test_the_tables_path_reaches_sqlite_whatever_its_characters(tmp_path):
    """``%``, ``?`` and ``#`` in the table's path are escaped in the URI, as urllib.parse.quote would; the rest
    SQLite reads as it is."""
    folder = tmp_path / "a %41 b?c=d#e é"
    folder.mkdir()
    db = folder / "t.db"
    prepare_table(write(tmp_path, "id\n1\n2\n"), db, max_rows=10)
    assert urllib.parse.unquote(worker.uri_path(str(db))) == str(db)
    assert urllib.parse.unquote(urllib.parse.quote(str(db))) == str(db)
    request = worker.Request(db=str(db), sql="", parameters={}, max_rows=10, time_s=10.0, memory_bytes=256 << 20,
                             functions=sorted(SQL_FUNCTIONS))
    guard = worker.Guard(time.monotonic() + 10.0, request.functions)
    conn = worker.open_table(request, guard)
    try:
        assert conn.execute("SELECT count(*) FROM data").fetchall() == [(2,)]
    finally:
        conn.close()
