"""The process shell (``connector.services.process_shell``) on its own: the smallest shell over the transfer
process type, its records kept in memory, with a recording outbound client and a clock moved by hand. The
delivery of a pending message (acknowledged, retried with backoff, given up with a reason that names the step
and the peer, reconciled through the peer's view), deadlines, callers waiting for a final state, resuming
after a restart — no node, no socket, no sleeping."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from connector import testing
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol import messages as m
from connector.protocol.transfer import TERMINAL, TRANSITIONS, Kind, State
from connector.services.process_shell import (
    OPENING,
    Key,
    ProcessShell,
    ProcessType,
    backoff,
    message_reason,
    now_text,
    peer_reason,
)
from connector.store.records import TransferRecord
from connector.store.repository import Participant
from connector.testing import FakeClock, RecordingClient

PARTS_DID = "did:web:parts.example"
PARTS_DSP = "https://parts.example/api/dsp/2025-1"
OURS, THEIRS = "urn:uuid:ours", "urn:uuid:theirs"
START_URL = f"{PARTS_DSP}/transfers/{THEIRS}/start"
VIEW_URL = f"{PARTS_DSP}/transfers/{THEIRS}"
DELIVERY_S = 5.0


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example", legal_name=name.title(), region="CN-GD")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


ACME = runtime("acme")


class Shell(ProcessShell[TransferRecord]):
    """The shell over the transfer process type with records in a dict: every commit is noted in
    :attr:`history`; the node's own moves, deadlines and undeliverable processes are noted, not taken."""

    process = ProcessType(name="transfer", path="transfers", kinds=Kind, states=State, transitions=TRANSITIONS,
                          ack=m.TransferProcess, crash_prefix="after-delivering-transfer-")

    def __init__(self, client: RecordingClient, clock: FakeClock) -> None:
        super().__init__(client, clock=clock)
        self.client, self.clock = client, clock
        self.participants = {ACME.id: ACME}
        self.records: dict[Key, TransferRecord] = {}
        self.history: list[tuple[str, str, str]] = []
        self.reacted: list[tuple[str, str]] = []
        self.deadlines: list[str] = []
        self.undeliverable: list[str] = []
        self.loaded = asyncio.Event()

    def is_final(self, record: TransferRecord) -> bool:
        return State(record.state) in TERMINAL

    async def load(self, key: Key) -> TransferRecord | None:
        self.loaded.set()
        return self.records.get(key)

    async def commit(self, old: TransferRecord, new: TransferRecord, event: str, detail: str = "") -> TransferRecord:
        key = (new.participant_id, new.id)
        assert self.records[key].state == old.state, "compare and set, as the store does"
        self.records[key] = new
        self.history.append((new.id, event, detail))
        self._notify(new)
        return new

    def _participant(self, key: Key) -> Any:
        return self.participants.get(key[0])

    async def _unfinished(self) -> list[TransferRecord]:
        return [r for r in self.records.values() if not self.is_final(r) or r.pending is not None]

    async def _react(self, participant: Any, record: TransferRecord) -> None:
        self.reacted.append((record.id, record.state))

    async def _on_deadline(self, participant: Any, record: TransferRecord, now: float) -> None:
        self.deadlines.append(record.id)
        ended = msgspec.structs.replace(record, state=State.TERMINATED.value, reason="the deadline passed")
        await self.commit(record, ended, "state", "TERMINATED: the deadline passed")

    def _undeliverable(self, record: TransferRecord) -> None:
        self.undeliverable.append(record.id)

    # what a real shell does with these

    def add(self, record: TransferRecord) -> None:
        """A stored process, its retry or deadline armed (as after its commit)."""
        self.records[(record.participant_id, record.id)] = record
        self._notify(record)

    async def send(self, record: TransferRecord) -> TransferRecord:
        """Store *record* with its pending message, then deliver it (one attempt), under its lock."""
        key = (record.participant_id, record.id)
        self.records[key] = record
        async with self.lock(key):
            return await self._deliver(self.participants[record.participant_id], record)

    def current(self, pid: str = OURS, participant_id: str = ACME.id) -> TransferRecord:
        return self.records[(participant_id, pid)]

    async def close(self) -> None:
        await self._close()


