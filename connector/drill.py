"""``tds drill``: the security drill an operator runs against their own node.

Theory of operation. The drill acts as the attackers the node must hold against: a hosted tenant, a
consumer's application, and strangers on the network. With the node's admin token it hosts two temporary
participants, ``drill-<hex>`` (the provider) and ``drill-<hex>-peer`` (a consumer that negotiates and pulls
the provider's data, so that there is received data to replay), and signs DSP requests as attacker peers:
fresh did:key identities made in this process, which reach the node from loopback like any peer. Then it
runs :data:`CATALOGUE`, one :class:`Attack` per control, in order. Each attack returns an
:class:`Outcome`:

- ``refused``: the control held;
- ``FAILED``: the bypass worked (the detail says how);
- ``error``: the attack could not be run (the detail says why) — not a pass;
- ``skipped``: left out on purpose (counter-reset without ``--allow-tamper``) — not a failure.

Everything the drill makes is on its own two participants (their catalog, negotiations, agreements, usage
log and files); the node's other participants are never touched. Teardown removes both participants
(``DELETE /participants/{id}``: their rows, tokens, keys, ``files/NAME/`` and vault) and anything else it
made, also after an error or Ctrl+C, and names whatever it could not remove.

The drill only attacks addresses that are loopback or inside the node's ``node.trusted_networks``: it
refuses to start when the public or the management URL resolves to anything else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from nacl.signing import SigningKey
from yarl import URL

from connector.client import ClientError, ManagementClient
from connector.config import Config, DspSection
from connector.errors import ConfigError
from connector.identity import did as dids
from connector.net import signing
from connector.protocol import contracts
from connector.protocol import messages as m

PREFIX = "/api/management/v1"
DSP_VERSION_PATH = "/api/dsp/2025-1"
RECEIPTS_TYPE = "https://w3id.org/tds/v1#UsageReceipts"
#: aiohttp's limit on one header line: a header longer than this is refused before any handler runs.
MAX_HEADER_LINE = 8190
#: How many repeats of a use id may re-deliver the data (the rest is 409).
REDELIVERIES = 3
#: Uses the drill's contract policy allows (count), and the only purpose it permits.
ALLOWED_USES = 2
PURPOSE = "R&D"
OUTCOMES = ("refused", "FAILED", "error", "skipped")
CATALOG_REQUEST = m.encode(m.CatalogRequestMessage())


class DrillRefused(Exception):
    """The drill will not run against this target (nothing was created)."""


@dataclass(frozen=True)
class Outcome:
    outcome: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.outcome in ("refused", "skipped")


def refused(detail: str) -> Outcome:
    return Outcome("refused", detail)


def failed(detail: str) -> Outcome:
    return Outcome("FAILED", detail)


def error(detail: str) -> Outcome:
    return Outcome("error", detail)


def skipped(detail: str) -> Outcome:
    return Outcome("skipped", detail)


@dataclass(frozen=True)
class Attack:
    """One attack of the catalogue: what it checks (one line, for the output and the README) and how."""

    name: str
    checks: str
    run: Callable[[DrillContext], Awaitable[Outcome]]
    #: Needs the node's data folder (``--dir``): files, keys or the database.
    needs_dir: str = ""


# -- the target ----------------------------------------------------------------------------------------


@dataclass
class Target:
    """The node under attack, as the drill learns it from ``--dir`` (or from ``--node`` and the admin API)."""

    management_url: str
    admin_token: str
    public_url: str = ""
    data_dir: Path | None = None
    config: Config | None = None
    #: PEM CAs that issued the management listener's certificate (``--ca``); without, the system store, or with
    #: the folder alone the certificate its config names.
    ca: str | None = None
    #: The management URL was given (``--node``), not read from the folder.
    explicit_url: bool = False

    @property
    def trusted_networks(self) -> list[str]:
        return list(self.config.node.trusted_networks) if self.config is not None else []

    @property
    def dsp(self) -> DspSection:
        return self.config.dsp if self.config is not None else DspSection()

    @classmethod
    def from_dir(cls, data_dir: Path, *, node_url: str | None = None, token: str | None = None,
                 ca: str | None = None) -> Target:
        from connector.bootstrap import read_token
        from connector.config import load_config, management_url_of

        data_dir = data_dir.resolve()  # the node resolves the paths the drill registers from its own folder
        config = load_config(data_dir)
        management = node_url or management_url_of(config, to_connect=True)
        return cls(management.rstrip("/"), token or read_token(data_dir, admin=True), config.public_url, data_dir,
                   config, ca=ca, explicit_url=node_url is not None)

    def admin_client(self) -> ManagementClient:
        """A client of the management listener with the admin token, its certificate checked as the CLI's are."""
        if self.data_dir is not None and not self.explicit_url:
            return ManagementClient.for_data_dir(self.data_dir, admin=True, ca=self.ca).with_token(
                self.admin_token, timeout_s=90)
        return ManagementClient(self.management_url, self.admin_token, timeout_s=90, ca=self.ca)


def check_target(url: str, trusted_networks: list[str]) -> None:
    """Raise :class:`DrillRefused` unless every address *url*'s host resolves to is loopback or inside one of
    *trusted_networks*: the drill attacks the operator's own node, never anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DrillRefused(f"{url!r} is not an http(s) URL")
    networks = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DrillRefused(f"{parts.hostname} does not resolve: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not (address.is_loopback or any(address in net for net in networks)):
            raise DrillRefused(f"{url} resolves to {address}, which is neither loopback nor in the node's "
                               "trusted_networks: the drill attacks only the node on this machine or its "
                               "trusted networks")


# -- the attackers' tools ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attacker:
    """A stranger: a fresh did:key identity that signs its DSP requests (RFC 9421) like any peer."""

    key: SigningKey
    did: str

    @classmethod
    def fresh(cls) -> Attacker:
        key = SigningKey.generate()
        return cls(key, dids.did_key_for(bytes(key.verify_key)))

    @property
    def key_id(self) -> str:
        return dids.signing_key_id(self.did)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def reason(self) -> str:
        data = self.json()
        if isinstance(data, dict):
            reason = data.get("message") or data.get("reason") or data.get("reasons")
            if isinstance(reason, list):
                reason = "; ".join(str(r) for r in reason)
            if reason:
                return str(reason)[:200]
        return self.body[:120].decode(errors="replace")


@dataclass
class Party:
    """One of the drill's own participants, with a client on its own token."""

    name: str
    token: str
    did: str
    dsp_base: str
    client: ManagementClient

    @property
    def base_url(self) -> str:
        return self.dsp_base.rsplit(DSP_VERSION_PATH, 1)[0]


