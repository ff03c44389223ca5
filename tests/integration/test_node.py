"""Real nodes on 127.0.0.1: public documents, signed peer requests, the handshake, the management API."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import aiohttp
import jsonschema
import pytest
from nacl.signing import SigningKey

from connector.client import ClientError
from connector.identity import credentials
from connector.identity import did as dids
from connector.identity.keys import Signer
from connector.net import signing
from connector.net.client import PeerClient
from connector.testing import shared_dir

SHARED = shared_dir()


async def _get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json(content_type=None)


async def _post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_version_documents_are_public_and_schema_valid(nodes):
    a = await nodes.start("acme")
    schema = json.loads((SHARED / "dsp-2025-1/common/protocol-version-schema.json").read_text())
    for path in ("/.well-known/dspace-version", "/api/dsp/.well-known/dspace-version",
                 "/participants/acme/.well-known/dspace-version"):
        status, doc = await _get(a.public_url + path)
        assert status == 200
        jsonschema.validate(doc, schema)
        entry = doc["protocolVersions"][0]
        assert entry["version"] == "2025-1" and entry["path"] == "/participants/acme/api/dsp/2025-1"


async def test_did_document_and_self_description_verify(nodes):
    a = await nodes.start("acme", region="CN-GD-GZ")
    did = a.participant.did
    assert did == dids.did_web_for(a.public_url, "acme")
    status, doc = await _get(dids.did_web_url(did, dev_mode=True))
    assert status == 200 and doc["id"] == did and doc["keyAgreement"] == [f"{did}#key-2"]
    status, sd = await _get(f"{a.public_url}/participants/acme/.well-known/tds/self-description")
    assert status == 200
    subject = credentials.verify(sd, doc, now=datetime.now(UTC))
    assert subject.region == "CN-GD-GZ" and subject.dsp_endpoint == a.participant.dsp_base


async def test_unknown_participant_is_404_json(nodes):
    a = await nodes.start("acme")
    status, body = await _get(f"{a.public_url}/participants/nobody/did.json")
    assert status == 404 and body["error"] == "not-found"


async def test_two_nodes_verify_each_other(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts", region="CN-GD-SZ")
    result = await a.client.verify_peer(b.public_url)
    assert result["verified"] and result["peer"]["id"] == b.participant.did
    assert result["peer"]["region"] == "CN-GD-SZ"
    # the handshake is mutual: b verified a's signed request and self-description too
    assert [p["did"] for p in await b.client.peers()] == [a.participant.did]
    assert [p["did"] for p in await a.client.peers()] == [b.participant.did]
    # by DID, through the DID document's DataService entry
    again = await b.client.verify_peer(a.participant.did)
    assert again["dspEndpoint"] == a.participant.dsp_base


async def test_did_key_participant(nodes):
    a = await nodes.start("acme")
    k = await nodes.start("keyed", did_method="key")
    assert k.participant.did.startswith("did:key:z6Mk")
    result = await a.client.verify_peer(k.public_url)
    assert result["peer"]["id"] == k.participant.did
    await k.client.verify_peer(a.public_url)


def _handshake_url(node) -> str:
    return f"{node.participant.dsp_base}/tds/handshake"


def _signed(node, url: str, body: bytes, *, now: float | None = None, key: SigningKey | None = None) -> dict:
    p = node.participant
    return signing.sign_request("POST", url, body, key=key or p.keys.signing, key_id=p.key_id,
                                now=now if now is not None else time.time(),
                                headers={"Content-Type": "application/json"})


async def _body(node) -> bytes:
    return json.dumps(node.participant.self_description(datetime.now(UTC))).encode()


async def test_unsigned_request_is_401_with_json(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts")
    status, body = await _post(_handshake_url(b), await _body(a), {"Content-Type": "application/json"})
    assert status == 401 and "not signed" in body["message"]


async def test_wrong_key_is_401(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts")
    body = await _body(a)
    status, resp = await _post(_handshake_url(b), body, _signed(a, _handshake_url(b), body, key=SigningKey.generate()))
    assert status == 401 and "does not verify" in resp["message"]


async def test_expired_and_future_signatures_are_401(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts")
    body = await _body(a)
    for now, reason in ((time.time() - 1000, "expired"), (time.time() + 1000, "future")):
        status, resp = await _post(_handshake_url(b), body, _signed(a, _handshake_url(b), body, now=now))
        assert status == 401 and reason in resp["message"]


async def test_replayed_request_is_401_even_after_restart(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts")
    body = await _body(a)
    headers = _signed(a, _handshake_url(b), body)
    status, _ = await _post(_handshake_url(b), body, headers)
    assert status == 200
    status, resp = await _post(_handshake_url(b), body, headers)
    assert status == 401 and "replayed" in resp["message"]
    await nodes.restart(b)
    status, resp = await _post(_handshake_url(b), body, headers)
    assert status == 401 and "replayed" in resp["message"]


async def test_signature_from_unknown_did_is_401(nodes):
    b = await nodes.start("parts")
    stranger = SigningKey.generate()
    did = dids.did_key_for(bytes(stranger.verify_key))
    url = _handshake_url(b)
    headers = signing.sign_request("POST", url, b"{}", key=stranger, key_id="did:web:127.0.0.1%3A1:x#key-1",
                                   now=time.time())
    status, resp = await _post(url, b"{}", headers)
    assert status == 401 and "resolve" in resp["message"]
    # a did:key signer is authenticated, but its body is not a valid self-description
    headers = signing.sign_request("POST", url, b"{}", key=stranger, key_id=dids.signing_key_id(did), now=time.time())
    status, resp = await _post(url, b"{}", headers)
    assert status == 400 and "self-description" in resp["message"]


async def test_tampered_self_description_is_rejected(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts")
    sd = a.participant.self_description(datetime.now(UTC))
    sd = {**sd, "credentialSubject": {**sd["credentialSubject"], "region": "US"}}
    body = json.dumps(sd).encode()
    status, resp = await _post(_handshake_url(b), body, _signed(a, _handshake_url(b), body))
    assert status == 400 and "does not verify" in resp["message"]
    assert await b.client.peers() == []


async def test_self_description_of_someone_else_is_rejected(nodes):
    a, b, c = await nodes.start("acme"), await nodes.start("parts"), await nodes.start("third")
    body = json.dumps(c.participant.self_description(datetime.now(UTC))).encode()
    status, resp = await _post(_handshake_url(b), body, _signed(a, _handshake_url(b), body))
    assert status == 401 and "another DID" in resp["message"]


async def test_signature_uses_public_url_not_bind_address(nodes):
    """A request signed for the public URL verifies; one signed for another authority does not."""
    a, b = await nodes.start("acme"), await nodes.start("parts")
    body = await _body(a)
    other = _handshake_url(b).replace("127.0.0.1", "localhost")
    status, _ = await _post(_handshake_url(b), body, _signed(a, other, body))
    assert status == 401


async def test_management_api_needs_a_token_and_names_bad_fields(nodes):
    a = await nodes.start("acme")
    url = f"{a.node.management_url}/api/management/v1/participant"
    status, body = await _get(url)
    assert status == 401 and "Bearer" in body["message"]
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer nope"}) as s, s.get(url) as r:
        assert r.status == 401
    with pytest.raises(ClientError) as info:
        await a.client._call("POST", "/peers/verify", {"peer": "https://x.example", "typo": 1})
    assert info.value.status == 400 and info.value.path == "$.typo"
    with pytest.raises(ClientError) as info:
        await a.client._call("POST", "/peers/verify", {})
    assert info.value.status == 400 and "peer" in str(info.value)


async def test_a_body_over_the_size_limit_is_413_with_a_json_body_on_both_listeners(nodes):
    a, b = await nodes.start("acme", max_request_bytes=4096), await nodes.start("parts")
    raw = json.dumps({"id": "p", "policy": {"note": "x" * 5000}}).encode()
    status, body = await _post(f"{a.node.management_url}/api/management/v1/policies", raw,
                               {"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"})
    assert status == 413 and "node.max_request_bytes" in body["message"]
    url = f"{a.participant.dsp_base}/negotiations/request"
    p = b.participant
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    status, body = await _post(url, raw, headers)
    assert status == 413 and body["@type"] == "ContractNegotiationError"
    assert "node.max_request_bytes" in body["reason"][0]


async def test_peer_verify_errors_are_readable(nodes):
    a = await nodes.start("acme")
    with pytest.raises(ClientError) as info:
        await a.client.verify_peer("ftp://x")
    assert info.value.status == 400
    with pytest.raises(ClientError) as info:
        await a.client.verify_peer("http://127.0.0.1:1")
    assert info.value.status == 502 and "failed" in info.value.message


async def test_outbound_guard_refuses_loopback_outside_dev_mode(nodes):
    strict = await nodes.start("strict", dev_mode=False, trusted_networks=("192.0.2.0/24",))
    target = await nodes.start("target")
    # a peer hands the strict node a loopback URL: refused before any connection
    with pytest.raises(ClientError) as info:
        await strict.client.verify_peer(target.public_url)
    assert info.value.status == 400 and "refus" in info.value.message


async def test_outbound_guard_applies_to_resolved_host_names():
    client = PeerClient(__import__("connector.net.guard", fromlist=["x"]).OutboundPolicy.build(False, []))
    try:
        from connector.errors import OutboundRefused

        with pytest.raises(OutboundRefused):
            await client.request("GET", "https://localhost:1/x")
    finally:
        await client.close()


async def test_outbound_guard_allows_trusted_networks(nodes):
    strict = await nodes.start("strict", dev_mode=False, trusted_networks=("127.0.0.0/8",))
    target = await nodes.start("target")
    # did:web of a loopback host resolves over https outside dev mode; the target serves http, so the
    # connection fails — but it is attempted (not refused by the guard).
    with pytest.raises(ClientError) as info:
        await strict.client.verify_peer(target.public_url)
    assert info.value.status == 502 and "refus" not in info.value.message


async def test_health_and_metrics(nodes):
    a = await nodes.start("acme")
    status, body = await _get(f"{a.public_url}/healthz")
    assert status == 200 and body == {"status": "ok"}
    status, body = await _get(f"{a.public_url}/readyz")
    assert status == 200 and body["status"] == "ready", body
    assert (await _get(f"{a.public_url}/metrics"))[0] == 404  # the metrics are on the management listener
    headers = {"Authorization": f"Bearer {a.admin_token}"}
    async with aiohttp.ClientSession() as s, s.get(f"{a.node.management_url}/metrics", headers=headers) as r:
        text = await r.text()
    assert r.status == 200 and "tds_http_requests_total" in text and "tds_participants 1.0" in text


async def test_signed_peer_client_round_trip(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts")
    client = PeerClient(a.node.policy)
    try:
        p = a.participant
        resp = await client.request("POST", _handshake_url(b), json_body=p.self_description(datetime.now(UTC)),
                                    signer=Signer(p.keys.signing, p.key_id))
        assert resp.status == 200 and resp.json()["issuer"] == b.participant.did
    finally:
        await client.close()


async def test_a_start_that_fails_half_way_leaves_nothing_open(tmp_path):
    import socket

    from connector.bootstrap import init_node
    from connector.node import Node
    from connector.testing import free_port

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    public = free_port()
    result = init_node(tmp_path / "n", name="acme", legal_name="ACME", port=public,
                       management_port=busy.getsockname()[1], dev_mode=True)
    node = Node(tmp_path / "n", result.config)
    try:
        with pytest.raises(OSError):
            await node.start()
        with socket.socket() as again:  # the public port the node had bound is free again
            again.bind(("127.0.0.1", public))
        assert node._runners == []
    finally:
        busy.close()
