"""One node served by three ``tds serve`` processes that share its data folder and a PostgreSQL schema, behind a
round-robin proxy for its public port and one for its management port (as behind a load balancer): usage counted
exactly when every process decides uses at once, and a negotiation or a transfer finished by the others when the
process doing it is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
from test_transfer import OPEN, write_random

from connector.bootstrap import init_from_config
from connector.client import ClientError, ManagementClient
from connector.config import Config, NodeSection, ParticipantSection, render_config
from connector.services.usage import check_log
from connector.testing import (
    RoundRobinProxy,
    eventually,
    free_port,
    postgres_test_dsn,
    postgres_unreachable,
    vault_sha256,
)
from usage_policies import templates

#: The PostgreSQL database the nodes' schemas are made in (trust authentication on 127.0.0.1).
POSTGRES = postgres_test_dsn()
MIB = 1024 * 1024
#: Each test starts three node processes, and those killed are taken over once their lease runs out.
pytestmark = pytest.mark.slow


def postgres_or_skip() -> None:
    why = postgres_unreachable(POSTGRES)
    if why is not None:
        pytest.skip(why)


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class ScaledNode:
    """A node run as several ``tds serve --dir D --port P --management-port M`` processes on one PostgreSQL
    schema, its ``public_url`` the address of :attr:`public` (a :class:`RoundRobinProxy`); :attr:`client` talks
    to its management API through :attr:`management`, another one. The processes' output goes to
    ``process-N.log`` beside the data folder."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.data_dir = root / name
        self.schema = f"scale_{uuid.uuid4().hex[:16]}"
        self.public, self.management = RoundRobinProxy(), RoundRobinProxy()
        self.ports: list[tuple[int, int]] = []
        self.processes: list[asyncio.subprocess.Process] = []
        self._logs: list[BinaryIO] = []
        self.client: ManagementClient | None = None

    @property
    def public_url(self) -> str:
        return self.public.url

    def upstream(self, index: int) -> str:
        """The public address of process *index* itself."""
        return f"http://127.0.0.1:{self.ports[index][0]}"

    def management_upstream(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index][1]}"

    async def start(self, count: int = 3, env_of: Mapping[int, Mapping[str, str]] | None = None) -> None:
        """Initialise the node in its schema and start *count* processes; *env_of* adds environment variables to
        the process of that index (a crash point, for one)."""
        public_url = await self.public.start(port=0)
        management_url = await self.management.start(port=0)
        self.ports = [(free_port(), free_port()) for _ in range(count)]
        config = Config(
            store=f"{POSTGRES}?schema={self.schema}",
            # A dead process's work is taken over within about 2 s here (10 s by default).
            node=NodeSection(public_url=public_url, port=self.ports[0][0], management_port=self.ports[0][1],
                             dev_mode=True, process_alive_s=2.0),
            participant=ParticipantSection(name=self.name, legal_name=f"{self.name.title()} Co.", region="CN-GD"),
        )
        result = await asyncio.to_thread(init_from_config, self.data_dir, render_config(config))
        self.client = ManagementClient(management_url, result.token)
        for index, (port, management_port) in enumerate(self.ports):
            log = open(self.root / f"{self.name}-process-{index}.log", "ab")  # noqa: ASYNC230, SIM115 - kept open
            self._logs.append(log)
            self.processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "connector", "serve", "--dir", str(self.data_dir), "--port", str(port),
                "--management-port", str(management_port), env={**os.environ, **(env_of or {}).get(index, {})},
                stdout=log, stderr=log))
        async with aiohttp.ClientSession() as session:
            for index in range(count):
                await eventually(lambda i=index: self._healthy(session, i), 30,
                                 what=f"process {index} of {self.name} answering /healthz")
        self.public.upstreams = [self.upstream(i) for i in range(count)]
        self.management.upstreams = [self.management_upstream(i) for i in range(count)]

    async def _healthy(self, session: aiohttp.ClientSession, index: int) -> bool:
        if self.processes[index].returncode is not None:
            raise AssertionError(f"process {index} of {self.name} exited with {self.processes[index].returncode}: "
                                 f"{self.log_tail(index)}")
        try:
            async with session.get(f"{self.upstream(index)}/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def exited(self, index: int, timeout_s: float = 60) -> int:
        return await asyncio.wait_for(self.processes[index].wait(), timeout_s)

    def log_tail(self, index: int, lines: int = 15) -> str:
        path = self.root / f"{self.name}-process-{index}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    async def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), the proxies and the client; drop the schema."""
        try:
            if self.client is not None:
                await self.client.close()
            for process in self.processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in self.processes:
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            await self.public.close()
            await self.management.close()
        finally:
            for log in self._logs:
                log.close()
            await asyncio.to_thread(drop_schema, self.schema)


@pytest.fixture
async def scaled(tmp_path) -> AsyncIterator[Callable[..., Awaitable[ScaledNode]]]:
    """Start a node of three processes (``await scaled(name, env_of={index: env})``); all stopped at the end and
    their schemas dropped."""
    postgres_or_skip()
    started: list[ScaledNode] = []

    async def start(name: str, *, env_of: Mapping[int, Mapping[str, str]] | None = None) -> ScaledNode:
        node = ScaledNode(tmp_path / "scaled", name)
        started.append(node)
        node.root.mkdir(exist_ok=True)
        await node.start(env_of=env_of)
        return node

    yield start
    for node in reversed(started):
        await node.stop()


def client_of(node: Any) -> ManagementClient:
    client: ManagementClient | None = node.client
    assert client is not None
    return client


async def finalized(consumer: ManagementClient, negotiation_id: str, deadline_s: float = 30) -> dict[str, Any]:
    """The consumer's negotiation once FINALIZED (polled: a long poll waits on one process only)."""

    async def done() -> dict[str, Any] | None:
        negotiation = await consumer.negotiation(negotiation_id)
        if negotiation["state"] == "TERMINATED":
            raise AssertionError(f"the negotiation was terminated: {negotiation}")
        return negotiation if negotiation["state"] == "FINALIZED" else None

    found: dict[str, Any] = await eventually(done, deadline_s, every_s=0.1, what="the negotiation FINALIZED")
    return found


async def negotiate(provider: Any, consumer: ManagementClient, offer_index: int = 0) -> dict[str, Any]:
    catalog = await consumer.catalog(provider.public_url)
    offer = catalog["dataset"][offer_index]["hasPolicy"][0]["@id"]
    started = await consumer.negotiate(provider.public_url, offer)
    return await finalized(consumer, started["id"])


# -- usage counted exactly with every process deciding uses --------------------------------------------------


async def test_usage_is_counted_exactly_when_three_processes_decide_uses_at_once(nodes, scaled):
    provider = await nodes.start("acme")
    consumer = await scaled("parts")
    client = client_of(consumer)
    await provider.client.add_asset({"id": "qi"})
    await provider.client.add_policy("open", OPEN)
    usage = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 50),
                              templates.for_duration("qi", "P30D"), templates.log_each_use("qi"))
    await provider.client.add_policy("rnd", usage)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="rnd",
                                                  assets=["qi"])
    agreement = (await negotiate(provider, client))["agreement"]["@id"]

    ids = [f"u{i}" for i in range(120)]
    before = dict(consumer.management.counts)
    results = await asyncio.gather(*(client.use(agreement, i, purpose="R&D") for i in ids))
    served = {u: consumer.management.counts[u] - before.get(u, 0) for u in consumer.management.upstreams}
    assert all(n > 0 for n in served.values()), served  # every process decided some of them
    decisions = [r["decision"] for r in results]
    assert decisions.count("permit") == 50, decisions
    assert all(any("count" in reason for reason in r["reasons"]) for r in results if r["decision"] == "deny")
    # One chain across the processes: every use has its own place in it.
    assert sorted(r["seq"] for r in results) == list(range(1, 121))

    retries = await asyncio.gather(*(client.use(agreement, i, purpose="R&D") for i in ids[::3]))
    by_id = dict(zip(ids, results, strict=True))
    assert all(r["repeated"] and r["decision"] == by_id[i]["decision"]
               for i, r in zip(ids[::3], retries, strict=True))

    summary = await client.usage(agreement)
    assert summary["uses"] == 50 and summary["allowance"]["usesLeft"] == 0
    log = await client.usage_log(agreement)
    redelivered = sum(by_id[i]["decision"] == "permit" for i in ids[::3])
    assert len(log["entries"]) == 120 + redelivered
    assert check_log(log["entries"], log["heads"], log["didDocument"]) is None


