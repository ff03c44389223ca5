"""DSP 2025-1 HTTPS binding routes of each participant: catalog (§6), contract negotiation (§7) and
transfer process (§8).

Every route sits under ``/participants/NAME/api/dsp/2025-1`` and is reached only through a verified
RFC 9421 signature (``connector.http.auth``); the verified caller DID decides what the caller may see.
The same base serves the provider paths and the consumer callback paths, since every participant is
both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from connector.errors import NotFound
from connector.http.auth import CALLER_DID
from connector.http.middleware import PIDS, query_int, read_json
from connector.protocol import messages as m
from connector.protocol.errors import MessageError
from connector.protocol.negotiation import Kind
from connector.protocol.transfer import Kind as TKind

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.catalog import CatalogService
    from connector.services.negotiation import NegotiationService
    from connector.services.transfer import TransferService
    from connector.store.records import NegotiationRecord, TransferRecord
    from connector.store.repository import ContractRepository, TransferRepository

M = TypeVar("M", bound=m.Message)
BASE = "/participants/{name}/api/dsp/2025-1"
MAX_PAGE = 500


def _ack(record: NegotiationRecord, status: int = 200) -> web.Response:
    body = m.ContractNegotiation(
        providerPid=record.provider_pid or "", consumerPid=record.consumer_pid or "", state=record.state
    )
    return web.json_response(m.encode(body), status=status)


def _transfer_ack(record: TransferRecord, status: int = 200) -> web.Response:
    body = m.TransferProcess(
        providerPid=record.provider_pid or "", consumerPid=record.consumer_pid or "", state=record.state
    )
    return web.json_response(m.encode(body), status=status)


@dataclass(frozen=True)
class DspSite:
    """What the DSP routes use. *public_url* is this node's configured public URL (for the catalog's
    paging links); *conformance_caller* tells whether a DID is the compatibility kit's (conformance mode)."""

    participant_named: Callable[[str], ParticipantRuntime | None]
    catalog: CatalogService
    contracts: ContractRepository
    negotiations: NegotiationService
    transfers: TransferService
    transfers_repo: TransferRepository
    conformance_caller: Callable[[str], bool]
    public_url: str


