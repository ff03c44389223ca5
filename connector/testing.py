"""Helpers for tests and examples: real nodes on free loopback ports (started and cleaned up), and fakes of the
layers below the services for socket-free tests (a clock moved by hand, a recording outbound client, in-memory
peers)."""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import shutil
import socket
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

import msgspec

from connector.bootstrap import init_node, write_secret_text
from connector.client import ManagementClient
from connector.config import (
    CONFIG_FILE,
    Config,
    ConformanceSection,
    CredentialsSection,
    DiscoverySection,
    DspSection,
    parse_config,
    render_config,
)
from connector.errors import OutboundRefused, PeerError
from connector.net.client import PeerResponse
from connector.node import Node

if TYPE_CHECKING:
    from connector.identity.trust import PeerClaims


def write_tls(ca: Any, folder: Path, *hosts: str) -> dict[str, str]:
    """A certificate for *hosts* from *ca* (a ``trustme.CA``), its key (mode 0600) and the CA, written to
    *folder*; returns the ``[node]`` settings naming them (``tls_cert``, ``tls_key``, ``tls_ca``)."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*hosts)
    (folder / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    write_secret_text(folder / "key.pem", cert.private_key_pem.bytes().decode())
    os.chmod(folder / "key.pem", 0o600)
    (folder / "ca.pem").write_bytes(ca.cert_pem.bytes())
    return {"tls_cert": str(folder / "cert.pem"), "tls_key": str(folder / "key.pem"), "tls_ca": str(folder / "ca.pem")}


def vault_chunks(data_dir: Path, vault_path: str | Path) -> Iterator[bytes]:
    """The plaintext of a received file, chunk by chunk, opened with the keys in the node's data folder
    (the vault is sealed at rest). *vault_path* is relative to *data_dir* (a transfer's ``vaultPath``) or
    absolute. Raises :class:`~connector.errors.StorageError` if it does not open."""
    from connector.services import vault

    path = data_dir / vault_path
    with vault.offline_reader(data_dir, path) as reader:
        yield from vault.read_all(reader)


def vault_plaintext(data_dir: Path, vault_path: str | Path) -> bytes:
    """The whole plaintext of a received file (see :func:`vault_chunks`)."""
    return b"".join(vault_chunks(data_dir, vault_path))


def vault_sha256(data_dir: Path, vault_path: str | Path) -> str:
    """SHA-256 (hex) of a received file's plaintext, read in constant memory."""
    import hashlib

    digest = hashlib.sha256()
    for chunk in vault_chunks(data_dir, vault_path):
        digest.update(chunk)
    return digest.hexdigest()


async def eventually(check: Callable[[], Awaitable[Any]], deadline_s: float = 15.0, *, every_s: float = 0.05,
                     what: str = "the condition") -> Any:
    """Poll *check* (an async callable) until it returns a truthy value, and return that value; fail the test
    when *deadline_s* passes first. The one way tests wait for another node's or a background task's state."""
    import asyncio
    import time

    end = time.monotonic() + deadline_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"{what} was not reached within {deadline_s:g} s")
        await asyncio.sleep(every_s)  # ok-sleep: polling with a deadline


#: Where the tests make their PostgreSQL schemas when ``TDS_TEST_POSTGRES_DSN`` names no other server: the server
#: on 127.0.0.1:5432 (trust authentication, database ``test``) that CI machines run.
DEFAULT_TEST_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_test_dsn() -> str:
    """The PostgreSQL database the tests use: ``TDS_TEST_POSTGRES_DSN``, else :data:`DEFAULT_TEST_POSTGRES_DSN`."""
    import os

    return os.environ.get("TDS_TEST_POSTGRES_DSN", DEFAULT_TEST_POSTGRES_DSN)


def postgres_unreachable(dsn: str) -> str | None:
    """Why the tests cannot use the PostgreSQL database *dsn* (the driver is missing, no server answers), for a
    skip; None when a connection opens."""
    try:
        import psycopg
    except ImportError:
        return "the PostgreSQL driver (psycopg) is not installed"
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        lines = str(exc).strip().splitlines()
        return f"no PostgreSQL server at {dsn}: {lines[0] if lines else type(exc).__name__}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningNode:
    node: Node
    client: ManagementClient
    token: str
    data_dir: Path
    admin_token: str = ""
    #: The CA file the management listener's certificate is checked with, when it serves HTTPS.
    management_ca: str | None = None

    @property
    def participant(self) -> Any:
        first = self.node.participants.first()
        assert first is not None
        return first

    @property
    def public_url(self) -> str:
        return self.node.config.public_url


@dataclass
class HostedParticipant:
    """A participant added to a running node through the admin API, with a client on its own token."""

    host: RunningNode
    name: str
    client: ManagementClient
    token: str

    @property
    def node(self) -> Node:
        return self.host.node

    @property
    def participant(self) -> Any:
        found = self.host.node.participants.by_name(self.name)
        assert found is not None, f"{self.name} is not hosted"
        return found

    @property
    def public_url(self) -> str:
        """The participant's own URL (``…/participants/NAME``): what a peer is given to reach it."""
        return str(self.participant.base_url)


