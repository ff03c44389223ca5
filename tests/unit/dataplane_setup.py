"""Shared set-up of the sender and receiver tests: one transfer service on a temporary SQLite file that hosts a
provider ("acme") and a consumer ("parts") with a FINALIZED agreement between them, a real vault in the
temporary folder, a fake clock, and a recording outbound client (``connector.testing.RecordingClient``) on which
each side's DSP base acknowledges every transfer message (:class:`DspAcks`). The data-plane endpoints are
routed by each test file. Payloads are a few chunks of the smallest chunk size."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from connector.identity.keys import ParticipantKeys
from connector.identity.multikey import encode_multibase
from connector.participant import ParticipantRuntime
from connector.payload import manifest as manifests
from connector.payload import sealing
from connector.protocol import messages as m
from connector.protocol.policy import PeerFacts
from connector.services import receiver, sender
from connector.services.transfer import Movers, TransferService
from connector.services.vault import Vault, vault_key
from connector.store.db import Store
from connector.store.records import AgreementRecord, TransferRecord
from connector.store.repository import ContractRepository, Participant, SqliteRepository, TransferRepository
from connector.testing import FakeClock, FederationResolver, InMemoryPeer, RecordingClient

AGREEMENT = "urn:uuid:agreement-1"
ASSET = "sensor-data"
PROVIDER_PID = "urn:uuid:provider-side"
CONSUMER_PID = "urn:uuid:consumer-side"
TOKEN = "transfer-token"
CHUNK = manifests.MIN_CHUNK
#: Three whole chunks and a short last one.
SIZE = 3 * CHUNK + 1000
STALL_S = 60.0
RETRIES = 3


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example", legal_name=name.title(), region="CN-GD")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


def manifest_of(data: bytes) -> manifests.Manifest:
    builder = manifests.ManifestBuilder("application/octet-stream", chunk_size=CHUNK)
    builder.update(data)
    return builder.finish()


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def transfer_key(consumer: ParticipantRuntime) -> tuple[bytes, str]:
    """A provider's key for a sealed transfer to *consumer*, and the ephemeral public key it sends along."""
    key, ephemeral = sealing.sender_key(bytes(consumer.keys.agreement.public_key), PROVIDER_PID)
    return key, encode_multibase(ephemeral)


class DspAcks(InMemoryPeer):
    """A participant's DSP base as far as the data plane needs it: every transfer message is acknowledged;
    ``GET …/transfers/:pid`` answers the state in :attr:`views` (404 if none)."""

    def __init__(self, participant: ParticipantRuntime) -> None:
        super().__init__(participant.dsp_base)
        self.views: dict[str, str] = {}

    async def answer(self, method: str, path: str, body: Any, caller: str) -> tuple[int, Any]:
        if method == "GET":
            state = self.views.get(path.rsplit("/", 1)[-1])
            if state is None:
                return 404, {"reason": ["no such transfer"]}
            return 200, m.encode(m.TransferProcess(providerPid=PROVIDER_PID, consumerPid=CONSUMER_PID, state=state))
        return 200, m.encode(m.TransferProcess(providerPid=PROVIDER_PID, consumerPid=CONSUMER_PID, state="STARTED"))


