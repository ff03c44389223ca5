"""The backup archive's format (pure: bytes in, bytes out; no file system, no clock).

A backup file is::

    MAGIC                          b"TDS-BACKUP\\n"
    u16 (big-endian) + header      JSON, at most 4 KiB, not secret: how the stream key is had, e.g.
                                   {"format": 1, "kdf": {"algorithm": "argon2id13", "opslimit": 3,
                                                         "memlimit": 268435456, "salt": B64}}
                                   {"format": 1, "recipient": {"publicKey": MULTIKEY, "sealedKey": B64}}
    stream header                  24 bytes: libsodium's crypto_secretstream_xchacha20poly1305 header
    frames                         u32 (big-endian) length + that many bytes of secretstream ciphertext:
      frame 0                        the description (JSON); its associated data is everything above the
                                     stream header, so the header cannot be changed unnoticed
      frames 1 … n-1                 the data folder as a POSIX pax tar stream, cut into pieces of 1 MiB
      frame n                        the closing record (JSON), tagged FINAL; nothing may follow it

The key comes from a passphrase (Argon2id, libsodium's "moderate" limits) or is random and sealed to an
X25519 public key (libsodium's sealed box), so that a machine that makes backups cannot read them. Every
frame is authenticated and the stream is ordered: a reordered, dropped, changed or cut frame fails to open,
and an archive without its FINAL frame is known to be cut short. No cryptography here is our own: PyNaCl's
bindings of libsodium do all of it.

Reading is bounded everywhere: the header's size and KDF limits, each frame's size, the tar headers (pax
extended headers at most 64 KiB; only regular files and folders; names that stay inside the folder being
restored). :func:`check_name` says which names a data folder's backup may hold.
"""

from __future__ import annotations

import base64
import json
import struct
import tarfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nacl.bindings as sodium
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.pwhash import argon2id
from nacl.utils import random as random_bytes

from connector.errors import BackupError
from connector.identity.multikey import X25519_PUB, MultikeyError, decode_multikey, encode_multikey

MAGIC = b"TDS-BACKUP\n"
FORMAT = 1
MAX_HEADER = 4096
KEY_SIZE = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
STREAM_HEADER_SIZE = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
TAG_SIZE = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
#: Plaintext per frame (the tar stream is cut into pieces of this size).
FRAME_SIZE = 1024 * 1024
#: The most a frame may hold, ciphertext: a longer length field is a damaged or hostile archive.
MAX_FRAME = FRAME_SIZE + TAG_SIZE
_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL

#: Argon2id limits a backup is written with: libsodium's "moderate" (about a second and 256 MiB here).
OPSLIMIT = argon2id.OPSLIMIT_MODERATE
MEMLIMIT = argon2id.MEMLIMIT_MODERATE
#: The most a backup's header may ask of the machine that restores it ("sensitive" is 4 and 1 GiB).
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1024 * 1024 * 1024
#: A passphrase shorter than this is refused when a backup is made.
MIN_PASSPHRASE = 12

#: A pax extended header larger than this is refused (ours hold a long name and perhaps a size).
MAX_PAX = 64 * 1024
BLOCK = tarfile.BLOCKSIZE
#: What a data folder holds at its top (everything else there is not the node's and is not backed up).
TOP_FILES = frozenset({"tds.toml", "tds.db", "management.token", "admin.token"})
TOP_FOLDERS = frozenset({"keys", "vault", "files"})
MAX_NAME = 1024
MAX_DEPTH = 32


# -- the header and the key ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kdf:
    """How a passphrase becomes the stream key (Argon2id, libsodium's ``crypto_pwhash``)."""

    salt: bytes
    opslimit: int = OPSLIMIT
    memlimit: int = MEMLIMIT


@dataclass(frozen=True)
class Recipient:
    """The stream key sealed to an X25519 public key (libsodium's sealed box)."""

    public_key: bytes
    sealed_key: bytes


