"""Transfer processes, both roles: the shell around ``connector.protocol.transfer``.

The same discipline as negotiations (``connector.services.negotiation``): check the move against the
state table → commit the new state, its history event and the message that follows from it (the
*pending* message) in one transaction → then deliver it, retried with backoff until the peer
acknowledges it or ``delivery_timeout_s`` passes. A timer wakes only for a due retry; a restarted node
re-delivers what was pending, takes the moves that were its own and resumes its pulls from the last
verified chunk. A refused re-delivery is reconciled through the peer's view (``GET …/transfers/:pid``).

Decisions the node takes on its own:
- as provider, on a request: the agreement must be FINALIZED, ours, and with the caller as consumer, and its
  asset not one offered for computation only (the data sandbox, ``connector.services.sandbox``), pulled or
  pushed (otherwise 400 with a ``TransferError`` naming why); the agreement's policy must permit the use now (policy
  engine, ``decide_transfer``: dates, regions, export rules and parties must hold now, while purpose and
  use counts are left to the consumer's usage control; a refusal terminates the process with the
  engine's reasons); the asset's data address must
  resolve inside the data roots. Then it starts the transfer. ``HttpData-PULL``: a start message with
  the data endpoint and a short-lived token bound to the agreement, the transfer and the consumer's DID,
  and a signed envelope over the manifest (``connector.payload.manifest``). ``HttpData-PUSH``: the
  consumer's request named its receiving endpoint and token (the endpoint passes the outbound guard);
  once the start is acknowledged the provider sends the envelope and then the chunks there.
- as consumer, before a request: a participant that holds credentials shakes hands with the provider again
  (as before a negotiation), presenting them, since the claims a provider counted live in its memory only (a
  provider restarted since the agreement would otherwise refuse data that needs a verified region); one that
  holds none sends the request only.
- as consumer, once STARTED: pull the data, or receive the pushed data (``connector.services.receiver``);
  either way verify every chunk before it is written, and complete the transfer once the payload is whole
  and in the vault.

Conformance mode scripts the node's moves by agreement id (:attr:`TransferService.script`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from connector.errors import BadRequest, Conflict, NotFound, OutboundRefused, PayloadTooLarge, PeerError, TdsError
from connector.faults import crash_point
from connector.logging import get_logger
from connector.payload import manifest as manifests
from connector.payload import sealing
from connector.protocol import ids
from connector.protocol import messages as m
from connector.protocol.agreement_lifecycle import IN_FORCE
from connector.protocol.errors import InvalidTransition, MessageError
from connector.protocol.transfer import TERMINAL, TRANSITIONS, Kind, Role, State
from connector.protocol.transfer import receive as table_receive
from connector.protocol.transfer import send as table_send
from connector.services import addresses
from connector.services.ports import DataClient, OutboundClient
from connector.services.process_shell import (
    OPENING,
    Key,
    ProcessShell,
    ProcessType,
    log_failure,
    message_reason,
    new_pid,
    now_text,
)
from connector.store.records import Asset, NegotiationEvent, TransferRecord

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.protocol.export_control import ExportRule
    from connector.protocol.policy import PeerFacts
    from connector.services.ports import Resolver
    from connector.services.vault import Vault
    from connector.store.repository import ContractRepository, TransferRepository

log = get_logger(component="transfer")

PULL = "HttpData-PULL"
#: The provider sends the data to an endpoint the consumer names in its request, instead of the consumer
#: fetching it (see ``connector.services.sender`` and ``connector.services.receiver``).
PUSH = "HttpData-PUSH"
FORMATS = (PULL, PUSH)
ENDPOINT_TYPE = "https://w3id.org/idsa/v4.1/HTTP"
MANIFEST_PROPERTY = "https://w3id.org/tds/v1#manifest"
#: End-to-end encryption of a transfer (connector.payload.sealing): the scheme, and the provider's
#: ephemeral X25519 public key (multibase) from which the consumer derives the transfer key.
SEALING_PROPERTY = "https://w3id.org/tds/v1#sealing"
EPHEMERAL_PROPERTY = "https://w3id.org/tds/v1#ephemeralKey"
SEALING_SCHEME = sealing.SCHEME
#: Data classes whose transfers are always encrypted end to end.
SEALED_CLASSES = frozenset({"important", "core"})
PATHS: dict[Kind, str] = {
    Kind.REQUEST: "request", Kind.START: "start", Kind.SUSPENSION: "suspension", Kind.COMPLETION: "completion",
    Kind.TERMINATION: "termination",
}
STEPS: dict[str, Kind] = {
    "start": Kind.START, "suspend": Kind.SUSPENSION, "complete": Kind.COMPLETION, "terminate": Kind.TERMINATION,
}

Script = Callable[[TransferRecord], "str | None"]
#: Moves one transfer's bytes: ``(service, participant, transfer id)``.
Mover = Callable[["TransferService", "ParticipantRuntime", str], Awaitable[None]]


class Movers(msgspec.Struct, frozen=True):
    """What moves the bytes once a transfer is STARTED, given to :class:`TransferService` by the node:
    the provider's push (``connector.services.sender.push``), the consumer's pull and the completion of a
    received push (``connector.services.receiver.pull``, ``…finish_push``). Passed in rather than imported:
    the movers use the service, the service only starts them."""

    push: Mover
    pull: Mover
    finish_push: Mover


class TransferError(InvalidTransition):
    """A refused transfer message; carries the pids for the ``TransferError`` body."""

    def __init__(self, message: str, record: TransferRecord | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.dsp_fields = (
            {k: v for k, v in (("providerPid", record.provider_pid), ("consumerPid", record.consumer_pid)) if v}
            if record is not None else {}
        )


class Refusal(Exception):
    """The provider will not start this transfer (the reason goes to the consumer)."""


def sandbox_refusal(dataset: str) -> str:
    """Why a dataset offered for computation only is not transferred (pulled or pushed)."""
    return (f"{dataset} is offered for computation only (the data sandbox): its data never leaves the provider; "
            "send aggregate queries under the agreement instead (tds query AGREEMENT \"SQL\")")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _replace(record: TransferRecord, **changes: Any) -> TransferRecord:
    return msgspec.structs.replace(record, **changes)


def _property(address: dict[str, Any] | None, name: str) -> str | None:
    for prop in (address or {}).get("endpointProperties", []) or []:
        if isinstance(prop, dict) and prop.get("name") == name and isinstance(prop.get("value"), str):
            return str(prop["value"])
    return None


def push_target(address: dict[str, Any] | None, client: OutboundClient) -> dict[str, str]:
    """The consumer's receiving endpoint and token from a push request's data address (untrusted input:
    the endpoint must pass the outbound guard, the token must be there; 400 naming the field otherwise)."""
    if not isinstance(address, dict):
        raise MessageError(f"a {PUSH} request needs a dataAddress naming the consumer's receiving endpoint",
                           path="dataAddress")
    endpoint = address.get("endpoint")
    if not isinstance(endpoint, str) or not 0 < len(endpoint) <= 2048:
        raise MessageError("the dataAddress needs an endpoint (a URL of at most 2048 characters)",
                           path="dataAddress.endpoint")
    try:
        client.check_target(endpoint)
    except OutboundRefused as exc:
        raise MessageError(f"dataAddress.endpoint refused: {exc.message}", path="dataAddress.endpoint") from exc
    token = _property(address, "authorization")
    if not token or len(token) > 1024:
        raise MessageError("the dataAddress needs an authorization endpoint property (at most 1024 characters)",
                           path="dataAddress.endpointProperties")
    return {"endpoint": endpoint.rstrip("/"), "token": token}


class TransferService(ProcessShell[TransferRecord]):
    """Both roles of the transfer process over DSP, for every hosted participant, and the movers of its bytes
    (``connector.services.sender``, ``connector.services.receiver``), which read what they use from here.

    What it is given: *repository*, the transfer processes and manifests (``TransferRepository``);
    *contracts*, the agreements and negotiations (``ContractRepository``); *client*, the outbound client;
    *vault*, where received data is written (``Vault``); *movers*, what moves the bytes (:class:`Movers`);
    *participant_by_id*, the hosted participants;
    *resolver*, for the DID documents (the provider's envelope signature, the consumer's key-agreement key);
    *dsp_base_of*, how a peer named by the operator is found; *verify_peer* and *holds_credentials*, the
    handshake (``FederationService``) a consumer holding credentials makes before asking for data, and whether
    it holds any (``CredentialService.holds_any``); *peer_facts*, what is known of a peer (the policy's facts);
    *data_dir* and *data_roots*, where asset files may lie; *export_rules*; whether *encrypt_transfers* always;
    *conformance_caller*: whether a DID is the compatibility kit's; the timeouts (delivery, start, stall), the
    token lifetime, the chunk retries and the vault quota; and *clock* (POSIX seconds)."""

    process = ProcessType(name="transfer", path="transfers", kinds=Kind, states=State, transitions=TRANSITIONS,
                          ack=m.TransferProcess, crash_prefix="after-delivering-transfer-")

    def __init__(
        self,
        repository: TransferRepository,
        contracts: ContractRepository,
        client: DataClient,
        vault: Vault,
        movers: Movers,
        *,
        participant_by_id: Callable[[str], ParticipantRuntime | None],
        resolver: Resolver,
        dsp_base_of: Callable[[str], Awaitable[str]],
        peer_facts: Callable[[ParticipantRuntime, str], Awaitable[PeerFacts]],
        data_dir: Path,
        verify_peer: Callable[[ParticipantRuntime, str], Awaitable[Any]] | None = None,
        holds_credentials: Callable[[ParticipantRuntime], Awaitable[bool]] | None = None,
        data_roots: Mapping[str, list[str]] | None = None,
        export_rules: Sequence[ExportRule] = (),
        encrypt_transfers: bool = False,
        conformance_caller: Callable[[str], bool] = lambda _did: False,
        delivery_timeout_s: float,
        start_timeout_s: float,
        stall_timeout_s: float,
        token_ttl_s: float,
        chunk_retries: int,
        vault_quota_bytes: int,
        clock: Callable[[], float] = time.time,
        moved: Callable[[str, int], None] = lambda _direction, _n: None,
    ) -> None:
        super().__init__(client, clock=clock)
        self.repository = repository
        #: Told of payload bytes moved: ``("sent", n)`` as a provider streams or pushes them, ``("received",
        #: n)`` as a consumer stores verified chunks.
        self.moved = moved
        self.contracts = contracts
        self.client = client
        self.vault = vault
        self.movers = movers
        self.resolver = resolver
        self.data_dir = data_dir
        self._participant_by_id = participant_by_id
        self._dsp_base_of = dsp_base_of
        self._peer_facts = peer_facts
        self._verify_peer = verify_peer
        self._holds_credentials = holds_credentials
        #: ``[data_roots]`` and the export rules, read at each use (the confinement, a provider's start).
        self.data_roots: Mapping[str, list[str]] = data_roots or {}
        self.export_rules: Sequence[ExportRule] = export_rules
        self._encrypt_transfers = encrypt_transfers
        self._conformance_caller = conformance_caller
        self.delivery_timeout = delivery_timeout_s
        self.start_timeout = start_timeout_s
        self.stall_timeout = stall_timeout_s
        self.token_ttl = token_ttl_s
        self.chunk_retries = chunk_retries
        self.vault_quota_bytes = vault_quota_bytes
        #: The task moving each transfer's bytes: a consumer's pull or a provider's push.
        self._movers: dict[Key, asyncio.Task[None]] = {}
        #: Provider: the data responses being streamed per transfer (cut off when it leaves STARTED).
        self._streams: dict[Key, set[asyncio.Task[Any]]] = {}
        #: Consumer: when each STARTED transfer last made progress (a verified chunk stored, its manifest
        #: accepted, the start), by the service's clock, and its resume point at the last deadline check: the
        #: stall limit counts from there, whatever keeps it from progressing.
        self._progressed: dict[Key, float] = {}
        self._seen_received: dict[Key, int] = {}
        #: Consumer: why the last attempt to store a transfer's data failed, until it progresses again.
        self._failed: dict[Key, str] = {}
        #: Conformance mode: names the node's next step for a transfer ("start", "suspend", "complete",
        #: "terminate", "pull", "wait"), or None for the default.
        self.script: Script | None = None

    def confinement(self, participant: ParticipantRuntime) -> addresses.Confinement:
        """Where *participant*'s asset files may lie (its own ``files/NAME/`` and the roots given to it)."""
        return addresses.confinement(self.data_dir, participant.name, self.data_roots)

    def now(self) -> float:
        """The service's clock (POSIX seconds)."""
        return self._clock()

    def timestamp(self) -> str:
        """Now by the service's clock, as stored in the records and their history."""
        return now_text(self._clock())

    # -- plumbing (the rest is ProcessShell's) ----------------------------------------------------------

    def is_final(self, record: TransferRecord) -> bool:
        return record.state in TERMINAL

    async def load(self, key: Key) -> TransferRecord | None:
        return await self.repository.get(*key)

    async def _unfinished(self) -> list[TransferRecord]:
        return await self.repository.all_active()

    def _process_id(self) -> str | None:
        return self.repository.store.process_id

    async def _claim_undriven(self, participant_id: str | None) -> set[Key]:
        return await self.repository.claim(participant_id)

    async def _driver(self, key: Key) -> str | None:
        return await self.repository.driver(*key)

    async def close(self) -> None:
        await self._close(*self._movers.values())
        self._movers.clear()

    async def commit(self, old: TransferRecord, new: TransferRecord, event: str, detail: str = "") -> TransferRecord:
        # The consumer's deadlines: a requested transfer must be started, and a started one (pulled or pushed)
        # must make progress (see _on_deadline); either is terminated with the reason when its deadline passes.
        consumer = new.role == Role.CONSUMER and new.pending is None
        waiting = consumer and new.state == State.REQUESTED
        receiving = consumer and new.state == State.STARTED
        key = (new.participant_id, new.id)
        restarted = False
        if not (waiting or receiving):
            new = _replace(new, expires_at=None)
        elif new.expires_at is None or old.state != new.state:
            limit = self.start_timeout if waiting else self.stall_timeout
            new = _replace(new, expires_at=self._clock() + limit)
            restarted = receiving
        new = _replace(new, updated_at=self.timestamp())
        # The resume point moves on its own while bytes arrive (set_received): only a commit that changes
        # it writes it, so a state change committed meanwhile cannot move it back.
        if not await self.repository.update(new, expected_state=old.state, event=event, detail=detail,
                                                     keep_received=new.received == old.received):
            raise TransferError("the transfer changed concurrently; retry", old, status=409)
        if not receiving or restarted:  # (re)started: the stall limit counts from now
            self._forget_progress(key)
            if restarted:
                self._progressed[key], self._seen_received[key] = self._clock(), new.received
        if old.state != new.state:
            log.info("transfer state", participant=new.participant_id, id=new.id, role=new.role, old=old.state,
                     new=new.state, reason=new.reason or None)
            if new.state != State.STARTED:
                self._cut_streams((new.participant_id, new.id))
        self._notify(new)
        return new

    # -- progress of the data a consumer receives (the stall limit) ---------------------------------

    def progressed(self, key: Key) -> None:
        """Transfer *key* made progress now (a verified chunk stored, its manifest accepted)."""
        self._progressed[key] = self._clock()
        self._failed.pop(key, None)

    def progressed_at(self, key: Key) -> float:
        """When transfer *key* last made progress; now if that is not known (since a restart, the stall limit
        counts from the restart)."""
        return self._progressed.setdefault(key, self._clock())

    def attempt_failed(self, key: Key, why: str, progressed_before: float) -> None:
        """An attempt to store transfer *key*'s data failed with *why* (a reason the stall limit names) and its
        partial file was discarded: what it wrote was no progress after all, and the stall limit counts from
        *progressed_before* (:meth:`progressed_at` when the attempt began) again. A disk with room for a few
        chunks at a time thus cannot keep a transfer going for ever."""
        self._failed[key] = why
        self._progressed[key] = progressed_before

    def stall_reason(self, record: TransferRecord, received: int, failed: str | None) -> str:
        """Why a transfer that made no progress for the stall limit ends: the provider sent nothing, or what kept
        its data from being stored here (*failed*), with how much of it is here (*received* bytes)."""
        got = "not even the manifest" if record.size is None else f"{received} of {record.size} bytes received"
        if failed:
            return f"no data could be stored for {self.stall_timeout:g} s ({got}): {failed}"[:900]
        return f"{record.counterparty_did} sent no data for {self.stall_timeout:g} s ({got})"

    def _forget_progress(self, key: Key) -> None:
        for seen in (self._progressed, self._seen_received, self._failed):
            seen.pop(key, None)

    # -- the timer: delivery retries, and the consumer's wait for a start ----------------------------

    def _participant(self, key: Key) -> ParticipantRuntime | None:
        return self._participant_by_id(key[0])

    async def _on_deadline(self, participant: ParticipantRuntime, record: TransferRecord, now: float) -> None:
        key = (record.participant_id, record.id)
        if record.state == State.STARTED:  # data we receive, pulled or pushed: did it make progress?
            seen = self._seen_received.get(key)
            if key not in self._progressed or seen is None or record.received > seen:
                # The resume point passed its highest so far since the last look (or this is the first look
                # since a restart). A resume point set back, by an attempt that could not store its data, is no
                # progress, nor is its climbing back.
                self._progressed[key], self._seen_received[key] = now, max(seen or 0, record.received)
            due = self._progressed[key] + self.stall_timeout
            mover = self._movers.get(key)
            if (mover is not None and not mover.done()) or key in self._streams:
                # A pull or a pushed body being received gives up by itself at the stall limit, with the
                # precise reason (the provider's error, the disk's); this is the backstop should it hang.
                due += self.stall_timeout
            if now < due:
                # Look again then (kept in memory: the row is not rewritten while the receiving side advances
                # its resume point).
                self._due[key] = due
                self._wake.set()
                return
            failed = self._failed.get(key)  # its partial file was discarded: nothing of it is here
            why = self.stall_reason(record, 0 if failed else record.received, failed)
            await self._send(participant, record, Kind.TERMINATION, why)
            return
        timeout = self.start_timeout
        await self._send(participant, record, Kind.TERMINATION,
                         f"{record.counterparty_did} did not start the transfer within {timeout:.0f} s")

    # -- consumer: requesting a transfer -------------------------------------------------------------

    async def start(self, participant: ParticipantRuntime, agreement_id: str, peer: str | None = None,
                    *, push: bool = False) -> TransferRecord:
        """Ask the provider of *agreement_id* for its data (pulled, or pushed to us with *push*); returns once
        the provider acknowledged."""
        agreement = await self.contracts.agreement(participant.id, agreement_id)
        if agreement is None or agreement.role != Role.CONSUMER:
            raise BadRequest(f"no agreement {agreement_id!r} where this participant is the consumer",
                             path="agreementId")
        if agreement.state not in IN_FORCE:
            raise Conflict(f"agreement {agreement_id!r} is {agreement.state}, not FINALIZED")
        if await asyncio.to_thread(self.vault.usage, participant) >= self.vault_quota_bytes:
            raise PayloadTooLarge(f"the participant's vault is full ({self.vault_quota_bytes} bytes, "
                                  "node.vault_quota_bytes): delete data it no longer needs first")
        if peer:
            dsp = await self._dsp_base_of(peer)
        else:
            negotiation = await self.contracts.negotiation(participant.id, agreement.negotiation_id)
            if negotiation is None or not negotiation.counterparty_address:
                raise BadRequest("the provider's address is not known; give the peer", path="peer")
            dsp = negotiation.counterparty_address
        await self._present_credentials(participant, dsp)
        return await self.request(participant, dsp, agreement.provider_did, agreement_id, agreement.asset_id,
                                  PUSH if push else PULL)

    async def _present_credentials(self, participant: ParticipantRuntime, dsp: str) -> None:
        """Show the provider this participant's credentials again, in a handshake, if it holds any.

        The provider decides the transfer on what it verifies of us now (export control reads a verified
        region), and the claims it counted are kept in its memory only: a provider restarted since the
        agreement knows none until we present them again. A participant without credentials has nothing to
        show and sends nothing more. Whatever happens here, the request goes ahead: the provider decides."""
        if self._verify_peer is None or self._holds_credentials is None:
            return
        if not await self._holds_credentials(participant):
            return
        try:
            await self._verify_peer(participant, dsp)
        except TdsError as exc:
            log.info("credentials not presented before the transfer", participant=participant.name, peer=dsp,
                     reason=exc.message)

    # -- reading -------------------------------------------------------------------------------------

    async def find(self, participant: ParticipantRuntime, *, states: list[State] | None = None, limit: int = 100
                   ) -> list[TransferRecord]:
        """The participant's transfers, newest first, only those in *states* when given."""
        return await self.repository.find(participant.id, states=states, limit=limit)

    async def history(self, participant: ParticipantRuntime, transfer_id: str) -> list[NegotiationEvent]:
        return await self.repository.events(participant.id, transfer_id)

    async def bundle(self, participant: ParticipantRuntime, transfer_id: str) -> dict[str, Any]:
        """A consumer's transfer's verified manifest with its signed envelope and the provider's DID document;
        404 before it has one."""
        record = await self.repository.get(participant.id, transfer_id)
        if record is None:
            raise NotFound("no such transfer")
        if record.role != Role.CONSUMER or not record.envelope:
            raise NotFound("this transfer has no verified manifest (yet)")
        return record.envelope

    async def request(self, participant: ParticipantRuntime, dsp: str, provider_did: str, agreement_id: str,
                      asset_id: str, fmt: str = PULL) -> TransferRecord:
        """Open a transfer as consumer: commit REQUESTED with the opening request, then deliver it."""
        pid = new_pid()
        inbox: dict[str, Any] | None = None
        inbox_token: str | None = None
        if fmt == PUSH:
            # Where the provider sends the data, and the token it must present there (only its hash stays).
            inbox_token = secrets.token_urlsafe(32)
            inbox = {"@type": "DataAddress", "endpointType": ENDPOINT_TYPE,
                     "endpoint": f"{participant.base_url}/inbox/{pid}",
                     "endpointProperties": [
                         {"@type": "EndpointProperty", "name": "authorization", "value": inbox_token},
                         {"@type": "EndpointProperty", "name": "authType", "value": "bearer"}]}
        message = m.TransferRequestMessage(consumerPid=pid, agreementId=agreement_id, format=fmt,
                                           callbackAddress=participant.dsp_base, dataAddress=inbox)
        now = self._clock()
        dsp = dsp.rstrip("/")
        record = TransferRecord(
            participant_id=participant.id, id=pid, role=Role.CONSUMER,
            state=table_send(None, Kind.REQUEST, Role.CONSUMER), counterparty_did=provider_did,
            agreement_id=agreement_id, consumer_pid=pid, counterparty_address=dsp, asset_id=asset_id, format=fmt,
            data_address={"push": {}} if fmt == PUSH else None,
            token_hash=token_hash(inbox_token) if inbox_token else None,
            pending={"kind": Kind.REQUEST.name, "url": f"{dsp}/transfers/request", "body": m.encode(message),
                     OPENING: True},
            next_attempt_at=now, deliver_by=now + self.delivery_timeout, created_at=self.timestamp(),
            updated_at=self.timestamp(),
        )
        await self.repository.create(record, "message-out", "TransferRequestMessage (opening)")
        async with self.lock((participant.id, pid)):
            current = await self.repository.get(participant.id, pid) or record
            return await self._deliver(participant, current)

    # -- incoming DSP messages -----------------------------------------------------------------------

    async def on_request(self, participant: ParticipantRuntime, message: m.TransferRequestMessage, caller: str
                         ) -> TransferRecord:
        """A consumer's TransferRequestMessage (we are provider)."""
        table_receive(None, Kind.REQUEST, Role.CONSUMER)
        existing = await self.repository.by_consumer_pid(participant.id, caller, message.consumerPid)
        if existing is not None:
            await self.repository.add_event(participant.id, existing.id, self.timestamp(), "duplicate",
                                                     "TransferRequestMessage (opening) received again")
            return existing
        if message.format not in FORMATS:
            raise TransferError(f"format {message.format!r} is not offered (this node offers {', '.join(FORMATS)})")
        agreement = await self.contracts.agreement(participant.id, message.agreementId)
        conformance = self._conformance_caller(caller)
        if agreement is None or agreement.role != Role.PROVIDER or (
                agreement.consumer_did != caller and not conformance):
            raise TransferError(f"no agreement {message.agreementId!r} with you")
        if agreement.state not in IN_FORCE:
            raise TransferError(f"agreement {message.agreementId!r} is {agreement.state}, not FINALIZED")
        sandboxed = await self._sandboxed(participant, agreement.asset_id)
        if sandboxed:
            raise TransferError(sandboxed)
        try:
            self._client.check_target(message.callbackAddress)
        except OutboundRefused as exc:
            raise MessageError(f"callbackAddress refused: {exc.message}", path="callbackAddress") from exc
        target = push_target(message.dataAddress, self._client) if message.format == PUSH else None
        pid = new_pid()
        record = TransferRecord(
            participant_id=participant.id, id=pid, role=Role.PROVIDER, state=State.REQUESTED,
            counterparty_did=caller, agreement_id=agreement.id, provider_pid=pid, consumer_pid=message.consumerPid,
            counterparty_address=message.callbackAddress.rstrip("/"), asset_id=agreement.asset_id,
            format=message.format, data_address={"push": target} if target else None, created_at=self.timestamp(),
            updated_at=self.timestamp(),
        )
        await self.repository.create(record, "message-in", f"TransferRequestMessage (opening) from {caller}")
        crash_point("provider-after-storing-transfer-request")
        log.info("transfer requested", participant=participant.name, id=pid, peer=caller, agreement=agreement.id)
        self._spawn(self._react(participant, record))
        return record

    async def _sandboxed(self, participant: ParticipantRuntime, dataset: str) -> str:
        """Why the data of *dataset* is not transferred, if it is offered for computation only; else ''."""
        asset = await self.contracts.entry(participant.id, Asset, ids.local_asset_id(participant.did, dataset))
        return sandbox_refusal(dataset) if asset is not None and asset.sandbox is not None else ""

    async def on_message(self, participant: ParticipantRuntime, local_pid: str, kind: Kind, message: Any,
                         caller: str) -> TransferRecord:
        """A message about an existing transfer, addressed to our pid *local_pid*."""
        key = (participant.id, local_pid)
        async with self.lock(key):
            record = await self.repository.get(participant.id, local_pid)
            if record is None or not (record.counterparty_did == caller or self._conformance_caller(caller)):
                raise NotFound("no such transfer process")
            role = record.role
            ours, theirs = ((message.providerPid, message.consumerPid) if role == Role.PROVIDER
                            else (message.consumerPid, message.providerPid))
            remote = record.consumer_pid if role == Role.PROVIDER else record.provider_pid
            if ours != record.id or (remote and theirs != remote):
                raise TransferError("providerPid/consumerPid do not match the transfer process", record)
            try:
                next_state = table_receive(record.state, kind, role.other)
            except InvalidTransition as exc:
                await self.repository.add_event(participant.id, record.id, self.timestamp(), "error",
                                                         f"refused {kind.value}: {exc.message}")
                raise TransferError(exc.message, record) from exc
            updated = _replace(record, state=next_state)
            if role == Role.CONSUMER and not record.provider_pid:
                updated = _replace(updated, provider_pid=message.providerPid)
            if kind is Kind.START and role == Role.CONSUMER and message.dataAddress is not None and (
                    record.format != PUSH):  # a push's start carries no address; ours (inbox, key) stays
                updated = _replace(updated, data_address=message.dataAddress)
            elif kind in (Kind.TERMINATION, Kind.SUSPENSION):
                verb = "suspended" if kind is Kind.SUSPENSION else "terminated"
                updated = _replace(updated, reason=message_reason(message, "the peer", verb))
            elif kind is Kind.START and role == Role.PROVIDER:
                updated = _replace(updated, reason="")
            updated = await self.commit(record, updated, "message-in", f"{kind.value} from {caller}")
            if next_state is not State.STARTED:
                self._stop_mover(key)
            if role == Role.CONSUMER and next_state is State.TERMINATED:
                self.vault.discard_partial(participant, updated.agreement_id, updated.id)
        self._spawn(self._react(participant, updated))
        return updated

    # -- our own moves -------------------------------------------------------------------------------

    async def _react(self, participant: ParticipantRuntime, record: TransferRecord) -> None:
        try:
            step = self.script(record) if self.script is not None else None
            if step is None:
                step = self._default_step(record)
            if step is None or step == "wait":
                return
            if step in ("pull", "push"):
                self._start_mover(participant, record)
                return
            if step == "finish":
                await self.movers.finish_push(self, participant, record.id)
                return
            await self.do(participant, record.id, step, expected_state=record.state)
        except Exception:
            log.exception("transfer step failed", id=record.id)

    def react_soon(self, participant: ParticipantRuntime, transfer_id: str) -> None:
        """Take the node's next move on a transfer in the background (after its bytes arrived)."""

        async def go() -> None:
            record = await self.repository.get(participant.id, transfer_id)
            if record is not None:
                await self._react(participant, record)

        self._spawn(go())

    def _default_step(self, record: TransferRecord) -> str | None:
        state = record.state
        if record.role == Role.PROVIDER:
            if state == State.REQUESTED:
                return "start"
            if state == State.STARTED and record.format == PUSH and record.pending is None and not (
                    record.data_address or {}).get("pushed"):
                return "push"
            return None
        if state != State.STARTED or record.pending is not None:
            return None
        if record.format == PUSH:  # the provider sends; once every chunk is here, place it and complete
            return "finish" if record.manifest is not None and record.received >= (record.size or 0) else None
        return "pull" if record.data_address is not None else None

    async def do(self, participant: ParticipantRuntime, transfer_id: str, step: str, reason: str = "",
                 *, expected_state: State | None = None) -> TransferRecord | None:
        """Take *step*, unless the transfer moved on since the step was chosen for *expected_state*."""
        async with self.lock((participant.id, transfer_id)):
            record = await self.repository.get(participant.id, transfer_id)
            if record is None or record.state in TERMINAL or record.pending is not None:
                return None
            if expected_state is not None and record.state != expected_state:
                return None
            kind = STEPS[step]
            if kind is Kind.START and record.role == Role.PROVIDER:
                try:
                    record = await self._prepare_start(participant, record)
                except Refusal as exc:
                    return await self._send(participant, record, Kind.TERMINATION, str(exc))
            return await self._send(participant, record, kind, reason)

    async def _prepare_start(self, participant: ParticipantRuntime, record: TransferRecord) -> TransferRecord:
        """The provider's checks before a start: policy now, data address, manifest; then a fresh token."""
        agreement = await self.contracts.agreement(participant.id, record.agreement_id)
        if agreement is None or agreement.state not in IN_FORCE:
            raise Refusal(f"agreement {record.agreement_id} is no longer FINALIZED")
        from connector.protocol import export_control
        from connector.protocol.policy import PolicySyntaxError, decide_transfer

        facts = await self._peer_facts(participant, record.counterparty_did)
        try:
            decision = decide_transfer(agreement.agreement, facts, target=agreement.asset_id,
                                       now=datetime.fromtimestamp(self._clock(), UTC))
        except PolicySyntaxError as exc:
            raise Refusal(f"the agreement's policy cannot be evaluated: {exc}") from exc
        if not decision.permitted:
            why = "; ".join(decision.reasons) or "no permission applies"
            raise Refusal(f"the agreement's policy does not permit this transfer now: {why}")
        # The agreement names the dataset by its absolute id (connector.protocol.ids), an older one by the asset id.
        asset_id = ids.local_asset_id(participant.did, agreement.asset_id)
        asset = await self.contracts.entry(participant.id, Asset, asset_id)
        refused = export_control.refusal(
            self.export_rules, data_class=asset.data_class if asset else "general",
            holder_region=participant.record.region, recipient=facts.recipient_region)
        if refused:
            raise Refusal(refused)
        if asset is None or not asset.data_address:
            raise Refusal(f"asset {agreement.asset_id} has no data address on the provider")
        if asset.sandbox is not None:
            raise Refusal(sandbox_refusal(agreement.asset_id))
        try:
            path = addresses.resolve(asset.data_address, self.confinement(participant))
            manifest, version = await self.manifest_for(participant, asset, path)
        except TdsError as exc:
            raise Refusal(f"the asset's data is not available: {exc.message}") from exc
        previous = record.data_address or {}
        if record.format == PUSH and record.manifest is not None and previous.get("path"):
            # Resuming a push: the consumer holds this manifest and the transfer key already; both stay.
            if str(path) != previous["path"] or version != previous.get("version"):
                raise Refusal("the asset's file changed since the push began; request a new transfer")
            return _replace(record, data_address={k: v for k, v in previous.items() if k != "pushed"})
        binding = manifests.Binding(agreement_id=agreement.id, provider_pid=record.id,
                                    consumer_pid=record.consumer_pid or "", provider=participant.did,
                                    consumer=record.counterparty_did)
        signer = participant.signer
        envelope = manifests.sign_envelope(manifest, binding, signer.key, key_id=signer.key_id,
                                           created=self.timestamp())
        source: dict[str, Any] = {"path": str(path), "version": version}
        if asset.data_class in SEALED_CLASSES or self._encrypt_transfers:
            source.update(await self._transfer_key(record, asset.data_class))
        if record.format == PUSH:
            # The consumer's endpoint and token from its request; no data endpoint of ours is opened.
            source["push"] = (record.data_address or {}).get("push", {})
            return _replace(record, data_address=source, manifest=manifests.encode(manifest), envelope=envelope,
                            size=manifest.size)
        token = secrets.token_urlsafe(32)
        source["token"] = token
        return _replace(record, data_address=source, token_hash=token_hash(token),
                        token_expires_at=self._clock() + self.token_ttl,
                        manifest=manifests.encode(manifest), envelope=envelope, size=manifest.size)

    async def _transfer_key(self, record: TransferRecord, data_class: str) -> dict[str, str]:
        """A fresh key for this transfer, agreed with the consumer's published X25519 key."""
        from connector.identity import did as dids
        from connector.identity.multikey import X25519_PUB, MultikeyError, decode_multikey, encode_multibase

        document = await self.resolver.resolve(record.counterparty_did)
        multikey = dids.agreement_key(document)
        if multikey is None:
            raise Refusal(f"data classed {data_class!r} is sent end-to-end encrypted, and "
                          f"{record.counterparty_did} publishes no X25519 key-agreement key in its DID document")
        try:
            recipient = decode_multikey(multikey, X25519_PUB)
        except MultikeyError as exc:
            raise Refusal(f"the consumer's key-agreement key is unusable: {exc}") from exc
        key, ephemeral = sealing.sender_key(recipient, record.id)
        return {"seal_key": key.hex(), "ephemeral": encode_multibase(ephemeral)}

    async def manifest_for(self, participant: ParticipantRuntime, asset: Asset, path: Path
                           ) -> tuple[manifests.Manifest, str]:
        """The manifest of the file's current version (computed once per version, then stored)."""
        stat = await asyncio.to_thread(path.stat)
        version = f"{stat.st_size}:{stat.st_mtime_ns}"
        stored = await self.repository.manifest(participant.id, asset.id, version)
        if stored is not None:
            return manifests.decode(stored), version
        manifest = await asyncio.to_thread(compute_manifest, path, asset.content_type)
        await self.repository.save_manifest(participant.id, asset.id, version, manifests.encode(manifest),
                                                     self.timestamp())
        return manifest, version

    async def _send(self, participant: ParticipantRuntime, record: TransferRecord, kind: Kind,
                    reason: str = "") -> TransferRecord:
        """Commit our move with its message pending, then deliver it. Call with the transfer's lock."""
        role = record.role
        next_state = table_send(record.state, kind, role)
        updated = _replace(record, state=next_state)
        if kind in (Kind.TERMINATION, Kind.SUSPENSION):
            updated = _replace(updated, reason=reason or f"{kind.name.lower()} by the operator")
        message = self._message(updated, kind, reason)
        if kind is Kind.START and role == Role.PROVIDER and updated.data_address:
            # The token travels once, in the start message; only its hash stays beside the data address.
            updated = _replace(updated, data_address={k: v for k, v in updated.data_address.items() if k != "token"})
        now = self._clock()
        updated = _replace(updated, pending={"kind": kind.name, "url": self._url(updated, kind),
                                             "body": m.encode(message)},
                           attempts=0, next_attempt_at=now, deliver_by=now + self.delivery_timeout)
        updated = await self.commit(record, updated, "message-out", kind.value + (f": {reason}" if reason else ""))
        if next_state is not State.STARTED:
            self._stop_mover((record.participant_id, record.id))
        if role == Role.CONSUMER and next_state is State.TERMINATED:
            self.vault.discard_partial(participant, updated.agreement_id, updated.id)
        return await self._deliver(participant, updated)

    def _message(self, record: TransferRecord, kind: Kind, reason: str) -> m.Message:
        provider_pid, consumer_pid = record.provider_pid or "", record.consumer_pid or ""
        if kind is Kind.START:
            address = None
            if record.role == Role.PROVIDER and record.data_address and record.format != PUSH:
                participant = self._participant_by_id(record.participant_id)
                assert participant is not None
                endpoint = f"{participant.base_url}/data/{record.id}"
                address = {
                    "@type": "DataAddress", "endpointType": ENDPOINT_TYPE, "endpoint": endpoint,
                    "endpointProperties": [
                        {"@type": "EndpointProperty", "name": "authorization",
                         "value": str(record.data_address["token"])},
                        {"@type": "EndpointProperty", "name": "authType", "value": "bearer"},
                        {"@type": "EndpointProperty", "name": MANIFEST_PROPERTY, "value": f"{endpoint}/manifest"},
                    ],
                }
                if record.data_address.get("ephemeral"):
                    address["endpointProperties"] += [
                        {"@type": "EndpointProperty", "name": SEALING_PROPERTY, "value": SEALING_SCHEME},
                        {"@type": "EndpointProperty", "name": EPHEMERAL_PROPERTY,
                         "value": str(record.data_address["ephemeral"])},
                    ]
            return m.TransferStartMessage(providerPid=provider_pid, consumerPid=consumer_pid, dataAddress=address)
        if kind is Kind.COMPLETION:
            return m.TransferCompletionMessage(providerPid=provider_pid, consumerPid=consumer_pid)
        if kind is Kind.SUSPENSION:
            return m.TransferSuspensionMessage(providerPid=provider_pid, consumerPid=consumer_pid, code="suspended",
                                               reason=[reason or "suspended by the operator"])
        return m.TransferTerminationMessage(providerPid=provider_pid, consumerPid=consumer_pid, code="terminated",
                                            reason=[reason or "terminated by the operator"])

    def _url(self, record: TransferRecord, kind: Kind) -> str:
        remote_pid = record.consumer_pid if record.role == Role.PROVIDER else record.provider_pid
        if not remote_pid:
            raise PeerError("the peer's process id is not known yet")
        return f"{record.counterparty_address}/transfers/{m.path_segment(remote_pid)}/{PATHS[kind]}"

    def _undeliverable(self, record: TransferRecord) -> None:
        self._stop_mover((record.participant_id, record.id))

    # -- moving the bytes: the consumer's pull, the provider's push ----------------------------------

    def _start_mover(self, participant: ParticipantRuntime, record: TransferRecord) -> None:
        key = (participant.id, record.id)
        task = self._movers.get(key)
        if task is not None and not task.done():
            return
        mover = self.movers.push if record.role == Role.PROVIDER else self.movers.pull
        task = asyncio.get_running_loop().create_task(mover(self, participant, record.id))
        self._movers[key] = task
        task.add_done_callback(lambda t, k=key: self._movers.pop(k, None) if self._movers.get(k) is t else None)
        task.add_done_callback(log_failure)

    def serving(self, key: Key, task: asyncio.Task[Any]) -> None:
        """Note a data response being streamed for the transfer *key* (the caller forgets it when done)."""
        self._streams.setdefault(key, set()).add(task)

    def served(self, key: Key, task: asyncio.Task[Any]) -> None:
        tasks = self._streams.get(key)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._streams[key]

    def _cut_streams(self, key: Key) -> None:
        # A suspended, completed or terminated transfer serves no more bytes, not even on an open stream.
        for task in self._streams.pop(key, set()):
            if task is not asyncio.current_task():
                task.cancel()

    def _stop_mover(self, key: Key) -> None:
        task = self._movers.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def stop_receiving(self, participant: ParticipantRuntime, agreement_id: str, reason: str) -> int:
        """Terminate this participant's transfers that still bring data of *agreement_id* (before that data is
        deleted: nothing may arrive afterwards); return how many were terminated."""
        stopped = 0
        active = [State.REQUESTED, State.STARTED, State.SUSPENDED]
        for record in await self.repository.find(participant.id, states=active, agreement_id=agreement_id,
                                                          limit=1000):
            if record.role != Role.CONSUMER:
                continue
            key = (participant.id, record.id)
            running = {t for t in (self._movers.get(key), *self._streams.get(key, ())) if t is not None}
            running.discard(asyncio.current_task())
            self._stop_mover(key)
            self._cut_streams(key)
            if running:  # let them finish unwinding (closing files, saving progress) before the data goes
                await asyncio.wait(running, timeout=10)
            if await self.do(participant, record.id, "terminate", reason, expected_state=record.state) is not None:
                stopped += 1
        return stopped

    async def stop_all(self, participant_id: str) -> None:
        """A participant is no longer hosted: stop moving its bytes (pulls, pushes, streams it serves) and
        forget its retries and deadlines, before its data is deleted."""
        keys = {k for k in (*self._movers, *self._streams) if k[0] == participant_id}
        running: set[asyncio.Task[Any]] = set()
        for key in keys:
            running |= {t for t in (self._movers.get(key), *self._streams.get(key, ())) if t is not None}
            self._stop_mover(key)
            self._cut_streams(key)
        running -= {asyncio.current_task()}
        if running:  # let them finish unwinding (closing files) before their folders go
            await asyncio.wait(running, timeout=10)
        self.forget(participant_id)
        for key in [k for k in self._progressed if k[0] == participant_id]:
            self._forget_progress(key)

    # -- operator actions ----------------------------------------------------------------------------

    async def act(self, participant: ParticipantRuntime, transfer_id: str, step: str, reason: str = ""
                  ) -> TransferRecord:
        """Suspend, resume ("start") or terminate a transfer on the operator's word."""
        record = await self.repository.get(participant.id, transfer_id)
        if record is None:
            raise NotFound("no such transfer")
        if record.state in TERMINAL:
            raise Conflict(f"the transfer is already {record.state}")
        if record.pending is not None:
            raise Conflict("a message of this transfer is still being delivered; try again shortly")
        kind = STEPS[step]
        try:
            table_send(record.state, kind, record.role)
        except TdsError as exc:  # not a move this state allows (RFC 9110 §15.5.10: the resource's state)
            raise Conflict(exc.message) from exc
        done = await self.do(participant, transfer_id, step, reason, expected_state=record.state)
        if done is None:
            raise Conflict("the transfer moved on meanwhile; look at it again")
        return done


def compute_manifest(path: Path, content_type: str, chunk_size: int = manifests.DEFAULT_CHUNK) -> manifests.Manifest:
    """Read *path* once, chunk by chunk (constant memory), and build its manifest."""
    builder = manifests.ManifestBuilder(content_type, chunk_size=chunk_size)
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            builder.update(view[:n])
    return builder.finish()


__all__ = ["PULL", "PUSH", "TransferError", "TransferService", "compute_manifest", "token_hash"]
