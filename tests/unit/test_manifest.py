"""Manifests, chunk checks and signed envelopes (connector.payload.manifest), without sockets."""

from __future__ import annotations

import hashlib
import os

import msgspec
import pytest
from blake3 import blake3
from nacl.signing import SigningKey

from connector.identity import did as dids
from connector.payload import manifest as mf

KEY = SigningKey(bytes(range(32)))


PROVIDER = dids.did_key_for(bytes(KEY.verify_key))
BINDING = mf.Binding(agreement_id="urn:uuid:a", provider_pid="urn:uuid:p", consumer_pid="urn:uuid:c",
                     provider=PROVIDER, consumer="did:web:parts.example")


def build(data: bytes, chunk: int = 4096, pieces: int = 1000, algorithm: str = "blake3") -> mf.Manifest:
    builder = mf.ManifestBuilder("application/octet-stream", chunk_size=chunk, algorithm=algorithm)
    for i in range(0, len(data), pieces):
        builder.update(data[i:i + pieces])
    return builder.finish()


HASHES = {"sha-256": hashlib.sha256, "blake3": blake3}


@pytest.mark.parametrize("algorithm", sorted(HASHES))
@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_chunks_and_root_do_not_depend_on_how_the_bytes_were_sliced(size, algorithm):
    data = os.urandom(size)
    a, b = build(data, pieces=1000, algorithm=algorithm), build(data, pieces=4096, algorithm=algorithm)
    assert a == b and a.size == size and len(a.chunks) == -(-size // 4096) and a.algorithm == algorithm
    assert a.chunks == [HASHES[algorithm](data[i:i + 4096]).hexdigest() for i in range(0, size, 4096)]
    assert mf.decode(mf.encode(a)) == a
    for i in range(len(a.chunks)):
        assert mf.chunk_ok(a, i, data[i * 4096:(i + 1) * 4096])


def test_a_tampered_or_short_chunk_fails():
    data = os.urandom(3 * 4096)
    m = build(data)
    bad = bytearray(data[4096:8192])
    bad[7] ^= 1
    assert not mf.chunk_ok(m, 1, bytes(bad))
    assert not mf.chunk_ok(m, 1, data[4096:8000])
    assert not mf.chunk_ok(m, 3, b"")


def test_a_manifest_whose_root_does_not_match_is_refused():
    m = mf.encode(build(os.urandom(9000)))
    m["chunks"][0] = "00" * 32
    with pytest.raises(mf.ManifestError):
        mf.decode(m)


def test_unknown_algorithm_is_refused():
    m = {**mf.encode(build(b"abc")), "algorithm": "md5"}
    with pytest.raises(mf.ManifestError, match="md5"):
        mf.decode(m)


def signed(m: mf.Manifest, key: SigningKey = KEY, binding: mf.Binding = BINDING) -> dict:
    return mf.sign_envelope(m, binding, key, key_id=dids.signing_key_id(binding.provider),
                            created="2026-01-01T00:00:00Z")


def test_envelope_verifies_against_the_provider_document():
    m = build(os.urandom(5000))
    document = dids.did_key_document(PROVIDER)
    assert mf.verify_envelope(signed(m), m, document, BINDING) == BINDING
    manifest, _, binding = mf.read_bundle(mf.bundle(m, signed(m), document))
    assert manifest == m and binding == BINDING


def test_wrong_signature_other_binding_or_other_manifest_fail():
    m = build(os.urandom(5000))
    document = dids.did_key_document(PROVIDER)
    envelope = signed(m)
    forged = {**envelope, "proof": {**envelope["proof"], "proofValue": signed(m, SigningKey.generate())["proof"][
        "proofValue"]}}
    with pytest.raises(mf.ManifestError, match="signature"):
        mf.verify_envelope(forged, m, document, BINDING)
    other = msgspec.structs.replace(BINDING, agreement_id="urn:uuid:b")
    with pytest.raises(mf.ManifestError, match="another"):
        mf.verify_envelope(envelope, m, document, other)
    with pytest.raises(mf.ManifestError, match="does not sign"):
        mf.verify_envelope(envelope, build(os.urandom(5000)), document, BINDING)
    tampered = {**envelope, "consumer": "did:web:thief.example"}
    with pytest.raises(mf.ManifestError):
        mf.verify_envelope(tampered, m, document)
