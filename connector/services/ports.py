"""What the services need of the layers below them, as Protocols: one home for all of them.

The node passes the real things (``connector.net.client.PeerClient`` for the outbound client,
``connector.identity.resolver.DidResolver`` for DID resolution); the socket-free tests pass fakes
(``connector.testing``). Each service asks for the narrowest Protocol it uses, so a fake implements only
that: :class:`PeerRequester` is one signed request, :class:`OutboundClient` adds the guard's early check of
a peer-given address (the process shell and its protocols), :class:`PeerFetcher` adds a plain JSON GET
(federation), :class:`BackendReader` streams an HTTP backend (asset snapshots), :class:`DataClient` adds
the streamed payloads of transfers (a pull from the provider, a push to the consumer), :class:`CredentialClient`
reads issuers' status lists within the caller's bounds.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from connector.identity.keys import Signer


class PeerAnswer(Protocol):
    """A peer's whole (bounded) answer (``connector.net.client.PeerResponse``)."""

    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self) -> Any: ...


class PeerRequester(Protocol):
    """One bounded request through the outbound guard, signed by *signer* when given."""

    async def request(self, method: str, url: str, *, json_body: Any = None, signer: Signer | None = None,
                      headers: dict[str, str] | None = None) -> PeerAnswer: ...


class OutboundClient(PeerRequester, Protocol):
    """The outbound client as the process shell uses it: requests, and the guard's check of an address a
    peer hands over (a callback address, a push endpoint) before it is stored."""

    def check_target(self, url: str, *, backend: bool = False) -> Any: ...


class PeerFetcher(PeerRequester, Protocol):
    """The outbound client as federation uses it: requests, and a JSON GET (version and DID documents)."""

    async def get_json(self, url: str, *, signer: Signer | None = None) -> Any: ...


class Body(Protocol):
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class BackendResponse(Protocol):
    """A streamed answer (``aiohttp.ClientResponse``), as far as it is read here."""

    @property
    def status(self) -> int: ...
    @property
    def content(self) -> Body: ...


class BackendReader(Protocol):
    """The outbound client as an HTTP backend is read: ``backend=True`` keeps the node's own listeners out
    of reach."""

    def stream(self, url: str, *, backend: bool = False) -> AbstractAsyncContextManager[BackendResponse]: ...


class StreamedAnswer(Protocol):
    """A streamed answer, as far as a bounded reader reads it: its status and its body in chunks."""

    @property
    def status(self) -> int: ...
    @property
    def content(self) -> Body: ...


class CredentialClient(PeerRequester, Protocol):
    """The outbound client as credentials use it: signed requests (delivering a credential, asking an issuer
    for one, exchanging presentations), and a GET whose body the caller reads within its own bounds (an
    issuer's status list: at most so many bytes, within so many seconds)."""

    def stream(self, url: str, *, read_timeout_s: float | None = None
               ) -> AbstractAsyncContextManager[StreamedAnswer]: ...


class Resolver(Protocol):
    """DID resolution: the DID document of *did* (with *key_id*: one that lists that key, if the DID's
    controller publishes it, fetched again when a cached one does not)."""

    async def resolve(self, did: str, *, key_id: str | None = None) -> dict[str, Any]: ...


class DataClient(OutboundClient, Protocol):
    """The outbound client as transfers use it (``PeerClient``): besides DSP messages, a payload streamed
    from the provider (a pull) and a payload streamed to the consumer (a push)."""

    def stream(self, url: str, *, signer: Signer | None = None, headers: dict[str, str] | None = None,
               read_timeout_s: float | None = None, backend: bool = False) -> AbstractAsyncContextManager[Any]: ...

    async def upload(self, url: str, body: AsyncIterable[bytes], length: int, *, signer: Signer | None = None,
                     headers: dict[str, str] | None = None, read_timeout_s: float | None = None) -> PeerAnswer: ...
