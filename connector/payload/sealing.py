"""Chunk sealing: end-to-end encryption of a transfer, and encryption of the vault at rest (pure).

End to end (per transfer). The provider makes a fresh X25519 key pair for every transfer and agrees a
secret with the consumer's published X25519 key; HKDF-SHA256 over that secret, salted with the transfer
id and bound to both public keys, gives the transfer key. Each chunk is sealed with XChaCha20-Poly1305
under a nonce made from its index, with the transfer id and the index as associated data: a resumed
transfer re-seals a chunk identically, a chunk cannot be moved to another position or transfer, and no
nonce is ever used twice with one key, because every transfer has its own key. The manifest hashes the
plaintext: the consumer decrypts, verifies, then stores.

At rest (per agreement). Each agreement's data is sealed under its own random data key, itself sealed
(:func:`wrap`) by the participant's vault key. Deleting the data destroys that one key first: the bytes
left on disk, however large, can no longer be read.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
)
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from nacl.secret import SecretBox
from nacl.utils import random

KEY_SIZE = 32
TAG_SIZE = 16
INFO = b"tds transfer key v1"


class SealError(ValueError):
    """A sealed chunk that does not open: wrong key, wrong position, or tampered."""


def _nonce(index: int, domain: bytes) -> bytes:
    # 24 bytes: an 8-byte domain tag (what the key seals), 8 zero bytes, the 8-byte chunk index.
    return domain[:8].ljust(8, b"\0") + bytes(8) + struct.pack(">Q", index)


def _aad(context: str, index: int) -> bytes:
    return context.encode() + b"\0" + struct.pack(">Q", index)


def seal_chunk(key: bytes, context: str, index: int, plaintext: bytes, *, domain: bytes = b"transfer") -> bytes:
    """Ciphertext of chunk *index* (the plaintext plus a 16-byte tag)."""
    return bytes(crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, _aad(context, index), _nonce(index, domain),
                                                            key))


def open_chunk(key: bytes, context: str, index: int, sealed: bytes, *, domain: bytes = b"transfer") -> bytes:
    try:
        return bytes(crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, _aad(context, index), _nonce(index, domain),
                                                                key))
    except CryptoError as exc:
        raise SealError(f"chunk {index} does not open (wrong key, wrong position, or tampered)") from exc


def _derive(shared: bytes, transfer_id: str, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=transfer_id.encode(),
                info=INFO + ephemeral_public + recipient_public)
    return bytes(hkdf.derive(shared))


def sender_key(recipient_public: bytes, transfer_id: str) -> tuple[bytes, bytes]:
    """The provider's side: (transfer key, ephemeral public key to send along)."""
    ephemeral = PrivateKey.generate()
    shared = crypto_scalarmult(bytes(ephemeral), recipient_public)
    public = bytes(ephemeral.public_key)
    return _derive(shared, transfer_id, public, recipient_public), public


def recipient_key(recipient: PrivateKey, ephemeral_public: bytes, transfer_id: str) -> bytes:
    """The consumer's side: the same transfer key, from its X25519 private key."""
    if len(ephemeral_public) != KEY_SIZE:
        raise SealError("the ephemeral public key must be 32 bytes")
    shared = crypto_scalarmult(bytes(recipient), ephemeral_public)
    return _derive(shared, transfer_id, ephemeral_public, bytes(recipient.public_key))


def new_data_key() -> bytes:
    return bytes(random(KEY_SIZE))


def wrap(vault_key: bytes, data_key: bytes, label: str) -> bytes:
    """Seal a data key under the vault key, bound to *label* (e.g. the agreement id)."""
    return bytes(SecretBox(vault_key).encrypt(label.encode() + b"\0" + data_key))


def unwrap(vault_key: bytes, wrapped: bytes, label: str) -> bytes:
    try:
        opened = bytes(SecretBox(vault_key).decrypt(wrapped))
    except CryptoError as exc:
        raise SealError("the data key does not open under this vault key") from exc
    name, sep, key = opened.partition(b"\0")
    if not sep or name != label.encode() or len(key) != KEY_SIZE:
        raise SealError("the data key belongs to something else")
    return key
