"""The negotiation service without a node or a socket: two services wired back to back through in-memory DSP
peers (``connector.testing.NegotiationPeer``), each with its own SQLite store, a recording outbound client
and a fake clock. What a request is answered with, how an unacknowledged message is retried and given up,
and that every state is stored before the message that follows from it leaves."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connector import testing
from connector.errors import StorageError
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol import contracts
from connector.protocol import messages as m
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Kind
from connector.protocol.policy import PeerFacts
from connector.services.catalog import visible_offers
from connector.services.negotiation import NegotiationService
from connector.store import usage as usage_store
from connector.store.db import Store
from connector.store.records import Asset, ContractDefinition, NegotiationRecord, PolicyRecord
from connector.store.repository import ContractRepository, Participant, SqliteRepository
from connector.testing import (
    FederationResolver,
    NegotiationClock,
    NegotiationOutbound,
    NegotiationPeer,
    NegotiationSent,
)

OPEN = {"@id": "urn:tds:policy:open", "@type": "Set", "permission": [{"action": "use"}]}
RESEARCH_ONLY = {"@id": "urn:tds:policy:research", "@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"}]}]}
ASSET = "sensor-data"


@dataclass
class Hooks:
    """The admission hooks, recording what they are told."""

    admitted: list[tuple[str, str, str]] = field(default_factory=list)
    ended: list[tuple[str, str]] = field(default_factory=list)
    learned: list[tuple[str, str]] = field(default_factory=list)
    #: The agreements that reached FINALIZED, as the hook was given them.
    agreements: list[Any] = field(default_factory=list)


@dataclass
class Side:
    participant: ParticipantRuntime
    store: Store
    contracts: ContractRepository
    client: NegotiationOutbound
    hooks: Hooks
    service: NegotiationService

    async def record(self, negotiation_id: str) -> NegotiationRecord:
        found = await self.contracts.negotiation(self.participant.id, negotiation_id)
        assert found is not None
        return found


async def _unused(*_: Any) -> Any:
    raise AssertionError("not used by these tests")


async def make_side(tmp_path: Path, name: str, clock: NegotiationClock, resolver: FederationResolver,
                    participant: ParticipantRuntime, *, delivery_timeout_s: float = 5.0,
                    self_described: bool = False) -> Side:
    store = Store(tmp_path / f"{name}.db")
    await store.open()
    await SqliteRepository(store).add_participant(participant.record)
    repository = ContractRepository(store)
    client = NegotiationOutbound()
    hooks = Hooks()

    async def peer_facts(_: ParticipantRuntime, did: str) -> PeerFacts:
        return PeerFacts(did, self_described=self_described)

    service = NegotiationService(
        repository, client, participant_by_id={participant.id: participant}.get, resolver=resolver,
        dsp_base_of=_unused, verify_peer=_unused,
        admit=lambda *a: hooks.admitted.append(a), ended=lambda *a: hooks.ended.append(a),
        learn=lambda pid, peer, agreement: (hooks.learned.append((pid, peer)), hooks.agreements.append(agreement)),
        peer_facts=peer_facts,
        delivery_timeout_s=delivery_timeout_s, negotiation_timeout_s=600.0, clock=clock,
    )
    return Side(participant, store, repository, client, hooks, service)


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example", legal_name=name.title(), region="CN-GD")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


@pytest.fixture
def clock() -> NegotiationClock:
    return NegotiationClock()


@pytest.fixture
async def pair(tmp_path: Path, clock: NegotiationClock) -> Any:
    """A provider (acme, offering ASSET under OPEN terms) and a consumer (parts), each reaching the other."""
    async with make_pair(tmp_path, clock) as sides:
        yield sides


@contextlib.asynccontextmanager
async def make_pair(tmp_path: Path, clock: NegotiationClock, *, self_described: bool = False) -> Any:
    """The :func:`pair`; *self_described*: each side holds the other's verified self-description."""
    acme, parts = runtime("acme"), runtime("parts")
    resolver = FederationResolver(acme.did_document(), parts.did_document())
    provider = await make_side(tmp_path, "acme", clock, resolver, acme, self_described=self_described)
    consumer = await make_side(tmp_path, "parts", clock, resolver, parts, self_described=self_described)
    provider.client.connect(NegotiationPeer(parts, consumer.service))
    consumer.client.connect(NegotiationPeer(acme, provider.service))
    await provider.contracts.add_entry(acme.id, Asset(id=ASSET, title="Sensor data"))
    for policy_id in ("open-access", "open-contract"):
        policy = {**OPEN, "@id": f"urn:tds:policy:{policy_id}"}
        await provider.contracts.add_entry(acme.id, PolicyRecord(id=policy_id, policy=policy))
    await provider.contracts.add_entry(acme.id, ContractDefinition(
        id="cd-1", access_policy_id="open-access", contract_policy_id="open-contract", assets=[ASSET]))
    try:
        yield provider, consumer
    finally:
        for side in (provider, consumer):
            await side.service.close()
            await side.store.close()


