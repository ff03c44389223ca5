from __future__ import annotations

import pytest

from connector.logging import configure
from connector.testing import NodeFactory

# Tests log JSON lines like a running node (and never render tracebacks with their locals).
configure("debug")


@pytest.fixture(autouse=True)
def json_logs_down_to_debug():
    """Every test starts with the logging above, whatever an earlier one configured (a CLI command run in
    the test process configures the level its node's config names)."""
    configure("debug")


@pytest.fixture
async def nodes(tmp_path):
    """Nodes on 127.0.0.1 in the test's folder, all stopped at the end; every DSP message they sent must
    validate against the DSP 2025-1 schemas."""
    factory = NodeFactory(tmp_path)
    yield factory
    await factory.close()
    assert factory.invalid == [], "messages that do not validate against the DSP schemas"