def _drop_store(data_dir: Path, config: Config) -> None:
    """Delete the store of the node in *data_dir* where its folder does not hold it: its schema on the PostgreSQL
    server (``TDS_STORE``), which is named after the folder and would greet a node made afresh there with the
    participants of the one before."""
    from connector.bootstrap import store_location
    from connector.store.pg import PgLocation

    location = store_location(data_dir, config)
    if isinstance(location, PgLocation):
        import psycopg

        with psycopg.connect(location.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{location.schema}" CASCADE')


class NodeFactory:
    """Start nodes in the current event loop; :meth:`close` stops every one of them.

    With ``validate=True`` every DSP message a node sends, and every DSP body it receives in answer, is
    checked against the DSP 2025-1 schemas; the problems are collected in :attr:`invalid`. The messages sent
    are kept in :attr:`sent`, the DSP bodies answered (catalogs, datasets, acknowledgements, errors) in
    :attr:`answers`.
    """

    def __init__(self, root: Path, *, validate: bool = True) -> None:
        self.root = root
        self.nodes: list[RunningNode] = []
        self.validate = validate
        self.invalid: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self._clients: list[ManagementClient] = []

    def _watch(self, node: Node) -> None:
        if not self.validate:
            return
        original = node.client.request

        async def request(method: str, url: str, **kwargs: Any) -> Any:
            body = kwargs.get("json_body")
            if isinstance(body, dict) and "@type" in body:
                self.sent.append(body)
                self._check(body, f"{method} {url}")
            response = await original(method, url, **kwargs)
            if "/api/dsp/" in url and response.body[:1] == b"{":
                data = response.json()
                if isinstance(data, dict) and data.get("@type") in SCHEMA_FILES:
                    self.answers.append(data)
                    self._check(data, f"answer to {method} {url}")
            return response

        node.client.request = request  # type: ignore[method-assign]

    def _check(self, message: dict[str, Any], where: str) -> None:
        if message.get("@type") not in SCHEMA_FILES:
            return
        try:
            dsp_validator().validate(message)
        except Exception as exc:
            self.invalid.append(f"{where}: {message.get('@type')}: {str(exc).splitlines()[0]}")

    async def start(self, name: str, *, dev_mode: bool = True, region: str = "CN-GD", legal_name: str | None = None,
                    trusted_networks: tuple[str, ...] = (), did_method: str = "web",
                    conformance: ConformanceSection | None = None, https: bool = False,
                    dsp: DspSection | None = None, credentials: CredentialsSection | None = None,
                    management_ca: str | None = None, **node_settings: Any) -> RunningNode:
        """Initialise and start a node; *node_settings* override ``[node]`` config fields, *dsp* and
        *credentials* replace the ``[dsp]`` and ``[credentials]`` sections and *conformance* adds a
        ``[conformance]`` section (all written to its config file and read back). With *https* the public URL
        is ``https://127.0.0.1:PORT`` (give ``tls_cert`` and ``tls_key`` too). *management_ca* is the CA file
        the clients check the management listener's certificate with (``management_tls`` on)."""
        data_dir = self.root / name
        for attempt in range(3):
            # A port picked free can be taken by another process before the node binds it: start afresh.
            port = free_port()
            if https:
                node_settings["public_url"] = f"https://127.0.0.1:{port}"
            result = init_node(data_dir, name=name, legal_name=legal_name or f"{name.title()} Co.", port=port,
                               management_port=free_port(), region=region, dev_mode=dev_mode,
                               trusted_networks=trusted_networks, did_method=did_method)
            config = result.config
            if node_settings or conformance is not None or dsp is not None or credentials is not None:
                config = msgspec.structs.replace(config, node=msgspec.structs.replace(config.node, **node_settings),
                                                 conformance=conformance, dsp=dsp or config.dsp,
                                                 credentials=credentials or config.credentials)
                text = render_config(config)
                config = parse_config(text)
                write_secret_text(data_dir / CONFIG_FILE, text)
            node = Node(data_dir, config)
            self._watch(node)
            try:
                await node.start()
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 2:
                    raise
                await node.stop()
                _drop_store(data_dir, config)
                shutil.rmtree(data_dir)
        running = RunningNode(node, ManagementClient(node.management_url, result.token, ca=management_ca),
                              result.token, data_dir, result.admin_token, management_ca)
        self.nodes.append(running)
        return running

    def client(self, running: RunningNode, token: str) -> ManagementClient:
        """A management client on *running* with *token* (closed by :meth:`close`)."""
        client = ManagementClient(running.node.management_url, token, ca=running.management_ca)
        self._clients.append(client)
        return client

    async def host(self, running: RunningNode, name: str, *, region: str = "CN-GD", legal_name: str | None = None,
                   industry: str = "") -> HostedParticipant:
        """Host participant *name* on *running* through the admin API."""
        admin = self.client(running, running.admin_token)
        added = await admin.add_participant(name, legal_name=legal_name or f"{name.title()} Co.", region=region,
                                            industry=industry)
        return HostedParticipant(running, name, self.client(running, added["token"]), added["token"])

    async def restart(self, running: RunningNode) -> RunningNode:
        await running.node.stop()
        node = Node(running.data_dir)
        self._watch(node)
        await node.start()
        running.node = node
        return running

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()
        for running in reversed(self.nodes):
            await running.client.close()
            await running.node.stop()
        self.nodes.clear()


# -- Verified claims: real credentials between nodes, or fixed claims for socket-free tests --------------

Participant = RunningNode | HostedParticipant


async def vouch_region(issuer: Participant, holder: Participant, *, region: str | None = None,
                       verifiers: Iterable[Participant] = ()) -> dict[str, Any]:
    """*issuer* issues a region credential about *holder* (its configured region as far as ISO 3166-2 goes,
    ``CN-GD`` for ``CN-GD-GZ``, unless *region*), which the holder imports (a ``did:key`` holder names no
    endpoint to deliver to); each of *verifiers* trusts *issuer* for regions. A verifier counts the region once
    the holder has presented it in a handshake (the holder's ``verify_peer`` of the verifier). Returns the
    issued credential as the issuer's management API shows it, with its document."""
    region = region or "-".join(holder.participant.record.region.split("-")[:2])
    issued: dict[str, Any] = await issuer.client.issue_credential(holder.participant.did, "region",
                                                                  {"region": region})
    await holder.client.import_credential(issued["document"])
    for verifier in verifiers:
        await verifier.client.trust_issuer(issuer.participant.did, ["region"])
    return issued


#: The issuer :func:`peer_claims` names unless told otherwise.
REGISTRY_DID = "did:web:registry.example"
_FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def peer_claims(holder: str, *, region: str | None = None, spaces: Iterable[str | tuple[str, str]] = (),
                legal_name: str | None = None, credit_code: str | None = None, lei: str | None = None,
                levels: Iterable[str] = (), issuer: str = REGISTRY_DID, until: datetime = _FAR_FUTURE) -> PeerClaims:
    """``PeerClaims`` of *holder* as counted when *issuer*, a trusted issuer, vouches for each: its region,
    memberships of *spaces* (a space id, or (space id, role)), a legal entity (*legal_name* with a credit code
    and/or an LEI) and certification *levels*. For socket-free tests of what verified claims decide."""
    from connector.identity.claims import Certification, LegalEntity, Membership, Region
    from connector.identity.trust import Claim, PeerClaims

    def claim(value: Any, n: int) -> Claim[Any]:
        return Claim(value, issuer, f"urn:uuid:{holder}:{n}", until)

    memberships = tuple(claim(Membership(*((s, "member") if isinstance(s, str) else s)), i)
                        for i, s in enumerate(spaces))
    entity = None
    if credit_code is not None or lei is not None:
        entity = claim(LegalEntity(legal_name or "Peer Ltd", credit_code, lei), 100)
    return PeerClaims(
        holder=holder, memberships=memberships, legal_entity=entity,
        region=claim(Region(region), 200) if region is not None else None,
        certifications=tuple(claim(Certification(level, "TDS Connector", "1.0.0"), 300 + i)
                             for i, level in enumerate(levels)),
    )


class FixedClaims:
    """A ``claims_of`` source (``CatalogService(claims_of=…)``) that answers fixed claims per peer DID, for
    every participant or only for those in *participants*."""

    def __init__(self, *claims: PeerClaims, participants: Iterable[str] | None = None) -> None:
        self.claims: dict[str, PeerClaims] = {c.holder: c for c in claims}
        self.participants = None if participants is None else frozenset(participants)
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, participant_id: str, did: str) -> PeerClaims | None:
        self.asked.append((participant_id, did))
        if self.participants is not None and participant_id not in self.participants:
            return None
        return self.claims.get(did)


