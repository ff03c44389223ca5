"""Shared set-up of the credential service tests: participants on in-memory nodes, each node a
``CredentialService`` over its own SQLite file, reached through one recording outbound client that hands every
request under a participant's URL to the service hosting it (as its routes would), signed as the real client
signs. No sockets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.config import CredentialsSection, TrustEntry
from connector.errors import NotFound, PeerError, TdsError
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.services.credentials import (
    DELIVERY_PATH,
    PRESENTATION_PATH,
    REQUESTS_PATH,
    STATUS_PATH,
    CredentialService,
    delivery_answer,
    request_answer,
)
from connector.services.federation import HANDSHAKE_PATH
from connector.store.credentials import CredentialRepository
from connector.store.db import Store
from connector.store.repository import Participant, SqliteRepository
from connector.testing import FakeClock, FederationResolver, RecordingClient, Reply, Sent

START = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SPACE = "urn:tds:space:auto-parts"


def runtime(name: str, host: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{host}:participants:{name}", legal_name=name.title(),
                         region="CN-GD", created_at="2026-01-01T00:00:00Z")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{host}")


class Network:
    """Nodes of credential services, and the one outbound client and resolver they share."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = FakeClock(START)
        self.client = RecordingClient()
        self.resolver = FederationResolver()
        self.stores: list[Store] = []
        self.by_did: dict[str, tuple[CredentialService, ParticipantRuntime]] = {}

    async def node(self, name: str, *participants: ParticipantRuntime, trust: Sequence[TrustEntry] = (),
                   settings: CredentialsSection | None = None) -> CredentialService:
        store = Store(self.root / f"{name}.db")
        await store.open()
        self.stores.append(store)
        rows = SqliteRepository(store)
        for p in participants:
            await rows.add_participant(p.record)
        service = CredentialService(CredentialRepository(store), self.client, self.resolver,
                                    dsp_base_of=self.dsp_base_of, settings=settings, trust=trust,
                                    clock=self.clock.utc)
        for p in participants:
            self.resolver.documents[p.did] = p.did_document()
            self.by_did[p.did] = (service, p)
            self.client.route(p.base_url, self._routes(service, p))
        return service

    async def close(self) -> None:
        for store in self.stores:
            await store.close()

    async def dsp_base_of(self, peer: str) -> str:
        for _, p in self.by_did.values():
            if peer in (p.did, p.base_url, p.dsp_base):
                return p.dsp_base
        raise PeerError(f"{peer} cannot be reached")

    def _routes(self, service: CredentialService, p: ParticipantRuntime) -> Any:
        """Answer as ``connector.http.credentials.peer_routes`` would."""

        async def answer(sent: Sent) -> Reply:
            path = sent.url[len(p.base_url):]
            try:
                if sent.method == "GET" and path.startswith(f"/{STATUS_PATH}/"):
                    return Reply(200, await service.status_list_document(p, int(path.rsplit("/", 1)[1])))
                if sent.method != "POST" or not path.startswith("/api/dsp/2025-1/") or sent.caller is None:
                    raise NotFound(f"no route {sent.method} {path}")
                route = path[len("/api/dsp/2025-1"):]
                if route == DELIVERY_PATH:
                    kept = await service.receive_credential(p, sent.caller, sent.body)
                    return Reply(200, delivery_answer(kept))
                if route == REQUESTS_PATH:
                    request = await service.receive_request(p, sent.caller, sent.body)
                    return Reply(201, request_answer(p, request))
                if route == HANDSHAKE_PATH:  # the credentials beside the self-descriptions (not verified here)
                    fields = {k: v for k, v in sent.body.items() if k != "selfDescription"}
                    return Reply(200, {"selfDescription": {}, **await service.on_handshake(p, sent.caller, fields)})
                if route == PRESENTATION_PATH:
                    return Reply(200, await service.on_presentation(p, sent.caller, sent.body))
                raise NotFound(f"no route {path}")
            except TdsError as exc:
                return Reply(exc.status, {"error": exc.code, "message": exc.message})

        return answer


async def exchange(service: CredentialService, participant: ParticipantRuntime, peer: str, dsp_base: str) -> Any:
    """The credentials of a handshake *participant* starts with *peer* (its DID) at *dsp_base*, carried as
    ``FederationService.verify_peer`` carries them: the peer's claims, or None."""
    opening = await service.opening(participant, dsp_base)
    if opening is None:
        return None
    reply = await service.client.request("POST", f"{dsp_base}{HANDSHAKE_PATH}", signer=participant.signer,
                                         json_body={"selfDescription": {}, **opening.fields})
    if reply.status != 200:
        raise PeerError(f"{dsp_base} refused the handshake with {reply.status}")
    return await service.closing(participant, peer, dsp_base, opening, reply.json())
