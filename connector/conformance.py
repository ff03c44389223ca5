"""Conformance mode: the test fixture the DSP compatibility kit (eclipse-dataspacetck/dsp-tck) needs.

Not part of the product. It exists only when the node's config has a ``[conformance]`` section (which in
turn needs ``node.dev_mode``); without it nothing here is loaded and the node behaves as always.

The kit plays the other party and cannot tell the node what to do next, so the node's side of each
scenario is fixed by the dataset id (as EDC's ``tck-extension`` does with ``DataSeed`` and
``GuardAssembly``):

- identity: a DSP request without an RFC 9421 signature is accepted when it carries exactly the configured
  static ``Authorization`` value, and its caller is the configured agent id
  (``connector.http.auth``); that id is a counterparty of every negotiation (``ConformanceMode.callers``);
- seed: the first participant offers the kit's datasets (``ACN0101``… for the provider scenarios,
  ``CAT0101``… for the catalog ones) under policy ``P123`` (plain ``use``) and contract definition ``CD123``,
  shown under these ids as the kit expects them (other datasets have absolute ids, ``connector.protocol.ids``);
- script: :data:`GUARDS` names, per dataset id, the node's moves in order, each with the state it is taken
  in. A negotiation over a kit dataset whose next move is not due waits ("pending") instead of taking the
  node's default step; other datasets keep the default behaviour;
- trigger: ``POST /conformance/negotiations/initiate`` (public listener, same static ``Authorization``)
  with ``{datasetId, offerId, providerId, connectorAddress}`` makes the first participant open a
  negotiation as consumer with the kit at ``connectorAddress``. This is the kit's
  ``dataspacetck.dsp.connector.negotiation.initiate.url``;
- transfers: FINALIZED agreements ``ATP0101``… (the node provides ``TP-DATA``, a small seeded file, to the
  kit) and ``ATPC0101``… (the kit provides, the node consumes) are seeded; :data:`TRANSFER_GUARDS` scripts
  the node's moves by agreement id (the node never pulls from the kit); ``POST
  /conformance/transfers/initiate`` with ``{agreementId, format, providerId, connectorAddress}`` makes the
  first participant request a transfer from the kit (``…transfer.initiate.url``).

Kit settings for a node at ``PUBLIC_URL`` whose first participant is ``NAME``:
``dataspacetck.dsp.connector.http.url = PUBLIC_URL/participants/NAME/api/dsp/2025-1``,
``…http.base.url = PUBLIC_URL/api/dsp``, ``…http.headers.authorization = <conformance.authorization>``,
``…negotiation.initiate.url = PUBLIC_URL/conformance/negotiations/initiate``, and ``…agent.id`` = the
participant's DID (the kit's name for the node under test; ``conformance.agent_id`` is the kit's own id).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from connector.config import ConformanceSection
from connector.errors import BadRequest, NotFound, OutboundRefused, PeerError, Unauthorized
from connector.http.auth import static_authorization_matches
from connector.http.management import decode_body
from connector.logging import get_logger
from connector.protocol import contracts
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import TERMINAL, Role, State
from connector.protocol.transfer import TERMINAL as TRANSFER_TERMINAL
from connector.protocol.transfer import State as TState
from connector.store.records import (
    AgreementRecord,
    Asset,
    ContractDefinition,
    NegotiationRecord,
    PolicyRecord,
    TransferRecord,
)

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.catalog import CatalogService
    from connector.services.negotiation import NegotiationService
    from connector.services.ports import OutboundClient
    from connector.services.transfer import TransferService
    from connector.store.repository import ContractRepository

log = get_logger(component="conformance")

POLICY_ID = "P123"
DEFINITION_ID = "CD123"
#: Plain "use", no constraints (the kit's offers carry ``"constraint": []``, which reads the same).
POLICY = {"@id": f"urn:tds:policy:{POLICY_ID}", "@type": "Set", "permission": [{"action": "use"}]}

REQ, OFF, ACC = State.REQUESTED, State.OFFERED, State.ACCEPTED
AGR, VER = State.AGREED, State.VERIFIED

#: dataset id -> the node's moves in order, each as (state it is taken in, step). The steps are those of
#: ``NegotiationService.script``. Ids with an empty sequence never move on their own.
GUARDS: dict[str, tuple[tuple[State, str], ...]] = {
    # CUT as provider (CN:xx-yy uses dataset ACNxxyy)
    "ACN0101": ((REQ, "offer"),),
    "ACN0102": ((REQ, "offer"), (REQ, "terminate")),
    "ACN0103": ((REQ, "offer"), (ACC, "agree"), (VER, "finalize")),
    "ACN0104": ((REQ, "agree"), (VER, "finalize")),
    "ACN0201": ((REQ, "terminate"),),
    "ACN0202": (),
    "ACN0203": ((REQ, "agree"),),
    "ACN0204": ((REQ, "offer"),),
    "ACN0205": ((REQ, "offer"), (OFF, "terminate")),
    "ACN0206": ((REQ, "offer"), (ACC, "terminate")),
    "ACN0207": ((REQ, "agree"), (VER, "terminate")),
    "ACN0301": ((REQ, "agree"), (VER, "finalize")),
    "ACN0302": ((REQ, "offer"),),
    "ACN0303": ((REQ, "offer"),),
    "ACN0304": ((REQ, "offer"),),
    # CUT as consumer (CN_C:xx-yy uses dataset ACNCxxyy, offered by the kit)
    "ACNC0101": ((OFF, "accept"), (AGR, "verify")),
    "ACNC0102": ((OFF, "counter-request"),),
    "ACNC0103": ((OFF, "terminate"),),
    "ACNC0104": ((AGR, "verify"),),
    "ACNC0201": (),
    "ACNC0202": ((REQ, "terminate"),),
    "ACNC0203": ((AGR, "terminate"),),
    "ACNC0204": (),
    "ACNC0205": ((OFF, "accept"),),
    "ACNC0206": ((AGR, "verify"),),
    "ACNC0301": (),
    "ACNC0302": (),
    "ACNC0303": (),
    "ACNC0304": ((OFF, "accept"),),
    "ACNC0305": ((OFF, "accept"),),
    "ACNC0306": (),
}

#: Moves the kit must see the state before: the kit checks the CUT's view of the process right after its
#: trigger (REQUESTED), and this node moves on faster than the kit can look. These moves wait until the kit
#: has read the process once in that state.
AFTER_KIT_LOOKED = frozenset({("ACNC0202", REQ)})

#: Datasets the first participant offers (the provider scenarios' and the catalog scenarios').
SEEDED_ASSETS = (*(i for i in GUARDS if not i.startswith("ACNC")), "CAT0101", "CAT0102")


class Guard:
    """``NegotiationService.script`` for the kit's datasets: the next due move, or "wait"."""

    def __init__(self, guards: dict[str, tuple[tuple[State, str], ...]] = GUARDS) -> None:
        self._guards = guards
        #: negotiation id -> how many of its moves were taken (in memory: a fixture, not resumed on restart).
        self._taken: dict[str, int] = {}
        #: (negotiation id, state) pairs the kit has read through ``GET …/negotiations/:pid``.
        self._looked: set[tuple[str, State]] = set()

    def looked(self, record: NegotiationRecord) -> bool:
        """Note that the kit read *record*; True if a move was waiting for that."""
        key = (record.id, record.state)
        if key in self._looked:
            return False
        self._looked.add(key)
        return (record.asset_id, record.state) in AFTER_KIT_LOOKED

    def __call__(self, record: NegotiationRecord) -> str | None:
        moves = self._guards.get(record.asset_id)
        if moves is None:
            return None
        if record.state in TERMINAL:
            self._taken.pop(record.id, None)
            return "wait"
        taken = self._taken.get(record.id, 0)
        if (record.asset_id, record.state) in AFTER_KIT_LOOKED and (record.id, record.state) not in self._looked:
            return "wait"
        if taken < len(moves) and moves[taken][0] == record.state:
            self._taken[record.id] = taken + 1
            return moves[taken][1]
        return "wait"


