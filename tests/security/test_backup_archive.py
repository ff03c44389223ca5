"""Hostile and damaged backups: a restore writes nothing outside its folder, is bounded in bytes and entries,
refuses links and devices, notices every cut, flipped, moved or added byte, and leaves nothing behind."""

from __future__ import annotations

import io
import os
import struct
import tarfile
from pathlib import Path

import pytest
from nacl.pwhash import argon2id

from connector import archive, backup
from connector.bootstrap import init_node
from connector.errors import BackupError

#: The backups are of nodes with an SQLite store (`tds backup` refuses a PostgreSQL one).
pytestmark = pytest.mark.sqlite_store
PASSPHRASE = "a passphrase for tests"
#: The format is under test, not the work factor: the cheapest Argon2id the format accepts.
CHEAP = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}


def key_of(header: archive.Header) -> bytes:
    return header.key_from_passphrase(PASSPHRASE)


@pytest.fixture
def genuine(tmp_path) -> Path:
    """A real backup of a fresh node, with a file in its files/ folder."""
    init_node(tmp_path / "acme", name="acme", port=0, dev_mode=True)
    (tmp_path / "acme" / "files" / "acme" / "qi.csv").write_bytes(b"part,defects\n" * 100_000)
    header, key = archive.passphrase_header(PASSPHRASE, **CHEAP)
    out = tmp_path / "acme.tdsbak"
    backup.make_backup(tmp_path / "acme", out, header, key)
    return out


def everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(tmp_path: Path, archive_file: Path, message: str, **limits: int) -> None:
    """Restoring *archive_file* fails with *message*, and leaves the test's folder as it was."""
    before = everything(tmp_path)
    target = tmp_path / "restored"
    with pytest.raises(BackupError, match=message):
        backup.restore(archive_file, target, key_of, **limits)
    assert not target.exists() and everything(tmp_path) == before


def test_the_genuine_backup_restores(genuine, tmp_path):
    result = backup.restore(genuine, tmp_path / "restored", key_of)
    assert (tmp_path / "restored" / "files" / "acme" / "qi.csv").read_bytes() == b"part,defects\n" * 100_000
    assert result.files == len([p for p in (tmp_path / "restored").rglob("*") if p.is_file()])