@dataclass
class Cleanup:
    """What the drill made, undone last made first; what could not be undone is named."""

    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def add(self, what: str, undo: Callable[[], Awaitable[None]]) -> None:
        self.steps.append((what, undo))

    async def run(self) -> bool:
        """Undo every step; True if a cancellation (Ctrl+C) arrived meanwhile. A step is dropped from
        :attr:`steps` only once it is done or failed, so that what is still there after a hard interrupt is
        what was not removed."""
        interrupted = False
        while self.steps:
            what, undo = self.steps[-1]
            try:
                await undo()
                self.removed.append(what)
            except asyncio.CancelledError:
                # Stopping means tearing down: take the step again, once, and go on.
                task = asyncio.current_task()
                if interrupted or task is None:
                    raise
                task.uncancel()
                interrupted = True
                continue
            except Exception as exc:
                self.left.append(f"{what}: {describe(exc)}")
            self.steps.pop()
        return interrupted


def describe(exc: BaseException) -> str:
    return (getattr(exc, "message", None) or str(exc) or type(exc).__name__)[:300]


@dataclass
class DrillContext:
    """What the attacks share: the target, the drill's participants, a raw HTTP session, and cleanup."""

    target: Target
    admin: ManagementClient
    session: aiohttp.ClientSession
    cleanup: Cleanup
    allow_tamper: bool = False
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    provider: Party | None = None
    consumer: Party | None = None
    asset_id: str = "drill-data"
    data: bytes = b""
    offer: dict[str, Any] = field(default_factory=dict)
    agreement: str = ""
    vault_path: str = ""
    #: A port on loopback held bound but not listening: connections to it are refused.
    closed_port: int = 0
    tampered: list[str] = field(default_factory=list)
    clients: list[ManagementClient] = field(default_factory=list)

    @property
    def data_dir(self) -> Path | None:
        return self.target.data_dir

    @property
    def p(self) -> Party:
        assert self.provider is not None
        return self.provider

    @property
    def c(self) -> Party:
        assert self.consumer is not None
        return self.consumer

    async def request(self, method: str, url: str | URL, *, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Answer:
        target = url if isinstance(url, URL) else URL(url, encoded=True)
        # The management listener's certificate is checked as the admin client checks it.
        tls = self.admin.ssl if str(target).startswith(self.target.management_url) else None
        async with self.session.request(method, target, data=body, headers=headers or {}, allow_redirects=False,
                                        **({"ssl": tls} if tls is not None else {})) as resp:
            return Answer(resp.status, dict(resp.headers), await resp.read())

    async def management(self, token: str, method: str, path: str, body: Any = None) -> Answer:
        raw = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {token}"}
        if raw is not None:
            headers["Content-Type"] = "application/json"
        return await self.request(method, f"{self.target.management_url}{PREFIX}{path}", body=raw,
                                  headers=headers)

    async def signed(self, key: SigningKey, key_id: str, method: str, url: str, body: Any = None) -> Answer:
        """A DSP request signed with *key* (RFC 9421) for exactly *url* (sent as it is, not re-encoded)."""
        raw = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if raw is not None else {}
        headers = signing.sign_request(method, url, raw, key=key, key_id=key_id, now=time.time(), headers=headers)
        return await self.request(method, url, body=raw, headers=headers)

    async def as_stranger(self, attacker: Attacker, method: str, url: str, body: Any = None) -> Answer:
        return await self.signed(attacker.key, attacker.key_id, method, url, body)

    async def use(self, token: str, agreement: str, use_id: str, *, purpose: str = PURPOSE, action: str = "use",
                  deliver: bool = True) -> Answer:
        return await self.management(token, "POST", "/usage", {
            "agreementId": agreement, "useId": use_id, "action": action, "purpose": purpose, "deliver": deliver})

    def released(self, answer: Answer) -> bool:
        """Whether a use answer carries the drill's data itself (not a JSON decision)."""
        return answer.status == 200 and bool(self.data) and answer.body == self.data

    def contract_request(self, consumer_pid: str, callback: str) -> dict[str, Any]:
        """An opening ContractRequestMessage for the drill provider's offer, as any consumer sends it."""
        offer = contracts.message_offer(contracts.read_policy(self.offer, "offer"), str(self.offer["@id"]),
                                        self.asset_id)
        return m.encode(m.ContractRequestMessage(consumerPid=consumer_pid, callbackAddress=callback, offer=offer))

    async def negotiate(self) -> str:
        """The drill consumer negotiates the provider's offer; the agreement id."""
        started = await self.c.client.negotiate(self.p.base_url, str(self.offer["@id"]))
        final = await self.c.client.negotiation(started["id"], wait_s=30)
        if final["state"] != "FINALIZED":
            raise DrillSetupError(f"the drill's negotiation ended {final['state']}: {final.get('reason', '')}")
        return str(final["agreement"]["@id"])

    async def metric(self, listener: str) -> dict[str, float]:
        """``tds_http_requests_total`` of *listener* by status, from the node's ``/metrics`` on its management
        listener, read with the admin token (empty if it shows none)."""
        answer = await self.request("GET", f"{self.target.management_url}/metrics",
                                    headers={"Authorization": f"Bearer {self.target.admin_token}"})
        counts: dict[str, float] = {}
        for line in answer.body.decode(errors="replace").splitlines():
            if line.startswith("tds_http_requests_total{") and f'listener="{listener}"' in line:
                status = line.split('status="', 1)[1].split('"', 1)[0]
                counts[status] = float(line.rsplit(" ", 1)[1])
        return counts


class DrillSetupError(Exception):
    """The drill could not prepare what its attacks need."""


# -- the attacks ---------------------------------------------------------------------------------------


async def use_replay(ctx: DrillContext) -> Outcome:
    if not ctx.vault_path:
        return error("the drill consumer received no data (the transfer did not complete)")
    once = "drill-replay-once"
    first = await ctx.use(ctx.c.token, ctx.agreement, once)
    if not ctx.released(first):
        return error(f"the first use was not permitted ({first.status}: {first.reason})")
    problems = []
    answers = [await ctx.use(ctx.c.token, ctx.agreement, once) for _ in range(REDELIVERIES + 1)]
    again = sum(ctx.released(a) for a in answers)
    if again > REDELIVERIES:
        problems.append(f"{again} of {len(answers)} identical repeats released the data again "
                        f"(at most {REDELIVERIES})")
    if answers[-1].status != 409:
        problems.append(f"repeat {len(answers)} answered {answers[-1].status}, not 409")
    other = "drill-replay-variants"
    base = await ctx.use(ctx.c.token, ctx.agreement, other)
    if not ctx.released(base):
        return error(f"a second use was not permitted ({base.status}: {base.reason}); the policy allows "
                     f"{ALLOWED_USES}")
    app = await ctx.c.client.create_token("drill-other-app")
    variants = [("another purpose", {"purpose": "marketing"}), ("another action", {"action": "distribute"}),
                ("another application's token", {"token": app["token"]})]
    for label, change in variants:
        token = str(change.pop("token", ctx.c.token))
        answer = await ctx.use(token, ctx.agreement, other, **change)
        if answer.status != 409:
            data = " with the data" if ctx.released(answer) else ""
            problems.append(f"{label}: {answer.status}{data}, not 409")
    if problems:
        return failed("; ".join(problems))
    return refused(f"{again} re-deliveries of an identical repeat, then 409; another purpose, action or "
                   "application: 409")


async def tenant_files(ctx: DrillContext) -> Outcome:
    assert ctx.data_dir is not None
    files = ctx.data_dir / "files"
    victim = files / ctx.c.name / "drill-secret.csv"
    _write_private(victim, b"secret of another participant\n", ctx.data_dir)
    link = files / ctx.p.name / "drill-link.csv"
    link.unlink(missing_ok=True)
    os.symlink(victim, link)
    keys = ctx.data_dir / "keys"
    key_file = keys / "node.key" if (keys / "node.key").exists() else keys / ctx.p.name / "ed25519.key"
    cases: list[tuple[str, dict[str, Any]]] = [
        ("an absolute path into another participant's files", {"type": "File", "path": str(victim)}),
        ("a relative path with '..' into another participant's files",
         {"type": "File", "path": f"../{ctx.c.name}/{victim.name}"}),
        ("a symlink in its own files pointing into another participant's", {"type": "File", "path": str(link)}),
        ("the node's database", {"type": "File", "path": str(ctx.data_dir / "tds.db")}),
        ("a relative path with '..' to the node's database", {"type": "File", "path": "../../tds.db"}),
        ("the node's keys folder", {"type": "File", "path": str(key_file)}),
        ("an HTTP backend on the node's management listener",
         {"type": "HttpData", "url": f"{ctx.target.management_url}{PREFIX}/openapi.json"}),
    ]
    if ctx.vault_path:
        cases.append(("the vault", {"type": "File", "path": str(ctx.data_dir / ctx.vault_path)}))
    problems, statuses = [], []
    for i, (label, address) in enumerate(cases):
        asset = f"drill-escape-{i}"
        answer = await ctx.management(ctx.p.token, "POST", "/assets", {"id": asset, "dataAddress": address})
        statuses.append(answer.status)
        if answer.status < 400 or answer.status >= 500:
            problems.append(f"{label}: {answer.status}" + (" (registered)" if answer.status < 300 else ""))
            if answer.status < 300:
                await ctx.management(ctx.p.token, "DELETE", f"/assets/{asset}")
    link.unlink(missing_ok=True)
    if problems:
        return failed("; ".join(problems))
    return refused(f"{len(cases)} data addresses out of the participant's own files refused "
                   f"({', '.join(sorted({str(s) for s in statuses}))})")


async def counter_reset(ctx: DrillContext) -> Outcome:
    if not ctx.allow_tamper:
        return skipped("needs --allow-tamper (it writes to the node's database)")
    assert ctx.data_dir is not None
    for i in range(ALLOWED_USES + 2):  # use the allowance up, so that only the count stands in the way
        answer = await ctx.use(ctx.c.token, ctx.agreement, f"drill-exhaust-{i}", deliver=False)
        if answer.status == 403:
            break
    else:
        return failed(f"{ALLOWED_USES + 2} uses were permitted under a policy that allows {ALLOWED_USES}")
    problems, done = [], []
    # 1. A counter kept apart from the signed log, set back to 0.
    try:
        reset = await asyncio.to_thread(_reset_counter, ctx.data_dir, ctx.c.name, ctx.agreement)
    except sqlite3.Error as exc:
        return error(f"cannot write the node's database: {exc}")
    if reset:
        ctx.tampered.append(f"usage_counters row of {ctx.c.name} for agreement {ctx.agreement} set to 0")
        problems += await _after_tamper(ctx, "the counter was set to 0", "drill-after-reset")
        done.append("counter set to 0")
    else:
        done.append("no use counter kept apart from the signed log")
    # 2. The log cut short: the last permitted use and everything after it deleted, with their signed heads,
    #    once the provider has acknowledged them.
    acknowledged = await _acknowledged(ctx)
    log = await ctx.c.client.usage_log(ctx.agreement)
    permits = [e["seq"] for e in log["entries"] if e.get("kind") == "use" and e.get("decision") == "permit"]
    if not permits:
        return error("the drill consumer's log holds no permitted use to delete")
    cut = max(permits) - 1
    try:
        deleted = await asyncio.to_thread(_truncate_log, ctx.data_dir, ctx.c.name, ctx.agreement, cut)
    except sqlite3.Error as exc:
        return error(f"cannot write the node's database: {exc}")
    ctx.tampered.append(f"usage_log of {ctx.c.name} for agreement {ctx.agreement}: {deleted} entries after #{cut} "
                        "deleted with their signed heads")
    problems += await _after_tamper(ctx, f"the log was cut back to #{cut}", "drill-after-truncation")
    done.append(f"log cut back to #{cut}" + ("" if acknowledged else " (the provider had not acknowledged it)"))
    if problems:
        return failed("; ".join(problems))
    return refused(f"{', '.join(done)}: no extra use went unnoticed (`tds log verify` reported it)")


async def _after_tamper(ctx: DrillContext, what: str, use_id: str) -> list[str]:
    """What must hold after tampering: `tds log verify` reports it, and a use beyond the allowance is denied
    or, if permitted, shows as an anomaly in the provider's report."""
    problems = []
    code, output = await _log_verify(ctx)
    if code == 0:
        problems.append(f"{what}: `tds log verify` reports nothing wrong ({output[:160]})")
    before = len((await ctx.p.client.usage_report(ctx.agreement))["anomalies"])
    answer = await ctx.use(ctx.c.token, ctx.agreement, use_id, deliver=False)
    if answer.status == 200:
        deadline = time.monotonic() + 15
        while len((await ctx.p.client.usage_report(ctx.agreement))["anomalies"]) <= before:
            if time.monotonic() > deadline:
                problems.append(f"{what}: one more use was permitted and the provider's report shows no anomaly")
                break
            await asyncio.sleep(0.2)  # ok-sleep: polling the provider's report with a deadline
    elif not 400 <= answer.status < 500:  # 403 denied, 409 blocked until the log is sorted out: both hold
        problems.append(f"{what}: the next use answered {answer.status}: {answer.reason}")
    return problems


async def _acknowledged(ctx: DrillContext) -> bool:
    """Wait (15 s at most) until the provider has acknowledged the consumer's whole log."""
    deadline = time.monotonic() + 15
    while True:
        log = await ctx.c.client.usage_log(ctx.agreement)
        last = log["entries"][-1]["seq"] if log["entries"] else 0
        ack = log.get("acknowledgement") or {}
        if isinstance(ack.get("seq"), int) and ack["seq"] >= last:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)  # ok-sleep: polling for the provider's acknowledgement with a deadline


