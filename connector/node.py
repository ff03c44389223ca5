"""The node: the composition root that wires config, keys, store, services and the two listeners."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from connector.bootstrap import DB_FILE, keys_dir, participant_did
from connector.config import Config, load_config
from connector.errors import ConfigError
from connector.http import dsp, management, openapi, public
from connector.http.auth import signed_request_middleware
from connector.http.middleware import error_middleware
from connector.http.netguard import OutboundPolicy
from connector.http.outbound import PeerClient
from connector.identity.keys import load_keys
from connector.identity.resolver import DidResolver
from connector.logging import get_logger
from connector.metrics import Metrics
from connector.participant import ParticipantRuntime
from connector.services import dataplane
from connector.services.catalog import CatalogService
from connector.services.federation import FederationService
from connector.services.negotiation import NegotiationService
from connector.services.transfer import TransferService
from connector.store.db import Store
from connector.store.repository import ContractRepository, SqliteRepository, TransferRepository

if TYPE_CHECKING:
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
        self.policy = OutboundPolicy.build(node_cfg.dev_mode, node_cfg.trusted_networks)
        self.client = PeerClient(
            self.policy,
            timeout_s=node_cfg.outbound_timeout_s,
            max_redirects=node_cfg.outbound_max_redirects,
            max_response_bytes=node_cfg.outbound_max_response_bytes,
        )
        self.participants: dict[str, ParticipantRuntime] = {}
        self.resolver = DidResolver(self.client, dev_mode=node_cfg.dev_mode, local=self._local_did_document)
        self.federation = FederationService(self)
        self.catalog = CatalogService(self)
        self.negotiations = NegotiationService(self)
        self.transfers = TransferService(self)
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
        for p in self.participants.values():
            if p.id == participant_id:
                return p
        return None

    def conformance_caller(self, caller: str) -> bool:
        return caller in self.conformance_callers

    def _local_did_document(self, did: str) -> dict[str, object] | None:
        for p in self.participants.values():
            if p.did == did:
                return p.did_document()
        return None

    async def _load_participants(self) -> None:
        records = await self.repo.participants()
        if not records:
            raise ConfigError(f"the database in {self.data_dir} has no participant (was `tds init` run?)")
        for record in records:
            try:
                keys = load_keys(keys_dir(self.data_dir, record.name))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"keys of participant {record.name!r}: {exc}") from exc
            if record.did.startswith("did:web:"):
                expected = participant_did(self.config, keys, record.name, "web")
                if expected != record.did:
                    raise ConfigError(
                        f"participant {record.name!r} has DID {record.did} but node.public_url gives {expected}; "
                        "a did:web moves with the public URL",
                        path="node.public_url",
                    )
            self.participants[record.name] = ParticipantRuntime(record, keys, self.config.public_url)
        self.metrics.participants.set(len(self.participants))

    # -- lifecycle -----------------------------------------------------------------------------------

    def public_app(self) -> web.Application:
        app = web.Application(
            middlewares=[error_middleware("public", self.metrics.requests_total), signed_request_middleware(self)],
            client_max_size=self.config.node.max_request_bytes,
        )
        app.add_routes(public.routes(self))
        app.add_routes(dsp.routes(self))
        app.add_routes(dataplane.routes(self))
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
        spec = openapi.document(table)

        async def openapi_json(_: web.Request) -> web.Response:
            return web.json_response(spec)

        async def docs(_: web.Request) -> web.Response:
            return web.Response(text=openapi.DOCS_HTML, content_type="text/html")

        app.add_routes([web.get(f"{management.PREFIX}/openapi.json", openapi_json),
                        web.get(f"{management.PREFIX}/docs", docs)])
        return app

    async def start(self) -> None:
        started = time.perf_counter()
        await self.store.open()
        await self._load_participants()
        if self.conformance is not None:
            await self.conformance.seed()
        cfg = self.config.node
        self.public_port = await self._serve(self.public_app(), cfg.host, cfg.port)
        self.management_port = await self._serve(self.management_app(), cfg.management_host, cfg.management_port)
        self.started_at = time.time()
        await self.negotiations.resume()
        await self.transfers.resume()
        log.info(
            "node started",
            public=f"http://{cfg.host}:{self.public_port}", public_url=self.config.public_url,
            management=f"http://{cfg.management_host}:{self.management_port}",
            participants=[p.did for p in self.participants.values()], dev_mode=cfg.dev_mode,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
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
        await self.client.close()
        await self.store.close()
        log.info("node stopped")

    @property
    def management_url(self) -> str:
        return f"http://{self.config.node.management_host}:{self.management_port}"


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
