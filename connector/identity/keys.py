"""A participant's key pair files: an Ed25519 signing key and a separate X25519 key-agreement key.

Keys live in files with mode 0600 in the node's data folder. A node hosts many participants, so each
participant's keys are sealed at rest with the node key (``keys/node.key``, 32 random bytes, 0600):
XSalsa20-Poly1305 (PyNaCl ``SecretBox``), bound to the file's role by its associated name, so a sealed
signing key cannot be swapped for the agreement key unnoticed. A file holding a raw 32-byte seed (written
before the node key existed) is still read. Keys are never logged: ``repr`` of :class:`ParticipantKeys`
shows only fingerprints.

Rotation (:func:`rotate_keys`). A participant's keys can be replaced by new ones; the public keys it used
before stay in ``keyring.json`` beside the key files (not secret), so that its DID document keeps listing
them and what they signed keeps verifying. Key ids count up: the first keys are ``#key-1`` (Ed25519) and
``#key-2`` (X25519), the next ones ``#key-3`` and ``#key-4``, and so on; a folder without ``keyring.json``
holds first keys. The old Ed25519 private key is destroyed at once (nothing signs with it again); the old X25519
private key is kept, sealed, as ``retired-key-N.x25519.key`` until the vault's data keys wrapped under it are
wrapped under the new one (:func:`destroy_retired`), then destroyed too.

Crash safety: the new keys are written beside the current ones (``*.key.new``), then ``keyring.json`` is
replaced in one rename (the commit point), then the new files are renamed over the old ones. A reader picks,
for each role, the file whose public key the committed keyring names, so it reads consistent keys at every
step; :func:`recover` (at node start) drops an uncommitted rotation or finishes a committed one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgspec
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey
from nacl.utils import random as random_bytes

from connector import filemodes
from connector.identity.did import AGREEMENT_KEY_ID, SIGNING_KEY_ID, RetiredKey
from connector.identity.multikey import ED25519_PUB, X25519_PUB, encode_multikey

SIGNING_FILE = "ed25519.key"
AGREEMENT_FILE = "x25519.key"
NODE_KEY_FILE = "node.key"
#: The public record of a participant's keys: current key ids and the keys it used before (not secret).
KEYRING_FILE = "keyring.json"
_KEYRING_FORMAT = "tds-keyring-1"
#: A keyring is small; a participant that rotated more often than this many times is refused (bounds reading).
MAX_KEYRING_BYTES = 256 * 1024
_NEW = ".new"
_KEY_ID = re.compile(r"^key-([1-9][0-9]{0,8})$")
#: Sealed file: magic, then the SecretBox output (24-byte nonce, ciphertext with its 16-byte tag).
SEALED_MAGIC = b"tds-sealed-1\n"
SEED_BYTES = 32


def fingerprint(public_key: bytes) -> str:
    """A short, readable fingerprint of a public key: SHA-256, first 16 bytes, hex in pairs."""
    digest = hashlib.sha256(public_key).hexdigest()[:32]
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True, repr=False)
class ParticipantKeys:
    """A participant's current keys, their ids (DID URL fragments), the public keys it used before and the old
    X25519 private keys still kept (until the vault's data keys are re-wrapped). Immutable: a rotation makes a
    new one, so whoever reads ``participant.keys`` once gets a consistent key and id."""

    signing: SigningKey
    agreement: PrivateKey
    signing_id: str = SIGNING_KEY_ID
    agreement_id: str = AGREEMENT_KEY_ID
    retired: tuple[RetiredKey, ...] = ()
    #: Old X25519 private keys by key id, still needed to open data keys wrapped under them.
    retired_agreement: tuple[tuple[str, PrivateKey], ...] = field(default=(), compare=False)

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
        return f"ParticipantKeys(ed25519={self.fingerprints()['ed25519']}, id={self.signing_id})"

    def next_ids(self) -> tuple[str, str]:
        """The key ids a rotation gives the next signing and key-agreement keys."""
        used = [self.signing_id, self.agreement_id, *(r.id for r in self.retired)]
        top = max(int(m.group(1)) for m in map(_KEY_ID.match, used) if m)
        return f"key-{top + 1}", f"key-{top + 2}"

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


def retired_file(key_id: str) -> str:
    """The file an old X25519 private key is kept in until the vault no longer needs it."""
    return f"retired-{key_id}.x25519.key"


class _Ring(msgspec.Struct, frozen=True):
    """``keyring.json``: the current keys' ids and public keys, and the retired public keys (oldest first)."""

    signing_id: str
    signing: str
    agreement_id: str
    agreement: str
    retired: tuple[RetiredKey, ...]

    def encode(self) -> bytes:
        return json.dumps({
            "format": _KEYRING_FORMAT,
            "signing": {"id": self.signing_id, "publicKeyMultibase": self.signing},
            "agreement": {"id": self.agreement_id, "publicKeyMultibase": self.agreement},
            "retired": [{"id": r.id, "type": r.kind, "publicKeyMultibase": r.multikey, "retired": r.retired}
                        for r in self.retired],
        }, indent=1).encode()


def _read_ring(path: Path) -> _Ring | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_KEYRING_BYTES + 1)
    except FileNotFoundError:
        return None
    try:
        if len(raw) > MAX_KEYRING_BYTES:
            raise ValueError("too large")
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != _KEYRING_FORMAT:
            raise ValueError("not a keyring")
        retired = tuple(RetiredKey(str(r["id"]), str(r["type"]), str(r["publicKeyMultibase"]), str(r["retired"]))
                        for r in data["retired"])
        ring = _Ring(str(data["signing"]["id"]), str(data["signing"]["publicKeyMultibase"]),
                     str(data["agreement"]["id"]), str(data["agreement"]["publicKeyMultibase"]), retired)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable keyring: {exc}") from exc
    ids = [ring.signing_id, ring.agreement_id, *(r.id for r in retired)]
    if not all(_KEY_ID.match(i) for i in ids) or len(set(ids)) != len(ids) or not all(
            r.kind in ("ed25519", "x25519") for r in retired):
        raise ValueError(f"{path} names malformed or repeated key ids")
    return ring


