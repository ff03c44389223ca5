"""The federation service with a recording outbound client, a resolver of known DID documents and an
in-memory peer book: finding a peer's DSP base, the signed handshake both ways, and what is refused —
real self-descriptions and proofs, no node, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector.errors import BadRequest, PeerError, Unauthorized
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.services.credentials import Opening
from connector.services.federation import FederationService
from connector.store.repository import Participant, Peer
from connector.testing import FederationPeerClient, FederationResolver

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class PeerBook:
    """The verified peers, as ``Repository.save_peer`` stores them."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, Peer, dict[str, Any]]] = []

    async def save_peer(self, participant_id: str, peer: Peer, self_description: dict[str, Any]) -> None:
        self.saved.append((participant_id, peer, self_description))


def runtime(name: str, host: str, region: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{host}:participants:{name}", legal_name=name.title(),
                         region=region, industry="manufacturing")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{host}")


@pytest.fixture
def acme() -> ParticipantRuntime:
    return runtime("acme", "acme.example", "CN-GD")


@pytest.fixture
def parts() -> ParticipantRuntime:
    return runtime("parts", "parts.example", "CN-BJ")


@pytest.fixture
def client() -> FederationPeerClient:
    return FederationPeerClient()


@pytest.fixture
def book() -> PeerBook:
    return PeerBook()


def federation(client: FederationPeerClient, book: PeerBook, *documents: dict[str, Any],
               now: datetime = NOW) -> FederationService:
    return FederationService(client, FederationResolver(*documents), book, clock=lambda: now)  # type: ignore[arg-type]


def serve_version_document(client: FederationPeerClient, peer: ParticipantRuntime) -> None:
    client.answer("GET", f"{peer.base_url}/.well-known/dspace-version", peer.version_document())


def serve_handshake(client: FederationPeerClient, peer: ParticipantRuntime, answer: Any, *, status: int = 200) -> None:
    client.answer("POST", f"{peer.dsp_base}/tds/handshake", answer, status=status)


# -- the DSP base of a peer ---------------------------------------------------------------------------------


async def test_a_dsp_base_is_taken_as_given(client, book, parts):
    assert await federation(client, book).dsp_base_of(parts.dsp_base + "/") == parts.dsp_base
    assert client.calls == []


async def test_a_participant_url_is_read_through_its_version_document(client, book, parts):
    serve_version_document(client, parts)
    assert await federation(client, book).dsp_base_of(parts.base_url) == parts.dsp_base
    assert [(c[0], c[1]) for c in client.calls] == [("GET", f"{parts.base_url}/.well-known/dspace-version")]


async def test_an_absolute_path_in_the_version_document_is_used_as_it_is(client, book):
    client.answer("GET", "https://node.example/.well-known/dspace-version",
                  {"protocolVersions": [{"version": "2025-1", "path": "https://dsp.example/base/"}]})
    assert await federation(client, book).dsp_base_of("https://node.example") == "https://dsp.example/base"


async def test_a_version_document_without_dsp_2025_1_is_refused(client, book):
    client.answer("GET", "https://old.example/.well-known/dspace-version",
                  {"protocolVersions": [{"version": "2024-1", "path": "/api/dsp"}]})
    with pytest.raises(PeerError, match="lists no DSP 2025-1 endpoint"):
        await federation(client, book).dsp_base_of("https://old.example")


async def test_a_did_web_is_found_through_its_data_service(client, book, parts):
    serve_version_document(client, parts)
    assert await federation(client, book, parts.did_document()).dsp_base_of(parts.did) == parts.dsp_base


async def test_a_did_document_without_a_data_service_is_refused(client, book, parts):
    document = {**parts.did_document(), "service": []}
    with pytest.raises(PeerError, match="names no DataService"):
        await federation(client, book, document).dsp_base_of(parts.did)


@pytest.mark.parametrize("peer", ["did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "ftp://x.example",
                                  "parts.example"])
