"""The transfer service without a node or a socket: one service on a SQLite store hosting a provider ("acme")
and a consumer ("parts"), a recording outbound client whose peer is scripted here (it acknowledges every
transfer message), a real vault in a temporary folder and a fake clock. What a provider refuses, that a consumer
holding credentials shows them again before it asks (and one holding none sends nothing more), how a consumer
ends a transfer it cannot use, that a start is stored before it leaves, and the stall deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connector import testing
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol import messages as m
from connector.protocol.policy import PeerFacts
from connector.protocol.transfer import Kind
from connector.services import receiver, sender
from connector.services.transfer import ENDPOINT_TYPE, PULL, PUSH, Movers, TransferError, TransferService
from connector.services.vault import Vault, vault_key
from connector.store.db import Store
from connector.store.records import AgreementRecord, Asset, TransferRecord
from connector.store.repository import ContractRepository, Participant, SqliteRepository, TransferRepository
from connector.testing import FederationResolver, NegotiationClock, NegotiationOutbound, NegotiationSent

AGREEMENT = "urn:uuid:agreement-1"
ASSET = "sensor-data"
PROVIDER_PID = "urn:uuid:provider-side"
STALL_S = 60.0
START_S = 300.0


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example", legal_name=name.title(), region="CN-GD")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


class ScriptedPeer:
    """The other side's protocol API as far as these tests need it: an opening request is answered 201 with
    the provider's pid, every other transfer message 200 (acknowledged)."""

    def __init__(self, participant: ParticipantRuntime) -> None:
        self.base = participant.dsp_base

    async def answer(self, method: str, path: str, body: Any, caller: str) -> tuple[int, Any]:
        if path == "/transfers/request":
            return 201, m.encode(m.TransferProcess(providerPid=PROVIDER_PID, consumerPid=body["consumerPid"],
                                                   state="REQUESTED"))
        return 200, m.encode(m.TransferProcess(providerPid=PROVIDER_PID, consumerPid="c", state="STARTED"))


@dataclass
class Setup:
    acme: ParticipantRuntime
    parts: ParticipantRuntime
    store: Store
    contracts: ContractRepository
    transfers: TransferRepository
    client: NegotiationOutbound
    clock: NegotiationClock
    data_dir: Path
    service: TransferService = field(init=False)

    def build_service(self, **given: Any) -> TransferService:
        """A transfer service of these participants, store, client and clock; *given* adds or overrides keyword
        arguments."""

        async def peer_facts(_: ParticipantRuntime, did: str) -> PeerFacts:
            return PeerFacts(did)

        arguments: dict[str, Any] = dict(
            participant_by_id={self.acme.id: self.acme, self.parts.id: self.parts}.get,
            resolver=FederationResolver(self.acme.did_document(), self.parts.did_document()), dsp_base_of=_unused,
            peer_facts=peer_facts, data_dir=self.data_dir, delivery_timeout_s=5.0, start_timeout_s=START_S,
            stall_timeout_s=STALL_S, token_ttl_s=900.0, chunk_retries=3, vault_quota_bytes=10**9, clock=self.clock)
        return TransferService(
            self.transfers, self.contracts, self.client,
            Vault(self.data_dir, key_of=vault_key, stop_receiving=_unused),
            Movers(push=sender.push, pull=receiver.pull, finish_push=receiver.finish_push), **(arguments | given))

    async def agreement(self, *, state: str = "FINALIZED", consumer: str | None = None) -> None:
        """An agreement on ASSET between acme (provider) and *consumer* (parts by default), held by both."""
        consumer_did = consumer or self.parts.did
        body = {"@id": AGREEMENT, "@type": "Agreement", "target": ASSET, "assigner": self.acme.did,
                "assignee": consumer_did, "permission": [{"action": "use"}], "timestamp": "2026-01-01T00:00:00Z"}
        for participant, role in ((self.acme, "provider"), (self.parts, "consumer")):
            await self.contracts.add_agreement(participant.id, AgreementRecord(
                id=AGREEMENT, negotiation_id="n-1", role=role, provider_did=self.acme.did, consumer_did=consumer_did,
                asset_id=ASSET, agreement=body, state=state, created_at="2026-01-01T00:00:00Z"))

    async def record(self, participant: ParticipantRuntime, transfer_id: str) -> TransferRecord:
        found = await self.transfers.get(participant.id, transfer_id)
        assert found is not None
        return found

    async def requested(self, fmt: str = PULL) -> TransferRecord:
        """parts asks acme for the agreement's data; acme acknowledges."""
        record = await self.service.request(self.parts, self.acme.dsp_base, self.acme.did, AGREEMENT, ASSET, fmt)
        assert record.provider_pid == PROVIDER_PID and record.pending is None
        return record

    async def started(self, record: TransferRecord, data_address: dict[str, Any] | None) -> TransferRecord:
        """acme's start message for *record* arrives at parts."""
        message = m.TransferStartMessage(providerPid=PROVIDER_PID, consumerPid=record.id, dataAddress=data_address)
        return await self.service.on_message(self.parts, record.id, Kind.START, message, self.acme.did)