async def offered(provider: Side, consumer: Side, clock: NegotiationClock) -> tuple[dict[str, Any], str]:
    """The provider's offer of ASSET as the consumer's catalog request would show it: terms and offer id."""
    snapshot = await provider.contracts.catalog(provider.participant.id)
    [offer] = visible_offers(snapshot, PeerFacts(consumer.participant.did), datetime.fromtimestamp(clock(), UTC))
    return offer.policy, offer.offer_id


async def request(provider: ParticipantRuntime, consumer: Side, terms: dict[str, Any], offer_id: str
                  ) -> NegotiationRecord:
    """The consumer opens a negotiation with *provider* for ASSET on *terms*."""
    return await consumer.service.request(consumer.participant, provider.dsp_base, provider.did, terms, offer_id,
                                          ASSET)


async def eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Wait (in real time, bounded) for the background moves of both sides to reach *check*."""
    await testing.eventually(check, timeout_s, every_s=0.01, what="the negotiation's next state")


async def test_a_request_for_the_offered_terms_is_answered_by_an_agreement(pair, clock):
    provider, consumer = pair
    terms, offer_id = await offered(provider, consumer, clock)

    opened = await request(provider.participant, consumer, terms, offer_id)
    final = await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)

    answer = provider.client.messages()[0]
    assert answer["@type"] == "ContractAgreementMessage"
    assert answer["agreement"]["assignee"] == consumer.participant.did
    assert answer["agreement"]["assigner"] == provider.participant.did
    assert final is not None and final.state == "FINALIZED"
    agreement = await consumer.contracts.agreement(consumer.participant.id, answer["agreement"]["@id"])
    assert agreement is not None and agreement.provider_proof and agreement.consumer_proof


@pytest.mark.parametrize(("self_described", "context"), [
    (True, [m.DSP_CONTEXT, "https://w3id.org/tds/v1"]),  # a TDS node: it reads the context defining the proof
    (False, [m.DSP_CONTEXT]),  # any other connector loads the DSP contexts only (the DSP TCK, EDC)
])
async def test_the_signed_messages_name_the_nodes_context_only_to_a_self_described_peer(
        tmp_path, clock, self_described, context):
    async with make_pair(tmp_path, clock, self_described=self_described) as (provider, consumer):
        terms, offer_id = await offered(provider, consumer, clock)
        opened = await request(provider.participant, consumer, terms, offer_id)
        await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)
        [agreement] = provider.client.messages("ContractAgreementMessage")
        [verification] = consumer.client.messages("ContractAgreementVerificationMessage")
        [opening] = consumer.client.messages("ContractRequestMessage")
    for message in (agreement, verification):
        assert message["@context"] == context and message[m.PROOF]["cryptosuite"] == "eddsa-jcs-2022"
    assert opening["@context"] == [m.DSP_CONTEXT]  # a message without the node's extensions: DSP's alone


async def test_the_agreement_names_the_dataset_by_its_absolute_id(pair, clock):
    provider, consumer = pair
    terms, offer_id = await offered(provider, consumer, clock)
    assert offer_id.startswith(f"urn:tds:offer:cd-1:{ASSET}:")
    opened = await request(provider.participant, consumer, terms, offer_id)  # the consumer names ASSET bare
    final = await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)
    [answer] = provider.client.messages("ContractAgreementMessage")
    assert answer["agreement"]["target"] == f"urn:tds:asset:{provider.participant.did}:{ASSET}"
    assert final is not None and final.state == "FINALIZED"  # the consumer reads both as the same dataset


async def test_a_request_for_other_terms_is_answered_by_a_counter_offer_with_the_offered_terms(pair, clock):
    provider, consumer = pair
    _, offer_id = await offered(provider, consumer, clock)
    other = contracts.read_policy(RESEARCH_ONLY, "offer")

    opened = await request(provider.participant, consumer, other, offer_id)

    async def offered_back() -> bool:
        return (await consumer.record(opened.id)).state == "OFFERED"

    await eventually(offered_back)
    [answer] = provider.client.messages()
    assert answer["@type"] == "ContractOfferMessage"
    assert answer["offer"]["target"] == f"urn:tds:asset:{provider.participant.did}:{ASSET}"
    assert answer["offer"]["@id"].startswith(f"urn:tds:offer:cd-1:{ASSET}:")
    assert contracts.same_terms(contracts.read_policy(answer["offer"], "offer"), contracts.read_policy(OPEN, "offer"))
    # The consumer asked for other terms: accepting the counter-offer is its operator's decision.
    assert not consumer.client.messages("ContractNegotiationEventMessage")


async def test_an_unacknowledged_message_is_retried_with_backoff_then_the_negotiation_is_terminated(
    tmp_path, clock
):
    acme, parts = runtime("acme"), runtime("parts")
    consumer = await make_side(tmp_path, "parts", clock, FederationResolver(), parts, delivery_timeout_s=5.0)
    consumer.client.down_status = 503  # nobody answers at the provider's address but a busy proxy
    try:
        opened = await request(acme, consumer, contracts.read_policy(OPEN, "offer"), "cd-1:sensor-data:v1")
        record, delays = opened, []
        while record.pending is not None:
            delays.append(record.next_attempt_at - clock())
            clock.now = record.next_attempt_at  # the retry comes due: no one sleeps
            assert await consumer.service.run_due() == 1
            record = await consumer.record(opened.id)
    finally:
        await consumer.service.close()
        await consumer.store.close()

    attempts = [s for s in consumer.client.sent if s.method == "POST"]
    url = f"{acme.dsp_base}/negotiations/request"
    assert record.state == "TERMINATED"
    assert record.reason == (f"ContractRequestMessage could not be delivered to {acme.did} ({url}) after "
                             f"{len(attempts)} attempt(s): answered 503: the peer is not there")
    assert {s.url for s in attempts} == {url}
    # Exponential backoff with ±20 % jitter (0.2 s, 0.4 s, 0.8 s …), given up once the next retry would
    # fall past the 5 s delivery timeout.
    assert len(delays) == len(attempts) - 1 >= 3
    for i, delay in enumerate(delays):
        assert 0.2 * 2**i * 0.8 <= delay <= 0.2 * 2**i * 1.2
    assert sum(delays) <= 5.0 < sum(delays) + 0.2 * 2 ** len(delays) * 1.2
    assert consumer.hooks.ended == [(parts.id, opened.id)]  # it no longer counts against the strangers' budget


async def test_a_retry_that_finds_the_negotiation_moved_meanwhile_is_no_fault_and_is_taken_again(
    tmp_path, clock, monkeypatch
):
    # Another move was committed between the timer's read and its write (by another node process sharing the
    # store, say): the store refuses the write, and the timer logs that it looks again later, not an error.
    from structlog.testing import capture_logs

    from connector.services.process_shell import RETRY_MAX_S

    acme, parts = runtime("acme"), runtime("parts")
    consumer = await make_side(tmp_path, "parts", clock, FederationResolver(), parts, delivery_timeout_s=600.0)
    consumer.client.down_status = 503
    try:
        opened = await request(acme, consumer, contracts.read_policy(OPEN, "offer"), "cd-1:sensor-data:v1")
        update = consumer.contracts.update_negotiation

        async def moved_meanwhile(*args: Any, **kwargs: Any) -> bool:
            return False  # the compare-and-set found another state

        monkeypatch.setattr(consumer.contracts, "update_negotiation", moved_meanwhile)
        clock.now = opened.next_attempt_at
        with capture_logs() as logs:
            assert await consumer.service.run_due() == 1
        monkeypatch.setattr(consumer.contracts, "update_negotiation", update)
        levels = {(e["event"], e["log_level"]) for e in logs}
        assert ("timer step found the process moved meanwhile; taken again later", "info") in levels
        assert not [e for e in logs if e["log_level"] in ("error", "critical")]
        # Taken again after the pause: the retry goes out and the next one is planned.
        clock.now += RETRY_MAX_S
        assert await consumer.service.run_due() == 1
        again = await consumer.record(opened.id)
        assert again.attempts == opened.attempts + 1 and again.pending is not None
    finally:
        await consumer.service.close()
        await consumer.store.close()


async def test_every_state_is_stored_before_the_message_that_follows_from_it_leaves(pair, clock):
    provider, consumer = pair
    seen: list[tuple[str, str, str | None, bool]] = []

    def watch(side: Side, own_pid_field: str) -> Callable[[NegotiationSent], Any]:
        async def before_answer(sent: NegotiationSent) -> None:
            if sent.method != "POST":
                return
            stored = await side.record(sent.body[own_pid_field])
            agreement = await side.contracts.agreement(side.participant.id, str((stored.agreement or {}).get("@id")))
            seen.append((sent.body["@type"], stored.state, (stored.pending or {}).get("kind"), agreement is not None))

        return before_answer

    provider.client.before_answer = watch(provider, "providerPid")
    consumer.client.before_answer = watch(consumer, "consumerPid")
    terms, offer_id = await offered(provider, consumer, clock)

    opened = await request(provider.participant, consumer, terms, offer_id)
    await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)

    assert seen == [
        ("ContractRequestMessage", "REQUESTED", "REQUEST", False),
        ("ContractAgreementMessage", "AGREED", "AGREEMENT", True),
        ("ContractAgreementVerificationMessage", "VERIFIED", "VERIFICATION", True),
        ("ContractNegotiationEventMessage", "FINALIZED", "FINALIZED", True),
    ]


def record_commits(side: Side, into: list[tuple[list[str], bool]]) -> None:
    """Note each commit of *side*'s negotiations: the kinds of the history lines it adds, and whether it is durable."""
    create, update = side.contracts.create_negotiation, side.contracts.update_negotiation

    def note(event: str, kw: dict[str, Any]) -> None:
        kinds = ([event] if event else []) + [kind for kind, _ in kw.get("events", ())]
        into.append((kinds, kw.get("durable", False)))

    async def created(record: NegotiationRecord, event: str = "", detail: str = "", **kw: Any) -> None:
        note(event, kw)
        await create(record, event, detail, **kw)

    async def updated(record: NegotiationRecord, **kw: Any) -> bool:
        note(kw.get("event", ""), kw)
        return await update(record, **kw)

    side.contracts.create_negotiation = created  # type: ignore[method-assign]
    side.contracts.update_negotiation = updated  # type: ignore[method-assign]