# -- a process killed while it does the work -----------------------------------------------------------------


async def described(node: ScaledNode, what: str, read: Callable[[], Awaitable[Any]]) -> str:
    """What the test saw of a process that stalled, for the failure message: the survivors' view and logs."""
    try:
        seen = await read()
    except (ClientError, aiohttp.ClientError) as exc:
        seen = f"(not readable: {exc})"
    tails = "\n".join(f"--- process {i} (exit {p.returncode}):\n{node.log_tail(i, 8)}"
                      for i, p in enumerate(node.processes))
    return f"{what}: {seen}\nproxy counts {dict(node.public.counts)}, skipped {dict(node.public.skipped)}\n{tails}"


@pytest.mark.parametrize(
    "crash_at",
    ["provider-after-storing-request", "after-delivering-agreement", "provider-after-receiving-verification"],
)
async def test_a_negotiation_is_finished_by_the_others_when_its_process_is_killed(nodes, scaled, crash_at):
    provider = await scaled("acme", env_of={0: {"TDS_CRASH_AT": crash_at}})
    admin = client_of(provider)
    await admin.add_asset({"id": "qi"})
    await admin.add_policy("open", OPEN)
    await admin.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open", assets=["qi"])
    consumer = await nodes.start("parts")
    catalog = await consumer.client.catalog(provider.public_url)
    offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]

    provider.public.upstreams = [provider.upstream(0)]  # the negotiation's messages go to process 0 ...
    started = await consumer.client.negotiate(provider.public_url, offer)
    assert await provider.exited(0) == -signal.SIGKILL  # ... which is killed at the crash point
    provider.public.upstreams = [provider.upstream(i) for i in range(3)]  # the dead one is skipped

    mine: dict[str, Any] = {}
    try:
        mine = await finalized(consumer.client, started["id"], deadline_s=90)

        async def theirs_final() -> dict[str, Any] | None:
            theirs = await admin.negotiation(mine["providerPid"])
            return theirs if theirs["state"] == "FINALIZED" else None

        theirs = await eventually(theirs_final, 30, what="the provider's negotiation FINALIZED")
    except AssertionError as exc:
        pid = mine.get("providerPid")
        raise AssertionError(await described(
            provider, f"{exc}\nconsumer {await consumer.client.negotiation(started['id'])}\nprovider",
            lambda: admin.negotiation(pid) if pid else admin.negotiations())) from None
    assert [a["id"] for a in await consumer.client.agreements()] == [mine["agreement"]["@id"]]
    assert [a["id"] for a in await admin.agreements()] == [mine["agreement"]["@id"]]
    assert theirs["agreement"]["@id"] == mine["agreement"]["@id"]