def started(clock: FakeClock, **changes: Any) -> TransferRecord:
    """Our provider's transfer, just STARTED, its start message pending."""
    message = m.TransferStartMessage(providerPid=OURS, consumerPid=THEIRS)
    record = TransferRecord(
        participant_id=ACME.id, id=OURS, role="provider", state=State.STARTED.value, counterparty_did=PARTS_DID,
        agreement_id="urn:uuid:agreement", provider_pid=OURS, consumer_pid=THEIRS, counterparty_address=PARTS_DSP,
        pending={"kind": Kind.START.name, "url": START_URL, "body": m.encode(message)},
        next_attempt_at=clock(), deliver_by=clock() + DELIVERY_S)
    return msgspec.structs.replace(record, **changes)


def view(state: str) -> dict[str, Any]:
    """The peer's DSP view of the transfer."""
    return m.encode(m.TransferProcess(providerPid=OURS, consumerPid=THEIRS, state=state))


@pytest.fixture
async def shell() -> Any:
    shell = Shell(RecordingClient(), FakeClock())
    yield shell
    await shell.close()


# -- delivery ----------------------------------------------------------------------------------------------


async def test_an_acknowledged_message_is_no_longer_pending_and_the_nodes_next_move_follows(shell: Shell) -> None:
    shell.client.answer("POST", START_URL, view("STARTED"))
    record = started(shell.clock)
    done = await shell.send(record)

    assert done.state == "STARTED" and done.pending is None
    assert (done.attempts, done.next_attempt_at, done.deliver_by) == (0, None, None)
    [sent] = shell.client.sent
    assert (sent.method, sent.url, sent.body, sent.caller) == ("POST", START_URL, record.pending["body"], ACME.did)
    # A first-attempt delivery is already in the history as the message that went out: no event of its own.
    assert shell.history == [(OURS, "", "TransferStartMessage acknowledged after 1 attempts")]

    async def reacted() -> bool:
        return shell.reacted == [(OURS, "STARTED")]

    await testing.eventually(reacted, 5, every_s=0.001, what="the node's next move")


async def test_the_acknowledgement_of_an_opening_message_names_the_peers_pid(shell: Shell) -> None:
    url = f"{PARTS_DSP}/transfers/request"
    message = m.TransferRequestMessage(consumerPid=OURS, agreementId="urn:uuid:agreement", format="HttpData-PULL",
                                       callbackAddress=ACME.dsp_base)
    record = started(shell.clock, role="consumer", state=State.REQUESTED.value, provider_pid=None, consumer_pid=OURS,
                     pending={"kind": Kind.REQUEST.name, "url": url, "body": m.encode(message), OPENING: True})
    shell.client.answer("POST", url, m.encode(m.TransferProcess(providerPid=THEIRS, consumerPid=OURS,
                                                                state="REQUESTED")), status=201)
    done = await shell.send(record)
    assert (done.state, done.provider_pid, done.pending) == ("REQUESTED", THEIRS, None)


async def test_an_opening_acknowledged_without_a_transfer_process_is_tried_again(shell: Shell) -> None:
    url = f"{PARTS_DSP}/transfers/request"
    record = started(shell.clock, role="consumer", state=State.REQUESTED.value, provider_pid=None, consumer_pid=OURS,
                     pending={"kind": Kind.REQUEST.name, "url": url, "body": {}, OPENING: True})
    shell.client.answer("POST", url, {"@type": "Something"}, status=201)
    done = await shell.send(record)
    assert done.pending is not None and done.provider_pid is None and done.attempts == 1
    [(_, event, detail)] = shell.history
    assert event == "retry" and detail.startswith(f"TransferRequestMessage to {url} failed (@type must be ")


