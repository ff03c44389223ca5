"""The vault's file format: received data sealed at rest, chunk by chunk (pure: no I/O).

A vault file is a fixed header followed by sealed chunks::

    header   magic "TDSVAULT" · format version (1 byte) · 3 zero bytes · chunk size (u32, big endian)
             · a random file id (16 bytes)                                            = 32 bytes
    chunk i  AES-256-GCM(plaintext chunk i) + 16-byte tag            (every chunk but the last is full)

Keys. Each agreement's data is sealed under its own random data key (wrapped on disk by the participant's
vault key, see :func:`vault_key` and :func:`connector.payload.sealing.wrap`). One data key seals every file
of its agreement (several transfers, new versions), so it never seals a chunk itself: each file gets its
own key, HKDF-SHA256 of the data key salted with the file's random 128-bit id and bound to the header.
The 96-bit nonce of chunk i is the index itself, so a (key, nonce) pair never seals two different
plaintexts: the file key is unique per file, the index unique within it, and a resumed file re-seals a
chunk only with the same (manifest-verified) bytes. A file started over gets a new id, hence a new key.

Why AES-256-GCM (as on the wire, :mod:`connector.payload.sealing`): the vault seals every byte a node
receives, on the thread that verifies it, so the cipher sits on the pull's critical path. Its short
nonces need no randomness here: keys are per file, nonces counters.

Position and length. The associated data is the header, the chunk index and whether the chunk is the last
one, so chunks cannot be swapped or moved to another file, and a file cut back by whole chunks (or grown)
no longer opens at its end. An empty plaintext is one empty last chunk: a file cut to its header is
detected too.
"""

from __future__ import annotations

import struct

import msgspec

from connector.payload import sealing

MAGIC = b"TDSVAULT"
VERSION = 1
_HEADER = struct.Struct(">8sB3xI16s")
HEADER_SIZE = _HEADER.size
FILE_ID_SIZE = 16
TAG_SIZE = sealing.TAG_SIZE
#: Bounds on a header's chunk size (a damaged header must not make a reader allocate gigabytes).
MIN_CHUNK = 1024
MAX_CHUNK = 16 * 1024 * 1024
_FILE_INFO = b"tds vault file key v1"
_VAULT_INFO = b"tds vault key v1: wraps the data keys of participant "


class VaultFileError(ValueError):
    """Not a vault file, an unknown format version, or a file whose length cannot be one."""


class Header(msgspec.Struct, frozen=True):
    chunk_size: int
    file_id: bytes

    def __post_init__(self) -> None:
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise VaultFileError(f"chunk size {self.chunk_size} is out of bounds ({MIN_CHUNK} to {MAX_CHUNK})")
        if len(self.file_id) != FILE_ID_SIZE:
            raise VaultFileError(f"the file id must be {FILE_ID_SIZE} bytes")

    def encode(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.chunk_size, self.file_id)

    @property
    def sealed_chunk_size(self) -> int:
        return self.chunk_size + TAG_SIZE


def is_vault_file(prefix: bytes) -> bool:
    """Whether *prefix* (the first bytes of a file) starts like a vault file."""
    return prefix[:len(MAGIC)] == MAGIC


def parse_header(raw: bytes) -> Header:
    if len(raw) < HEADER_SIZE or not is_vault_file(raw):
        raise VaultFileError("not a vault file (no vault header)")
    _, version, chunk_size, file_id = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise VaultFileError(f"vault file format {version} is not known here (this node reads {VERSION})")
    return Header(chunk_size, file_id)


def vault_key(agreement_private_key: bytes, participant_id: str) -> bytes:
    """The participant's vault key: HKDF-SHA256 of its X25519 private key, for this one purpose.

    The X25519 key is itself sealed on disk by the node key; the vault key is never stored.
    """
    return sealing.hkdf_sha256(agreement_private_key, salt=None, info=_VAULT_INFO + participant_id.encode())


def file_key(data_key: bytes, header: Header) -> bytes:
    """The key that seals one file's chunks: unique per file, because its random id is the salt."""
    return sealing.hkdf_sha256(data_key, salt=header.file_id, info=_FILE_INFO + header.encode())


def _nonce(index: int) -> bytes:
    return bytes(4) + struct.pack(">Q", index)


def _aad(header: Header, index: int, last: bool) -> bytes:
    return header.encode() + struct.pack(">Q?", index, last)


def seal(key: bytes, header: Header, index: int, plaintext: bytes | memoryview, *, last: bool) -> bytes:
    """Chunk *index* of the file, sealed under its file key (the plaintext plus a 16-byte tag)."""
    if len(plaintext) > header.chunk_size or (not last and len(plaintext) != header.chunk_size):
        raise VaultFileError(f"chunk {index}: only the last chunk may be shorter than {header.chunk_size} bytes")
    return sealing.aead(key).encrypt(_nonce(index), plaintext, _aad(header, index, last))


def open_chunk(key: bytes, header: Header, index: int, sealed: bytes, *, last: bool) -> bytes:
    """The plaintext of chunk *index*; :class:`~connector.payload.sealing.SealError` if it does not open
    as that chunk (wrong key, moved, cut, tampered, or not the last chunk when it should be)."""
    opened = sealing.aead_open(key, _nonce(index), sealed, _aad(header, index, last))
    if opened is None:
        raise sealing.SealError(f"chunk {index} does not open (wrong key, wrong position, cut, or tampered)")
    return opened


def physical_offset(header: Header, plaintext_offset: int) -> int:
    """Where the chunk holding plaintext byte *plaintext_offset* (a chunk boundary) starts in the file."""
    index, rest = divmod(plaintext_offset, header.chunk_size)
    if rest or plaintext_offset < 0:
        raise VaultFileError(f"offset {plaintext_offset} is not at a chunk boundary")
    return HEADER_SIZE + index * header.sealed_chunk_size


def whole_chunks(header: Header, physical_size: int) -> int:
    """How many full-size sealed chunks a (partial) file of *physical_size* bytes holds."""
    return max(0, physical_size - HEADER_SIZE) // header.sealed_chunk_size


class Layout(msgspec.Struct, frozen=True):
    """A complete vault file's shape, from its header and length alone."""

    header: Header
    chunks: int
    size: int  # plaintext bytes

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of sealed chunk *index* in the file."""
        if not 0 <= index < self.chunks:
            raise VaultFileError(f"chunk {index} is not in the file")
        length = min(self.header.chunk_size, self.size - index * self.header.chunk_size) + TAG_SIZE
        return HEADER_SIZE + index * self.header.sealed_chunk_size, length

    def is_last(self, index: int) -> bool:
        return index == self.chunks - 1


def layout(header: Header, physical_size: int) -> Layout:
    body = physical_size - HEADER_SIZE
    chunks = -(-body // header.sealed_chunk_size) if body > 0 else 0
    if chunks == 0 or body - (chunks - 1) * header.sealed_chunk_size < TAG_SIZE:
        raise VaultFileError(f"a vault file of {physical_size} bytes cannot be whole (cut short?)")
    return Layout(header, chunks, body - chunks * TAG_SIZE)


def sealed_size(chunk_size: int, size: int) -> int:
    """The length of the vault file of a *size*-byte plaintext."""
    chunks = max(1, -(-size // chunk_size))
    return HEADER_SIZE + size + chunks * TAG_SIZE
