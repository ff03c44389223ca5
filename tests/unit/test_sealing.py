"""End-to-end chunk sealing and the vault's key wrapping."""

from __future__ import annotations

import pytest
from nacl.public import PrivateKey

from connector.payload import sealing


def test_consumer_derives_the_providers_transfer_key():
    consumer = PrivateKey.generate()
    key, ephemeral = sealing.sender_key(bytes(consumer.public_key), "urn:uuid:t1")
    assert sealing.recipient_key(consumer, ephemeral, "urn:uuid:t1") == key
    assert sealing.recipient_key(consumer, ephemeral, "urn:uuid:t2") != key  # bound to the transfer


def test_every_transfer_has_its_own_key():
    consumer = PrivateKey.generate()
    first, _ = sealing.sender_key(bytes(consumer.public_key), "urn:uuid:t")
    second, _ = sealing.sender_key(bytes(consumer.public_key), "urn:uuid:t")
    assert first != second  # a fresh ephemeral key each time: index nonces never repeat under one key


def test_wrong_consumer_key_cannot_decrypt():
    consumer, other = PrivateKey.generate(), PrivateKey.generate()
    key, ephemeral = sealing.sender_key(bytes(consumer.public_key), "t")
    sealed = sealing.seal_chunk(key, "t", 0, b"secret inspection data")
    wrong = sealing.recipient_key(other, ephemeral, "t")
    with pytest.raises(sealing.SealError):
        sealing.open_chunk(wrong, "t", 0, sealed)


def test_resealing_a_chunk_is_identical_and_position_bound():
    key = sealing.new_data_key()
    a = sealing.seal_chunk(key, "t", 7, b"chunk seven")
    assert sealing.seal_chunk(key, "t", 7, b"chunk seven") == a  # resume re-sends the same bytes
    assert sealing.open_chunk(key, "t", 7, a) == b"chunk seven"
    with pytest.raises(sealing.SealError):
        sealing.open_chunk(key, "t", 8, a)  # moved to another position
    with pytest.raises(sealing.SealError):
        sealing.open_chunk(key, "other", 7, a)  # moved to another transfer


def test_tampered_ciphertext_is_rejected():
    key = sealing.new_data_key()
    sealed = bytearray(sealing.seal_chunk(key, "t", 0, b"x" * 100))
    sealed[10] ^= 1
    with pytest.raises(sealing.SealError):
        sealing.open_chunk(key, "t", 0, bytes(sealed))


def test_data_key_wrapping_is_bound_to_its_label():
    vault, data = sealing.new_data_key(), sealing.new_data_key()
    wrapped = sealing.wrap(vault, data, "urn:uuid:agreement-1")
    assert sealing.unwrap(vault, wrapped, "urn:uuid:agreement-1") == data
    with pytest.raises(sealing.SealError):
        sealing.unwrap(vault, wrapped, "urn:uuid:agreement-2")
    with pytest.raises(sealing.SealError):
        sealing.unwrap(sealing.new_data_key(), wrapped, "urn:uuid:agreement-1")


@pytest.mark.parametrize("label", ["a\0b", "", "\0", "x" * 500])
def test_any_label_round_trips_and_stays_bound(label):
    vault, data = sealing.new_data_key(), bytes(32)  # an all-zero key: NUL bytes in the key too
    wrapped = sealing.wrap(vault, data, label)
    assert sealing.unwrap(vault, wrapped, label) == data
    with pytest.raises(sealing.SealError):
        sealing.unwrap(vault, wrapped, label + "x")


def test_the_chunk_cipher_and_key_derivation_are_cryptographys_aes_gcm_and_hkdf_sha256():
    # cryptography is imported on first use here: the same primitives, the same bytes as before.
    import os
    import struct

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key, plain = os.urandom(32), os.urandom(5000)
    nonce, aad = bytes(4) + struct.pack(">Q", 7), b"urn:uuid:t\0" + struct.pack(">Q", 7)
    sealed = AESGCM(key).encrypt(nonce, plain, aad)
    assert sealing.seal_chunk(key, "urn:uuid:t", 7, memoryview(plain)) == sealed
    assert sealing.open_chunk(key, "urn:uuid:t", 7, sealed) == plain
    assert sealing.aead_open(key, nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), aad) is None
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"salt", info=b"info").derive(b"secret")
    assert sealing.hkdf_sha256(b"secret", salt=b"salt", info=b"info") == expected