@dataclass(frozen=True)
class Header:
    """What precedes the encrypted stream: how to get its key. Not secret."""

    kdf: Kdf | None = None
    recipient: Recipient | None = None

    @property
    def public_key(self) -> str | None:
        """The multikey of the public key the archive is encrypted to (None: a passphrase)."""
        return None if self.recipient is None else encode_multikey(X25519_PUB, self.recipient.public_key)

    def encode(self) -> bytes:
        """The bytes before the stream header (also the first frame's associated data)."""
        body: dict[str, Any] = {"format": FORMAT}
        if self.kdf is not None:
            body["kdf"] = {"algorithm": "argon2id13", "opslimit": self.kdf.opslimit, "memlimit": self.kdf.memlimit,
                           "salt": _b64(self.kdf.salt)}
        if self.recipient is not None:
            body["recipient"] = {"publicKey": self.public_key, "sealedKey": _b64(self.recipient.sealed_key)}
        raw = json.dumps(body, separators=(",", ":")).encode()
        return MAGIC + struct.pack(">H", len(raw)) + raw

    def key_from_passphrase(self, passphrase: str) -> bytes:
        """The stream key (a second or so: Argon2id). Raises :class:`BackupError` if the archive is sealed to a
        public key instead."""
        if self.kdf is None:
            raise BackupError(f"this backup is encrypted to the public key {self.public_key}, not with a passphrase: "
                              "give --private-key FILE (the key file made by `tds backup keygen`)")
        return derive_key(passphrase, self.kdf)

    def key_from_private_key(self, private_key: bytes) -> bytes:
        """The stream key, unsealed with the X25519 private key. Raises :class:`BackupError` for a passphrase
        archive or another key."""
        if self.recipient is None:
            raise BackupError("this backup is encrypted with a passphrase, not to a public key: leave out "
                              "--private-key (the passphrase is asked for, or read from --passphrase-env)")
        secret = PrivateKey(private_key)
        if bytes(secret.public_key) != self.recipient.public_key:
            given = encode_multikey(X25519_PUB, bytes(secret.public_key))
            raise BackupError(f"this backup is encrypted to the public key {self.public_key}; the private key "
                              f"given belongs to {given}")
        try:
            key = SealedBox(secret).decrypt(self.recipient.sealed_key)
        except CryptoError as exc:
            raise BackupError("the backup's sealed key does not open with this private key (damaged archive)") from exc
        if len(key) != KEY_SIZE:
            raise BackupError("the backup's sealed key has the wrong length (damaged archive)")
        return key


def derive_key(passphrase: str, kdf: Kdf) -> bytes:
    """Argon2id of the passphrase (its Unicode NFC form, UTF-8: the same characters typed on another
    system give the same key)."""
    secret = unicodedata.normalize("NFC", passphrase).encode()
    return bytes(argon2id.kdf(KEY_SIZE, secret, kdf.salt, opslimit=kdf.opslimit, memlimit=kdf.memlimit))


def check_passphrase(passphrase: str) -> None:
    """Refuse a passphrase too short to stand against guessing (the archive may be kept anywhere)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")


def passphrase_header(passphrase: str, *, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT) -> tuple[Header, bytes]:
    """A new archive's header for a passphrase, and its stream key."""
    kdf = Kdf(random_bytes(argon2id.SALTBYTES), opslimit, memlimit)
    return Header(kdf=kdf), derive_key(passphrase, kdf)


def recipient_header(public_key: bytes) -> tuple[Header, bytes]:
    """A new archive's header for an X25519 public key, and its (random) stream key."""
    key = random_bytes(KEY_SIZE)
    sealed = SealedBox(PublicKey(public_key)).encrypt(key)
    return Header(recipient=Recipient(public_key, bytes(sealed))), key


def header_length(first: bytes) -> int:
    """The length of the JSON header, from the file's first ``len(MAGIC) + 2`` bytes."""
    if len(first) < len(MAGIC) + 2 or not first.startswith(MAGIC):
        raise BackupError("not a TDS Connector backup (its first bytes are not the backup format's)")
    (length,) = struct.unpack(">H", first[len(MAGIC):len(MAGIC) + 2])
    if not 0 < length <= MAX_HEADER:
        raise BackupError(f"the backup's header is {length} bytes long (at most {MAX_HEADER}): damaged archive")
    return int(length)