def _pick(folder: Path, name: str, role: str, node_key: bytes | None, want: str | None) -> bytes:
    """The seed of *role*: from *name*, or from ``name.new`` when a committed rotation has not yet renamed it and
    only that one holds the key the keyring names (*want*: its public multikey)."""
    seed = _unseal(folder / name, node_key, role)
    if want is None or _multikey(role, seed) == want:
        return seed
    pending = folder / (name + _NEW)
    if pending.exists():
        seed = _unseal(pending, node_key, role)
        if _multikey(role, seed) == want:
            return seed
    raise ValueError(f"{folder / name} does not hold the {role} key that {folder / KEYRING_FILE} names")


def _multikey(role: str, seed: bytes) -> str:
    if role == "ed25519":
        return encode_multikey(ED25519_PUB, bytes(SigningKey(seed).verify_key))
    return encode_multikey(X25519_PUB, bytes(PrivateKey(seed).public_key))


def load_keys(folder: Path, node_key: bytes | None) -> ParticipantKeys:
    """Read both keys from *folder*, unsealing them with *node_key* (raw seeds are read as they are), with the
    key ids and retired keys of its keyring (first keys when it has none). Reads only: a tool beside a running
    node reads the keys before or after a rotation, or (racing one of its renames) fails; never a mix."""
    ring = _read_ring(folder / KEYRING_FILE)
    signing = SigningKey(_pick(folder, SIGNING_FILE, "ed25519", node_key, ring.signing if ring else None))
    agreement = PrivateKey(_pick(folder, AGREEMENT_FILE, "x25519", node_key, ring.agreement if ring else None))
    if ring is None:
        return ParticipantKeys(signing, agreement)
    kept = []
    for old in ring.retired:
        path = folder / retired_file(old.id)
        if old.kind == "x25519" and path.exists():
            kept.append((old.id, PrivateKey(_unseal(path, node_key, "x25519"))))
    return ParticipantKeys(signing, agreement, ring.signing_id, ring.agreement_id, ring.retired, tuple(kept))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(path: Path, data: bytes) -> None:
    """Write *data* to ``path.tmp`` (0600, synced), then rename it over *path*."""
    tmp = path.with_name(path.name + ".tmp")
    filemodes.write_private(tmp, data)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def recover(folder: Path, node_key: bytes | None) -> None:
    """Finish what a rotation killed midway left in *folder*: before its commit point, its new files go (the
    old keys stay current); after it, the new files take the place of the old ones. Call before the keys are
    used, with no rotation running (at node start)."""
    ring = _read_ring(folder / KEYRING_FILE)
    for name, role in ((SIGNING_FILE, "ed25519"), (AGREEMENT_FILE, "x25519")):
        pending = folder / (name + _NEW)
        if not pending.exists():
            continue
        want = None if ring is None else (ring.signing if role == "ed25519" else ring.agreement)
        if want is not None and _holds(pending, role, want, node_key) and not _holds(
                folder / name, role, want, node_key):
            os.replace(pending, folder / name)  # committed: the new key takes its place
        else:
            pending.unlink()  # not committed (or already in place)
    for leftover in (KEYRING_FILE + ".tmp", KEYRING_FILE + _NEW):
        (folder / leftover).unlink(missing_ok=True)
    listed = {retired_file(r.id) for r in (ring.retired if ring else ()) if r.kind == "x25519"}
    for path in folder.glob("retired-*.x25519.key*"):
        if path.name not in listed:  # a copy made by a rotation that did not commit
            path.unlink()
    _fsync_dir(folder)


