"""The node: the composition root that wires config, keys, store, services and the two listeners.

It builds the services (the vault, :mod:`connector.services.vault`, among them) and the listeners, and
starts and stops them in order. Besides the wiring it still holds the registry of hosted participants
(loading, adding and removing them)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from connector import filemodes
from connector.bootstrap import DB_FILE, keys_dir, new_participant_keys, new_token, node_key, participant_did
from connector.config import Config, load_config
from connector.errors import ConfigError, Conflict, NotFound
from connector.http import dataplane, dsp, management, openapi, public
from connector.http.auth import PeerAuth, signed_request_middleware
from connector.http.middleware import error_middleware
from connector.http.server import Runner
from connector.http.tls import client_context, server_context
from connector.identity.keys import ParticipantKeys, load_keys
from connector.identity.resolver import DidResolver
from connector.logging import get_logger
from connector.metrics import Metrics
from connector.net.client import PeerClient
from connector.net.guard import PUBLIC, Listener, OutboundPolicy
from connector.participant import ParticipantRuntime
from connector.ratelimit import RateLimiter
from connector.services import addresses, legacy_files
from connector.services.admission import Admission
from connector.services.catalog import CatalogService
from connector.services.federation import FederationService
from connector.services.negotiation import NegotiationService
from connector.services.receipts import ReceiptService
from connector.services.transfer import TransferService
from connector.services.usage import UsageService
from connector.services.vault import Vault, vault_key
from connector.store.db import Store
from connector.store.repository import ContractRepository, Participant, SqliteRepository, TransferRepository
from connector.store.usage import UsageRepository

if TYPE_CHECKING:
    import sqlite_utils

    from connector.conformance import ConformanceMode

log = get_logger(component="node")


class Node:
    def __init__(self, data_dir: Path, config: Config | None = None) -> None:
        self.data_dir = data_dir
        self.config = config or load_config(data_dir)
        self.metrics = Metrics()
        self.store = Store(data_dir / DB_FILE)
        self.repo = SqliteRepository(self.store)
        self.contracts = ContractRepository(self.store)
        self.transfers_repo = TransferRepository(self.store)
        node_cfg = self.config.node
        self.policy = OutboundPolicy.build(node_cfg.dev_mode, node_cfg.trusted_networks, self.config.public_url)
        self.client = PeerClient(
            self.policy,
            timeout_s=node_cfg.outbound_timeout_s,
            max_redirects=node_cfg.outbound_max_redirects,
            max_response_bytes=node_cfg.outbound_max_response_bytes,
            ssl_context=client_context(node_cfg.tls_ca),
        )
        self.participants: dict[str, ParticipantRuntime] = {}
        self._by_id: dict[str, ParticipantRuntime] = {}
        self._by_did: dict[str, ParticipantRuntime] = {}
        self._adding = asyncio.Lock()
        #: Fair use: management requests per participant token, DSP requests per calling peer.
        self.management_limit = RateLimiter(node_cfg.management_rate_per_s, node_cfg.management_burst)
        self.dsp_limit = RateLimiter(node_cfg.dsp_rate_per_s, node_cfg.dsp_burst)
        #: Who is a known peer of each participant; the budget all unknown peers share.
        self.admission = Admission(
            self.contracts, self.config.dsp, self.dsp_limit,
            stuck_after_s=min(node_cfg.delivery_timeout_s, node_cfg.negotiation_timeout_s),
            static_caller=self.conformance_caller)
        self.resolver = DidResolver(self.client, dev_mode=node_cfg.dev_mode, local=self._local_did_document)
        self.federation = FederationService(self.client, self.resolver, self.repo)
        self.catalog = CatalogService(self.contracts, self.repo, self.config.export_control)
        self.negotiations = NegotiationService(
            self.contracts, self.client, participant_by_id=self.participant_by_id, resolver=self.resolver,
            dsp_base_of=self.federation.dsp_base_of, verify_peer=self.federation.verify_peer,
            admit=self.admission.admit_negotiation, ended=self.admission.ended, learn=self.admission.learn,
            peer_facts=self.catalog.peer_facts, export_rules=self.config.export_control,
            conformance_caller=self.conformance_caller, delivery_timeout_s=node_cfg.delivery_timeout_s,
            negotiation_timeout_s=node_cfg.negotiation_timeout_s)
        self.usage_log = UsageRepository(self.store)
        # The vault and the receipts are built below: reached through the node when first used.
        self.usage = UsageService(
            self.usage_log, self.config.usage, participant_by_id=self.participant_by_id,
            destroy_data=lambda p, agreement_id: self.vault.destroy_agreement_data(p, agreement_id),
            logged=lambda participant_id, agreement_id: self.receipts.notify(participant_id, agreement_id))
        self.receipts = ReceiptService(
            self.usage_log, self.contracts, self.usage, self.client, self.resolver,
            participant_by_id=self.participant_by_id, peer_facts=self.catalog.peer_facts,
            destroy_data=lambda p, agreement_id: self.vault.destroy_agreement_data(p, agreement_id),
            receipts_overdue_s=node_cfg.receipts_overdue_s)
        #: Received data, sealed at rest: each agreement's under its own key (stopping transfers before deleting).
        self.vault = Vault(data_dir, key_of=vault_key,
                           stop_receiving=lambda p, agreement, why: self.transfers.stop_receiving(p, agreement, why))
        self.transfers = TransferService(
            self.transfers_repo, self.contracts, self.client, self.vault, participant_by_id=self.participant_by_id,
            resolver=self.resolver, dsp_base_of=self.federation.dsp_base_of, peer_facts=self.catalog.peer_facts,
            data_dir=data_dir, data_roots=self.config.data_roots, export_rules=self.config.export_control,
            encrypt_transfers=node_cfg.encrypt_transfers, conformance_caller=self.conformance_caller,
            delivery_timeout_s=node_cfg.delivery_timeout_s, start_timeout_s=node_cfg.transfer_start_timeout_s,
            stall_timeout_s=node_cfg.transfer_stall_timeout_s, token_ttl_s=node_cfg.transfer_token_ttl_s,
            chunk_retries=node_cfg.transfer_chunk_retries, vault_quota_bytes=node_cfg.vault_quota_bytes)
        #: Conformance mode only: callers accepted by a static Authorization header instead of a signature.
        self.conformance_callers: frozenset[str] = frozenset()
        # Conformance mode (a test fixture for the DSP compatibility kit): only with a [conformance] section.
        self.conformance: ConformanceMode | None = None
        if self.config.conformance is not None:
            from connector.conformance import ConformanceMode

            self.conformance = ConformanceMode(self, self.config.conformance)
        self._runners: list[web.AppRunner] = []
        self.public_port: int | None = None
        self.management_port: int | None = None
        self.started_at: float | None = None

    # -- participants --------------------------------------------------------------------------------

    def first_participant(self) -> ParticipantRuntime | None:
        return next(iter(self.participants.values()), None)

    def participant_by_id(self, participant_id: str) -> ParticipantRuntime | None:
        return self._by_id.get(participant_id)

    def conformance_caller(self, caller: str) -> bool:
        return caller in self.conformance_callers

    def _local_did_document(self, did: str) -> dict[str, object] | None:
        found = self._by_did.get(did)
        return found.did_document() if found is not None else None

    def _serve_participant(self, record: Participant, keys: ParticipantKeys) -> ParticipantRuntime:
        runtime = ParticipantRuntime(record, keys, self.config.public_url)
        # Its own files folder: the only place in the data folder its assets may name (services.addresses).
        filemodes.make_dir(self.transfers.confinement(runtime).own)
        self.participants[record.name] = runtime
        self._by_id[record.id] = runtime
        self._by_did[record.did] = runtime
        self.metrics.participants.set(len(self.participants))
        return runtime

    async def add_participant(
        self, name: str, *, legal_name: str, region: str, industry: str = "", contact: str = "",
        did: str | None = None,
    ) -> tuple[ParticipantRuntime, str]:
        """Host a new participant: keys sealed with the node key, its DID (a did:web under this node unless
        it brings one), a first management token (returned once). Served at once, without a restart."""
        async with self._adding:
            if name in self.participants or await self.repo.participant_by_name(name) is not None:
                raise Conflict(f"participant {name!r} already exists", path="name")
            if (keys_dir(self.data_dir, name)).exists():
                raise Conflict(f"keys for {name!r} already exist in the data folder", path="name")
            if did is not None and did in self._by_did:
                raise Conflict(f"{did} is already hosted here", path="did")
            keys = await asyncio.to_thread(new_participant_keys, self.data_dir, name)
            own_did = participant_did(self.config, keys, name, "web")
            now = datetime.now(UTC).isoformat(timespec="seconds")
            record = Participant(id=name, name=name, did=did or own_did, legal_name=legal_name, region=region,
                                 industry=industry, contact=contact, created_at=now,
                                 brought_did=did is not None and did != own_did)
            token = new_token()
            try:
                await self.repo.add_participant(record, first_token=token)
            except BaseException as exc:
                # Not hosted after all: its keys must not block a later attempt under the same name.
                await asyncio.to_thread(shutil.rmtree, keys_dir(self.data_dir, name), True)
                if isinstance(exc, sqlite3.IntegrityError):
                    raise Conflict(f"participant {name!r} or DID {record.did} already exists", path="name") from exc
                raise
            runtime = self._serve_participant(record, keys)
        log.info("participant added", participant=name, did=record.did)
        return runtime, token

    async def remove_participant(self, name: str) -> dict[str, object]:
        """Stop hosting participant *name* and delete everything the node holds of it: its rows in every
        table that has a ``participant_id`` (tokens, catalog, negotiations, agreements, transfers, usage
        log, receipts …), its keys, its data root ``files/NAME/`` and its vault folder. The node's own
        participant (the one ``tds init`` made) cannot be removed. Irreversible: the participant's DID
        document, endpoints and tokens are gone at once. Returns what was removed."""
        async with self._adding:
            runtime = self.participants.get(name)
            if runtime is None:
                raise NotFound(f"no participant {name!r} is hosted here")
            if name == self.config.participant.name or runtime is self.first_participant():
                raise Conflict(f"{name!r} is the node's own participant and cannot be removed", path="name")
            # Unhosted first: from here on its endpoints answer 404, and no timer or delivery of its
            # processes finds it any more.
            del self.participants[name]
            self._by_id.pop(runtime.id, None)
            self._by_did.pop(runtime.did, None)
            self.resolver.forget(runtime.did)
            self.metrics.participants.set(len(self.participants))
            for record in await self.contracts.all_active_negotiations():
                if record.participant_id == runtime.id:
                    self.admission.ended(record.participant_id, record.id)  # its places go back to strangers
            self.admission.forget(runtime.id)  # a participant added again under this name starts unknown to all
            self.negotiations.forget(runtime.id)
            self.receipts.forget(runtime.id)
            await self.transfers.stop_all(runtime.id)
            rows = await self.store.write(lambda db: _delete_participant_rows(db, runtime.id), durable=True)
            # Its own files/NAME/ only: a folder the operator assigned it in [data_roots] is the operator's.
            folders = [keys_dir(self.data_dir, name), self.data_dir / addresses.FILES / name,
                       self.vault.participant_dir(name)]
            removed = [str(f.relative_to(self.data_dir)) for f in folders if f.exists()]
            for folder in folders:
                # The name passed NAME_RE when it was added (no '/', no '..'): still, never leave the folder.
                if folder.resolve().is_relative_to(self.data_dir.resolve()):
                    await asyncio.to_thread(shutil.rmtree, folder, True)
        log.info("participant removed", participant=name, did=runtime.did, rows=rows, folders=removed)
        return {"name": name, "did": runtime.did, "removedRows": rows, "removedFolders": removed}

    async def _load_participants(self) -> None:
        records = await self.repo.participants()
        if not records:
            raise ConfigError(f"the database in {self.data_dir} has no participant (was `tds init` run?)")
        try:
            sealing_key = node_key(self.data_dir)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"node key: {exc}") from exc
        for record in records:
            try:
                keys = load_keys(keys_dir(self.data_dir, record.name), sealing_key)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"keys of participant {record.name!r}: {exc}") from exc
            if record.did.startswith("did:web:") and not record.brought_did:
                expected = participant_did(self.config, keys, record.name, "web")
                if expected != record.did:
                    raise ConfigError(
                        f"participant {record.name!r} has DID {record.did} but node.public_url gives {expected}; "
                        "a did:web moves with the public URL",
                        path="node.public_url",
                    )
            self._serve_participant(record, keys)

    # -- lifecycle -----------------------------------------------------------------------------------

    def public_app(self) -> web.Application:
        participant_named = self.participants.get  # the live registry: participants added later are served
        auth = PeerAuth(participant_named, self.resolver, self.repo, self.admission, self.config.public_url,
                        self.metrics.signature_failures, self.config.conformance)
        app = web.Application(
            middlewares=[error_middleware("public", self.metrics.requests_total), signed_request_middleware(auth)],
            client_max_size=self.config.node.max_request_bytes,
        )
        app.add_routes(public.routes(public.PublicSite(
            participant_named, self.first_participant, self.metrics.render, self.federation, self.receipts)))
        app.add_routes(dsp.routes(dsp.DspSite(
            participant_named, self.catalog, self.contracts, self.negotiations, self.transfers, self.transfers_repo,
            self.conformance_caller, self.config.public_url)))
        app.add_routes(dataplane.routes(dataplane.DataPlaneSite(
            participant_named, auth, self.transfers_repo, self.transfers, self.metrics.signature_failures)))
        if self.conformance is not None:
            app.add_routes(self.conformance.routes())
        return app

    def management_app(self) -> web.Application:
        app = web.Application(
            middlewares=[error_middleware("management", self.metrics.requests_total),
                         management.token_middleware(self)],
            client_max_size=self.config.node.max_request_bytes,
        )
        table = management.routes(self)
        app.add_routes([web.route(r.method, management.PREFIX + r.path, r.handler) for r in table])
        spec: dict[str, object] = {}

        async def openapi_json(_: web.Request) -> web.Response:
            if not spec:  # built on first request: start-up stays fast
                spec.update(openapi.document(table, max_request_bytes=self.config.node.max_request_bytes))
            return web.json_response(spec)

        async def docs(_: web.Request) -> web.Response:
            return web.Response(text=openapi.DOCS_HTML, content_type="text/html")

        app.add_routes([web.get(f"{management.PREFIX}/openapi.json", openapi_json),
                        web.get(f"{management.PREFIX}/docs", docs)])
        return app

    async def start(self) -> None:
        started = time.perf_counter()
        cfg = self.config.node
        # Before anything is opened: a bad certificate or key fails the start cleanly.
        tls = server_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        # What the node writes is its own alone, whatever umask it was started with; a folder made before
        # that (or copied without its modes) is narrowed first, before the keys are read.
        filemodes.restrict_umask()
        loosened = await asyncio.to_thread(filemodes.tighten, self.data_dir)
        if loosened:
            log.warning("data folder was readable by other local users; modes narrowed to 0600/0700",
                        count=len(loosened), paths=loosened[:20])
        await self.store.open()
        try:
            await self._load_participants()
            await legacy_files.move_into_own_roots(self.participants.values(), self.contracts,
                                                   self.transfers.confinement, self.data_dir / addresses.FILES)
            await self.vault.seal_unsealed(self.participants.values(), self.contracts.agreement_ids)
            if self.conformance is not None:
                await self.conformance.seed()
            await self.admission.load()
            self.public_port = await self._serve("public", self.public_app(), cfg.host, cfg.port, tls)
            self.management_port = await self._serve("management", self.management_app(), cfg.management_host,
                                                     cfg.management_port)
            # Before anything goes out: no callback or data address may lead back into these (but the
            # public one, for peer calls).
            self.client.listening_on(Listener(PUBLIC, cfg.host, self.public_port),
                                     Listener("management", cfg.management_host, self.management_port))
            self.started_at = time.time()
            await self.negotiations.resume()
            await self.receipts.resume()
            await self.usage.start()
            await self.transfers.resume()
        except BaseException:
            # A start that fails half-way (a port in use, a bad key) leaves nothing open behind it.
            self.started_at = time.time()
            await self.stop()
            raise
        log.info(
            "node started",
            public=f"{'https' if tls else 'http'}://{cfg.host}:{self.public_port}", public_url=self.config.public_url,
            management=f"http://{cfg.management_host}:{self.management_port}",
            participants=[p.did for p in self.participants.values()], dev_mode=cfg.dev_mode,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _serve(self, listener: str, app: web.Application, host: str, port: int,
                     tls: ssl.SSLContext | None = None) -> int:
        # Runner: requests aiohttp's parser refuses are answered and logged without quoting them.
        runner = Runner(app, listener=listener, requests_total=self.metrics.requests_total, access_log=None,
                        handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=tls)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runners.append(runner)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self.started_at is None:
            return
        self.started_at = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.negotiations.close()
        await self.transfers.close()
        await self.receipts.close()
        await self.usage.close()
        await self.admission.close()
        await self.client.close()
        await self.store.close()
        log.info("node stopped")

    @property
    def management_url(self) -> str:
        return f"http://{self.config.node.management_host}:{self.management_port}"


def _delete_participant_rows(db: sqlite_utils.Database, participant_id: str) -> int:
    """Delete a participant's rows from every table with a ``participant_id`` column, then the participant
    itself; return how many rows went. The tables are read from the schema, so a table a later migration
    adds is included without a change here."""
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()]
    removed = 0
    for table in tables:
        columns = {row[1] for row in db.execute(f'PRAGMA table_info("{table}")').fetchall()}
        if "participant_id" in columns:
            removed += db.execute(f'DELETE FROM "{table}" WHERE participant_id = ?', [participant_id]).rowcount
    removed += db.execute("DELETE FROM participants WHERE id = ?", [participant_id]).rowcount
    return removed


async def serve(data_dir: Path) -> None:
    """Run a node until SIGTERM or SIGINT, then shut down gracefully."""
    node = Node(data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()
