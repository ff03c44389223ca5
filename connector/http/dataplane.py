"""The data plane's HTTP routes, outside the DSP base: the provider's pull endpoint and the consumer's push
inbox of every participant. The bytes are moved by :mod:`connector.services.sender` (provider) and
:mod:`connector.services.receiver` (consumer); see :mod:`connector.services.dataplane` for the protocol.

Provider: ``GET /participants/NAME/data/:providerPid`` (the payload, from an optional ``Range: bytes=N-``)
and ``GET …/manifest`` (the manifest and its signed envelope). Consumer: ``PUT
/participants/NAME/inbox/:consumerPid/manifest`` (the provider's manifest and envelope; answers the resume
point) and ``POST …/inbox/:consumerPid?offset=N`` (the pushed chunks from N on; 422 with the resume point
when the provider must send again from there).

Every request must carry the transfer's token (``Authorization: Bearer``) *and* an RFC 9421 signature by the
peer named in the transfer (no ``content-digest`` on a pushed body: it is streamed and checked chunk by chunk
against the signed manifest instead; a pull has no body, and its response's integrity comes from the
manifest). The token must be the transfer's (compared as SHA-256 digests in constant time), unexpired, and
the transfer STARTED; every token problem gets the same answer.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web

from connector.errors import BadRequest, NotFound, PeerError, Unauthorized
from connector.http.auth import CALLER_DID, FailureCounter, PeerAuth, authenticate_signed, charge_stranger
from connector.http.middleware import read_json
from connector.logging import get_logger
from connector.payload import manifest as manifests
from connector.protocol.transfer import Role, State
from connector.services import receiver, sender
from connector.services.dataplane import wire_length
from connector.services.transfer import PUSH, SEALING_SCHEME, token_hash
from connector.store.records import TransferRecord

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.transfer import TransferService
    from connector.store.repository import TransferRepository

log = get_logger(component="dataplane")

_RANGE = re.compile(r"^bytes=(\d{1,15})-$")


@dataclass(frozen=True)
class DataPlaneSite:
    """What the data-plane routes use: the peer authentication (RFC 9421, as on the DSP base), the
    transfers (looked up by pid; the service keeps track of running streams and takes pushed data), and
    the counter of refused requests."""

    participant_named: Callable[[str], ParticipantRuntime | None]
    auth: PeerAuth
    transfers_repo: TransferRepository
    transfers: TransferService
    signature_failures: FailureCounter


# -- provider ---------------------------------------------------------------------------------------------


def routes(site: DataPlaneSite) -> list[web.RouteDef]:
    base = "/participants/{name}/data/{pid}"

    async def authorise(request: web.Request) -> tuple[TransferRecord, Path]:
        _, record = await _token_holder(site, request, role=Role.PROVIDER)
        path, problem = await sender.source_file(record.data_address or {})
        if problem:
            raise PeerError(problem)
        return record, path

    async def manifest(request: web.Request) -> web.Response:
        record, _ = await authorise(request)
        return web.json_response({"manifest": record.manifest, "envelope": record.envelope})

    async def data(request: web.Request) -> web.StreamResponse:
        record, path = await authorise(request)
        size = int(record.size or 0)
        offset = 0
        seal_key = bytes.fromhex(str((record.data_address or {}).get("seal_key", "")))
        manifest = manifests.decode(record.manifest) if seal_key else None
        if "Range" in request.headers:
            match = _RANGE.match(request.headers["Range"].strip())
            aligned = manifest is None or (match is not None and int(match.group(1)) % manifest.chunk_size == 0)
            if match is None or int(match.group(1)) >= size or not aligned:  # RFC 9110 §14.1.1: past the end
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            offset = int(match.group(1))
        # Sealed, every chunk carries a 16-byte tag: the length on the wire is the plaintext's plus the tags.
        length = wire_length(manifest, offset, sealed=True) if manifest is not None else size - offset
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                   "Accept-Ranges": "bytes", "Cache-Control": "no-store"}
        if offset:
            headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"
        response = web.StreamResponse(status=206 if offset else 200, headers=headers)
        await response.prepare(request)
        key, task = (record.participant_id, record.id), asyncio.current_task()
        assert task is not None
        site.transfers.serving(key, task)
        sink = sender.CountedSink(response, site.transfers.moved, _send_file_of(request))
        try:
            if manifest is not None:
                await sender.stream_sealed(path, manifest, offset // manifest.chunk_size, seal_key, record.id, sink)
            else:
                await sender.stream_file(path, offset, size, sink)
            await response.write_eof()
        except ConnectionError as exc:
            # The consumer went away (it resumes with a Range request): not an error of this node.
            log.info("data stream ended by the consumer", id=record.id, error=str(exc)[:200])
        finally:
            site.transfers.served(key, task)
        return response

    return [web.get(base, data), web.get(f"{base}/manifest", manifest), *inbox_routes(site)]


def _send_file_of(request: web.Request) -> sender.SendFile | None:
    """The kernel's sendfile onto the request's connection, if it is plain TCP (through TLS the bytes must pass
    through the process anyway: the stream's own reads are quicker than asyncio's fallback)."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    loop = asyncio.get_running_loop()

    async def send_file(file: IO[bytes], offset: int, count: int) -> int:
        return await loop.sendfile(transport, file, offset, count)

    return send_file


