"""Contract negotiation, both roles: the shell around ``connector.protocol.negotiation``.

Every step is: check the move against the state table → commit the new state, its history event and the
message that follows from it (the *pending* message) in one transaction, fsynced → then deliver the message.
A peer's message and the node's own answering move (the agreement to a request, the verification of an
agreement, the finalization of a verification) are one step: both moves and both history lines go into one
commit before the peer is answered, and the answering message leaves after the answer. So each message costs
each side one durable commit; what the node only notes for itself (a retry planned) is committed without an
fsync, and a message's acknowledgement (its first delivery answered) goes with the negotiation's next commit,
usually the peer's answer to it, or is written with others waiting after half a second
(``_acknowledged``; committed at once on PostgreSQL, where other node processes read the row). Nothing polls:
a committed state schedules the node's next move at once (``_react``, when it was not taken with the
message); a timer wakes only when a retry or a deadline is due.

Crash safety and silent peers:
- a pending message is retried with exponential backoff and jitter until the peer acknowledges it or
  ``delivery_timeout_s`` passes, which terminates the negotiation with a reason naming the step and the
  peer; a restarted node re-delivers what was pending and takes the moves that were its own;
- a peer that acknowledges but never sends its next message: after ``negotiation_timeout_s`` without
  progress the negotiation is terminated with a reason naming what was awaited from whom;
- no message is handled twice: an opening message re-delivered by the same peer with the same pid
  returns the negotiation it opened; any other message is checked against the state table, so a repeat
  is refused. When a message we re-deliver (its first answer was lost) is refused, the node asks the
  peer for its view of the process (DSP ``GET …/negotiations/:pid``); if the peer is already where our
  message leads, the message had arrived and counts as delivered.

Decisions the node takes on its own (pure, in ``connector.protocol.decisions``: this service gathers the facts,
asks, and acts on the outcome):
- as provider, on a request: the offer must exist and be visible to the requester (its access policy
  is evaluated against the requester's verified DID and self-description); the requested terms must be
  the offered terms. Same terms → agreement; other terms → one counter-offer with our terms; other terms
  again → termination. Every refusal carries a reason the consumer's operator can read.
- as consumer: a counter-offer with the terms we asked for is accepted; an agreement must state the
  offered terms, name us as assignee and the provider as assigner, or it is refused; a valid agreement
  is verified at once.

Agreements are signed by both parties (``connector.protocol.agreements``): the provider's proof travels
with the agreement, the consumer's with its verification; both nodes keep both, with the DID documents
they were checked against. To a peer whose self-description this participant verified (a TDS node), those
two messages name the node's JSON-LD context beside DSP's, which defines the proof
(``connector.protocol.contexts``); any other connector gets the DSP context alone (the compatibility kit
loads no other).

The provider names its datasets by absolute ids (``connector.protocol.ids``) in counter-offers and
agreements, and reads a consumer's target by that id or by the asset id itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from connector.errors import Conflict, NotFound, OutboundRefused, PeerError, TdsError, Unauthorized
from connector.faults import crash_point
from connector.logging import get_logger
from connector.protocol import agreements, contracts, decisions, ids
from connector.protocol import messages as m
from connector.protocol.agreement_lifecycle import EVER_IN_FORCE, AgreementEvent, AgreementState
from connector.protocol.agreement_lifecycle import next_state as next_agreement_state
from connector.protocol.errors import InvalidTransition, MessageError
from connector.protocol.negotiation import SENDER, TERMINAL, TRANSITIONS, Kind, Role, State
from connector.protocol.negotiation import receive as table_receive
from connector.protocol.negotiation import send as table_send
from connector.services.catalog import catalog_offer
from connector.services.ports import OutboundClient
from connector.services.process_shell import (
    OPENING,
    Key,
    ProcessShell,
    ProcessType,
    new_pid,
    now_text,
)
from connector.services.process_shell import message_reason as _termination_reason
from connector.services.process_shell import peer_reason as _peer_reason
from connector.store.records import AgreementRecord, NegotiationEvent, NegotiationRecord
from connector.store.repository import AgreementChange, Event

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.protocol.export_control import ExportRule
    from connector.protocol.policy import PeerFacts
    from connector.services.ports import Resolver
    from connector.store.repository import ContractRepository

log = get_logger(component="negotiation")

#: Where each message goes, relative to the provider's DSP base or the consumer's callback address.
PATHS: dict[Kind, str] = {
    Kind.REQUEST: "request",
    Kind.OFFER: "offers",
    Kind.ACCEPTED: "events",
    Kind.AGREEMENT: "agreement",
    Kind.VERIFICATION: "agreement/verification",
    Kind.FINALIZED: "events",
    Kind.TERMINATION: "termination",
}
STEPS: dict[str, Kind] = {
    "offer": Kind.OFFER, "agree": Kind.AGREEMENT, "finalize": Kind.FINALIZED, "accept": Kind.ACCEPTED,
    "verify": Kind.VERIFICATION, "counter-request": Kind.REQUEST, "terminate": Kind.TERMINATION,
}

Script = Callable[[NegotiationRecord], "str | None"]

#: How long a delivery's acknowledgement waits to be written with the negotiation's next commit (the peer's answer
#: to the message, usually) before it is written on its own, with the others then waiting; and how many may wait.
ACKNOWLEDGED_WAIT_S = 0.5
ACKNOWLEDGED_AT_MOST = 1024


class _Move(msgspec.Struct, frozen=True):
    """One of the node's own moves, worked out and not yet stored: the negotiation with the move's message
    pending, the agreement's row as the move leaves it (None: unchanged), and the line for the history."""

    record: NegotiationRecord
    agreement: AgreementChange | None
    detail: str


