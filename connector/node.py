"""The node: the composition root that wires config, keys, store, services and the two listeners.

It builds the stores, the outbound client and the services, each given only what it uses, hands the
listeners' routes the services they call, and starts and stops everything in order. It holds no domain
code: the hosted participants are :mod:`connector.services.participants`, received data is
:mod:`connector.services.vault`, and so on (README, "Layout")."""

from __future__ import annotations

import asyncio
import functools
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connector import filemodes
from connector.bootstrap import store_location
from connector.config import Config, DiscoverySection, load_config, management_url_of
from connector.errors import SchemaVersionError, StorageError
from connector.http import public
from connector.http.auth import PeerAuth, signed_request_middleware
from connector.http.middleware import error_middleware
from connector.http.server import LazyRoutes, Runner, lazy_middleware
from connector.http.tls import client_context, management_server_context, server_context
from connector.identity.resolver import DidResolver
from connector.logging import get_logger, handle_loop_exceptions
from connector.metrics import LoopLag, Metrics, software_version
from connector.net.client import STREAM_BUFFER, PeerClient
from connector.net.guard import PUBLIC, Listener, OutboundPolicy
from connector.participant import ParticipantRuntime
from connector.ratelimit import RateLimiter
from connector.services import addresses, legacy_files, receiver, sender
from connector.services.admission import Admission
from connector.services.catalog import CatalogService
from connector.services.directory import Directory
from connector.services.federation import FederationService
from connector.services.gossip import Gossip
from connector.services.health import Health
from connector.services.leases import Leases
from connector.services.negotiation import NegotiationService
from connector.services.participants import ParticipantRegistry
from connector.services.receipts import ReceiptService
from connector.services.search import SearchService, provider_of
from connector.services.settlement import SettlementService, owes_statements
from connector.services.tokens import TokenService
from connector.services.transfer import Movers, TransferService
from connector.services.usage import UsageService, held_claims_of
from connector.services.vault import Vault, vault_keys
from connector.store import stats
from connector.store.catalog_cache import CatalogCache, Provider
from connector.store.db import Store
from connector.store.directory import DirectoryRepository
from connector.store.records import AgreementRecord
from connector.store.repository import ContractRepository, SqliteRepository, TransferRepository
from connector.store.sandbox import offers_tables
from connector.store.statements import StatementRepository
from connector.store.usage import UsageRepository

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

    from connector.conformance import ConformanceMode
    from connector.http.management import Route
    from connector.services.credentials import CredentialService, Opening
    from connector.services.publishing import Publishing
    from connector.services.sandbox import SandboxService

log = get_logger(component="node")
#: Where the web console is served on the management listener (``connector.http.console.view.BASE``).
CONSOLE_PREFIX = "/console"
#: Where the hosted participants' own routes are served on the public listener.
PARTICIPANTS_PREFIX = "/participants"
#: Where the management API is served on the management listener (``connector.http.management.PREFIX``), and its
#: metrics.
MANAGEMENT_PREFIX = "/api/management/v1"
METRICS_PATH = "/metrics"
#: Seconds between crawls of the peers' catalogs in dev mode when ``[discovery]`` leaves it at its default.
DEV_CRAWL_INTERVAL_S = 5.0
#: Seconds between gossip rounds in dev mode when ``[discovery]`` leaves it at its default.
DEV_GOSSIP_INTERVAL_S = 3.0