async def test_a_peer_that_names_no_endpoint_is_a_bad_request(client, book, peer):
    with pytest.raises(BadRequest) as info:
        await federation(client, book).dsp_base_of(peer)
    assert info.value.path == "peer" and client.calls == []


# -- verifying a peer (we call it) -------------------------------------------------------------------------


async def test_verify_peer_sends_our_signed_self_description_and_keeps_the_verified_peer(client, book, acme, parts):
    serve_version_document(client, parts)
    serve_handshake(client, parts, parts.self_description(NOW))
    subject, dsp_base = await federation(client, book, parts.did_document()).verify_peer(acme, parts.base_url)
    assert subject.id == parts.did and subject.region == "CN-BJ" and dsp_base == parts.dsp_base
    method, url, body, key_id = client.calls[-1]
    assert (method, url, key_id) == ("POST", f"{parts.dsp_base}/tds/handshake", acme.key_id)
    assert body == acme.self_description(NOW)
    [(participant_id, peer, document)] = book.saved
    assert participant_id == "acme" and peer.did == parts.did and peer.region == "CN-BJ"
    assert peer.verified_at == "2026-06-01T12:00:00Z" and document == parts.self_description(NOW)


async def test_a_peer_that_answers_with_another_endpoints_self_description_is_refused(client, book, acme, parts):
    impostor = runtime("impostor", "impostor.example", "CN-GD")
    serve_version_document(client, impostor)
    serve_handshake(client, impostor, parts.self_description(NOW))  # passes off parts' identity
    service = federation(client, book, parts.did_document())
    with pytest.raises(PeerError, match="whose DSP endpoint is"):
        await service.verify_peer(acme, impostor.base_url)
    assert book.saved == []


async def test_a_did_web_peer_must_answer_as_that_did(client, book, acme, parts):
    other = runtime("other", "parts.example", "CN-BJ")  # another participant on the same node
    document = {**parts.did_document(), "service": other.did_document()["service"]}
    serve_version_document(client, other)
    serve_handshake(client, other, other.self_description(NOW))
    service = federation(client, book, document, other.did_document())
    with pytest.raises(PeerError, match=f"answered as {other.did}"):
        await service.verify_peer(acme, parts.did)
    assert book.saved == []


async def test_a_self_description_that_does_not_verify_is_refused(client, book, acme, parts):
    genuine = parts.self_description(NOW)
    forged = {**genuine, "credentialSubject": {**genuine["credentialSubject"], "region": "CN-GD"}}  # proof breaks
    serve_version_document(client, parts)
    serve_handshake(client, parts, forged)
    with pytest.raises(PeerError, match="does not verify"):
        await federation(client, book, parts.did_document()).verify_peer(acme, parts.base_url)
    assert book.saved == []


