"""Transfer processes and the pull data plane between real nodes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import aiohttp
import pytest

from connector.net import signing
from connector.payload import manifest as manifests
from connector.testing import dsp_validator, eventually, vault_plaintext, vault_sha256, vouch_region

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def agreed(provider, consumer, *, size=3 * 1024 * 1024 + 123, contract=OPEN, name="qi.bin",
                 data_class="general"):
    """Publish a file on the provider, negotiate it; return (agreement id, the file's bytes' SHA-256)."""
    sha = await asyncio.to_thread(write_random, provider.data_dir / "files" / "acme" / name, size)
    await provider.client.add_asset({"id": "qi-2026", "title": "QI", "contentType": "application/octet-stream",
                                     "dataAddress": {"type": "File", "path": name}, "dataClass": data_class})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_policy("contract", contract)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="contract",
                                                  assets=["qi-2026"])
    if data_class in ("core", "personal"):
        # Export control needs the consumer's verified region: a credential by an issuer the provider trusts for
        # regions (here the provider itself), presented in the consumer's handshake.
        await vouch_region(provider, consumer, verifiers=[provider])
        await consumer.client.verify_peer(provider.public_url)
    catalog = await consumer.client.catalog(provider.public_url)
    offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    return final["agreement"]["@id"], sha


async def provider_view(provider):
    """The provider's transfer once final (the consumer's final state is committed before it is sent)."""
    [theirs] = await provider.client.transfers()
    return await provider.client.transfer(theirs["id"], wait_s=10)


def write_random(path, size):
    """Write *size* random bytes in blocks; return their SHA-256."""
    path.parent.mkdir(exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for at in range(0, size, 8 * 1024 * 1024):
            block = os.urandom(min(8 * 1024 * 1024, size - at))
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def vault_files(node):
    root = node.data_dir / "vault"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_pull_transfer_completes_and_payload_verifies(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer)
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert "token" not in str(final).lower() or "tokenExpiresAt" in final
    plaintext = vault_plaintext(consumer.data_dir, final["vaultPath"])
    assert hashlib.sha256(plaintext).hexdigest() == sha
    bundle = await consumer.client.transfer_bundle(started["id"])
    manifest, _, binding = manifests.read_bundle(bundle)
    assert binding.agreement_id == agreement_id and binding.consumer == consumer.participant.did
    assert manifest.size == len(plaintext)
    theirs = await provider_view(provider)
    assert theirs["state"] == "COMPLETED"
    hidden = [p for p in vault_files(consumer) if "/." in p]  # no partial file left, only the wrapped data key
    assert len(hidden) == 1 and hidden[0].endswith("/.key"), hidden


@pytest.mark.parametrize("path", ["../tds.toml", "/etc/passwd", "escape", "files/../../tds.toml"])
async def test_data_address_outside_the_roots_is_refused(nodes, path):
    provider = await nodes.start("acme")
    from connector.client import ClientError

    (provider.data_dir / "files" / "acme" / "escape").symlink_to(provider.data_dir / "tds.toml")  # leads out
    with pytest.raises(ClientError) as info:
        await provider.client.add_asset({"id": "x", "dataAddress": {"type": "File", "path": path}})
    assert info.value.status == 400


async def test_policy_that_does_not_permit_now_terminates_with_the_reason(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    expired = {"@type": "Set", "permission": [{"action": "use", "constraint": [
        {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2020-01-01T00:00:00Z"}]}]}
    agreement_id, _ = await agreed(provider, consumer, contract=expired, size=5000)
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=10)
    assert final["state"] == "TERMINATED"
    assert "does not permit" in final["reason"] and "2020-01-01" in final["reason"], final["reason"]
    assert vault_files(consumer) == []


def _flip_every(times):
    """A provider-side fault: flip one byte of the stream in the first *times* responses."""
    from connector.services import sender

    original = sender.stream_file
    calls = {"n": 0}

    async def tampered(path, offset, size, response):
        calls["n"] += 1
        if calls["n"] > times:
            return await original(path, offset, size, response)
        first = True

        class Flipping:
            async def write(self, data):
                nonlocal first
                if first:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                    first = False
                await response.write(data)

        return await original(path, offset, size, Flipping())

    return tampered


async def test_tampered_chunk_is_fetched_again(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer)
    monkeypatch.setattr(sender, "stream_file", _flip_every(1))
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert any("did not match its digest" in e["detail"] for e in final["history"])


async def test_a_chunk_that_keeps_failing_terminates_and_leaves_nothing(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer)
    monkeypatch.setattr(sender, "stream_file", _flip_every(100))
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "TERMINATED"
    assert "chunk 0 failed verification 4 times" in final["reason"], final["reason"]
    assert vault_files(consumer) == []
    theirs = await provider_view(provider)
    assert theirs["state"] == "TERMINATED" and "chunk 0" in theirs["reason"]


def _truncate_first(times):
    """A provider-side fault: drop the connection half-way through the first *times* responses."""
    from connector.services import sender

    original = sender.stream_file
    calls = {"n": 0}

    async def truncated(path, offset, size, response):
        calls["n"] += 1
        if calls["n"] > times:
            return await original(path, offset, size, response)
        await original(path, offset, offset + (size - offset) // 2 + 1000, response)
        response._req.transport.abort()  # as a crashed provider's kernel would: the connection just ends
        raise ConnectionResetError("cut off by the test")

    return truncated


async def test_truncated_stream_resumes_with_range(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=40 * 1024 * 1024 + 7)
    monkeypatch.setattr(sender, "stream_file", _truncate_first(1))
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=30)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha


async def test_a_stream_that_keeps_breaking_terminates_and_leaves_nothing(nodes, monkeypatch):
    from connector.services import sender

    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", transfer_stall_timeout_s=1.5)
    agreement_id, _ = await agreed(provider, consumer)
    monkeypatch.setattr(sender, "stream_file", _truncate_first(10_000))
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=30)
    assert final["state"] == "TERMINATED"
    assert "data endpoint failed" in final["reason"], final["reason"]
    assert vault_files(consumer) == []


async def test_wrong_envelope_signature_is_refused(nodes, monkeypatch):
    from nacl.signing import SigningKey

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer)
    original = manifests.sign_envelope
    monkeypatch.setattr(manifests, "sign_envelope", lambda m, b, key, **kw: original(m, b, SigningKey.generate(), **kw))
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "TERMINATED"
    assert "envelope's signature does not verify" in final["reason"], final["reason"]
    assert vault_files(consumer) == []


# -- the data endpoint's own checks ------------------------------------------------------------------------


async def _held_transfer(nodes, size=100_000):
    """A STARTED transfer whose consumer does not pull (so its token stays live): (provider, consumer, record)."""
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=size)
    consumer.node.transfers.script = lambda r: "wait" if r.state == "STARTED" else None
    started = await consumer.client.start_transfer(agreement_id)

    async def held():
        record = await consumer.node.transfers_repo.get(consumer.participant.id, started["id"])
        return record if record.state == "STARTED" and record.data_address and record.pending is None else None

    record = await eventually(held, 20, every_s=0.02, what="the transfer's start")
    return provider, consumer, record


def _signed_get(participant, url, token):
    return signing.sign_request("GET", url, None, key=participant.keys.signing, key_id=participant.key_id,
                                now=time.time(), headers={"Authorization": f"Bearer {token}"})


async def _get(url, headers):
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_data_endpoint_checks_token_signature_caller_and_time(nodes):
    provider, consumer, record = await _held_transfer(nodes)
    url = record.data_address["endpoint"]
    token = next(p["value"] for p in record.data_address["endpointProperties"] if p["name"] == "authorization")
    headers = _signed_get(consumer.participant, url, token)
    assert await _get(url, headers) == 200
    assert await _get(url, headers) == 401, "a replayed request (same signature nonce) must be refused"
    assert await _get(url, {"Authorization": f"Bearer {token}"}) == 401, "unsigned"
    assert await _get(url, _signed_get(consumer.participant, url, token[:-2] + "xx")) == 401, "wrong token"
    other = await nodes.start("north")
    assert await _get(url, _signed_get(other.participant, url, token)) == 401, "another consumer's token"
    await provider.node.store.write(lambda db: db.execute(
        "UPDATE transfers SET token_expires_at = 1 WHERE id = ?", [record.provider_pid]))
    assert await _get(url, _signed_get(consumer.participant, url, token)) == 401, "expired token"


async def test_ranges_resume_inside_the_file_and_are_416_past_its_end(nodes):
    _, consumer, record = await _held_transfer(nodes, size=100_000)
    url = record.data_address["endpoint"]
    token = next(p["value"] for p in record.data_address["endpointProperties"] if p["name"] == "authorization")

    async def ranged(value):
        headers = {**_signed_get(consumer.participant, url, token), "Range": value}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Range"), len(await resp.read())

    assert await ranged("bytes=99990-") == (206, "bytes 99990-99999/100000", 10)
    for unsatisfiable in ("bytes=100000-", "bytes=200000-", "bytes=0-9", "bytes=-5", "items=0-"):
        assert await ranged(unsatisfiable) == (416, "bytes */100000", 0), unsatisfiable


async def test_token_dies_with_the_transfer(nodes):
    provider, consumer, record = await _held_transfer(nodes)
    url = record.data_address["endpoint"]
    token = next(p["value"] for p in record.data_address["endpointProperties"] if p["name"] == "authorization")
    done = await consumer.client.transfer_action(record.id, "terminate", "changed our mind")
    assert done["state"] == "TERMINATED"
    theirs = await provider_view(provider)
    assert theirs["state"] == "TERMINATED" and "changed our mind" in theirs["reason"]
    assert await _get(url, _signed_get(consumer.participant, url, token)) == 401


async def test_suspend_and_resume_by_the_consumer(nodes):
    provider, consumer, record = await _held_transfer(nodes)
    suspended = await consumer.client.transfer_action(record.id, "suspend", "maintenance")
    assert suspended["state"] == "SUSPENDED"
    consumer.node.transfers.script = None
    resumed = await consumer.client.transfer_action(record.id, "resume")
    assert resumed["state"] == "STARTED"
    final = await consumer.client.transfer(record.id, wait_s=20)
    assert final["state"] == "COMPLETED", final
    theirs = await provider_view(provider)
    assert theirs["state"] == "COMPLETED"


async def test_a_transfer_of_another_consumers_agreement_is_refused(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=1000)
    other = await nodes.start("north")
    p = other.participant
    body = json.dumps({"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "TransferRequestMessage",
                       "consumerPid": "urn:uuid:north-1", "agreementId": agreement_id, "format": "HttpData-PULL",
                       "callbackAddress": p.dsp_base}).encode()
    url = f"{provider.participant.dsp_base}/transfers/request"
    headers = signing.sign_request("POST", url, body, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
        answer = await resp.json()
    assert resp.status == 400 and answer["@type"] == "TransferError", answer
    dsp_validator().validate(answer)
    assert answer["consumerPid"] == "urn:uuid:north-1" and "no agreement" in answer["reason"][0]
    assert await provider.client.transfers() == []


async def test_a_transfer_the_provider_never_starts_is_terminated_with_the_reason(nodes):
    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", transfer_start_timeout_s=0.5)
    agreement_id, _ = await agreed(provider, consumer, size=1000)
    provider.node.transfers.script = lambda r: "wait"  # a provider that acknowledges, then says nothing
    started = await consumer.client.start_transfer(agreement_id)
    assert started["state"] == "REQUESTED"
    final = await consumer.client.transfer(started["id"], wait_s=10)
    assert final["state"] == "TERMINATED"
    assert "did not start the transfer within" in final["reason"], final["reason"]
    theirs = await provider_view(provider)
    assert theirs["state"] == "TERMINATED"


async def test_an_open_stream_is_cut_off_when_the_transfer_ends(nodes):
    provider, consumer, record = await _held_transfer(nodes, size=64 * 1024 * 1024)
    url = record.data_address["endpoint"]
    token = next(p["value"] for p in record.data_address["endpointProperties"] if p["name"] == "authorization")
    got = 0
    headers = _signed_get(consumer.participant, url, token)
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200
        got += len(await resp.content.readexactly(1024 * 1024))
        await consumer.client.transfer_action(record.id, "terminate", "enough")
        await provider_view(provider)
        with pytest.raises(aiohttp.ClientPayloadError):
            while chunk := await resp.content.read(1024 * 1024):
                got += len(chunk)
    assert got < 64 * 1024 * 1024


async def test_export_control_is_checked_again_when_a_transfer_starts(nodes):
    from connector.protocol.export_control import ExportRule

    provider = await nodes.start("acme", region="CN-GD")
    consumer = await nodes.start("partner", region="DE-BY")
    await vouch_region(provider, consumer, verifiers=[provider])
    await consumer.client.verify_peer(provider.public_url)  # the provider knows the consumer's verified region
    agreement, _ = await agreed(provider, consumer, size=1000)  # general data: the default rule lets it go
    # the provider's rules tighten after the agreement: general data must now stay in CN as well
    provider.node.transfers.export_rules = [ExportRule(region="CN", data_classes=["general", "core", "personal"])]
    record = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(record["id"], wait_s=10)
    assert final["state"] == "TERMINATED"
    assert "export control" in final["reason"] and "the recipient is in DE-BY (verified by" in final["reason"]
    assert vault_files(consumer) == []


async def test_core_data_still_goes_to_a_consumer_after_the_provider_restarts(nodes):
    """The claims a provider counted live in its memory only: the consumer presents its credentials again when
    it asks for the data, so a provider restarted between the agreement and the transfer learns its verified
    region again instead of refusing core data."""
    provider = await nodes.start("acme", region="CN-GD")
    consumer = await nodes.start("parts", region="CN-GD")
    agreement, sha = await agreed(provider, consumer, size=100_000, data_class="core")
    await nodes.restart(provider)
    assert await provider.node.credentials.claims_of(provider.participant.id, consumer.participant.did) is None

    record = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(record["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert hashlib.sha256(vault_plaintext(consumer.data_dir, final["vaultPath"])).hexdigest() == sha
    claims = await provider.node.credentials.claims_of(provider.participant.id, consumer.participant.did)
    assert claims is not None and claims.region is not None and claims.region.value.region == "CN-GD"


async def test_a_consumer_without_credentials_asks_for_data_without_a_handshake(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement, _ = await agreed(provider, consumer, size=1000)
    called: list[str] = []
    request = consumer.node.client.request

    async def recording(method, url, **kwargs):
        called.append(url)
        return await request(method, url, **kwargs)

    consumer.node.client.request = recording
    record = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(record["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert called[0].endswith("/transfers/request")
    assert not [url for url in called if "/tds/" in url], called


async def test_vault_quota_refuses_a_pull_that_would_pass_it(nodes):
    from connector.client import ClientError

    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", vault_quota_bytes=100_000)
    agreement, _ = await agreed(provider, consumer, size=150_000)
    record = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(record["id"], wait_s=10)
    assert final["state"] == "TERMINATED" and "vault quota exceeded" in final["reason"], final
    assert vault_files(consumer) == []
    # a vault already at its quota: a new transfer is refused at once with 413
    folder = consumer.data_dir / "vault" / "parts" / "other"
    folder.mkdir(parents=True)
    (folder / "blob").write_bytes(b"x" * 100_000)
    with pytest.raises(ClientError) as info:
        await consumer.client.start_transfer(agreement)
    assert info.value.status == 413 and "vault is full" in info.value.message