@dataclass
class Setup:
    acme: ParticipantRuntime
    parts: ParticipantRuntime
    store: Store
    contracts: ContractRepository
    transfers: TransferRepository
    client: RecordingClient
    clock: FakeClock
    service: TransferService
    data_dir: Path
    dsp: dict[str, DspAcks]

    async def close(self) -> None:
        await self.service.close()
        await self.store.close()

    async def record(self, participant: ParticipantRuntime, transfer_id: str) -> TransferRecord:
        found = await self.transfers.get(participant.id, transfer_id)
        assert found is not None
        return found

    async def events(self, participant: ParticipantRuntime, transfer_id: str) -> list[tuple[str, str]]:
        return [(e.kind, e.detail) for e in await self.transfers.events(participant.id, transfer_id)]

    async def agreement(self, state: str = "FINALIZED") -> None:
        """The agreement on ASSET between acme (provider) and parts (consumer), held by both."""
        body = {"@id": AGREEMENT, "@type": "Agreement", "target": ASSET, "assigner": self.acme.did,
                "assignee": self.parts.did, "permission": [{"action": "use"}], "timestamp": "2026-01-01T00:00:00Z"}
        for participant, role in ((self.acme, "provider"), (self.parts, "consumer")):
            await self.contracts.add_agreement(participant.id, AgreementRecord(
                id=AGREEMENT, negotiation_id="n-1", role=role, provider_did=self.acme.did,
                consumer_did=self.parts.did, asset_id=ASSET, agreement=body, state=state,
                created_at="2026-01-01T00:00:00Z"))

    def envelope(self, manifest: manifests.Manifest, *, signer: ParticipantRuntime | None = None,
                 **binding: str) -> dict[str, Any]:
        """The provider's signed envelope over *manifest*, bound to the agreement and both pids (or what
        *binding* says instead), signed by acme (or *signer*)."""
        bound = manifests.Binding(**{"agreement_id": AGREEMENT, "provider_pid": PROVIDER_PID,
                                     "consumer_pid": CONSUMER_PID, "provider": self.acme.did,
                                     "consumer": self.parts.did, **binding})
        by = signer or self.acme
        return manifests.sign_envelope(manifest, bound, by.keys.signing, key_id=by.key_id,
                                       created="2026-01-01T00:00:00Z")

    async def consumer_transfer(self, fmt: str, data_address: dict[str, Any] | None, **changes: Any
                                ) -> TransferRecord:
        """parts' transfer, STARTED by acme, stored."""
        record = TransferRecord(
            participant_id=self.parts.id, id=CONSUMER_PID, role="consumer", state="STARTED",
            counterparty_did=self.acme.did, agreement_id=AGREEMENT, provider_pid=PROVIDER_PID,
            consumer_pid=CONSUMER_PID, counterparty_address=self.acme.dsp_base, asset_id=ASSET, format=fmt,
            data_address=data_address, created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z")
        record = msgspec.structs.replace(record, **changes)
        await self.transfers.create(record, "message-in", "TransferStartMessage")
        return record

    async def provider_transfer(self, fmt: str, data_address: dict[str, Any], manifest: manifests.Manifest,
                                **changes: Any) -> TransferRecord:
        """acme's transfer of *manifest*'s file, STARTED, stored."""
        record = TransferRecord(
            participant_id=self.acme.id, id=PROVIDER_PID, role="provider", state="STARTED",
            counterparty_did=self.parts.did, agreement_id=AGREEMENT, provider_pid=PROVIDER_PID,
            consumer_pid=CONSUMER_PID, counterparty_address=self.parts.dsp_base, asset_id=ASSET, format=fmt,
            data_address=data_address, manifest=manifests.encode(manifest), envelope=self.envelope(manifest),
            size=manifest.size, created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z")
        record = msgspec.structs.replace(record, **changes)
        await self.transfers.create(record, "message-out", "TransferStartMessage")
        return record

    def source(self, data: bytes, name: str = "readings.bin") -> dict[str, str]:
        """The provider's file with *data*, and its version as a started transfer notes it."""
        path = self.data_dir / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stat = path.stat()
        return {"path": str(path), "version": f"{stat.st_size}:{stat.st_mtime_ns}"}


async def _unused(*_: Any) -> Any:
    raise AssertionError("not used by these tests")


async def open_setup(tmp_path: Path) -> Setup:
    store = Store(tmp_path / "tds.db")
    await store.open()
    acme, parts = runtime("acme"), runtime("parts")
    for participant in (acme, parts):
        await SqliteRepository(store).add_participant(participant.record)
    contracts, transfers = ContractRepository(store), TransferRepository(store)
    client, clock = RecordingClient(), FakeClock()
    dsp = {p.id: DspAcks(p) for p in (acme, parts)}
    for peer in dsp.values():
        client.connect(peer)

    async def peer_facts(_: ParticipantRuntime, did: str) -> PeerFacts:
        return PeerFacts(did)

    service = TransferService(
        transfers, contracts, client, Vault(tmp_path, key_of=vault_key, stop_receiving=_unused),
        Movers(push=sender.push, pull=receiver.pull, finish_push=receiver.finish_push),
        participant_by_id={acme.id: acme, parts.id: parts}.get,
        resolver=FederationResolver(acme.did_document(), parts.did_document()), dsp_base_of=_unused,
        peer_facts=peer_facts, data_dir=tmp_path, delivery_timeout_s=5.0, start_timeout_s=300.0,
        stall_timeout_s=STALL_S, token_ttl_s=900.0, chunk_retries=RETRIES, vault_quota_bytes=10**9, clock=clock)
    setup = Setup(acme, parts, store, contracts, transfers, client, clock, service, tmp_path, dsp)
    await setup.agreement()
    return setup


def payload(size: int = SIZE) -> bytes:
    return os.urandom(size)


def no_backoff(monkeypatch: pytest.MonkeyPatch, mover: Any) -> list[int]:
    """Make *mover*'s (``sender`` or ``receiver``) pause between attempts nil; return the attempts it made."""
    attempts: list[int] = []

    def no_pause(attempt: int) -> float:
        attempts.append(attempt)
        return 0.0

    monkeypatch.setattr(mover, "backoff", no_pause)
    return attempts