def parse_header(prefix: bytes) -> Header:
    """The header from the bytes before the stream header (magic, length, JSON), every value checked and
    bounded (a hostile header must not make the restoring machine spend unbounded memory or time)."""
    length = header_length(prefix)
    raw = prefix[len(MAGIC) + 2:]
    if len(raw) != length:
        raise BackupError("the backup is cut short inside its header")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BackupError("the backup's header is not JSON: damaged archive") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        found = body.get("format") if isinstance(body, dict) else None
        raise BackupError(f"the backup's format is {found!r}; this release reads format {FORMAT}")
    kdf, recipient = body.get("kdf"), body.get("recipient")
    if (kdf is None) == (recipient is None):
        raise BackupError("the backup's header names neither a passphrase nor a public key (or both)")
    if kdf is not None:
        return Header(kdf=_parse_kdf(kdf))
    return Header(recipient=_parse_recipient(recipient))


def _parse_kdf(value: Any) -> Kdf:
    if not isinstance(value, dict) or value.get("algorithm") != "argon2id13":
        raise BackupError("the backup's key derivation is not Argon2id")
    ops, mem = value.get("opslimit"), value.get("memlimit")
    if not isinstance(ops, int) or not argon2id.OPSLIMIT_MIN <= ops <= MAX_OPSLIMIT:
        raise BackupError(f"the backup's Argon2id opslimit {ops!r} is outside {argon2id.OPSLIMIT_MIN}…{MAX_OPSLIMIT}")
    if not isinstance(mem, int) or not argon2id.MEMLIMIT_MIN <= mem <= MAX_MEMLIMIT:
        raise BackupError(f"the backup's Argon2id memlimit {mem!r} is outside {argon2id.MEMLIMIT_MIN}…{MAX_MEMLIMIT}")
    salt = _unb64(value.get("salt"), "salt")
    if len(salt) != argon2id.SALTBYTES:
        raise BackupError("the backup's salt has the wrong length")
    return Kdf(salt, ops, mem)


def _parse_recipient(value: Any) -> Recipient:
    if not isinstance(value, dict) or not isinstance(value.get("publicKey"), str):
        raise BackupError("the backup's recipient names no public key")
    try:
        public = decode_multikey(value["publicKey"], X25519_PUB)
    except MultikeyError as exc:
        raise BackupError(f"the backup's recipient key is not an X25519 multikey: {exc}") from exc
    sealed = _unb64(value.get("sealedKey"), "sealedKey")
    if len(sealed) != KEY_SIZE + sodium.crypto_box_SEALBYTES:
        raise BackupError("the backup's sealed key has the wrong length")
    return Recipient(public, sealed)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 256:
        raise BackupError(f"the backup's {what} is missing or too long")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise BackupError(f"the backup's {what} is not base64") from exc


# -- public keys given by an operator ---------------------------------------------------------------------


def parse_public_key(text: str) -> bytes:
    """An X25519 public key written as a multikey (``z6LS…``, what ``tds backup keygen`` prints) or as
    base64 of its 32 bytes."""
    value = text.strip()
    if value.startswith("z"):
        try:
            return decode_multikey(value, X25519_PUB)
        except MultikeyError as exc:
            raise BackupError(f"not an X25519 public key multikey: {exc}") from exc
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise BackupError("a public key is a multikey (z6LS…) or base64 of 32 bytes") from exc
    if len(raw) != KEY_SIZE:
        raise BackupError(f"a public key has 32 bytes, this one {len(raw)}")
    return raw


KEY_FILE_FORMAT = "tds-backup-private-key-1"
MAX_KEY_FILE = 4096


def private_key_file(private_key: PrivateKey) -> bytes:
    """The content of a backup private key file (JSON: the key, base64, and its public key's multikey)."""
    record = {"format": KEY_FILE_FORMAT, "privateKey": _b64(bytes(private_key)),
              "publicKey": encode_multikey(X25519_PUB, bytes(private_key.public_key))}
    return (json.dumps(record, indent=1) + "\n").encode()


def parse_private_key_file(raw: bytes) -> bytes:
    """The X25519 private key from a key file made by :func:`private_key_file`."""
    try:
        record = json.loads(raw) if len(raw) <= MAX_KEY_FILE else None
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("format") != KEY_FILE_FORMAT:
        raise BackupError("not a backup private key file (made by `tds backup keygen`)")
    key = _unb64(record.get("privateKey"), "private key")
    if len(key) != KEY_SIZE:
        raise BackupError("the key file's private key has the wrong length")
    return key


