"""Helpers for tests and examples: start real nodes on free loopback ports and clean them up."""

from __future__ import annotations

import errno
import shutil
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from connector.bootstrap import init_node, write_secret_text
from connector.client import ManagementClient
from connector.config import CONFIG_FILE, ConformanceSection, DspSection, parse_config, render_config
from connector.node import Node


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

    @property
    def participant(self) -> Any:
        first = self.node.first_participant()
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
        return self.host.node.participants[self.name]

    @property
    def public_url(self) -> str:
        """The participant's own URL (``…/participants/NAME``): what a peer is given to reach it."""
        return str(self.participant.base_url)


class NodeFactory:
    """Start nodes in the current event loop; :meth:`close` stops every one of them.

    With ``validate=True`` every DSP message a node sends, and every DSP body it receives in answer, is
    checked against the DSP 2025-1 schemas; the problems are collected in :attr:`invalid`.
    """

    def __init__(self, root: Path, *, validate: bool = True) -> None:
        self.root = root
        self.nodes: list[RunningNode] = []
        self.validate = validate
        self.invalid: list[str] = []
        self.sent: list[dict[str, Any]] = []
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
                    dsp: DspSection | None = None, **node_settings: Any) -> RunningNode:
        """Initialise and start a node; *node_settings* override ``[node]`` config fields, *dsp* replaces the
        ``[dsp]`` section and *conformance* adds a ``[conformance]`` section (all written to its config file
        and read back). With *https* the public URL is ``https://127.0.0.1:PORT`` (give ``tls_cert`` and
        ``tls_key`` too)."""
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
            if node_settings or conformance is not None or dsp is not None:
                config = msgspec.structs.replace(config, node=msgspec.structs.replace(config.node, **node_settings),
                                                 conformance=conformance, dsp=dsp or config.dsp)
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
                shutil.rmtree(data_dir)
        running = RunningNode(node, ManagementClient(node.management_url, result.token), result.token, data_dir,
                              result.admin_token)
        self.nodes.append(running)
        return running

    def client(self, running: RunningNode, token: str) -> ManagementClient:
        """A management client on *running* with *token* (closed by :meth:`close`)."""
        client = ManagementClient(running.node.management_url, token)
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
    with SIGKILL, restarted on the same ports, and its peak memory read from ``/proc``)."""

    def __init__(self, root: Path, name: str, **node_settings: Any) -> None:
        self.data_dir = root / name
        result = init_node(self.data_dir, name=name, legal_name=f"{name.title()} Co.", port=free_port(),
                           management_port=free_port(), region="CN-GD", dev_mode=True)
        config = result.config
        if node_settings:
            config = msgspec.structs.replace(config, node=msgspec.structs.replace(config.node, **node_settings))
            write_secret_text(self.data_dir / CONFIG_FILE, render_config(config))
        self.config = config
        self.token = result.token
        self.did = result.did
        self.client = ManagementClient(f"http://127.0.0.1:{config.node.management_port}", result.token)
        self.process: Any = None

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


class FederationPeerClient:
    """A recording stand-in for the node's outbound client (``PeerClient.request`` and ``get_json``): canned
    JSON answers by method and URL; every call is kept in :attr:`calls`. A URL without an answer is
    unreachable (:class:`~connector.errors.PeerError`), as a peer that is down would be."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        #: (method, url, JSON body, key id of the signer or None), in order.
        self.calls: list[tuple[str, str, Any, str | None]] = []

    def answer(self, method: str, url: str, body: Any, *, status: int = 200) -> None:
        self.answers[(method, url)] = (status, body)

    async def request(self, method: str, url: str, *, json_body: Any = None, signer: Any = None,
                      headers: dict[str, str] | None = None) -> Any:
        import json

        from connector.errors import PeerError
        from connector.net.client import PeerResponse

        self.calls.append((method, url, json_body, signer.key_id if signer is not None else None))
        if (method, url) not in self.answers:
            raise PeerError(f"{url} is unreachable")
        status, body = self.answers[(method, url)]
        return PeerResponse(status, {"Content-Type": "application/json"}, json.dumps(body).encode(), url)

    async def get_json(self, url: str, *, signer: Any = None) -> Any:
        from connector.errors import PeerError

        resp = await self.request("GET", url, signer=signer)
        if resp.status != 200:
            raise PeerError(f"GET {url} answered {resp.status}: {resp.body[:200]!r}")
        return resp.json()


