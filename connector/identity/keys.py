"""A participant's key pair files: an Ed25519 signing key and a separate X25519 key-agreement key.

Keys are 32-byte seeds stored raw in files with mode 0600 in the node's data folder. They are never
logged: ``repr`` of :class:`ParticipantKeys` shows only fingerprints.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from connector.identity.multikey import ED25519_PUB, X25519_PUB, encode_multikey

SIGNING_FILE = "ed25519.key"
AGREEMENT_FILE = "x25519.key"


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
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); expected 0600")
    data = path.read_bytes()
    if len(data) != 32:
        raise ValueError(f"{path} does not hold a 32-byte key")
    return data


def save_keys(folder: Path, keys: ParticipantKeys) -> None:
    """Write both keys into *folder* (mode 0600). Refuses to overwrite existing keys."""
    _write_secret(folder / SIGNING_FILE, bytes(keys.signing))
    _write_secret(folder / AGREEMENT_FILE, bytes(keys.agreement))


def load_keys(folder: Path) -> ParticipantKeys:
    return ParticipantKeys(
        SigningKey(_read_secret(folder / SIGNING_FILE)), PrivateKey(_read_secret(folder / AGREEMENT_FILE))
    )
