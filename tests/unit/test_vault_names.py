"""Names in the vault come from ids peers choose (agreements, assets, transfers): they must stay inside it."""

from __future__ import annotations

import pytest

from connector.services.vault import safe_name


@pytest.mark.parametrize(("given", "name"), [
    ("urn:uuid:9f1c-77", "urn_uuid_9f1c-77"),
    ("qi-2026.csv", "qi-2026.csv"),
    (".key", "_key"),  # would replace the agreement's wrapped data key
    ("..", "_."),  # would be the participant's whole vault
    (".", "_"),
    ("", "_"),
    ("../../etc/passwd", "_._.._etc_passwd"),  # no separator survives
    ("a/b\\c\x00d", "a_b_c_d"),
])
def test_peer_chosen_ids_make_plain_names(given, name):
    assert safe_name(given) == name


def test_long_ids_are_cut():
    assert len(safe_name("x" * 1000)) == 150
