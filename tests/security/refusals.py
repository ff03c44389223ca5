"""What the security tests that drive a node's management API share: a call that must be refused."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest

from connector.client import ClientError


async def refused(call: Awaitable[Any], status: int) -> ClientError:
    """Await *call*, which must fail with *status*; the error."""
    with pytest.raises(ClientError) as info:
        await call
    assert info.value.status == status, info.value.message
    return info.value
