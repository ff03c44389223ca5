"""The agreements in SQLite: which lifecycle states (``connector.protocol.agreement_lifecycle``) the queries
count as in force, as once in force and as never in force; states and roles read back as their enums; and a
negotiation's move writes its agreement only over the state it read it in. Also the negotiations' rows the
repository keeps in memory, and the acknowledgements that wait to be written: each read is what the store holds
or will hold. One store file, no node."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
import pytest

from connector.errors import StorageError
from connector.protocol.agreement_lifecycle import AgreementEvent, AgreementState, next_state
from connector.protocol.negotiation import Role, State
from connector.store import usage as usage_store
from connector.store.db import Store
from connector.store.records import AgreementRecord, NegotiationRecord
from connector.store.repository import AgreementChange, ContractRepository, Participant, SqliteRepository

ACME = "acme"
LONG_AGO = "2020-01-01T00:00:00Z"
CUTOFF = "2021-01-01T00:00:00Z"


@pytest.fixture
async def contracts(tmp_path: Any) -> Any:
    store = Store(tmp_path / "agreements.db")
    await store.open()
    await SqliteRepository(store).add_participant(Participant(ACME, ACME, "did:web:acme", "Acme", "CN",
                                                              created_at=LONG_AGO))
    yield ContractRepository(store)
    await store.close()


async def ended_with(contracts: ContractRepository, peer: str, state: AgreementState | None) -> str:
    """A negotiation *peer* opened with acme that ended TERMINATED long ago, with an agreement in *state*."""
    negotiation_id = f"n-{peer}"
    await contracts.create_negotiation(NegotiationRecord(
        participant_id=ACME, id=negotiation_id, role=Role.PROVIDER, state=State.TERMINATED, counterparty_did=peer,
        created_at=LONG_AGO, updated_at=LONG_AGO), "made")
    if state is not None:
        await contracts.add_agreement(ACME, AgreementRecord(
            id=f"a-{peer}", negotiation_id=negotiation_id, role=Role.PROVIDER, provider_did="did:web:acme",
            consumer_did=peer, asset_id="asset", agreement={}, state=state, created_at=LONG_AGO))
    return negotiation_id


async def test_only_counterparties_of_agreements_that_reached_finalized_are_known(contracts):
    for state in AgreementState:
        await ended_with(contracts, f"did:web:{state.value.lower()}", state)
    assert sorted(await contracts.known_counterparties()) == [(ACME, "did:web:finalized"), (ACME, "did:web:revoked")]


async def test_the_agreements_in_force_are_the_finalized_ones(contracts):
    for state in AgreementState:
        await ended_with(contracts, f"did:web:{state.value.lower()}", state)
    assert [a.id for a in await contracts.agreements(ACME)] == ["a-did:web:finalized"]
    assert len(await contracts.agreements(ACME, state=None)) == len(AgreementState)


@pytest.mark.parametrize("state", [None, AgreementState.AGREED, AgreementState.VERIFIED])
async def test_a_strangers_negotiation_goes_with_an_agreement_never_in_force(contracts, state):
    negotiation_id = await ended_with(contracts, "did:web:stranger", state)
    assert await contracts.purge_stranger_negotiations(CUTOFF) == 1
    assert await contracts.negotiation(ACME, negotiation_id) is None
    assert await contracts.agreements(ACME, state=None) == []


@pytest.mark.parametrize("state", [AgreementState.FINALIZED, AgreementState.REVOKED])
async def test_a_negotiation_whose_agreement_reached_finalized_stays(contracts, state):
    negotiation_id = await ended_with(contracts, "did:web:partner", state)
    assert await contracts.purge_stranger_negotiations(CUTOFF) == 0
    assert await contracts.negotiation(ACME, negotiation_id) is not None
    [agreement] = await contracts.agreements(ACME, state=None)
    assert agreement.state == state


async def test_a_revocation_stores_the_wire_value(contracts):
    await ended_with(contracts, "did:web:partner", AgreementState.FINALIZED)
    await contracts.store.write(lambda db: usage_store.set_agreement_state(db, ACME, "a-did:web:partner",
                                                                           AgreementState.REVOKED))
    stored = await contracts.store.read(lambda db: db.execute("SELECT state FROM agreements").fetchone()[0])
    assert stored == "REVOKED" and type(stored) is str


async def test_a_stored_state_and_role_read_back_as_their_members(contracts):
    negotiation_id = await ended_with(contracts, "did:web:partner", AgreementState.FINALIZED)
    negotiation = await contracts.negotiation(ACME, negotiation_id)
    [agreement] = await contracts.agreements(ACME)
    assert negotiation is not None
    assert (negotiation.state, negotiation.role) == (State.TERMINATED, Role.PROVIDER)
    assert type(negotiation.state) is State and type(negotiation.role) is Role
    assert type(agreement.state) is AgreementState and type(agreement.role) is Role
    rows = await contracts.store.read(lambda db: db.execute("SELECT role, state FROM negotiations").fetchall())
    assert rows == [("provider", "TERMINATED")] and all(type(v) is str for v in rows[0])


@pytest.mark.parametrize(("column", "value"), [("state", "LIMBO"), ("role", "broker")])
async def test_a_stored_value_no_enum_knows_fails_loudly(contracts, column, value):
    negotiation_id = await ended_with(contracts, "did:web:partner", None)
    await contracts.store.write(lambda db: db.execute(f"UPDATE negotiations SET {column} = ?", [value]))
    # Read from the store, as after a restart (the repository that committed the row reads back its own copy).
    with pytest.raises(StorageError) as raised:
        await ContractRepository(contracts.store).negotiation(ACME, negotiation_id)
    assert repr(value) in raised.value.message and f"$.{column}" in raised.value.message
    assert repr(negotiation_id) in raised.value.message


# -- the agreement's write with a negotiation's move: a compare and set on the state it was read in --------

CONSUMER_PID, AGREEMENT_ID = "n-consumer", "urn:uuid:agreement"


async def verified(contracts: ContractRepository) -> NegotiationRecord:
    """Our consumer's negotiation, VERIFIED, and its agreement, VERIFIED too: the provider's FINALIZED is next."""
    negotiation = NegotiationRecord(
        participant_id=ACME, id=CONSUMER_PID, role=Role.CONSUMER, state=State.VERIFIED,
        counterparty_did="did:web:provider", agreement={"@id": AGREEMENT_ID}, created_at=LONG_AGO,
        updated_at=LONG_AGO)
    await contracts.create_negotiation(negotiation, "made")
    await contracts.add_agreement(ACME, AgreementRecord(
        id=AGREEMENT_ID, negotiation_id=CONSUMER_PID, role=Role.CONSUMER, provider_did="did:web:provider",
        consumer_did="did:web:acme", asset_id="asset", agreement={"@id": AGREEMENT_ID},
        state=AgreementState.VERIFIED, created_at=LONG_AGO))
    return negotiation


async def finalize(contracts: ContractRepository, negotiation: NegotiationRecord, change: AgreementChange) -> bool:
    """The consumer's commit of the provider's FINALIZED: the negotiation's move with the agreement's row."""
    return await contracts.update_negotiation(
        msgspec.structs.replace(negotiation, state=State.FINALIZED), expected_state=negotiation.state,
        event="message-in", agreement=change)


async def finalized_after_reading(contracts: ContractRepository) -> AgreementChange:
    """Read the agreement and work out its row after the FINALIZED event, as the negotiation service does."""
    read = await contracts.agreement(ACME, AGREEMENT_ID)
    assert read is not None
    return AgreementChange(msgspec.structs.replace(read, state=next_state(read.state, AgreementEvent.FINALIZED)),
                           read_in=read.state)


async def revoke(contracts: ContractRepository) -> None:
    """The provider's revocation reaching the consumer's node (as ``ReceiptService.on_revocation`` writes it)."""
    await contracts.store.write(lambda db: usage_store.set_agreement_state(db, ACME, AGREEMENT_ID,
                                                                           AgreementState.REVOKED))


async def stored_states(contracts: ContractRepository) -> tuple[State, AgreementState]:
    negotiation = await contracts.negotiation(ACME, CONSUMER_PID)
    agreement = await contracts.agreement(ACME, AGREEMENT_ID)
    assert negotiation is not None and agreement is not None
    return negotiation.state, agreement.state


async def test_a_move_writes_the_agreement_it_read(contracts):
    negotiation = await verified(contracts)

    assert await finalize(contracts, negotiation, await finalized_after_reading(contracts))

    assert await stored_states(contracts) == (State.FINALIZED, AgreementState.FINALIZED)


async def test_a_revocation_between_the_read_and_the_write_stays_revoked(contracts):
    negotiation = await verified(contracts)
    change = await finalized_after_reading(contracts)  # read VERIFIED, to be FINALIZED
    await revoke(contracts)  # committed meanwhile

    assert not await finalize(contracts, negotiation, change)
    assert await stored_states(contracts) == (State.VERIFIED, AgreementState.REVOKED)  # nothing of the move

    # Read again (a re-delivered FINALIZED): the revoked agreement stays revoked, the negotiation ends.
    assert await finalize(contracts, negotiation, await finalized_after_reading(contracts))
    assert await stored_states(contracts) == (State.FINALIZED, AgreementState.REVOKED)


async def test_a_new_agreement_is_not_written_over_a_stored_one(contracts):
    negotiation = await verified(contracts)
    await revoke(contracts)
    stored = await contracts.agreement(ACME, AGREEMENT_ID)
    assert stored is not None

    opened = AgreementChange(msgspec.structs.replace(stored, state=AgreementState.AGREED), read_in=None)

    assert not await finalize(contracts, negotiation, opened)
    assert await stored_states(contracts) == (State.VERIFIED, AgreementState.REVOKED)


# -- the negotiations' rows kept in memory (``ContractRepository``, SQLite: this process alone writes) ------------

async def stored(contracts: ContractRepository, negotiation_id: str) -> NegotiationRecord | None:
    """The negotiation as the store holds it (a repository that kept nothing reads it)."""
    return await ContractRepository(contracts.store).negotiation(ACME, negotiation_id)


async def test_a_negotiation_reads_back_as_committed_and_as_the_store_holds_it(contracts):
    negotiation = await verified(contracts)
    got = await contracts.negotiation(ACME, CONSUMER_PID)
    assert got == negotiation == await stored(contracts, CONSUMER_PID)
    # Kept per participant, as the store scopes it: another tenant asking for the same id finds nothing.
    assert await contracts.negotiation("another-tenant", CONSUMER_PID) is None
    moved = msgspec.structs.replace(negotiation, state=State.FINALIZED, reason="done", agreement={"@id": "x"})
    assert await contracts.update_negotiation(moved, expected_state=State.VERIFIED, event="moved")
    assert await contracts.negotiation(ACME, CONSUMER_PID) == moved == await stored(contracts, CONSUMER_PID)


async def test_each_read_is_a_copy_of_its_own(contracts):
    await verified(contracts)
    first = await contracts.negotiation(ACME, CONSUMER_PID)
    assert first is not None and first.agreement is not None
    first.agreement["@id"] = "changed by a caller"
    again = await contracts.negotiation(ACME, CONSUMER_PID)
    assert again is not None and again.agreement == {"@id": AGREEMENT_ID}


async def test_a_refused_move_leaves_the_stored_row_to_be_read(contracts):
    negotiation = await verified(contracts)
    # Another write moved the negotiation behind this repository's back.
    await contracts.store.write(lambda db: db.execute("UPDATE negotiations SET state = 'TERMINATED', reason = 'x'"))
    refused = msgspec.structs.replace(negotiation, state=State.FINALIZED)
    assert not await contracts.update_negotiation(refused, expected_state=State.VERIFIED, event="moved")
    got = await contracts.negotiation(ACME, CONSUMER_PID)
    assert got is not None and (got.state, got.reason) == (State.TERMINATED, "x")


async def test_a_failed_move_leaves_the_stored_row_to_be_read(contracts, monkeypatch):
    negotiation = await verified(contracts)

    def full_disk(*_: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("connector.store.repository._event", full_disk)  # the history's insert, after the update
    with pytest.raises(sqlite3.OperationalError):
        await contracts.update_negotiation(msgspec.structs.replace(negotiation, state=State.FINALIZED),
                                           expected_state=State.VERIFIED, event="moved")
    assert await contracts.negotiation(ACME, CONSUMER_PID) == negotiation == await stored(contracts, CONSUMER_PID)


async def delivered(contracts: ContractRepository) -> tuple[NegotiationRecord, NegotiationRecord]:
    """Our consumer's negotiation with its verification pending, stored; and as its delivery leaves it."""
    negotiation = msgspec.structs.replace(await verified(contracts), state=State.REQUESTED, id="n-pending",
                                          consumer_pid="n-pending",
                                          pending={"kind": "VERIFICATION", "url": "https://p/x", "body": {}},
                                          attempts=0, next_attempt_at=1.0, deliver_by=2.0)
    await contracts.create_negotiation(negotiation, "made")
    return negotiation, msgspec.structs.replace(negotiation, pending=None, next_attempt_at=None, deliver_by=None,
                                                provider_pid="urn:uuid:provider", updated_at=CUTOFF)