def is_private_key_file(raw: bytes) -> bool:
    try:
        parse_private_key_file(raw)
    except BackupError:
        return False
    return True


# -- the encrypted stream -----------------------------------------------------------------------------------


class Sealer:
    """Encrypts an archive's frames in order (libsodium secretstream)."""

    def __init__(self, key: bytes, header: Header) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self.stream_header = bytes(sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key))
        self._ad: bytes | None = header.encode()
        self.closed = False

    def prefix(self) -> bytes:
        """What the file starts with: the header, then the stream header."""
        assert self._ad is not None, "prefix() comes before the first frame"
        return self._ad + self.stream_header

    def frame(self, plaintext: bytes, *, final: bool = False) -> bytes:
        """One frame (length, ciphertext) of at most :data:`FRAME_SIZE` plaintext bytes; the first one carries
        the header as associated data, the last one (*final*) closes the stream."""
        if self.closed:
            raise BackupError("the archive is already closed")
        if len(plaintext) > FRAME_SIZE:
            raise ValueError(f"a frame holds at most {FRAME_SIZE} bytes")
        ad, self._ad = self._ad, None
        sealed = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, plaintext, ad,
                                                                   _FINAL if final else _MESSAGE)
        self.closed = final
        return struct.pack(">I", len(sealed)) + sealed


class Opener:
    """Decrypts an archive's frames in order; every one is checked."""

    def __init__(self, key: bytes, header: Header, stream_header: bytes) -> None:
        if len(stream_header) != STREAM_HEADER_SIZE:
            raise BackupError("the backup is cut short before its first frame")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, stream_header, key)
        self._ad: bytes | None = header.encode()
        self.index = 0
        self.finished = False

    def open(self, ciphertext: bytes) -> tuple[bytes, bool]:
        """The plaintext of the next frame and whether it is the last. The first frame failing to open means
        the wrong key (a wrong passphrase, another private key) or a changed header; a later one, damage."""
        if self.finished:
            raise BackupError("the backup has data after its end: damaged or tampered with")
        ad, self._ad = self._ad, None
        try:
            plaintext, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, ciphertext, ad)
        except (CryptoError, ValueError) as exc:
            if self.index == 0:
                raise BackupError("wrong passphrase or key: the backup does not open with it (or its header was "
                                  "changed)") from exc
            raise BackupError(f"the backup is damaged or was tampered with (frame {self.index} does not "
                              "open)") from exc
        self.index += 1
        self.finished = tag == _FINAL
        return bytes(plaintext), self.finished


def frame_length(raw: bytes) -> int:
    """A frame's length from its 4-byte length field, bounded."""
    if len(raw) != 4:
        raise BackupError("the backup is cut short: its last frame is missing (the backup did not finish, or "
                          "the file was truncated)")
    (length,) = struct.unpack(">I", raw)
    if not TAG_SIZE <= length <= MAX_FRAME:
        raise BackupError(f"the backup has a frame of {length} bytes (at most {MAX_FRAME}): damaged archive")
    return int(length)