# -- DSP schema validation (tests only: needs the `test` extra's jsonschema) -----------------------------

SCHEMA_FILES = {
    "CatalogRequestMessage": "catalog/catalog-request-message-schema.json",
    "DatasetRequestMessage": "catalog/dataset-request-message-schema.json",
    "Catalog": "catalog/catalog-schema.json",
    "Dataset": "catalog/dataset-schema.json",
    "CatalogError": "catalog/catalog-error-schema.json",
    "ContractRequestMessage": "negotiation/contract-request-message-schema.json",
    "ContractOfferMessage": "negotiation/contract-offer-message-schema.json",
    "ContractAgreementMessage": "negotiation/contract-agreement-message-schema.json",
    "ContractAgreementVerificationMessage": "negotiation/contract-agreement-verification-message-schema.json",
    "ContractNegotiationEventMessage": "negotiation/contract-negotiation-event-message-schema.json",
    "ContractNegotiationTerminationMessage": "negotiation/contract-negotiation-termination-message-schema.json",
    "ContractNegotiation": "negotiation/contract-negotiation-schema.json",
    "ContractNegotiationError": "negotiation/contract-negotiation-error-schema.json",
    "TransferRequestMessage": "transfer/transfer-request-message-schema.json",
    "TransferStartMessage": "transfer/transfer-start-message-schema.json",
    "TransferSuspensionMessage": "transfer/transfer-suspension-message-schema.json",
    "TransferCompletionMessage": "transfer/transfer-completion-message-schema.json",
    "TransferTerminationMessage": "transfer/transfer-termination-message-schema.json",
    "TransferProcess": "transfer/transfer-process-schema.json",
    "TransferError": "transfer/transfer-error-schema.json",
}


def shared_dir() -> Path:
    """``tests/shared/`` in the repository: the DSP 2025-1 artifacts and the conformance data the tests read
    (kept in the repository so a clean clone tests without fetching anything)."""
    return Path(__file__).resolve().parents[1] / "tests" / "shared"


class DspValidator:
    """Validates a DSP message against the 2025-1 schema for its ``@type`` (with the ``#definitions/``
    fix from the artifacts' INDEX.md)."""

    def __init__(self, root: Path) -> None:
        import json

        from jsonschema import Draft201909Validator
        from referencing import Registry, Resource

        resources = []
        self._schemas: dict[str, Any] = {}
        for path in sorted(root.glob("*/*-schema.json")):
            text = path.read_text().replace('#definitions/', '#/definitions/')
            schema = json.loads(text)
            resources.append((schema["$id"], Resource.from_contents(schema)))
            self._schemas[str(path.relative_to(root))] = schema
        self._registry = Registry().with_resources(resources)
        self._validator_class = Draft201909Validator

    def policy_errors(self, policy: dict[str, Any]) -> list[str]:
        """Problems of an ODRL policy against the DSP policy schema (``contract-schema.json``)."""
        schema = self._schemas["negotiation/contract-schema.json"]
        validator = self._validator_class(schema, registry=self._registry)
        return [
            f"{list(e.absolute_path)}: {[c.message[:120] for c in (e.context or [])][-3:] or e.message[:200]}"
            for e in validator.iter_errors(policy)
        ]

    def validate(self, message: dict[str, Any], type_name: str | None = None) -> None:
        """Raise ``jsonschema.ValidationError`` if *message* is not valid for its type."""
        name = type_name or str(message.get("@type"))
        schema = self._schemas[SCHEMA_FILES[name]]
        self._validator_class(schema, registry=self._registry).validate(message)