def _store(data_dir: Path) -> Any:
    """The target node's store, opened from outside the node (SQLite file or PostgreSQL schema)."""
    from connector.bootstrap import store_location
    from connector.config import load_config
    from connector.store.db import Store

    return Store(store_location(data_dir, load_config(data_dir)))


def _reset_counter(data_dir: Path, participant_id: str, agreement: str) -> bool:
    def reset(db: Any) -> bool:
        try:
            cursor = db.execute("UPDATE usage_counters SET use_count = 0 WHERE participant_id = ? AND "
                                "agreement_id = ?", [participant_id, agreement])
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return False  # the node keeps no counter apart from its signed log
            raise
        return bool(cursor.rowcount > 0)

    return bool(_store(data_dir).read_sync(reset))


def _truncate_log(data_dir: Path, participant_id: str, agreement: str, cut: int) -> int:
    def truncate(db: Any) -> int:
        key = [participant_id, agreement, cut]
        db.execute("BEGIN")
        deleted = db.execute("DELETE FROM usage_log WHERE participant_id = ? AND agreement_id = ? AND seq > ?",
                             key).rowcount
        db.execute("DELETE FROM usage_heads WHERE participant_id = ? AND agreement_id = ? AND seq > ?", key)
        db.execute("COMMIT")
        return int(deleted)

    return int(_store(data_dir).read_sync(truncate))


