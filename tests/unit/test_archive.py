"""The backup archive's format: header, key, sealed frames and the tar entries a restore accepts (no file system)."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import unicodedata

import pytest
from nacl.public import PrivateKey
from nacl.pwhash import argon2id

from connector import archive
from connector.errors import BackupError
from connector.identity.multikey import X25519_PUB, encode_multikey

# The cheapest Argon2id the format allows: what is tested here is the format, not the work factor.
CHEAP = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}


def sealed_stream(key: bytes, header: archive.Header, *pieces: tuple[bytes, bool]) -> tuple[bytes, list[bytes]]:
    sealer = archive.Sealer(key, header)
    return sealer.stream_header, [sealer.frame(p, final=f)[4:] for p, f in pieces]


def test_frames_open_in_order_and_the_last_one_says_so():
    header, key = archive.passphrase_header("a long passphrase", **CHEAP)
    stream_header, frames = sealed_stream(key, header, (b"about", False), (b"tar" * 1000, False), (b"end", True))
    opener = archive.Opener(header.key_from_passphrase("a long passphrase"), header, stream_header)
    assert [opener.open(f) for f in frames] == [(b"about", False), (b"tar" * 1000, False), (b"end", True)]
    with pytest.raises(BackupError, match="data after its end"):
        opener.open(frames[-1])


def test_a_wrong_passphrase_fails_on_the_first_frame():
    header, key = archive.passphrase_header("a long passphrase", **CHEAP)
    stream_header, frames = sealed_stream(key, header, (b"about", False))
    opener = archive.Opener(header.key_from_passphrase("another passphrase"), header, stream_header)
    with pytest.raises(BackupError, match="wrong passphrase"):
        opener.open(frames[0])


def test_the_header_is_bound_to_the_stream():
    header, key = archive.passphrase_header("a long passphrase", **CHEAP)
    stream_header, frames = sealed_stream(key, header, (b"about", False))
    assert header.kdf is not None
    changed = archive.Header(kdf=archive.Kdf(header.kdf.salt, header.kdf.opslimit + 1, header.kdf.memlimit))
    with pytest.raises(BackupError, match="wrong passphrase or key"):  # the same key, another header
        archive.Opener(key, changed, stream_header).open(frames[0])


def test_a_frame_left_out_or_moved_does_not_open():
    header, key = archive.passphrase_header("a long passphrase", **CHEAP)
    stream_header, frames = sealed_stream(key, header, (b"0", False), (b"1", False), (b"2", False), (b"3", True))
    opener = archive.Opener(key, header, stream_header)
    opener.open(frames[0])
    with pytest.raises(BackupError, match="frame 1 does not open"):
        opener.open(frames[2])


def test_the_header_round_trips_and_is_bounded():
    header, _ = archive.passphrase_header("a long passphrase", **CHEAP)
    assert archive.parse_header(header.encode()) == header
    recipient, _ = archive.recipient_header(bytes(PrivateKey.generate().public_key))
    assert archive.parse_header(recipient.encode()) == recipient


def encoded(body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return archive.MAGIC + struct.pack(">H", len(raw)) + raw


SALT = "A" * 22 + "=="


@pytest.mark.parametrize(("body", "message"), [
    ({"format": 2, "kdf": {}}, "format is 2"),
    ({"format": 1}, "neither"),
    ({"format": 1, "kdf": {"algorithm": "scrypt"}}, "not Argon2id"),
    ({"format": 1, "kdf": {"algorithm": "argon2id13", "opslimit": 3, "memlimit": 2**40, "salt": SALT}}, "memlimit"),
    ({"format": 1, "kdf": {"algorithm": "argon2id13", "opslimit": 10**6, "memlimit": 2**20, "salt": SALT}},
     "opslimit"),
    ({"format": 1, "kdf": {"algorithm": "argon2id13", "opslimit": 3, "memlimit": 2**20, "salt": "AAAA"}}, "salt"),
    ({"format": 1, "recipient": {"publicKey": "z6Mk", "sealedKey": "AAAA"}}, "X25519"),
])
def test_a_hostile_header_is_refused_before_any_work(body, message):
    with pytest.raises(BackupError, match=message):
        archive.parse_header(encoded(body))


def test_a_header_longer_than_its_bound_or_not_ours_is_refused():
    with pytest.raises(BackupError, match="at most 4096"):
        archive.header_length(archive.MAGIC + struct.pack(">H", 5000))
    with pytest.raises(BackupError, match="not a TDS Connector backup"):
        archive.header_length(b"PK\x03\x04" + b"\0" * 9)


def test_a_frame_length_is_bounded():
    with pytest.raises(BackupError, match="at most"):
        archive.frame_length(struct.pack(">I", archive.MAX_FRAME + 1))
    with pytest.raises(BackupError, match="cut short"):
        archive.frame_length(b"\0\0")


def test_a_backup_to_a_public_key_opens_with_its_private_key_only():
    secret, other = PrivateKey.generate(), PrivateKey.generate()
    header, key = archive.recipient_header(bytes(secret.public_key))
    assert header.key_from_private_key(bytes(secret)) == key
    with pytest.raises(BackupError, match=f"encrypted to the public key {header.public_key}"):
        header.key_from_private_key(bytes(other))
    with pytest.raises(BackupError, match="--private-key"):
        header.key_from_passphrase("a long passphrase")
    passphrase_header, _ = archive.passphrase_header("a long passphrase", **CHEAP)
    with pytest.raises(BackupError, match="encrypted with a passphrase"):
        passphrase_header.key_from_private_key(bytes(secret))


def test_public_keys_are_read_as_multikeys_or_base64_and_key_files_round_trip():
    secret = PrivateKey.generate()
    public = bytes(secret.public_key)
    import base64

    assert archive.parse_public_key(encode_multikey(X25519_PUB, public)) == public
    assert archive.parse_public_key(base64.b64encode(public).decode() + "\n") == public
    with pytest.raises(BackupError):
        archive.parse_public_key("z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")  # an Ed25519 key
    raw = archive.private_key_file(secret)
    assert archive.parse_private_key_file(raw) == bytes(secret) and archive.is_private_key_file(raw)
    assert not archive.is_private_key_file(encode_multikey(X25519_PUB, public).encode())


def test_a_passphrase_gives_the_same_key_however_its_accents_are_encoded():
    kdf = archive.Kdf(b"\1" * 16, **CHEAP)
    composed = unicodedata.normalize("NFC", "Café-Straße-2026")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed and archive.derive_key(composed, kdf) == archive.derive_key(decomposed, kdf)
    with pytest.raises(BackupError, match="at least 12"):
        archive.check_passphrase("short")


@pytest.mark.parametrize(("name", "folder"), [
    ("tds.toml", False), ("tds.db", False), ("admin.token", False), ("keys", True), ("keys/acme/ed25519.key", False),
    ("vault/parts/urn_uuid_1/.key", False), ("files/acme/.snapshots/qi/0a1b.bin", False), ("files/acme/a b.csv", False),
])
def test_names_of_a_data_folder_are_accepted(name, folder):
    assert archive.check_name(name, folder=folder) == name


@pytest.mark.parametrize(("name", "folder"), [
    ("../evil", False), ("/etc/passwd", False), ("files/../../evil", False), ("files/./x", False),
    ("files//x", False), ("files\\..\\evil", False), ("files/x\0y", False), ("", False), ("evil.sh", False),
    ("keys", False), ("tds.toml", True), ("etc/passwd", False), ("files/" + "a/" * 40 + "x", False),
    ("files/" + "x" * 2000, False),
])
def test_names_that_leave_the_folder_or_are_not_a_data_folders_are_refused(name, folder):
    with pytest.raises(BackupError):
        archive.check_name(name, folder=folder)


def tar_of(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT, **kwargs) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kwargs) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    buf.seek(0)
    return buf


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def members(stream: io.BytesIO) -> list[archive.Member]:
    found = []
    while (member := archive.next_member(stream.read)) is not None:
        stream.read(member.size + len(archive.padding(member.size)))
        found.append(member)
    return found


def test_the_tar_entries_written_are_read_back_with_long_names():
    long = "vault/parts/" + "a" * 150 + "/" + "b" * 150
    stream = io.BytesIO(archive.folder_header("vault", 0) + archive.file_header(long, 3, 0) + b"abc"
                        + archive.padding(3) + archive.END)
    assert members(stream) == [archive.Member("vault", True, 0), archive.Member(long, False, 3)]
    assert members(tar_of(entry("files/x.csv", b"12345"))) == [archive.Member("files/x.csv", False, 5)]


@pytest.mark.parametrize(("built", "message"), [
    (lambda: tar_of(entry("files/link", kind=tarfile.SYMTYPE, linkname="/etc/passwd")), "symbolic link"),
    (lambda: tar_of(entry("files/hard", kind=tarfile.LNKTYPE, linkname="tds.toml")), "hard link"),
    (lambda: tar_of(entry("files/dev", kind=tarfile.CHRTYPE)), "device"),
    (lambda: tar_of(entry("files/fifo", kind=tarfile.FIFOTYPE)), "fifo"),
    (lambda: tar_of(entry("files/x", b"1"), pax_headers={"comment": "global"}), "global header"),
    (lambda: tar_of(entry("files/" + "x" * 200, b"1"), fmt=tarfile.GNU_FORMAT), "GNU long name"),
    (lambda: tar_of(entry("files/x", b"1", pax_headers={"comment": "x" * 70_000})), "extended header"),
    (lambda: tar_of(entry("../evil", b"1")), "would leave"),
])
def test_entries_a_restore_refuses(built, message):
    with pytest.raises(BackupError, match=message):
        members(built())
