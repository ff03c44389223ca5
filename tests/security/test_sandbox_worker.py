"""Attacks on the data sandbox's engine, as if the query check had been passed by.

Each statement here is handed to :func:`run_query` in a hand-made ``CheckedQuery``, never through
``check_query``: the worker process must refuse it on its own (authorizer, read-only immutable open, SQLite's
limits, resource limits, time). Every test that starts a worker records its process id and makes sure the
process and its whole process group are gone afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sqlite3
import stat
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connector.protocol.sandbox import CheckedQuery, QueryTemplate, SandboxTerms, check_query
from connector.services.sandbox_engine import (
    SPARES,
    WORKER,
    Limits,
    SandboxBusy,
    SandboxError,
    SandboxFailure,
    exchange,
    interpreter_command,
    prepare_table,
    run_query,
    worker_command,
)
from connector.services.sandbox_engine import Workers as SandboxWorkers
from connector.testing import eventually

REGIONS = ("north", "south", "east", "west", "centre")
ROWS = 300


def people() -> list[tuple[int, str, float, int, str]]:
    return [(i, REGIONS[i % 5], 1000.0 + 10 * i, 18 + i % 60, f"secret-{i}-" + "s" * 100) for i in range(ROWS)]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("sandbox")
    csv_file = folder / "people.csv"
    csv_file.write_text("id,region,salary,age,secret\n"
                        + "".join(f"{i},{r},{s},{a},{x}\n" for i, r, s, a, x in people()))
    db = folder / "tables" / "people.db"
    schema = prepare_table(csv_file, db, declared={"salary": (0, 10_000), "age": (18, 99)}, max_rows=10_000)
    return db, schema


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """A table of long strings: a self-join of it grouped by their concatenation needs gigabytes."""
    folder = tmp_path_factory.mktemp("wide")
    csv_file = folder / "wide.csv"
    csv_file.write_text("id,blob\n" + "".join(f"{i},{'w' * 4000}{i}\n" for i in range(1000)))
    db = folder / "wide.db"
    prepare_table(csv_file, db, max_rows=10_000)
    return db


def _state(pid: int) -> str | None:
    """The process's state letter, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()[0]


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group *pgid*."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _exists(path: str) -> bool:
    return os.path.lexists(path)


class Workers:
    """The worker processes a test started (``on_start``), checked to be gone at its end."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def started(self, pid: int) -> None:
        self.pids.append(pid)

    def assert_gone(self) -> None:
        """Each worker is gone, and nothing is left in its process group (a SIGKILL takes a moment to land:
        polled, with a deadline)."""
        assert self.pids, "no worker was started"
        for pid in self.pids:
            assert _state(pid) in (None, "Z", "X"), f"worker {pid} still runs"
            deadline = time.monotonic() + 10
            while _group(pid) and time.monotonic() < deadline:
                time.sleep(0.01)  # ok-sleep: polling with a deadline (the fixture's teardown is synchronous)
            assert _group(pid) == [], f"worker {pid}'s process group still has members"


@pytest.fixture
def workers():
    tracked = Workers()
    yield tracked
    tracked.assert_gone()


#: A probe's first lines: the worker's module, loaded by its path as the isolated interpreter cannot import it.
LOAD_WORKER = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("sandbox_worker", {str(WORKER)!r})
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
"""


def hand_made(sql: str, parameters: dict[str, object] | None = None) -> CheckedQuery:
    """A statement as if it had passed the check (it has not)."""
    return CheckedQuery(sql=sql, parameters=parameters or {}, outputs=[], epsilon=0.0)


# --- What runs ------------------------------------------------------------------------------------------------

async def test_a_checked_group_by_answers_its_groups_with_their_sizes(table, workers):
    db, schema = table
    terms = SandboxTerms(epsilon_per_query=1.0, epsilon_total=10.0)
    checked = check_query("SELECT region, count(*) AS n, sum(salary) AS total FROM data GROUP BY region", {},
                          terms, schema)
    rows = await run_query(db, checked, on_start=workers.started)
    expected = Counter(r for _, r, _, _, _ in people())
    sums = {region: sum(s for _, r, s, _, _ in people() if r == region) for region in REGIONS}
    assert sorted(rows) == sorted((region, expected[region], sums[region], expected[region]) for region in REGIONS)
    workers.assert_gone()