async def test_each_message_is_stored_with_the_answering_move_in_one_durable_commit(pair, clock):
    provider, consumer = pair
    commits: dict[str, list[tuple[list[str], bool]]] = {"provider": [], "consumer": []}
    record_commits(provider, commits["provider"])
    record_commits(consumer, commits["consumer"])
    terms, offer_id = await offered(provider, consumer, clock)

    opened = await request(provider.participant, consumer, terms, offer_id)
    final = await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)
    assert final is not None and final.state == "FINALIZED"

    # One fsynced commit per message handled, holding the move that answers it. That a message was acknowledged
    # (nothing leaves after it) goes with the next commit, the peer's answer to it.
    assert commits["consumer"] == [
        (["message-out"], True),  # REQUESTED, the request pending
        (["message-in", "message-out"], True),  # the agreement received: VERIFIED, the verification pending
        (["message-in"], True),  # FINALIZED
    ]
    assert commits["provider"] == [
        (["message-in", "message-out"], True),  # the request received: AGREED, the agreement pending
        (["message-in", "message-out"], True),  # the verification received: FINALIZED, the event pending
    ]
    # The last message's acknowledgement, which no commit follows, is read at once (once the consumer's answer is
    # in) and written on its own after a moment.
    async def settled() -> bool:
        return (await provider.record(final.provider_pid or "")).pending is None

    async def stored_settled() -> bool:
        row = await ContractRepository(provider.store).negotiation(provider.participant.id, final.provider_pid or "")
        return row is not None and row.pending is None

    await eventually(settled)
    await eventually(stored_settled)
    history = await provider.service.history(provider.participant, final.provider_pid or "")
    assert [(e.kind, e.detail.split(" ")[0].rstrip(":")) for e in history] == [
        ("message-in", "ContractRequestMessage"), ("message-out", "ContractAgreementMessage"),
        ("message-in", "ContractAgreementVerificationMessage"),
        ("message-out", "ContractNegotiationEventMessage:FINALIZED")]


