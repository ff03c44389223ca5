"""Shared set-up of the usage and receipt service tests: one real store on a temporary SQLite file that
hosts a provider ("acme") and a consumer ("parts") with an agreement between them, a fake clock, a vault
that records deletions, and an in-memory peer that hands signed requests to the other side's service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from connector.errors import TdsError
from connector.identity.keys import ParticipantKeys, Signer
from connector.participant import ParticipantRuntime
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role, State
from connector.protocol.policy import PeerFacts
from connector.services.receipts import ReceiptService
from connector.services.usage import UsageService
from connector.services.vault import Deletion
from connector.store.db import Store
from connector.store.records import AgreementRecord, NegotiationRecord
from connector.store.repository import ContractRepository, Participant, SqliteRepository
from connector.store.usage import UsageRepository
from usage_policies import templates

AGREEMENT = "urn:uuid:agreement-1"
ASSET = "qi"
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class UsageClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class UsageVault:
    """Stands in for the vault's ``destroy_agreement_data``: records what it was asked to delete."""

    def __init__(self) -> None:
        self.destroyed: list[tuple[str, str]] = []

    async def __call__(self, participant: ParticipantRuntime, agreement_id: str) -> Deletion:
        self.destroyed.append((participant.name, agreement_id))
        return Deletion(bytes_removed=42, key_destroyed=True)


@dataclass
class PeerAnswer:
    status: int
    body: bytes
    url: str = ""

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class ReceiptsPeer:
    """An outbound client wired to the services of this store: a POST to ``…/tds/usage-receipts`` or
    ``…/tds/revocations`` is handled by the receipt service of the participant the URL names, with the
    signer's DID as the caller (as the signed-request middleware would); errors answer as the error
    middleware does (status, message and details). Every request is recorded."""

    host: Setup
    sent: list[tuple[str, str, Any]] = field(default_factory=list)
    #: When set, every request answers this status (a peer that is down or refuses).
    refuse_with: int | None = None

    async def request(self, method: str, url: str, *, json_body: Any = None, signer: Signer | None = None,
                      headers: dict[str, str] | None = None) -> PeerAnswer:
        self.sent.append((method, url, json_body))
        if self.refuse_with is not None:
            return PeerAnswer(self.refuse_with, b'{"message": "refused"}', url)
        assert signer is not None
        caller = signer.key_id.split("#", 1)[0]
        name = url.split("/participants/", 1)[1].split("/", 1)[0]
        participant = self.host.participants[name]
        try:
            if url.endswith("/tds/usage-receipts"):
                answer = await self.host.receipts.receive(participant, caller, json_body)
            else:
                answer = await self.host.receipts.on_revocation(participant, caller, json_body)
        except TdsError as exc:
            body = {"message": exc.message, **(getattr(exc, "details", None) or {})}
            return PeerAnswer(exc.status, msgspec.json.encode(body), url)
        return PeerAnswer(200, msgspec.json.encode(answer), url)


class UsageResolver:
    """DID resolution from the participants of the store."""

    def __init__(self, host: Setup) -> None:
        self.host = host

    async def resolve(self, did: str, *, key_id: str | None = None) -> dict[str, Any]:
        for participant in self.host.participants.values():
            if participant.did == did:
                return participant.did_document()
        raise LookupError(did)


