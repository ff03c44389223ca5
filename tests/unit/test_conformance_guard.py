"""The conformance fixture's script: the node's moves per kit dataset id, in order, each in its state."""

from __future__ import annotations

from connector.conformance import GUARDS, SEEDED_ASSETS, Guard
from connector.protocol.negotiation import Role, State
from connector.store.records import NegotiationRecord


def record(asset: str, state: str, pid: str = "n1") -> NegotiationRecord:
    return NegotiationRecord(participant_id="p", id=pid, role=Role.PROVIDER, state=State(state),
                             counterparty_did="kit", asset_id=asset)


def test_moves_are_taken_in_order_each_in_its_state():
    guard = Guard()
    assert guard(record("ACN0103", "REQUESTED")) == "offer"
    assert guard(record("ACN0103", "OFFERED")) == "wait"  # our own offer went out; the kit moves next
    assert guard(record("ACN0103", "ACCEPTED")) == "agree"
    assert guard(record("ACN0103", "AGREED")) == "wait"
    assert guard(record("ACN0103", "VERIFIED")) == "finalize"
    assert guard(record("ACN0103", "FINALIZED")) == "wait"


def test_a_move_is_taken_once_even_if_asked_again_in_the_same_state():
    guard = Guard()
    assert guard(record("ACN0102", "REQUESTED")) == "offer"
    assert guard(record("ACN0102", "REQUESTED")) == "terminate"  # the kit's counter-request
    assert guard(record("ACN0102", "REQUESTED")) == "wait"


def test_unscripted_kit_ids_wait_and_other_ids_keep_the_default():
    guard = Guard()
    assert guard(record("ACN0202", "REQUESTED")) == "wait"
    assert guard(record("ACNC0302", "OFFERED")) == "wait"
    assert guard(record("qi-2026", "REQUESTED")) is None


def test_progress_is_per_negotiation():
    guard = Guard()
    assert guard(record("ACN0101", "REQUESTED", "a")) == "offer"
    assert guard(record("ACN0101", "REQUESTED", "b")) == "offer"


def test_every_provider_scenario_dataset_is_seeded():
    assert {i for i in GUARDS if i.startswith("ACN0")} <= set(SEEDED_ASSETS)
    assert "CAT0101" in SEEDED_ASSETS