async def test_an_acknowledged_delivery_is_read_back_at_once_and_stored_when_written(contracts):
    stored_before, acknowledged = await delivered(contracts)
    assert contracts.acknowledge(acknowledged) == 1
    assert await contracts.negotiation(ACME, acknowledged.id) == acknowledged
    assert await stored(contracts, acknowledged.id) == stored_before  # not written yet: delivered again on a crash
    # Lists and the resumption after a suspension read it as acknowledged too.
    assert acknowledged in await contracts.negotiations(ACME)
    assert acknowledged in await contracts.all_active_negotiations()
    assert await contracts.negotiation_by_pid(ACME, acknowledged.role, acknowledged.counterparty_did,
                                              consumer_pid=acknowledged.consumer_pid) == acknowledged
    assert await contracts.write_acknowledged() == 1
    assert await stored(contracts, acknowledged.id) == acknowledged
    assert await contracts.write_acknowledged() == 0


async def test_an_acknowledged_delivery_goes_with_the_negotiations_next_commit(contracts):
    _, acknowledged = await delivered(contracts)
    contracts.acknowledge(acknowledged)
    read = await contracts.negotiation(ACME, acknowledged.id)
    assert read is not None
    moved = msgspec.structs.replace(read, state=State.AGREED)
    assert await contracts.update_negotiation(moved, expected_state=State.REQUESTED, event="moved")
    assert await stored(contracts, acknowledged.id) == moved and moved.pending is None
    assert moved.provider_pid == "urn:uuid:provider"
    assert await contracts.write_acknowledged() == 0  # nothing left waiting


