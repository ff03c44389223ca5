"""The usage log's hash chain and signed heads (pure)."""

from __future__ import annotations

import msgspec
import pytest

from usage_policies import ledger

A = "urn:uuid:agreement-a"


def chain(n: int = 5) -> list[ledger.Entry]:
    entries: list[ledger.Entry] = []
    for i in range(n):
        entries.append(ledger.append(entries[-1] if entries else None, agreement=A, kind="use", use_id=f"u{i}",
                                     at=f"2026-01-01T00:00:0{i}Z", action="use", purpose="R&D", decision="permit"))
    return entries


def heads(entries, every=2):
    return [ledger.head_document(e, signer="did:x", at=e.at) for e in entries if e.seq % every == 0 or e is entries[-1]]


def test_append_links_and_numbers():
    entries = chain(3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev == ledger.GENESIS and entries[1].prev == entries[0].hash
    assert all(ledger.entry_hash(e) == e.hash for e in entries)
    assert ledger.check_chain(entries, heads(entries)) is None


def test_changed_entry_is_named():
    entries = chain()
    entries[2] = msgspec.structs.replace(entries[2], decision="deny")
    problem = ledger.check_chain(entries, heads(entries))
    assert problem is not None and problem.seq == 3 and "changed" in problem.problem


def test_changed_and_rehashed_entry_breaks_the_next_link():
    entries = chain()
    forged = msgspec.structs.replace(entries[2], purpose="marketing")
    entries[2] = msgspec.structs.replace(forged, hash=ledger.entry_hash(forged))
    problem = ledger.check_chain(entries, [])
    assert problem is not None and problem.seq == 4 and "previous hash" in problem.problem


def test_deleted_and_reordered_entries_are_named():
    entries = chain()
    problem = ledger.check_chain(entries[:2] + entries[3:], [])
    assert problem is not None and problem.seq == 4 and "missing" in problem.problem
    swapped = [entries[0], entries[2], entries[1], *entries[3:]]
    problem = ledger.check_chain(swapped, [])
    assert problem is not None and problem.seq == 3


def test_rewritten_tail_is_caught_by_a_signed_head():
    entries = chain()
    signed = heads(entries)
    tail = [entries[0]]
    for i in range(1, 5):
        tail.append(ledger.append(tail[-1], agreement=A, kind="use", use_id=f"x{i}", at="2026-01-02T00:00:00Z",
                                  decision="permit"))
    problem = ledger.check_chain(tail, signed)
    assert problem is not None and "signed head does not match" in problem.problem


def test_unsigned_tail_and_bad_signature():
    entries = chain(4)
    problem = ledger.check_chain(entries, heads(entries[:2]))
    assert problem is not None and problem.seq == 3 and "no signed head" in problem.problem
    problem = ledger.check_chain(entries, heads(entries), verify_head=lambda head: head["seq"] != 4)
    assert problem is not None and problem.seq == 4 and "signature" in problem.problem


def test_continuing_from_a_known_entry():
    entries = chain(6)
    assert ledger.check_chain(entries[3:], heads(entries), start=entries[2]) is None


def test_entries_continue_their_own_agreement_only():
    with pytest.raises(ValueError):
        ledger.append(chain(1)[0], agreement="urn:other", kind="use", at="t")


def test_entries_carry_the_running_use_counts():
    entries = chain(3)
    denied = ledger.append(entries[-1], agreement=A, kind="use", use_id="d", at="2026-01-01T00:00:09Z",
                           action="use", decision="deny")
    duty = ledger.append(denied, agreement=A, kind="delete", at="2026-01-01T00:00:10Z")
    assert [e.uses for e in [*entries, denied, duty]] == [1, 2, 3, 3, 3]
    assert {e.first_use for e in [*entries, denied, duty]} == {"2026-01-01T00:00:00Z"}
    assert ledger.running_counts([*entries, denied, duty]) == (3, "2026-01-01T00:00:00Z")


def test_a_count_that_does_not_follow_the_chain_is_named():
    entries = chain(4)
    reset = msgspec.structs.replace(entries[3], uses=0)
    entries[3] = msgspec.structs.replace(reset, hash=ledger.entry_hash(reset))
    problem = ledger.check_chain(entries)
    assert problem is not None and problem.seq == 4 and "permitted uses" in problem.problem


def test_entries_without_counts_keep_their_hash_and_are_recounted():
    old = [msgspec.structs.replace(e, uses=None, first_use=None) for e in chain(2)]
    old = [msgspec.structs.replace(e, hash=ledger.entry_hash(e)) for e in old]
    body = old[0].body()
    assert "uses" not in body and "first_use" not in body  # hashed as before counts existed
    with pytest.raises(ValueError):
        ledger.append(old[-1], agreement=A, kind="use", at="t", decision="permit")
    assert ledger.running_counts(old) == (2, old[0].at)


@pytest.mark.parametrize("where", ["entry", "head"])
def test_a_chain_is_bound_to_the_agreement_it_is_checked_for(where):
    entries = chain(2)
    if where == "entry":
        problem = ledger.check_chain(entries, heads(entries), agreement="urn:uuid:agreement-b")
    else:
        other = {**heads(entries)[-1], "agreement": "urn:uuid:agreement-b"}
        problem = ledger.check_chain(entries, [other])
    assert problem is not None and "agreement" in problem.problem
