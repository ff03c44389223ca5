"""Outbound HTTP to peers: guarded, bounded, and signed when the caller is a participant.

One :class:`PeerClient` per node. It resolves host names through :class:`GuardedResolver`, which
applies the outbound guard (``connector.http.netguard``) to every resolved address, so a name that
points at a private address is refused at connect time. Redirects are followed by hand (GET only, at
most ``max_redirects``, each hop checked again); responses are read up to a byte limit; every call has a
total time limit. Errors become :class:`~connector.errors.PeerError` / ``OutboundRefused``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from nacl.signing import SigningKey

from connector import jsonbound
from connector.errors import OutboundRefused, PeerError
from connector.http import signing
from connector.http.netguard import OutboundPolicy, check_address, check_url

#: How much of a streamed body is buffered before the socket is read again (fewer wake-ups per MiB).
STREAM_BUFFER = 1024 * 1024
_plain_http: contextvars.ContextVar[bool] = contextvars.ContextVar("tds_plain_http", default=False)
#: Set while a request goes to the node's own public origin, which the guard allows (see netguard).
_own_origin: contextvars.ContextVar[bool] = contextvars.ContextVar("tds_own_origin", default=False)


class GuardedResolver(AbstractResolver):
    """Resolve with the system resolver, then drop every address the outbound guard refuses."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if _own_origin.get():
            return list(results)
        allowed: list[ResolveResult] = []
        refusal: OutboundRefused | None = None
        for result in results:
            try:
                check_address(result["host"], self._policy, plain_http=_plain_http.get())
            except OutboundRefused as exc:
                refusal = exc
                continue
            allowed.append(result)
        if not allowed:
            raise refusal or OutboundRefused(f"{host} resolves to no address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Signer:
    """Who signs a request: a participant's key and its DID URL."""

    key: SigningKey
    key_id: str


@dataclass(frozen=True)
class PeerResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        try:
            return jsonbound.loads(self.body)
        except ValueError as exc:
            raise PeerError(f"{self.url} answered {self.status} with a body that is not JSON") from exc


class PeerClient:
    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        max_response_bytes: int = 4 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        #: Trust for outbound HTTPS (``node.tls_ca``); None: the system store.
        self.ssl_context = ssl_context
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_redirects = max_redirects
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), limit=100,
                                             ssl=self.ssl_context if self.ssl_context is not None else True)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        signer: Signer | None = None,
        headers: dict[str, str] | None = None,
    ) -> PeerResponse:
        """Send one request; follow redirects for GET only; return the whole (bounded) response."""
        body = None if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        hops = 0
        while True:
            parts = check_url(url, self.policy)
            send_headers = {"Accept": "application/json", **(headers or {})}
            if body is not None:
                send_headers["Content-Type"] = "application/json"
            if signer is not None:
                send_headers = signing.sign_request(
                    method, url, body, key=signer.key, key_id=signer.key_id, now=time.time(), headers=send_headers
                )
            with self._guarded(method, url, parts):
                async with self.session.request(
                    method, url, data=body, headers=send_headers, allow_redirects=False
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and method == "GET" and "Location" in resp.headers:
                        hops += 1
                        if hops > self.max_redirects:
                            raise PeerError(f"{url}: more than {self.max_redirects} redirects")
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    data = await self._read_bounded(resp, url)
                    return PeerResponse(resp.status, dict(resp.headers), data, url)

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, *, signer: Signer | None = None, headers: dict[str, str] | None = None,
        read_timeout_s: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose body the caller reads as a stream (no size limit, no total time limit: the
        caller bounds what it reads). The outbound guard applies as for :meth:`request`; no redirects;
        a read that stalls for *read_timeout_s* (default: the client's timeout) fails."""
        parts = check_url(url, self.policy)
        send_headers = dict(headers or {})
        if signer is not None:
            send_headers = signing.sign_request("GET", url, None, key=signer.key, key_id=signer.key_id,
                                                now=time.time(), headers=send_headers)
        stall = read_timeout_s or self.timeout.total
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
        with self._guarded("GET", url, parts):
            async with self.session.get(url, headers=send_headers, allow_redirects=False, timeout=timeout,
                                        read_bufsize=STREAM_BUFFER) as resp:
                yield resp

    async def upload(
        self, url: str, body: AsyncIterable[bytes], length: int, *, signer: Signer | None = None,
        headers: dict[str, str] | None = None, read_timeout_s: float | None = None,
    ) -> PeerResponse:
        """A POST whose body of *length* bytes is streamed from *body*; the (bounded) answer is returned.

        Signed without ``content-digest`` (the body is not known when the request is signed: its integrity
        comes from what the caller sends, e.g. chunks checked against a signed manifest). The outbound guard
        applies as for :meth:`request`; no redirects; a stalled write or read fails after *read_timeout_s*.
        """
        parts = check_url(url, self.policy)
        send_headers = {"Accept": "application/json", "Content-Type": "application/octet-stream",
                        **(headers or {})}
        if signer is not None:
            send_headers = signing.sign_request("POST", url, None, key=signer.key, key_id=signer.key_id,
                                                now=time.time(), headers=send_headers)
        send_headers["Content-Length"] = str(length)
        stall = read_timeout_s or self.timeout.total
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
        with self._guarded("POST", url, parts):
            async with self.session.post(url, data=body, headers=send_headers, allow_redirects=False,
                                         timeout=timeout) as resp:
                data = await self._read_bounded(resp, url)
                return PeerResponse(resp.status, dict(resp.headers), data, url)

    @contextlib.contextmanager
    def _guarded(self, method: str, url: str, parts: SplitResult) -> Iterator[None]:
        """Around one request: tell the resolver's guard what it connects for (plain http, the node's own
        origin), and turn transport errors into :class:`PeerError` (a refusal by the guard stays itself)."""
        token = _plain_http.set(parts.scheme == "http")
        own = _own_origin.set(self.policy.is_own_origin(parts))
        try:
            yield
        except OutboundRefused:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # aiohttp wraps resolver errors; surface the guard's refusal as itself.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OutboundRefused):
                raise cause from None
            raise PeerError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            _own_origin.reset(own)
            _plain_http.reset(token)

    async def _read_bounded(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        length = resp.content_length
        if length is not None and length > self.max_response_bytes:
            raise PeerError(f"{url}: response of {length} bytes exceeds {self.max_response_bytes}")
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.content.iter_chunked(65536):
            total += len(chunk)
            if total > self.max_response_bytes:
                raise PeerError(f"{url}: response exceeds {self.max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def get_json(self, url: str, *, signer: Signer | None = None) -> Any:
        resp = await self.request("GET", url, signer=signer)
        if resp.status != 200:
            raise PeerError(f"GET {url} answered {resp.status}: {resp.body[:200]!r}")
        return resp.json()
