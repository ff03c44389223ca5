"""Management route handlers called from inside the node (the web console), not over the wire.

A route handler reads its path parameters and body through :func:`path_param` and :func:`body_of`. A
request from the network carries them itself; a call from the console is a clone of the console's own
request (its token and rate limit checked the same way) that carries them under :data:`CALL` instead, so
the same handler, with the same checks, serves both.
"""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web


class InternalCall(NamedTuple):
    #: The route's path parameters, decoded.
    params: dict[str, str]
    #: The request body (JSON bytes, or empty).
    body: bytes


CALL = web.RequestKey("tds_internal_call", InternalCall)


def path_param(request: web.Request, name: str) -> str:
    """The route's path parameter *name*."""
    call = request.get(CALL)
    return call.params[name] if call is not None else request.match_info[name]


async def body_of(request: web.Request) -> bytes:
    """The request's body."""
    call = request.get(CALL)
    return call.body if call is not None else await request.read()
