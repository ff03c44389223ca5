"""Outbound HTTP to peers: guarded, bounded, and signed when the caller is a participant.

One :class:`PeerClient` per node. It resolves host names through :class:`GuardedResolver`, which
applies the outbound guard (``connector.net.guard``) to every resolved address, so a name that
points at a private address is refused at connect time. Redirects are followed by hand (GET only, at
most ``max_redirects``, each hop checked again); responses are read up to a byte limit; every call has a
total time limit. Errors become :class:`~connector.errors.PeerError` / ``OutboundRefused``; each is also
told to the node's metrics by kind (:func:`failure_kind`), as are peers' 429 and 5xx answers.

The node's own listeners (see ``connector.net.guard``) are guarded on three layers: the URL before
the request (IP literals and ``localhost`` names, which aiohttp never hands to a resolver), every resolved
address, and every socket the connector opens (its ``socket_factory``: whatever path an address took,
cached or literal, it passes here). aiohttp's DNS cache is off so that every new connection is resolved
under the rules of its own request. HTTP backends go through a session of their own, so a pooled
connection to the public listener opened for a peer call is never reused to read a backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp
import msgspec
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from connector import jsonbound
from connector.errors import OutboundRefused, PeerError
from connector.identity.keys import Signer
from connector.net import signing
from connector.net.guard import (
    IPAddress,
    Listener,
    OutboundPolicy,
    check_address,
    check_listener,
    check_url,
    default_port,
    literal_address,
    local_name,
    origin,
    surely_local,
    unmapped,
)

#: How much of a streamed body is buffered before the socket is read again (fewer wake-ups per MiB).
STREAM_BUFFER = 1024 * 1024
_plain_http: contextvars.ContextVar[bool] = contextvars.ContextVar("tds_plain_http", default=False)
#: Set while a request goes to the node's own public origin, which the guard allows (see ``connector.net.guard``).
_own_origin: contextvars.ContextVar[bool] = contextvars.ContextVar("tds_own_origin", default=False)


class LocalAddresses:
    """Whether an address belongs to this machine: binding a UDP socket to it succeeds only then (no
    packet is sent). Answers are cached for *ttl_s*, as interfaces change rarely."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 4096) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._known: dict[IPAddress, tuple[float, bool]] = {}

    def __contains__(self, address: IPAddress) -> bool:
        address = unmapped(address)
        if surely_local(address):
            return True
        now = time.monotonic()
        hit = self._known.get(address)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._known) >= self._max:
            self._known.clear()
        try:
            if isinstance(address, ipaddress.IPv6Address):
                scope = address.scope_id or ""
                # A link-local address is this machine's only on its interface: bind with that scope.
                index = int(scope) if scope.isascii() and scope.isdigit() else (
                    socket.if_nametoindex(scope) if scope else 0)
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
                    probe.bind((str(address).split("%", 1)[0], 0, 0, index))
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((str(address), 0))
            local = True
        except (OSError, ValueError, OverflowError):  # not ours, or a scope no interface has
            local = False
        self._known[address] = (now + self._ttl, local)
        return local


class OwnListeners:
    """The node's own listening sockets (known once they are bound) and the check against them."""

    def __init__(self) -> None:
        self.listeners: tuple[Listener, ...] = ()
        self.local = LocalAddresses()

    def check(self, target: str, address: str | IPAddress, port: int, *, backend: bool) -> None:
        """Raise :class:`OutboundRefused` if *address*:*port* (named *target* in the reason) is one of the
        node's own listeners that this call may not reach (see :func:`~connector.net.guard.check_listener`)."""
        if not self.listeners:
            return
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address  # keeps a scope (fe80::1%eth0)
        check_listener(target, port, self.listeners, local=ip in self.local, backend=backend)


class _SocketRefused(OSError):
    """The outbound guard refused a socket (an OSError, as the connector expects of a socket factory)."""

    def __init__(self, refusal: OutboundRefused) -> None:
        super().__init__(errno.EACCES, refusal.message)  # with an errno, aiohttp shows the reason
        self.refusal = refusal