async def _log_verify(ctx: DrillContext) -> tuple[int, str]:
    """Run ``tds log verify`` on the drill consumer's agreement (the token goes in the environment, not on
    the command line, where other local users could read it)."""
    env = {**os.environ, "TDS_NODE": ctx.target.management_url, "TDS_TOKEN": ctx.c.token}
    env.pop("TDS_DIR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", "log", "verify", ctx.agreement, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    return int(process.returncode or 0), out.decode(errors="replace").strip()[:300]


async def receipt_binding(ctx: DrillContext) -> Outcome:
    assert ctx.data_dir is not None
    from connector.bootstrap import keys_dir, node_key
    from connector.identity.keys import load_keys

    try:
        keys = await asyncio.to_thread(load_keys, keys_dir(ctx.data_dir, ctx.c.name), node_key(ctx.data_dir))
    except (OSError, ValueError) as exc:
        return error(f"cannot open the drill consumer's keys in {ctx.data_dir / 'keys'}: {exc}")
    other = await ctx.negotiate()  # a second agreement between the same two parties
    log = await ctx.c.client.usage_log(ctx.agreement)
    if not log["entries"]:
        await ctx.use(ctx.c.token, ctx.agreement, "drill-receipt", deliver=False)
        log = await ctx.c.client.usage_log(ctx.agreement)
    body = {"@type": RECEIPTS_TYPE, "agreementId": other, "entries": log["entries"], "heads": log["heads"]}
    url = f"{ctx.p.dsp_base}/tds/usage-receipts"
    key_id = dids.signing_key_id(ctx.c.did) if ctx.c.did.startswith("did:key:") else f"{ctx.c.did}#{keys.signing_id}"
    answer = await ctx.signed(keys.signing, key_id, "POST", url, body)
    if answer.status == 409:
        return refused(f"{len(log['entries'])} entries of one agreement posted under another: 409")
    data = answer.json() or {}
    if answer.status == 200:
        return failed(f"{len(log['entries'])} entries of agreement {ctx.agreement} were accepted under agreement "
                      f"{other} (acceptedThrough {data.get('acceptedThrough')})")
    return failed(f"entries of another agreement answered {answer.status}, not 409: {answer.reason}")


async def stranger_flood(ctx: DrillContext) -> Outcome:
    dsp = ctx.target.dsp
    rate, burst, places = dsp.unknown_peer_rate_per_s, dsp.unknown_peer_burst, dsp.unknown_peer_open_negotiations
    url = f"{ctx.p.dsp_base}/catalog/request"
    gate = asyncio.Semaphore(50)

    async def one(body: Any, target: str = url) -> Answer:
        async with gate:
            try:
                return await ctx.as_stranger(Attacker.fresh(), "POST", target, body)
            except aiohttp.ClientError:
                return Answer(0, {}, b"")  # no answer at all: counted as a problem below

    started = time.monotonic()
    answers = await asyncio.gather(*(one(CATALOG_REQUEST) for _ in range(300)))
    elapsed = time.monotonic() - started
    problems = _flood_problems("catalog request", answers, accepted={200}, bound=int(burst + rate * elapsed * 1.1) + 5)
    served = sum(a.status == 200 for a in answers)
    # The shared bucket refills; then the openings are paced under its rate, so that the limit on open
    # negotiations is what refuses them (with a very low rate both may; the bound is the same).
    await asyncio.sleep(min(burst / rate + 0.5, 5.0))  # ok-sleep: waiting for a token bucket to refill
    dev_mode = ctx.target.config is None or ctx.target.config.node.dev_mode
    # A callback that never answers: a closed loopback port, or (outside dev mode, where loopback callbacks
    # are refused) a participant that does not exist on the node's own public origin.
    callback = (f"http://127.0.0.1:{ctx.closed_port}{DSP_VERSION_PATH}" if dev_mode
                else f"{ctx.target.public_url}/participants/drill-{ctx.suffix}-gone{DSP_VERSION_PATH}")
    openings = []
    for _ in range(80):
        request = ctx.contract_request(f"urn:uuid:{secrets.token_hex(16)}", callback)
        openings.append(await one(request, f"{ctx.p.dsp_base}/negotiations/request"))
        await asyncio.sleep(min(1 / (0.75 * rate), 0.25))  # ok-sleep: pacing under the shared request budget
    problems += _flood_problems("contract request", openings, accepted={200, 201}, bound=places)
    opened = sum(a.status in (200, 201) for a in openings)
    if problems:
        return failed("; ".join(problems))
    return refused(f"{served} of 300 catalog requests served (budget {burst} + {rate:g}/s over {elapsed:.1f} s), "
                   f"the rest 429; {opened} of 80 negotiations opened (at most {places}), the rest "
                   f"{_statuses(openings, exclude={200, 201})}")


def _flood_problems(what: str, answers: list[Answer], *, accepted: set[int], bound: int) -> list[str]:
    problems = []
    served = sum(a.status in accepted for a in answers)
    if served > bound:
        problems.append(f"{served} of {len(answers)} {what}s from fresh did:keys were accepted (at most {bound})")
    errors = [a for a in answers if a.status >= 500]
    if errors:
        problems.append(f"{len(errors)} {what}s answered {errors[0].status}")
    bare = [a for a in answers if a.status == 429 and not a.headers.get("Retry-After")]
    if bare:
        problems.append(f"{len(bare)} 429 answers without Retry-After")
    silent = [a for a in answers if a.status == 0]
    if silent:
        problems.append(f"{len(silent)} {what}s got no answer (connection dropped)")
    return problems


def _statuses(answers: list[Answer], *, exclude: set[int]) -> str:
    counts: dict[int, int] = {}
    for a in answers:
        if a.status not in exclude:
            counts[a.status] = counts.get(a.status, 0) + 1
    return ", ".join(f"{n} x {s}" for s, n in sorted(counts.items())) or "none"


async def file_modes(ctx: DrillContext) -> Outcome:
    assert ctx.data_dir is not None
    loose = await asyncio.to_thread(_loose_modes, ctx.data_dir)
    if loose:
        shown = ", ".join(f"{path} {mode:o}" for path, mode in loose[:5])
        more = f" and {len(loose) - 5} more" if len(loose) > 5 else ""
        return failed(f"{len(loose)} open to other local users: {shown}{more}")
    return refused("every file 0600 and every folder 0700 (or stricter)")


def _loose_modes(root: Path) -> list[tuple[str, int]]:
    """Files and folders under *root* (itself included) that other users may read, write or enter.

    Data files the operator put in ``files/`` keep the operator's modes (the node does not write them, and
    the 0700 folders around them keep other users out); every folder there, and the snapshots the node
    fetched into ``.snapshots/``, are checked like the rest."""
    found = []
    operators = root / "files"
    for folder, dirs, files in os.walk(root):
        for name in [None, *files]:
            path = Path(folder) if name is None else Path(folder) / name
            info = path.lstat()
            if os.path.islink(path):
                continue  # a link's own mode means nothing; its target is checked where it lies
            if (name is not None and path.is_relative_to(operators)
                    and ".snapshots" not in path.relative_to(operators).parts):
                continue
            if info.st_mode & 0o077:
                found.append((str(path.relative_to(root)) if path != root else ".", info.st_mode & 0o777))
        dirs.sort()
    return found


async def token_in_log(ctx: DrillContext) -> Outcome:
    token = ctx.p.token
    pad = "A" * (MAX_HEADER_LINE + 10)
    headers = {"after the token": f"Bearer {token}{pad}", "before the token": f"Bearer {pad}{token}"}
    targets = {"management": f"{ctx.target.management_url}{PREFIX}/participant",
               "public": f"{ctx.p.dsp_base}/catalog/request"}
    problems, statuses = [], set()
    for listener, url in targets.items():
        for where, value in headers.items():
            method = "GET" if listener == "management" else "POST"
            try:
                answer = await ctx.request(method, url, headers={"Authorization": value})
            except aiohttp.ClientError:
                statuses.add("closed")  # the listener hung up without an answer: nothing echoed
                continue
            statuses.add(str(answer.status))
            if not 400 <= answer.status < 500:
                problems.append(f"{listener} listener, padding {where}: {answer.status}, not 4xx")
            if token in answer.body.decode(errors="replace") or token[:16] in answer.body.decode(errors="replace"):
                problems.append(f"{listener} listener, padding {where}: the answer echoes the token")
    log_note = "the node's log was not read (the node logs to stderr)"
    if problems:
        return failed("; ".join(problems) + f"; {log_note}")
    return refused(f"padded tokens refused on both listeners ({', '.join(sorted(statuses))}) without echoing "
                   f"them; {log_note}")


async def bad_input(ctx: DrillContext) -> Outcome:
    problems = []
    for path in ("/negotiations?limit=%C2%B9", "/transfers?limit=%C2%B9"):
        answer = await ctx.management(ctx.p.token, "GET", path)
        if not 400 <= answer.status < 500:
            problems.append(f"management GET {path}: {answer.status}")
    url = f"{ctx.p.dsp_base}/catalog/request?offset=%C2%B2"
    answer = await ctx.as_stranger(Attacker.fresh(), "POST", url, CATALOG_REQUEST)
    if not 400 <= answer.status < 500 or answer.status == 429:
        problems.append(f"signed DSP catalog request ?offset=%C2%B2: {answer.status}")
    for listener, method, target, token in (
            ("management", "PATCH", f"{ctx.target.management_url}{PREFIX}/assets", ctx.p.token),
            ("public", "POST", f"{ctx.target.public_url}/healthz", None)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = await ctx.request(method, target, headers=headers)
        if answer.status != 405:
            problems.append(f"{listener} {method} on a route without it: {answer.status}, not 405")
        elif not answer.headers.get("Allow"):
            problems.append(f"{listener} 405 without an Allow header")
    if problems:
        return failed("; ".join(problems))
    return refused("unicode digits in limit and offset: 4xx; unsupported methods: 405 with Allow")


async def own_listener_callback(ctx: DrillContext) -> Outcome:
    callback = f"{ctx.target.management_url}{PREFIX}"
    before = await ctx.metric("management")
    if not before:
        return error("the node's /metrics shows no management listener counts: a call to it could not be seen")
    answer = await ctx.as_stranger(Attacker.fresh(), "POST", f"{ctx.p.dsp_base}/negotiations/request",
                                   ctx.contract_request(f"urn:uuid:{secrets.token_hex(16)}", callback))
    if 400 <= answer.status < 500 and answer.status != 429:
        return refused(f"a callback to the management listener: {answer.status} ({answer.reason})")
    if answer.status not in (200, 201):
        return failed(f"the contract request answered {answer.status}, not 4xx") if answer.status >= 500 else \
            error(f"the contract request answered {answer.status}: {answer.reason}")
    pid = str((answer.json() or {}).get("providerPid", ""))
    deadline = time.monotonic() + 20
    state = "?"
    while time.monotonic() < deadline:
        calls = _management_errors(before, await ctx.metric("management"))
        if calls:
            return failed(f"the node called its own management listener ({calls} request(s) it refused) for a "
                          "peer's callback")
        record = await ctx.p.client.negotiation(pid)
        state = record["state"]
        if state == "TERMINATED":
            await asyncio.sleep(0.2)  # ok-sleep: a last look for a call the termination itself may have made
            if _management_errors(before, await ctx.metric("management")):
                return failed("the node called its own management listener with the termination")
            return refused(f"accepted, then TERMINATED without calling the management listener "
                           f"({record.get('reason', '')[:120]})")
        await asyncio.sleep(0.2)  # ok-sleep: polling the node's state with a deadline
    return error(f"the negotiation neither ended nor called back within 20 s (state {state})")


def _management_errors(before: dict[str, float], after: dict[str, float]) -> int:
    """Requests the management listener refused between two readings: the drill's own calls there in that
    window all succeed, so a refused one came from elsewhere (a call without a token, or to no route)."""
    return int(sum(after.get(s, 0) - before.get(s, 0) for s in after if not s.startswith("2")))


#: The attack catalogue, in the order it runs. The flood comes last: it spends the budget that all
#: unknown peers share, which the other attacks' strangers draw from.
CATALOGUE: list[Attack] = [
    Attack("use-replay", "a use id re-delivers identical repeats at most 3 times, then 409; another purpose, "
           "action or application's token on it is 409", use_replay, needs_dir="the data it replays comes from "
           "a file placed in files/"),
    Attack("tenant-files", "a participant cannot publish a file outside files/ of its own (absolute, '..', "
           "symlink, the database, keys, vault) nor an HTTP backend on the node's listeners", tenant_files,
           needs_dir="it places files in files/"),
    Attack("counter-reset", "use counts set back in tds.db (a counter set to 0, or the log's last permitted use "
           "deleted with its signed head) are reported by `tds log verify`, and an extra use is denied or flagged "
           "to the provider (tampers with the database: only with --allow-tamper)", counter_reset,
           needs_dir="it writes to tds.db"),
    Attack("receipt-binding", "usage log entries of one agreement posted as receipts under another agreement "
           "are refused with 409", receipt_binding, needs_dir="it signs as the drill consumer, whose key is "
           "sealed in keys/"),
    Attack("own-listener-callback", "a peer's callbackAddress on the node's management listener is refused, or "
           "the negotiation ends without the node calling it", own_listener_callback),
    Attack("bad-input", "unicode digits in ?limit= (management) and ?offset= (signed DSP) are 4xx, not 5xx; an "
           "unsupported method is 405 with Allow", bad_input),
    Attack("token-in-log", f"a token padded past {MAX_HEADER_LINE} bytes is refused on both listeners and not "
           "echoed in the answer", token_in_log),
    Attack("file-modes", "every file the node wrote in its folder is 0600 and every folder 0700", file_modes,
           needs_dir="it reads the node's folder"),
    Attack("stranger-flood", "300 catalog requests and 80 contract requests from fresh did:keys: served only "
           "within the node-wide unknown-peer budget, the rest 429 with Retry-After", stranger_flood),
]


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class DrillOptions:
    target: Target
    report: Path | None = None
    allow_tamper: bool = False
    #: Names of the attacks to run (default: all of the catalogue).
    only: tuple[str, ...] = ()
    #: Told each line of output as it happens.
    emit: Callable[[str], None] = print
    #: Called once the drill's participants are set up (tests interrupt the drill there).
    on_ready: Callable[[DrillContext], None] | None = None
    #: What the drill made and has not removed yet: after a hard interrupt, what is left here was not.
    cleanup: Cleanup = field(default_factory=Cleanup)


@dataclass
class DrillResult:
    report: dict[str, Any]
    report_path: Path
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        summary = self.report["summary"]
        return 0 if summary["passed"] else 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write_private(path: Path, data: bytes, data_dir: Path) -> None:
    """A file of the drill's in the node's folder: 0600 in 0700 folders, owned like the data folder (the node
    must read it; a drill run as root would otherwise leave root's files)."""
    missing = []
    at = path.parent
    while not at.exists():
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        os.mkdir(folder, 0o700)
        os.chmod(folder, 0o700)
        _own_like(folder, data_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    _own_like(path, data_dir)


def _own_like(path: Path, data_dir: Path) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        info = data_dir.stat()
        os.lchown(path, info.st_uid, info.st_gid)


async def _hold_closed_port() -> tuple[socket.socket, int]:
    """A loopback port bound but never listening: every connection to it is refused, and no other process
    can take it while the drill runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


async def _setup(ctx: DrillContext, originals: list[dict[str, Any]]) -> None:
    from usage_policies import templates

    target = ctx.target
    region = originals[0]["region"] if originals else "CN"
    ctx.provider = await _host(ctx, f"drill-{ctx.suffix}", "Security drill (provider)", region)
    ctx.consumer = await _host(ctx, f"drill-{ctx.suffix}-peer", "Security drill (consumer)", region)
    asset: dict[str, Any] = {"id": ctx.asset_id, "title": "Security drill data", "contentType": "text/csv"}
    if target.data_dir is not None:
        ctx.data = f"drill,{secrets.token_hex(16)}\n".encode()
        path = target.data_dir / "files" / ctx.p.name / "drill-data.csv"
        _write_private(path, ctx.data, target.data_dir)
        asset["dataAddress"] = {"type": "File", "path": str(path)}
    await ctx.p.client.add_asset(asset)
    await ctx.p.client.add_policy("drill-access", {"@type": "Set", "permission": [{"action": "use"}]})
    usage = templates.combine(templates.purpose(ctx.asset_id, PURPOSE), templates.max_uses(ctx.asset_id, ALLOWED_USES))
    await ctx.p.client.add_policy("drill-usage", usage)
    await ctx.p.client.add_contract_definition("drill", access_policy_id="drill-access",
                                               contract_policy_id="drill-usage", assets=[ctx.asset_id])
    answer = await ctx.as_stranger(Attacker.fresh(), "POST", f"{ctx.p.dsp_base}/catalog/request", CATALOG_REQUEST)
    catalog = answer.json() if answer.status == 200 else None
    datasets = catalog.get("dataset", []) if isinstance(catalog, dict) else []
    if not datasets or not datasets[0].get("hasPolicy"):
        raise DrillSetupError(f"a stranger cannot read the drill provider's catalog ({answer.status}: "
                              f"{answer.reason})")
    ctx.offer = datasets[0]["hasPolicy"][0]
    ctx.agreement = await ctx.negotiate()
    if target.data_dir is not None:
        started = await ctx.c.client.start_transfer(ctx.agreement)
        done = await ctx.c.client.transfer(started["id"], wait_s=60)
        if done["state"] == "COMPLETED":
            ctx.vault_path = str(done.get("vaultPath", ""))


async def _host(ctx: DrillContext, name: str, legal_name: str, region: str) -> Party:
    async def remove() -> None:
        try:
            await ctx.admin.remove_participant(name)
        except ClientError as exc:
            if exc.status != 404:  # 404: it was never made, or is gone already
                raise
        if ctx.data_dir is not None:
            from connector.services.vault import safe_name

            for folder in (ctx.data_dir / "keys" / name, ctx.data_dir / "files" / name,
                           ctx.data_dir / "vault" / safe_name(name)):
                if folder.exists():
                    raise DrillSetupError(f"{folder} is still there")

    # Registered before the call: a call that fails half-way may still have made the participant.
    ctx.cleanup.add(f"participant {name} (its tokens, catalog, negotiations, agreements, usage log, keys, "
                    "files and vault)", remove)
    added = await ctx.admin.add_participant(name, legal_name=legal_name, region=region,
                                            industry="security drill")
    client = ctx.admin.with_token(added["token"], timeout_s=90)
    ctx.clients.append(client)
    return Party(name, added["token"], added["did"], added["dspEndpoint"], client)


async def run_drill(options: DrillOptions) -> DrillResult:
    """Run the drill against ``options.target``: set up, attack, tear down, write the report.

    Raises :class:`DrillRefused` before creating anything if the target is not loopback or inside the node's
    trusted networks, or the admin API refuses the token. Teardown runs whatever happens (an error, or a
    cancellation such as Ctrl+C, after which the result says ``interrupted``)."""
    target, emit = options.target, options.emit
    unknown = set(options.only) - {a.name for a in CATALOGUE}
    if unknown:
        raise DrillRefused(f"no such attack: {', '.join(sorted(unknown))} (known: "
                           f"{', '.join(a.name for a in CATALOGUE)})")
    attacks = [a for a in CATALOGUE if not options.only or a.name in options.only]
    for url in (target.management_url, target.public_url):
        if url:  # a public URL learnt from the node itself is checked once it is known, below
            await asyncio.to_thread(check_target, url, target.trusted_networks)
    try:
        admin = target.admin_client()
    except ConfigError as exc:
        raise DrillRefused(exc.message) from exc
    try:
        originals = await admin.participants()
        if not target.public_url:
            if not originals:
                raise DrillRefused("the node hosts no participant: cannot learn its public URL")
            target.public_url = originals[0]["dspEndpoint"].rsplit("/participants/", 1)[0]
            await asyncio.to_thread(check_target, target.public_url, target.trusted_networks)
    except ClientError as exc:
        await admin.close()
        raise DrillRefused(f"the node's admin API: {exc}") from exc
    except BaseException:
        await admin.close()
        raise
    from connector.http.tls import client_context

    # The public listener's certificate: as the node checks its peers' (node.tls_ca); without the folder, against
    # --ca as well (a data space's own CA issues both listeners' certificates).
    ssl_context = (client_context(target.config.node.tls_ca) if target.config is not None
                   else client_context(target.ca))
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90),
                                    connector=aiohttp.TCPConnector(limit=60, ssl=ssl_context or True))
    ctx = DrillContext(target, admin, session, options.cleanup, allow_tamper=options.allow_tamper)
    started_at, started = _now(), time.monotonic()
    results: list[dict[str, Any]] = []
    interrupted, problem = False, ""
    emit(f"drill against {target.management_url} (management) and {target.public_url} (public): "
         f"{len(attacks)} attack(s)")
    try:
        await _prepare(ctx, originals)
        emit(f"set up {ctx.p.name} (provider) and {ctx.c.name} (consumer), agreement {ctx.agreement}"
             + ("" if ctx.vault_path or target.data_dir is None else "; the consumer received NO data"))
        if options.on_ready is not None:
            options.on_ready(ctx)
        for attack in attacks:
            outcome, seconds = await _run_one(ctx, attack)
            result = {"name": attack.name, "checks": attack.checks, "outcome": outcome.outcome,
                      "detail": outcome.detail, "seconds": round(seconds, 3)}
            if attack.name == "counter-reset" and ctx.tampered:
                result["tampered"] = list(ctx.tampered)
            results.append(result)
            emit(f"{outcome.outcome:<8} {attack.name:<22} {outcome.detail}")
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the teardown below still runs in this task
        interrupted = True
        emit("interrupted: removing what the drill created")
    except Exception as exc:
        problem = f"setup failed: {type(exc).__name__}: {describe(exc)}"
        emit(f"error: {problem}")
    finally:
        try:
            interrupted = await ctx.cleanup.run() or interrupted
        finally:
            for client in (*ctx.clients, admin):
                await client.close()
            await session.close()
    done = {r["name"] for r in results}
    for attack in attacks:
        if attack.name not in done:
            reason = "interrupted" if interrupted else problem or "not run"
            results.append({"name": attack.name, "checks": attack.checks, "outcome": "error",
                            "detail": f"not run: {reason}", "seconds": 0.0})
    counts = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    left = ctx.cleanup.left
    report = {
        "node": {"management": target.management_url, "public": target.public_url},
        "startedAt": started_at,
        "finishedAt": _now(),
        "seconds": round(time.monotonic() - started, 3),
        "participants": [f"drill-{ctx.suffix}", f"drill-{ctx.suffix}-peer"],
        "withDataFolder": target.data_dir is not None,
        "allowTamper": options.allow_tamper,
        "attacks": results,
        "summary": {**counts, "passed": counts["FAILED"] == counts["error"] == 0 and not left and not interrupted},
        "teardown": {"removed": ctx.cleanup.removed, "notRemoved": left, "interrupted": interrupted},
    }
    if ctx.tampered:
        report["tampered"] = ctx.tampered
    path = options.report or Path(f"drill-report-{started_at.replace(':', '').replace('-', '')}.json")
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    emit(f"{len(results)} attack(s): {counts['refused']} refused, {counts['FAILED']} FAILED, {counts['error']} "
         f"error, {counts['skipped']} skipped; report written to {path}")
    if left:
        emit("could not remove: " + "; ".join(left))
    else:
        emit(f"removed everything the drill created: {'; '.join(ctx.cleanup.removed) or 'nothing was made'}")
    if ctx.tampered:
        emit("tampered with (rows of the drill's own participants): " + "; ".join(ctx.tampered))
    return DrillResult(report, path, interrupted)


async def _prepare(ctx: DrillContext, originals: list[dict[str, Any]]) -> None:
    """The closed callback port, then the participants and what the attacks need."""
    sock, ctx.closed_port = await _hold_closed_port()

    async def release() -> None:
        sock.close()

    ctx.cleanup.add(f"loopback port {ctx.closed_port} held closed for the strangers' callbacks", release)
    if ctx.data_dir is not None and not (ctx.data_dir / "files").exists():
        files_root = ctx.data_dir / "files"

        async def drop_files_root() -> None:
            if files_root.exists() and not any(files_root.iterdir()):
                files_root.rmdir()  # only if empty: anything else in it is not the drill's

        ctx.cleanup.add(f"{files_root} (made by the drill)", drop_files_root)
    await _setup(ctx, originals)


async def _run_one(ctx: DrillContext, attack: Attack) -> tuple[Outcome, float]:
    started = time.monotonic()
    if attack.needs_dir and ctx.data_dir is None:
        return error(f"needs --dir: {attack.needs_dir}"), 0.0
    try:
        outcome = await attack.run(ctx)
    except Exception as exc:  # one attack that cannot run does not stop the others
        outcome = error(f"{type(exc).__name__}: {describe(exc)}")
    return outcome, time.monotonic() - started