TREQ, TSTA, TSUS = TState.REQUESTED, TState.STARTED, TState.SUSPENDED
TP_ASSET = "TP-DATA"
TP_FILE = "conformance/tp-data.bin"

#: agreement id -> the node's transfer moves in order, each as (state it is taken in, step); the steps are
#: those of ``TransferService.script``. Ids with an empty sequence never move on their own.
TRANSFER_GUARDS: dict[str, tuple[tuple[TState, str], ...]] = {
    # CUT as provider (TP:xx-yy uses agreement ATPxxyy)
    "ATP0101": ((TREQ, "start"), (TSTA, "terminate")),
    "ATP0102": ((TREQ, "start"), (TSTA, "complete")),
    "ATP0103": ((TREQ, "start"), (TSTA, "suspend"), (TSUS, "terminate")),
    "ATP0104": ((TREQ, "start"), (TSTA, "suspend"), (TSUS, "start"), (TSTA, "complete")),
    "ATP0105": ((TREQ, "terminate"),),
    "ATP0201": ((TREQ, "start"),),
    "ATP0202": ((TREQ, "start"),),
    "ATP0203": ((TREQ, "start"),),
    "ATP0204": ((TREQ, "start"),),
    "ATP0205": (),
    "ATP0301": (),
    "ATP0302": (),
    "ATP0303": ((TREQ, "start"),),
    "ATP0304": ((TREQ, "start"),),
    "ATP0305": ((TREQ, "start"),),
    "ATP0306": ((TREQ, "start"),),
    # CUT as consumer (TP_C:xx-yy uses agreement ATPCxxyy, provided by the kit)
    "ATPC0101": (), "ATPC0102": (), "ATPC0103": (), "ATPC0104": (), "ATPC0105": (),
    "ATPC0201": ((TSTA, "terminate"),),
    "ATPC0202": ((TSTA, "complete"),),
    "ATPC0203": ((TSTA, "suspend"), (TSUS, "terminate")),
    "ATPC0204": (),
    "ATPC0205": ((TREQ, "terminate"),),
    "ATPC0301": (), "ATPC0302": (), "ATPC0303": (), "ATPC0304": (), "ATPC0305": (), "ATPC0306": (),
}