async def test_an_acknowledged_delivery_of_a_negotiation_that_moved_on_is_not_written_over_it(contracts):
    _, acknowledged = await delivered(contracts)
    contracts.acknowledge(acknowledged)
    # Moved behind this repository's back (as by another writer): the acknowledgement is for a state gone by.
    await contracts.store.write(lambda db: db.execute("UPDATE negotiations SET state = 'TERMINATED', reason = 'x' "
                                                      "WHERE id = ?", [acknowledged.id]))
    assert await contracts.write_acknowledged() == 0
    got = await stored(contracts, acknowledged.id)
    assert got is not None and (got.state, got.reason, got.pending is not None) == (State.TERMINATED, "x", True)


async def test_a_purged_or_forgotten_negotiation_is_not_read_from_memory(contracts):
    negotiation_id = await ended_with(contracts, "did:web:stranger", None)
    assert await contracts.negotiation(ACME, negotiation_id) is not None
    assert await contracts.purge_stranger_negotiations(CUTOFF) == 1
    assert await contracts.negotiation(ACME, negotiation_id) is None
    _, acknowledged = await delivered(contracts)
    contracts.acknowledge(acknowledged)
    assert await contracts.negotiation("another-tenant", acknowledged.id) is None
    await contracts.store.write(lambda db: db.execute("DELETE FROM negotiations"))  # as a participant's removal
    contracts.forget(ACME)
    assert await contracts.negotiation(ACME, CONSUMER_PID) is None
    assert await contracts.negotiation(ACME, acknowledged.id) is None
    assert await contracts.write_acknowledged() == 0