async def _unused(*_: Any) -> Any:
    raise AssertionError("not used by these tests")


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    store = Store(tmp_path / "tds.db")
    await store.open()
    acme, parts = runtime("acme"), runtime("parts")
    for participant in (acme, parts):
        await SqliteRepository(store).add_participant(participant.record)
    contracts, transfers = ContractRepository(store), TransferRepository(store)
    client, clock = NegotiationOutbound(), NegotiationClock()
    client.connect(ScriptedPeer(acme))  # type: ignore[arg-type]
    client.connect(ScriptedPeer(parts))  # type: ignore[arg-type]

    setup = Setup(acme, parts, store, contracts, transfers, client, clock, tmp_path)
    setup.service = setup.build_service()
    yield setup
    await setup.service.close()
    await store.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    """Wait (in real time, bounded) for the service's background moves to reach *check*."""
    await testing.eventually(check, timeout_s, every_s=0.01, what="the transfer's next state")


# -- the provider's decision on a request ------------------------------------------------------------------


@pytest.mark.parametrize(("state", "consumer", "refusal"), [
    ("AGREED", None, f"agreement {AGREEMENT!r} is AGREED, not FINALIZED"),
    ("REVOKED", None, f"agreement {AGREEMENT!r} is REVOKED, not FINALIZED"),
    ("FINALIZED", "did:web:someone-else.example", f"no agreement {AGREEMENT!r} with you"),
])
async def test_a_provider_refuses_a_request_unless_the_agreement_is_finalized_with_the_caller(
        setup: Setup, state: str, consumer: str | None, refusal: str) -> None:
    await setup.agreement(state=state, consumer=consumer)
    message = m.TransferRequestMessage(consumerPid="urn:uuid:consumer-side", agreementId=AGREEMENT, format=PULL,
                                       callbackAddress=setup.parts.dsp_base)
    with pytest.raises(TransferError, match=refusal):
        await setup.service.on_request(setup.acme, message, setup.parts.did)
    assert await setup.transfers.find(setup.acme.id, limit=10) == []
    assert setup.client.sent == []


# -- the consumer's request: its credentials shown again first ------------------------------------------


@pytest.mark.parametrize(("holds", "handshakes"), [(True, 1), (False, 0)])
async def test_a_consumer_holding_credentials_shakes_hands_before_it_asks_for_data(
        setup: Setup, holds: bool, handshakes: int) -> None:
    """The provider may have forgotten the claims it counted (a restart): a consumer that holds credentials
    presents them again before its request; one that holds none sends the request only."""
    await setup.agreement()
    shaken: list[tuple[str, str, int]] = []

    async def verify_peer(participant: ParticipantRuntime, peer: str) -> None:
        shaken.append((participant.id, peer, len(setup.client.sent)))  # what had left before the handshake

    async def holds_credentials(participant: ParticipantRuntime) -> bool:
        return holds

    async def dsp_base_of(peer: str) -> str:
        return setup.acme.dsp_base

    service = setup.build_service(verify_peer=verify_peer, holds_credentials=holds_credentials,
                            dsp_base_of=dsp_base_of)
    try:
        record = await service.start(setup.parts, AGREEMENT, "https://acme.example")
    finally:
        await service.close()
    assert record.provider_pid == PROVIDER_PID
    assert shaken == [(setup.parts.id, setup.acme.dsp_base, 0)] * handshakes
    assert [sent.url for sent in setup.client.sent] == [f"{setup.acme.dsp_base}/transfers/request"]