async def test_a_template_runs_with_its_parameters_bound(table, workers):
    db, schema = table
    terms = SandboxTerms(templates=[QueryTemplate(
        id="older", sql="SELECT region, count(*) AS n FROM data WHERE age >= :age GROUP BY region",
        parameters={"age": "integer"})])
    checked = check_query("", {"age": 70}, terms, schema, template_id="older")
    rows = await run_query(db, checked, on_start=workers.started)
    expected = Counter(r for _, r, _, a, _ in people() if a >= 70)
    assert sorted(rows) == sorted((region, n, n) for region, n in expected.items())


CHECKED = [
    ("SELECT region, count(*), sum(salary), avg(age) FROM data WHERE age BETWEEN 20 AND 60 GROUP BY region", None),
    ("SELECT count(*) FROM data WHERE coalesce(region, 'none') <> 'x' AND abs(age - 40) < round(12.5) "
     "AND substr(region, 1, 1) = 'n' AND length(region) > 1 AND cast(age AS TEXT) <> '' AND iif(age > 1, 1, 0) = 1 "
     "AND lower(region) LIKE 'n%' AND upper(region) <> 'X'", None),
    ("SELECT strftime('%Y', '2025-06-01') AS y, count(*) FROM data GROUP BY strftime('%Y', '2025-06-01')", None),
    ("SELECT region, min(age), max(salary), stddev(age), count(DISTINCT age) FROM data GROUP BY region", "spread"),
]


@pytest.mark.parametrize(("sql", "template"), CHECKED)
async def test_what_the_check_accepts_the_worker_runs_as_sqlite_would(table, workers, sql, template):
    """The worker's authorizer and limits let through every function and form the checked statements use."""
    db, schema = table
    if template is None:
        checked = check_query(sql, {}, SandboxTerms(epsilon_per_query=1.0, epsilon_total=10.0), schema)
    else:
        checked = check_query("", {}, SandboxTerms(templates=[QueryTemplate(id=template, sql=sql)]), schema,
                              template_id=template)
    rows = await run_query(db, checked, on_start=workers.started)
    assert rows == _bare(db, checked)
    assert rows and all(row[-1] > 0 for row in rows)  # __n


def _bare(db: Path, checked: CheckedQuery) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(checked.sql, checked.parameters).fetchall()
    finally:
        conn.close()