async def removed_and_added_again(contracts: ContractRepository) -> None:
    """Acme's rows deleted (as ``ParticipantsService.remove`` does, after the leaving hooks ran), and acme hosted
    again under the same name."""
    repo = SqliteRepository(contracts.store)
    await repo.delete_participant(ACME)
    await repo.add_participant(Participant(ACME, ACME, "did:web:acme", "Acme", "CN", created_at=CUTOFF))


async def test_a_delivery_acknowledged_as_its_participant_leaves_is_not_kept(contracts):
    _, acknowledged = await delivered(contracts)
    contracts.forget(ACME)  # the leaving hooks; the delivery was awaiting the peer's answer meanwhile
    assert contracts.acknowledge(acknowledged) is None  # the caller commits it itself (and finds it gone)
    await removed_and_added_again(contracts)
    assert await contracts.negotiation(ACME, acknowledged.id) is None
    assert await contracts.write_acknowledged() == 0


async def test_a_move_that_lands_as_its_participant_leaves_is_not_kept(contracts, monkeypatch):
    negotiation = await verified(contracts)
    moved = msgspec.structs.replace(negotiation, state=State.TERMINATED, reason="x")

    async def leaving_meanwhile(fn: Any, *, durable: bool = False) -> Any:
        queued = contracts.store.submit(fn, durable=durable)
        contracts.forget(ACME)  # the leaving hooks run while the commit is under way
        return await queued

    monkeypatch.setattr(contracts.store, "write", leaving_meanwhile)
    assert await contracts.update_negotiation(moved, expected_state=State.VERIFIED, event="x")
    monkeypatch.undo()
    await removed_and_added_again(contracts)
    assert await contracts.negotiation(ACME, CONSUMER_PID) is None


