"""Authentication of incoming requests.

- Peers: every request under a participant's DSP base is an RFC 9421-signed request
  (``connector.net.signing``). The signer's DID is resolved, the key must be listed for
  ``authentication``, the signature and body digest must verify against the URI built from this node's
  public URL, and the nonce must be new (persisted, so a restart does not reopen the window). The
  verified caller DID is put on the request as ``request["caller_did"]``.
- Operators and applications: management requests carry ``Authorization: Bearer <token>``; tokens are
  stored hashed (SHA-256 of 256 random bits, looked up by that hash, so no secret is compared byte by
  byte) and name their participant and application. The node's admin token names no participant.
- Fair use (``connector.ratelimit``): each participant's tokens (together) draw from their own
  token bucket; so does each peer *known* to the participant it calls (verified DID, an agreement with
  it), while all unknown peers together share one node-wide bucket (``connector.services.admission``).
  A request whose signature names an unknown DID is charged to that bucket before its DID is resolved or
  its nonce stored, so a flood of fresh identities costs the node no more than reading a header. Over a
  budget, 429 with Retry-After.
- Conformance mode only (``[conformance]`` in the config, ``connector.conformance``): a DSP request
  without a signature must carry exactly the configured static ``Authorization`` value (the compatibility
  kit cannot sign); the caller is then the kit's configured agent id. Without that section this path
  does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from aiohttp import web

from connector.errors import Unauthorized
from connector.logging import get_logger
from connector.net import signing
from connector.store.repository import Token

if TYPE_CHECKING:
    from nacl.signing import VerifyKey

    from connector.config import ConformanceSection
    from connector.participant import ParticipantRuntime
    from connector.services.tokens import TokenService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER_DID = web.RequestKey("tds_caller_did", str)
BODY = web.RequestKey("tds_body", bytes)
TOKEN = web.RequestKey("tds_token", Token)
#: The request's Signature-Input as read once (by the fair-use gate, before authentication reads it again).
SIGNATURE_INPUT = web.RequestKey("tds_signature_input", signing.SignatureInput)
#: Settled once the request's nonce is committed (True), or found stored by another process (False).
NONCE_STORED = web.RequestKey("tds_nonce_stored", asyncio.Future)
DSP_PATH = re.compile(r"^/participants/(?P<name>[a-z0-9-]+)/api/dsp/")
log = get_logger(component="auth")


class KeyResolver(Protocol):
    async def verification_key(self, key_id: str, relationship: str) -> VerifyKey: ...


class NonceRepository(Protocol):
    async def claim_nonce(self, key_id: str, nonce: str, expires_at: int, now: int
                          ) -> asyncio.Future[bool] | None: ...


class Gate(Protocol):
    """Fair use of the DSP base (``connector.services.admission.Admission``)."""

    def is_known(self, participant_id: str | None, did: str) -> bool: ...
    def check_unknown(self) -> None: ...
    def check_request(self, participant_id: str | None, caller: str) -> None: ...


class FailureCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class PeerAuth(msgspec.Struct, frozen=True):
    """What authenticating a peer's request needs.

    *public_url* is this node's configured public URL: signatures are verified against the URI the peer
    was given, so a proxy or port mapping in between does not break them. *conformance* is the
    ``[conformance]`` section, or None (then every DSP request must be signed)."""

    participant_named: Callable[[str], ParticipantRuntime | None]
    resolver: KeyResolver
    nonces: NonceRepository
    admission: Gate
    public_url: str
    signature_failures: FailureCounter
    conformance: ConformanceSection | None = None
    clock: Callable[[], float] = msgspec.field(default=time.time)


def signed_request_middleware(auth: PeerAuth) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = DSP_PATH.match(request.path)
        if match and not _is_public_dsp_path(request.rel_url.raw_path):
            called = auth.participant_named(match["name"])
            participant_id = called.id if called is not None else None
            stranger = charge_stranger(auth, request, participant_id)
            try:
                caller = await authenticate_peer(auth, request, deferred=True)
                if not stranger:
                    auth.admission.check_request(participant_id, caller)
                response = await handler(request)
            except BaseException:
                with contextlib.suppress(Exception):  # the refusal is the answer; still, not before the nonce
                    await _nonce_stored(auth, request)
                raise
            await _nonce_stored(auth, request)
            return response
        return await handler(request)

    return middleware


async def _nonce_stored(auth: PeerAuth, request: web.Request) -> None:
    """Wait until the request's nonce is committed: no answer leaves before it (see :func:`authenticate_signed`)."""
    stored = request.get(NONCE_STORED)
    if stored is not None and not await stored:
        auth.signature_failures.inc()
        raise Unauthorized("signature nonce was already used (replayed request)")