async def test_an_unacknowledged_message_is_retried_with_backoff_then_the_process_ends_with_the_reason(
        shell: Shell) -> None:
    waiting = asyncio.ensure_future(shell.wait(ACME.id, OURS, timeout_s=30))
    record, delays = await shell.send(started(shell.clock)), []
    while record.pending is not None:
        delays.append(record.next_attempt_at - shell.clock())
        shell.clock.now = record.next_attempt_at  # the retry comes due: no one sleeps
        assert await shell.run_due() == 1
        record = shell.current()

    attempts = shell.client.requests("POST")
    reason = (f"TransferStartMessage could not be delivered to {PARTS_DID} ({START_URL}) after {len(attempts)} "
              f"attempt(s): {START_URL} is unreachable")
    assert (record.state, record.reason, record.next_attempt_at, record.deliver_by) == ("TERMINATED", reason, None,
                                                                                         None)
    assert {s.url for s in attempts} == {START_URL}
    # 0.2 s, 0.4 s, 0.8 s … with ±20 % jitter, until the next retry would fall past the delivery deadline.
    assert len(delays) == len(attempts) - 1 >= 3
    for i, delay in enumerate(delays):
        assert 0.2 * 2**i * 0.8 <= delay <= 0.2 * 2**i * 1.2
    assert sum(delays) <= DELIVERY_S < sum(delays) + 0.2 * 2 ** len(delays) * 1.2
    assert [event for _, event, _ in shell.history] == ["retry"] * len(delays) + ["state"]
    assert shell.history[-1] == (OURS, "state", f"TERMINATED: {reason}")
    assert shell.undeliverable == [OURS]
    assert await asyncio.wait_for(waiting, 5) == record  # a caller waiting for the end learns of it


async def test_a_message_delivered_on_a_retry_is_noted_as_delivered(shell: Shell) -> None:
    failed = await shell.send(started(shell.clock))
    assert failed.attempts == 1 and failed.pending is not None
    shell.client.answer("POST", START_URL, view("STARTED"))
    shell.clock.now = failed.next_attempt_at
    assert await shell.run_due() == 1
    done = shell.current()
    assert (done.pending, done.attempts, done.next_attempt_at) == (None, 0, None)
    assert shell.history[-1] == (OURS, "delivered", "TransferStartMessage acknowledged after 2 attempts")


async def test_a_retry_is_taken_only_once_it_is_due(shell: Shell) -> None:
    failed = await shell.send(started(shell.clock))
    assert await shell.run_due() == 0
    shell.clock.advance(failed.next_attempt_at - shell.clock() - 0.01)
    assert await shell.run_due() == 0
    shell.clock.advance(0.01)
    assert await shell.run_due() == 1
    assert len(shell.client.requests("POST")) == 2


@pytest.mark.parametrize("status", [401, 408, 409, 425, 429, 500, 502, 503])
async def test_a_busy_or_failing_peer_is_tried_again(shell: Shell, status: int) -> None:
    shell.client.answer("POST", START_URL, {"reason": ["not now"]}, status=status)
    record = await shell.send(started(shell.clock))
    assert record.state == "STARTED" and record.pending is not None and record.attempts == 1
    assert 0.16 <= record.next_attempt_at - shell.clock() <= 0.24
    assert shell.history == [(OURS, "retry", f"TransferStartMessage to {START_URL} failed (answered {status}: not "
                              f"now); attempt 2 in {record.next_attempt_at - shell.clock():.1f} s")]


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 422])
async def test_a_message_the_peer_refuses_ends_the_process_without_a_retry(shell: Shell, status: int) -> None:
    shell.client.answer("POST", START_URL, {"reason": ["no such transfer"]}, status=status)
    record = await shell.send(started(shell.clock))
    assert record.state == "TERMINATED" and record.pending is None
    assert record.reason == (f"TransferStartMessage could not be delivered to {PARTS_DID} ({START_URL}) after 1 "
                             f"attempt(s): answered {status}: no such transfer")
    # Before giving up, the peer's view was asked for (an earlier delivery may have arrived); it had none.
    assert [(s.method, s.url) for s in shell.client.sent] == [("POST", START_URL), ("GET", VIEW_URL)]


@pytest.mark.parametrize(("theirs", "delivered"), [
    ("STARTED", True),  # where our start leads: it had arrived, only its acknowledgement was lost
    ("COMPLETED", True),  # one step further
    ("SUSPENDED", True),
    ("TERMINATED", True),
    ("REQUESTED", False),  # not there yet: the refusal stands
])
async def test_a_refused_message_is_reconciled_through_the_peers_view(shell: Shell, theirs: str,
                                                                      delivered: bool) -> None:
    shell.client.answer("POST", START_URL, {"reason": ["already started"]}, status=400)
    shell.client.answer("GET", VIEW_URL, view(theirs))
    record = await shell.send(started(shell.clock))
    assert record.pending is None
    assert record.state == ("STARTED" if delivered else "TERMINATED")
    [get] = shell.client.requests("GET")
    assert get.caller == ACME.did  # the peer's view is asked for signed, as the peer only shows it to a party