async def test_an_acknowledgement_not_yet_written_is_written_when_the_service_closes(pair, clock, monkeypatch):
    provider, consumer = pair
    monkeypatch.setattr("connector.services.negotiation.ACKNOWLEDGED_WAIT_S", 3600.0)
    terms, offer_id = await offered(provider, consumer, clock)
    opened = await request(provider.participant, consumer, terms, offer_id)
    final = await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)
    assert final is not None and final.state == "FINALIZED"
    provider_pid = final.provider_pid or ""
    unwritten = await ContractRepository(provider.store).negotiation(provider.participant.id, provider_pid)
    assert unwritten is not None and unwritten.pending is not None  # the FINALIZED event, delivered: not written yet
    # Taken up again (as when a suspended participant is served again), and later than its message's retry would
    # come: it is read as delivered, and nothing is sent again.
    def finalizations() -> int:
        return len([s for s in provider.client.sent if s.method == "POST" and s.url.endswith("/events")])

    assert finalizations() == 1
    await provider.service.resume_participant(provider.participant.id)
    clock.now = (unwritten.next_attempt_at or clock()) + 60
    await provider.service.run_due()
    assert finalizations() == 1
    await provider.service.close()
    written = await ContractRepository(provider.store).negotiation(provider.participant.id, provider_pid)
    assert written is not None and written.pending is None and written.state == "FINALIZED"


