"""The other party of the DSP compatibility kit's scenarios (see tests/shared/DSP-TCK.md), over real HTTP.

:class:`Kit` is what eclipse-dataspacetck/dsp-tck runs: an aiohttp server on 127.0.0.1 for the kit's
callback endpoints, and a client that sends the kit's messages with its static ``Authorization`` header.
:class:`ProviderRun` drives a negotiation where the node under test (CUT) is the provider and the kit the
consumer; :class:`ConsumerRun` the other way round, started through the CUT's trigger webhook. After each
step the run GETs the CUT's view of the process, as the kit's ``thenVerify…State`` does. Everything the CUT
sends or answers is validated against the DSP 2025-1 schemas.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from connector.config import ConformanceSection
from connector.protocol.messages import DSP_CONTEXT
from connector.testing import SCHEMA_FILES, RunningNode, dsp_validator

#: The kit's sample values (config/tck/sample.tck.properties and its HTTP client).
AUTHORIZATION = '{"region": "any", "audience": "any", "clientId": "any"}'
AGENT_ID = "TCK_PARTICIPANT"
#: ``dataspacetck.dsp.default.wait``: every expected callback must arrive within it.
WAIT_S = 5.0
CONFORMANCE = ConformanceSection(authorization=AUTHORIZATION, agent_id=AGENT_ID)
KNOWN_CONTEXTS = {DSP_CONTEXT, "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"}


def offer_id(dataset: str) -> str:
    """The kit's offer ids: chosen outside the CUT (``CN_xx_yy_OFFERID``)."""
    return f"CD123:{dataset}:456"


def kit_offer(dataset: str) -> dict[str, Any]:
    """The kit's offer shape, with its empty constraint array."""
    return {"@id": offer_id(dataset), "@type": "Offer", "target": dataset,
            "permission": [{"action": "use", "constraint": []}]}


