"""A participant's key pair files: an Ed25519 signing key and a separate X25519 key-agreement key.

Keys live in files with mode 0600 in the node's data folder. A node hosts many participants, so each
participant's keys are sealed at rest with the node key (``keys/node.key``, 32 random bytes, 0600):
XSalsa20-Poly1305 (PyNaCl ``SecretBox``), bound to the file's role by its associated name, so a sealed
signing key cannot be swapped for the agreement key unnoticed. A file holding a raw 32-byte seed (written
before the node key existed) is still read. Keys are never logged: ``repr`` of :class:`ParticipantKeys`
shows only fingerprints.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey
from nacl.utils import random as random_bytes

from connector import filemodes
from connector.identity.multikey import ED25519_PUB, X25519_PUB, encode_multikey

SIGNING_FILE = "ed25519.key"
AGREEMENT_FILE = "x25519.key"
NODE_KEY_FILE = "node.key"
#: Sealed file: magic, then the SecretBox output (24-byte nonce, ciphertext with its 16-byte tag).
SEALED_MAGIC = b"tds-sealed-1\n"
SEED_BYTES = 32


def fingerprint(public_key: bytes) -> str:
    """A short, readable fingerprint of a public key: SHA-256, first 16 bytes, hex in pairs."""
    digest = hashlib.sha256(public_key).hexdigest()[:32]
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True, repr=False)
class ParticipantKeys:
    signing: SigningKey
    agreement: PrivateKey

    @property
    def verify_key(self) -> VerifyKey:
        return self.signing.verify_key

    @property
    def agreement_public(self) -> PublicKey:
        return self.agreement.public_key

    @property
    def signing_multikey(self) -> str:
        return encode_multikey(ED25519_PUB, bytes(self.verify_key))

    @property
    def agreement_multikey(self) -> str:
        return encode_multikey(X25519_PUB, bytes(self.agreement_public))

    def fingerprints(self) -> dict[str, str]:
        return {
            "ed25519": fingerprint(bytes(self.verify_key)),
            "x25519": fingerprint(bytes(self.agreement_public)),
        }

    def __repr__(self) -> str:
        return f"ParticipantKeys(ed25519={self.fingerprints()['ed25519']})"

    @classmethod
    def generate(cls) -> ParticipantKeys:
        return cls(SigningKey.generate(), PrivateKey.generate())


def _write_secret(path: Path, data: bytes) -> None:
    filemodes.make_dir(path.parent)  # keys/ and keys/NAME/ 0700, whatever the umask
    fd = filemodes.open_private(path, os.O_WRONLY | os.O_EXCL)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_private(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); expected 0600")
    return path.read_bytes()


def load_node_key(folder: Path, *, create: bool = False) -> bytes:
    """The node key in *folder* (``DATA/keys``); with ``create=True`` it is made if missing."""
    path = folder / NODE_KEY_FILE
    if create and not path.exists():
        _write_secret(path, random_bytes(SecretBox.KEY_SIZE))
    data = _read_private(path)
    if len(data) != SecretBox.KEY_SIZE:
        raise ValueError(f"{path} does not hold a {SecretBox.KEY_SIZE}-byte node key")
    return data


def _seal(node_key: bytes, role: str, seed: bytes) -> bytes:
    # The role goes into the plaintext so that swapping the two files of a participant is detected.
    return SEALED_MAGIC + bytes(SecretBox(node_key).encrypt(role.encode() + b"\0" + seed))


def _unseal(path: Path, node_key: bytes | None, role: str) -> bytes:
    data = _read_private(path)
    if len(data) == SEED_BYTES and not data.startswith(SEALED_MAGIC):
        return data  # written before keys were sealed
    if not data.startswith(SEALED_MAGIC):
        raise ValueError(f"{path} holds neither a sealed key nor a 32-byte seed")
    if node_key is None:
        raise ValueError(f"{path} is sealed but no node key was given")
    try:
        plain = SecretBox(node_key).decrypt(data[len(SEALED_MAGIC):])
    except CryptoError as exc:
        raise ValueError(f"{path} cannot be opened with this node's key") from exc
    label, _, seed = plain.partition(b"\0")
    if label != role.encode() or len(seed) != SEED_BYTES:
        raise ValueError(f"{path} does not hold the participant's {role} key")
    return seed


def save_keys(folder: Path, keys: ParticipantKeys, node_key: bytes) -> None:
    """Write both keys into *folder*, sealed with *node_key* (mode 0600). Refuses to overwrite keys."""
    _write_secret(folder / SIGNING_FILE, _seal(node_key, "ed25519", bytes(keys.signing)))
    _write_secret(folder / AGREEMENT_FILE, _seal(node_key, "x25519", bytes(keys.agreement)))


def load_keys(folder: Path, node_key: bytes | None) -> ParticipantKeys:
    """Read both keys from *folder*, unsealing them with *node_key* (raw seeds are read as they are)."""
    return ParticipantKeys(
        SigningKey(_unseal(folder / SIGNING_FILE, node_key, "ed25519")),
        PrivateKey(_unseal(folder / AGREEMENT_FILE, node_key, "x25519")),
    )


@dataclass(frozen=True)
class Signer:
    """Who signs a request to a peer: a participant's key and its DID URL (the RFC 9421 ``keyid``)."""

    key: SigningKey
    key_id: str
