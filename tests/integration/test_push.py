"""Push transfers (HttpData-PUSH): the provider sends the payload to the consumer's receiving endpoint."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from test_transfer import agreed, provider_view, vault_files

from connector.net import signing
from connector.testing import dsp_validator, eventually, vault_sha256


def received_sha256(consumer, final):
    """The payload's plaintext digest (the vault file itself is sealed at rest)."""
    return vault_sha256(consumer.data_dir, final["vaultPath"])


async def _push(consumer, agreement_id, wait_s=20):
    started = await consumer.client.start_transfer(agreement_id, push=True)
    assert started["format"] == "HttpData-PUSH"
    return await consumer.client.transfer(started["id"], wait_s=wait_s)


def _events(record, kind):
    return [e["detail"] for e in record["history"] if e["kind"] == kind]


async def test_push_transfer_completes_and_payload_verifies(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer)
    final = await _push(consumer, agreement_id)
    assert final["state"] == "COMPLETED", final
    assert received_sha256(consumer, final) == sha
    assert _events(final, "manifest") and not _events(final, "sealed")
    theirs = await provider_view(provider)
    assert theirs["state"] == "COMPLETED" and theirs["format"] == "HttpData-PUSH"
    assert theirs["tokenExpiresAt"] is None, "a push opens no data endpoint on the provider"
    assert any("pushing" in d for d in _events(theirs, "push")), theirs["history"]
    hidden = [p for p in vault_files(consumer) if "/." in p]  # no partial file left, only the wrapped data key
    assert len(hidden) == 1 and hidden[0].endswith("/.key"), hidden


async def test_important_data_is_pushed_sealed(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, data_class="important")
    seen = []
    original = sender.sealing.seal_chunk

    def recording(key, context, index, plaintext, **kw):
        sealed = original(key, context, index, plaintext, **kw)
        seen.append((plaintext, sealed))
        return sealed

    monkeypatch.setattr(sender.sealing, "seal_chunk", recording)
    final = await _push(consumer, agreement_id)
    assert final["state"] == "COMPLETED", final
    assert received_sha256(consumer, final) == sha
    assert _events(final, "sealed")
    assert seen and all(len(s) == len(p) + 16 and p[:64] not in s for p, s in seen)


async def test_a_pushed_payload_sealed_for_another_key_cannot_be_decrypted(nodes):
    from nacl.public import PrivateKey

    from connector.identity.keys import ParticipantKeys

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, data_class="core")
    participant = consumer.participant
    participant.keys = ParticipantKeys(participant.keys.signing, PrivateKey.generate())  # not the published key
    final = await _push(consumer, agreement_id)
    assert final["state"] == "TERMINATED" and "failed verification" in final["reason"], final
    assert vault_files(consumer) == []


def _flip_first_chunk(monkeypatch, times):
    """A provider-side fault: corrupt the first chunk of the first *times* pushes."""
    from connector.services import sender

    original = sender._chunks
    calls = {"n": 0}

    async def tampered(*args):
        calls["n"] += 1
        first = calls["n"] <= times
        async for chunk in original(*args):
            if first:
                chunk, first = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
            yield chunk

    monkeypatch.setattr(sender, "_chunks", tampered)
    return calls


async def test_a_tampered_pushed_chunk_is_refused_and_sent_again(nodes, monkeypatch):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, data_class="important")
    calls = _flip_first_chunk(monkeypatch, times=1)
    final = await _push(consumer, agreement_id)
    assert final["state"] == "COMPLETED", final
    assert received_sha256(consumer, final) == sha
    assert calls["n"] == 2
    assert any("chunk 0" in d for d in _events(final, "retry")), final["history"]


async def test_a_chunk_that_never_verifies_terminates_the_push(nodes, monkeypatch):
    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", transfer_chunk_retries=2)
    agreement_id, _ = await agreed(provider, consumer)
    _flip_first_chunk(monkeypatch, times=100)
    final = await _push(consumer, agreement_id)
    assert final["state"] == "TERMINATED" and "chunk 0 failed verification 3 times" in final["reason"], final
    theirs = await provider_view(provider)
    assert theirs["state"] == "TERMINATED"
    assert vault_files(consumer) == []