@dataclass
class Setup:
    store: Store
    contracts: ContractRepository
    repo: UsageRepository
    participants: dict[str, ParticipantRuntime]
    clock: UsageClock
    vault: UsageVault
    usage: UsageService = field(init=False)
    receipts: ReceiptService = field(init=False)
    peer: ReceiptsPeer = field(init=False)
    notified: list[tuple[str, str]] = field(default_factory=list)

    @property
    def provider(self) -> ParticipantRuntime:
        return self.participants["acme"]

    @property
    def consumer(self) -> ParticipantRuntime:
        return self.participants["parts"]

    async def use(self, use_id: str, *, purpose: str = "R&D", application: str = "app", action: str = "use",
                  agreement_id: str = AGREEMENT) -> Any:
        return await self.usage.use(self.consumer, application=application, agreement_id=agreement_id,
                                    action=action, purpose=purpose, use_id=use_id)

    async def check(self, *, purpose: str = "R&D", action: str = "use", agreement_id: str = AGREEMENT,
                    participant: ParticipantRuntime | None = None) -> Any:
        """A dry run of a use (``UsageService.check``), by the consumer unless *participant* is given."""
        return await self.usage.check(participant or self.consumer, agreement_id=agreement_id, action=action,
                                      purpose=purpose)

    async def dump(self) -> list[str]:
        """The whole database as SQL (to show that nothing changed)."""
        return await self.store.read(lambda db: list(db.conn.iterdump()))

    async def sql(self, statement: str, *params: Any) -> None:
        """Change the database behind the services' back (what an attacker with the file could do)."""
        await self.store.write(lambda db: db.conn.execute(statement, params))

    async def add_agreement(self, policy: dict[str, Any], *, agreement_id: str = AGREEMENT,
                            state: AgreementState = AgreementState.FINALIZED) -> None:
        body = {**policy, "@id": agreement_id, "@type": "Agreement", "assigner": self.provider.did,
                "assignee": self.consumer.did, "timestamp": "2026-01-01T00:00:00Z"}
        for participant, role in ((self.provider, Role.PROVIDER), (self.consumer, Role.CONSUMER)):
            record = AgreementRecord(id=agreement_id, negotiation_id=f"n-{agreement_id}", role=role,
                                     provider_did=self.provider.did, consumer_did=self.consumer.did, asset_id=ASSET,
                                     agreement=body, state=state, created_at="2026-01-01T00:00:00Z")
            await self.contracts.add_agreement(participant.id, record)
            other = self.consumer if role == Role.PROVIDER else self.provider
            await self.contracts.create_negotiation(NegotiationRecord(
                participant_id=participant.id, id=f"n-{agreement_id}", role=role, state=State.FINALIZED,
                counterparty_did=other.did, counterparty_address=other.dsp_base), "made")


def policy(*parts: dict[str, Any]) -> dict[str, Any]:
    return templates.combine(templates.purpose(ASSET, "R&D"), *parts)


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:example.org:participants:{name}", legal_name=name.title(),
                         region="CN", created_at="2026-01-01T00:00:00Z")
    return ParticipantRuntime(record, ParticipantKeys.generate(), "https://example.org")


async def open_setup(folder: Path, terms: dict[str, Any] | None = None) -> Setup:
    store = Store(folder / "usage.db")
    await store.open()
    participants = {name: runtime(name) for name in ("acme", "parts")}
    for participant in participants.values():
        await SqliteRepository(store).add_participant(participant.record)
    setup = Setup(store, ContractRepository(store), UsageRepository(store), participants, UsageClock(), UsageVault())

    def by_id(participant_id: str) -> ParticipantRuntime | None:
        return next((p for p in participants.values() if p.id == participant_id), None)

    def logged(participant_id: str, agreement_id: str) -> None:
        setup.notified.append((participant_id, agreement_id))

    async def peer_facts(participant: ParticipantRuntime, did: str) -> PeerFacts:
        return PeerFacts(did, self_asserted_region="CN")

    from connector.config import UsageSection

    setup.usage = UsageService(setup.repo, UsageSection(), participant_by_id=by_id, destroy_data=setup.vault,
                               logged=logged, clock=setup.clock)
    setup.peer = ReceiptsPeer(setup)
    setup.receipts = ReceiptService(setup.repo, setup.contracts, setup.usage, setup.peer, UsageResolver(setup),
                                    participant_by_id=by_id, peer_facts=peer_facts, destroy_data=setup.vault,
                                    receipts_overdue_s=86400.0, clock=setup.clock)
    await setup.add_agreement(terms if terms is not None else policy(templates.max_uses(ASSET, 3)))
    return setup
