"""Multibase / multicodec encodings of public keys (W3C Controlled Identifiers, "Multikey").

A Multikey is ``z`` + base58btc(multicodec varint prefix + raw key bytes). Ed25519 public keys use the
prefix ``0xed 0x01``, X25519 public keys ``0xec 0x01`` and Ed25519 private keys ``0x80 0x26``.
"""

from __future__ import annotations

import base58

ED25519_PUB = b"\xed\x01"
X25519_PUB = b"\xec\x01"
ED25519_PRIV = b"\x80\x26"

_KEY_LENGTH = 32


class MultikeyError(ValueError):
    """A multibase string that is not the expected kind of key."""


def encode_multibase(data: bytes) -> str:
    """Multibase base58btc: the ``z`` prefix followed by base58 (Bitcoin alphabet)."""
    return "z" + base58.b58encode(data).decode("ascii")


def decode_multibase(value: str) -> bytes:
    if not value.startswith("z"):
        raise MultikeyError("only base58btc multibase (prefix 'z') is supported")
    try:
        return bytes(base58.b58decode(value[1:]))
    except ValueError as exc:
        raise MultikeyError(f"not base58btc: {exc}") from exc


def encode_multikey(prefix: bytes, key: bytes) -> str:
    if len(key) != _KEY_LENGTH:
        raise MultikeyError(f"expected a {_KEY_LENGTH}-byte key, got {len(key)} bytes")
    return encode_multibase(prefix + key)


def decode_multikey(value: str, prefix: bytes) -> bytes:
    """Return the raw key bytes of a Multikey, checking its multicodec prefix and length."""
    raw = decode_multibase(value)
    if not raw.startswith(prefix) or len(raw) != len(prefix) + _KEY_LENGTH:
        raise MultikeyError("wrong multicodec prefix or key length")
    return raw[len(prefix) :]