async def _token_holder(site: DataPlaneSite, request: web.Request, *, role: Role, push: bool = False,
                        streamed: bool = False) -> tuple[ParticipantRuntime, TransferRecord]:
    """A data-plane request (outside the DSP base): the participant and the transfer named in its path,
    where we have *role*, with the transfer's bearer token *and* an RFC 9421 signature by the transfer's
    peer. One answer for every token problem (wrong, another peer's, expired, transfer not STARTED): the
    caller learns nothing about which check failed."""
    participant = site.participant_named(request.match_info["name"])
    if participant is None:
        raise NotFound("no such participant")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a data request needs the transfer's token (Authorization: Bearer)")
    # A transfer's peer has an agreement with the participant, so it is known; anyone else shares the strangers'
    # budget, as on the DSP base.
    charge_stranger(site.auth, request, participant.id)
    caller = await authenticate_signed(site.auth, request, streamed=streamed)
    record = await site.transfers_repo.get(participant.id, request.match_info["pid"])
    if record is None or record.role != role or (push and record.format != PUSH):
        raise NotFound("no such transfer")
    ok = hmac.compare_digest(token_hash(token.strip()), record.token_hash or "")
    ok = ok and record.counterparty_did == caller and record.state == State.STARTED
    ok = ok and (record.token_expires_at is None or record.token_expires_at > time.time())
    if not ok:
        site.signature_failures.inc()
        raise Unauthorized("the token is not valid for this transfer, caller, time or state")
    request[CALLER_DID] = caller  # verified: the access log names it
    return participant, record


# -- consumer: the push inbox -----------------------------------------------------------------------------


def inbox_routes(site: DataPlaneSite) -> list[web.RouteDef]:
    """``PUT /participants/NAME/inbox/:consumerPid/manifest`` (the signed envelope; answers the resume point)
    and ``POST …/inbox/:consumerPid?offset=N`` (the chunks from N on), for a push transfer we requested."""
    base = "/participants/{name}/inbox/{pid}"
    inbox = receiver.Inbox(site.transfers)

    async def authorise(request: web.Request, *, streamed: bool) -> tuple[ParticipantRuntime, TransferRecord]:
        return await _token_holder(site, request, role=Role.CONSUMER, push=True, streamed=streamed)

    async def manifest(request: web.Request) -> web.Response:
        participant, record = await authorise(request, streamed=False)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with manifest and envelope")
        record = await inbox.offer(participant, record, body, _ephemeral_of(body.get("sealing")))
        return web.json_response({"received": record.received, "size": record.size})

    async def data(request: web.Request) -> web.Response:
        participant, record = await authorise(request, streamed=True)
        offset = request.query.get("offset", "")
        answer = await inbox.receive(participant, record, int(offset) if offset.isascii() and offset.isdigit()
                                     else None, request.content_length, request.content)
        if answer.resend is not None:
            return _resend(answer.received, answer.resend)
        return web.json_response({"received": answer.received, "complete": answer.complete})

    return [web.put(f"{base}/manifest", manifest), web.post(base, data)]


def _resend(received: int, why: str) -> web.Response:
    """422: push again from *received* (the provider retries after a pause, within its stall limit)."""
    return web.json_response({"error": "resend", "message": why, "received": received}, status=422)


def _ephemeral_of(offer: Any) -> str:
    if offer is None:
        return ""
    if not isinstance(offer, dict) or not isinstance(offer.get("ephemeralKey"), str) or len(
            offer["ephemeralKey"]) > 100:
        raise BadRequest("sealing must name a scheme and an ephemeralKey")
    if offer.get("scheme") != SEALING_SCHEME:
        raise BadRequest(f"the sealing scheme {str(offer.get('scheme'))[:100]!r} is not known here; this node "
                         f"reads {SEALING_SCHEME}")
    return str(offer["ephemeralKey"])