def charge_stranger(auth: PeerAuth, request: web.Request, participant_id: str | None) -> bool:
    """Charge a caller that participant *participant_id* does not know to the budget all unknown peers share (429
    over it), before its DID is resolved: a fresh identity per request must not buy a fetch of a DID document
    each. Whether the caller is such a stranger (as its signature claims, not verified yet)."""
    claimed = _claimed_caller(request)
    stranger = claimed is not None and not auth.admission.is_known(participant_id, claimed)
    if stranger:
        auth.admission.check_unknown()
    return stranger


def _claimed_caller(request: web.Request) -> str | None:
    """The DID a request's signature names, not yet verified (None: unsigned or unreadable, which
    authentication then refuses or hands to conformance mode)."""
    try:
        sig = _signature_input(request)
    except Unauthorized:
        return None
    return sig.key_id.partition("#")[0]


def _signature_input(request: web.Request) -> signing.SignatureInput:
    """The request's Signature-Input, read (and checked) once per request."""
    sig = request.get(SIGNATURE_INPUT)
    if sig is None:
        sig = request[SIGNATURE_INPUT] = signing.read_signature_input(request.headers)
    return sig


#: A version document under a DSP base, which is unauthenticated (DSP 2025-1 §4.3): the whole path, as sent (a
#: path that only ends so once decoded, ``…/datasets/x%2F.well-known%2Fdspace-version``, is routed elsewhere).
_PUBLIC_DSP_PATH = re.compile(r"^/participants/[a-z0-9-]+/api/dsp/(2025-1/)?\.well-known/dspace-version$")


def _is_public_dsp_path(raw_path: str) -> bool:
    return _PUBLIC_DSP_PATH.match(raw_path) is not None


async def authenticate_peer(auth: PeerAuth, request: web.Request, *, deferred: bool = False) -> str:
    conformance = auth.conformance
    if conformance is not None and "Signature-Input" not in request.headers:
        return await _authenticate_static(request, conformance.authorization, conformance.agent_id)
    return await authenticate_signed(auth, request, deferred=deferred)


async def authenticate_signed(auth: PeerAuth, request: web.Request, *, streamed: bool = False,
                              deferred: bool = False) -> str:
    """Verify the request's RFC 9421 signature (never the conformance shortcut); return the caller's DID.

    Also used by the data plane, whose requests carry a transfer token in ``Authorization`` besides.
    *streamed*: the body is left unread for the handler to stream, and is not digested (the data plane
    checks such a body chunk by chunk against a signed manifest instead).

    The nonce is claimed here, so that a replay is refused at once, and committed by the store's next commit.
    *deferred*: the request goes on meanwhile (whatever it writes commits with the nonce or after it), and the
    caller awaits :func:`_nonce_stored` before it answers; otherwise this returns once the nonce is committed.
    """
    now = auth.clock()
    sig = _signature_input(request)
    signing.check_times(sig, now)
    body = b"" if streamed else await request.read()
    key = await auth.resolver.verification_key(sig.key_id, "authentication")
    target_uri = auth.public_url + request.raw_path
    try:
        signing.verify_request(request.method, target_uri, request.headers, body, public_key=key, now=now, sig=sig)
    except Unauthorized:
        auth.signature_failures.inc()
        raise
    stored = await auth.nonces.claim_nonce(sig.key_id, sig.nonce, sig.expires + signing.CLOCK_SKEW, int(now))
    if stored is None:
        auth.signature_failures.inc()
        raise Unauthorized("signature nonce was already used (replayed request)")
    request[NONCE_STORED] = stored
    if not deferred:
        await _nonce_stored(auth, request)
    caller = sig.key_id.partition("#")[0]
    request[CALLER_DID] = caller
    if not streamed:
        request[BODY] = body
    log.debug("peer request verified", caller=caller, path=request.path)
    return caller


def static_authorization_matches(expected: str, header: str | None) -> bool:
    """Whether *header* is exactly *expected* (constant-time, so timing tells nothing about the value)."""
    return header is not None and hmac.compare_digest(header.encode(), expected.encode())


async def _authenticate_static(request: web.Request, expected: str, agent_id: str) -> str:
    # Conformance mode only (see the module docstring): stands in for the RFC 9421 signature.
    if not static_authorization_matches(expected, request.headers.get("Authorization")):
        raise Unauthorized("request is neither signed (RFC 9421) nor carries the conformance Authorization value")
    request[CALLER_DID] = agent_id
    request[BODY] = await request.read()
    log.debug("conformance request accepted", caller=agent_id, path=request.path)
    return agent_id


async def authenticate_token(tokens: TokenService, request: web.Request) -> Token:
    """The management token of *request* (``Authorization: Bearer``), checked by *tokens*; 401 otherwise."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("management API needs 'Authorization: Bearer <token>'")
    return await tokens.authenticate(token.strip())