async def test_the_worker_starts_with_nothing_of_the_node(tmp_path, workers, monkeypatch):
    """The environment holds what Python needs and nothing of the node's (no token, no key in the
    environment); the working folder is private, empty, and removed afterwards."""
    monkeypatch.setenv("TDS_ADMIN_TOKEN", "must-not-reach-the-worker")
    probe = ("import json, os, sys; sys.stdout.write(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
             "'mode': os.stat('.').st_mode, 'files': os.listdir('.'), 'pgid': os.getpgid(0), 'pid': os.getpid()}))")
    seen = json.loads(await exchange([sys.executable, "-c", probe], b"", timeout_s=30, max_output_bytes=1 << 20,
                                     on_start=workers.started))
    assert set(seen["env"]) <= {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUTF8", "SQLITE_TMPDIR", "LC_CTYPE"}
    assert "must-not-reach-the-worker" not in json.dumps(seen)
    assert stat.S_IMODE(seen["mode"]) == 0o700 and seen["files"] == []
    assert seen["env"]["SQLITE_TMPDIR"] == seen["cwd"]
    assert seen["pgid"] == seen["pid"]  # a process group of its own, to be killed whole
    assert not _exists(seen["cwd"])


async def test_the_worker_limits_itself_before_it_opens_anything(workers):
    """What :func:`set_limits` leaves the worker with: no file can grow by a byte, a few descriptors, the
    address space and processor time bounded."""
    probe = LOAD_WORKER + """
import errno, json, os, resource, sys
worker.set_limits(3.0, 200 << 20)
fd = os.open("probe", os.O_WRONLY | os.O_CREAT, 0o600)
try:
    os.write(fd, b"x")
    wrote = "yes"
except OSError as exc:
    wrote = errno.errorcode[exc.errno]
limits = {name: resource.getrlimit(getattr(resource, name)) for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE",
                                                                         "RLIMIT_NOFILE", "RLIMIT_CORE")}
sys.stdout.write(json.dumps({"wrote": wrote, "size": os.fstat(fd).st_size, "limits": limits}))
"""
    seen = json.loads(await exchange([*interpreter_command(), "-c", probe], b"", timeout_s=30,
                                     max_output_bytes=1 << 20, on_start=workers.started))
    assert seen["wrote"] == "EFBIG" and seen["size"] == 0
    assert seen["limits"] == {"RLIMIT_AS": [200 << 20] * 2, "RLIMIT_CPU": [4, 4], "RLIMIT_FSIZE": [0, 0],
                              "RLIMIT_NOFILE": [8, 8], "RLIMIT_CORE": [0, 0]}


# --- What the authorizer refuses ------------------------------------------------------------------------------

REFUSED: list[tuple[str, str]] = [
    ("ATTACH DATABASE '/tmp/tds-sandbox-other.db' AS other", "not-select"),
    ("SELECT count(*) FROM data; ATTACH DATABASE ':memory:' AS other", "not-select"),
    ("PRAGMA table_info(data)", "not-select"),
    ("PRAGMA writable_schema = ON", "not-select"),
    ("SELECT count(*) FROM pragma_table_info('data')", "not-select"),
    ("SELECT * FROM sqlite_master", "table"),
    ("SELECT name, count(*) FROM sqlite_schema GROUP BY name", "table"),
    ("SELECT count(*) FROM sqlite_temp_master", "table"),
    ("INSERT INTO data (id) VALUES (1)", "not-select"),
    ("UPDATE data SET salary = 0", "not-select"),
    ("DELETE FROM data", "not-select"),
    ("CREATE TEMP TABLE copy AS SELECT * FROM data", "not-select"),
    ("CREATE TABLE copy (a)", "not-select"),
    ("CREATE TEMP VIEW v AS SELECT * FROM data", "not-select"),
    ("CREATE TEMP TRIGGER t AFTER INSERT ON data BEGIN SELECT 1; END", "not-select"),
    ("VACUUM INTO '/tmp/tds-sandbox-copy.db'", "not-select"),
    ("BEGIN", "not-select"),
    ("SAVEPOINT s", "not-select"),
    ("SELECT load_extension('/tmp/evil.so')", "function"),
    ("SELECT count(*) FROM data WHERE load_extension('/tmp/evil.so') IS NULL", "function"),
    ("SELECT readfile('/etc/passwd')", "function"),
    ("SELECT writefile('/tmp/tds-sandbox-written', secret) FROM data", "function"),
    ("SELECT zeroblob(1000000000)", "function"),
    ("SELECT length(randomblob(1000000000))", "function"),
    ("SELECT group_concat(secret) FROM data", "function"),
    ("SELECT json_group_array(secret) FROM data", "function"),
    ("SELECT printf('%.*c', 1000000000, 'x')", "function"),
    ("SELECT sqlite_version()", "function"),
    ("SELECT typeof(secret), count(*) FROM data GROUP BY 1", "function"),
    ("SELECT count(*) FROM json_each('[1, 2]')", "not-select"),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", "union"),
    ("SELECT count(*) FROM data UNION SELECT count(*) FROM data", "union"),
]


@pytest.mark.parametrize(("sql", "rule"), REFUSED)
async def test_the_worker_refuses_what_the_check_should_have(table, workers, sql, rule):
    db, _ = table
    with pytest.raises(SandboxError) as refused:
        await run_query(db, hand_made(sql), on_start=workers.started)
    assert refused.value.rule == rule, refused.value.message
    assert refused.value.status == 422
    assert refused.value.details == {"rule": rule}
    assert "Traceback" not in refused.value.message
    for written in ("/tmp/tds-sandbox-other.db", "/tmp/tds-sandbox-copy.db", "/tmp/tds-sandbox-written"):
        assert not _exists(written)


async def test_the_table_file_is_unchanged_by_attempts_to_write(table, workers):
    db, _ = table
    before = db.read_bytes()
    for sql in ("DELETE FROM data", "UPDATE data SET secret = 'x'", "DROP TABLE data"):
        with pytest.raises(SandboxError):
            await run_query(db, hand_made(sql), on_start=workers.started)
    assert db.read_bytes() == before
    assert stat.S_IMODE(db.stat().st_mode) == 0o400


# --- What the limits stop -------------------------------------------------------------------------------------

async def test_a_query_that_runs_for_ever_is_interrupted(table, workers):
    db, _ = table
    forever = "SELECT count(*) FROM data a, data b, data c, data d, data e"  # 300⁵ rows
    with pytest.raises(SandboxError) as stopped:
        await run_query(db, hand_made(forever), timeout_s=1.0, on_start=workers.started)
    assert stopped.value.rule == "time"


async def test_a_worker_that_does_not_answer_is_killed(workers):
    """The parent's own deadline, for a worker stuck where its progress handler never runs."""
    with pytest.raises(SandboxError) as stopped:
        await exchange([sys.executable, "-c", "import signal; signal.pause()"], b"", timeout_s=0.5,
                       max_output_bytes=1024, on_start=workers.started)
    assert stopped.value.rule == "time"


async def test_what_a_worker_leaves_running_in_its_group_is_killed(tmp_path, workers):
    pid_file = tmp_path / "straggler.pid"
    leave_behind = ("import subprocess, sys, time; "
                    "p = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'], "
                    "stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL); "
                    f"open({str(pid_file)!r}, 'w').write(str(p.pid))")
    await exchange([sys.executable, "-c", leave_behind], b"", timeout_s=30, max_output_bytes=1024,
                   on_start=workers.started)
    straggler = int(pid_file.read_text())
    workers.assert_gone()
    assert _state(straggler) in (None, "Z", "X")


async def test_a_query_answering_too_many_rows_is_refused(table, workers):
    db, _ = table
    with pytest.raises(SandboxError) as refused:
        await run_query(db, hand_made("SELECT id, count(*) FROM data GROUP BY id"), max_rows=ROWS - 1,
                        on_start=workers.started)
    assert refused.value.rule == "size"
    assert len(await run_query(db, hand_made("SELECT id, count(*) FROM data GROUP BY id"), max_rows=ROWS,
                               on_start=workers.started)) == ROWS


async def test_an_answer_larger_than_its_bound_is_refused(table, workers):
    db, _ = table
    with pytest.raises(SandboxError) as refused:
        await run_query(db, hand_made("SELECT secret, count(*) FROM data GROUP BY secret"), max_output_bytes=10_000,
                        on_start=workers.started)
    assert refused.value.rule == "size"


async def test_a_memory_bomb_is_stopped_by_the_memory_limit(wide, workers):
    """Every pair of 4 kB strings as a group key: about 8 GB to sort, in a worker allowed 128 MiB."""
    bomb = "SELECT a.blob || b.blob AS k, count(*) FROM data a, data b GROUP BY k"
    with pytest.raises(SandboxError) as stopped:
        await run_query(wide, hand_made(bomb), memory_bytes=128 << 20, timeout_s=60, on_start=workers.started)
    assert stopped.value.rule == "memory"


async def test_a_parameter_that_is_not_a_value_is_refused_before_a_worker_starts(table):
    db, _ = table
    with pytest.raises(SandboxError) as refused:
        await run_query(db, hand_made("SELECT count(*) FROM data WHERE id = :id", {"id": [1, 2]}))
    assert refused.value.rule == "parameter"


async def test_a_malformed_request_is_answered_with_a_rule(workers):
    answer = json.loads(await exchange(worker_command(), b"{not json", timeout_s=30, max_output_bytes=1 << 20,
                                       on_start=workers.started))
    assert answer["error"]["rule"] == "engine"


def test_this_process_keeps_its_own_limits():
    """The limits are the worker's alone: the node that started workers above is not narrowed."""
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] != 0