class NegotiationError(InvalidTransition):
    """A refused negotiation message; carries the pids for the ``ContractNegotiationError`` body."""

    def __init__(self, message: str, record: NegotiationRecord | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.dsp_fields = (
            {k: v for k, v in (("providerPid", record.provider_pid), ("consumerPid", record.consumer_pid)) if v}
            if record is not None
            else {}
        )


class NegotiationService(ProcessShell[NegotiationRecord]):
    """Both roles of contract negotiation over DSP, for every hosted participant.

    What it is given: *contracts*, the negotiations and agreements (``ContractRepository``); *client*, the
    outbound client; *participant_by_id*, the hosted participants; *resolver*, for the DID documents a
    peer's agreement proof is checked against; *dsp_base_of* and *verify_peer*, how a peer named by the
    operator is found and verified (``FederationService``); the admission hooks (*admit*: a stranger
    opens a negotiation, may raise; *ended*: a negotiation is over; *learn*: a peer became known through a
    finalized agreement, which it is given); the catalog's offer lookup (*peer_facts*: what is known of a peer,
    and the node's *export_rules*; *dataset_id*: the id under which a participant's catalog shows an asset, which its
    counter-offers and agreements name as their target); *conformance_caller*: whether a DID is the
    compatibility kit's (which may name other parties in an agreement); the two timeouts; and *clock*
    (POSIX seconds)."""

    process = ProcessType(name="negotiation", path="negotiations", kinds=Kind, states=State,
                          transitions=TRANSITIONS, ack=m.ContractNegotiation, crash_prefix="after-delivering-")

    def __init__(
        self,
        contracts: ContractRepository,
        client: OutboundClient,
        *,
        participant_by_id: Callable[[str], ParticipantRuntime | None],
        resolver: Resolver,
        dsp_base_of: Callable[[str], Awaitable[str]],
        verify_peer: Callable[[ParticipantRuntime, str], Awaitable[tuple[Any, str]]],
        admit: Callable[[str, str, str], None],
        ended: Callable[[str, str], None],
        learn: Callable[[str, str, AgreementRecord], None],
        peer_facts: Callable[[ParticipantRuntime, str], Awaitable[PeerFacts]],
        dataset_id: Callable[[ParticipantRuntime, str], str] = lambda p, asset_id: ids.dataset_iri(p.did, asset_id),
        export_rules: Sequence[ExportRule] = (),
        conformance_caller: Callable[[str], bool] = lambda _did: False,
        delivery_timeout_s: float,
        negotiation_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, clock=clock)
        self.contracts = contracts
        self._participant_by_id = participant_by_id
        self._resolver = resolver
        self._dsp_base_of = dsp_base_of
        self._verify_peer = verify_peer
        self._admit = admit
        self._ended = ended
        self._learn = learn
        self._peer_facts = peer_facts
        self._dataset_id = dataset_id
        self._export_rules = export_rules
        self._conformance_caller = conformance_caller
        self.delivery_timeout = delivery_timeout_s
        self.negotiation_timeout = negotiation_timeout_s
        self._write_acknowledged_at: asyncio.TimerHandle | None = None
        self._closing = False
        #: Conformance mode: a script that names the next step for a negotiation ("offer", "agree",
        #: "terminate", "accept", "counter-request", "verify", "finalize", "wait"), or None for the default.
        self.script: Script | None = None
        #: Conformance mode: told when a peer reads a negotiation (``GET …/negotiations/:pid``).
        self.on_read: Callable[[NegotiationRecord], None] | None = None

    def read_by_peer(self, record: NegotiationRecord) -> None:
        if self.on_read is not None:
            self.on_read(record)

    def poke(self, record: NegotiationRecord) -> None:
        """Reconsider the node's next move for *record* (used when a script's condition changed)."""
        participant = self._participant_by_id(record.participant_id)
        if participant is not None:
            self._spawn(self._react(participant, record))

    def _now_text(self) -> str:
        return now_text(self._clock())

    # -- plumbing (the rest is ProcessShell's) ----------------------------------------------------------

    def is_final(self, record: NegotiationRecord) -> bool:
        return record.state in TERMINAL

    async def load(self, key: Key) -> NegotiationRecord | None:
        return await self.contracts.negotiation(*key)

    async def _unfinished(self) -> list[NegotiationRecord]:
        return await self.contracts.all_active_negotiations()

    def _process_id(self) -> str | None:
        return self.contracts.store.process_id

    async def _claim_undriven(self, participant_id: str | None) -> set[Key]:
        return await self.contracts.claim_negotiations(participant_id)

    async def _driver(self, key: Key) -> str | None:
        return await self.contracts.driver(*key)

    async def close(self) -> None:
        self._closing = True
        await self._close()
        if self._write_acknowledged_at is not None:
            self._write_acknowledged_at.cancel()
            self._write_acknowledged_at = None
        await self._write_acknowledged()

    async def _acknowledged(self, old: NegotiationRecord, new: NegotiationRecord, event: str,
                            detail: str) -> NegotiationRecord:
        """A first delivery's acknowledgement is not committed on its own: it goes with the negotiation's next
        commit, or after :data:`ACKNOWLEDGED_WAIT_S` with the others waiting (``ContractRepository.acknowledge``).
        Nothing leaves the node on it: it only spares the message another delivery. A retried delivery's is
        committed at once, with its line in the history; so is every one on PostgreSQL."""
        if event:
            return await self.commit(old, new, event, detail)
        stamped = self._stamped(new)
        waiting = self.contracts.acknowledge(stamped)
        if waiting is None:
            return await self.commit(old, new, event, detail)
        self._committed(old.state, stamped, None)
        if waiting >= ACKNOWLEDGED_AT_MOST:
            self._write_acknowledged_soon()
        else:
            self._write_acknowledged_later()
        return stamped

    def _write_acknowledged_later(self) -> None:
        """Write the acknowledged deliveries waiting after :data:`ACKNOWLEDGED_WAIT_S` (if any wait, and no write
        is planned already)."""
        if self._write_acknowledged_at is None and not self._closing and self.contracts.acknowledgements_waiting():
            self._write_acknowledged_at = asyncio.get_running_loop().call_later(
                ACKNOWLEDGED_WAIT_S, self._write_acknowledged_soon)

    def _write_acknowledged_soon(self) -> None:
        if self._write_acknowledged_at is not None:
            self._write_acknowledged_at.cancel()
            self._write_acknowledged_at = None
        self._spawn(self._write_acknowledged())

    async def _write_acknowledged(self) -> None:
        try:
            await self.contracts.write_acknowledged()
        except Exception as exc:
            # They still wait, and are read as delivered: tried again after the wait (lost to a crash meanwhile, the
            # messages are delivered once more after the restart).
            log.warning("acknowledged deliveries not stored yet; trying again", error=str(exc),
                        waiting=self.contracts.acknowledgements_waiting())
            self._write_acknowledged_later()

    async def commit(
        self, old: NegotiationRecord, new: NegotiationRecord, event: str, detail: str = "", *,
        agreement: AgreementChange | None = None, events: Sequence[Event] = (), via: State | None = None,
        durable: bool = False,
    ) -> NegotiationRecord:
        """Store *new* in place of *old* (still in *old*'s state) with its history (*event* if given, then
        *events*), and *agreement*'s row if the move changes it (and the stored agreement is still as it was
        read); raise 409 if either moved on meanwhile. *via*: the state a peer's message led to, when the
        node's own move from there is committed with it.

        *durable*: fsynced before this returns. Every commit that something leaving the node follows is: one
        with a message pending (sent after it), and one of a peer's message (answered after it). The shell's
        bookkeeping (a delivery acknowledged, a retry planned) need not be: losing it to a power cut means only
        that a message is delivered once more, which the peer's state table or its view of the process settles."""
        new = self._stamped(new)
        try:
            written = await self.contracts.update_negotiation(
                new, expected_state=old.state, event=event, detail=detail, events=events, agreement=agreement,
                durable=durable,
            )
        except Exception:
            self._write_acknowledged_later()  # an acknowledgement this commit was to take with it waits again
            raise
        if not written:
            self._write_acknowledged_later()
            raise NegotiationError("the negotiation or its agreement changed concurrently; retry", old, status=409)
        self._committed(old.state, new, agreement, via=via)
        return new

    def _stamped(self, record: NegotiationRecord) -> NegotiationRecord:
        """*record* as it is stored: when it lapses if nothing happens, and when it changed."""
        if record.pending is None and record.state not in TERMINAL:
            record = _replace(record, expires_at=self._clock() + self.negotiation_timeout)
        elif record.state in TERMINAL:
            record = _replace(record, expires_at=None)
        return _replace(record, updated_at=self._now_text())

    def _committed(self, old: State | None, new: NegotiationRecord, agreement: AgreementChange | None, *,
                   via: State | None = None) -> None:
        """After a commit: log the change of state (*via* the state a peer's message led to, when the node's own
        move from there went with it), tell the admission hooks, wake the timer and the waiters."""
        before = old if old is not None else via
        if before is not None and before != new.state:
            log.info("negotiation state", participant=new.participant_id, id=new.id, role=new.role, old=before,
                     via=via if old is not None and via not in (old, new.state) else None, new=new.state,
                     reason=new.reason or None)
        if agreement is not None and agreement.record.state in EVER_IN_FORCE:
            self._learn(new.participant_id, new.counterparty_did, agreement.record)
        if new.state in TERMINAL:
            self._ended(new.participant_id, new.id)
        self._notify(new)

    # -- the timer: retries and deadlines ------------------------------------------------------------

    def _participant(self, key: Key) -> ParticipantRuntime | None:
        return self._participant_by_id(key[0])

    async def _on_deadline(self, participant: ParticipantRuntime, record: NegotiationRecord, now: float) -> None:
        await self._send(participant, record, Kind.TERMINATION, self._timeout_reason(record))

    def _timeout_reason(self, record: NegotiationRecord) -> str:
        state = record.state
        theirs = [k.value for k in TRANSITIONS[state] if SENDER[k] == record.role.other]
        ours = self._default_step(record) is not None or self.script is not None
        awaited = f"{', '.join(theirs)} from {record.counterparty_did}" if theirs else "a decision"
        who = "" if not ours else " (or a decision of this node's operator)"
        return (f"no progress for {self.negotiation_timeout:.0f} s in state {state.value}: waiting for "
                f"{awaited}{who}")

    # -- consumer: starting a negotiation ------------------------------------------------------------

    async def start(self, participant: ParticipantRuntime, peer: str, offer_id: str) -> NegotiationRecord:
        """Ask *peer* for the offer *offer_id*; returns once the provider acknowledged (201)."""
        dsp = await self._dsp_base_of(peer)
        provider_did: str | None = None
        try:
            subject, _ = await self._verify_peer(participant, dsp)
            provider_did = subject.id
        except (PeerError, TdsError) as exc:
            log.info("peer has no verifiable self-description; using its catalog's participantId",
                     peer=dsp, reason=exc.message)
        offer, asset_id, catalog_did = await self._find_offer(participant, dsp, offer_id)
        provider_did = provider_did or catalog_did
        if not provider_did:
            raise PeerError(f"{dsp} names no participant id in its catalog")
        return await self.request(participant, dsp, provider_did, offer, offer_id, asset_id)

    async def request(
        self, participant: ParticipantRuntime, dsp: str, provider_did: str, offer: dict[str, Any], offer_id: str,
        asset_id: str,
    ) -> NegotiationRecord:
        """Open a negotiation as consumer: commit REQUESTED with the opening request, then deliver it."""
        pid = new_pid()
        requested = contracts.message_offer(offer, offer_id, asset_id)
        message = m.ContractRequestMessage(consumerPid=pid, offer=requested, callbackAddress=participant.dsp_base)
        now = self._clock()
        record = NegotiationRecord(
            participant_id=participant.id, id=pid, role=Role.CONSUMER,
            state=table_send(None, Kind.REQUEST, Role.CONSUMER), counterparty_did=provider_did,
            consumer_pid=pid, counterparty_address=dsp.rstrip("/"), asset_id=asset_id, offer_id=offer_id,
            offer=requested, requested=requested,
            pending={"kind": Kind.REQUEST.name, "url": f"{dsp.rstrip('/')}/negotiations/request",
                     "body": m.encode(message), OPENING: True},
            next_attempt_at=now, deliver_by=now + self.delivery_timeout,
            created_at=self._now_text(), updated_at=self._now_text(),
        )
        await self.contracts.create_negotiation(record, "message-out", "ContractRequestMessage (opening)",
                                                durable=True)
        async with self.lock((participant.id, pid)):
            # Nothing else has seen the negotiation yet (the timer learns of it from this first delivery).
            return await self._deliver(participant, record)

    async def _find_offer(
        self, participant: ParticipantRuntime, dsp: str, offer_id: str
    ) -> tuple[dict[str, Any], str, str | None]:
        """The offer's normalised policy, its dataset id and the provider's participant id."""
        _, asset_hint = contracts.offer_parts(offer_id)
        datasets: list[dict[str, Any]] = []
        participant_id: str | None = None
        if asset_hint:
            resp = await self._client.request(
                "GET", f"{dsp}/catalog/datasets/{asset_hint}", signer=participant.signer
            )
            if resp.status == 200 and isinstance(resp.json(), dict):
                datasets = [resp.json()]
        if not datasets:
            resp = await self._client.request(
                "POST", f"{dsp}/catalog/request", json_body=m.encode(m.CatalogRequestMessage()),
                signer=participant.signer,
            )
            if resp.status != 200:
                raise PeerError(f"{dsp} refused the catalog request with {resp.status}: {_peer_reason(resp.body)}")
            catalog = resp.json()
            participant_id = catalog.get("participantId") if isinstance(catalog, dict) else None
            datasets = catalog.get("dataset", []) if isinstance(catalog, dict) else []
        for dataset in datasets:
            for offer in dataset.get("hasPolicy", []) if isinstance(dataset, dict) else []:
                if isinstance(offer, dict) and offer.get("@id") == offer_id:
                    return contracts.read_policy(offer, "offer"), str(dataset.get("@id")), participant_id
        raise NotFound(f"{dsp} does not offer {offer_id!r} to this participant")

    # -- incoming DSP messages -----------------------------------------------------------------------

    async def on_initial(
        self, participant: ParticipantRuntime, kind: Kind, message: m.Message, caller: str
    ) -> NegotiationRecord:
        """A new negotiation: a consumer's first request (we are provider) or a provider's first offer."""
        role = Role.PROVIDER if kind is Kind.REQUEST else Role.CONSUMER
        state = table_receive(None, kind, role.other)
        if role is Role.PROVIDER:
            assert isinstance(message, m.ContractRequestMessage)
            existing = await self.contracts.negotiation_by_pid(
                participant.id, role, caller, consumer_pid=message.consumerPid)
        else:
            assert isinstance(message, m.ContractOfferMessage)
            existing = await self.contracts.negotiation_by_pid(
                participant.id, role, caller, provider_pid=message.providerPid)
        if existing is not None:
            # A re-delivered opening (our answer was lost): answer with the negotiation it opened.
            await self.contracts.add_event(participant.id, existing.id, self._now_text(), "duplicate",
                                           f"{kind.value} (opening) received again; answered as before")
            return existing
        callback = getattr(message, "callbackAddress", None)
        if not callback:
            raise MessageError("callbackAddress is required in the initial message", path="callbackAddress")
        try:
            self._client.check_target(callback)
        except OutboundRefused as exc:
            raise MessageError(f"callbackAddress refused: {exc.message}", path="callbackAddress") from exc
        offer = contracts.read_policy(getattr(message, "offer", None), "offer")
        pid = new_pid()
        if isinstance(message, m.ContractRequestMessage):
            provider_pid, consumer_pid = pid, message.consumerPid
        else:
            assert isinstance(message, m.ContractOfferMessage)
            provider_pid, consumer_pid = message.providerPid, pid
        offer_id = str(offer.get("@id", ""))
        target = str(offer.get("target") or contracts.offer_parts(offer_id)[1] or "")
        if role is Role.PROVIDER:  # the asset of ours the consumer names, by its absolute id or its own id
            target = ids.local_asset_id(participant.did, target)
        record = NegotiationRecord(
            participant_id=participant.id, id=pid, role=role, state=state, counterparty_did=caller,
            provider_pid=provider_pid, consumer_pid=consumer_pid, counterparty_address=callback.rstrip("/"),
            asset_id=target, offer_id=offer_id, offer=offer, requested=offer if role is Role.PROVIDER else {},
            expires_at=self._clock() + self.negotiation_timeout, created_at=self._now_text(),
            updated_at=self._now_text(),
        )
        # Strangers share a bounded number of open negotiations (connector.services.admission).
        self._admit(participant.id, pid, caller)
        try:
            # The node's answer to the opening (an agreement, say) is committed with it, then sent after the 201.
            move = await self._own_move(participant, record, None, fresh=True)
            stored = self._stamped(record if move is None else move.record)
            await self.contracts.create_negotiation(
                stored, "message-in", f"{kind.value} (opening) from {caller}",
                events=[("message-out", move.detail)] if move is not None else (),
                agreement=move.agreement if move is not None else None, durable=True)
        except BaseException:
            self._ended(participant.id, pid)
            raise
        crash_point("provider-after-storing-request" if role is Role.PROVIDER else "consumer-after-storing-offer")
        log.info("negotiation opened", participant=participant.name, id=pid, role=role, peer=caller,
                 offer=offer_id, state=stored.state)
        self._committed(None, stored, move.agreement if move is not None else None)
        self._after_receipt(participant, stored, moved=move is not None)
        return record

    async def on_message(
        self, participant: ParticipantRuntime, local_pid: str, kind: Kind, message: Any, caller: str
    ) -> NegotiationRecord:
        """A message about an existing negotiation, addressed to our pid *local_pid*."""
        key = (participant.id, local_pid)
        async with self.lock(key):
            record = await self.contracts.negotiation(participant.id, local_pid)
            if record is None or not self._is_party(record, caller):
                raise NotFound("no such negotiation")
            role = record.role
            if role == Role.PROVIDER and message.providerPid != record.id:
                raise NegotiationError("providerPid does not match the negotiation", record)
            if role == Role.CONSUMER and message.consumerPid != record.id:
                raise NegotiationError("consumerPid does not match the negotiation", record)
            if role == Role.PROVIDER and record.consumer_pid != message.consumerPid:
                raise NegotiationError("consumerPid does not match the negotiation", record)
            try:
                next_state = table_receive(record.state, kind, role.other)
            except InvalidTransition as exc:
                await self.contracts.add_event(participant.id, record.id, self._now_text(), "error",
                                               f"refused {kind.value}: {exc.message}")
                raise NegotiationError(exc.message, record) from exc
            updated = _replace(record, state=next_state)
            if record.pending is not None:
                # The peer moved on from where our pending message took it: it has that message.
                updated = _replace(updated, pending=None, attempts=0, next_attempt_at=None, deliver_by=None)
            if role == Role.CONSUMER and not record.provider_pid:
                updated = _replace(updated, provider_pid=message.providerPid)
            agreement_change: AgreementChange | None = None
            detail = f"{kind.value} from {caller}"
            if kind in (Kind.OFFER, Kind.REQUEST):
                updated = _replace(updated, offer=contracts.read_policy(message.offer, "offer"))
            elif kind is Kind.AGREEMENT:
                agreement = self._check_agreement(participant, record, message.agreement)
                updated = _replace(updated, agreement=agreement)
                provider_proof, documents = await self._check_proof(
                    record, agreement, message.proof, record.counterparty_did)
                own = self._sign(participant, agreement)
                documents[participant.did] = participant.did_document()
                agreement_change = AgreementChange(_agreement_row(
                    updated, next_agreement_state(None, AgreementEvent.SIGNED), provider_proof=provider_proof,
                    consumer_proof=own, did_documents=documents), read_in=None)
                detail += " (signed by the provider)" if provider_proof else " (no provider proof: single-signed)"
            elif kind is Kind.VERIFICATION:
                current = await self.contracts.agreement(participant.id, _agreement_id(record))
                if current is not None and record.agreement is not None:
                    consumer_proof, documents = await self._check_proof(
                        record, record.agreement, message.proof, record.counterparty_did)
                    agreement_change = AgreementChange(msgspec.structs.replace(
                        current, state=next_agreement_state(current.state, AgreementEvent.VERIFIED),
                        consumer_proof=consumer_proof,
                        did_documents={**current.did_documents, **documents}), read_in=current.state)
                    detail += " (signed by the consumer)" if consumer_proof else " (no consumer proof)"
            elif kind is Kind.FINALIZED and record.agreement is not None:
                agreement_change = await self._agreement_after(participant, record, AgreementEvent.FINALIZED)
            elif kind is Kind.TERMINATION:
                updated = _replace(updated, reason=_termination_reason(message, "the peer"))
            # The node's own move from here (a verification, say) is committed with the message, then sent after
            # the answer: one commit (and one fsync) per step on each side.
            move = await self._own_move(participant, updated, agreement_change)
            stored = await self.commit(
                record, updated if move is None else move.record, "message-in", detail,
                agreement=agreement_change if move is None else move.agreement,
                events=[("message-out", move.detail)] if move is not None else (),
                via=next_state if move is not None else None, durable=True)
            if kind is Kind.VERIFICATION:
                crash_point("provider-after-receiving-verification")
        self._after_receipt(participant, stored, moved=move is not None)
        # The answer acknowledges the peer's message: the state it led to (the node's move follows it).
        return stored if move is None else _replace(stored, state=next_state)

    def _is_party(self, record: NegotiationRecord, caller: str) -> bool:
        return record.counterparty_did == caller or self._conformance_caller(caller)

    def _check_agreement(
        self, participant: ParticipantRuntime, record: NegotiationRecord, agreement: Any
    ) -> dict[str, Any]:
        """The agreement, if it states what we asked for (``decisions.check_agreement``); else refused."""
        expected = decisions.Expected(
            offer=record.offer, target=record.asset_id, consumer=participant.did, provider=record.counterparty_did,
            any_parties=self._conformance_caller(record.counterparty_did))
        outcome = decisions.check_agreement(agreement, expected)
        if outcome.move is not decisions.Move.VERIFY or outcome.agreement is None:
            raise NegotiationError(outcome.reason, record)
        return outcome.agreement

    async def _check_proof(
        self, record: NegotiationRecord, agreement: dict[str, Any], proof: Any, party: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Verify a peer's proof over *agreement* (absent: single-signed). Returns it and the DID document."""
        if proof is None:
            return None, {}
        try:
            did = agreements.signer_did(proof)
            # With the key the proof names: a peer that rotated its keys since we cached its document signs
            # with a key it did not list then.
            document = await self._resolver.resolve(did, key_id=str(proof["verificationMethod"]))
            agreements.verify(agreement, proof, document, party=party)
        except (agreements.AgreementProofError, TdsError, ValueError) as exc:
            raise NegotiationError(f"the agreement proof does not verify: {exc}", record) from exc
        return proof, {party: document}

    def _sign(self, participant: ParticipantRuntime, agreement: dict[str, Any]) -> dict[str, Any]:
        signer = participant.signer
        return agreements.sign(agreement, signer.key, key_id=signer.key_id, created=self._now_text())

    async def _agreement_after(
        self, participant: ParticipantRuntime, record: NegotiationRecord, event: AgreementEvent,
        pending: AgreementChange | None = None,
    ) -> AgreementChange:
        """The agreement's row moved by *event* (``connector.protocol.agreement_lifecycle``), with the state it
        was read in; *record* is the negotiation before the move, whose state names where an agreement without
        a stored row stands. *pending*: the row as the same commit already changes it (the peer's message the
        move answers), in place of the stored one."""
        if pending is not None:
            return AgreementChange(msgspec.structs.replace(
                pending.record, state=next_agreement_state(pending.record.state, event)), read_in=pending.read_in)
        current = await self.contracts.agreement(participant.id, _agreement_id(record))
        if current is None:
            return AgreementChange(_agreement_row(record, next_agreement_state(record.state, event)), read_in=None)
        return AgreementChange(msgspec.structs.replace(current, state=next_agreement_state(current.state, event)),
                               read_in=current.state)

    # -- our own moves -------------------------------------------------------------------------------

    async def _react(self, participant: ParticipantRuntime, record: NegotiationRecord) -> None:
        """Take the node's next step for *record*, if it is ours to take."""
        try:
            step = self.script(record) if self.script is not None else None
            if step is None:
                step = self._default_step(record)
            if step is None or step == "wait":
                return
            await self._do(participant, record.id, step, expected_state=record.state)
        except Exception:
            log.exception("negotiation step failed", id=record.id)

    def _default_step(self, record: NegotiationRecord) -> str | None:
        state = record.state
        if record.role == Role.PROVIDER:
            return {State.REQUESTED: "decide", State.ACCEPTED: "agree", State.VERIFIED: "finalize"}.get(state)
        if state == State.OFFERED and record.requested:
            return "accept" if contracts.same_terms(record.offer, record.requested) else None
        if state == State.AGREED:
            return "verify"
        return None

    async def _own_move(self, participant: ParticipantRuntime, record: NegotiationRecord,
                        agreement: AgreementChange | None, *, fresh: bool = False) -> _Move | None:
        """The node's default move from *record*, a peer's message applied but not yet stored (with *agreement*,
        the agreement's row as that message changes it), to be committed with the message; None if the move is
        not the node's, or not now. *fresh*: the message opened the negotiation.

        Not with a script (conformance mode): its moves are taken after the answer, as the compatibility kit
        reads the state a message led to before the node moves on. A move that fails is not taken here either:
        the message is stored alone and ``_react`` tries the move again after the answer."""
        if self.script is not None or record.state in TERMINAL:
            return None
        step = self._default_step(record)
        if step is None:
            return None
        try:
            return await self._move(participant, record, step, agreement=agreement, fresh=fresh)
        except Exception:
            log.exception("negotiation step failed", id=record.id)
            return None

    def _after_receipt(self, participant: ParticipantRuntime, record: NegotiationRecord, *, moved: bool) -> None:
        """After a peer's message was stored (and before it is answered): send the message of the node's move
        committed with it once the answer is out, or look for a move to take."""
        if moved:
            self._deliver_soon((record.participant_id, record.id))
        elif self.script is not None or self._default_step(record) is not None:
            self._spawn(self._react(participant, record))

    async def _do(self, participant: ParticipantRuntime, negotiation_id: str, step: str, reason: str = "",
                  *, expected_state: State | None = None) -> None:
        """Take *step*, unless the negotiation moved on since the step was chosen for *expected_state*."""
        key = (participant.id, negotiation_id)
        async with self.lock(key):
            record = await self.contracts.negotiation(participant.id, negotiation_id)
            if record is None or record.state in TERMINAL or record.pending is not None:
                return
            if expected_state is not None and record.state != expected_state:
                return
            move = await self._move(participant, record, step, reason)
            updated = await self.commit(record, move.record, "message-out", move.detail, agreement=move.agreement,
                                        durable=True)
            await self._deliver(participant, updated)

    async def _provider_decision(self, participant: ParticipantRuntime, record: NegotiationRecord,
                                 peer: PeerFacts, *, fresh: bool = False) -> decisions.Outcome:
        """Agree, counter-offer or terminate (with the reason): gather the facts, then ask
        ``decisions.decide_request``. *peer*: what is known of the consumer; *fresh*: the request opened the
        negotiation (no counter-offer yet)."""
        asset_id = ids.local_asset_id(participant.did, record.asset_id)
        request = decisions.ContractRequest.of(record.offer_id, asset_id, record.offer,
                                               shown_as=lambda asset: self._dataset_id(participant, asset))
        snapshot = await self.contracts.offer_parts(participant.id, request.definition_id, request.target)
        events = [] if fresh else await self.contracts.events(participant.id, record.id)
        facts = decisions.ProviderFacts(
            peer=peer, holder_region=participant.record.region, export_rules=tuple(self._export_rules),
            countered=any(e.kind == "message-out" and e.detail.startswith(Kind.OFFER.value) for e in events))
        offer = catalog_offer(snapshot, request.definition_id, request.target)
        return decisions.decide_request(request, offer, facts, datetime.fromtimestamp(self._clock(), UTC))

    async def _send(self, participant: ParticipantRuntime, record: NegotiationRecord, kind: Kind,
                    reason: str = "") -> NegotiationRecord:
        """Commit our move with its message pending, then deliver it. Call with the negotiation's lock."""
        move = await self._move_of_kind(participant, record, kind, reason)
        updated = await self.commit(record, move.record, "message-out", move.detail, agreement=move.agreement,
                                    durable=True)
        return await self._deliver(participant, updated)

    async def _move(self, participant: ParticipantRuntime, record: NegotiationRecord, step: str, reason: str = "",
                    *, agreement: AgreementChange | None = None, fresh: bool = False) -> _Move:
        """The move *step* (a provider's "decide" settles on agree, counter-offer or terminate first)."""
        peer: PeerFacts | None = None
        if step == "decide":
            peer = await self._peer_facts(participant, record.counterparty_did)
            outcome = await self._provider_decision(participant, record, peer, fresh=fresh)
            step, reason = outcome.move.value, outcome.reason
            if outcome.offer is not None:
                record = _replace(record, offer=outcome.offer)
        return await self._move_of_kind(participant, record, STEPS[step], reason, agreement=agreement, peer=peer)

    async def _move_of_kind(self, participant: ParticipantRuntime, record: NegotiationRecord, kind: Kind,
                            reason: str = "", *, agreement: AgreementChange | None = None,
                            peer: PeerFacts | None = None) -> _Move:
        """Our move sending *kind* from *record*: the record with the message pending, the agreement's row as
        the move leaves it, and the history line. *agreement*: the row as the peer's message this move answers
        changes it in the same commit (None: as stored); *peer*: what is known of the peer, if asked already."""
        next_state = table_send(record.state, kind, record.role)
        updated = _replace(record, state=next_state)
        agreement_change = agreement
        proof: dict[str, Any] | None = None
        if kind is Kind.AGREEMENT:
            target = self._dataset_id(participant, ids.local_asset_id(participant.did, record.asset_id))
            terms = contracts.agreement(
                record.offer, agreement_id=new_pid(), target=target, assigner=participant.did,
                assignee=record.counterparty_did, timestamp=self._now_text(),
            )
            proof = self._sign(participant, terms)
            updated = _replace(updated, agreement=terms)
            agreement_change = AgreementChange(_agreement_row(
                updated, next_agreement_state(None, AgreementEvent.SIGNED), provider_proof=proof,
                did_documents={participant.did: participant.did_document()}), read_in=None)
        elif kind is Kind.VERIFICATION and record.agreement is not None:
            current = agreement.record if agreement is not None else await self.contracts.agreement(
                participant.id, _agreement_id(record))
            proof = current.consumer_proof if current is not None else self._sign(participant, record.agreement)
            agreement_change = await self._agreement_after(participant, record, AgreementEvent.VERIFIED, agreement)
        elif kind is Kind.FINALIZED and record.agreement is not None:
            agreement_change = await self._agreement_after(participant, record, AgreementEvent.FINALIZED, agreement)
        elif kind is Kind.TERMINATION:
            updated = _replace(updated, reason=reason or "terminated by the operator")
        # The proof's fields are defined by the node's own JSON-LD context, named only to a peer that exchanged
        # self-descriptions with this participant (a TDS node has it); another DSP connector may load no context
        # but the DSP ones (the compatibility kit does so) and gets the message as before, the proof an extension.
        if proof is not None and peer is None:
            peer = await self._peer_facts(participant, record.counterparty_did)
        readable = proof is not None and peer is not None and peer.self_described
        message = self._message(updated, kind, reason, proof, extended=readable)
        now = self._clock()
        updated = _replace(updated, pending={"kind": kind.name, "url": self._url(updated, kind),
                                             "body": m.encode(message)},
                           attempts=0, next_attempt_at=now, deliver_by=now + self.delivery_timeout)
        return _Move(updated, agreement_change, kind.value + (f": {reason}" if reason else ""))

    def _delivered(self, participant: ParticipantRuntime, record: NegotiationRecord, kind: Kind) -> None:
        # A delivered termination leaves nothing to do; any other message may be followed by our next move.
        if kind is not Kind.TERMINATION and (self.script is not None or self._default_step(record) is not None):
            self._spawn(self._react(participant, record))

    def _message(self, record: NegotiationRecord, kind: Kind, reason: str,
                 proof: dict[str, Any] | None, *, extended: bool = False) -> m.Message:
        """Our message of *kind*; *extended*: its ``@context`` names the node's own context beside DSP's."""
        provider_pid, consumer_pid = record.provider_pid or "", record.consumer_pid or ""
        context = list(m.EXTENDED_CONTEXT if extended else m.CONTEXT)
        if kind is Kind.OFFER:
            return m.ContractOfferMessage(providerPid=provider_pid, consumerPid=consumer_pid, offer=record.offer)
        if kind is Kind.REQUEST:
            return m.ContractRequestMessage(providerPid=provider_pid, consumerPid=consumer_pid, offer=record.offer)
        if kind is Kind.AGREEMENT:
            assert record.agreement is not None
            return m.ContractAgreementMessage(providerPid=provider_pid, consumerPid=consumer_pid,
                                              agreement=record.agreement, proof=proof, context=context)
        if kind is Kind.VERIFICATION:
            return m.ContractAgreementVerificationMessage(providerPid=provider_pid, consumerPid=consumer_pid,
                                                          proof=proof, context=context)
        if kind in (Kind.ACCEPTED, Kind.FINALIZED):
            event = "ACCEPTED" if kind is Kind.ACCEPTED else "FINALIZED"
            return m.ContractNegotiationEventMessage(providerPid=provider_pid, consumerPid=consumer_pid,
                                                     eventType=event)
        return m.ContractNegotiationTerminationMessage(
            providerPid=provider_pid, consumerPid=consumer_pid, code="terminated",
            reason=[reason or "terminated by the operator"],
        )

    def _url(self, record: NegotiationRecord, kind: Kind) -> str:
        remote_pid = record.consumer_pid if record.role == Role.PROVIDER else record.provider_pid
        if not remote_pid:
            raise PeerError("the peer's process id is not known yet")
        return f"{record.counterparty_address}/negotiations/{m.path_segment(remote_pid)}/{PATHS[kind]}"

    # -- operator actions ----------------------------------------------------------------------------

    async def terminate(self, participant: ParticipantRuntime, negotiation_id: str, reason: str) -> NegotiationRecord:
        async with self.lock((participant.id, negotiation_id)):
            record = await self.contracts.negotiation(participant.id, negotiation_id)
            if record is None:
                raise NotFound("no such negotiation")
            if record.state in TERMINAL:
                raise Conflict(f"the negotiation is already {record.state}")
            if record.pending is not None:
                raise Conflict("a message of this negotiation is still being delivered; try again shortly")
            return await self._send(participant, record, Kind.TERMINATION, reason)

    async def accept(self, participant: ParticipantRuntime, negotiation_id: str) -> NegotiationRecord:
        """Accept the provider's offer (consumer); returns the negotiation as it is after the step."""
        record = await self.contracts.negotiation(participant.id, negotiation_id)
        if record is None:
            raise NotFound("no such negotiation")
        if record.role != Role.CONSUMER or record.state != State.OFFERED:
            raise Conflict(f"only an OFFERED negotiation can be accepted by the consumer (it is {record.state})")
        await self._do(participant, negotiation_id, "accept")
        after = await self.contracts.negotiation(participant.id, negotiation_id)
        assert after is not None
        return after

    # -- reading -------------------------------------------------------------------------------------

    async def find(self, participant: ParticipantRuntime, *, states: list[State] | None = None, limit: int = 100
                   ) -> list[NegotiationRecord]:
        """The participant's negotiations, newest first, only those in *states* when given."""
        return await self.contracts.negotiations(participant.id, states=states, limit=limit)

    async def history(self, participant: ParticipantRuntime, negotiation_id: str) -> list[NegotiationEvent]:
        return await self.contracts.events(participant.id, negotiation_id)

    async def agreements(self, participant: ParticipantRuntime, states: Collection[AgreementState] | None = None
                         ) -> list[AgreementRecord]:
        """The participant's agreements in any of *states* (None: every agreement, whatever its state), newest
        first."""
        return await self.contracts.agreements(participant.id, state=states or None)

    async def agreement(self, participant: ParticipantRuntime, agreement_id: str) -> AgreementRecord:
        """One of the participant's agreements, whatever its state; 404 when it has none by that id."""
        found = await self.contracts.agreement(participant.id, agreement_id)
        if found is None:
            raise NotFound("no such agreement")
        return found


def _replace(record: NegotiationRecord, **changes: Any) -> NegotiationRecord:
    return msgspec.structs.replace(record, **changes)


def _agreement_id(record: NegotiationRecord) -> str:
    return str((record.agreement or {}).get("@id", ""))


def _agreement_row(record: NegotiationRecord, state: AgreementState, **extra: Any) -> AgreementRecord:
    assert record.agreement is not None
    return AgreementRecord(
        id=_agreement_id(record), negotiation_id=record.id, role=record.role,
        provider_did=str(record.agreement.get("assigner", "")), consumer_did=str(record.agreement.get("assignee", "")),
        asset_id=str(record.agreement.get("target", record.asset_id)), agreement=record.agreement, state=state,
        created_at=record.created_at, **extra,
    )


__all__ = ["NegotiationError", "NegotiationService", "Unauthorized"]