async def test_an_interrupted_push_resumes_where_the_consumer_is(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=40 * 1024 * 1024 + 7, data_class="core")
    original = sender._chunks
    calls = {"n": 0}

    async def breaking(path, manifest, first, key, context):
        calls["n"] += 1
        sent = 0
        async for chunk in original(path, manifest, first, key, context):
            yield chunk
            sent += 1
            if calls["n"] == 1 and sent == 20:  # the connection drops after 20 chunks of the first push
                raise ConnectionResetError("cable pulled")

    monkeypatch.setattr(sender, "_chunks", breaking)
    final = await _push(consumer, agreement_id, wait_s=30)
    assert final["state"] == "COMPLETED", final
    assert received_sha256(consumer, final) == sha
    theirs = await provider_view(provider)
    resumed = [d for d in _events(theirs, "push") if "the consumer holds" in d]
    assert resumed and not resumed[0].startswith("the consumer holds 0 "), theirs["history"]
    assert calls["n"] >= 2


async def test_consumer_suspends_and_resumes_a_push(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=2 * 1024 * 1024)
    provider.node.transfers.script = lambda r: "wait" if r.state == "STARTED" else None  # hold the push
    started = await consumer.client.start_transfer(agreement_id, push=True)
    deadline = time.monotonic() + 10
    while (await consumer.client.transfer(started["id"]))["state"] != "STARTED":
        assert time.monotonic() < deadline, "the push did not start"
        await consumer.client.transfer(started["id"], wait_s=0.05)
    suspended = await consumer.client.transfer_action(started["id"], "suspend", "maintenance")
    assert suspended["state"] == "SUSPENDED"
    provider.node.transfers.script = None
    resumed = await consumer.client.transfer_action(started["id"], "resume")
    assert resumed["state"] == "STARTED"
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert received_sha256(consumer, final) == sha


async def test_a_push_that_never_comes_is_terminated_with_the_reason(nodes):
    provider = await nodes.start("acme")
    consumer = await nodes.start("parts", transfer_stall_timeout_s=0.5)
    agreement_id, _ = await agreed(provider, consumer, size=1000)
    provider.node.transfers.script = lambda r: "wait" if r.state == "STARTED" else None  # starts, sends nothing
    final = await _push(consumer, agreement_id, wait_s=10)
    assert final["state"] == "TERMINATED", final
    assert "sent no data for 0.5 s (not even the manifest)" in final["reason"], final["reason"]
    theirs = await provider_view(provider)
    assert theirs["state"] == "TERMINATED"