def _socket_factory(own: OwnListeners, *, backend: bool) -> Callable[[AddrInfoType], socket.socket]:
    """The last check, on the very address a socket is about to connect to."""

    def create(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = addr_info
        host = str(address[0])
        if len(address) == 4 and address[3] and "%" not in host:  # an IPv6 scope travels beside the address
            host = f"{host}%{address[3]}"
        try:
            own.check(host, host, int(address[1]), backend=backend)
        except OutboundRefused as exc:
            raise _SocketRefused(exc) from None
        return socket.socket(family=family, type=type_, proto=proto)

    return create


class GuardedResolver(AbstractResolver):
    """Resolve with the system resolver, then drop every address the outbound guard refuses."""

    def __init__(self, policy: OutboundPolicy, own: OwnListeners | None = None, *, backend: bool = False) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._policy = policy
        self._own = own or OwnListeners()
        self._backend = backend

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refusal: OutboundRefused | None = None
        for result in results:
            try:
                if not _own_origin.get():
                    check_address(result["host"], self._policy, plain_http=_plain_http.get())
                # The own origin is no exception here: its port is the public listener's, or it is refused.
                self._own.check(host, result["host"], result["port"] or port, backend=self._backend)
            except OutboundRefused as exc:
                refusal = exc
                continue
            allowed.append(result)
        if not allowed:
            raise refusal or OutboundRefused(f"{host} resolves to no address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class PeerResponse(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        try:
            return jsonbound.loads(self.body)
        except ValueError as exc:
            raise PeerError(f"{self.url} answered {self.status} with a body that is not JSON") from exc


def failure_kind(exc: BaseException) -> str:
    """What kind of failure a transport error is, as the node's ``tds_peer_errors_total`` names it."""
    if isinstance(exc, OutboundRefused):
        return "refused-by-guard"
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return "tls"
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return "connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError,
                        ConnectionError)):
        return "disconnected"
    return "other"