async def test_acknowledgements_whose_write_failed_are_written_later(pair, clock, monkeypatch):
    provider, consumer = pair
    monkeypatch.setattr("connector.services.negotiation.ACKNOWLEDGED_WAIT_S", 0.05)
    provider.service.script = lambda record: "wait"  # the provider takes its time: no commit of the consumer follows
    real_write, failed = consumer.store.write, []

    async def full_disk_once(fn: Any, **kwargs: Any) -> Any:
        if "write_acknowledged" in fn.__qualname__ and not failed:
            failed.append(fn)
            raise StorageError("commit failed: database or disk is full")
        return await real_write(fn, **kwargs)

    monkeypatch.setattr(consumer.store, "write", full_disk_once)
    terms, offer_id = await offered(provider, consumer, clock)
    opened = await request(provider.participant, consumer, terms, offer_id)
    assert opened.pending is None  # delivered, acknowledged in memory

    async def stored_delivered() -> bool:
        row = await ContractRepository(consumer.store).negotiation(consumer.participant.id, opened.id)
        return row is not None and row.pending is None

    await eventually(stored_delivered)  # the write after the failed one
    assert len(failed) == 1
    read = await consumer.record(opened.id)
    assert read is not None and read.pending is None and read.state == "REQUESTED"
    # The operator can end it at once: it is not taken for a message still being delivered.
    ended = await consumer.service.terminate(consumer.participant, opened.id, "no longer needed")
    assert ended.state == "TERMINATED"
    assert len([s for s in consumer.client.sent if s.method == "POST" and s.url.endswith("/request")]) == 1


async def test_no_more_acknowledgements_than_the_bound_wait_to_be_written(pair, clock, monkeypatch):
    provider, consumer = pair
    monkeypatch.setattr("connector.services.negotiation.ACKNOWLEDGED_WAIT_S", 3600.0)
    monkeypatch.setattr("connector.services.negotiation.ACKNOWLEDGED_AT_MOST", 1)
    terms, offer_id = await offered(provider, consumer, clock)
    opened = await request(provider.participant, consumer, terms, offer_id)
    final = await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)
    assert final is not None and final.state == "FINALIZED"

    async def stored_settled() -> bool:
        row = await ContractRepository(provider.store).negotiation(provider.participant.id, final.provider_pid or "")
        return row is not None and row.pending is None

    # Not the hour's wait: reaching the bound writes what waits at once.
    await eventually(stored_settled)


async def test_the_answer_to_an_opening_names_the_state_it_led_to_while_the_agreement_is_stored_with_it(pair, clock):
    provider, consumer = pair
    terms, offer_id = await offered(provider, consumer, clock)
    message = m.ContractRequestMessage(consumerPid="urn:uuid:c-1",
                                       offer=contracts.message_offer(terms, offer_id, ASSET),
                                       callbackAddress=consumer.participant.dsp_base)

    answered = await provider.service.on_initial(provider.participant, Kind.REQUEST, message, consumer.participant.did)

    assert answered.state == "REQUESTED"  # what the 201 says: the request arrived
    stored = await provider.record(answered.id)
    assert stored.state == "AGREED" and (stored.pending or {}).get("kind") == "AGREEMENT"
    assert await provider.contracts.agreement(provider.participant.id, str((stored.agreement or {})["@id"]))