class FederationResolver:
    """A stand-in for the DID resolver: DID documents given up front; the DIDs asked for are kept."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        self.documents = {document["id"]: document for document in documents}
        self.asked: list[str] = []

    async def resolve(self, did: str) -> dict[str, Any]:
        from connector.errors import PeerError

        self.asked.append(did)
        if did not in self.documents:
            raise PeerError(f"the DID document of {did} could not be read")
        return self.documents[did]


class NegotiationClock:
    """A fake clock for the process shells (POSIX seconds): it stands still until the test moves it, so
    retries and deadlines come due without anyone sleeping."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class NegotiationSent:
    """One request a :class:`NegotiationOutbound` was asked to send."""

    method: str
    url: str
    body: Any
    #: The DID whose key signed it (the caller a peer would verify), or None for an unsigned request.
    caller: str | None


class NegotiationOutbound:
    """A recording outbound client (``connector.services.ports.OutboundClient``) that opens no socket.
    Every request is kept in :attr:`sent`, then answered by the in-memory peer whose DSP base the URL is
    under (:meth:`connect`), or with *down_status* (503) when no peer is there. :attr:`before_answer`, if
    set, is awaited with each request before it is answered (e.g. to read what the sender had stored)."""

    def __init__(self, *, down_status: int = 503) -> None:
        self.sent: list[NegotiationSent] = []
        self.peers: dict[str, NegotiationPeer] = {}
        self.down_status = down_status
        self.before_answer: Callable[[NegotiationSent], Awaitable[None]] | None = None

    def connect(self, peer: NegotiationPeer) -> None:
        self.peers[peer.base] = peer

    def messages(self, type_name: str | None = None) -> list[dict[str, Any]]:
        """The DSP messages sent (optionally of one ``@type``), in order."""
        return [s.body for s in self.sent if isinstance(s.body, dict)
                and (type_name is None or s.body.get("@type") == type_name)]

    def check_target(self, url: str, *, backend: bool = False) -> Any:
        from urllib.parse import urlsplit

        return urlsplit(url)

    async def request(self, method: str, url: str, *, json_body: Any = None, signer: Any = None,
                      headers: dict[str, str] | None = None) -> Any:
        import json

        from connector.net.client import PeerResponse

        caller = str(signer.key_id).split("#")[0] if signer is not None else None
        sent = NegotiationSent(method, url, json_body, caller)
        self.sent.append(sent)
        if self.before_answer is not None:
            await self.before_answer(sent)
        peer = next((p for base, p in self.peers.items() if url.startswith(f"{base}/")), None)
        if peer is None:
            body: Any = {"reason": ["the peer is not there"]}
            status = self.down_status
        else:
            status, body = await peer.answer(method, url[len(peer.base):], json_body, caller or "")
        return PeerResponse(status, {"Content-Type": "application/json"}, json.dumps(body).encode(), url)


class NegotiationPeer:
    """An in-memory DSP peer: one participant with its own ``NegotiationService``, answering the negotiation
    paths under its DSP base as the protocol API does (``connector.http.dsp``): an opening message with 201
    and the ContractNegotiation, a later one with 200, ``GET …/negotiations/:pid`` with the process, and a
    refusal with its status and a ``ContractNegotiationError`` body naming the reason."""

    def __init__(self, participant: Any, service: Any) -> None:
        self.participant = participant
        self.service = service
        self.base: str = participant.dsp_base

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