def describe_error(exc: BaseException) -> str:
    """An exception in words: its type, and its message if it has one (``TimeoutError()`` has none)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _no_count(_: str) -> None:
    """Failures are not counted (a client without metrics)."""


class PeerClient:
    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        max_response_bytes: int = 4 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        failed: Callable[[str], None] = _no_count,
    ) -> None:
        self.policy = policy
        #: Told the kind of every failed request to a peer (``timeout``, ``connect``, ``tls``,
        #: ``disconnected``, ``refused-by-guard``, ``too-large``, ``redirects``, ``rate-limited``,
        #: ``server-error``, ``other``).
        self.failed = failed
        #: Trust for HTTPS to peers (``node.tls_ca``: its CAs alone); None: the system store. An asset's HTTP
        #: backend is the provider's own system, not a peer: it is always checked against the system store.
        self.ssl_context = ssl_context
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_redirects = max_redirects
        self.max_response_bytes = max_response_bytes
        self.own = OwnListeners()
        self._session: aiohttp.ClientSession | None = None
        self._backend_session: aiohttp.ClientSession | None = None

    def listening_on(self, *listeners: Listener) -> None:
        """The node's own listeners, once bound (their ports may have been picked by the OS)."""
        self.own.listeners = tuple(listeners)

    def _new_session(self, *, backend: bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.policy, self.own, backend=backend), limit=100,
            ssl=self.ssl_context if self.ssl_context is not None and not backend else True,
            # Cached answers would skip the resolver's checks, which depend on the request (see above).
            use_dns_cache=False, socket_factory=_socket_factory(self.own, backend=backend),
        )
        return aiohttp.ClientSession(connector=connector, trust_env=False, timeout=self.timeout)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._new_session(backend=False)
        return self._session

    @property
    def backend_session(self) -> aiohttp.ClientSession:
        """For reading HTTP backends of assets only: it may reach neither of the node's listeners."""
        if self._backend_session is None:
            self._backend_session = self._new_session(backend=True)
        return self._backend_session

    async def close(self) -> None:
        for session in (self._session, self._backend_session):
            if session is not None:
                await session.close()
        self._session = self._backend_session = None

    def check_target(self, url: str, *, backend: bool = False) -> SplitResult:
        """Check *url* before anything is sent: :func:`~connector.net.guard.check_url`, and the node's own listeners
        for what can be told without resolving (an IP literal, a ``localhost`` name). Host names are
        checked again on every address they resolve to, at connect time. For a peer-given address this is
        the early answer (a 4xx naming the field); raises :class:`OutboundRefused`."""
        parts = check_url(url, self.policy, backend=backend)
        host = parts.hostname or ""
        port = default_port(parts)
        literal = literal_address(host)
        if literal is not None:
            self.own.check(host, literal, port, backend=backend)
        elif local_name(host):
            check_listener(host, port, self.own.listeners, local=True, backend=backend)
        return parts

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        signer: Signer | None = None,
        headers: dict[str, str] | None = None,
    ) -> PeerResponse:
        """Send one request; follow redirects for GET only; return the whole (bounded) response.

        A signed request is followed only to the same host (the same origin, or the host itself over https): its
        signature is made anew for each URL, and a peer must not be able to point it at a third party, whose
        answer would be taken for the peer's."""
        body = None if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        hops = 0
        while True:
            parts = self.check_target(url)
            send_headers = {"Accept": "application/json", **(headers or {})}
            if body is not None:
                send_headers["Content-Type"] = "application/json"
            if signer is not None:
                send_headers = signing.sign_request(
                    method, url, body, key=signer.key, key_id=signer.key_id, now=time.time(), headers=send_headers
                )
            limit = f"did not answer within {self.timeout.total:g} s (node.outbound_timeout_s)"
            with self._guarded(method, url, parts, limit=limit):
                async with self.session.request(
                    method, url, data=body, headers=send_headers, allow_redirects=False
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and method == "GET" and "Location" in resp.headers:
                        hops += 1
                        if hops > self.max_redirects:
                            self.failed("redirects")
                            raise PeerError(f"{url}: more than {self.max_redirects} redirects")
                        target = urljoin(url, resp.headers["Location"])
                        if signer is not None and not _same_host(parts, urlsplit(target)):
                            self.failed("redirects")
                            raise PeerError(f"{url}: redirected a signed request to another host ({target[:200]})")
                        url = target
                        continue
                    data = await self._read_bounded(resp, url)
                    self._answered(resp.status)
                    return PeerResponse(resp.status, dict(resp.headers), data, url)

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, *, signer: Signer | None = None, headers: dict[str, str] | None = None,
        read_timeout_s: float | None = None, backend: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose body the caller reads as a stream (no size limit, no total time limit: the
        caller bounds what it reads). The outbound guard applies as for :meth:`request`; no redirects;
        a read that stalls for *read_timeout_s* (default: the client's timeout) fails. With *backend*
        (an asset's HTTP backend) neither of the node's own listeners may be reached."""
        parts = self.check_target(url, backend=backend)
        send_headers = dict(headers or {})
        if signer is not None:
            send_headers = signing.sign_request("GET", url, None, key=signer.key, key_id=signer.key_id,
                                                now=time.time(), headers=send_headers)
        stall = read_timeout_s or self.timeout.total
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
        session = self.backend_session if backend else self.session
        with self._guarded("GET", url, parts, limit=f"sent nothing for {stall:g} s (the stall limit)"):
            async with session.get(url, headers=send_headers, allow_redirects=False, timeout=timeout,
                                   read_bufsize=STREAM_BUFFER) as resp:
                self._answered(resp.status)
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
        parts = self.check_target(url)
        send_headers = {"Accept": "application/json", "Content-Type": "application/octet-stream",
                        **(headers or {})}
        if signer is not None:
            send_headers = signing.sign_request("POST", url, None, key=signer.key, key_id=signer.key_id,
                                                now=time.time(), headers=send_headers)
        send_headers["Content-Length"] = str(length)
        stall = read_timeout_s or self.timeout.total
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
        with self._guarded("POST", url, parts, limit=f"took and sent nothing for {stall:g} s (the stall limit)"):
            async with self.session.post(url, data=body, headers=send_headers, allow_redirects=False,
                                         timeout=timeout) as resp:
                data = await self._read_bounded(resp, url)
                self._answered(resp.status)
                return PeerResponse(resp.status, dict(resp.headers), data, url)

    @contextlib.contextmanager
    def _guarded(self, method: str, url: str, parts: SplitResult, *, limit: str) -> Iterator[None]:
        """Around one request: tell the resolver's guard what it connects for (plain http, the node's own
        origin), and turn transport errors into :class:`PeerError` (a refusal by the guard stays itself). A time
        limit that ran out is said as such, in the words of *limit* (what the peer did not do for how long, and
        which setting says so): a ``TimeoutError`` has no message of its own."""
        token = _plain_http.set(parts.scheme == "http")
        own = _own_origin.set(self.policy.is_own_origin(parts))
        try:
            yield
        except OutboundRefused as exc:
            self.failed(failure_kind(exc))
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # aiohttp wraps resolver and socket errors; surface the guard's refusal as itself.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _SocketRefused):
                self.failed("refused-by-guard")
                raise cause.refusal from None
            if isinstance(cause, OutboundRefused):
                self.failed("refused-by-guard")
                raise cause from None
            kind = failure_kind(exc)
            self.failed(kind)
            if kind == "timeout":
                raise PeerError(f"{method} {url}: the peer {limit}") from exc
            raise PeerError(f"{method} {url} failed: {describe_error(exc)}") from exc
        finally:
            _own_origin.reset(own)
            _plain_http.reset(token)

    def _answered(self, status: int) -> None:
        """A peer's answer: its refusals for load (429) and its own failures (5xx) are counted."""
        if status == 429:
            self.failed("rate-limited")
        elif status >= 500:
            self.failed("server-error")

    async def _read_bounded(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        length = resp.content_length
        if length is not None and length > self.max_response_bytes:
            self.failed("too-large")
            raise PeerError(f"{url}: response of {length} bytes exceeds {self.max_response_bytes}")
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.content.iter_chunked(65536):
            total += len(chunk)
            if total > self.max_response_bytes:
                self.failed("too-large")
                raise PeerError(f"{url}: response exceeds {self.max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def get_json(self, url: str, *, signer: Signer | None = None) -> Any:
        resp = await self.request("GET", url, signer=signer)
        if resp.status != 200:
            raise PeerError(f"GET {url} answered {resp.status}: {resp.body[:200]!r}")
        return resp.json()


def _same_host(source: SplitResult, target: SplitResult) -> bool:
    """Whether a redirect from *source* to *target* stays with the same server: the same origin, or the same host
    over https (an upgrade)."""
    if origin(target) == origin(source):
        return True
    return target.scheme == "https" and (target.hostname or "").lower() == (source.hostname or "").lower()