class TransferGuard:
    """``TransferService.script`` for the kit's agreements: the next due move, or "wait"."""

    def __init__(self, guards: dict[str, tuple[tuple[TState, str], ...]] = TRANSFER_GUARDS) -> None:
        self._guards = guards
        self._taken: dict[str, int] = {}

    def __call__(self, record: TransferRecord) -> str | None:
        moves = self._guards.get(record.agreement_id)
        if moves is None:
            return None
        if record.state in TRANSFER_TERMINAL:
            self._taken.pop(record.id, None)
            return "wait"
        taken = self._taken.get(record.id, 0)
        if taken < len(moves) and moves[taken][0] == record.state:
            self._taken[record.id] = taken + 1
            return moves[taken][1]
        return "wait"


class InitiateTransfer(msgspec.Struct, frozen=True):
    """The kit's transfer trigger (``…transfer.initiate.url``)."""

    agreementId: str
    format: str
    providerId: str
    connectorAddress: str


class InitiateNegotiation(msgspec.Struct, frozen=True):
    """The kit's negotiation trigger (``HttpConsumerNegotiationClientImpl.initiateRequest``)."""

    datasetId: str
    offerId: str
    providerId: str
    connectorAddress: str


class ConformanceMode:
    """Wires the fixture into a node: identity, script, seed data and the trigger route."""

    def __init__(
        self, config: ConformanceSection, *, first_participant: Callable[[], ParticipantRuntime | None],
        contracts: ContractRepository, negotiations: NegotiationService, transfers: TransferService,
        client: OutboundClient, catalog: CatalogService,
    ) -> None:
        self.config = config
        #: Callers accepted by the static Authorization value instead of a signature (the kit's agent id).
        self.callers = frozenset({config.agent_id})
        self.first_participant = first_participant
        self.contracts = contracts
        self.negotiations = negotiations
        self.transfers = transfers
        self.client = client
        self.guard = Guard()
        negotiations.script = self.guard
        negotiations.on_read = self._kit_read
        transfers.script = TransferGuard()
        # The kit names its datasets by the ids it was configured with (CAT0101 …), not by absolute ids.
        catalog.bare_ids = frozenset({*SEEDED_ASSETS, TP_ASSET})

    def _kit_read(self, record: NegotiationRecord) -> None:
        if self.guard.looked(record):
            self.negotiations.poke(record)

    async def seed(self) -> None:
        """Create the kit's policy, datasets and contract definition for the first participant (once)."""
        participant = self.first_participant()
        if not self.config.seed or participant is None:
            return
        repo, now = self.contracts, datetime.now(UTC).isoformat(timespec="seconds")
        entries: list[Asset | PolicyRecord | ContractDefinition] = [
            PolicyRecord(id=POLICY_ID, policy=POLICY, created_at=now),
            *(Asset(id=a, title=f"Conformance dataset {a}", created_at=now) for a in SEEDED_ASSETS),
            ContractDefinition(id=DEFINITION_ID, access_policy_id=POLICY_ID, contract_policy_id=POLICY_ID,
                               assets=list(SEEDED_ASSETS), created_at=now),
        ]
        data = self.transfers.confinement(participant).own / TP_FILE
        data.parent.mkdir(parents=True, exist_ok=True)
        if not data.exists():
            data.write_bytes(bytes(range(256)) * 256)
        entries.append(Asset(id=TP_ASSET, title="Conformance transfer data", created_at=now,
                             data_address={"type": "File", "path": TP_FILE}))
        for entry in entries:
            if await repo.entry(participant.id, type(entry), entry.id) is None:
                await repo.add_entry(participant.id, entry)
        stamp = now.replace("+00:00", "Z")
        for agreement_id in TRANSFER_GUARDS:
            if await repo.agreement(participant.id, agreement_id) is not None:
                continue
            ours = not agreement_id.startswith("ATPC")
            provider, consumer = ((participant.did, self.config.agent_id) if ours
                                  else (self.config.agent_id, participant.did))
            policy = {"@id": agreement_id, "@type": "Agreement", "target": TP_ASSET, "assigner": provider,
                      "assignee": consumer, "timestamp": stamp, "permission": [{"action": "use"}]}
            await repo.add_agreement(participant.id, AgreementRecord(
                id=agreement_id, negotiation_id=f"conformance:{agreement_id}",
                role=Role.PROVIDER if ours else Role.CONSUMER, provider_did=provider, consumer_did=consumer,
                asset_id=TP_ASSET, agreement=policy, state=AgreementState.FINALIZED,
                created_at=now))
        log.info("conformance data seeded", participant=participant.name, assets=len(SEEDED_ASSETS),
                 agreements=len(TRANSFER_GUARDS))

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/conformance/negotiations/initiate", self._initiate_negotiation),
                web.post("/conformance/transfers/initiate", self._initiate_transfer)]

    async def _initiate_transfer(self, request: web.Request) -> web.Response:
        if not static_authorization_matches(self.config.authorization, request.headers.get("Authorization")):
            raise Unauthorized("the conformance trigger needs the configured Authorization value")
        body = decode_body(await request.read(), InitiateTransfer)
        participant = self.first_participant()
        if participant is None:
            raise NotFound("this node hosts no participant yet")
        agreement = await self.contracts.agreement(participant.id, body.agreementId)
        if agreement is None or agreement.role != Role.CONSUMER:
            raise BadRequest(f"no agreement {body.agreementId!r} where this node consumes", path="agreementId")
        address = body.connectorAddress.rstrip("/")
        try:
            self.client.check_target(address)
        except OutboundRefused as exc:
            raise BadRequest(f"connectorAddress refused: {exc.message}", path="connectorAddress") from exc
        record = await self.transfers.request(participant, address, body.providerId, agreement.id,
                                                   agreement.asset_id, body.format)
        if record.state == TState.TERMINATED:
            raise PeerError(record.reason or "the transfer request could not be delivered")
        if record.pending is not None:
            raise PeerError("the transfer request could not be delivered yet; the node keeps retrying")
        return web.json_response({"consumerPid": record.id, "state": record.state})

    async def _initiate_negotiation(self, request: web.Request) -> web.Response:
        if not static_authorization_matches(self.config.authorization, request.headers.get("Authorization")):
            raise Unauthorized("the conformance trigger needs the configured Authorization value")
        body = decode_body(await request.read(), InitiateNegotiation)
        participant = self.first_participant()
        if participant is None:
            raise NotFound("this node hosts no participant yet")
        address = body.connectorAddress.rstrip("/")
        try:
            self.client.check_target(address)
        except OutboundRefused as exc:
            raise BadRequest(f"connectorAddress refused: {exc.message}", path="connectorAddress") from exc
        offer = contracts.read_policy({**POLICY, "@id": body.offerId, "@type": "Offer"}, "offer")
        record = await self.negotiations.request(
            participant, address, body.providerId, offer, body.offerId, body.datasetId
        )
        if record.state == State.TERMINATED:
            raise PeerError(record.reason or "the contract request could not be delivered")
        if record.pending is not None:
            raise PeerError("the contract request could not be delivered yet; the node keeps retrying")
        return web.json_response({"consumerPid": record.id, "state": record.state})
