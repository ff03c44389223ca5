from __future__ import annotations

import pytest

from connector.testing import NodeFactory


@pytest.fixture
async def nodes(tmp_path):
    factory = NodeFactory(tmp_path)
    yield factory
    await factory.close()
    assert factory.invalid == [], "messages that do not validate against the DSP schemas"