def encode_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def decode_record(raw: bytes, what: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise BackupError(f"the backup's {what} is not JSON: damaged archive") from exc
    if not isinstance(record, dict):
        raise BackupError(f"the backup's {what} is not a JSON object: damaged archive")
    return record


# -- the tar stream -----------------------------------------------------------------------------------------


def file_header(name: str, size: int, mtime: float) -> bytes:
    """The tar header (pax) of a regular file of *size* bytes; its bytes and :func:`padding` follow."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, int(mtime), 0o600, tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def folder_header(name: str, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.type = int(mtime), 0o700, tarfile.DIRTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


#: Two zero blocks end a tar stream.
END = b"\0" * (2 * BLOCK)


@dataclass(frozen=True)
class Member:
    """A checked entry of the tar stream: a regular file (with its size) or a folder."""

    name: str
    folder: bool
    size: int


def next_member(read: Callable[[int], bytes]) -> Member | None:
    """The next entry of a tar stream, read with *read* (exactly *n* bytes, or fewer only at its end); None at
    the end of the stream. Only regular files and folders are accepted, with pax extended headers of at most
    :data:`MAX_PAX` bytes; links, devices, fifos, GNU long names and global headers are refused, and every name
    is checked by :func:`check_name`. The caller reads the member's bytes (``size``, then padding)."""
    pax: dict[str, str] = {}
    while True:
        block = read(BLOCK)
        if len(block) < BLOCK:
            raise BackupError("the backup's file list ends in the middle of an entry: damaged archive")
        if block == b"\0" * BLOCK:
            if pax:
                raise BackupError("the backup's file list ends after an extended header: damaged archive")
            return None
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError) as exc:
            raise BackupError(f"the backup's file list has a damaged entry header ({exc})") from exc
        if info.type == tarfile.XHDTYPE:
            if pax or not 0 <= info.size <= MAX_PAX:
                raise BackupError(f"the backup has an extended header of {info.size} bytes (at most {MAX_PAX}), "
                                  "or two in a row")
            data = read(info.size + (-info.size % BLOCK))
            if len(data) < info.size:
                raise BackupError("the backup's file list ends inside an extended header: damaged archive")
            pax = _pax_records(data[:info.size])
            continue
        name = pax.get("path", info.name)
        size = info.size
        if "size" in pax:
            if not pax["size"].isdigit() or len(pax["size"]) > 20:
                raise BackupError(f"the backup gives {name!r} the size {pax['size']!r}")
            size = int(pax["size"])
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            return Member(check_name(name, folder=False), False, size)
        if info.type == tarfile.DIRTYPE:
            if size:
                raise BackupError(f"the backup's folder {name!r} claims {size} bytes")
            return Member(check_name(name.rstrip("/"), folder=True), True, 0)
        kind = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a device",
                tarfile.BLKTYPE: "a device", tarfile.FIFOTYPE: "a fifo", tarfile.XGLTYPE: "a global header",
                tarfile.GNUTYPE_LONGNAME: "a GNU long name", tarfile.GNUTYPE_LONGLINK: "a GNU long link",
                tarfile.GNUTYPE_SPARSE: "a sparse file"}.get(info.type, f"an entry of type {info.type!r}")
        raise BackupError(f"the backup holds {kind} ({name!r}); a backup holds only files and folders")


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a pax extended header (``LENGTH KEY=VALUE\\n``, POSIX.1-2001 §pax), checked."""
    records: dict[str, str] = {}
    at = 0
    while at < len(data):
        space = data.find(b" ", at, at + 21)
        if space < 0 or not data[at:space].isdigit():
            raise BackupError("the backup has a damaged extended header")
        length = int(data[at:space])
        record = data[space + 1:at + length]
        if length <= space - at or at + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise BackupError("the backup has a damaged extended header")
        key, _, value = record[:-1].partition(b"=")
        try:
            records[key.decode()] = value.decode()
        except UnicodeDecodeError as exc:
            raise BackupError("the backup has an extended header that is not UTF-8") from exc
        at += length
    return records


def check_name(name: str, *, folder: bool) -> str:
    """*name* if a data folder's backup may hold it: a relative path of plain components (no ``..``, ``.``,
    empty part, backslash or NUL), at most :data:`MAX_DEPTH` deep and :data:`MAX_NAME` characters long, that
    is one of the files a data folder holds at its top, one of its folders (``keys``, ``vault``, ``files``)
    or lies in one of them. Raises :class:`BackupError` otherwise: nothing is ever written outside the
    restored folder."""
    parts = name.split("/")
    if (not name or len(name) > MAX_NAME or name.startswith("/") or "\\" in name or "\0" in name
            or len(parts) > MAX_DEPTH or any(p in ("", ".", "..") for p in parts)):
        raise BackupError(f"the backup holds the path {name[:200]!r}, which would leave the restored folder or is "
                          "not a plain relative path")
    if len(parts) == 1 and parts[0] not in (TOP_FOLDERS if folder else TOP_FILES):
        raise BackupError(f"the backup holds {name[:200]!r}, which is not part of a node's data folder")
    if len(parts) > 1 and parts[0] not in TOP_FOLDERS:
        raise BackupError(f"the backup holds {name[:200]!r}, which is not in a folder of a node's data folder")
    return name
