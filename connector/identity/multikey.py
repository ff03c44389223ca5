"""Multibase / multicodec encodings of public keys (W3C Controlled Identifiers, "Multikey").

A Multikey is ``z`` + base58btc(multicodec varint prefix + raw key bytes). Ed25519 public keys use the
prefix ``0xed 0x01``, X25519 public keys ``0xec 0x01`` and Ed25519 private keys ``0x80 0x26``.
"""

from __future__ import annotations

import functools

import base58

ED25519_PUB = b"\xed\x01"
X25519_PUB = b"\xec\x01"
ED25519_PRIV = b"\x80\x26"

_KEY_LENGTH = 32


class MultikeyError(ValueError):
    """A multibase string that is not the expected kind of key."""


_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # Bitcoin's
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # the 58**2 two-digit strings, in order


def encode_multibase(data: bytes) -> str:
    """Multibase base58btc: the ``z`` prefix followed by base58 (Bitcoin alphabet).

    The same characters as ``base58.b58encode`` (the tests compare them), in a quarter of the time: the number is
    cut into base-58**5 digits (each a small int), and each into one character and two pairs looked up. Every
    signature the node makes ends here."""
    n = int.from_bytes(data, "big")
    chunks = []
    while n:
        n, chunk = divmod(n, 656_356_768)  # 58**5
        top, rest = divmod(chunk, 11_316_496)  # 58**4
        mid, low = divmod(rest, 3364)  # 58**2
        chunks.append(_ALPHABET[top] + _PAIRS[mid] + _PAIRS[low])
    # Leading zero bytes are written as "1"s (the digit zero), one each; the number itself starts at its first
    # digit that is not zero.
    return "z" + "1" * (len(data) - len(data.lstrip(b"\0"))) + "".join(reversed(chunks)).lstrip("1")


def decode_multibase(value: str) -> bytes:
    if not value.startswith("z"):
        raise MultikeyError("only base58btc multibase (prefix 'z') is supported")
    try:
        return bytes(base58.b58decode(value[1:]))
    except ValueError as exc:
        raise MultikeyError(f"not base58btc: {exc}") from exc


@functools.lru_cache(maxsize=1024)  # a node meets the same few keys over and over (each signature checked)
def encode_multikey(prefix: bytes, key: bytes) -> str:
    if len(key) != _KEY_LENGTH:
        raise MultikeyError(f"expected a {_KEY_LENGTH}-byte key, got {len(key)} bytes")
    return encode_multibase(prefix + key)


@functools.lru_cache(maxsize=1024)
def decode_multikey(value: str, prefix: bytes) -> bytes:
    """Return the raw key bytes of a Multikey, checking its multicodec prefix and length."""
    raw = decode_multibase(value)
    if not raw.startswith(prefix) or len(raw) != len(prefix) + _KEY_LENGTH:
        raise MultikeyError("wrong multicodec prefix or key length")
    return raw[len(prefix) :]