def forged(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes], closing: dict | None = None, **tar_options) -> Path:
    """A backup with the right passphrase whose tar stream holds *members* (as anyone with the passphrase, or with
    the public key of a backup sealed to one, can make)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, **tar_options) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    header, key = archive.passphrase_header(PASSPHRASE, **CHEAP)
    sealer = archive.Sealer(key, header)
    raw = bytearray(sealer.prefix())
    raw += sealer.frame(archive.encode_record({"format": 1, "schemaVersion": 1, "participants": []}))
    stream = buf.getvalue()
    for at in range(0, len(stream), archive.FRAME_SIZE):
        raw += sealer.frame(stream[at:at + archive.FRAME_SIZE])
    raw += sealer.frame(archive.encode_record(closing or {"entries": len(members), "deleted": []}), final=True)
    path = tmp_path / "forged.tdsbak"
    path.write_bytes(bytes(raw))
    return path


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


CONFIG = member("tds.toml", b"[node]\n")


@pytest.mark.parametrize(("members", "message"), [
    ([member("../escaped", b"x")], "would leave"),
    ([member("/tmp/escaped-absolute", b"x")], "would leave"),
    ([member("files/../../escaped", b"x")], "would leave"),
    ([member("vault/a/../../../escaped", b"x")], "would leave"),
    ([member("files", kind=tarfile.DIRTYPE), member("files/link", kind=tarfile.SYMTYPE, linkname="/etc"),
      member("files/link/escaped", b"x")], "symbolic link"),
    ([member("files/hard", kind=tarfile.LNKTYPE, linkname="/etc/passwd")], "hard link"),
    ([member("files/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)], "device"),
    ([member("files/pipe", kind=tarfile.FIFOTYPE)], "fifo"),
    ([member("evil.sh", b"#!/bin/sh\n")], "not part of a node's data folder"),
    ([member("tds.toml", kind=tarfile.DIRTYPE)], "not part of a node's data folder"),
    ([member("files", kind=tarfile.DIRTYPE), member("files/a", b"1"), member("files/a", b"2")], "twice"),
    ([member("files/x", b"1", pax_headers={"comment": "x" * 70_000})], "extended header"),
    ([CONFIG], "no tds.toml or no database"),
])
def test_hostile_entries_are_refused_and_nothing_is_left(tmp_path, members, message):
    refused(tmp_path, forged(tmp_path, *members), message)


def test_a_global_header_is_refused(tmp_path):
    refused(tmp_path, forged(tmp_path, member("files/x", b"1"), pax_headers={"comment": "g"}), "global header")


def test_a_backup_larger_than_allowed_is_refused_before_it_is_written(tmp_path):
    big = forged(tmp_path, member("files", kind=tarfile.DIRTYPE), member("files/big", b"\0" * 3_000_000))
    refused(tmp_path, big, "more than 1000000 bytes", max_bytes=1_000_000)


def test_a_backup_with_more_entries_than_allowed_is_refused(tmp_path):
    many = [member("files", kind=tarfile.DIRTYPE)] + [member(f"files/{i}", b"") for i in range(50)]
    refused(tmp_path, forged(tmp_path, *many), "more than 20 entries", max_entries=20)


def test_a_closing_record_that_counts_otherwise_is_refused(tmp_path):
    refused(tmp_path, forged(tmp_path, member("files", kind=tarfile.DIRTYPE), closing={"entries": 7}),
            "closing record counts 7")


def test_a_closing_record_cannot_delete_outside_the_vault(tmp_path):
    refused(tmp_path, forged(tmp_path, member("files", kind=tarfile.DIRTYPE),
                             closing={"entries": 1, "deleted": ["files"]}), "outside the vault")


def frames_of(raw: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Where the frames of an archive start and end: (first frame's offset, [(start, end)])."""
    length = struct.unpack(">H", raw[len(archive.MAGIC):len(archive.MAGIC) + 2])[0]
    at = first = len(archive.MAGIC) + 2 + length + archive.STREAM_HEADER_SIZE
    spans = []
    while at < len(raw):
        size = struct.unpack(">I", raw[at:at + 4])[0]
        spans.append((at, at + 4 + size))
        at += 4 + size
    return first, spans


@pytest.mark.parametrize(("damage", "message"), [
    (lambda raw, spans: raw[:spans[-1][0]], "cut short"),  # the last frame never written
    (lambda raw, spans: raw[:spans[-1][1] - 1], "cut short"),  # cut inside it
    (lambda raw, spans: raw[:spans[1][0] + 100], "cut short"),
    (lambda raw, spans: raw + b"\0", "after its end"),
    (lambda raw, spans: flip(raw, spans[2][0] + 500), "frame 2 does not open"),
    (lambda raw, spans: raw[:spans[1][0]] + raw[spans[2][0]:spans[2][1]] + raw[spans[1][0]:spans[1][1]]
     + raw[spans[2][1]:], "frame 1 does not open"),
    (lambda raw, spans: flip(raw, len(archive.MAGIC) + 10), "backup's header|wrong passphrase"),
    (lambda raw, spans: flip(raw, 0), "not a TDS Connector backup"),
])
def test_damage_anywhere_is_noticed_and_nothing_is_left(genuine, tmp_path, damage, message):
    raw = genuine.read_bytes()
    _, spans = frames_of(raw)
    assert len(spans) >= 4  # description, tar pieces, closing record
    damaged = tmp_path / "damaged.tdsbak"
    damaged.write_bytes(damage(raw, spans))
    refused(tmp_path, damaged, message)


def flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]


def test_a_restore_into_an_existing_empty_folder_leaves_it_empty_when_refused(genuine, tmp_path):
    target = tmp_path / "mounted"
    target.mkdir()
    damaged = tmp_path / "damaged.tdsbak"
    damaged.write_bytes(genuine.read_bytes()[:-10])
    with pytest.raises(BackupError, match="cut short"):
        backup.restore(damaged, target, key_of)
    assert target.is_dir() and os.listdir(target) == []


def test_a_database_that_is_none_is_refused_and_nothing_is_left(tmp_path):
    init_node(tmp_path / "real", name="acme", port=0, dev_mode=True)
    config = (tmp_path / "real" / "tds.toml").read_bytes()
    refused(tmp_path, forged(tmp_path, member("tds.toml", config), member("tds.db", b"not a database" * 100)),
            "database cannot be opened")
