"""End-to-end encrypted transfers: data classed important or core travels sealed under a per-transfer key."""

from __future__ import annotations

from nacl.public import PrivateKey
from test_transfer import agreed, vault_files

from connector.identity.keys import ParticipantKeys
from connector.testing import vault_sha256


async def _pull(consumer, agreement_id, wait_s=20):
    started = await consumer.client.start_transfer(agreement_id)
    return await consumer.client.transfer(started["id"], wait_s=wait_s)


async def test_important_data_travels_sealed_and_verifies(nodes, monkeypatch):
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
    final = await _pull(consumer, agreement_id)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert any(e["kind"] == "sealed" for e in final["history"])
    assert seen and all(len(s) == len(p) + 16 and p[:64] not in s for p, s in seen)  # ciphertext on the wire


async def test_general_data_is_not_sealed_unless_configured(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer)
    final = await _pull(consumer, agreement_id)
    assert final["state"] == "COMPLETED" and not any(e["kind"] == "sealed" for e in final["history"])


async def test_wrong_consumer_key_cannot_decrypt(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, data_class="core")
    participant = consumer.participant
    participant.keys = ParticipantKeys(participant.keys.signing, PrivateKey.generate())  # not the published key
    final = await _pull(consumer, agreement_id)
    assert final["state"] == "TERMINATED" and "failed verification" in final["reason"], final
    assert vault_files(consumer) == []


async def test_tampered_ciphertext_is_rejected_and_fetched_again(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, data_class="important")
    original = sender.sealing.seal_chunk
    calls = {"n": 0}

    def tampering(key, context, index, plaintext, **kw):
        sealed = bytearray(original(key, context, index, plaintext, **kw))
        calls["n"] += 1
        if calls["n"] == 1:
            sealed[5] ^= 1
        return bytes(sealed)

    monkeypatch.setattr(sender.sealing, "seal_chunk", tampering)
    final = await _pull(consumer, agreement_id)
    assert final["state"] == "COMPLETED", final
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert any("did not match" in e["detail"] for e in final["history"])


async def test_encrypted_transfer_resumes_with_range(nodes, monkeypatch):
    from connector.services import sender

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer, size=12 * 1024 * 1024 + 5, data_class="important")
    original = sender.stream_sealed
    calls = {"n": 0}

    async def truncated(path, manifest, first, key, context, response):
        calls["n"] += 1
        if calls["n"] > 1:
            return await original(path, manifest, first, key, context, response)
        data = path.read_bytes()
        for index in range(first, len(manifest.chunks) // 2):  # half the sealed chunks, then the line drops
            start = index * manifest.chunk_size
            plain = data[start:start + manifest.chunk_length(index)]
            await response.write(sender.sealing.seal_chunk(key, context, index, plain))
        response._req.transport.abort()
        raise ConnectionResetError("cut off by the test")

    monkeypatch.setattr(sender, "stream_sealed", truncated)
    final = await _pull(consumer, agreement_id, wait_s=30)
    assert final["state"] == "COMPLETED", final
    assert calls["n"] >= 2
    assert vault_sha256(consumer.data_dir, final["vaultPath"]) == sha
    assert any(e["kind"] == "resume" for e in final["history"])


async def test_a_consumer_without_a_key_agreement_key_is_refused(nodes):
    provider = await nodes.start("acme")
    consumer = await nodes.start("keyed", did_method="key")  # did:key documents carry no X25519 key
    agreement_id, _ = await agreed(provider, consumer, data_class="core")
    final = await _pull(consumer, agreement_id)
    assert final["state"] == "TERMINATED" and "no X25519 key-agreement key" in final["reason"], final



async def test_an_unknown_sealing_scheme_is_refused_with_the_reason(nodes, monkeypatch):
    from connector.services import transfer

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, _ = await agreed(provider, consumer, data_class="important")
    monkeypatch.setattr(transfer, "SEALING_SCHEME", "x25519-hkdf-sha256+rot13")  # what the provider announces
    final = await _pull(consumer, agreement_id)
    assert final["state"] == "TERMINATED", final
    assert "seals with 'x25519-hkdf-sha256+rot13'; this node reads x25519-hkdf-sha256+aes256gcm" in final["reason"]
    assert vault_files(consumer) == []