async def test_an_address_the_outbound_guard_refuses_ends_the_process_at_once(shell: Shell) -> None:
    shell.client.refuse("https://parts.example", "a private address")
    record = await shell.send(started(shell.clock))
    assert record.state == "TERMINATED" and record.attempts == 0
    assert record.reason.endswith(f"after 1 attempt(s): {START_URL}: a private address")
    assert shell.client.sent == []


async def test_a_final_process_whose_last_message_cannot_be_delivered_keeps_its_state(shell: Shell) -> None:
    message = m.TransferCompletionMessage(providerPid=OURS, consumerPid=THEIRS)
    url = f"{PARTS_DSP}/transfers/{THEIRS}/completion"
    record = started(shell.clock, state="COMPLETED", deliver_by=shell.clock(),
                     pending={"kind": Kind.COMPLETION.name, "url": url, "body": m.encode(message)})
    done = await shell.send(record)
    assert (done.state, done.pending, done.reason) == ("COMPLETED", None, "")
    assert shell.history == [(OURS, "error", f"TransferCompletionMessage could not be delivered to {PARTS_DID} "
                                             f"({url}) after 1 attempt(s): {url} is unreachable")]
    assert shell.undeliverable == []


# -- deadlines ---------------------------------------------------------------------------------------------


async def test_a_deadline_fires_once_the_clock_passes_it(shell: Shell) -> None:
    shell.add(started(shell.clock, pending=None, state="REQUESTED", expires_at=shell.clock() + 60))
    shell.clock.advance(59.9)
    assert await shell.run_due() == 0 and shell.deadlines == []
    shell.clock.advance(0.1)
    assert await shell.run_due() == 1
    assert shell.deadlines == [OURS] and shell.current().state == "TERMINATED"
    shell.clock.advance(3600)
    await shell.run_due()
    assert shell.deadlines == [OURS]  # a final process has no deadline left (its old one is passed over)


async def test_a_deadline_moved_later_meanwhile_is_looked_at_again_then(shell: Shell) -> None:
    record = started(shell.clock, pending=None, state="REQUESTED", expires_at=shell.clock() + 60)
    shell.add(record)
    shell.records[(ACME.id, OURS)] = msgspec.structs.replace(record, expires_at=shell.clock() + 120)
    shell.clock.advance(60)
    assert await shell.run_due() == 1 and shell.deadlines == []  # due by the old time, not by the stored one
    shell.clock.advance(60)
    assert await shell.run_due() == 1 and shell.deadlines == [OURS]


async def test_a_pending_message_is_delivered_before_the_deadline_is_looked_at(shell: Shell) -> None:
    shell.client.answer("POST", START_URL, view("STARTED"))
    record = started(shell.clock, expires_at=shell.clock())
    shell.add(record)
    assert await shell.run_due() == 1
    assert shell.current().pending is None and shell.deadlines == []


async def test_a_process_whose_participant_is_no_longer_hosted_has_nothing_due(shell: Shell) -> None:
    failed = await shell.send(started(shell.clock))
    shell.forget(ACME.id)
    shell.clock.now = failed.next_attempt_at + 60
    assert await shell.run_due() == 0
    assert len(shell.client.sent) == 1


# -- waiting for a final state -----------------------------------------------------------------------------


async def test_wait_returns_the_process_once_it_reaches_a_final_state(shell: Shell) -> None:
    record = started(shell.clock, pending=None)
    shell.add(record)
    waiting = asyncio.ensure_future(shell.wait(ACME.id, OURS, timeout_s=30))
    await shell.loaded.wait()
    assert not waiting.done()
    completed = msgspec.structs.replace(record, state="COMPLETED")
    await shell.commit(record, completed, "state", "COMPLETED")
    assert await asyncio.wait_for(waiting, 5) == completed


async def test_wait_answers_at_once_for_a_final_or_unknown_process_or_no_time(shell: Shell) -> None:
    assert await shell.wait(ACME.id, OURS, timeout_s=30) is None
    record = started(shell.clock, pending=None)
    shell.add(record)
    assert await shell.wait(ACME.id, OURS, timeout_s=0) == record
    shell.add(msgspec.structs.replace(record, state="TERMINATED"))
    assert (await shell.wait(ACME.id, OURS, timeout_s=30)).state == "TERMINATED"


async def test_wait_returns_the_process_as_it_is_when_the_time_is_up(shell: Shell) -> None:
    record = started(shell.clock, pending=None)
    shell.add(record)
    assert await shell.wait(ACME.id, OURS, timeout_s=0.01) == record