async def test_a_move_that_fails_with_the_message_is_taken_after_the_answer(pair, clock, monkeypatch):
    provider, consumer = pair
    terms, offer_id = await offered(provider, consumer, clock)
    decide = provider.service._provider_decision
    calls: list[str] = []

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        calls.append("decide")
        if len(calls) == 1:
            raise RuntimeError("the catalog could not be read")
        return await decide(*args, **kwargs)

    monkeypatch.setattr(provider.service, "_provider_decision", fails_once)
    opened = await request(provider.participant, consumer, terms, offer_id)
    final = await consumer.service.wait(consumer.participant.id, opened.id, timeout_s=5)

    assert final is not None and final.state == "FINALIZED" and calls == ["decide", "decide"]
    history = await provider.service.history(provider.participant, final.provider_pid or "")
    assert [e.kind for e in history][:2] == ["message-in", "message-out"]  # stored alone, then the move


async def test_a_finalization_that_arrives_after_the_revocation_leaves_the_consumers_agreement_revoked(pair, clock):
    # The provider's FINALIZED event and its revocation are delivered and retried apart: the revocation can
    # reach the consumer's node first. The negotiation still ends FINALIZED; the agreement stays revoked.
    provider, consumer = pair
    parts = consumer.participant

    async def revoked_first(sent: NegotiationSent) -> None:
        if sent.method == "POST" and sent.body.get("eventType") == "FINALIZED":
            stored = await consumer.record(sent.body["consumerPid"])
            agreement_id = str((stored.agreement or {})["@id"])
            await consumer.store.write(lambda db: usage_store.set_agreement_state(
                db, parts.id, agreement_id, AgreementState.REVOKED))

    provider.client.before_answer = revoked_first
    terms, offer_id = await offered(provider, consumer, clock)
    opened = await request(provider.participant, consumer, terms, offer_id)
    final = await consumer.service.wait(parts.id, opened.id, timeout_s=5)

    assert final is not None and final.state == "FINALIZED"
    [agreement] = await consumer.contracts.agreements(parts.id, state=None)
    assert agreement.state == AgreementState.REVOKED
    assert (parts.id, provider.participant.did) in consumer.hooks.learned  # it reached FINALIZED: a known peer
    assert [a.id for a in consumer.hooks.agreements] == [agreement.id]  # and the hook was given the agreement


async def test_a_revocation_committed_while_the_finalization_is_handled_is_not_overwritten(pair, clock,
                                                                                          monkeypatch):
    # The consumer's node reads the agreement to work out its FINALIZED row; the provider's revocation is
    # committed before that row is written. The write is refused (409: nothing of the move is stored), the
    # provider retries its FINALIZED, and the consumer, reading the agreement again, keeps it REVOKED.
    provider, consumer = pair
    parts = consumer.participant
    read = consumer.contracts.agreement
    revoked_meanwhile: list[str] = []

    async def read_then_revoked(participant_id: str, agreement_id: str) -> Any:
        found = await read(participant_id, agreement_id)
        handling_finalized = found is not None and (await consumer.record(found.negotiation_id)).state == "VERIFIED"
        if handling_finalized and not revoked_meanwhile:
            revoked_meanwhile.append(agreement_id)
            await consumer.store.write(lambda db: usage_store.set_agreement_state(
                db, participant_id, agreement_id, AgreementState.REVOKED))
        return found

    monkeypatch.setattr(consumer.contracts, "agreement", read_then_revoked)
    terms, offer_id = await offered(provider, consumer, clock)
    opened = await request(provider.participant, consumer, terms, offer_id)

    async def finalization_refused() -> NegotiationRecord | None:
        [ours] = await provider.contracts.negotiations(provider.participant.id)
        return ours if ours.pending is not None and ours.attempts == 1 else None

    await eventually(finalization_refused)
    refused = await finalization_refused()
    assert refused is not None and refused.next_attempt_at is not None
    assert (await consumer.record(opened.id)).state == "VERIFIED"
    assert (await read(parts.id, revoked_meanwhile[0])).state == AgreementState.REVOKED

    clock.now = refused.next_attempt_at  # the provider's retry comes due
    assert await provider.service.run_due() == 1

    final = await consumer.service.wait(parts.id, opened.id, timeout_s=5)
    assert final is not None and final.state == "FINALIZED"
    agreement = await read(parts.id, revoked_meanwhile[0])
    assert agreement is not None and agreement.state == AgreementState.REVOKED