async def test_a_failed_handshake_does_not_keep_the_consumer_from_asking(setup: Setup) -> None:
    """Whatever the handshake meets, the provider decides the request."""
    from connector.errors import PeerError

    await setup.agreement()

    async def verify_peer(participant: ParticipantRuntime, peer: str) -> None:
        raise PeerError(f"{peer} refused the handshake with 503")

    async def holds_credentials(participant: ParticipantRuntime) -> bool:
        return True

    async def dsp_base_of(peer: str) -> str:
        return setup.acme.dsp_base

    service = setup.build_service(verify_peer=verify_peer, holds_credentials=holds_credentials,
                            dsp_base_of=dsp_base_of)
    try:
        record = await service.start(setup.parts, AGREEMENT, "https://acme.example")
    finally:
        await service.close()
    assert record.state == "REQUESTED" and record.provider_pid == PROVIDER_PID


# -- the consumer's handling of a start --------------------------------------------------------------------


async def test_a_start_with_an_unusable_data_address_terminates_the_transfer_with_the_reason(setup: Setup) -> None:
    await setup.agreement()
    record = await setup.requested()
    unusable = {"@type": "DataAddress", "endpointType": ENDPOINT_TYPE, "endpointProperties": []}  # no endpoint
    await setup.started(record, unusable)

    async def terminated() -> bool:
        return (await setup.record(setup.parts, record.id)).state == "TERMINATED"

    await eventually(terminated)
    final = await setup.record(setup.parts, record.id)
    assert "the provider's data address has no endpoint or token" in final.reason
    [told] = setup.client.messages("TransferTerminationMessage")
    assert told["providerPid"] == PROVIDER_PID
    assert any("no endpoint or token" in reason for reason in told["reason"])


# -- persist before send -----------------------------------------------------------------------------------


async def test_the_providers_start_is_stored_before_it_is_sent(setup: Setup) -> None:
    await setup.agreement()
    own = setup.service.confinement(setup.acme).own
    own.mkdir(parents=True)
    (own / "readings.csv").write_bytes(b"t,value\n1,20.5\n")
    await setup.contracts.add_entry(setup.acme.id, Asset(
        id=ASSET, content_type="text/csv", data_address={"type": "File", "path": "readings.csv"}))
    seen: list[tuple[str, str | None, str | None]] = []

    async def look(sent: NegotiationSent) -> None:  # what the store holds as the start leaves
        if sent.url.endswith("/start"):
            [stored] = await setup.transfers.find(setup.acme.id, limit=10)
            seen.append((stored.state, (stored.pending or {}).get("kind"), stored.token_hash))

    setup.client.before_answer = look
    message = m.TransferRequestMessage(consumerPid="urn:uuid:consumer-side", agreementId=AGREEMENT, format=PULL,
                                       callbackAddress=setup.parts.dsp_base)
    record = await setup.service.on_request(setup.acme, message, setup.parts.did)

    async def acknowledged() -> bool:
        current = await setup.record(setup.acme, record.id)
        return current.state == "STARTED" and current.pending is None

    await eventually(acknowledged)
    [(state, pending, token_hash)] = seen
    assert (state, pending) == ("STARTED", "START") and token_hash
    [start] = setup.client.messages("TransferStartMessage")
    assert start["dataAddress"]["endpoint"] == f"{setup.acme.base_url}/data/{record.id}"


# -- the consumer's deadlines ------------------------------------------------------------------------------


async def test_a_push_that_sends_nothing_for_the_stall_timeout_is_terminated_with_the_reason(setup: Setup) -> None:
    await setup.agreement()
    record = await setup.started(await setup.requested(PUSH), None)
    assert record.state == "STARTED"
    setup.clock.advance(STALL_S + 1)  # no progress since the start
    await setup.service.run_due()
    final = await setup.record(setup.parts, record.id)
    assert final.state == "TERMINATED"
    assert final.reason == f"{setup.acme.did} sent no data for {STALL_S:g} s (not even the manifest)"
    assert len(setup.client.messages("TransferTerminationMessage")) == 1