# --- The node's workers: a spare started ahead of time, a bound on how many run at once ----------------------

LIMITS: dict[str, Any] = {"timeout_s": 3.0, "memory_bytes": 200 << 20}


def _limits_of(pid: int) -> dict[str, tuple[str, str]]:
    """The process's resource limits as /proc shows them: name → (soft, hard)."""
    rows = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        soft, hard = line[26:].split()[:2]
        rows[line[:26].strip()] = (soft, hard)
    return rows


def _proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


async def _spare(pool: SandboxWorkers, workers: Workers) -> int:
    """The spare the pool's next query takes, once every spare has set its limits (polled, with a deadline); all
    of them tracked to be gone at the end."""
    pid = await pool.ready()
    assert pid is not None, "no spare was started"
    for spare in pool.spare_pids:
        if spare not in workers.pids:
            workers.started(spare)

        async def limited(spare: int = spare) -> bool:
            return bool(_limits_of(spare)["Max file size"][0] == "0")

        await eventually(limited, 10, every_s=0.01, what=f"the limits of spare {spare}")
    return pid


async def _gone(pid: int) -> None:
    """Wait until process *pid* has ended (a worker whose answer is in is ended in the background)."""
    async def ended() -> bool:
        return _state(pid) in (None, "Z", "X")

    await eventually(ended, 10, every_s=0.01, what=f"the end of worker {pid}")


