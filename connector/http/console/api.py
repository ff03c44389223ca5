"""The console's reads and actions: the management routes, called in-process with the session's token.

Every page and every button goes through the same route handler, with the same checks, as the CLI and the
management API over HTTP (``connector.http.calls``): the token decides the participant, an admin route
refuses a participant's token, a participant's resource another participant holds is 404.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlencode

import msgspec
from aiohttp import web

from connector import jsonbound
from connector.errors import NotFound, TdsError
from connector.http.auth import TOKEN
from connector.http.calls import CALL, InternalCall
from connector.http.management import PREFIX, Handler, Route
from connector.store.repository import Token

#: How long a console request (a live stream) goes on calling with a token before it is authenticated again.
RECHECK_S = 5.0


def segment(value: str) -> str:
    """*value* as one path segment (an id may hold '/', ':' or '%')."""
    return quote(value, safe="")


class ManagementApi:
    """The management routes by method and path template."""

    def __init__(self, table: Sequence[Route]) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for route in table:
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route.path))
            self._routes.append((route.method, re.compile(f"^{pattern}$"), route.handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        for m, pattern, handler in self._routes:
            found = pattern.match(path) if m == method else None
            if found:
                return handler, {k: unquote(v) for k, v in found.groupdict().items()}
        raise NotFound(f"no management route {method} {path}")

    def bound(self, request: web.Request, token: Token,
              recheck: Callable[[], Awaitable[Token]] | None = None) -> BoundApi:
        return BoundApi(self, request, token, recheck)


class BoundApi:
    """The management routes as one token calls them, from inside one console request."""

    def __init__(self, api: ManagementApi, request: web.Request, token: Token,
                 recheck: Callable[[], Awaitable[Token]] | None = None) -> None:
        # aiohttp clones only a request whose body has not been read, and a page reads its posted form after
        # binding: the calls are cloned from this unread copy.
        self._api, self._request, self.token = api, request.clone(), token
        #: Authenticates the token again (a live stream outlasts a revocation otherwise): at most every
        #: :data:`RECHECK_S` seconds, before a call.
        self._recheck, self._checked = recheck, time.monotonic()

    async def get(self, path: str, **query: Any) -> Any:
        return await self.call("GET", path, query=query)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.call("POST", path, body=body)

    async def put(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.call("PUT", path, body=body)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)

    async def call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                   body: dict[str, Any] | None = None) -> Any:
        """The route's JSON answer (None for 204); its refusals raise as the API's do."""
        if self._recheck is not None and time.monotonic() - self._checked >= RECHECK_S:
            self.token = await self._recheck()  # Unauthorized once revoked; 403 once its participant is suspended
            self._checked = time.monotonic()
        handler, params = self._api.match(method, path)
        pairs = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items()
                 if v is not None}
        rel_url = PREFIX + path + (f"?{urlencode(pairs)}" if pairs else "")
        clone = self._request.clone(method=method, rel_url=rel_url,
                                    headers={"Content-Type": "application/json", "Accept": "application/json"})
        clone[TOKEN] = self.token
        clone[CALL] = InternalCall(params, msgspec.json.encode(body) if body is not None else b"")
        response = await handler(clone)
        if not isinstance(response, web.Response):
            raise TdsError("this answer is streamed; use the management API for it")
        if response.status == 204 or not response.body:
            return None
        raw = response.body
        if not isinstance(raw, bytes | bytearray):
            raise TdsError("unexpected answer body")
        if response.content_type != "application/json":
            return bytes(raw)
        return jsonbound.loads(bytes(raw))