# -- the lock of each process -------------------------------------------------------------------------------


async def test_the_locks_of_processes_that_are_over_are_not_kept(shell: Shell) -> None:
    for i in range(200):
        shell.add(started(shell.clock, id=f"urn:uuid:p{i}", pending=None, state="REQUESTED",
                          expires_at=shell.clock() + 60))
    shell.clock.advance(60)
    assert await shell.run_due() == 200  # each deadline taken under its process's lock
    assert len(shell.deadlines) == 200
    assert len(shell._locks) == 0


async def test_whoever_waits_for_a_process_lock_gets_the_one_held(shell: Shell) -> None:
    key = (ACME.id, OURS)
    order: list[str] = []
    holding, trying, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with shell.lock(key):
            holding.set()
            await release.wait()
            order.append("first")

    async def second() -> None:
        trying.set()  # and on to the lock without yielding: waiting for it once the test runs again
        async with shell.lock(key):
            order.append("second")

    one = asyncio.ensure_future(first())
    await holding.wait()
    two = asyncio.ensure_future(second())
    await trying.wait()
    assert shell.lock(key).locked() and len(shell._locks) == 1
    release.set()
    await asyncio.gather(one, two)
    assert order == ["first", "second"] and len(shell._locks) == 0


# -- resuming after a restart ------------------------------------------------------------------------------


async def test_after_a_restart_pending_messages_are_delivered_and_own_moves_taken(shell: Shell) -> None:
    shell.client.answer("POST", START_URL, view("STARTED"))
    shell.records[(ACME.id, OURS)] = started(shell.clock)
    waiting = started(shell.clock, id="urn:uuid:waiting", pending=None, state="REQUESTED")
    shell.records[(ACME.id, waiting.id)] = waiting
    shell.records[(ACME.id, "urn:uuid:done")] = started(shell.clock, id="urn:uuid:done", pending=None,
                                                        state="COMPLETED")
    shell.records[("gone", "urn:uuid:gone")] = started(shell.clock, participant_id="gone", id="urn:uuid:gone")

    assert await shell.resume() == 3  # the completed one is over; the one of a participant gone is skipped

    async def settled() -> bool:
        return shell.current().pending is None and len(shell.reacted) == 2

    await testing.eventually(settled, 5, every_s=0.001, what="the timer's delivery")
    assert sorted(shell.reacted) == [(OURS, "STARTED"), (waiting.id, "REQUESTED")]
    assert [s.url for s in shell.client.sent] == [START_URL]


# -- what both shells share ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "base"), [(0, 0.2), (1, 0.2), (2, 0.4), (3, 0.8), (6, 6.4), (7, 10.0),
                                               (30, 10.0)])
def test_backoff_doubles_from_a_fifth_of_a_second_up_to_ten_with_a_fifth_of_jitter(attempt: int, base: float
                                                                                     ) -> None:
    delays = [backoff(attempt) for _ in range(200)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"reason": ["one", "two"]}', "one; two"),
    (b'{"reason": ["1", "2", "3", "4", "5"]}', "1; 2; 3; 4"),
    (b'{"message": "busy"}', "busy"),
    (b'{"reason": "plain"}', "plain"),
    (b'{"code": "x"}', "no reason given"),
    (b"[1, 2]", "no reason given"),
    (b"<html>502</html>", "a non-JSON body"),
    (('{"reason": "' + "x" * 400 + '"}').encode(), "x" * 300),
])
def test_a_peers_reason_is_read_from_its_error_body_and_bounded(body: bytes, reason: str) -> None:
    assert peer_reason(body) == reason


@pytest.mark.parametrize(("message", "line"), [
    (m.TransferTerminationMessage(providerPid="p", consumerPid="c", code="E1", reason=["too late"]),
     "terminated by the peer (code E1): too late"),
    (m.TransferTerminationMessage(providerPid="p", consumerPid="c", reason=[{"@value": "gone"}, "bye"]),
     "terminated by the peer: gone; bye"),
    (m.TransferTerminationMessage(providerPid="p", consumerPid="c"), "terminated by the peer: no reason given"),
])
def test_a_termination_reads_as_one_line(message: Any, line: str) -> None:
    assert message_reason(message, "the peer") == line


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert now_text(1_780_000_000.25) == "2026-05-28T20:26:40.250Z"