async def _warm(pool: SandboxWorkers, db: Path, workers: Workers, **limits: Any) -> int:
    """One query through *pool* (which starts its spare), and the spare once it waits."""
    await pool.run_query(db, hand_made("SELECT count(*) FROM data"), on_start=workers.started,
                         **(limits or LIMITS))
    return await _spare(pool, workers)


@pytest.fixture
async def pool(workers):
    """A node's workers, closed before the test's worker processes are checked to be gone."""
    node_workers = SandboxWorkers()
    yield node_workers
    await node_workers.close()


async def test_no_spare_runs_before_the_first_query():
    pool = SandboxWorkers()
    assert pool.spare_pid is None and await pool.ready() is None
    await pool.close()


async def test_a_spare_waits_with_its_limits_set_nothing_open_and_nothing_of_the_node(table, pool, workers,
                                                                                    monkeypatch):
    monkeypatch.setenv("TDS_ADMIN_TOKEN", "must-not-reach-the-worker")
    db, _ = table
    pid = await _warm(pool, db, workers)
    limits = _limits_of(pid)
    assert limits["Max address space"] == (str(200 << 20),) * 2
    assert limits["Max cpu time"] == ("4", "4")
    assert limits["Max file size"] == ("0", "0") and limits["Max core file size"] == ("0", "0")
    assert limits["Max open files"] == ("8", "8")
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]  # the table is opened once the query is in
    environment = _proc(pid, "environ").split(b"\0")
    assert {entry.split(b"=", 1)[0] for entry in environment if entry} <= {b"SQLITE_TMPDIR", b"LC_CTYPE"}
    assert b"must-not-reach-the-worker" not in b"".join(environment)
    folder = os.readlink(f"/proc/{pid}/cwd")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700 and os.listdir(folder) == []
    assert os.getpgid(pid) == pid
    command = _proc(pid, "cmdline").split(b"\0")
    assert command[1:4] == [b"-I", b"-S", b"-B"] and command[4] == str(WORKER).encode()


async def test_the_worker_runs_isolated_with_the_standard_library_alone(workers):
    """Nothing installed can be imported where the worker runs, and the worker imports nothing that is not part
    of the standard library."""
    probe = LOAD_WORKER + """
import json, sys, sysconfig
stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
outside = sorted(name for name, module in sys.modules.items()
                 if getattr(module, "__file__", None) and not module.__file__.startswith(stdlib)
                 and name != "sandbox_worker")
importable = []
for name in ("msgspec", "connector", "sqlglot"):
    try:
        __import__(name)
        importable.append(name)
    except ImportError:
        pass
sys.stdout.write(json.dumps({"outside": outside, "importable": importable, "isolated": sys.flags.isolated,
                             "no_site": sys.flags.no_site, "site": "site" in sys.modules}))
"""
    seen = json.loads(await exchange([*interpreter_command(), "-c", probe], b"", timeout_s=30,
                                     max_output_bytes=1 << 20, on_start=workers.started))
    assert seen == {"outside": [], "importable": [], "isolated": 1, "no_site": 1, "site": False}