async def _post_request(provider, consumer, body):
    p = consumer.participant
    raw = json.dumps({"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                      "@type": "TransferRequestMessage", "callbackAddress": p.dsp_base, **body}).encode()
    url = f"{provider.participant.dsp_base}/transfers/request"
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(("address", "why"), [
    (None, "needs a dataAddress"),
    ({"endpoint": "ftp://files.example/inbox", "endpointProperties": [
        {"name": "authorization", "value": "t"}]}, "dataAddress.endpoint refused"),
    ({"endpoint": "http://127.0.0.1:9/inbox"}, "authorization endpoint property"),
    ({"endpoint": 7}, "needs an endpoint"),
])
async def test_a_push_request_without_a_usable_endpoint_is_refused(nodes, address, why):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=1000)
    body = {"consumerPid": "urn:uuid:push-1", "agreementId": agreement_id, "format": "HttpData-PUSH"}
    if address is not None:
        body["dataAddress"] = {"@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP", **address}
    status, answer = await _post_request(provider, consumer, body)
    assert status == 400 and why in json.dumps(answer), answer
    dsp_validator().validate(answer)
    assert await provider.client.transfers() == []


@pytest.mark.parametrize("endpoint", ["http://10.1.2.3/inbox", "http://169.254.169.254/latest",
                                      "http://[::1]:8080/inbox", "http://127.0.0.1:9/inbox"])
def test_a_private_push_endpoint_is_refused_outside_dev_mode(endpoint):
    from connector.net.client import PeerClient
    from connector.net.guard import OutboundPolicy
    from connector.protocol.errors import MessageError
    from connector.services.transfer import push_target

    address = {"endpoint": endpoint, "endpointProperties": [{"name": "authorization", "value": "t"}]}
    with pytest.raises(MessageError, match=r"dataAddress\.endpoint refused"):
        push_target(address, PeerClient(OutboundPolicy.build(False, ())))
    trusted = PeerClient(OutboundPolicy.build(False, ("10.0.0.0/8",)))
    if endpoint.startswith("http://10."):  # a private endpoint in trusted_networks is allowed
        assert push_target(address, trusted) == {"endpoint": endpoint, "token": "t"}


async def test_the_inbox_checks_token_signature_caller_and_transfer(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=1000)
    provider.node.transfers.script = lambda r: "wait" if r.state == "STARTED" else None  # hold the push
    started = await consumer.client.start_transfer(agreement_id, push=True)
    deadline = time.monotonic() + 10
    while (theirs := await provider_view_now(provider)) is None or theirs.state != "STARTED":
        assert time.monotonic() < deadline, "the push did not start"
        await consumer.client.transfer(started["id"], wait_s=0.05)
    target = theirs.data_address["push"]
    url, token = f"{target['endpoint']}/manifest", target["token"]
    offer = json.dumps({"manifest": theirs.manifest, "envelope": theirs.envelope}).encode()

    async def put(headers):
        async with aiohttp.ClientSession() as session, session.put(url, data=offer, headers=headers) as resp:
            return resp.status, await resp.json()

    def signed(participant, bearer):
        return signing.sign_request("PUT", url, offer, key=participant.keys.signing, key_id=participant.key_id,
                                    now=time.time(), headers={"Authorization": f"Bearer {bearer}",
                                                              "Content-Type": "application/json"})

    assert (await put({"Authorization": f"Bearer {token}"}))[0] == 401, "unsigned"
    assert (await put(signed(provider.participant, token + "x")))[0] == 401, "wrong token"
    other = await nodes.start("north")
    assert (await put(signed(other.participant, token)))[0] == 401, "signed by someone else"
    status, answer = await put(signed(provider.participant, token))
    assert status == 200 and answer == {"received": 0, "size": 1000}
    tampered = json.loads(offer)
    tampered["manifest"]["contentType"] = "text/plain"
    offer = json.dumps(tampered).encode()
    status, answer = await put(signed(provider.participant, token))
    assert status == 409, answer  # the manifest was accepted once; it cannot change


async def provider_view_now(provider):
    rows = await provider.node.transfers_repo.find(provider.participant.id)
    return rows[0] if rows else None


async def test_the_provider_suspends_and_resumes_a_sealed_push(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=8 * 1024 * 1024 + 5, data_class="important")
    original = sender._chunks
    sent_some, go_on = asyncio.Event(), asyncio.Event()

    async def held(path, manifest, first, key, context):
        n = 0
        async for chunk in original(path, manifest, first, key, context):
            yield chunk
            n += 1
            if n == 3 and not go_on.is_set():  # the first push stops after three chunks
                sent_some.set()
                await go_on.wait()

    monkeypatch.setattr(sender, "_chunks", held)
    started = await consumer.client.start_transfer(agreement_id, push=True)
    await asyncio.wait_for(sent_some.wait(), 10)
    stored = await consumer.node.transfers_repo.get(consumer.participant.id, started["id"])
    part = consumer.node.vault.partial_path(consumer.participant, stored.agreement_id, stored.id)

    async def stored_some() -> bool:  # the consumer verified and stored some
        return part.exists() and part.stat().st_size >= 3 * 1024 * 1024

    await eventually(stored_some, 10, every_s=0.02, what="the consumer's partial file")
    [theirs] = await provider.client.transfers()
    assert (await provider.client.transfer_action(theirs["id"], "suspend", "maintenance"))["state"] == "SUSPENDED"
    go_on.set()
    assert (await provider.client.transfer_action(theirs["id"], "resume"))["state"] == "STARTED"
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert received_sha256(consumer, final) == sha
    theirs = await provider_view(provider)
    resumed = [d for d in _events(theirs, "push") if "the consumer holds" in d]  # its progress was kept
    assert resumed and not resumed[0].startswith("the consumer holds 0 "), theirs["history"]


async def test_a_push_repeated_after_every_byte_arrived_changes_nothing(nodes):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    size = 3 * 1024 * 1024 + 123  # the last chunk is short
    agreement_id, sha = await agreed(provider, consumer, size=size, data_class="important")
    consumer.node.transfers.script = lambda r: "wait" if r.state == "STARTED" else None  # do not complete yet
    started = await consumer.client.start_transfer(agreement_id, push=True)
    deadline = time.monotonic() + 10
    # Every byte here: the inbox has placed the file (its completion waits for the script).
    while not (record := await consumer.client.transfer(started["id"], wait_s=0.05)).get("vaultPath"):
        assert time.monotonic() < deadline, record
    assert record["received"] == size
    stored = await consumer.node.transfers_repo.get(consumer.participant.id, started["id"])
    part = consumer.node.vault.partial_path(consumer.participant, stored.agreement_id, stored.id)
    placed = consumer.data_dir / stored.vault_path
    before = placed.read_bytes()
    [theirs] = await provider.client.transfers()
    await sender._push(provider.node.transfers, provider.participant, theirs["id"])  # e.g. an answer was lost
    assert placed.read_bytes() == before and not part.exists()
    assert (await consumer.client.transfer(started["id"]))["received"] == size
    consumer.node.transfers.script = None
    consumer.node.transfers.react_soon(consumer.participant, started["id"])
    final = await consumer.client.transfer(started["id"], wait_s=10)
    assert final["state"] == "COMPLETED", final
    assert received_sha256(consumer, final) == sha


async def test_a_consumer_that_cannot_store_is_retried_with_backoff_then_given_up(nodes, monkeypatch):
    import errno

    from connector.services import vault

    provider = await nodes.start("acme", transfer_stall_timeout_s=1.5)
    consumer = await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=3 * 1024 * 1024)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vault, "open_partial", full)
    final = await _push(consumer, agreement_id, wait_s=15)
    assert final["state"] == "TERMINATED", final
    assert "made no progress" in final["reason"] and "No space left on device" in final["reason"], final["reason"]
    theirs = await provider_view(provider)
    assert 1 <= len(_events(theirs, "resume")) < 10, theirs["history"]  # backed off, not a tight loop
    assert any("could not store" in d for d in _events(final, "error")), final["history"]


