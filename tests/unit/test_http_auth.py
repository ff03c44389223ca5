"""Authentication of peer requests and the data plane's token-holder check, with fakes for the DID resolver,
the nonce store, admission and the transfers: requests are built in memory — no node, no sockets."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from nacl.signing import SigningKey, VerifyKey

from connector.config import ConformanceSection
from connector.errors import NotFound, TooManyRequests, Unauthorized
from connector.http.auth import BODY, CALLER_DID, PeerAuth, authenticate_signed, signed_request_middleware
from connector.http.dataplane import DataPlaneSite, _token_holder
from connector.net import signing
from connector.protocol.transfer import Role, State
from connector.services.transfer import PUSH, token_hash
from connector.store.records import TransferRecord

PUBLIC_URL = "https://tds.example.com"
PEER = "did:web:peer.example"
KEY_ID = f"{PEER}#key-1"
PEER_KEY = SigningKey(b"\x07" * 32)
CATALOG = "/participants/acme/api/dsp/2025-1/catalog/request"
BODY_BYTES = b'{"@type":"CatalogRequestMessage"}'


class AuthResolver:
    """DID URLs and their keys; the key ids asked for are kept, in order, in the shared *events*."""

    def __init__(self, events: list[str], keys: dict[str, VerifyKey]) -> None:
        self.events, self.keys = events, keys

    async def verification_key(self, key_id: str, relationship: str) -> VerifyKey:
        self.events.append(f"resolve {key_id}")
        if key_id not in self.keys or relationship != "authentication":
            raise Unauthorized("unknown key")
        return self.keys[key_id]


class AuthNonces:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    async def claim_nonce(self, key_id: str, nonce: str, expires_at: int, now: int) -> asyncio.Future[bool] | None:
        if (key_id, nonce) in self.seen:
            return None
        self.seen.add((key_id, nonce))
        stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        stored.set_result(True)
        return stored


class AuthGate:
    """Admission: the known peers, and each check made, in order, in the shared *events*."""

    def __init__(self, events: list[str], known: set[str], *, over_budget: bool = False) -> None:
        self.events, self.known, self.over_budget = events, known, over_budget

    def is_known(self, participant_id: str | None, did: str) -> bool:
        return did in self.known

    def check_unknown(self) -> None:
        self.events.append("charge unknown")
        if self.over_budget:
            raise TooManyRequests("unknown peers are over their budget", retry_after=1)

    def check_request(self, participant_id: str | None, caller: str) -> None:
        self.events.append(f"charge {participant_id} {caller}")


class AuthCounter:
    def __init__(self) -> None:
        self.count = 0.0

    def inc(self, amount: float = 1) -> None:
        self.count += amount


class Payload:
    """A request body as aiohttp reads it."""

    def __init__(self, body: bytes) -> None:
        self.chunks = [body, b""] if body else [b""]

    def set_read_chunk_size(self, size: int) -> None:
        pass

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def auth_for(events: list[str], *, known: frozenset[str] = frozenset({PEER}), over_budget: bool = False,
             conformance: ConformanceSection | None = None) -> PeerAuth:
    acme = SimpleNamespace(id="acme")
    return PeerAuth(participant_named={"acme": acme}.get, resolver=AuthResolver(events, {KEY_ID: PEER_KEY.verify_key}),
                    nonces=AuthNonces(), admission=AuthGate(events, set(known), over_budget=over_budget),
                    public_url=PUBLIC_URL, signature_failures=AuthCounter(), conformance=conformance)


def signed(path: str = CATALOG, *, url: str | None = None, body: bytes = BODY_BYTES, method: str = "POST",
           key: SigningKey = PEER_KEY, key_id: str = KEY_ID, extra: dict[str, str] | None = None) -> web.Request:
    headers = signing.sign_request(method, url or PUBLIC_URL + path, body, key=key, key_id=key_id, now=time.time(),
                                   headers=extra)
    return make_mocked_request(method, path, headers=headers, payload=Payload(body))


def failures(auth: PeerAuth) -> float:
    counter = auth.signature_failures
    assert isinstance(counter, AuthCounter)
    return counter.count


async def passed(request: web.Request) -> web.StreamResponse:
    return web.Response(text="passed")


# -- the DSP base ----------------------------------------------------------------------------------------


async def test_a_signed_request_names_its_verified_caller_and_keeps_its_body():
    auth = auth_for([])
    request = signed()
    assert await authenticate_signed(auth, request) == PEER
    assert request[CALLER_DID] == PEER and request[BODY] == BODY_BYTES


async def test_the_signature_is_checked_against_the_public_url_not_the_listening_address():
    auth = auth_for([])
    with pytest.raises(Unauthorized):
        await authenticate_signed(auth, signed(url="http://127.0.0.1:8080" + CATALOG))
    assert failures(auth) == 1


async def test_a_replayed_request_is_refused():
    auth = auth_for([])
    request = signed()
    await authenticate_signed(auth, request)
    replay = make_mocked_request("POST", CATALOG, headers=request.headers, payload=Payload(BODY_BYTES))
    with pytest.raises(Unauthorized, match="replayed"):
        await authenticate_signed(auth, replay)
    assert failures(auth) == 1


async def test_a_body_other_than_the_signed_one_is_refused():
    auth = auth_for([])
    request = signed()
    tampered = make_mocked_request("POST", CATALOG, headers=request.headers, payload=Payload(b'{"x":1}'))
    with pytest.raises(Unauthorized):
        await authenticate_signed(auth, tampered)


async def test_a_stranger_is_charged_before_its_did_is_resolved():
    events: list[str] = []
    middleware = signed_request_middleware(auth_for(events, known=set()))
    response = await middleware(signed(), passed)
    assert response.status == 200
    assert events == ["charge unknown", f"resolve {KEY_ID}"]


async def test_a_stranger_over_the_shared_budget_costs_no_resolution_and_no_nonce():
    events: list[str] = []
    auth = auth_for(events, known=set(), over_budget=True)
    with pytest.raises(TooManyRequests):
        await signed_request_middleware(auth)(signed(), passed)
    assert events == ["charge unknown"]
    assert isinstance(auth.nonces, AuthNonces) and not auth.nonces.seen


async def test_a_known_peer_is_charged_to_its_own_budget_after_verification():
    events: list[str] = []
    await signed_request_middleware(auth_for(events))(signed(), passed)
    assert events == [f"resolve {KEY_ID}", f"charge acme {PEER}"]


async def test_an_unsigned_dsp_request_is_refused_without_conformance_mode():
    request = make_mocked_request("POST", CATALOG, headers={"Authorization": "static"}, payload=Payload(BODY_BYTES))
    with pytest.raises(Unauthorized):
        await signed_request_middleware(auth_for([]))(request, passed)


@pytest.mark.parametrize(("header", "accepted"), [("static", True), ("statik", False), (None, False)])
async def test_conformance_mode_accepts_exactly_the_configured_authorization(header, accepted):
    auth = auth_for([], conformance=ConformanceSection(authorization="static", agent_id="TCK"))
    request = make_mocked_request("POST", CATALOG, headers={"Authorization": header} if header else {},
                                  payload=Payload(BODY_BYTES))
    if accepted:
        await signed_request_middleware(auth)(request, passed)
        assert request[CALLER_DID] == "TCK"
    else:
        with pytest.raises(Unauthorized):
            await signed_request_middleware(auth)(request, passed)


async def test_the_version_document_needs_no_signature():
    request = make_mocked_request("GET", "/participants/acme/api/dsp/.well-known/dspace-version")
    response = await signed_request_middleware(auth_for([]))(request, passed)
    assert response.status == 200


@pytest.mark.parametrize("path", [
    "/participants/acme/api/dsp/2025-1/catalog/datasets/x%2F.well-known%2Fdspace-version",
    "/participants/acme/api/dsp/2025-1/negotiations/x%2F.well-known%2Fdspace-version",
    "/participants/acme/api/dsp/2025-1/x/.well-known/dspace-version",
])
async def test_only_the_version_document_itself_is_public(path):
    # Decoded, these end as the version document's path does; routed, they reach other handlers.
    request = make_mocked_request("GET", path)
    with pytest.raises(Unauthorized):
        await signed_request_middleware(auth_for([]))(request, passed)


# -- the data plane's token holder -----------------------------------------------------------------------

TOKEN = "transfer-token"
DATA = "/participants/acme/data/t1"


class DataPlaneTransfers:
    def __init__(self, record: TransferRecord) -> None:
        self.record = record

    async def get(self, participant_id: str, transfer_id: str) -> TransferRecord | None:
        return self.record if (participant_id, transfer_id) == (self.record.participant_id, self.record.id) else None


def transfer(**changes: Any) -> TransferRecord:
    fields: dict[str, Any] = dict(participant_id="acme", id="t1", role=Role.PROVIDER, state=State.STARTED,
                                  counterparty_did=PEER, agreement_id="a1", token_hash=token_hash(TOKEN),
                                  token_expires_at=time.time() + 60)
    return TransferRecord(**{**fields, **changes})


def data_site(record: TransferRecord, events: list[str] | None = None, *, over_budget: bool = False) -> DataPlaneSite:
    acme = SimpleNamespace(id="acme")
    auth = auth_for([] if events is None else events, over_budget=over_budget)
    return DataPlaneSite(participant_named={"acme": acme}.get, auth=auth,
                         transfers_repo=DataPlaneTransfers(record), transfers=None,
                         signature_failures=auth.signature_failures)


def data_request(token: str = TOKEN, *, key_id: str = KEY_ID, key: SigningKey = PEER_KEY) -> web.Request:
    headers = signing.sign_request("GET", PUBLIC_URL + DATA, b"", key=key, key_id=key_id, now=time.time(),
                                   headers={"Authorization": f"Bearer {token}"})
    return make_mocked_request("GET", DATA, headers=headers, match_info={"name": "acme", "pid": "t1"})


async def test_the_transfer_peer_with_its_token_gets_the_transfer():
    participant, record = await _token_holder(data_site(transfer()), data_request(), role=Role.PROVIDER)
    assert participant.id == "acme" and record.id == "t1"


@pytest.mark.parametrize("record", [
    transfer(token_hash=token_hash("another token")),
    transfer(state=State.COMPLETED),
    transfer(token_expires_at=time.time() - 1),
    transfer(counterparty_did="did:web:someone-else.example"),
], ids=["wrong token", "not started", "expired", "another peer's"])
async def test_every_token_problem_gets_the_same_refusal(record):
    site = data_site(record)
    with pytest.raises(Unauthorized, match="not valid for this transfer"):
        await _token_holder(site, data_request(), role=Role.PROVIDER)
    assert failures(site.auth) == 1


async def test_a_data_request_without_a_token_is_refused_before_the_signature_is_checked():
    site = data_site(transfer())
    request = make_mocked_request("GET", DATA, headers={}, match_info={"name": "acme", "pid": "t1"})
    with pytest.raises(Unauthorized, match="needs the transfer's token"):
        await _token_holder(site, request, role=Role.PROVIDER)


@pytest.mark.parametrize(("role", "push"), [(Role.CONSUMER, False), (Role.PROVIDER, True)])
async def test_a_transfer_in_another_role_or_format_is_not_found(role, push):
    with pytest.raises(NotFound):
        await _token_holder(data_site(transfer(format="HttpData-PULL")), data_request(), role=role, push=push)


async def test_a_push_transfer_is_found_by_the_inbox():
    site = data_site(transfer(role=Role.CONSUMER, format=PUSH))
    _, record = await _token_holder(site, data_request(), role=Role.CONSUMER, push=True)
    assert record.format == PUSH


STRANGER_KEY = SigningKey(b"\x09" * 32)
STRANGER_KEY_ID = "did:web:stranger.example#key-1"


async def test_a_stranger_on_the_data_plane_is_charged_before_its_did_is_resolved():
    events: list[str] = []
    site = data_site(transfer(), events)
    with pytest.raises(Unauthorized):
        await _token_holder(site, data_request(key=STRANGER_KEY, key_id=STRANGER_KEY_ID), role=Role.PROVIDER)
    assert events == ["charge unknown", f"resolve {STRANGER_KEY_ID}"]


async def test_strangers_over_their_budget_make_the_data_plane_resolve_nothing():
    events: list[str] = []
    site = data_site(transfer(), events, over_budget=True)
    with pytest.raises(TooManyRequests):
        await _token_holder(site, data_request(key=STRANGER_KEY, key_id=STRANGER_KEY_ID), role=Role.PROVIDER)
    assert events == ["charge unknown"]
    # The transfer's own peer is known: neither charged to the strangers' budget nor refused by it.
    events.clear()
    await _token_holder(site, data_request(), role=Role.PROVIDER)
    assert events == [f"resolve {KEY_ID}"]