async def test_an_acknowledgement_whose_negotiation_is_gone_is_dropped_when_written(contracts):
    _, acknowledged = await delivered(contracts)
    contracts.acknowledge(acknowledged)
    await contracts.store.write(lambda db: db.execute("DELETE FROM negotiations WHERE id = ?", [acknowledged.id]))
    assert await contracts.write_acknowledged() == 0
    assert await contracts.negotiation(ACME, acknowledged.id) is None  # no longer read from memory


def failing_writes(contracts: ContractRepository, monkeypatch: Any) -> None:
    async def full_disk(*_: Any, **__: Any) -> Any:
        raise StorageError("commit failed: database or disk is full")

    monkeypatch.setattr(contracts.store, "write", full_disk)


async def test_acknowledgements_whose_write_failed_wait_for_the_next(contracts, monkeypatch):
    stored_before, acknowledged = await delivered(contracts)
    contracts.acknowledge(acknowledged)
    with monkeypatch.context() as patched:
        failing_writes(contracts, patched)
        with pytest.raises(StorageError):
            await contracts.write_acknowledged()
    # Still read as delivered (its message is not delivered again), and written by the next write.
    assert await contracts.negotiation(ACME, acknowledged.id) == acknowledged
    assert await stored(contracts, acknowledged.id) == stored_before
    assert contracts.acknowledgements_waiting() == 1
    assert await contracts.write_acknowledged() == 1
    assert await stored(contracts, acknowledged.id) == acknowledged
    assert contracts.acknowledgements_waiting() == 0


async def test_an_acknowledgement_waits_again_when_the_commit_that_took_it_up_did_not_happen(contracts, monkeypatch):
    _, acknowledged = await delivered(contracts)
    contracts.acknowledge(acknowledged)
    moved = msgspec.structs.replace(acknowledged, state=State.AGREED)
    with monkeypatch.context() as patched:
        failing_writes(contracts, patched)
        with pytest.raises(StorageError):
            await contracts.update_negotiation(moved, expected_state=State.REQUESTED, event="moved")
    assert await contracts.negotiation(ACME, acknowledged.id) == acknowledged
    assert contracts.acknowledgements_waiting() == 1
    # Refused (the stored agreement moved on meanwhile): nothing written, and the acknowledgement waits again.
    change = AgreementChange(record=AgreementRecord(
        id=AGREEMENT_ID, negotiation_id=acknowledged.id, role=Role.CONSUMER, provider_did="did:web:provider",
        consumer_did="did:web:acme", asset_id="asset", agreement={}, state=AgreementState.FINALIZED,
        created_at=LONG_AGO), read_in=AgreementState.AGREED)
    assert not await contracts.update_negotiation(moved, expected_state=State.REQUESTED, event="moved",
                                                  agreement=change)
    assert await contracts.negotiation(ACME, acknowledged.id) == acknowledged
    assert await contracts.write_acknowledged() == 1
    assert await stored(contracts, acknowledged.id) == acknowledged


async def test_at_most_the_bound_of_rows_is_kept(contracts, monkeypatch):
    monkeypatch.setattr("connector.store.repository.KEPT_NEGOTIATIONS", 3)
    for n in range(5):
        await ended_with(contracts, f"did:web:peer-{n}", None)
    assert [key[1] for key in contracts._kept] == ["n-did:web:peer-2", "n-did:web:peer-3", "n-did:web:peer-4"]
    assert await contracts.negotiation(ACME, "n-did:web:peer-0") is not None  # read from the store