async def test_a_push_that_makes_progress_is_not_terminated_at_the_stall_deadline(setup: Setup) -> None:
    await setup.agreement()
    record = await setup.started(await setup.requested(PUSH), None)
    setup.clock.advance(STALL_S / 2)
    await setup.transfers.set_received(setup.parts.id, record.id, 4096)  # bytes arrived meanwhile
    setup.clock.advance(STALL_S / 2 + 1)
    await setup.service.run_due()
    assert (await setup.record(setup.parts, record.id)).state == "STARTED"
    assert setup.client.messages("TransferTerminationMessage") == []


async def held_pull(setup: Setup) -> TransferRecord:
    """parts' pull, STARTED, whose bytes no mover brings (as if it had died or hung)."""
    await setup.agreement()
    setup.service.script = lambda r: "wait" if r.state == "STARTED" else None
    address = {"@type": "DataAddress", "endpointType": ENDPOINT_TYPE, "endpoint": "https://acme.example/data/x",
               "endpointProperties": [{"@type": "EndpointProperty", "name": "authorization", "value": "t"}]}
    record = await setup.started(await setup.requested(), address)
    assert record.state == "STARTED"
    return record


async def test_a_pull_that_stores_nothing_for_the_stall_timeout_is_terminated_whatever_the_cause(
        setup: Setup) -> None:
    record = await held_pull(setup)
    setup.clock.advance(STALL_S - 1)
    assert await setup.service.run_due() == 0
    setup.clock.advance(2)
    await setup.service.run_due()
    final = await setup.record(setup.parts, record.id)
    assert (final.state, final.reason) == ("TERMINATED", f"{setup.acme.did} sent no data for {STALL_S:g} s "
                                                         "(not even the manifest)")
    assert len(setup.client.messages("TransferTerminationMessage")) == 1


async def test_the_stall_limit_names_the_last_failure_to_store_and_does_not_count_what_was_discarded(
        setup: Setup) -> None:
    record = await held_pull(setup)
    key = (setup.parts.id, record.id)
    began = setup.service.progressed_at(key)
    setup.clock.advance(STALL_S / 2)
    setup.service.progressed(key)  # chunks stored ...
    setup.service.attempt_failed(key, "could not store the received data: writing in vault/x failed: No space "
                                      "left on device (ENOSPC)", began)  # ... then discarded: no progress after all
    setup.clock.advance(STALL_S / 2 + 1)
    await setup.service.run_due()
    final = await setup.record(setup.parts, record.id)
    assert final.state == "TERMINATED"
    assert final.reason == (f"no data could be stored for {STALL_S:g} s (not even the manifest): could not store "
                            "the received data: writing in vault/x failed: No space left on device (ENOSPC)")


async def test_a_stall_deadline_that_cannot_be_committed_is_tried_again_once_it_can(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.errors import StorageError
    from connector.services.process_shell import RETRY_MAX_S

    record = await held_pull(setup)
    original = setup.transfers.update
    full = {"disk": True}

    async def update(*args: Any, **kwargs: Any) -> bool:
        if full["disk"]:
            raise StorageError("commit failed: database or disk is full")
        return await original(*args, **kwargs)

    monkeypatch.setattr(setup.transfers, "update", update)
    setup.clock.advance(STALL_S + 1)
    await setup.service.run_due()  # the termination fails to commit: logged, and not forgotten
    assert (await setup.record(setup.parts, record.id)).state == "STARTED"
    full["disk"] = False
    setup.clock.advance(RETRY_MAX_S)
    assert await setup.service.run_due() == 1
    assert (await setup.record(setup.parts, record.id)).state == "TERMINATED"


async def test_a_transfer_the_provider_never_starts_is_terminated_at_the_start_deadline(setup: Setup) -> None:
    await setup.agreement()
    record = await setup.requested()
    setup.clock.advance(START_S - 1)
    assert await setup.service.run_due() == 0
    setup.clock.advance(2)
    await setup.service.run_due()
    final = await setup.record(setup.parts, record.id)
    assert final.state == "TERMINATED"
    assert final.reason == f"{setup.acme.did} did not start the transfer within {START_S:.0f} s"