@pytest.mark.parametrize("push", [False, True])
async def test_a_completion_the_provider_missed_is_delivered_again(nodes, monkeypatch, push):
    from connector.errors import StorageError
    from connector.protocol.transfer import Kind

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=1024 * 1024 + 5)
    service = provider.node.transfers
    original = service.on_message
    refused = []

    async def busy_once(participant, pid, kind, message, caller):
        if kind is Kind.COMPLETION and not refused:
            refused.append(pid)
            raise StorageError("busy")  # 503: the consumer must deliver it again
        return await original(participant, pid, kind, message, caller)

    monkeypatch.setattr(service, "on_message", busy_once)
    started = await consumer.client.start_transfer(agreement_id, push=push)
    mine = await consumer.client.transfer(started["id"], wait_s=10)
    assert mine["state"] == "COMPLETED", mine
    [theirs] = await provider.client.transfers()
    record = await provider.node.transfers_repo.get(provider.participant.id, theirs["id"])
    await service._react(provider.participant, record)  # what a restart does: a finished push is not sent again
    theirs = await provider.client.transfer(theirs["id"], wait_s=10)
    assert refused and theirs["state"] == "COMPLETED", theirs
    assert len(_events(theirs, "push")) == (1 if push else 0), theirs["history"]


async def test_a_revocation_during_a_push_stops_it_and_leaves_nothing(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=8 * 1024 * 1024, data_class="important")
    original = sender._chunks
    sent_some, go_on = asyncio.Event(), asyncio.Event()

    async def held(path, manifest, first, key, context):
        n = 0
        async for chunk in original(path, manifest, first, key, context):
            yield chunk
            n += 1
            if n == 3 and not go_on.is_set():
                sent_some.set()
                await go_on.wait()

    monkeypatch.setattr(sender, "_chunks", held)
    started = await consumer.client.start_transfer(agreement_id, push=True)
    await asyncio.wait_for(sent_some.wait(), 10)
    stored = await consumer.node.transfers_repo.get(consumer.participant.id, started["id"])
    folder = consumer.node.vault.partial_path(consumer.participant, stored.agreement_id, stored.id).parent
    await provider.client.revoke(agreement_id, "supplier contract ended")
    final = await consumer.client.transfer(started["id"], wait_s=10)
    assert final["state"] == "TERMINATED" and "being deleted" in final["reason"], final
    go_on.set()
    theirs = await provider_view(provider)
    assert theirs["state"] == "TERMINATED", theirs
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())  # no key, no partial file came back


@pytest.mark.parametrize("push", [False, True])
async def test_data_of_an_agreement_revoked_meanwhile_is_not_received(nodes, push):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, size=2 * 1024 * 1024)
    hold = lambda r: "wait" if r.state == "STARTED" else None  # noqa: E731 (the mover waits to be let go)
    (provider if push else consumer).node.transfers.script = hold
    started = await consumer.client.start_transfer(agreement_id, push=push)
    deadline = time.monotonic() + 10
    while (await consumer.client.transfer(started["id"], wait_s=0.05))["state"] != "STARTED":
        assert time.monotonic() < deadline, "the transfer did not start"
    # As a revocation whose deletion ran just before this transfer's bytes would arrive.
    await consumer.node.store.write(lambda db: db.execute(
        "UPDATE agreements SET state = 'REVOKED' WHERE id = ?", [agreement_id]))
    mover = provider if push else consumer
    mover.node.transfers.script = None
    [record] = await mover.node.transfers_repo.find(mover.participant.id)
    mover.node.transfers.react_soon(mover.participant, record.id)
    final = await consumer.client.transfer(started["id"], wait_s=10)
    assert final["state"] == "TERMINATED" and "is REVOKED here" in final["reason"], final
    assert vault_files(consumer) == []
