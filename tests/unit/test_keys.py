"""Participant keys are sealed with the node key at rest; raw seeds from before are still read."""

from __future__ import annotations

import os

import pytest

from connector.identity.keys import (
    AGREEMENT_FILE,
    SIGNING_FILE,
    ParticipantKeys,
    load_keys,
    load_node_key,
    save_keys,
)


def test_sealed_round_trip_and_no_seed_on_disk(tmp_path):
    node_key = load_node_key(tmp_path, create=True)
    keys = ParticipantKeys.generate()
    save_keys(tmp_path / "p", keys, node_key)
    for name in (SIGNING_FILE, AGREEMENT_FILE):
        assert (tmp_path / "p" / name).stat().st_mode & 0o777 == 0o600
    assert bytes(keys.signing) not in (tmp_path / "p" / SIGNING_FILE).read_bytes()
    loaded = load_keys(tmp_path / "p", node_key)
    assert loaded.fingerprints() == keys.fingerprints()
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600


def test_another_node_key_cannot_open_them(tmp_path):
    keys = ParticipantKeys.generate()
    save_keys(tmp_path / "p", keys, load_node_key(tmp_path, create=True))
    with pytest.raises(ValueError, match="cannot be opened"):
        load_keys(tmp_path / "p", os.urandom(32))
    with pytest.raises(ValueError, match="no node key"):
        load_keys(tmp_path / "p", None)


def test_swapped_files_are_detected(tmp_path):
    node_key = load_node_key(tmp_path, create=True)
    save_keys(tmp_path / "p", ParticipantKeys.generate(), node_key)
    folder = tmp_path / "p"
    signing = (folder / SIGNING_FILE).read_bytes()
    (folder / SIGNING_FILE).write_bytes((folder / AGREEMENT_FILE).read_bytes())
    (folder / AGREEMENT_FILE).write_bytes(signing)
    with pytest.raises(ValueError, match="ed25519"):
        load_keys(folder, node_key)


def test_raw_seeds_written_before_sealing_are_read(tmp_path):
    keys = ParticipantKeys.generate()
    folder = tmp_path / "p"
    folder.mkdir()
    for name, seed in ((SIGNING_FILE, bytes(keys.signing)), (AGREEMENT_FILE, bytes(keys.agreement))):
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, seed)
        os.close(fd)
    assert load_keys(folder, None).fingerprints() == keys.fingerprints()


def test_keys_readable_by_others_are_refused(tmp_path):
    node_key = load_node_key(tmp_path, create=True)
    save_keys(tmp_path / "p", ParticipantKeys.generate(), node_key)
    os.chmod(tmp_path / "p" / SIGNING_FILE, 0o644)
    with pytest.raises(PermissionError):
        load_keys(tmp_path / "p", node_key)
