"""Fixtures for reading the node's documents with another JSON-LD processor: an offline document loader
(``jsonld_offline``) that fails the test on any context asked for that is not local; the nodes are the
suite's (``tests/conftest.py``), whose messages are checked against the DSP schemas."""

from __future__ import annotations

import pytest
from jsonld_offline import OfflineContexts


@pytest.fixture
def loader() -> OfflineContexts:
    offline = OfflineContexts()
    yield offline
    assert offline.refused == [], f"contexts asked for that are not local: {offline.refused}"