class Credentials:
    """Records what the handshake carried for the credentials service; fails in *closing* if told to."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.calls: list[tuple[Any, ...]] = []

    async def opening(self, participant, dsp_base):
        self.calls.append(("opening", participant.id, dsp_base))
        return Opening({"challenge": "c" * 43}, "c" * 43, None, True)

    async def on_handshake(self, participant, caller, fields):
        self.calls.append(("on_handshake", participant.id, caller, fields))
        return {"challenge": "n" * 43}

    async def closing(self, participant, peer, dsp_base, opening, answer):
        self.calls.append(("closing", participant.id, peer, dsp_base, answer))
        if self.fails:
            raise PeerError("the peer refused the presentation with 500")


@pytest.mark.parametrize("fails", [False, True])
async def test_a_handshake_carries_credentials_both_ways_and_a_failure_there_leaves_it_verified(
        client, book, acme, parts, fails):
    serve_version_document(client, parts)
    answer = {"selfDescription": parts.self_description(NOW), "challenge": "n" * 43}
    serve_handshake(client, parts, answer)
    carried = Credentials(fails)
    service = FederationService(client, FederationResolver(parts.did_document()), book,  # type: ignore[arg-type]
                                clock=lambda: NOW, credentials=carried)
    subject, dsp_base = await service.verify_peer(acme, parts.base_url)
    assert subject.id == parts.did and dsp_base == parts.dsp_base and len(book.saved) == 1
    sent = [c for c in client.calls if c[1].endswith("/tds/handshake")]
    assert [c[2] for c in sent] == [{"selfDescription": acme.self_description(NOW), "challenge": "c" * 43}]
    assert carried.calls == [("opening", "acme", parts.dsp_base), ("closing", "acme", parts.did, parts.dsp_base,
                                                                   answer)]


async def test_a_peer_answering_with_its_self_description_alone_has_shown_no_credentials(client, book, acme, parts):
    serve_handshake(client, parts, parts.self_description(NOW))
    carried = Credentials()
    service = FederationService(client, FederationResolver(parts.did_document()), book,  # type: ignore[arg-type]
                                clock=lambda: NOW, credentials=carried)
    await service.verify_peer(acme, parts.dsp_base)
    assert carried.calls[-1] == ("closing", "acme", parts.did, parts.dsp_base, None)


async def test_an_accepted_handshake_with_credentials_is_answered_with_ours_beside_our_self_description(
        client, book, acme, parts):
    carried = Credentials()
    service = FederationService(client, FederationResolver(parts.did_document()), book,  # type: ignore[arg-type]
                                clock=lambda: NOW, credentials=carried)
    body = {"selfDescription": parts.self_description(NOW), "challenge": "c" * 43}
    answer = await service.accept_handshake(acme, parts.did, body)
    assert answer == {"selfDescription": acme.self_description(NOW), "challenge": "n" * 43}
    assert carried.calls == [("on_handshake", "acme", parts.did, {"challenge": "c" * 43})]
    assert await service.accept_handshake(acme, parts.did, parts.self_description(NOW)) == acme.self_description(NOW)
    with pytest.raises(Unauthorized):  # credentials beside another DID's self-description go nowhere
        await service.accept_handshake(acme, "did:web:someone.example", body)
    assert len(carried.calls) == 1


async def test_a_refused_handshake_is_a_peer_error(client, book, acme, parts):
    serve_handshake(client, parts, {"error": "no"}, status=403)
    with pytest.raises(PeerError, match="refused the handshake with 403"):
        await federation(client, book).verify_peer(acme, parts.dsp_base)


async def test_an_expired_self_description_is_refused_by_the_services_clock(client, book, acme, parts):
    serve_handshake(client, parts, parts.self_description(NOW - timedelta(days=365)))
    with pytest.raises(PeerError, match="not valid now"):
        await federation(client, book, parts.did_document()).verify_peer(acme, parts.dsp_base)


# -- accepting a handshake (the peer calls us) -------------------------------------------------------------


async def test_an_accepted_handshake_keeps_the_caller_and_answers_our_self_description(client, book, acme, parts):
    service = federation(client, book, parts.did_document())
    answer = await service.accept_handshake(acme, parts.did, parts.self_description(NOW))
    assert answer == acme.self_description(NOW)
    [(participant_id, peer, _)] = book.saved
    assert participant_id == "acme" and peer.did == parts.did and peer.legal_name == "Parts"
    assert client.calls == []


async def test_a_self_description_of_another_did_than_the_signer_is_unauthorized(client, book, acme, parts):
    service = federation(client, book, parts.did_document())
    with pytest.raises(Unauthorized):
        await service.accept_handshake(acme, "did:web:someone.example", parts.self_description(NOW))
    assert book.saved == []


@pytest.mark.parametrize("document", [[], {"type": ["VerifiableCredential"]}])
async def test_a_malformed_self_description_is_a_bad_request(client, book, acme, parts, document):
    with pytest.raises(BadRequest, match="self-description"):
        await federation(client, book, parts.did_document()).accept_handshake(acme, parts.did, document)
    assert book.saved == []
