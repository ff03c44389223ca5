"""Scale out: one node on SQLite, on PostgreSQL, and as three processes on PostgreSQL behind one address.

Three set-ups of the same node, each a data folder of its own, all running side by side:

- ``sqlite x1``: one ``tds serve`` process, its store the SQLite file in its folder (the default);
- ``pg x1``: one process, its store a schema of the PostgreSQL server (``store = "postgresql://…"``);
- ``pg x3``: three processes of one node sharing its folder and its schema (``tds serve --port P
  --management-port M``), behind a round-robin proxy for the public address (the node's ``public_url``) and
  one for the management API (:class:`connector.testing.RoundRobinProxy`, each in a process of its own, as a
  load balancer would be).

Measured, in rounds that take turns over the set-ups (so that load from elsewhere on the machine falls on all
alike), the medians of the rounds' figures; each run lasts about :data:`RUN_SECONDS` (its size is set from the
set-up's warm-up rate):

- durable uses per second through the management API (``POST /api/management/v1/usage``, ``deliver: false``)
  from 64 concurrent clients on keep-alive connections in a process of their own, with the clients of
  ``benchmarks/usage.py``: all on one agreement (one usage chain) whose policy allows 10^9 uses;
- negotiations per second with 64 in flight, as ``benchmarks/negotiation.py`` runs them: the set-up is the
  provider; the consumer is the same node for all three, in this process, on SQLite, so that only the
  provider changes.

Correctness, checked after every run: every use answered ``permit`` and the agreement's count equal to the uses
requested (and at the end its whole usage log verified: hash chain, counts, every signed head, one entry per
use); every negotiation FINALIZED on the consumer, and every negotiation the provider holds FINALIZED, as many
as were made. At the end, no node process answered any request with a server error (5xx); the errors they
logged are printed.

The PostgreSQL set-ups' tables are analysed (``ANALYZE``) after the warm-up, as a running server's autovacuum
does soon after a table grows: on a server with autovacuum off the plans made for empty tables stay, and one of
them reads a whole usage chain for every commit group. The round trip of a statement to the server is printed
too: each statement of a write transaction waits for one, with the cross-process lock held.

Baseline, measured first in the same run on the same server: ``pgbench -N -c 8`` (the simple-update script, 8
clients) in a scratch database created for it: the server's rate of small durable write transactions, one
commit each. A use through the API is at most one such durable write (uses share commits). Goals: uses per
second on PostgreSQL with one process at least 0.3x pgbench's transactions per second; and, informational,
three processes at least 0.9x one process for uses and for negotiations: the write transactions of every
process take one lock, and the three share 2 cores with their clients and PostgreSQL, so they add capacity for
the work outside that lock (and survive one another), not speed; the goal is that they cost little.

Printed beside the rates, for each set-up: the CPU each part used while it was measured, in cores (the node's
processes, the PostgreSQL backends serving them, the proxies, the clients, this process, which hosts the
consumer), how busy the machine was, and the node's durable commits (``tds_store_commit_seconds`` from each
process's ``/metrics``: commits per second, the mean time from BEGIN to COMMIT, the cross-process lock's wait
included, and what each commit carried).

Every process, folder, schema (``scale_out_<pid>_<set-up>``) and database it makes is removed at the end, also
when it fails or is stopped (SIGTERM, as benchmarks/report.py stops a benchmark at the end of its budget).
Needs the PostgreSQL server (``$TDS_STORE``, else ``postgresql://postgres@127.0.0.1:5432/test``), a role there
that may create a database, and ``pgbench`` on the PATH.

    python benchmarks/scale_out.py
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import psycopg  # noqa: E402

# The helpers of benchmarks/negotiation.py and benchmarks/usage.py, so that the figures are measured alike.
from negotiation import CONCURRENT, in_flight, negotiator, publish_open_offer, unthrottled, wait_http  # noqa: E402
from usage import HTTP_CLIENTS  # noqa: E402

from connector.bootstrap import ADMIN_TOKEN_FILE, DB_FILE, STORE_ENV, init_from_config, init_node  # noqa: E402
from connector.client import ManagementClient  # noqa: E402
from connector.config import Config, NodeSection, ParticipantSection, render_config  # noqa: E402
from connector.logging import configure  # noqa: E402
from connector.node import Node  # noqa: E402
from connector.protocol.agreement_lifecycle import AgreementState  # noqa: E402
from connector.protocol.negotiation import Role  # noqa: E402
from connector.services.usage import check_log  # noqa: E402
from connector.store import pg  # noqa: E402
from connector.store.db import Store  # noqa: E402
from connector.store.records import AgreementRecord, to_row  # noqa: E402
from connector.testing import free_port  # noqa: E402
from usage_policies import templates  # noqa: E402

#: The PostgreSQL server: ``$TDS_STORE`` (as ``make test-postgres`` sets it), else the local test server.
POSTGRES = os.environ.get(STORE_ENV) or "postgresql://postgres@127.0.0.1:5432/test"
PGBENCH_DB = "tds_pgbench"
PGBENCH_SECONDS = 10
PROCESSES = 3
ROUNDS = 3
#: Each run's target length; its size is set from the set-up's warm-up rate, within these bounds.
RUN_SECONDS = 2.5
USES_BOUNDS = (256, 6000)
NEGOTIATION_BOUNDS = (64, 512)
#: No further round starts that would end later than this after the start, as long as the last round took
#: (benchmarks/report.py stops a benchmark at 120 s; the checks and the clean-up follow the rounds).
DEADLINE_S = 100.0
AGREEMENT = "urn:uuid:bench-scale-out"
#: The set-ups' folders (their participants' names too; on PostgreSQL, the ends of their schemas' names).
LITE, SOLO, TRIO = "lite", "solo", "trio"
USES_GOAL = 0.3
SCALE_GOAL = 0.9

#: A round-robin proxy in a process of its own (a load balancer in front of the node's processes): listens on
#: argv[1], forwards to the URLs after it, stops on SIGTERM.
PROXY = """
import asyncio, signal, sys
from connector.testing import RoundRobinProxy
async def main():
    proxy = RoundRobinProxy(sys.argv[2:])
    await proxy.start(port=int(sys.argv[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await proxy.close()
asyncio.run(main())
"""

_TICK = os.sysconf("SC_CLK_TCK")
_COMMITS = re.compile(r'^tds_store_commit_seconds_(sum|count)\{durable="true"\} (\S+)$', re.M)
_SERVER_ERROR = re.compile(r'"status": 5\d\d\b')
PARTS = ("nodes", "postgres", "proxies", "clients", "this process")


@dataclass
class Setup:
    """One set-up of the node: its folder, its processes, how clients and peers reach it, what it measured."""

    label: str
    name: str
    data_dir: Path
    config: Config
    did: str
    token: str
    admin_token: str
    public_url: str  # what peers call: the node's own port, or the proxy
    management_url: str  # what applications call: the node's own port, or the proxy
    ports: list[tuple[int, int]]  # each process's (public, management) port
    schema: str | None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    proxies: list[subprocess.Popen[bytes]] = field(default_factory=list)
    negotiate: Callable[[], Awaitable[float]] | None = None
    #: Errors the node's processes logged: how many of each (event; exception).
    logged: Counter[str] = field(default_factory=Counter)
    uses_per_run: int = 0
    negotiations_per_run: int = 0
    uses_requested: int = 0
    negotiated: int = 0
    #: Per kind ("uses", "negotiations"), one sample per run: the rate, CPU cores by part, machine busy, commits.
    samples: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"uses": [], "negotiations": []})

    @property
    def dsp(self) -> str:
        return f"{self.public_url}/participants/{self.name}/api/dsp/2025-1"

    def log(self, index: int) -> Path:
        """Where process *index* writes its output: the node's log, one JSON line per request and event."""
        return self.data_dir.parent / f"{self.name}-{index}.log"

    @property
    def location(self) -> Path | pg.PgLocation:
        """Where the node keeps its data (as ``tds serve`` finds it, but regardless of ``$TDS_STORE``)."""
        return pg.PgLocation.parse(self.config.store) if self.config.store else self.data_dir / DB_FILE

    def proxy_log(self, url: str) -> Path:
        return self.data_dir.parent / f"{self.name}-proxy-{urlsplit(url).port}.log"

    def rates(self, kind: str) -> list[float]:
        return [s["rate"] for s in self.samples[kind]]


# -- what the parts use: CPU from /proc, commits from /metrics ----------------------------------------------


def cpu_of(pid: int) -> float | None:
    """CPU seconds (user + system) process *pid* has used; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def backends_of(pids: list[int], dsn: str) -> list[int]:
    """The PostgreSQL server's own processes (WAL writer, checkpointer, …) and the backends that serve
    connections of processes *pids*, matched by the client's TCP port: not those of anything else on the
    machine that uses the same server."""
    server_port = urlsplit(dsn).port or 5432
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[9] in inodes and int(cols[2].rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT pid, client_port, backend_type FROM pg_stat_activity").fetchall()
    return [pid for pid, port, kind in rows if port in ports or kind not in ("client backend", "autovacuum worker")]


class Sampler:
    """CPU used by each part between :meth:`start` and :meth:`stop`, in cores; and the machine's busy share."""

    def __init__(self, setup: Setup, dsn: str) -> None:
        self.setup, self.dsn = setup, dsn

    def _pids(self) -> dict[str, list[int]]:
        nodes = [p.pid for p in self.setup.procs]
        return {"nodes": nodes, "postgres": backends_of(nodes, self.dsn),
                "proxies": [p.pid for p in self.setup.proxies]}

    @staticmethod
    def _own() -> dict[str, float]:
        children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        # The one child reaped while a run is measured is the clients' process (the node processes live on).
        return {"clients": children.ru_utime + children.ru_stime, "this process": own.ru_utime + own.ru_stime}

    def start(self) -> None:
        self.pids = self._pids()
        self.before = {pid: cpu_of(pid) for pids in self.pids.values() for pid in pids}
        self.own, self.jiffies, self.t = self._own(), machine_jiffies(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t
        jiffies, own = machine_jiffies(), self._own()
        out = {k: (own[k] - self.own[k]) / wall for k in own}
        for part, pids in self.pids.items():
            used = [(cpu_of(pid), self.before[pid]) for pid in pids]
            out[part] = sum(a - b for a, b in used if a is not None and b is not None) / wall
            if part == "nodes":
                for i, (a, b) in enumerate(used):
                    out[f"node {i + 1}"] = (a - b) / wall if a is not None and b is not None else 0.0
        out["machine busy"] = (jiffies[0] - self.jiffies[0]) / max(jiffies[1] - self.jiffies[1], 1)
        return out


async def commit_totals(setup: Setup) -> tuple[float, float]:
    """(durable commits, seconds they took) summed over the node's processes, from each one's ``/metrics``."""
    commits = seconds = 0.0
    for _, port in setup.ports:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics", headers={
                "Authorization": f"Bearer {setup.admin_token}"}) as resp:
            text = await resp.text()
        for kind, value in _COMMITS.findall(text):
            if kind == "count":
                commits += float(value)
            else:
                seconds += float(value)
    return commits, seconds


async def measured(setup: Setup, kind: str, run: Callable[[], Awaitable[float]], dsn: str) -> None:
    """Run *run* (it returns its rate) and keep the rate with the CPU and the commits it took."""
    commits_before = await commit_totals(setup)
    sampler = Sampler(setup, dsn)
    sampler.start()
    rate = await run()
    sample = sampler.stop()
    wall = time.perf_counter() - sampler.t
    commits, seconds = (a - b for a, b in zip(await commit_totals(setup), commits_before, strict=True))
    sample.update({"rate": rate, "commits/s": commits / wall, "commit ms": 1000 * seconds / max(commits, 1),
                   "per commit": rate * wall / max(commits, 1)})
    setup.samples[kind].append(sample)


# -- the set-ups ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_here() -> Iterator[None]:
    """The consumer and the SQLite node keep their stores in their folders whatever ``$TDS_STORE`` says."""
    with mock.patch.dict(os.environ):
        os.environ.pop(STORE_ENV, None)
        yield


def schema_of(name: str) -> str:
    """The PostgreSQL schema of set-up *name* in this run."""
    return f"scale_out_{os.getpid()}_{name}"


def create_node(root: Path, name: str, label: str, *, postgres: bool, processes: int = 1) -> Setup:
    """A node's data folder, its config with the request budgets lifted (one busy peer, one busy application;
    a data space's operators size these budgets) and, on PostgreSQL, its store in a schema named for this run
    (a name of its own: a test run on the same server drops the ``tds_…`` schemas of ``$TDS_STORE`` it made)."""
    data_dir = root / name
    ports = [(free_port(), free_port()) for _ in range(processes)]
    public_url, management_url = f"http://127.0.0.1:{ports[0][0]}", f"http://127.0.0.1:{ports[0][1]}"
    if processes > 1:  # the proxies' addresses: the node's public_url is the public one
        public_url, management_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    schema = schema_of(name) if postgres else None
    store = f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}schema={schema}" if postgres else ""
    config = Config(node=NodeSection(public_url=public_url, port=ports[0][0], management_port=ports[0][1],
                                     dev_mode=True, management_rate_per_s=1e6, management_burst=10**6),
                    participant=ParticipantSection(name=name, legal_name=name), store=store)
    result = init_from_config(data_dir, render_config(config))
    config = unthrottled(data_dir, result)
    return Setup(label=label, name=name, data_dir=data_dir, config=config, did=result.did, token=result.token,
                 admin_token=(data_dir / ADMIN_TOKEN_FILE).read_text().strip(), public_url=public_url,
                 management_url=management_url, ports=ports, schema=schema)


async def add_agreement(setup: Setup, agreement_id: str = AGREEMENT) -> None:
    """An agreement the node's participant holds as consumer, as benchmarks/usage.py makes it (purpose R&D,
    10^9 uses, each use logged), written before the node starts."""
    policy = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 10**9),
                               templates.log_each_use("qi"))
    agreement = {**policy, "@id": agreement_id, "@type": "Agreement", "assigner": "did:web:p", "assignee": setup.did,
                 "timestamp": "2026-01-01T00:00:00Z"}
    record = AgreementRecord(id=agreement_id, negotiation_id=f"n-{agreement_id}", role=Role.CONSUMER,
                             provider_did="did:web:p", consumer_did=setup.did, asset_id="qi", agreement=agreement,
                             state=AgreementState.FINALIZED)
    row = to_row(record, participant_id=setup.name)
    store = Store(setup.location)
    await store.open()
    try:
        await store.write(lambda db: db.execute(
            f"INSERT INTO agreements ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values())))
    finally:
        await store.close()


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python ARGS`` in a process of its own, its output to *log* (read when it does not come up)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """benchmarks/negotiation.py's wait, naming the process's last words if it exits."""
    try:
        wait_http(url, proc)
    except RuntimeError as exc:
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        said = [line for line in lines if line.startswith("error:") or '"level": "error"' in line] or lines[-1:]
        raise RuntimeError(f"{exc}: {said[0][:1000] if said else 'no output'}") from None


def start_process(setup: Setup, index: int) -> None:
    """Process *index* of the node: the first on its configured ports, each other on ports of its own."""
    args = ["-m", "connector", "serve", "--dir", str(setup.data_dir)]
    if index:
        args += ["--port", str(setup.ports[index][0]), "--management-port", str(setup.ports[index][1])]
    with sqlite_here() if setup.schema is None else contextlib.nullcontext():
        setup.procs.append(spawn(args, setup.log(index)))


def start_proxies(setup: Setup) -> None:
    """The proxies in front of the node's processes, for the public address and for the management API."""
    for url, upstreams in ((setup.public_url, [f"http://127.0.0.1:{p}" for p, _ in setup.ports]),
                           (setup.management_url, [f"http://127.0.0.1:{m}" for _, m in setup.ports])):
        setup.proxies.append(spawn(["-c", PROXY, str(urlsplit(url).port), *upstreams], setup.proxy_log(url)))


def wait_all(setup: Setup) -> None:
    """Until every process of the node answers on its own port, and the proxies through theirs."""
    for index in range(len(setup.procs)):
        wait_up(f"http://127.0.0.1:{setup.ports[index][0]}/healthz", setup.procs[index], setup.log(index))
    for url, proxy in zip((setup.public_url, setup.management_url), setup.proxies, strict=False):
        wait_up(f"{url}/healthz", proxy, setup.proxy_log(url))


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def prepare_negotiation(setup: Setup, consumer: Node) -> None:
    """The provider's asset and open offer, the consumer's handshake with it, and one negotiation of the offer
    (benchmarks/negotiation.py's)."""
    async with ManagementClient(f"http://127.0.0.1:{setup.ports[0][1]}", setup.token) as admin:
        await publish_open_offer(admin)
    once = await negotiator(consumer, setup.dsp)

    async def negotiate() -> float:
        start = time.perf_counter()
        final = await once()
        setup.negotiated += 1
        if final is None or final.state != "FINALIZED":
            raise RuntimeError(f"{setup.label}: a negotiation ended {final and final.state}, not FINALIZED")
        return time.perf_counter() - start

    setup.negotiate = negotiate


# -- the runs and their checks ----------------------------------------------------------------------------------


async def use_run(setup: Setup, prefix: str, uses: int) -> float:
    """benchmarks/usage.py's 64 clients in a process of their own: one use each to warm, then *uses* uses."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HTTP_CLIENTS, f"{setup.management_url}/api/management/v1/usage", setup.token,
        AGREEMENT, prefix, str(uses), str(CONCURRENT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    setup.uses_requested += uses + CONCURRENT
    if proc.returncode != 0:
        last = (err.decode(errors="replace").strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{setup.label}: the usage clients failed (a use not permitted, or an error): {last}")
    return float(out.decode().strip())


async def negotiation_run(setup: Setup, negotiations: int) -> float:
    assert setup.negotiate is not None
    return await in_flight(setup.negotiate, negotiations)


async def check_uses(setup: Setup, *, whole_log: bool = False) -> None:
    """The agreement's count is the uses requested; with *whole_log*, its usage log verifies too: the hash
    chain, the counts in it, every signed head, one entry per use id, every one a permit."""
    async with ManagementClient(setup.management_url, setup.token) as client:
        summary = await client.usage(AGREEMENT)
        if summary["uses"] != setup.uses_requested:
            raise RuntimeError(f"{setup.label}: {summary['uses']} uses counted, {setup.uses_requested} requested")
        if not whole_log:
            return
        log = await client.usage_log(AGREEMENT)
    entries = log["entries"]
    problem = check_log(entries, log["heads"], log["didDocument"])
    if problem is not None:
        raise RuntimeError(f"{setup.label}: the usage log does not verify: {problem}")
    permits = sum(1 for e in entries if e.get("kind") == "use" and e.get("decision") == "permit")
    if not permits == len({e.get("use_id") for e in entries}) == len(entries) == setup.uses_requested:
        raise RuntimeError(f"{setup.label}: {permits} permitted uses logged in {len(entries)} entries, "
                           f"{setup.uses_requested} requested")


def check_logs(setup: Setup) -> None:
    """No process of the node answered a request with a server error (5xx); the errors they logged are kept in
    :attr:`Setup.logged` (by event and exception), to be printed."""
    for index in range(len(setup.procs)):
        for line in setup.log(index).read_text(errors="replace").splitlines():
            if _SERVER_ERROR.search(line):
                raise RuntimeError(f"{setup.label}, process {index + 1} answered a server error: {line[:300]}")
            if '"level": "error"' in line:
                try:
                    record = json.loads(line)
                    exception = str(record.get("exception", "")).strip().splitlines()
                    what = "; ".join([record.get("event", ""), *exception[-1:]])
                except ValueError:
                    what = line[:300]
                setup.logged[what] += 1


def provider_states(setup: Setup) -> dict[str, int]:
    """How many negotiations the provider holds in each state, read from its store."""
    location = setup.location
    query = "SELECT state, count(*) FROM negotiations WHERE role = 'provider' GROUP BY state"
    if isinstance(location, pg.PgLocation):
        with psycopg.connect(location.dsn) as conn:
            conn.execute(f'SET search_path TO "{location.schema}"')
            rows = conn.execute(query).fetchall()
    else:
        import sqlite3

        with contextlib.closing(sqlite3.connect(f"file:{location}?mode=ro", uri=True)) as db:
            rows = db.execute(query).fetchall()
    return {str(state): int(n) for state, n in rows}


def check_negotiations(setup: Setup) -> None:
    states = provider_states(setup)
    if states != {"FINALIZED": setup.negotiated}:
        raise RuntimeError(f"{setup.label}: the provider holds {states}; {setup.negotiated} negotiations were made")


def sized(rate: float, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], int(rate * RUN_SECONDS)))


# -- the baseline -----------------------------------------------------------------------------------------------


def pgbench(dsn: str) -> tuple[float, float]:
    """``pgbench -N -c 8 -T PGBENCH_SECONDS`` in a scratch database, dropped after: (transactions per second,
    mean latency in ms)."""
    parts = urlsplit(dsn)
    env = {**os.environ, "PGHOST": parts.hostname or "127.0.0.1", "PGPORT": str(parts.port or 5432),
           "PGUSER": parts.username or "postgres", **({"PGPASSWORD": parts.password} if parts.password else {})}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PGBENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PGBENCH_DB}")
    try:
        subprocess.run(["pgbench", "-i", "-q", PGBENCH_DB], env=env, check=True, capture_output=True, timeout=60)
        out = subprocess.run(["pgbench", "-N", "-c", "8", "-T", str(PGBENCH_SECONDS), PGBENCH_DB], env=env,
                             check=True, capture_output=True, text=True, timeout=PGBENCH_SECONDS + 30).stdout
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PGBENCH_DB} WITH (FORCE)")
    tps = re.search(r"^tps = ([\d.]+)", out, re.M)
    latency = re.search(r"^latency average = ([\d.]+) ms", out, re.M)
    if tps is None or latency is None:
        raise RuntimeError(f"pgbench printed no tps: {out}")
    return float(tps.group(1)), float(latency.group(1))


def round_trip_ms(dsn: str, n: int = 300) -> float:
    """The median time of ``SELECT 1`` from here: what each statement of a store's transaction waits at least."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def analyse(dsn: str, schemas: list[str]) -> bool:
    """Give the planner statistics of the set-ups' tables, which the warm-up filled; whether autovacuum is on.

    A running server's autovacuum analyses a table soon after it grows (by default within a minute, after 10%
    more rows); a server with autovacuum off, as test servers often run, never does, and a plan made for empty
    tables reads a whole usage chain for each commit group. The rounds measure the running server."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute("SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables "
                              "WHERE schemaname = ANY(%s)", [schemas]).fetchall()
        conn.execute(f"ANALYZE {', '.join(t for (t,) in tables)}")  # these alone: not the database's other schemas
        return str(conn.execute("SHOW autovacuum").fetchone()[0]) == "on"  # type: ignore[index]


def drop_everything(dsn: str, schemas: list[str]) -> None:
    """Remove the set-ups' schemas and the scratch database (their processes are gone by now)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f"DROP DATABASE IF EXISTS {PGBENCH_DB} WITH (FORCE)")


# -- the whole run ----------------------------------------------------------------------------------------------


async def run(root: Path, setups: list[Setup], started: float) -> tuple[float, float, int]:
    """Baseline, set-ups, warm-up, rounds; returns pgbench's (tps, latency) and the rounds run."""
    dsn = pg.PgLocation.parse(POSTGRES).dsn
    tps, latency = pgbench(dsn)
    with sqlite_here():  # side by side: most of it is the DDL of the PostgreSQL schemas
        setups += await asyncio.gather(
            asyncio.to_thread(create_node, root, LITE, "sqlite x1", postgres=False),
            asyncio.to_thread(create_node, root, SOLO, "pg x1", postgres=True),
            asyncio.to_thread(create_node, root, TRIO, f"pg x{PROCESSES}", postgres=True, processes=PROCESSES))
        consumer_config = unthrottled(root / "consumer", init_node(
            root / "consumer", name="consumer", port=free_port(), management_port=free_port(), dev_mode=True))
        consumer = Node(root / "consumer", consumer_config)  # first: its ports are taken before the node
        await consumer.start()  # processes open connections (from ports that free_port() may also pick)
    try:
        for setup in setups:  # every process at once (the schemas are there: tds init made them)
            await add_agreement(setup)
            for index in range(len(setup.ports)):
                start_process(setup, index)
            if len(setup.ports) > 1:
                start_proxies(setup)
        for setup in setups:
            wait_all(setup)
        for setup in setups:
            await prepare_negotiation(setup, consumer)
        for setup in setups:  # warm (the chain loaded, the policy compiled, the peer known), and size the runs
            setup.uses_per_run = sized(await use_run(setup, "warm", USES_BOUNDS[0]), USES_BOUNDS)
            setup.negotiations_per_run = sized(await negotiation_run(setup, NEGOTIATION_BOUNDS[0]),
                                               NEGOTIATION_BOUNDS)
            await check_uses(setup)
            check_negotiations(setup)
        autovacuum = analyse(dsn, [s.schema for s in setups if s.schema])
        print(f"set-up and warm-up done at {time.perf_counter() - started:.0f} s; PostgreSQL's statistics taken "
              f"(ANALYZE; autovacuum is {'on' if autovacuum else 'off'} on this server); a statement's round trip "
              f"to it from here (SELECT 1, median): {round_trip_ms(dsn):.3f} ms", flush=True)
        rounds, took = 0, 0.0
        while rounds < ROUNDS and (rounds == 0 or time.perf_counter() - started + took < DEADLINE_S):
            round_started = time.perf_counter()
            for setup in setups:
                await measured(setup, "uses", functools.partial(use_run, setup, f"r{rounds}", setup.uses_per_run), dsn)
                await check_uses(setup)
            for setup in setups:
                await measured(setup, "negotiations",
                               functools.partial(negotiation_run, setup, setup.negotiations_per_run), dsn)
                check_negotiations(setup)
            rounds, took = rounds + 1, time.perf_counter() - round_started
        for setup in setups:
            await check_uses(setup, whole_log=True)
            check_logs(setup)
    finally:
        await consumer.stop()
    return tps, latency, rounds


def report(setups: list[Setup], tps: float, pgbench_latency: float, rounds: int, seconds: float) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    lite, solo, trio = setups
    print(f"{rounds} rounds of about {RUN_SECONDS:g} s per run, {seconds:.0f} s in all; medians, each round's "
          "figure in brackets")
    print(f"pgbench -N -c 8 -T {PGBENCH_SECONDS}: {tps:.0f} tps, mean latency {pgbench_latency:.2f} ms")
    print(f"{'set-up':<10} {'uses/s':>7} {'vs sqlite':>9} {'vs pg x1':>8}   {'negotiations/s':>14} {'vs sqlite':>9} "
          f"{'vs pg x1':>8}")
    for s in setups:
        line = f"{s.label:<10}"
        for kind, width in (("uses", 7), ("negotiations", 14)):
            rate = med(s.rates(kind))
            line += (f" {rate:>{width}.0f} {rate / med(lite.rates(kind)):>9.2f} "
                     f"{rate / med(solo.rates(kind)):>8.2f}  ")
        print(f"{line} [{', '.join(f'{r:.0f}' for r in s.rates('uses'))}] "
              f"[{', '.join(f'{r:.0f}' for r in s.rates('negotiations'))}]")
    for kind in ("uses", "negotiations"):
        print(f"while measuring {kind}: CPU in cores of {os.cpu_count()} (medians); the node's durable commits")
        for s in setups:
            samples = s.samples[kind]

            def part(name: str, samples: list[dict[str, float]] = samples) -> float:
                return med([x.get(name, 0.0) for x in samples])

            nodes = f"nodes {part('nodes'):.2f}"
            if len(s.procs) > 1:
                each = [f"{part(f'node {i + 1}'):.2f}" for i in range(len(s.procs))]
                nodes += f" ({' + '.join(each)})"
            shares = ", ".join([nodes] + [f"{p} {part(p):.2f}" for p in PARTS[1:] if part(p) >= 0.005])
            print(f"  {s.label:<10} {shares}; machine {100 * part('machine busy'):.0f}% busy; "
                  f"{part('commits/s'):.0f} commits/s, {part('commit ms'):.1f} ms each, "
                  f"{part('per commit'):.1f} {kind} per commit")
    print(f"correct: every use permitted and counted, every usage log verified "
          f"({', '.join(f'{s.label} {s.uses_requested}' for s in setups)} uses); every negotiation FINALIZED on "
          f"both sides ({', '.join(f'{s.label} {s.negotiated}' for s in setups)}); no request answered 5xx")
    for s in setups:
        for what, n in s.logged.most_common():
            print(f"  {s.label} logged {n} error(s): {what}")
    uses = med(solo.rates("uses"))
    ratio = uses / tps
    print(f"TARGET scale_out_uses_pg_vs_pgbench: {uses:.0f} uses/s (pg x1); baseline {tps:.0f} tps "
          f"(pgbench -N -c 8); ratio {ratio:.2f}; goal >= {USES_GOAL:g}: {'met' if ratio >= USES_GOAL else 'missed'}")
    for kind, unit in (("uses", "uses/s"), ("negotiations", "negotiations/s")):
        ratio = med([t / s for t, s in zip(trio.rates(kind), solo.rates(kind), strict=True)])
        print(f"TARGET scale_out_{kind}_{PROCESSES}proc_vs_1: {med(trio.rates(kind)):.0f} {unit} "
              f"({PROCESSES} processes); baseline {med(solo.rates(kind)):.0f} {unit} (1 process); ratio {ratio:.2f}; "
              f"goal >= {SCALE_GOAL:g}: {'met' if ratio >= SCALE_GOAL else 'missed'} (informational; "
              f"{os.cpu_count()} cores, writes serialised)")


def reachable(dsn: str) -> str | None:
    """Why this benchmark cannot run here, or None."""
    if shutil.which("pgbench") is None:
        return "pgbench is not on the PATH (Debian: apt-get install postgresql-client)"
    try:
        with psycopg.connect(dsn, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        where = urlsplit(dsn)
        return (f"PostgreSQL at {where.hostname}:{where.port or 5432} is not reachable: "
                f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}")


async def main() -> None:
    configure("warning")
    problem = reachable(pg.PgLocation.parse(POSTGRES).dsn)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    task = asyncio.current_task()
    assert task is not None
    # Stopped (benchmarks/report.py at the end of its budget): everything is cleaned up as on a failure.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.perf_counter()
    setups: list[Setup] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                tps, latency, rounds = await run(Path(tmp), setups, started)
            finally:
                for setup in setups:
                    stop_processes(setup.proxies + setup.procs)
    finally:
        drop_everything(pg.PgLocation.parse(POSTGRES).dsn, [schema_of(SOLO), schema_of(TRIO)])
    report(setups, tps, latency, rounds, time.perf_counter() - started)


if __name__ == "__main__":
    asyncio.run(main())