def new_pid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def message(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@context": [DSP_CONTEXT], "@type": type_name, **fields}


class Kit:
    """The kit's HTTP side: a callback server that records what the CUT sends, and a client."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.invalid: list[str] = []
        #: providerPids the kit gave to the CUT's initial requests (kit as provider), by consumerPid.
        self.provider_pids: dict[str, str] = {}
        self._read = 0
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def callback(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/negotiations/{tail:.+}", self._on_message),
                        web.post("/transfers/{tail:.+}", self._on_message)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def check(self, body: Any, where: str) -> None:
        """Record a problem if *body* is a DSP message or ACK that does not validate against its schema."""
        if not isinstance(body, dict) or body.get("@type") not in SCHEMA_FILES:
            self.invalid.append(f"{where}: not a known DSP type: {str(body)[:200]}")
            return
        # The kit expands JSON-LD with the two DSP contexts it holds locally; any other context would fail.
        context = body.get("@context")
        if not isinstance(context, list) or not set(map(str, context)) <= KNOWN_CONTEXTS:
            self.invalid.append(f"{where}: @context must be a list of the DSP contexts, not {context!r}")
        try:
            dsp_validator().validate(body)
        except Exception as exc:
            self.invalid.append(f"{where}: {body.get('@type')}: {str(exc).splitlines()[0]}")

    async def _on_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.check(body, f"CUT sent to {request.path}")
        async with self._arrived:
            self.received.append((request.path, body))
            self._arrived.notify_all()
        if request.path == "/negotiations/request":  # the CUT opens a negotiation with the kit as provider
            pid = self.provider_pids[body["consumerPid"]] = new_pid()
            ack = message("ContractNegotiation", providerPid=pid, consumerPid=body["consumerPid"], state="REQUESTED")
            # 200, not 201: the kit's callback endpoint answers every handled message with 200
            # (DefaultCallbackEndpoint.DelegatingProtocolHandler), the initial request included.
            return web.json_response(ack, status=200)
        if request.path == "/transfers/request":  # the CUT requests a transfer from the kit as provider
            pid = self.provider_pids[body["consumerPid"]] = new_pid()
            ack = message("TransferProcess", providerPid=pid, consumerPid=body["consumerPid"], state="REQUESTED")
            return web.json_response(ack, status=200)
        return web.Response(status=200)

    async def next_message(self, what: str) -> tuple[str, dict[str, Any]]:
        """The next message the CUT sent to the kit, waiting up to :data:`WAIT_S` for it."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) > self._read), WAIT_S)
            except TimeoutError:
                raise AssertionError(f"the CUT sent no {what} within {WAIT_S} s") from None
            found = self.received[self._read]
            self._read += 1
            return found

    def unread(self) -> list[tuple[str, dict[str, Any]]]:
        return self.received[self._read :]

    async def post(self, url: str, body: dict[str, Any], *, authorization: str | None = AUTHORIZATION,
                   ) -> tuple[int, Any]:
        assert self._session is not None
        headers = {"Authorization": authorization} if authorization is not None else {}
        async with self._session.post(url, json=body, headers=headers) as response:
            data = await response.json(content_type=None) if await response.read() else None
            return response.status, data

    async def get(self, url: str, *, authorization: str | None = AUTHORIZATION) -> tuple[int, Any]:
        assert self._session is not None
        headers = {"Authorization": authorization} if authorization is not None else {}
        async with self._session.get(url, headers=headers) as response:
            return response.status, await response.json(content_type=None)


class _Run:
    """What both directions share: pids, the CUT's view of the process, and the checks on answers."""

    role_pid = "providerPid"
    area = "negotiations"
    ack_type = "ContractNegotiation"
    error_type = "ContractNegotiationError"

    def __init__(self, kit: Kit, cut: RunningNode, dataset: str) -> None:
        self.kit, self.cut, self.dataset = kit, cut, dataset
        self.provider_pid = ""
        self.consumer_pid = ""

    @property
    def cut_pid(self) -> str:
        return self.provider_pid if self.role_pid == "providerPid" else self.consumer_pid

    @property
    def cut_process_url(self) -> str:
        return f"{self.cut.participant.dsp_base}/{self.area}/{self.cut_pid}"

    def pids(self) -> dict[str, str]:
        return {"providerPid": self.provider_pid, "consumerPid": self.consumer_pid}

    async def state(self) -> str:
        """The CUT's view of the process (``GET …/negotiations/{pid}`` or ``…/transfers/{pid}``)."""
        status, body = await self.kit.get(self.cut_process_url)
        assert status == 200, (status, body)
        self.kit.check(body, f"CUT answered GET {self.area}")
        assert body["@type"] == self.ack_type and body[self.role_pid] == self.cut_pid, body
        return str(body["state"])

    async def then_state(self, expected: str) -> None:
        assert await self.state() == expected

    async def _send(self, path: str, body: dict[str, Any], then: str | None, refused: bool) -> None:
        self.kit.check(body, f"kit message to {path}")
        before = await self.state() if refused else None
        status, answer = await self.kit.post(f"{self.cut_process_url}/{path}", body)
        if refused:
            assert 400 <= status < 500 and status != 404, (status, answer)
            self.kit.check(answer, f"CUT refusal of {body['@type']}")
            assert answer["@type"] == self.error_type, answer
            assert await self.state() == before, "a refused message changed the state"
            return
        assert status == 200, (status, answer)
        if answer is not None:
            self.kit.check(answer, f"CUT answer to {body['@type']}")
        if then is not None:
            await self.then_state(then)

    async def receive(self, type_name: str, then: str | None, *, event: str | None = None) -> dict[str, Any]:
        """Wait for the CUT's next message, check its type, address and pids, then the CUT's state (unless
        *then* is None: the CUT may already have moved on)."""
        what = f"{type_name}{f' {event}' if event else ''}"
        path, body = await self.kit.next_message(what)
        assert body.get("@type") == type_name, f"expected {what}, the CUT sent {body}"
        if event is not None:
            assert body.get("eventType") == event, body
        assert {k: body.get(k) for k in ("providerPid", "consumerPid")} == self.pids(), body
        kit_pid = self.consumer_pid if self.role_pid == "providerPid" else self.provider_pid
        assert path.startswith(f"/{self.area}/{kit_pid}/"), path
        if then is not None:
            await self.then_state(then)
        return body


class ProviderRun(_Run):
    """CUT as provider, kit as consumer (CN scenarios)."""

    role_pid = "providerPid"

    async def request(self) -> None:
        """The initial ContractRequestMessage: 201 + ContractNegotiation with the CUT's pid, REQUESTED."""
        self.consumer_pid = new_pid()
        body = message("ContractRequestMessage", consumerPid=self.consumer_pid, offer=kit_offer(self.dataset),
                       callbackAddress=self.kit.callback)
        self.kit.check(body, "kit initial request")
        status, answer = await self.kit.post(f"{self.cut.participant.dsp_base}/negotiations/request", body)
        assert status == 201, (status, answer)
        self.kit.check(answer, "CUT answer to the initial request")
        assert answer["@type"] == "ContractNegotiation" and answer["state"] == "REQUESTED", answer
        assert answer["consumerPid"] == self.consumer_pid and answer["providerPid"], answer
        self.provider_pid = answer["providerPid"]

    async def counter_request(self, then: str | None = "REQUESTED", *, refused: bool = False) -> None:
        # not the initial request: providerPid instead of callbackAddress (the schema's oneOf)
        body = message("ContractRequestMessage", **self.pids(), offer=kit_offer(self.dataset))
        await self._send("request", body, then, refused)

    async def accepted(self, then: str | None = "ACCEPTED", *, refused: bool = False) -> None:
        await self._send("events", message("ContractNegotiationEventMessage", **self.pids(), eventType="ACCEPTED"),
                         then, refused)

    async def verification(self, then: str | None = "VERIFIED", *, refused: bool = False) -> None:
        await self._send("agreement/verification",
                         message("ContractAgreementVerificationMessage", **self.pids()), then, refused)

    async def termination(self, then: str | None = "TERMINATED", *, refused: bool = False) -> None:
        body = message("ContractNegotiationTerminationMessage", **self.pids(), code="tck",
                       reason=["terminated by the kit"])
        await self._send("termination", body, then, refused)


class ConsumerRun(_Run):
    """CUT as consumer, kit as provider (CN_C scenarios); opened through the CUT's trigger webhook."""

    role_pid = "consumerPid"
    callback = ""

    async def initiate(self) -> None:
        """The kit's negotiation trigger, then the CUT's initial ContractRequestMessage."""
        trigger = {"datasetId": self.dataset, "offerId": offer_id(self.dataset), "providerId": AGENT_ID,
                   "connectorAddress": self.kit.callback}
        status, answer = await self.kit.post(f"{self.cut.public_url}/conformance/negotiations/initiate", trigger)
        assert status == 200, (status, answer)
        path, body = await self.kit.next_message("initial ContractRequestMessage")
        assert path == "/negotiations/request" and body["@type"] == "ContractRequestMessage", (path, body)
        assert "providerPid" not in body and body["offer"]["@id"] == offer_id(self.dataset), body
        assert body["offer"]["target"] == self.dataset, body
        self.consumer_pid = body["consumerPid"]
        self.provider_pid = self.kit.provider_pids[self.consumer_pid]
        self.callback = body["callbackAddress"]
        assert answer["consumerPid"] == self.consumer_pid, answer
        await self.then_state("REQUESTED")

    @property
    def cut_process_url(self) -> str:
        return f"{self.callback}/{self.area}/{self.consumer_pid}"

    async def offer(self, then: str | None = "OFFERED", *, refused: bool = False) -> None:
        # not the initial offer: consumerPid instead of callbackAddress (the schema's oneOf)
        body = message("ContractOfferMessage", **self.pids(), offer=kit_offer(self.dataset))
        await self._send("offers", body, then, refused)

    async def agreement(self, then: str | None = "AGREED", *, refused: bool = False) -> None:
        agreement = {
            "@id": new_pid(), "@type": "Agreement", "target": self.dataset, "assigner": AGENT_ID,
            "assignee": self.cut.participant.did,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "permission": [{"action": "use", "constraint": []}],
        }
        body = message("ContractAgreementMessage", **self.pids(), agreement=agreement)
        await self._send("agreement", body, then, refused)

    async def finalized(self, then: str | None = "FINALIZED", *, refused: bool = False) -> None:
        await self._send("events", message("ContractNegotiationEventMessage", **self.pids(), eventType="FINALIZED"),
                         then, refused)

    async def termination(self, then: str | None = "TERMINATED", *, refused: bool = False) -> None:
        body = message("ContractNegotiationTerminationMessage", **self.pids(), code="tck",
                       reason=["terminated by the kit"])
        await self._send("termination", body, then, refused)


# -- transfer process -------------------------------------------------------------------------------------


def _tp(type_name: str, pids: dict[str, str], **fields: Any) -> dict[str, Any]:
    return message(type_name, **pids, **fields)


class _TransferMoves:
    """The messages either side of a transfer may send (the kit sends them here); mixed into a ``_Run``."""

    async def start(self, then: str | None = "STARTED", *, refused: bool = False) -> None:
        await self._send("start", _tp("TransferStartMessage", self.pids(), dataAddress=KIT_DATA_ADDRESS),
                         then, refused)

    async def suspension(self, then: str | None = "SUSPENDED", *, refused: bool = False) -> None:
        await self._send("suspension", _tp("TransferSuspensionMessage", self.pids(), code="tck",
                                           reason=["suspended by the kit"]), then, refused)

    async def completion(self, then: str | None = "COMPLETED", *, refused: bool = False) -> None:
        await self._send("completion", _tp("TransferCompletionMessage", self.pids()), then, refused)

    async def termination(self, then: str | None = "TERMINATED", *, refused: bool = False) -> None:
        await self._send("termination", _tp("TransferTerminationMessage", self.pids(), code="tck",
                                            reason=["terminated by the kit"]), then, refused)


#: The data address the kit gives in its start messages (the CUT never pulls from it in conformance mode).
KIT_DATA_ADDRESS = {"@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                    "endpoint": "http://127.0.0.1:9/data",
                    "endpointProperties": [{"@type": "EndpointProperty", "name": "authorization", "value": "x"}]}


class TransferProviderRun(_TransferMoves, _Run):
    """CUT as provider, kit as consumer (TP scenarios); ``dataset`` is the seeded agreement id."""

    role_pid = "providerPid"
    area = "transfers"
    ack_type = "TransferProcess"
    error_type = "TransferError"

    async def request(self) -> None:
        """The TransferRequestMessage: 201 + TransferProcess with the CUT's pid, REQUESTED."""
        self.consumer_pid = new_pid()
        body = message("TransferRequestMessage", consumerPid=self.consumer_pid, agreementId=self.dataset,
                       format="HttpData-PULL", callbackAddress=self.kit.callback)
        self.kit.check(body, "kit transfer request")
        status, answer = await self.kit.post(f"{self.cut.participant.dsp_base}/transfers/request", body)
        assert status == 201, (status, answer)
        self.kit.check(answer, "CUT answer to the transfer request")
        assert answer["@type"] == "TransferProcess" and answer["state"] == "REQUESTED", answer
        assert answer["consumerPid"] == self.consumer_pid and answer["providerPid"], answer
        self.provider_pid = answer["providerPid"]


class TransferConsumerRun(_TransferMoves, _Run):
    """CUT as consumer, kit as provider (TP_C scenarios); opened through the CUT's trigger webhook."""

    role_pid = "consumerPid"
    area = "transfers"
    ack_type = "TransferProcess"
    error_type = "TransferError"
    callback = ""

    async def initiate(self, *, then: str | None = "REQUESTED") -> None:
        """The kit's transfer trigger, then the CUT's TransferRequestMessage."""
        trigger = {"agreementId": self.dataset, "format": "HttpData-PULL", "providerId": AGENT_ID,
                   "connectorAddress": self.kit.callback}
        status, answer = await self.kit.post(f"{self.cut.public_url}/conformance/transfers/initiate", trigger)
        assert status == 200, (status, answer)
        path, body = await self.kit.next_message("TransferRequestMessage")
        assert path == "/transfers/request" and body["@type"] == "TransferRequestMessage", (path, body)
        assert body["agreementId"] == self.dataset and body["format"] == "HttpData-PULL", body
        self.consumer_pid = body["consumerPid"]
        self.provider_pid = self.kit.provider_pids[self.consumer_pid]
        self.callback = body["callbackAddress"]
        assert answer["consumerPid"] == self.consumer_pid, answer
        if then is not None:
            await self.then_state(then)

    @property
    def cut_process_url(self) -> str:
        return f"{self.callback}/transfers/{self.consumer_pid}"
