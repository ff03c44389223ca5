"""Authentication of incoming requests.

- Peers: every request under a participant's DSP base is an RFC 9421-signed request
  (``connector.http.signing``). The signer's DID is resolved, the key must be listed for
  ``authentication``, the signature and body digest must verify against the URI built from this node's
  public URL, and the nonce must be new (persisted, so a restart does not reopen the window). The
  verified caller DID is put on the request as ``request["caller_did"]``.
- Operators and applications: management requests carry ``Authorization: Bearer <token>``; tokens are
  stored hashed and name their participant and application.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from connector.errors import Unauthorized
from connector.http import signing
from connector.logging import get_logger
from connector.store.repository import Token

if TYPE_CHECKING:
    from connector.node import Node

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER_DID = web.RequestKey("tds_caller_did", str)
BODY = web.RequestKey("tds_body", bytes)
TOKEN = web.RequestKey("tds_token", Token)
DSP_PATH = re.compile(r"^/participants/[a-z0-9-]+/api/dsp/")
log = get_logger(component="auth")


def signed_request_middleware(node: Node) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if DSP_PATH.match(request.path) and not _is_public_dsp_path(request.path):
            await authenticate_peer(node, request)
        return await handler(request)

    return middleware


def _is_public_dsp_path(path: str) -> bool:
    # Version documents are unauthenticated (DSP 2025-1 §4.3).
    return path.endswith("/.well-known/dspace-version")


async def authenticate_peer(node: Node, request: web.Request) -> str:
    now = time.time()
    sig = signing.read_signature_input(request.headers)
    signing.check_times(sig, now)
    body = await request.read()
    key = await node.resolver.verification_key(sig.key_id, "authentication")
    target_uri = node.config.public_url + request.raw_path
    try:
        signing.verify_request(request.method, target_uri, request.headers, body, public_key=key, now=now)
    except Unauthorized:
        node.metrics.signature_failures.inc()
        raise
    if not await node.repo.remember_nonce(sig.key_id, sig.nonce, sig.expires + signing.CLOCK_SKEW, int(now)):
        node.metrics.signature_failures.inc()
        raise Unauthorized("signature nonce was already used (replayed request)")
    caller = sig.key_id.partition("#")[0]
    request[CALLER_DID] = caller
    request[BODY] = body
    log.debug("peer request verified", caller=caller, path=request.path)
    return caller


async def authenticate_token(node: Node, request: web.Request) -> Token:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("management API needs 'Authorization: Bearer <token>'")
    found = await node.repo.find_token(token.strip())
    if found is None:
        raise Unauthorized("unknown or revoked token")
    return found