def routes(site: DspSite) -> list[web.RouteDef]:
    def participant(request: web.Request) -> ParticipantRuntime:
        found = site.participant_named(request.match_info["name"])
        if found is None:
            raise NotFound("no such participant")
        return found

    async def read(request: web.Request, struct: type[M]) -> M:
        """Decode the body as *struct*, remembering the pids it names for an error body."""
        raw = await read_json(request)
        if isinstance(raw, dict):
            normal = m.normalise(raw)
            request[PIDS] = {k: normal[k] for k in ("providerPid", "consumerPid") if isinstance(normal.get(k), str)}
        return m.decode(raw, struct)

    # catalog ---------------------------------------------------------------------------------------

    async def catalog_request(request: web.Request) -> web.Response:
        p = participant(request)
        await read(request, m.CatalogRequestMessage)
        offset = query_int(request, "offset", default=0, low=0, high=10**9)
        limit = max(1, query_int(request, "limit", default=100, low=0, high=MAX_PAGE))
        catalog, total = await site.catalog.catalog(p, request[CALLER_DID], offset=offset, limit=limit)
        links = []
        base = f"{site.public_url}{request.path}"
        if offset + limit < total:
            links.append(f'<{base}?{urlencode({"offset": offset + limit, "limit": limit})}>; rel="next"')
        if offset > 0:
            links.append(f'<{base}?{urlencode({"offset": max(0, offset - limit), "limit": limit})}>; rel="prev"')
        headers = {"Link": ", ".join(links)} if links else {}
        return web.json_response(catalog, headers=headers)

    async def dataset(request: web.Request) -> web.Response:
        p = participant(request)
        found = await site.catalog.find_dataset(p, request[CALLER_DID], request.match_info["id"])
        if found is None:
            raise NotFound(f"no dataset {request.match_info['id']!r} for you")
        return web.json_response(found)

    # negotiation -----------------------------------------------------------------------------------

    async def get_negotiation(request: web.Request) -> web.Response:
        p = participant(request)
        record = await site.contracts.negotiation(p.id, request.match_info["pid"])
        if record is None or not site.negotiations._is_party(record, request[CALLER_DID]):
            raise NotFound("no such negotiation")
        site.negotiations.read_by_peer(record)
        return _ack(record)

    async def initial_request(request: web.Request) -> web.Response:
        message = await read(request, m.ContractRequestMessage)
        if message.providerPid is not None:
            raise MessageError("an initial ContractRequestMessage has no providerPid", path="providerPid")
        record = await site.negotiations.on_initial(participant(request), Kind.REQUEST, message, request[CALLER_DID])
        return _ack(record, 201)

    async def initial_offer(request: web.Request) -> web.Response:
        message = await read(request, m.ContractOfferMessage)
        if message.consumerPid is not None:
            raise MessageError("an initial ContractOfferMessage has no consumerPid", path="consumerPid")
        record = await site.negotiations.on_initial(participant(request), Kind.OFFER, message, request[CALLER_DID])
        return _ack(record, 201)

    def on(kind: Kind, struct: type[m.Message]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            message: Any = await read(request, struct)
            actual = kind
            if isinstance(message, m.ContractNegotiationEventMessage):
                actual = Kind.ACCEPTED if message.eventType == "ACCEPTED" else Kind.FINALIZED
            if isinstance(message, m.ContractRequestMessage) and not message.providerPid:
                raise MessageError("providerPid is required", path="providerPid")
            if isinstance(message, m.ContractOfferMessage) and not message.consumerPid:
                raise MessageError("consumerPid is required", path="consumerPid")
            record = await site.negotiations.on_message(
                participant(request), request.match_info["pid"], actual, message, request[CALLER_DID]
            )
            return _ack(record)

        return handler

    # transfer process ------------------------------------------------------------------------------

    async def get_transfer(request: web.Request) -> web.Response:
        p = participant(request)
        record = await site.transfers_repo.get(p.id, request.match_info["pid"])
        caller = request[CALLER_DID]
        if record is None or not (record.counterparty_did == caller or site.conformance_caller(caller)):
            raise NotFound("no such transfer process")
        return _transfer_ack(record)

    async def transfer_request(request: web.Request) -> web.Response:
        message = await read(request, m.TransferRequestMessage)
        record = await site.transfers.on_request(participant(request), message, request[CALLER_DID])
        return _transfer_ack(record, 201)

    def on_transfer(kind: TKind, struct: type[m.Message]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            message: Any = await read(request, struct)
            record = await site.transfers.on_message(
                participant(request), request.match_info["pid"], kind, message, request[CALLER_DID]
            )
            return _transfer_ack(record)

        return handler

    transfer_routes = [
        web.post(f"{BASE}/transfers/request", transfer_request),
        web.get(f"{BASE}/transfers/{{pid}}", get_transfer),
        web.post(f"{BASE}/transfers/{{pid}}/start", on_transfer(TKind.START, m.TransferStartMessage)),
        web.post(f"{BASE}/transfers/{{pid}}/completion", on_transfer(TKind.COMPLETION, m.TransferCompletionMessage)),
        web.post(f"{BASE}/transfers/{{pid}}/termination",
                 on_transfer(TKind.TERMINATION, m.TransferTerminationMessage)),
        web.post(f"{BASE}/transfers/{{pid}}/suspension", on_transfer(TKind.SUSPENSION, m.TransferSuspensionMessage)),
    ]

    return [
        *transfer_routes,
        web.post(f"{BASE}/catalog/request", catalog_request),
        web.get(f"{BASE}/catalog/datasets/{{id}}", dataset),
        web.post(f"{BASE}/negotiations/request", initial_request),
        web.post(f"{BASE}/negotiations/offers", initial_offer),
        web.get(f"{BASE}/negotiations/{{pid}}", get_negotiation),
        web.post(f"{BASE}/negotiations/{{pid}}/request", on(Kind.REQUEST, m.ContractRequestMessage)),
        web.post(f"{BASE}/negotiations/{{pid}}/offers", on(Kind.OFFER, m.ContractOfferMessage)),
        web.post(f"{BASE}/negotiations/{{pid}}/events", on(Kind.ACCEPTED, m.ContractNegotiationEventMessage)),
        web.post(f"{BASE}/negotiations/{{pid}}/agreement", on(Kind.AGREEMENT, m.ContractAgreementMessage)),
        web.post(f"{BASE}/negotiations/{{pid}}/agreement/verification",
                 on(Kind.VERIFICATION, m.ContractAgreementVerificationMessage)),
        web.post(f"{BASE}/negotiations/{{pid}}/termination",
                 on(Kind.TERMINATION, m.ContractNegotiationTerminationMessage)),
    ]