async def test_primed_workers_wait_with_two_spares_before_any_query(table, pool, workers):
    pool.prime(Limits(LIMITS["timeout_s"], LIMITS["memory_bytes"]))
    first = await _spare(pool, workers)
    assert len(pool.spare_pids) == SPARES == 2 and pool.spare_pids[0] == first
    db, _ = table
    ran: list[int] = []
    await pool.run_query(db, hand_made("SELECT count(*) FROM data"), on_start=ran.append, **LIMITS)
    assert ran == [first]


async def test_a_query_takes_the_oldest_spare_and_another_is_started_once_it_is_over(table, pool, workers):
    db, schema = table
    spare = await _warm(pool, db, workers)
    older, younger = pool.spare_pids
    assert spare == older
    checked = check_query("SELECT region, count(*) AS n, sum(salary) AS total FROM data GROUP BY region", {},
                          SandboxTerms(epsilon_per_query=1.0, epsilon_total=10.0), schema)
    ran: list[int] = []
    rows = await pool.run_query(db, checked, on_start=ran.append, **LIMITS)
    assert ran == [older]
    assert rows == await run_query(db, checked, on_start=workers.started, **LIMITS)
    assert await _spare(pool, workers) == younger
    assert len(pool.spare_pids) == 2 and older not in pool.spare_pids
    await _gone(older)


async def test_back_to_back_queries_never_start_a_worker_of_their_own(table, pool, workers):
    db, _ = table
    await _warm(pool, db, workers)
    assert pool.cold_starts == 1  # the first query: nothing was primed
    for _ in range(6):
        await pool.run_query(db, hand_made("SELECT count(*) FROM data"), on_start=workers.started, **LIMITS)
    assert pool.cold_starts == 1
    await _spare(pool, workers)


async def test_spares_take_no_slot(table, workers):
    db, _ = table
    pool = SandboxWorkers(max_running=1, max_wait_s=0.05)
    try:
        await _warm(pool, db, workers)
        assert len(pool.spare_pids) == 2
        async with pool.slot():  # the one slot is free although two spares wait
            pass
    finally:
        await pool.close()
    workers.assert_gone()


async def test_a_spare_with_other_limits_is_not_used(table, pool, workers):
    db, _ = table
    spare = await _warm(pool, db, workers)
    ran: list[int] = []
    await pool.run_query(db, hand_made("SELECT count(*) FROM data"), timeout_s=2.0, memory_bytes=200 << 20,
                         on_start=ran.append)
    workers.pids.extend(ran)
    assert ran != [spare]
    assert _limits_of(await _spare(pool, workers))["Max cpu time"] == ("3", "3")  # the new spare has the new ones


@pytest.mark.parametrize(("sql", "rule"), REFUSED)
async def test_the_spare_refuses_what_a_fresh_worker_refuses(table, pool, workers, sql, rule):
    db, _ = table
    spare = await _warm(pool, db, workers)
    ran: list[int] = []
    with pytest.raises(SandboxError) as refused:
        await pool.run_query(db, hand_made(sql), on_start=ran.append, **LIMITS)
    assert ran == [spare]
    assert refused.value.rule == rule, refused.value.message


async def test_a_query_that_runs_for_ever_in_the_spare_is_interrupted(table, pool, workers):
    db, _ = table
    spare = await _warm(pool, db, workers, timeout_s=1.0, memory_bytes=200 << 20)
    with pytest.raises(SandboxError) as stopped:
        await pool.run_query(db, hand_made("SELECT count(*) FROM data a, data b, data c, data d, data e"),
                             timeout_s=1.0, memory_bytes=200 << 20, on_start=workers.started)
    assert stopped.value.rule == "time"
    await _gone(spare)