class Node:
    def __init__(self, data_dir: Path, config: Config | None = None) -> None:
        self.data_dir = data_dir
        self.config = config or load_config(data_dir)
        self.metrics = Metrics()
        self.store = Store(store_location(data_dir, self.config), commit_seconds=self.metrics.commit_took)
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
            failed=self.metrics.peer_failed,
        )
        #: The hosted participants; a removal deletes its own files and vault besides its keys and rows.
        self.participants = ParticipantRegistry(
            data_dir, self.config, self.repo, counted=self.metrics.participants.set,
            folders_of=lambda name: [data_dir / addresses.FILES / name, self.vault.participant_dir(name)])
        self.participant_by_id = self.participants.by_id
        #: Fair use: management requests per participant token, DSP requests per calling peer.
        self.management_limit = RateLimiter(node_cfg.management_rate_per_s, node_cfg.management_burst)
        self.dsp_limit = RateLimiter(node_cfg.dsp_rate_per_s, node_cfg.dsp_burst)
        #: Who is a known peer of each participant; the budget all unknown peers share.
        self.admission = Admission(
            self.contracts, self.config.dsp, self.dsp_limit,
            stuck_after_s=min(node_cfg.delivery_timeout_s, node_cfg.negotiation_timeout_s),
            static_caller=self.conformance_caller)
        self.resolver = DidResolver(self.client, dev_mode=node_cfg.dev_mode, local=self.participants.local_did_document)
        # Handshakes carry presentations of credentials both ways (the credentials service, built when first used).
        self.federation = FederationService(self.client, self.resolver, self.repo,
                                            credentials=_CredentialsWhenUsed(lambda: self.credentials))
        self.catalog = CatalogService(
            self.contracts, self.repo, self.config.export_control,
            claims_of=lambda participant_id, did: self.credentials.claims_of(participant_id, did))
        self.negotiations = NegotiationService(
            self.contracts, self.client, participant_by_id=self.participant_by_id, resolver=self.resolver,
            dsp_base_of=self.federation.dsp_base_of, verify_peer=self.federation.verify_peer,
            admit=self.admission.admit_negotiation, ended=self.admission.ended, learn=self._agreement_in_force,
            peer_facts=self.catalog.peer_facts, dataset_id=self.catalog.dataset_id,
            export_rules=self.config.export_control,
            conformance_caller=self.conformance_caller, delivery_timeout_s=node_cfg.delivery_timeout_s,
            negotiation_timeout_s=node_cfg.negotiation_timeout_s)
        self.usage_log = UsageRepository(self.store)
        # The vault and the receipts are built below: reached through the node when first used.
        # Served or suspended: deletions on schedule are owed to providers, also while a participant is suspended.
        self.usage = UsageService(
            self.usage_log, self.config.usage, participant_by_id=self.participants.hosted_by_id,
            destroy_data=lambda p, agreement_id: self.vault.destroy_agreement_data(p, agreement_id),
            logged=lambda participant_id, agreement_id: self.receipts.notify(participant_id, agreement_id),
            own_claims=held_claims_of(lambda p: self.credentials.held(p), lambda p: self.credentials.trust_of(p),
                                      statuses=lambda found, trusted: self.credentials.statuses(found, trusted)),
            decided=self.metrics.decided)
        self.receipts = ReceiptService(
            self.usage_log, self.contracts, self.usage, self.client, self.resolver,
            participant_by_id=self.participant_by_id, peer_facts=self.catalog.peer_facts,
            destroy_data=lambda p, agreement_id: self.vault.destroy_agreement_data(p, agreement_id),
            receipts_overdue_s=node_cfg.receipts_overdue_s)
        #: Received data, sealed at rest: each agreement's under its own key (stopping transfers before deleting).
        self.vault = Vault(data_dir, key_of=vault_keys,
                           stop_receiving=lambda p, agreement, why: self.transfers.stop_receiving(p, agreement, why))
        self.transfers = TransferService(
            self.transfers_repo, self.contracts, self.client, self.vault,
            Movers(push=sender.push, pull=receiver.pull, finish_push=receiver.finish_push),
            participant_by_id=self.participant_by_id,
            resolver=self.resolver, dsp_base_of=self.federation.dsp_base_of, peer_facts=self.catalog.peer_facts,
            verify_peer=self.federation.verify_peer, holds_credentials=lambda p: self.credentials.holds_any(p),
            data_dir=data_dir, data_roots=self.config.data_roots, export_rules=self.config.export_control,
            encrypt_transfers=node_cfg.encrypt_transfers, conformance_caller=self.conformance_caller,
            delivery_timeout_s=node_cfg.delivery_timeout_s, start_timeout_s=node_cfg.transfer_start_timeout_s,
            stall_timeout_s=node_cfg.transfer_stall_timeout_s, token_ttl_s=node_cfg.transfer_token_ttl_s,
            chunk_retries=node_cfg.transfer_chunk_retries, vault_quota_bytes=node_cfg.vault_quota_bytes,
            moved=self.metrics.moved)
        #: Statements of agreements' post-paid prices: issued (provider), checked and answered (consumer).
        self.settlement = SettlementService(
            StatementRepository(self.store), self.contracts, self.client, self.resolver,
            participant_by_id=self.participant_by_id, host=self.participants.first,
            hosted=self.participants.all_hosted, settings=self.config.settlement)
        # A token is taken from memory only while its participant is served (see TokenService).
        self.tokens = TokenService(self.repo, self.management_limit,
                                   served=lambda participant_id: self.participants.by_id(participant_id) is not None,
                                   # Another process of the node may revoke a token: none is kept in memory then.
                                   cache_seconds=0.0 if self.store.postgres else None)
        #: The peer directory (per participant: whom it knows of) and the gossip that keeps it.
        self.directory = Directory(
            DirectoryRepository(self.store), self.resolver, self.client, settings=self.config.discovery,
            participants=lambda: list(self.participants), verify_peer=self.federation.verify_peer,
            claims_of=lambda participant_id, did: self.credentials.claims_of(participant_id, did),
            refused=lambda reason: self.metrics.gossip_refused.labels(reason).inc(),
            evicted=self.metrics.directory_evicted.inc)
        self.gossip = Gossip(self.directory, self.client, participants=lambda: list(self.participants),
                             interval_s=self.gossip_interval_s, sent_bytes=self.metrics.gossip_sent_bytes.inc)
        #: Federated search: each participant's cache of the offers its known peers show it, crawled as itself.
        self.search = SearchService(
            CatalogCache(self.store), self.federation.peer_catalog, self._known_providers, self.config.discovery,
            participants=lambda: list(self.participants), counted=self.metrics.crawl_counted)
        #: Conformance mode only: callers accepted by a static Authorization header instead of a signature.
        self.conformance_callers: frozenset[str] = frozenset()
        # Conformance mode (a test fixture for the DSP compatibility kit): only with a [conformance] section.
        self.conformance: ConformanceMode | None = None
        if self.config.conformance is not None:
            from connector.conformance import ConformanceMode

            self.conformance = ConformanceMode(
                self.config.conformance, first_participant=self.participants.first, contracts=self.contracts,
                negotiations=self.negotiations, transfers=self.transfers, client=self.client, catalog=self.catalog)
            self.conformance_callers = self.conformance.callers
        # What a participant's removal undoes besides its rows and folders, in this order.
        self.participants.on_leaving(self._forget_participant)
        # A suspension stops a participant's work in progress; resuming takes it up again.
        self.participants.on_suspending(self._pause_participant)
        self.participants.on_resumed(self._resume_participant)
        self.participants.on_rotated(self._keys_rotated)
        self.participants.rewrap_with(self.vault.rewrap)
        #: Several processes of this node on one PostgreSQL store: heartbeats, and the take-over of a dead
        #: process's negotiations and transfers (nothing runs on SQLite).
        self.leases = Leases(self.store, adopters=[self.negotiations.adopt, self.transfers.adopt],
                             followers=[self.participants.follow], processes=self._split_limits,
                             alive_s=node_cfg.process_alive_s, heartbeat_s=node_cfg.process_alive_s / 3)
        #: ``starting``, ``running`` or ``stopping`` (``/readyz`` is ready only while running).
        self.phase = "starting"
        self._keys_loaded = False
        #: ``/readyz``: started, store writable, keys loaded, disk space above the threshold.
        self.health = Health(data_dir, phase=lambda: self.phase, store_problem=self.store.check_writable,
                             keys_loaded=lambda: self._keys_loaded, min_free_bytes=node_cfg.min_free_disk_bytes,
                             min_free_percent=node_cfg.min_free_disk_percent)
        #: The event loop's scheduling delay, measured while the node runs.
        self.loop_lag = LoopLag(self.metrics.event_loop_lag.observe)
        self._runners: list[web.AppRunner] = []
        self._table: list[Route] | None = None
        self.public_port: int | None = None
        self.management_port: int | None = None
        self.started_at: float | None = None

    @functools.cached_property
    def credentials(self) -> CredentialService:
        """Memberships and verified attributes: issued, held, presented, verified against the trust list. Built when
        first used (a handshake, a peer's claims asked for, the management API)."""
        from connector.services.credentials import CredentialService
        from connector.store.credentials import CredentialRepository

        return CredentialService(
            CredentialRepository(self.store), self.client, self.resolver, dsp_base_of=self.federation.dsp_base_of,
            settings=self.config.credentials, trust=self.config.trust)

    @functools.cached_property
    def sandbox(self) -> SandboxService:
        """The data sandbox: queries of this node's sandboxed tables (as provider) and of peers' (as consumer).
        Built when first used (a query, a sandbox table published, a node that offers one starting)."""
        from connector.services.sandbox import SandboxService

        return SandboxService(
            self.contracts, self.usage, self.usage_log, self.client, self.resolver, peer_facts=self.catalog.peer_facts,
            own_folder=lambda p: self.transfers.confinement(p).own, export_rules=self.config.export_control)

    @functools.cached_property
    def publishing(self) -> Publishing:
        """Assets, policies and offers published (the management API's; built on its first request)."""
        from connector.services.publishing import Publishing

        return Publishing(self.contracts, self.client, confinement=self.transfers.confinement,
                          manifest_for=self.transfers.manifest_for, snapshot_limit=self.config.node.max_snapshot_bytes,
                          tables_changed=lambda: self.sandbox.tables_changed())

    def _built(self, service: str) -> bool:
        """Whether *service*, one built when first used (a ``cached_property``), has been."""
        return service in self.__dict__

    async def _known_providers(self, participant: ParticipantRuntime) -> list[Provider]:
        """The participants *participant* knows, whose catalogs the crawler reads: those in its peer directory
        (when the node keeps one) and the peers it verified, by DID."""
        found = {peer.did: provider_of(peer) for peer in await self.federation.known(participant)}
        directory = getattr(self, "directory", None)
        if directory is not None:
            found.update({entry.did: provider_of(entry) for entry in directory.known(participant.id)})
        return [found[did] for did in sorted(found)]

    @property
    def gossip_interval_s(self) -> float:
        """``[discovery] gossip_interval_s``; in dev mode a few seconds unless set otherwise."""
        interval = self.config.discovery.gossip_interval_s
        default = DiscoverySection().gossip_interval_s
        return DEV_GOSSIP_INTERVAL_S if self.config.node.dev_mode and interval == default else interval

    @property
    def crawl_interval_s(self) -> float:
        """``[discovery] crawl_interval_s``; in dev mode a few seconds unless set otherwise."""
        interval = self.config.discovery.crawl_interval_s
        default = DiscoverySection().crawl_interval_s
        return DEV_CRAWL_INTERVAL_S if self.config.node.dev_mode and interval == default else interval

    def conformance_caller(self, caller: str) -> bool:
        return caller in self.conformance_callers

    def _agreement_in_force(self, participant_id: str, counterparty: str, agreement: AgreementRecord) -> None:
        """An agreement reached FINALIZED: its counterparty is a known peer, and, if it states a price the node
        is paid, its statements fall due (the settlement looks again: a read of every such agreement)."""
        self.admission.learn(participant_id, counterparty)
        if owes_statements(agreement):
            self.settlement.wake()

    async def _forget_participant(self, participant: ParticipantRuntime) -> None:
        self.tokens.forget_participant(participant.id)
        self.resolver.forget(participant.did)
        if self._built("credentials"):
            self.credentials.forget(participant.id)
        self.admission.forget(participant.id)  # its places go back to strangers; added again, it knows no one
        self.negotiations.forget(participant.id)
        self.contracts.forget(participant.id)
        self.usage.forget(participant.id)
        self.receipts.forget(participant.id)
        self.settlement.forget(participant.id)
        self.search.forget(participant.id)
        self.directory.forget(participant.id)
        await self.transfers.stop_all(participant.id)

    async def _pause_participant(self, participant: ParticipantRuntime) -> None:
        self.tokens.forget_participant(participant.id)
        self.directory.reissue_own(participant.did)  # its own entry is no longer handed out by gossip
        self.negotiations.forget(participant.id)
        self.receipts.forget(participant.id)
        self.settlement.forget(participant.id)
        await self.transfers.stop_all(participant.id)  # its bytes stop moving; the transfers' states stay

    async def _resume_participant(self, participant: ParticipantRuntime) -> None:
        await self.negotiations.resume_participant(participant.id)
        await self.transfers.resume_participant(participant.id)
        await self.receipts.resume(participant.id)
        await self.settlement.resume(participant.id)

    def _split_limits(self, processes: int) -> None:
        """Each of *processes* live node processes allows its share of the configured fair-use rates."""
        cfg = self.config.node
        for limit, rate, burst in ((self.management_limit, cfg.management_rate_per_s, cfg.management_burst),
                                   (self.dsp_limit, cfg.dsp_rate_per_s, cfg.dsp_burst)):
            limit.rate = rate / processes
            limit.burst = max(1, burst // processes)

    async def _keys_rotated(self, participant: ParticipantRuntime) -> None:
        self.directory.reissue_own(participant.did)

    # -- lifecycle -----------------------------------------------------------------------------------

    def public_app(self) -> web.Application:
        # The live registry: participants added later are served; a suspended one is answered 403.
        participant_named = self.participants.serving
        auth = PeerAuth(participant_named, self.resolver, self.repo, self.admission, self.config.public_url,
                        self.metrics.signature_failures, self.config.conformance)
        app = web.Application(
            middlewares=[error_middleware("public", self.metrics), signed_request_middleware(auth)],
            client_max_size=self.config.node.max_request_bytes,
            # A pushed payload is read in large pieces: aiohttp's 64 KiB would stop and restart reading the
            # socket every 128 KiB (as the client does for pulls, connector.net.client.STREAM_BUFFER).
            handler_args={"read_bufsize": STREAM_BUFFER},
        )
        app.add_routes(public.routes(public.PublicSite(
            participant_named, self.participants.first, self.health.ready, self.federation, self.receipts,
            document_named=self.participants.hosted)))
        # The participants' DSP, credential, gossip, sandbox and data-plane routes are built on the first request
        # under /participants that the routes above do not answer (their modules are not loaded to start).
        app.router.register_resource(
            LazyRoutes(PARTICIPANTS_PREFIX, lambda: self._peer_routes(participant_named, auth)))
        if self.conformance is not None:
            app.add_routes(self.conformance.routes())
        return app

    def _peer_routes(self, participant_named: Callable[[str], ParticipantRuntime | None],
                     auth: PeerAuth) -> list[web.RouteDef]:
        from connector.http import credentials as credential_routes
        from connector.http import dataplane, dsp
        from connector.http import directory as directory_routes
        from connector.http import sandbox as sandbox_routes
        from connector.http import statements as statement_routes

        return [
            *dsp.routes(dsp.DspSite(
                participant_named, self.catalog, self.contracts, self.negotiations, self.transfers, self.transfers_repo,
                self.conformance_caller, self.config.public_url)),
            *credential_routes.peer_routes(participant_named, self.credentials),
            *directory_routes.peer_routes(participant_named, self.gossip),
            *sandbox_routes.peer_routes(participant_named, self.sandbox),
            *statement_routes.peer_routes(participant_named, self.settlement),
            *dataplane.routes(dataplane.DataPlaneSite(
                participant_named, auth, self.transfers_repo, self.transfers, self.metrics.signature_failures)),
        ]

    def management_app(self) -> web.Application:
        app = web.Application(
            middlewares=[error_middleware("management", self.metrics),
                         lazy_middleware(self._token_middleware)],
            client_max_size=self.config.node.max_request_bytes,
        )
        # The API's routes (and its OpenAPI document) and the web console are built on the first request under
        # their prefixes: their tables, modules, pages and texts are not loaded to start.
        app.router.register_resource(LazyRoutes(MANAGEMENT_PREFIX, self._management_routes))
        app.router.register_resource(LazyRoutes(METRICS_PATH, self._metrics_routes))
        app.router.register_resource(LazyRoutes(CONSOLE_PREFIX, self._console_routes))
        return app

    def _token_middleware(self) -> Middleware:
        from connector.http import management

        middleware: Middleware = management.token_middleware(self.tokens)
        return middleware

    def _metrics_routes(self) -> list[web.RouteDef]:
        from connector.http import management

        return management.metrics_routes(self.tokens, self.scrape_metrics)

    def _management_table(self) -> list[Route]:
        """The management API's routes (one table for the API, its OpenAPI document and the console)."""
        from connector.http import management

        assert management.PREFIX == MANAGEMENT_PREFIX, "the management API moved: MANAGEMENT_PREFIX must follow it"
        if self._table is None:
            self._table = management.routes(management.ManagementSite(
                self.participants, self.tokens, self.federation, self.publishing, self.negotiations, self.transfers,
                self.usage, self.receipts, self.vault, self.credentials, self.search, gossip=self.gossip,
                sandbox=self.sandbox, settlement=self.settlement))
        return self._table

    def _management_routes(self) -> list[web.RouteDef]:
        from connector.http import management, openapi

        table = self._management_table()
        spec: dict[str, object] = {}

        async def openapi_json(_: web.Request) -> web.Response:
            if not spec:  # built on its first request
                spec.update(openapi.document(table, max_request_bytes=self.config.node.max_request_bytes))
            return web.json_response(spec)

        async def docs(_: web.Request) -> web.Response:
            return web.Response(text=openapi.DOCS_HTML, content_type="text/html")

        return [*(web.route(r.method, management.PREFIX + r.path, r.handler) for r in table),
                web.get(f"{management.PREFIX}/openapi.json", openapi_json), web.get(f"{management.PREFIX}/docs", docs)]

    def _console_routes(self) -> list[web.RouteDef]:
        from connector.http import console
        from connector.http.console.view import BASE

        assert BASE == CONSOLE_PREFIX, "the console moved: CONSOLE_PREFIX must follow it"
        return console.routes(self._management_table(), self.tokens, self.participants)

    async def scrape_metrics(self) -> tuple[bytes, str]:
        """The node's metrics, with its processes and receipt anomalies counted in the store now."""
        return await self.metrics.scrape(lambda: stats.counts(self.store))

    async def start(self) -> None:
        started = time.perf_counter()
        cfg = self.config.node
        # Before anything is opened: a bad certificate or key fails the start cleanly.
        tls = server_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        management_tls = management_server_context(self.config)
        # What the node writes is its own alone, whatever umask it was started with; a folder made before
        # that (or copied without its modes) is narrowed first, before the keys are read.
        filemodes.restrict_umask()
        loosened = await asyncio.to_thread(filemodes.tighten, self.data_dir)
        if loosened:
            log.warning("data folder was readable by other local users; modes narrowed to 0600/0700",
                        count=len(loosened), paths=loosened[:20])
        self.phase = "starting"
        try:
            await self.store.open()
        except StorageError as exc:
            # One line an operator's log search finds (the CLI prints the message as well); nothing is open yet.
            log.error("cannot open the database", path=self.store.describe(), error=exc.message,
                      **({"schema": exc.found, "known_schema": exc.known, "version": software_version()}
                         if isinstance(exc, SchemaVersionError) else {}))
            raise
        self.metrics.built(software_version(), self.store.schema_version)
        try:
            self.loop_lag.start()
            await self.participants.load()
            self._keys_loaded = True
            await legacy_files.move_into_own_roots(list(self.participants), self.contracts,
                                                   self.transfers.confinement, self.data_dir / addresses.FILES)
            await self.vault.seal_unsealed(list(self.participants), self.contracts.agreement_ids)
            if self.conformance is not None:
                await self.conformance.seed()
            await self.admission.load()
            self.public_port = await self._serve("public", self.public_app(), cfg.host, cfg.port, tls)
            self.management_port = await self._serve("management", self.management_app(), cfg.management_host,
                                                     cfg.management_port, management_tls)
            # Before anything goes out: no callback or data address may lead back into these (but the
            # public one, for peer calls).
            self.client.listening_on(Listener(PUBLIC, cfg.host, self.public_port),
                                     Listener("management", cfg.management_host, self.management_port))
            self.started_at = time.time()
            await self.leases.register()
            await self.negotiations.resume()
            await self.receipts.resume()
            await self.usage.start()
            await self.transfers.resume()
            await self.settlement.start()
            self.search.start(self.crawl_interval_s)
            await self.directory.load()
            self.gossip.start()
            self.leases.start()
            if await self.store.read(offers_tables):
                await self.sandbox.tables_changed()  # spare workers ready before the first query
            self.phase = "running"
        except BaseException:
            # A start that fails half-way (a port in use, a bad key) leaves nothing open behind it.
            self.started_at = time.time()
            await self.stop()
            raise
        log.info(
            "node started", version=software_version(), schema=self.store.schema_version,
            public=f"{'https' if tls else 'http'}://{cfg.host}:{self.public_port}", public_url=self.config.public_url,
            management=self.management_url,
            participants=[p.did for p in self.participants], dev_mode=cfg.dev_mode,
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
        self.phase = "stopping"
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._built("sandbox"):
            await self.sandbox.close()
        await self.negotiations.close()
        await self.transfers.close()
        await self.receipts.close()
        await self.settlement.close()
        await self.search.close()
        await self.gossip.close()
        await self.usage.close()
        await self.admission.close()
        await self.client.close()
        await self.loop_lag.close()
        await self.leases.stop()
        await self.store.close()
        self._keys_loaded = False
        log.info("node stopped")

    @property
    def management_url(self) -> str:
        """The management listener's URL: https when ``node.management_tls`` is on."""
        return management_url_of(self.config, self.management_port)


class _CredentialsWhenUsed:
    """What handshakes need of the credentials service (:class:`connector.services.federation.Credentials`), taken
    from *service* when a handshake first needs it: the node starts without the credential machinery."""

    def __init__(self, service: Callable[[], CredentialService]) -> None:
        self._service = service

    async def opening(self, participant: ParticipantRuntime, dsp_base: str) -> Opening | None:
        return await self._service().opening(participant, dsp_base)

    async def on_handshake(self, participant: ParticipantRuntime, caller: str, fields: Mapping[str, Any]
                           ) -> dict[str, Any]:
        return await self._service().on_handshake(participant, caller, fields)

    async def closing(self, participant: ParticipantRuntime, peer: str, dsp_base: str, opening: Opening,
                      answer: Mapping[str, Any] | None) -> Any:
        return await self._service().closing(participant, peer, dsp_base, opening, answer)


#: glibc's malloc, for the node's process: freed heap memory up to this much is kept for reuse instead of being
#: handed back to the kernel at once, and blocks up to :data:`HEAP_BLOCKS` come from the heap, not a mapping of
#: their own (see :func:`keep_freed_memory`).
KEEP_FREED = 32 * 1024 * 1024
HEAP_BLOCKS = 16 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for a node's data plane (Linux with glibc only; a no-op elsewhere).

    A stream hands pieces of 256 KiB and chunks of 1 MiB between the event loop and a worker thread. With
    glibc's defaults the memory they free is handed back to the kernel (the heap's top trimmed, large blocks
    unmapped) and taken again for the next ones: some 50,000 page faults and about a tenth of a consuming
    node's CPU per GiB received, measured. Kept for reuse instead (``M_TRIM_THRESHOLD``, ``M_MMAP_THRESHOLD``,
    what the ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` environment variables set), the node's
    peak memory stays the same; what it freed after a transfer is kept up to :data:`KEEP_FREED`."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  # glibc, whose parameter numbers these are
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_trim_threshold, KEEP_FREED)) and bool(mallopt(m_mmap_threshold, HEAP_BLOCKS))


async def serve(data_dir: Path, *, started: Callable[[], None] | None = None, config: Config | None = None) -> None:
    """Run a node until SIGTERM or SIGINT, then shut down gracefully; *started* is called once it listens.
    *config*: instead of the data folder's own (its ports changed for one of several processes)."""
    node = Node(data_dir, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handle_loop_exceptions(loop)  # what a background task lets through is a JSON line too
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    keep_freed_memory()
    if started is not None:
        started()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()