_VALIDATOR: DspValidator | None = None


def dsp_validator() -> DspValidator:
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = DspValidator(shared_dir() / "dsp-2025-1")
    return _VALIDATOR


# -- nodes as subprocesses (crash tests, memory measurements, benchmarks) --------------------------------


class ProcessNode:
    """A node run as ``python -m connector serve --dir DIR`` in its own process (so that it can be killed
    with SIGKILL, restarted on the same ports, and its peak memory read from ``/proc``). *discovery* replaces
    its ``[discovery]`` section; *node_settings* override ``[node]`` fields."""

    def __init__(self, root: Path, name: str, *, discovery: DiscoverySection | None = None,
                 **node_settings: Any) -> None:
        self.data_dir = root / name
        result = init_node(self.data_dir, name=name, legal_name=f"{name.title()} Co.", port=free_port(),
                           management_port=free_port(), region="CN-GD", dev_mode=True)
        config = result.config
        if node_settings or discovery is not None:
            config = msgspec.structs.replace(config, node=msgspec.structs.replace(config.node, **node_settings),
                                             discovery=discovery or config.discovery)
            write_secret_text(self.data_dir / CONFIG_FILE, render_config(config))
        self.config = config
        self.token = result.token
        self.did = result.did
        self.client = ManagementClient(f"http://127.0.0.1:{config.node.management_port}", result.token)
        self.process: Any = None

    @classmethod
    def existing(cls, data_dir: Path) -> ProcessNode:
        """A node process for a data folder that already holds a node (a restored backup, for one)."""
        from connector.bootstrap import read_token
        from connector.config import load_config

        node = cls.__new__(cls)
        node.data_dir = data_dir
        node.config = load_config(data_dir)
        node.token = read_token(data_dir)
        node.did = ""
        node.client = ManagementClient(f"http://127.0.0.1:{node.config.node.management_port}", node.token)
        node.process = None
        return node

    @property
    def public_url(self) -> str:
        return self.config.public_url

    async def start(self, env: dict[str, str] | None = None, *, deadline_s: float = 20.0) -> None:
        import asyncio
        import os
        import sys
        import time

        import aiohttp

        await self.client.close()  # a restarted node: no pooled connection to the old process
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connector", "serve", "--dir", str(self.data_dir),
            env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        until = time.monotonic() + deadline_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < until:
                if self.process.returncode is not None:
                    raise RuntimeError(f"node {self.data_dir.name} exited with {self.process.returncode}")
                try:
                    async with session.get(f"{self.public_url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)  # ok-sleep: polling a subprocess's port with a deadline
        raise RuntimeError(f"node {self.data_dir.name} did not start within {deadline_s} s")

    def peak_rss_bytes(self) -> int:
        """The process's peak resident set (``VmHWM``), while it runs."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc (not Linux?)")

    async def exited(self, timeout_s: float) -> int:
        import asyncio

        return int(await asyncio.wait_for(self.process.wait(), timeout_s))

    async def kill(self) -> None:
        import signal

        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        import asyncio
        import signal

        await self.client.close()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                await self.kill()


# -- a load balancer in front of several processes of one node ---------------------------------------------

#: Headers that belong to one connection (RFC 9110 §7.6.1): a proxy does not pass them on. Content-Length is
#: passed on (the body goes on unchanged); Transfer-Encoding is the hop's own framing.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                          "te", "trailer", "transfer-encoding", "upgrade"})


class RoundRobinProxy:
    """A reverse proxy on 127.0.0.1 in front of several processes of one node, as a load balancer is in a
    deployment: each request goes to the next of :attr:`upstreams` (base URLs, ``http://127.0.0.1:PORT``) in turn,
    as the client sent it (method, path and query, headers with ``Host``, body), and the answer comes back as the
    upstream gave it (status, headers, body). Both bodies are streamed.

    Nothing a signature covers is rewritten, ``Host`` included: the node's ``public_url`` is the proxy's URL, and a
    request signed for it checks on whichever process takes it.

    An upstream that refuses the connection, or drops it before it answers, is skipped and the request goes to the
    next one (nginx's ``proxy_next_upstream error``): a process killed with SIGKILL loses no request, even one sent
    on a kept-alive connection to it. A request body of up to :attr:`replay_bytes` is kept to be sent again; a
    longer one is streamed, and moves on only if none of it was sent yet. No upstream answering: 502. An upstream
    that dies while its answer streams drops the client's connection (a short body is never passed on as whole).

    :attr:`counts` holds how many requests each upstream answered; :attr:`skipped`, how many it failed.
    :attr:`upstreams` may change while the proxy runs (and may be empty).
    """

    def __init__(self, upstreams: Iterable[str] = (), *, replay_bytes: int = 1024 * 1024) -> None:
        from collections import Counter

        self.upstreams: list[str] = list(upstreams)
        self.replay_bytes = replay_bytes
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.url = ""
        self._turn = 0
        self._runner: Any = None
        self._session: Any = None

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:*port* (0: a free one); returns the proxy's URL, ``http://127.0.0.1:PORT``."""
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            # No overall deadline (a stream or a long poll takes what it takes); a connection attempt is short.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            # Nothing added that the client did not send.
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        # The low-level server: the request target is taken as sent (no routing, no normalising of the path).
        self._runner = web.ServerRunner(web.Server(self._forward, auto_decompress=False, access_log=None))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _turn_order(self) -> list[str]:
        """The upstreams in the order this request tries them: from the next one in turn, round the list once."""
        upstreams = list(self.upstreams)
        if not upstreams:
            return []
        first = self._turn % len(upstreams)
        self._turn += 1
        return upstreams[first:] + upstreams[:first]

    async def _forward(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import web
        from yarl import URL

        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS]
        body = _ProxiedBody(request, self.replay_bytes)
        await body.read_ahead()
        failures: list[str] = []
        for upstream in self._turn_order():
            try:
                answer = await self._session.request(
                    request.method, URL(upstream.rstrip("/") + request.raw_path, encoded=True), headers=headers,
                    data=body.data(), allow_redirects=False)
            except aiohttp.ClientConnectionError as exc:
                self.skipped[upstream] += 1
                failures.append(f"{upstream}: {type(exc).__name__}: {exc}")
                if body.sent_unkept:  # part of a long body went to a process that is gone: it cannot go again
                    break
                continue
            self.counts[upstream] += 1
            async with answer:
                return await self._relay(request, answer)
        reason = "; ".join(failures) or "no upstream is configured"
        return web.Response(status=502, text=f"no upstream answered: {reason}\n")

    @staticmethod
    async def _relay(request: Any, answer: Any) -> Any:
        import aiohttp
        from aiohttp import web

        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for name, value in answer.headers.items():
            if name.lower() not in _HOP_HEADERS:
                response.headers.add(name, value)
        await response.prepare(request)
        try:
            async for piece in answer.content.iter_any():
                await response.write(piece)
        except (aiohttp.ClientError, ConnectionError) as exc:
            # The upstream died mid-answer: the client's connection is dropped, not ended as if the body were whole.
            raise ConnectionResetError(f"the upstream's answer ended early: {exc}") from exc
        await response.write_eof()
        return response


class _ProxiedBody:
    """A request's body as the proxy passes it on: kept whole when it is short (sent again as often as needed),
    else streamed once."""

    def __init__(self, request: Any, keep: int) -> None:
        self._request = request
        self._keep = keep
        self._head = b""
        self._whole = True
        #: Whether part of a body that is not kept has been handed to an upstream.
        self.sent_unkept = False

    async def read_ahead(self) -> None:
        if not self._request.body_exists:
            return
        length = self._request.content_length
        if length is not None and length > self._keep:  # known to be long: streamed from its first byte
            self._whole = False
            return
        head = bytearray()
        while len(head) <= self._keep:
            piece = await self._request.content.readany()
            if not piece:
                break
            head += piece
        else:
            self._whole = False
        self._head = bytes(head)

    def data(self) -> bytes | AsyncIterator[bytes] | None:
        if not self._request.body_exists:
            return None
        if self._whole:
            return self._head
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        self.sent_unkept = True
        yield self._head
        async for piece in self._request.content.iter_any():
            yield piece


# -- fakes for the layers below the services (socket-free tests) ------------------------------------------
#
# A service asks for what it uses of the layers below as a Protocol (connector.services.ports); these fakes
# implement them without a socket. FakeClock moves only when the test moves it; RecordingClient keeps every
# outbound request and answers it from canned answers, from a callable per URL prefix, or from an in-memory
# peer. NegotiationClock, NegotiationSent, NegotiationOutbound and FederationPeerClient, the names the
# negotiation, transfer and federation tests use, are these.


class FakeClock:
    """A clock that stands still until the test moves it, so that retries, deadlines and rate windows come due
    without anyone sleeping. One instant, three readings: called (or :attr:`now`), POSIX seconds, as the
    process shells take it; :meth:`utc`, the same instant as an aware ``datetime`` (the services that read
    dates); :meth:`monotonic`, seconds from an origin of its own that move by the same amounts (rate limits).
    It never goes back."""

    def __init__(self, start: float | datetime = 1_780_000_000.0, *, monotonic_start: float = 1000.0) -> None:
        self._wall = start.timestamp() if isinstance(start, datetime) else float(start)
        self._monotonic = float(monotonic_start)

    def __call__(self) -> float:
        return self._wall

    @property
    def now(self) -> float:
        """POSIX seconds. Setting it moves the clock forward to that instant."""
        return self._wall

    @now.setter
    def now(self, value: float) -> None:
        self.advance(value - self._wall)

    def utc(self) -> datetime:
        """Now as an aware UTC ``datetime``."""
        return datetime.fromtimestamp(self._wall, UTC)

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move every reading forward by *seconds* (not backwards: :class:`ValueError`)."""
        if seconds < 0:
            raise ValueError(f"a fake clock does not go back ({seconds:g} s)")
        self._wall += seconds
        self._monotonic += seconds


@dataclass(frozen=True)
class Sent:
    """One request a :class:`RecordingClient` was asked to make."""

    method: str
    url: str
    #: The JSON body of a request, the bytes of an upload (read to the end), or None.
    body: Any
    #: The DID whose key signed it (the caller a peer would verify), or None for an unsigned request.
    caller: str | None
    #: The signer's key id (a DID URL), or None.
    key_id: str | None = None
    #: The headers the caller gave (an upload's ``Content-Length`` added, as the real client sends it).
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: A stream read through the backend session (``BackendReader.stream(…, backend=True)``).
    backend: bool = False


@dataclass(frozen=True)
class Reply:
    """A :class:`RecordingClient`'s answer: a status and a body, a JSON value or bytes sent as they are. A
    streamed answer arrives in *pieces* when they are given (bytes, or an exception raised where it stands
    in the stream, as a connection that breaks off would), else as the body in one piece."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    pieces: Sequence[bytes | BaseException] | None = None

    def raw(self) -> bytes:
        """The body as bytes: bytes as given, anything else as JSON."""
        if isinstance(self.body, bytes | bytearray | memoryview):
            return bytes(self.body)
        return json.dumps(self.body).encode()

    def response(self, url: str) -> PeerResponse:
        """As the real client returns a whole (bounded) answer."""
        kind = "application/octet-stream" if isinstance(self.body, bytes | bytearray | memoryview) else (
            "application/json")
        return PeerResponse(self.status, {"Content-Type": kind, **self.headers}, self.raw(), url)

    def streamed(self) -> StreamedReply:
        """As the real client hands over a streamed answer."""
        if self.pieces is not None:
            pieces: Sequence[bytes | BaseException] = self.pieces
        else:
            pieces = [self.body] if isinstance(self.body, bytes) else [] if self.body is None else [self.raw()]
        return StreamedReply(self.status, dict(self.headers), StreamedBody(pieces))


class StreamedBody:
    """A body read as a stream, as the services read ``aiohttp.StreamReader`` (``readany``, ``readchunk``,
    ``read``, ``iter_chunked``), over pieces given up front; an exception among them is raised when it is
    reached."""

    def __init__(self, pieces: Iterable[bytes | BaseException]) -> None:
        self._pieces: deque[bytes | BaseException] = deque(pieces)

    async def readany(self) -> bytes:
        """The next piece; ``b""`` at the end."""
        while self._pieces:
            piece = self._pieces.popleft()
            if isinstance(piece, BaseException):
                raise piece
            if piece:
                return bytes(piece)
        return b""

    async def readchunk(self) -> tuple[bytes, bool]:
        """The next piece and False; an empty piece among them is ``(b"", True)``, where an HTTP chunk of a
        chunked body ended; ``(b"", False)`` at the end."""
        if self._pieces:
            piece = self._pieces.popleft()
            if isinstance(piece, BaseException):
                raise piece
            return (bytes(piece), False) if piece else (b"", True)
        return b"", False

    async def read(self, n: int = -1) -> bytes:
        """Up to *n* bytes (all that is left if *n* < 0)."""
        out = bytearray()
        while n < 0 or len(out) < n:
            piece = await self.readany()
            if not piece:
                break
            if 0 <= n < len(out) + len(piece):
                self._pieces.appendleft(piece[n - len(out):])
                piece = piece[:n - len(out)]
            out += piece
        return bytes(out)

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        while piece := await self.read(n):
            yield piece


@dataclass(frozen=True)
class StreamedReply:
    """A streamed answer (``ports.BackendResponse``; ``aiohttp.ClientResponse`` as far as it is read)."""

    status: int
    headers: Mapping[str, str]
    content: StreamedBody


class InMemoryPeer:
    """A peer reached without a socket: a :class:`RecordingClient` it is connected to hands every request
    under :attr:`base` to :meth:`answer`, with the rest of the URL, the body (JSON, or an upload's bytes) and
    the caller's DID. A subclass answers as the peer's routes would (see :class:`NegotiationPeer`)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    async def answer(self, method: str, path: str, body: Any, caller: str) -> Reply | tuple[int, Any]:
        raise NotImplementedError


#: How a route answers a request: a :class:`Reply` or ``(status, body)``, or an awaitable of one. It may
#: raise what the real client raises (``PeerError`` for a peer that cannot be reached).
Answer = Callable[[Sent], Any]


class RecordingClient:
    """The node's outbound client (``connector.net.client.PeerClient``) without a socket: every Protocol of it
    in ``connector.services.ports`` (requests, the guard's check, a JSON GET, a streamed GET, a streamed
    upload). Every call is kept in :attr:`sent`, in order, then answered by, first to match:

    1. a canned answer for its method and exact URL (:meth:`answer`);
    2. the route or in-memory peer with the longest URL prefix it is under (:meth:`route`, :meth:`connect`);
    3. else nobody is there: :class:`~connector.errors.PeerError` (unreachable), or, with
       *unreachable_status*, that status and a reason, as a proxy in front of a peer that is down answers.

    :attr:`before_answer`, if set, is awaited with each request before it is answered (e.g. to read what the
    sender had stored by then). A URL under a prefix given to :meth:`refuse` is refused by the outbound guard
    (:class:`~connector.errors.OutboundRefused`), in :meth:`check_target` and on every call."""

    def __init__(self, *, unreachable_status: int | None = None) -> None:
        self.sent: list[Sent] = []
        self.answers: dict[tuple[str, str], Reply] = {}
        self.routes: dict[str, Answer] = {}
        self.peers: dict[str, InMemoryPeer] = {}
        self.refused: dict[str, str] = {}
        self.unreachable_status = unreachable_status
        self.before_answer: Callable[[Sent], Awaitable[None]] | None = None

    # -- what it answers ------------------------------------------------------------------------------------

    def answer(self, method: str, url: str, body: Any = None, *, status: int = 200,
               headers: Mapping[str, str] | None = None, pieces: Sequence[bytes | BaseException] | None = None
               ) -> None:
        """Answer every *method* request to exactly *url* with *status* and *body* (JSON, or bytes); a stream
        gets *pieces* if given (see :class:`Reply`)."""
        self.answers[(method, url)] = Reply(status, body, dict(headers or {}), pieces)

    def route(self, prefix: str, answer: Answer) -> None:
        """Answer the requests under *prefix* (a URL; "" for all) by calling *answer* with each."""
        self.routes[prefix.rstrip("/")] = answer

    def connect(self, peer: InMemoryPeer) -> None:
        """Hand the requests under *peer*'s base to it."""
        self.peers[peer.base] = peer

        async def answer(sent: Sent) -> Any:
            return await peer.answer(sent.method, sent.url[len(peer.base):], sent.body, sent.caller or "")

        self.route(peer.base, answer)

    def refuse(self, prefix: str, reason: str = "the outbound guard refuses this address") -> None:
        """Let the outbound guard refuse every URL under *prefix*."""
        self.refused[prefix.rstrip("/")] = reason

    # -- what was sent --------------------------------------------------------------------------------------

    def messages(self, type_name: str | None = None) -> list[dict[str, Any]]:
        """The DSP messages sent (optionally of one ``@type``), in order."""
        return [s.body for s in self.sent if isinstance(s.body, dict)
                and (type_name is None or s.body.get("@type") == type_name)]

    def requests(self, method: str | None = None, prefix: str = "") -> list[Sent]:
        """The requests made (optionally with one method, or under a URL prefix), in order."""
        return [s for s in self.sent if (method is None or s.method == method) and _under(s.url, prefix)]

    # -- the outbound client's calls ------------------------------------------------------------------------

    def check_target(self, url: str, *, backend: bool = False) -> SplitResult:
        """The guard's early check of an address: refused under a prefix given to :meth:`refuse`."""
        for prefix, reason in self.refused.items():
            if _under(url, prefix):
                raise OutboundRefused(f"{url}: {reason}")
        return urlsplit(url)

    async def request(self, method: str, url: str, *, json_body: Any = None, signer: Any = None,
                      headers: dict[str, str] | None = None) -> PeerResponse:
        sent = await self._record(method, url, json_body, signer, headers)
        return (await self._reply(sent)).response(url)

    async def get_json(self, url: str, *, signer: Any = None) -> Any:
        resp = await self.request("GET", url, signer=signer)
        if resp.status != 200:
            raise PeerError(f"GET {url} answered {resp.status}: {resp.body[:200]!r}")
        return resp.json()

    @contextlib.asynccontextmanager
    async def stream(self, url: str, *, signer: Any = None, headers: dict[str, str] | None = None,
                     read_timeout_s: float | None = None, backend: bool = False) -> AsyncIterator[StreamedReply]:
        sent = await self._record("GET", url, None, signer, headers, backend=backend)
        yield (await self._reply(sent)).streamed()

    async def upload(self, url: str, body: AsyncIterable[bytes], length: int, *, signer: Any = None,
                     headers: dict[str, str] | None = None, read_timeout_s: float | None = None) -> PeerResponse:
        self.check_target(url)
        data = bytearray()
        async for piece in body:
            data += piece
        sent = await self._record("POST", url, bytes(data), signer, {**(headers or {}), "Content-Length": str(length)})
        return (await self._reply(sent)).response(url)

    # -- inside ---------------------------------------------------------------------------------------------

    async def _record(self, method: str, url: str, body: Any, signer: Any, headers: Mapping[str, str] | None,
                      *, backend: bool = False) -> Sent:
        self.check_target(url, backend=backend)
        key_id = str(signer.key_id) if signer is not None else None
        sent = Sent(method, url, body, key_id.split("#")[0] if key_id else None, key_id, dict(headers or {}),
                    backend)
        self.sent.append(sent)
        if self.before_answer is not None:
            await self.before_answer(sent)
        return sent

    async def _reply(self, sent: Sent) -> Reply:
        canned = self.answers.get((sent.method, sent.url))
        if canned is not None:
            return canned
        under = [prefix for prefix in self.routes if _under(sent.url, prefix)]
        if not under:
            if self.unreachable_status is None:
                raise PeerError(f"{sent.url} is unreachable")
            return Reply(self.unreachable_status, {"reason": ["the peer is not there"]})
        answer = self.routes[max(under, key=len)](sent)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer if isinstance(answer, Reply) else Reply(*answer)


def _under(url: str, prefix: str) -> bool:
    """Whether *url* is *prefix* or below it ("" is above every URL)."""
    return not prefix or url == prefix or (url.startswith(prefix) and url[len(prefix)] in "/?")


class FederationPeerClient(RecordingClient):
    """A :class:`RecordingClient` whose unknown URLs are unreachable (as a peer that is down would be), with
    the calls also as tuples (:attr:`calls`), as the federation tests read them."""

    @property
    def calls(self) -> list[tuple[str, str, Any, str | None]]:
        """(method, url, JSON body, key id of the signer or None), in order."""
        return [(s.method, s.url, s.body, s.key_id) for s in self.sent]


class FederationResolver:
    """A stand-in for the DID resolver: DID documents given up front; the DIDs asked for are kept."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        self.documents = {document["id"]: document for document in documents}
        self.asked: list[str] = []

    async def resolve(self, did: str, *, key_id: str | None = None) -> dict[str, Any]:
        from connector.errors import PeerError

        self.asked.append(did)
        if did not in self.documents:
            raise PeerError(f"the DID document of {did} could not be read")
        return self.documents[did]


#: The negotiation and transfer tests' names for the general fakes.
NegotiationClock = FakeClock
NegotiationSent = Sent


class NegotiationOutbound(RecordingClient):
    """A :class:`RecordingClient` that answers a URL no peer is connected for with *down_status* (503), as a
    proxy in front of a peer that is down would. The negotiation and transfer tests connect their in-memory DSP
    peers (:class:`NegotiationPeer`) to it."""

    def __init__(self, *, down_status: int = 503) -> None:
        super().__init__(unreachable_status=down_status)

    @property
    def down_status(self) -> int | None:
        return self.unreachable_status

    @down_status.setter
    def down_status(self, status: int | None) -> None:
        self.unreachable_status = status


class NegotiationPeer(InMemoryPeer):
    """An in-memory DSP peer: one participant with its own ``NegotiationService``, answering the negotiation
    paths under its DSP base as the protocol API does (``connector.http.dsp``): an opening message with 201
    and the ContractNegotiation, a later one with 200, ``GET …/negotiations/:pid`` with the process, and a
    refusal with its status and a ``ContractNegotiationError`` body naming the reason."""

    def __init__(self, participant: Any, service: Any) -> None:
        super().__init__(participant.dsp_base)
        self.participant = participant
        self.service = service

    async def answer(self, method: str, path: str, body: Any, caller: str) -> tuple[int, Any]:
        from connector.errors import TdsError
        from connector.protocol import messages as m
        from connector.protocol.negotiation import Kind

        kinds = {"request": (Kind.REQUEST, m.ContractRequestMessage), "offers": (Kind.OFFER, m.ContractOfferMessage),
                 "events": (Kind.ACCEPTED, m.ContractNegotiationEventMessage),
                 "agreement": (Kind.AGREEMENT, m.ContractAgreementMessage),
                 "agreement/verification": (Kind.VERIFICATION, m.ContractAgreementVerificationMessage),
                 "termination": (Kind.TERMINATION, m.ContractNegotiationTerminationMessage)}
        parts = path.strip("/").split("/", 2)
        try:
            if parts[0] != "negotiations" or len(parts) < 2:
                return 404, {"reason": [f"no route {path}"]}
            if method == "GET" and len(parts) == 2:
                record = await self.service.contracts.negotiation(self.participant.id, parts[1])
                if record is None or not self.service._is_party(record, caller):
                    return 404, {"reason": ["no such negotiation"]}
                return 200, self._process(record)
            if len(parts) == 2 and parts[1] in ("request", "offers"):
                kind, struct = kinds[parts[1]]
                record = await self.service.on_initial(self.participant, kind, m.decode(body, struct), caller)
                return 201, self._process(record)
            kind, struct = kinds[parts[2]]
            message: Any = m.decode(body, struct)
            if isinstance(message, m.ContractNegotiationEventMessage) and message.eventType == "FINALIZED":
                kind = Kind.FINALIZED
            record = await self.service.on_message(self.participant, parts[1], kind, message, caller)
            return 200, self._process(record)
        except TdsError as exc:
            return exc.status, {"@type": "ContractNegotiationError", "code": str(exc.status), "reason": [exc.message],
                            **getattr(exc, "dsp_fields", {})}

    @staticmethod
    def _process(record: Any) -> dict[str, Any]:
        from connector.protocol import messages as m

        return m.encode(m.ContractNegotiation(providerPid=record.provider_pid or "",
                                              consumerPid=record.consumer_pid or "", state=record.state))


class FullDisk:
    """The vault's disk as full, for tests. Once :meth:`install`-ed (with pytest's ``monkeypatch``), a partial file
    a transfer writes takes at most *room* bytes after its header; the next write fails with *error* (``ENOSPC``
    unless told otherwise) the way the kernel's would, through the vault's real writer, until :attr:`full` is set
    False (space freed). Counts the failed writes, and notes for each opening of a partial file whether it was
    there already (a file discarded after a failure is not)."""

    def __init__(self, room: int = 0, error: int = errno.ENOSPC) -> None:
        self.room, self.error = room, error
        self.full = True
        self.failures = 0
        #: For each opening of a partial file, in order: whether the file existed.
        self.opened: list[bool] = []

    def install(self, monkeypatch: Any) -> FullDisk:
        from connector.services import vault

        original = vault.open_partial

        def open_partial(path: Path, *args: Any, **kwargs: Any) -> Any:
            self.opened.append(path.exists())
            writer = original(path, *args, **kwargs)
            writer._fh = _FillingFile(writer._fh, self)
            return writer

        monkeypatch.setattr(vault, "open_partial", open_partial)
        return self


class _FillingFile:
    """A file on a :class:`FullDisk`: writes past its room fail while the disk is full."""

    def __init__(self, fh: Any, disk: FullDisk) -> None:
        self._fh, self._disk, self._written = fh, disk, 0

    def write(self, data: Any) -> int:
        import os

        disk = self._disk
        if disk.full and self._written + len(data) > disk.room:
            disk.failures += 1
            raise OSError(disk.error, os.strerror(disk.error))
        self._written += len(data)
        return int(self._fh.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class StoreConnection:
    """A connection to a node's store from outside the node (a test that edits rows behind its back): SQLite's
    file or the node's PostgreSQL schema, with SQLite's SQL either way (``execute``, ``commit``, ``close``)."""

    def __init__(self, data_dir: Path) -> None:
        from connector.bootstrap import store_location
        from connector.config import load_config
        from connector.store import pg

        location = store_location(data_dir, load_config(data_dir))
        self.postgres = isinstance(location, pg.PgLocation)
        if isinstance(location, pg.PgLocation):
            dialect = pg.Dialect()
            self._db: Any = pg.open_database(location, dialect)
            dialect.load(self._db.raw(), location.schema)
        else:
            import sqlite3

            self._db = sqlite3.connect(location)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, list(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self._db.executemany(sql, rows)

    def tables_with_column(self, column: str) -> list[str]:
        """The store's tables that have *column* (``participant_id``: every participant's rows)."""
        from connector.store.repository import tables_with_column

        return tables_with_column(self._db, column)

    def commit(self) -> None:
        if not self.postgres:  # PostgreSQL's connection commits each statement
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StoreConnection:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        # As ``with sqlite3.connect(…)``: what the block wrote is committed unless it raised (PostgreSQL's
        # connection has committed each statement already), and the connection is closed.
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.close()


def store_connection(data_dir: Path) -> StoreConnection:
    """:class:`StoreConnection` to the store of the node in *data_dir*."""
    return StoreConnection(data_dir)