def _holds(path: Path, role: str, want: str, node_key: bytes | None) -> bool:
    """Whether *path* holds the key whose public multikey is *want*."""
    try:
        return _multikey(role, _unseal(path, node_key, role)) == want
    except (OSError, ValueError):
        return False


def rotate_keys(folder: Path, node_key: bytes, *, now: str) -> ParticipantKeys:
    """Replace the participant's keys in *folder* with new ones (sealed with *node_key*) and return them.

    The old public keys go into the keyring as retired (dated *now*); the old X25519 private key is kept
    sealed as :func:`retired_file` until :func:`destroy_retired`; the old Ed25519 private key is overwritten
    by the rename. See the module docstring for the order of the steps (crash-safe at every one)."""
    recover(folder, node_key)
    old = load_keys(folder, node_key)
    signing_id, agreement_id = old.next_ids()
    new = ParticipantKeys.generate()
    retired = (*old.retired,
               RetiredKey(old.signing_id, "ed25519", old.signing_multikey, now),
               RetiredKey(old.agreement_id, "x25519", old.agreement_multikey, now))
    ring = _Ring(signing_id, new.signing_multikey, agreement_id, new.agreement_multikey, retired)
    # 1. everything the new state needs, beside the old state (which stays complete and current)
    _write_secret(folder / (SIGNING_FILE + _NEW), _seal(node_key, "ed25519", bytes(new.signing)))
    _write_secret(folder / (AGREEMENT_FILE + _NEW), _seal(node_key, "x25519", bytes(new.agreement)))
    _replace_durably(folder / retired_file(old.agreement_id), _seal(node_key, "x25519", bytes(old.agreement)))
    _fsync_dir(folder)
    # 2. the commit point: from here on the keyring names the new keys, and readers take them
    _replace_durably(folder / KEYRING_FILE, ring.encode())
    _fsync_dir(folder)
    # 3. the new files take the old ones' names (the old Ed25519 private key is gone with it)
    os.replace(folder / (SIGNING_FILE + _NEW), folder / SIGNING_FILE)
    os.replace(folder / (AGREEMENT_FILE + _NEW), folder / AGREEMENT_FILE)
    _fsync_dir(folder)
    return ParticipantKeys(new.signing, new.agreement, signing_id, agreement_id, retired,
                           (*old.retired_agreement, (old.agreement_id, old.agreement)))


def destroy_retired(folder: Path, keys: ParticipantKeys) -> ParticipantKeys:
    """Destroy the old X25519 private keys kept in *folder* (once no data key is wrapped under them any more);
    return *keys* without them."""
    for key_id, _ in keys.retired_agreement:
        (folder / retired_file(key_id)).unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        _fsync_dir(folder)
    return replace(keys, retired_agreement=())


class Signer(msgspec.Struct, frozen=True):
    """Who signs a request to a peer: a participant's key and its DID URL (the RFC 9421 ``keyid``)."""

    key: SigningKey
    key_id: str
