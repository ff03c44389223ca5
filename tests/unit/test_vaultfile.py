"""The vault's file format: sealed chunks behind a header, one key per file (pure)."""

from __future__ import annotations

import os

import pytest
from nacl.public import PrivateKey

from connector.payload import sealing, vaultfile

CHUNK = 4096


def sealed_file(data_key: bytes, plaintext: bytes, *, file_id: bytes | None = None) -> bytes:
    header = vaultfile.Header(CHUNK, file_id or os.urandom(vaultfile.FILE_ID_SIZE))
    key = vaultfile.file_key(data_key, header)
    pieces = [plaintext[i:i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    return header.encode() + b"".join(vaultfile.seal(key, header, i, p, last=i == len(pieces) - 1)
                                      for i, p in enumerate(pieces))


def opened(data_key: bytes, raw: bytes) -> bytes:
    header = vaultfile.parse_header(raw)
    shape = vaultfile.layout(header, len(raw))
    key = vaultfile.file_key(data_key, header)
    out = []
    for index in range(shape.chunks):
        offset, length = shape.span(index)
        out.append(vaultfile.open_chunk(key, header, index, raw[offset:offset + length], last=shape.is_last(index)))
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_round_trip(size):
    data_key, plaintext = sealing.new_data_key(), os.urandom(size)
    raw = sealed_file(data_key, plaintext)
    assert len(raw) == vaultfile.sealed_size(CHUNK, size)
    assert vaultfile.layout(vaultfile.parse_header(raw), len(raw)).size == size
    assert opened(data_key, raw) == plaintext


def test_the_file_holds_no_plaintext():
    plaintext = b"MARKER-inspection-results " * 1000
    raw = sealed_file(sealing.new_data_key(), plaintext)
    assert raw.startswith(vaultfile.MAGIC) and b"MARKER" not in raw


def test_one_data_key_gives_every_file_its_own_key_and_nonces():
    data_key, plaintext = sealing.new_data_key(), b"\0" * (2 * CHUNK)
    first, second = sealed_file(data_key, plaintext), sealed_file(data_key, plaintext)
    h1, h2 = vaultfile.parse_header(first), vaultfile.parse_header(second)
    assert h1.file_id != h2.file_id
    assert vaultfile.file_key(data_key, h1) != vaultfile.file_key(data_key, h2)
    # the same plaintext at the same index never yields the same ciphertext (no key and nonce reused)
    body = slice(vaultfile.HEADER_SIZE, vaultfile.HEADER_SIZE + CHUNK + vaultfile.TAG_SIZE)
    assert first[body] != second[body]


def test_swapped_chunks_do_not_open():
    data_key = sealing.new_data_key()
    raw = sealed_file(data_key, os.urandom(3 * CHUNK))
    size = CHUNK + vaultfile.TAG_SIZE
    a, b = vaultfile.HEADER_SIZE, vaultfile.HEADER_SIZE + size
    swapped = raw[:a] + raw[b:b + size] + raw[a:b] + raw[b + size:]
    with pytest.raises(sealing.SealError):
        opened(data_key, swapped)


def test_a_file_cut_back_by_whole_chunks_does_not_open_at_its_end():
    data_key = sealing.new_data_key()
    raw = sealed_file(data_key, os.urandom(3 * CHUNK + 100))
    cut = raw[:vaultfile.HEADER_SIZE + 2 * (CHUNK + vaultfile.TAG_SIZE)]  # the last chunk gone
    with pytest.raises(sealing.SealError, match="chunk 1"):
        opened(data_key, cut)


def test_a_file_cut_to_its_header_is_not_an_empty_one():
    raw = sealed_file(sealing.new_data_key(), b"")
    with pytest.raises(vaultfile.VaultFileError, match="cut short"):
        vaultfile.layout(vaultfile.parse_header(raw), vaultfile.HEADER_SIZE)


def test_a_file_cut_mid_chunk_does_not_open():
    data_key = sealing.new_data_key()
    raw = sealed_file(data_key, os.urandom(2 * CHUNK))
    with pytest.raises(sealing.SealError):
        opened(data_key, raw[:-5])


def test_a_tampered_byte_does_not_open():
    data_key = sealing.new_data_key()
    raw = bytearray(sealed_file(data_key, os.urandom(2 * CHUNK)))
    raw[vaultfile.HEADER_SIZE + CHUNK + 40] ^= 0x01
    with pytest.raises(sealing.SealError):
        opened(data_key, bytes(raw))


def test_a_changed_header_changes_the_file_key():
    data_key = sealing.new_data_key()
    raw = bytearray(sealed_file(data_key, os.urandom(CHUNK)))
    raw[-vaultfile.TAG_SIZE - CHUNK - 1] ^= 0x01  # the last byte of the file id
    with pytest.raises(sealing.SealError):
        opened(data_key, bytes(raw))


@pytest.mark.parametrize("raw, why", [
    (b"", "not a vault file"),
    (b"PLAINTEXT" * 10, "not a vault file"),
    (vaultfile.MAGIC + bytes([9]) + bytes(23), "format 9"),
    (vaultfile.MAGIC + bytes([1, 0, 0, 0]) + (1 << 30).to_bytes(4, "big") + bytes(16), "out of bounds"),
])
def test_bad_headers_are_refused(raw, why):
    with pytest.raises(vaultfile.VaultFileError, match=why):
        vaultfile.parse_header(raw)


def test_only_the_last_chunk_may_be_short():
    header = vaultfile.Header(CHUNK, bytes(16))
    with pytest.raises(vaultfile.VaultFileError):
        vaultfile.seal(sealing.new_data_key(), header, 0, b"short", last=False)


def test_resume_points_map_to_chunk_starts():
    header = vaultfile.Header(CHUNK, bytes(16))
    assert vaultfile.physical_offset(header, 0) == vaultfile.HEADER_SIZE
    assert vaultfile.physical_offset(header, 2 * CHUNK) == vaultfile.HEADER_SIZE + 2 * (CHUNK + vaultfile.TAG_SIZE)
    with pytest.raises(vaultfile.VaultFileError):
        vaultfile.physical_offset(header, CHUNK + 1)
    partial = vaultfile.HEADER_SIZE + 2 * (CHUNK + vaultfile.TAG_SIZE) + 100  # two whole chunks and a torn one
    assert vaultfile.whole_chunks(header, partial) == 2
    assert vaultfile.whole_chunks(header, 10) == 0


def test_vault_keys_belong_to_one_participant():
    alice, bob = PrivateKey.generate(), PrivateKey.generate()
    key = vaultfile.vault_key(bytes(alice), "alice")
    assert key == vaultfile.vault_key(bytes(alice), "alice")
    assert key != vaultfile.vault_key(bytes(alice), "bob")
    assert key != vaultfile.vault_key(bytes(bob), "alice")
    assert key != bytes(alice)  # derived for this purpose, not the X25519 key itself
    wrapped = sealing.wrap(key, sealing.new_data_key(), "urn:uuid:a1")
    with pytest.raises(sealing.SealError):
        sealing.unwrap(vaultfile.vault_key(bytes(bob), "bob"), wrapped, "urn:uuid:a1")