async def test_a_spare_that_dies_is_replaced(table, pool, workers):
    db, _ = table
    spare = await _warm(pool, db, workers)
    other = pool.spare_pids[1]
    os.kill(spare, signal.SIGKILL)

    async def replaced() -> bool:
        return spare not in pool.spare_pids and len(pool.spare_pids) == 2

    await eventually(replaced, 10, every_s=0.01, what="the dead spare's replacement")
    assert await _spare(pool, workers) == other
    replacement = pool.spare_pids[1]
    assert replacement != spare
    for expected in (other, replacement):
        ran: list[int] = []
        assert await pool.run_query(db, hand_made("SELECT count(*) FROM data"), on_start=ran.append,
                                    **LIMITS) == [(ROWS,)]
        assert ran == [expected]


async def test_closing_the_workers_ends_the_spare_and_refuses_further_queries(table, workers):
    db, _ = table
    pool = SandboxWorkers()
    try:
        spare = await _warm(pool, db, workers)
    finally:
        await pool.close()
    assert pool.spare_pids == []
    workers.assert_gone()  # the spares and their process groups included
    with pytest.raises(SandboxFailure) as refused:
        await pool.run_query(db, hand_made("SELECT count(*) FROM data"), **LIMITS)
    assert refused.value.status == 503
    assert _state(spare) in (None, "Z", "X")


async def test_dropped_spares_are_gone_and_the_next_query_starts_them_again(table, pool, workers):
    db, _ = table
    await _warm(pool, db, workers)
    spares = set(pool.spare_pids)
    await pool.drop_spares()
    assert pool.spare_pids == []
    assert all(_state(pid) in (None, "Z", "X") for pid in spares)  # ended before drop_spares returned
    for pid in workers.pids:
        await _gone(pid)  # the first query's worker, ended in the background once its answer was in
    workers.assert_gone()
    await _warm(pool, db, workers)
    assert len(pool.spare_pids) == 2 and not spares & set(pool.spare_pids)


async def test_a_spare_whose_node_is_gone_exits_on_its_own(workers):
    """A node killed outright cannot end its spare: the spare sees its stdin close and exits by itself."""
    command = worker_command(Limits(LIMITS["timeout_s"], LIMITS["memory_bytes"]))
    node = ("import subprocess, sys; "
            f"p = subprocess.Popen({command!r}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, "
            "stderr=subprocess.DEVNULL, start_new_session=True); "
            "print(p.pid, flush=True); sys.stdin.read()")
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", node, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        spare = int(await asyncio.wait_for(process.stdout.readline(), 30))
        workers.started(spare)
    finally:
        process.kill()
        await process.wait()
    await _gone(spare)  # the spare does not outlive its node


async def test_queries_beyond_the_bound_wait_for_a_slot():
    pool = SandboxWorkers(max_running=1, max_wait_s=60)
    entered = asyncio.Event()

    async def second() -> None:
        async with pool.slot():
            entered.set()

    async with pool.slot():
        waiting = asyncio.create_task(second())

        async def queued() -> bool:
            return pool.waiting > 0

        await eventually(queued, 10, every_s=0.01, what="the second query waiting")
        assert not entered.is_set()
    await asyncio.wait_for(waiting, 10)
    assert entered.is_set() and pool.waiting == 0
    await pool.close()


@pytest.mark.parametrize("settings", [{"max_wait_s": 0.05}, {"max_wait_s": 60, "max_waiting": 0}])
async def test_a_query_with_no_room_is_refused_busy_with_a_retry_after(settings):
    pool = SandboxWorkers(max_running=1, **settings)
    async with pool.slot():
        with pytest.raises(SandboxBusy) as refused:
            async with pool.slot():
                pytest.fail("admitted beyond the bound")
    assert refused.value.status == 503 and refused.value.rule == "busy"
    assert refused.value.details == {"rule": "busy"}
    assert refused.value.retry_after >= 1
    async with pool.slot():  # the slot was given back
        pass
    await pool.close()