async def published_file(provider: Any, consumer: ManagementClient, size: int) -> tuple[str, str]:
    """A file of *size* random bytes offered by *provider* (participant ``acme``) and agreed by *consumer*:
    (agreement id, SHA-256)."""
    admin = client_of(provider)
    sha = await asyncio.to_thread(write_random, provider.data_dir / "files" / "acme" / "qi.bin", size)
    await admin.add_asset({"id": "qi-2026", "title": "QI", "contentType": "application/octet-stream",
                           "dataAddress": {"type": "File", "path": "qi.bin"}, "dataClass": "general"})
    await admin.add_policy("open", OPEN)
    await admin.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open", assets=["qi-2026"])
    final = await negotiate(provider, consumer)
    return final["agreement"]["@id"], sha


async def completed(client: ManagementClient, transfer_id: str, deadline_s: float, what: str) -> dict[str, Any]:
    """The transfer once COMPLETED (polled)."""

    async def done() -> dict[str, Any] | None:
        transfer = await client.transfer(transfer_id)
        if transfer["state"] == "TERMINATED":
            raise AssertionError(f"the transfer was terminated: {transfer}")
        return transfer if transfer["state"] == "COMPLETED" else None

    found: dict[str, Any] = await eventually(done, deadline_s, every_s=0.2, what=what)
    return found


@pytest.mark.parametrize(
    ("crash_at", "push", "size"),
    [("provider-mid-stream", False, 64 * MIB + 54321), ("provider-mid-push", True, 24 * MIB + 4321)],
    ids=["pull", "push"],
)
async def test_a_transfer_is_finished_by_the_others_when_its_process_is_killed(nodes, scaled, crash_at, push, size):
    provider = await scaled("acme", env_of={0: {"TDS_CRASH_AT": crash_at}})
    admin = client_of(provider)
    consumer = await nodes.start("parts")
    agreement_id, sha = await published_file(provider, consumer.client, size)

    provider.public.upstreams = [provider.upstream(0)]  # the transfer request and the data go through process 0
    with contextlib.suppress(ClientError):  # the provider may die before it answers; the consumer has the transfer
        await consumer.client.start_transfer(agreement_id, push=push)
    assert await provider.exited(0, 120) == -signal.SIGKILL
    provider.public.upstreams = [provider.upstream(i) for i in range(3)]
    [mine] = await consumer.client.transfers()
    try:
        final = await completed(consumer.client, mine["id"], 120, "the consumer's transfer COMPLETED")
        [theirs] = await admin.transfers()
        await completed(admin, theirs["id"], 30, "the provider's transfer COMPLETED")
    except AssertionError as exc:
        raise AssertionError(await described(
            provider, f"{exc}\nconsumer {await consumer.client.transfer(mine['id'])}\nprovider",
            admin.transfers)) from None
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha


async def test_a_pull_is_finished_by_the_others_when_the_consumer_process_receiving_it_is_killed(nodes, scaled):
    provider = await nodes.start("acme")
    consumer = await scaled("parts", env_of={0: {"TDS_CRASH_AT": "consumer-mid-receive"}})
    client = client_of(consumer)
    agreement_id, sha = await published_file(provider, client, 40 * MIB + 777)

    # The transfer is asked for, started and received by process 0 ...
    consumer.public.upstreams = [consumer.upstream(0)]
    consumer.management.upstreams = [consumer.management_upstream(0)]
    with contextlib.suppress(ClientError):
        await client.start_transfer(agreement_id)
    assert await consumer.exited(0, 120) == -signal.SIGKILL  # ... which is killed halfway through the payload
    consumer.public.upstreams = [consumer.upstream(i) for i in range(3)]
    consumer.management.upstreams = [consumer.management_upstream(i) for i in range(3)]
    [mine] = await client.transfers()
    try:
        final = await completed(client, mine["id"], 120, "the consumer's transfer COMPLETED")
    except AssertionError as exc:
        raise AssertionError(await described(consumer, str(exc), lambda: client.transfer(mine["id"]))) from None
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    [theirs] = await provider.client.transfers()
    await completed(provider.client, theirs["id"], 30, "the provider's transfer COMPLETED")
