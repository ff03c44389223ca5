"""Contract negotiation, both roles: the shell around ``connector.protocol.negotiation``.

Every step is: check the move against the state table → commit the new state (and its history event)
→ then send the message that follows from it. Nothing polls: a committed state schedules the node's next
move at once (``_react``), so a negotiation between two nodes runs as fast as the messages travel.

Decisions the node takes on its own:
- as provider, on a request: the offer must exist and be visible to the requester (its access policy
  is evaluated against the requester's verified DID and self-description); the requested terms must be
  the offered terms. Same terms → agreement; other terms → one counter-offer with our terms; other terms
  again → termination. Every refusal carries a reason the consumer's operator can read.
- as consumer: a counter-offer with the terms we asked for is accepted; an agreement must state the
  offered terms, name us as assignee and the provider as assigner, or it is refused; a valid agreement
  is verified at once.
A delivery that fails terminates the negotiation with a reason that names the step and the peer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connector.errors import BadRequest, NotFound, OutboundRefused, PeerError, TdsError
from connector.http.netguard import check_url
from connector.logging import get_logger
from connector.protocol import contracts
from connector.protocol import messages as m
from connector.protocol.errors import InvalidTransition, MessageError
from connector.protocol.negotiation import TERMINAL, Kind, Role, State
from connector.protocol.negotiation import receive as table_receive
from connector.protocol.negotiation import send as table_send
from connector.services.catalog import visible_offers
from connector.store.records import AgreementRecord, NegotiationRecord

if TYPE_CHECKING:
    from connector.node import Node
    from connector.participant import ParticipantRuntime

log = get_logger(component="negotiation")

#: Where each message goes, relative to the receiver's DSP base (provider) or callback (consumer).
PATHS: dict[Kind, str] = {
    Kind.REQUEST: "request",
    Kind.OFFER: "offers",
    Kind.ACCEPTED: "events",
    Kind.AGREEMENT: "agreement",
    Kind.VERIFICATION: "agreement/verification",
    Kind.FINALIZED: "events",
    Kind.TERMINATION: "termination",
}

Script = Callable[[NegotiationRecord], "str | None"]


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_pid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


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


class NegotiationService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Conformance mode: a script that names the next step for a negotiation ("offer", "agree",
        #: "terminate", "accept", "counter-request", "verify", "finalize", "wait"), or None for the default.
        self.script: Script | None = None

    # -- plumbing ------------------------------------------------------------------------------------

    def _lock(self, record_key: tuple[str, str]) -> asyncio.Lock:
        lock = self._locks.get(record_key)
        if lock is None:
            lock = self._locks[record_key] = asyncio.Lock()
        return lock

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _commit(
        self, old: NegotiationRecord, new: NegotiationRecord, event: str, detail: str = "",
        agreement: AgreementRecord | None = None,
    ) -> NegotiationRecord:
        new = _replace(new, updated_at=now_text())
        if not await self.node.contracts.update_negotiation(
            new, expected_state=old.state, event=event, detail=detail, agreement=agreement
        ):
            raise NegotiationError("the negotiation changed concurrently; retry", old, status=409)
        if old.state != new.state:
            log.info("negotiation state", participant=new.participant_id, id=new.id, role=new.role,
                     old=old.state, new=new.state, reason=new.reason or None)
        await self._notify()
        return new

    async def wait(self, participant_id: str, negotiation_id: str, timeout_s: float) -> NegotiationRecord | None:
        """Wait until the negotiation is in a terminal state (or *timeout_s* passes); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self._changed:
            while True:
                record = await self.node.contracts.negotiation(participant_id, negotiation_id)
                if record is None or State(record.state) in TERMINAL:
                    return record
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return record
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return await self.node.contracts.negotiation(participant_id, negotiation_id)

    # -- consumer: starting a negotiation ------------------------------------------------------------

    async def start(self, participant: ParticipantRuntime, peer: str, offer_id: str) -> NegotiationRecord:
        """Ask *peer* for the offer *offer_id*; returns once the provider acknowledged (201)."""
        dsp = await self.node.federation.dsp_base_of(peer)
        provider_did: str | None = None
        try:
            subject, _ = await self.node.federation.verify_peer(participant, dsp)
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
        """Open a negotiation as consumer: commit REQUESTED, then send the initial ContractRequestMessage."""
        pid = new_pid()
        requested = contracts.message_offer(offer, offer_id, asset_id)
        record = NegotiationRecord(
            participant_id=participant.id, id=pid, role=Role.CONSUMER.value,
            state=table_send(None, Kind.REQUEST, Role.CONSUMER).value, counterparty_did=provider_did,
            consumer_pid=pid, counterparty_address=dsp, asset_id=asset_id, offer_id=offer_id,
            offer=requested, requested=requested, created_at=now_text(), updated_at=now_text(),
        )
        await self.node.contracts.create_negotiation(record, "message-out", "ContractRequestMessage (initial)")
        message = m.ContractRequestMessage(consumerPid=pid, offer=requested, callbackAddress=participant.dsp_base)
        try:
            response = await self.node.client.request(
                "POST", f"{dsp}/negotiations/request", json_body=m.encode(message), signer=participant.signer
            )
            # DSP 2025-1 §7 asks for 201 Created, but what matters is the ContractNegotiation it carries:
            # peers that answer 200 with it (the compatibility kit does) have opened the negotiation too.
            if not 200 <= response.status < 300:
                raise PeerError(f"answered {response.status}: {_peer_reason(response.body)}")
            ack = m.decode(response.json(), m.ContractNegotiation)
        except (PeerError, MessageError) as exc:
            current = await self.node.contracts.negotiation(participant.id, pid) or record
            await self._terminate_locally(
                current, f"the contract request could not be delivered to {dsp}: {exc.message}"
            )
            return await self.node.contracts.negotiation(participant.id, pid) or record
        await self.node.contracts.set_provider_pid(participant.id, pid, ack.providerPid)
        opened = await self.node.contracts.negotiation(participant.id, pid) or record
        if opened.state == State.REQUESTED.value:  # otherwise the provider's answer has already scheduled it
            self._spawn(self._react(participant, opened))  # the script (or default) may move on from REQUESTED
        return opened

    async def _find_offer(
        self, participant: ParticipantRuntime, dsp: str, offer_id: str
    ) -> tuple[dict[str, Any], str, str | None]:
        """The offer's normalised policy, its dataset id and the provider's participant id."""
        _, asset_hint = contracts.offer_parts(offer_id)
        datasets: list[dict[str, Any]] = []
        participant_id: str | None = None
        if asset_hint:
            resp = await self.node.client.request(
                "GET", f"{dsp}/catalog/datasets/{asset_hint}", signer=participant.signer
            )
            if resp.status == 200 and isinstance(resp.json(), dict):
                datasets = [resp.json()]
        if not datasets:
            resp = await self.node.client.request(
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
        callback = getattr(message, "callbackAddress", None)
        if not callback:
            raise MessageError("callbackAddress is required in the initial message", path="callbackAddress")
        try:
            check_url(callback, self.node.policy)
        except OutboundRefused as exc:
            raise MessageError(f"callbackAddress refused: {exc.message}", path="callbackAddress") from exc
        offer = contracts.read_policy(getattr(message, "offer", None), "offer")
        pid = new_pid()
        if role is Role.PROVIDER:
            assert isinstance(message, m.ContractRequestMessage)
            provider_pid, consumer_pid = pid, message.consumerPid
        else:
            assert isinstance(message, m.ContractOfferMessage)
            provider_pid, consumer_pid = message.providerPid, pid
        offer_id = str(offer.get("@id", ""))
        target = str(offer.get("target") or contracts.offer_parts(offer_id)[1] or "")
        record = NegotiationRecord(
            participant_id=participant.id, id=pid, role=role.value, state=state.value, counterparty_did=caller,
            provider_pid=provider_pid, consumer_pid=consumer_pid, counterparty_address=callback.rstrip("/"),
            asset_id=target, offer_id=offer_id, offer=offer, requested=offer if role is Role.PROVIDER else {},
            created_at=now_text(), updated_at=now_text(),
        )
        await self.node.contracts.create_negotiation(record, "message-in", f"{kind.value} (initial) from {caller}")
        log.info("negotiation opened", participant=participant.name, id=pid, role=role.value, peer=caller,
                 offer=offer_id)
        self._spawn(self._react(participant, record))
        return record

    async def on_message(
        self, participant: ParticipantRuntime, local_pid: str, kind: Kind, message: Any, caller: str
    ) -> NegotiationRecord:
        """A message about an existing negotiation, addressed to our pid *local_pid*."""
        key = (participant.id, local_pid)
        async with self._lock(key):
            record = await self.node.contracts.negotiation(participant.id, local_pid)
            if record is None or not self._is_party(record, caller):
                raise NotFound("no such negotiation")
            role = Role(record.role)
            if role is Role.PROVIDER and message.providerPid != record.id:
                raise NegotiationError("providerPid does not match the negotiation", record)
            if role is Role.CONSUMER and message.consumerPid != record.id:
                raise NegotiationError("consumerPid does not match the negotiation", record)
            try:
                next_state = table_receive(State(record.state), kind, role.other)
            except InvalidTransition as exc:
                await self.node.contracts.add_event(participant.id, record.id, now_text(), "error",
                                                    f"refused {kind.value}: {exc.message}")
                raise NegotiationError(exc.message, record) from exc
            updated = _replace(record, state=next_state.value)
            if role is Role.CONSUMER and not record.provider_pid:
                updated = _replace(updated, provider_pid=message.providerPid)
            if role is Role.PROVIDER and record.consumer_pid != message.consumerPid:
                raise NegotiationError("consumerPid does not match the negotiation", record)
            agreement_row: AgreementRecord | None = None
            if kind in (Kind.OFFER, Kind.REQUEST):
                updated = _replace(updated, offer=contracts.read_policy(message.offer, "offer"))
            elif kind is Kind.AGREEMENT:
                agreement = self._check_agreement(participant, record, message.agreement)
                updated = _replace(updated, agreement=agreement)
                agreement_row = _agreement_row(updated, State.AGREED)
            elif kind is Kind.FINALIZED and record.agreement is not None:
                agreement_row = _agreement_row(updated, State.FINALIZED)
            elif kind is Kind.TERMINATION:
                updated = _replace(updated, reason=_termination_reason(message, "the peer"))
            updated = await self._commit(record, updated, "message-in", f"{kind.value} from {caller}",
                                         agreement=agreement_row)
        self._spawn(self._react(participant, updated))
        return updated

    def _is_party(self, record: NegotiationRecord, caller: str) -> bool:
        return record.counterparty_did == caller or self.node.conformance_caller(caller)

    def _check_agreement(
        self, participant: ParticipantRuntime, record: NegotiationRecord, agreement: Any
    ) -> dict[str, Any]:
        if not isinstance(agreement, dict):
            raise NegotiationError("agreement must be an ODRL Agreement object", record)
        problems = []
        for field in ("@id", "target", "assigner", "assignee", "timestamp"):
            if not isinstance(agreement.get(field), str) or not agreement[field]:
                problems.append(f"agreement.{field} is missing")
        if problems:
            raise NegotiationError("; ".join(problems), record)
        policy = contracts.read_policy(agreement, "agreement")
        if not contracts.same_terms(policy, record.offer):
            raise NegotiationError("the agreement's terms differ from the offer", record)
        if record.asset_id and agreement["target"] != record.asset_id:
            raise NegotiationError(f"the agreement is for {agreement['target']}, not {record.asset_id}", record)
        if agreement["assignee"] != participant.did and not self.node.conformance_caller(record.counterparty_did):
            raise NegotiationError(f"the agreement's assignee is {agreement['assignee']}, not {participant.did}",
                                   record)
        return agreement

    # -- our own moves -------------------------------------------------------------------------------

    async def _react(self, participant: ParticipantRuntime, record: NegotiationRecord) -> None:
        """Take the node's next step for *record*, if it is ours to take."""
        try:
            step = self.script(record) if self.script is not None else None
            if step is None:
                step = self._default_step(record)
            if step is None or step == "wait":
                return
            await self._do(participant, record.id, step)
        except Exception:
            log.exception("negotiation step failed", id=record.id)

    def _default_step(self, record: NegotiationRecord) -> str | None:
        state, role = State(record.state), Role(record.role)
        if role is Role.PROVIDER:
            return {State.REQUESTED: "decide", State.ACCEPTED: "agree", State.VERIFIED: "finalize"}.get(state)
        if state is State.OFFERED and record.requested:
            return "accept" if contracts.same_terms(record.offer, record.requested) else None
        if state is State.AGREED:
            return "verify"
        return None

    async def _do(self, participant: ParticipantRuntime, negotiation_id: str, step: str, reason: str = "") -> None:
        key = (participant.id, negotiation_id)
        async with self._lock(key):
            record = await self.node.contracts.negotiation(participant.id, negotiation_id)
            if record is None or State(record.state) in TERMINAL:
                return
            if step == "decide":
                step, reason, counter = await self._provider_decision(participant, record)
                if counter is not None:
                    record = _replace(record, offer=counter)
            kind = {
                "offer": Kind.OFFER, "agree": Kind.AGREEMENT, "finalize": Kind.FINALIZED, "accept": Kind.ACCEPTED,
                "verify": Kind.VERIFICATION, "counter-request": Kind.REQUEST, "terminate": Kind.TERMINATION,
            }[step]
            await self._send(participant, record, kind, reason)

    async def _provider_decision(
        self, participant: ParticipantRuntime, record: NegotiationRecord
    ) -> tuple[str, str, dict[str, Any] | None]:
        """Agree, counter-offer or terminate (with the reason)."""
        definition_id, asset_hint = contracts.offer_parts(record.offer_id)
        asset_id = record.asset_id or asset_hint or ""
        snapshot = await self.node.contracts.catalog(participant.id)
        definition = next((d for d in snapshot.definitions if d.id == definition_id), None)
        if definition is None or asset_id not in definition.assets:
            return "terminate", f"offer {record.offer_id!r} is not in this catalog", None
        facts = await self.node.catalog.peer_facts(participant, record.counterparty_did)
        now = datetime.now(UTC)
        offered = [o for o in visible_offers(snapshot, facts, now)
                   if o.definition.id == definition_id and o.asset.id == asset_id]
        if not offered:
            access = snapshot.policies.get(definition.access_policy_id)
            why = ""
            if access is not None:
                from connector.services.policy import decide_access

                decision = decide_access(access.policy, facts, target=None, now=now)
                why = ": " + "; ".join(decision.reasons) if decision.reasons else ""
            return "terminate", f"the access policy of offer {record.offer_id!r} does not admit you{why}", None
        ours = offered[0].policy
        if contracts.same_terms(record.offer, ours):
            return "agree", "", None
        events = await self.node.contracts.events(participant.id, record.id)
        if any(e.kind == "message-out" and e.detail.startswith(Kind.OFFER.value) for e in events):
            return "terminate", "the requested terms still differ from the offer after a counter-offer", None
        return "offer", "", contracts.message_offer(ours, offered[0].offer_id, asset_id)

    async def _send(self, participant: ParticipantRuntime, record: NegotiationRecord, kind: Kind,
                    reason: str = "") -> NegotiationRecord:
        role = Role(record.role)
        try:
            next_state = table_send(State(record.state), kind, role)
        except TdsError as exc:
            log.warning("local protocol error", id=record.id, error=exc.message)
            raise
        updated = _replace(record, state=next_state.value)
        agreement_row: AgreementRecord | None = None
        if kind is Kind.AGREEMENT:
            agreement = contracts.agreement(
                record.offer, agreement_id=new_pid(), target=record.asset_id, assigner=participant.did,
                assignee=record.counterparty_did, timestamp=now_text(),
            )
            updated = _replace(updated, agreement=agreement)
            agreement_row = _agreement_row(updated, State.AGREED)
        elif kind is Kind.FINALIZED and record.agreement is not None:
            agreement_row = _agreement_row(updated, State.FINALIZED)
        elif kind is Kind.TERMINATION:
            updated = _replace(updated, reason=reason or "terminated by the operator")
        message = self._message(participant, updated, kind, reason)
        updated = await self._commit(record, updated, "message-out", f"{kind.value}" + (f": {reason}" if reason
                                     else ""), agreement=agreement_row)
        url = self._url(updated, kind)
        try:
            response = await self.node.client.request("POST", url, json_body=m.encode(message),
                                                      signer=participant.signer)
            if response.status >= 300:
                raise PeerError(f"answered {response.status}: {_peer_reason(response.body)}")
        except PeerError as exc:
            step = kind.value
            await self.node.contracts.add_event(participant.id, updated.id, now_text(), "error",
                                                f"{step} to {url}: {exc.message}")
            if kind is not Kind.TERMINATION:
                await self._terminate_locally(
                    updated, f"{step} could not be delivered to {updated.counterparty_did} ({url}): {exc.message}"
                )
            return updated
        if kind is not Kind.TERMINATION:
            self._spawn(self._react(participant, updated))
        return updated

    async def _terminate_locally(self, record: NegotiationRecord, reason: str) -> None:
        if State(record.state) in TERMINAL:
            return
        updated = _replace(record, state=State.TERMINATED.value, reason=reason)
        try:
            await self._commit(record, updated, "state", f"TERMINATED: {reason}")
        except NegotiationError:
            return
        log.warning("negotiation terminated", id=record.id, reason=reason)

    def _message(self, participant: ParticipantRuntime, record: NegotiationRecord, kind: Kind,
                 reason: str) -> m.Message:
        provider_pid, consumer_pid = record.provider_pid or "", record.consumer_pid or ""
        if kind is Kind.OFFER:
            return m.ContractOfferMessage(providerPid=provider_pid, consumerPid=consumer_pid, offer=record.offer)
        if kind is Kind.REQUEST:
            return m.ContractRequestMessage(providerPid=provider_pid, consumerPid=consumer_pid, offer=record.offer)
        if kind is Kind.AGREEMENT:
            assert record.agreement is not None
            return m.ContractAgreementMessage(providerPid=provider_pid, consumerPid=consumer_pid,
                                              agreement=record.agreement)
        if kind is Kind.VERIFICATION:
            return m.ContractAgreementVerificationMessage(providerPid=provider_pid, consumerPid=consumer_pid)
        if kind in (Kind.ACCEPTED, Kind.FINALIZED):
            event = "ACCEPTED" if kind is Kind.ACCEPTED else "FINALIZED"
            return m.ContractNegotiationEventMessage(providerPid=provider_pid, consumerPid=consumer_pid,
                                                     eventType=event)
        return m.ContractNegotiationTerminationMessage(
            providerPid=provider_pid, consumerPid=consumer_pid, code="terminated",
            reason=[reason or "terminated by the operator"],
        )

    def _url(self, record: NegotiationRecord, kind: Kind) -> str:
        remote_pid = record.consumer_pid if record.role == Role.PROVIDER.value else record.provider_pid
        if not remote_pid:
            raise PeerError("the peer's process id is not known yet")
        return f"{record.counterparty_address}/negotiations/{remote_pid}/{PATHS[kind]}"

    # -- operator actions ----------------------------------------------------------------------------

    async def terminate(self, participant: ParticipantRuntime, negotiation_id: str, reason: str) -> NegotiationRecord:
        async with self._lock((participant.id, negotiation_id)):
            record = await self.node.contracts.negotiation(participant.id, negotiation_id)
            if record is None:
                raise NotFound("no such negotiation")
            if State(record.state) in TERMINAL:
                raise BadRequest(f"the negotiation is already {record.state}")
            return await self._send(participant, record, Kind.TERMINATION, reason)

    async def accept(self, participant: ParticipantRuntime, negotiation_id: str) -> None:
        record = await self.node.contracts.negotiation(participant.id, negotiation_id)
        if record is None:
            raise NotFound("no such negotiation")
        if record.role != Role.CONSUMER.value or record.state != State.OFFERED.value:
            raise BadRequest(f"only an OFFERED negotiation can be accepted by the consumer (it is {record.state})")
        await self._do(participant, negotiation_id, "accept")


def _replace(record: NegotiationRecord, **changes: Any) -> NegotiationRecord:
    import msgspec

    return msgspec.structs.replace(record, **changes)


def _agreement_row(record: NegotiationRecord, state: State) -> AgreementRecord:
    assert record.agreement is not None
    provider, consumer = (
        (record.agreement.get("assigner", ""), record.agreement.get("assignee", ""))
    )
    return AgreementRecord(
        id=str(record.agreement["@id"]), negotiation_id=record.id, role=record.role, provider_did=str(provider),
        consumer_did=str(consumer), asset_id=str(record.agreement.get("target", record.asset_id)),
        agreement=record.agreement, state=state.value, created_at=record.created_at,
    )


def _termination_reason(message: Any, who: str) -> str:
    reasons = [str(r if not isinstance(r, dict) else r.get("@value", r)) for r in (message.reason or [])][:8]
    text = "; ".join(reasons) if reasons else "no reason given"
    code = f" (code {message.code})" if message.code else ""
    return f"terminated by {who}{code}: {text}"[:1000]


def _peer_reason(body: bytes) -> str:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return "a non-JSON body"
    if isinstance(data, dict):
        reason = data.get("reason") or data.get("message")
        if isinstance(reason, list):
            reason = "; ".join(str(r) for r in reason[:4])
        if reason:
            return str(reason)[:300]
    return "no reason given"
