"""The data plane, pull and push: the provider streams a file, the consumer verifies every chunk before
writing it. This module moves and checks bytes; where they are kept (the partial file of a transfer, the
agreement's folder, its data key, the quota's count) is the vault's, :class:`connector.services.vault.Vault`.

Provider (``GET /participants/NAME/data/:providerPid`` and ``…/manifest``, outside the DSP base): the
request must carry the transfer's token (``Authorization: Bearer``) *and* an RFC 9421 signature by the
consumer named in the transfer (no ``content-digest``: there is no request body, and the response's
integrity comes from the manifest). The token must be the transfer's (compared as SHA-256 digests in
constant time), unexpired, and the transfer STARTED. The file is streamed from disk in 1 MiB pieces from
the requested ``Range`` offset; the file must still be the version the manifest was made of.

Consumer: fetches the manifest and the signed envelope, checks the envelope against the provider's DID
document and the binding (agreement, both pids, both DIDs), then streams the payload into
``vault/PARTICIPANT/AGREEMENT/.TRANSFER.part``. Each chunk is collected in one reusable buffer, hashed and
compared with the manifest *before* it is sealed under the agreement's data key and written (the vault is
encrypted at rest, see :mod:`connector.services.vault`); a bad chunk is dropped and fetched again with a
``Range`` request from its offset, up to ``transfer_chunk_retries`` times, then the transfer is terminated
with the reason. The resume point (bytes verified and written) is committed as the stream goes; after a
connection drop or a restart of either node the pull continues from there (the partial file is first cut
back to it). Only when the last chunk is verified is the file renamed into place, so nothing half-written
is ever visible under its final name.

Push (``HttpData-PUSH``): the same bytes travel the other way round. The provider ``PUT``s the manifest and
envelope to the consumer's inbox (``/participants/NAME/inbox/:consumerPid/manifest``), which checks them as
above and answers its resume point, then ``POST``s the (sealed) chunks from there (``?offset=N``); both
carry the token the consumer put in its request and an RFC 9421 signature by the provider. The inbox
receives with the same verify-before-write pipeline (:func:`_receive`); for a chunk that does not verify it
answers 422 with its resume point, and the provider sends again after a pause. With every byte stored the
provider notes the push as done and the consumer completes the transfer.

Sealed transfers (important and core data, or ``node.encrypt_transfers``) carry every chunk encrypted
under a key for that transfer alone (:mod:`connector.payload.sealing`); the consumer decrypts, verifies,
then seals again for the vault.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError, StreamReader, web

from connector import filemodes
from connector.errors import (
    BadRequest,
    Conflict,
    NotFound,
    OutboundRefused,
    PeerError,
    StorageError,
    TdsError,
    TooManyRequests,
    Unauthorized,
)
from connector.faults import crash_point
from connector.http.auth import authenticate_signed
from connector.http.middleware import read_json
from connector.http.outbound import PeerResponse
from connector.logging import get_logger
from connector.payload import manifest as manifests
from connector.payload import sealing
from connector.protocol.transfer import Kind, State
from connector.services.delivery import backoff, now_text, peer_reason
from connector.services.transfer import (
    EPHEMERAL_PROPERTY,
    MANIFEST_PROPERTY,
    PUSH,
    SEALING_PROPERTY,
    SEALING_SCHEME,
    TransferService,
    _property,
    _replace,
    token_hash,
)
from connector.store.records import TransferRecord

if TYPE_CHECKING:
    from connector.node import Node
    from connector.participant import ParticipantRuntime
    from connector.services.vault import VaultWriter

log = get_logger(component="dataplane")

PIECE = 1024 * 1024
SEALED_DETAIL = ("end-to-end encrypted: X25519 key agreement, HKDF-SHA256, AES-256-GCM per chunk; decrypted and "
                 "verified here")
#: Commit the resume point at least every this many bytes.
CHECKPOINT_BYTES = 16 * 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d{1,15})-$")


# -- provider ---------------------------------------------------------------------------------------------


def routes(node: Node) -> list[web.RouteDef]:
    base = "/participants/{name}/data/{pid}"

    async def authorise(request: web.Request) -> tuple[TransferRecord, Path]:
        _, record = await _token_holder(node, request, role="provider")
        path, problem = await _source_file(record.data_address or {})
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
        node.transfers.serving(key, task)
        try:
            if manifest is not None:
                await stream_sealed(path, manifest, offset // manifest.chunk_size, seal_key, record.id, response)
            else:
                await stream_file(path, offset, size, response)
            await response.write_eof()
        except ConnectionError as exc:
            # The consumer went away (it resumes with a Range request): not an error of this node.
            log.info("data stream ended by the consumer", id=record.id, error=str(exc)[:200])
        finally:
            node.transfers.served(key, task)
        return response

    return [web.get(base, data), web.get(f"{base}/manifest", manifest), *inbox_routes(node)]


async def _token_holder(node: Node, request: web.Request, *, role: str, push: bool = False,
                        streamed: bool = False) -> tuple[ParticipantRuntime, TransferRecord]:
    """A data-plane request (outside the DSP base): the participant and the transfer named in its path,
    where we have *role*, with the transfer's bearer token *and* an RFC 9421 signature by the transfer's
    peer. One answer for every token problem (wrong, another peer's, expired, transfer not STARTED): the
    caller learns nothing about which check failed."""
    participant = node.participants.get(request.match_info["name"])
    if participant is None:
        raise NotFound("no such participant")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a data request needs the transfer's token (Authorization: Bearer)")
    caller = await authenticate_signed(node, request, streamed=streamed)
    record = await node.transfers_repo.get(participant.id, request.match_info["pid"])
    if record is None or record.role != role or (push and record.format != PUSH):
        raise NotFound("no such transfer")
    ok = hmac.compare_digest(token_hash(token.strip()), record.token_hash or "")
    ok = ok and record.counterparty_did == caller and record.state == State.STARTED.value
    ok = ok and (record.token_expires_at is None or record.token_expires_at > time.time())
    if not ok:
        node.metrics.signature_failures.inc()
        raise Unauthorized("the token is not valid for this transfer, caller, time or state")
    return participant, record


async def _source_file(source: dict[str, Any]) -> tuple[Path, str | None]:
    """The provider's file of a started transfer, and why it cannot be sent (gone, or not the version the
    manifest was made of), if so."""
    path = Path(str(source.get("path", "")))
    try:
        stat = await asyncio.to_thread(path.stat)
    except OSError:
        return path, "the asset's file is no longer available"
    if f"{stat.st_size}:{stat.st_mtime_ns}" != source.get("version"):
        return path, "the asset's file changed since the transfer started"
    return path, None


async def stream_file(path: Path, offset: int, size: int, response: web.StreamResponse) -> None:
    """Send *path* from *offset* to *size* in pieces read off the event loop (constant memory)."""
    loop = asyncio.get_running_loop()
    half = size // 2
    fd = os.open(path, os.O_RDONLY)
    try:
        position = offset
        while position < size:
            piece = await loop.run_in_executor(None, os.pread, fd, min(PIECE, size - position), position)
            if not piece:
                break
            await response.write(piece)
            if position < half <= position + len(piece):
                crash_point("provider-mid-stream")
            position += len(piece)
    finally:
        os.close(fd)


async def stream_sealed(path: Path, manifest: manifests.Manifest, first: int, key: bytes, context: str,
                        response: web.StreamResponse) -> None:
    """Send chunks *first*… of *path*, each sealed (end-to-end encryption), read and sealed off the loop."""
    async for piece in _chunks(path, manifest, first, key, context, crash_at=None):
        await response.write(piece)


async def _chunks(path: Path, manifest: manifests.Manifest, first: int, key: bytes | None, context: str,
                  crash_at: str | None = "provider-mid-push") -> AsyncIterator[bytes]:
    """Chunks *first*… of *path*, sealed when *key* is given, each read (and sealed) off the event loop."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY)

    def read(index: int) -> bytes:
        plain = os.pread(fd, manifest.chunk_length(index), index * manifest.chunk_size)
        return sealing.seal_chunk(key, context, index, plain) if key is not None else plain

    half = len(manifest.chunks) // 2
    try:
        for index in range(first, len(manifest.chunks)):
            yield await loop.run_in_executor(None, read, index)
            if index == half and crash_at is not None:
                crash_point(crash_at)
    finally:
        os.close(fd)


def wire_length(manifest: manifests.Manifest, offset: int, sealed: bool) -> int:
    """Bytes on the wire from plaintext *offset* on: the plaintext, plus a 16-byte tag per chunk if sealed."""
    length = manifest.size - offset
    if sealed:
        length += sealing.TAG_SIZE * (len(manifest.chunks) - offset // manifest.chunk_size)
    return length


async def push(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    """Provider: send the payload of a STARTED push transfer to the consumer's receiving endpoint."""
    try:
        await _push(service, participant, transfer_id)
    except (asyncio.CancelledError, _Stopped):
        return
    except MoveFailed as exc:
        log.warning("push failed", id=transfer_id, reason=str(exc))
        await service.do(participant, transfer_id, "terminate", str(exc)[:900], expected_state=State.STARTED.value)
    except Exception:
        log.exception("push stopped", id=transfer_id)


async def _push(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    node = service.node
    record = await node.transfers_repo.get(participant.id, transfer_id)
    if (record is None or record.state != State.STARTED.value or record.data_address is None
            or record.manifest is None):
        return
    source = record.data_address
    target = source.get("push") or {}
    endpoint, token = target.get("endpoint"), target.get("token")
    if not isinstance(endpoint, str) or not isinstance(token, str):
        raise MoveFailed("the consumer's receiving endpoint is not known")
    manifest = manifests.decode(record.manifest)
    seal_key = bytes.fromhex(str(source.get("seal_key", ""))) or None
    offer: dict[str, Any] = {"manifest": record.manifest, "envelope": record.envelope}
    if seal_key is not None:
        offer["sealing"] = {"scheme": SEALING_SCHEME, "ephemeralKey": source.get("ephemeral")}
    headers = {"Authorization": f"Bearer {token}"}
    stall = node.config.node.transfer_stall_timeout_s
    deadline = time.time() + stall
    attempt, best = 0, -1
    while True:
        path, problem = await _source_file(source)
        if problem:
            raise MoveFailed(problem)
        try:
            # The envelope first: the consumer checks it (once) and answers its resume point.
            answer = await node.client.request("PUT", f"{endpoint}/manifest", json_body=offer,
                                               signer=participant.signer, headers=headers)
            if answer.status == 401 and await _consumer_moved_on(service, participant, record):
                return
            offset = _resume_point(answer, manifest, "manifest")
            if offset > best:  # progress since the last attempt: the stall clock starts again
                deadline, best, attempt = time.time() + stall, offset, 0
            if offset < manifest.size:
                detail = (f"the consumer holds {offset} of {manifest.size} bytes; pushing the rest" if offset else
                          f"pushing {manifest.size} bytes to {endpoint}" + (", sealed end to end" if seal_key else ""))
                await node.transfers_repo.add_event(participant.id, record.id, now_text(), "push", detail)
                body = _chunks(path, manifest, offset // manifest.chunk_size, seal_key, record.id)
                answer = await node.client.upload(f"{endpoint}?offset={offset}", body,
                                                  wire_length(manifest, offset, seal_key is not None),
                                                  signer=participant.signer, headers=headers, read_timeout_s=stall)
                if answer.status == 422:  # a chunk did not verify there, or it resumes elsewhere: again, from
                    raise _Resend(peer_reason(answer.body))  # its resume point (after a pause, see below)
                _resume_point(answer, manifest, "payload")
            await _pushed(service, participant, record, manifest)
            return
        except OutboundRefused as exc:  # the guard's answer does not change on a retry
            raise MoveFailed(f"the consumer's receiving endpoint is refused: {exc.message}") from None
        except (PeerError, _Resend) as exc:
            attempt += 1
            delay = backoff(attempt)
            if time.time() + delay > deadline:
                raise MoveFailed(f"the consumer's receiving endpoint made no progress for {stall:g} s: "
                                 f"{exc}") from None
            log.info("push interrupted; resuming", id=record.id, error=str(exc)[:200])
            what = "the consumer asked for a resend" if isinstance(exc, _Resend) else "push interrupted"
            await node.transfers_repo.add_event(participant.id, record.id, now_text(), "resume",
                                                f"{what} ({str(exc)[:200]}); again in {delay:.1f} s")
            await asyncio.sleep(delay)


class _Resend(Exception):
    """The consumer answered 422: push again from its resume point."""


async def _pushed(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                  manifest: manifests.Manifest) -> None:
    """The consumer holds every byte: note it, so that a restart waits for its completion instead of pushing."""
    log.info("payload pushed", id=record.id, bytes=manifest.size)
    async with service.lock((participant.id, record.id)):
        current = await service.node.transfers_repo.get(participant.id, record.id)
        if current is None or current.state != State.STARTED.value or current.data_address is None:
            return
        done = _replace(current, data_address={**current.data_address, "pushed": True})
        await service.commit(current, done, "pushed",
                             f"the consumer holds all {manifest.size} bytes; its completion message is awaited")


async def _consumer_moved_on(service: TransferService, participant: ParticipantRuntime,
                             record: TransferRecord) -> bool:
    """The inbox refused our token: whether that is because the consumer's transfer is over or suspended
    (its message about it is on its way), by its own DSP view of the transfer."""
    state = await service.peer_state(participant, record)
    if state in (State.COMPLETED, State.TERMINATED, State.SUSPENDED):
        log.info("push not needed: the consumer's transfer is no longer STARTED", id=record.id, theirs=state.value)
        return True
    return False


def _resume_point(answer: PeerResponse, manifest: manifests.Manifest, what: str) -> int:
    """The consumer's resume point from its answer (a chunk boundary within the payload), or why not."""
    if answer.status in (400, 401, 403, 404, 409, 413):
        raise MoveFailed(f"the consumer refused the {what} ({answer.status}: {peer_reason(answer.body)})")
    if answer.status != 200:
        raise PeerError(f"the consumer's receiving endpoint answered {answer.status}: {peer_reason(answer.body)}")
    body = answer.json()
    received = body.get("received") if isinstance(body, dict) else None
    if type(received) is not int or not 0 <= received <= manifest.size or (
            received % manifest.chunk_size and received != manifest.size):
        raise MoveFailed(f"the consumer's answer to the {what} names no valid resume point")
    return received


# -- consumer ---------------------------------------------------------------------------------------------


class MoveFailed(Exception):
    """The pull or push cannot go on; the transfer is terminated with this reason."""


class _Stopped(Exception):
    """The transfer left STARTED meanwhile (suspended, terminated): the pull just ends."""


async def pull(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    """Pull the payload of a STARTED transfer into the vault, then complete the transfer."""
    node = service.node
    try:
        await _pull(service, participant, transfer_id)
    except (asyncio.CancelledError, _Stopped):
        return
    except (MoveFailed, StorageError, OutboundRefused) as exc:  # StorageError: the vault cannot take it (e.g. its
        # key is not ours); OutboundRefused: the provider's data address leads where the guard refuses to go.
        log.warning("pull failed", id=transfer_id, reason=str(exc))
        await service.do(participant, transfer_id, "terminate", str(exc)[:900], expected_state=State.STARTED.value)
        record = await node.transfers_repo.get(participant.id, transfer_id)
        if record is not None:
            node.vault.discard_partial(participant, record.agreement_id, record.id)
    except Exception:
        log.exception("pull stopped", id=transfer_id)


async def _pull(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    node = service.node
    record = await node.transfers_repo.get(participant.id, transfer_id)
    if record is None or record.state != State.STARTED.value or record.data_address is None:
        return
    if reason := await _not_receivable(node, participant, record):
        raise MoveFailed(reason)
    address = record.data_address
    endpoint, token = address.get("endpoint"), _property(address, "authorization")
    if not isinstance(endpoint, str) or not token:
        raise MoveFailed("the provider's data address has no endpoint or token")
    headers = {"Authorization": f"Bearer {token}"}
    seal_key: bytes | None = None
    ephemeral = _property(address, EPHEMERAL_PROPERTY)
    if ephemeral:
        scheme = _property(address, SEALING_PROPERTY)
        if scheme != SEALING_SCHEME:
            raise MoveFailed(f"the provider seals with {str(scheme)[:100]!r}; this node reads {SEALING_SCHEME}")
        seal_key = _push_key(participant, record, ephemeral)
        if record.manifest is None:  # first time only (a resumed pull keeps the same key)
            await node.transfers_repo.add_event(participant.id, record.id, now_text(), "sealed", SEALED_DETAIL)
    if record.manifest is None:
        record = await _fetch_manifest(service, participant, record, address, headers)
    assert record.manifest is not None
    manifest = manifests.decode(record.manifest)
    target = node.vault.partial_path(participant, record.agreement_id, record.id)
    await asyncio.to_thread(filemodes.make_dir, target.parent)
    retries = node.config.node.transfer_chunk_retries
    failures: dict[int, int] = {}
    deadline = time.time() + node.config.node.transfer_stall_timeout_s
    attempt = 0
    progress = _Progress(record.received)
    if progress.received:
        await node.transfers_repo.add_event(participant.id, record.id, now_text(), "resume",
                                            f"resuming the pull at byte {progress.received} of {manifest.size}")
    while progress.received < manifest.size or (manifest.size == 0 and not target.exists()):
        try:
            await _stream_once(service, participant, record, manifest, endpoint, headers, target, progress,
                               seal_key)
            deadline = time.time() + node.config.node.transfer_stall_timeout_s
            attempt = 0
        except _BadChunk as exc:
            failures[exc.index] = failures.get(exc.index, 0) + 1
            if failures[exc.index] > retries:
                raise MoveFailed(f"chunk {exc.index} failed verification {failures[exc.index]} times "
                                 f"({exc.why}); giving up") from None
            await node.transfers_repo.add_event(participant.id, record.id, now_text(), "retry",
                                                f"chunk {exc.index} {exc.why}; fetching it again")
        except OutboundRefused:
            raise  # final: the pull is terminated with the guard's reason
        except (PeerError, OSError, ConnectionError) as exc:
            attempt += 1
            delay = backoff(attempt)
            if time.time() + delay > deadline:
                raise MoveFailed(f"the provider's data endpoint failed for "
                                 f"{node.config.node.transfer_stall_timeout_s:.0f} s: {exc}") from None
            log.info("pull interrupted; resuming", id=record.id, at=progress.received, error=str(exc)[:200])
            await node.transfers_repo.add_event(participant.id, record.id, now_text(), "resume",
                                                f"stream interrupted ({str(exc)[:200]}); resuming at byte "
                                                f"{progress.received} in {delay:.1f} s")
            await asyncio.sleep(delay)
    await _finish(service, participant, record, manifest, target)


async def _not_receivable(node: Node, participant: ParticipantRuntime, record: TransferRecord) -> str | None:
    """Why the agreement's data may no longer be received here (revoked meanwhile), or None."""
    agreement = await node.contracts.agreement(participant.id, record.agreement_id)
    if agreement is None or agreement.state != "FINALIZED":
        state = agreement.state if agreement is not None else "unknown"
        return f"agreement {record.agreement_id} is {state} here: its data may no longer be received"
    return None


class _BadChunk(Exception):
    def __init__(self, index: int, why: str) -> None:
        super().__init__(why)
        self.index, self.why = index, why


class _Dropped(PeerError):
    """The stream broke off (connection lost, short body, unexpected status): resume from the last chunk."""


async def _fetch_manifest(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                          address: dict[str, Any], headers: dict[str, str]) -> TransferRecord:
    node = service.node
    url = _property(address, MANIFEST_PROPERTY) or f"{address['endpoint']}/manifest"
    response = await node.client.request("GET", url, signer=participant.signer, headers=headers)
    if response.status != 200:
        raise MoveFailed(f"the provider refused the manifest request ({response.status})")
    return await _accept_manifest(service, participant, record, response.json())


async def _accept_manifest(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                           body: Any, **changes: Any) -> TransferRecord:
    """Check the provider's manifest and envelope (signature, binding, vault quota), then store them.

    The transfer must still be STARTED (:class:`_Stopped` otherwise); *changes* are stored with them."""
    node = service.node
    if not isinstance(body, dict):
        raise MoveFailed("the manifest does not verify: the body is not a JSON object")
    try:
        manifest = manifests.decode(body.get("manifest"))
        document = await node.resolver.resolve(record.counterparty_did)
        binding = manifests.Binding(agreement_id=record.agreement_id, provider_pid=record.provider_pid or "",
                                    consumer_pid=record.id, provider=record.counterparty_did, consumer=participant.did)
        manifests.verify_envelope(body.get("envelope"), manifest, document, binding)
    except (manifests.ManifestError, TdsError) as exc:
        raise MoveFailed(f"the manifest does not verify: {exc}") from exc
    quota = node.config.node.vault_quota_bytes
    used = await asyncio.to_thread(node.vault.usage, participant)
    if used + manifest.size > quota:
        raise MoveFailed(f"vault quota exceeded: {manifest.size} more bytes would make {used + manifest.size} of the "
                         f"participant's {quota} (node.vault_quota_bytes)")
    async with service.lock((participant.id, record.id)):
        current = await node.transfers_repo.get(participant.id, record.id)
        if current is None or current.state != State.STARTED.value:
            raise _Stopped
        bundle = manifests.bundle(manifest, body["envelope"], document)
        updated = _replace(current, manifest=manifests.encode(manifest), envelope=bundle, size=manifest.size,
                           received=0, **changes)
        updated = await service.commit(current, updated, "manifest",
                                       f"manifest of {manifest.size} bytes in {len(manifest.chunks)} chunks "
                                       f"({manifest.algorithm}), envelope signed by {record.counterparty_did}")
    partial = node.vault.partial_path(participant, updated.agreement_id, updated.id)
    await asyncio.to_thread(partial.unlink, missing_ok=True)
    return updated


class _Progress:
    """The resume point of a pull: bytes verified and written, in order."""

    def __init__(self, received: int) -> None:
        self.received = received


async def _stream_once(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                       manifest: manifests.Manifest, endpoint: str, headers: dict[str, str], target: Path,
                       progress: _Progress, seal_key: bytes | None = None) -> None:
    """One GET from the resume point on, advancing *progress* as chunks are verified and written."""
    node = service.node
    with await _open_writer(node, participant, record, manifest, target, progress) as out:
        send = dict(headers)
        if progress.received:
            send["Range"] = f"bytes={progress.received}-"
        try:
            async with node.client.stream(endpoint, signer=participant.signer, headers=send) as resp:
                if resp.status == 401:
                    raise MoveFailed("the provider refused the transfer token")
                if resp.status != (206 if progress.received else 200):
                    raise _Dropped(f"the data endpoint answered {resp.status}")
                await _receive(service, participant, record, manifest, resp.content, out, progress, seal_key)
        except PeerError as exc:
            if isinstance(exc, (_Dropped, OutboundRefused)):
                raise
            raise _Dropped(exc.message) from exc


async def _open_writer(node: Node, participant: ParticipantRuntime, record: TransferRecord,
                       manifest: manifests.Manifest, target: Path, progress: _Progress) -> VaultWriter:
    """The vault's partial file of a transfer, open at the resume point (moved back, and saved, if the
    file lost its tail since that point was committed). The caller closes it."""
    out = await asyncio.to_thread(node.vault.writer, participant, record.agreement_id, target,
                                  chunk_size=manifest.chunk_size, received=progress.received)
    try:
        if out.received < progress.received:
            progress.received = out.received
            await node.transfers_repo.set_received(participant.id, record.id, progress.received)
        if manifest.size == 0 and out.next_index == 0:  # an empty payload is one empty (last) chunk
            out.write(0, b"", last=True)
    except BaseException:
        out.close()
        raise
    return out


async def _receive(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                   manifest: manifests.Manifest, content: StreamReader, out: VaultWriter,
                   progress: _Progress, seal_key: bytes | None) -> None:
    """Read the payload from the resume point on off *content* (a pulled response or a pushed request),
    verifying every chunk, sealing it for the vault and writing it to *out*, and advancing *progress*.

    A pipeline of two: while a worker thread verifies chunk *n* and writes it (only if it verifies), the
    event loop receives chunk *n+1* into the other of two reusable buffers (memory: two chunks).
    """
    node = service.node
    loop = asyncio.get_running_loop()
    last = max(len(manifest.chunks), 1) - 1
    stall = node.config.node.transfer_stall_timeout_s
    tag = sealing.TAG_SIZE if seal_key is not None else 0
    buffers = [memoryview(bytearray(manifest.chunk_size + tag)), memoryview(bytearray(manifest.chunk_size + tag))]
    half = manifest.size // 2
    checkpoint = progress.received
    pending: asyncio.Future[bool] | None = None
    pending_index = pending_length = 0

    def check_and_write(chunk: memoryview, index: int) -> bool:
        if seal_key is not None:  # decrypt, then verify the plaintext against the manifest, then store
            try:
                chunk = memoryview(sealing.open_chunk(seal_key, record.provider_pid or "", index, chunk))
            except sealing.SealError:
                return False
        if not manifests.chunk_ok(manifest, index, chunk):
            return False
        out.write(index, chunk, last=index == last)  # sealed for the vault, on this same worker thread
        return True

    async def settle() -> None:
        nonlocal pending, checkpoint
        if pending is None:
            return
        job, pending = pending, None
        if not await job:
            raise _BadChunk(pending_index, "did not match its digest")
        progress.received += pending_length
        if progress.received - checkpoint >= CHECKPOINT_BYTES:
            out.flush()
            await node.transfers_repo.set_received(participant.id, record.id, progress.received)
            checkpoint = progress.received
            if checkpoint - CHECKPOINT_BYTES < half <= checkpoint:
                crash_point("consumer-mid-receive")

    try:
        fetched, turn = progress.received, 0
        spare = memoryview(b"")  # received beyond the chunk being filled (readany hands over whole pieces)
        while fetched < manifest.size:
            index = fetched // manifest.chunk_size
            want = manifest.chunk_length(index)
            wire = want + tag
            view = buffers[turn]
            filled = 0
            try:
                async with asyncio.timeout(stall):  # a peer trickling bytes must not hold the transfer forever
                    while filled < wire:
                        data = spare if spare else memoryview(await content.readany())
                        if not data:
                            await settle()
                            raise _BadChunk(index, "the stream ended early") if filled else _Dropped(
                                "the stream ended early")
                        take = min(len(data), wire - filled)
                        view[filled:filled + take] = data[:take]
                        spare = data[take:]
                        filled += take
            except TimeoutError:
                raise _Dropped(f"chunk {index} did not arrive within {stall:g} s") from None
            await settle()  # the other buffer is free again once its chunk is written
            pending = loop.run_in_executor(None, check_and_write, view[:wire], index)
            pending_index, pending_length = index, want
            fetched += want
            turn ^= 1
        await settle()
    finally:
        async def keep() -> None:
            if pending is not None:  # a chunk still being checked when the stream failed: keep it if good
                with contextlib.suppress(Exception):
                    if await pending:
                        progress.received += pending_length
            out.flush()
            if progress.received != checkpoint:
                await node.transfers_repo.set_received(participant.id, record.id, progress.received)

        await _uninterrupted(keep())


async def _uninterrupted(step: Coroutine[Any, Any, None]) -> None:
    """Run *step* to its end even if this task is cancelled (again) meanwhile, then let the cancellation
    through: saving the resume point must not be cut short by a suspension and a dropped connection at once."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


# -- consumer: receiving a push -----------------------------------------------------------------------------


def inbox_routes(node: Node) -> list[web.RouteDef]:
    """``PUT /participants/NAME/inbox/:consumerPid/manifest`` (the signed envelope; answers the resume point)
    and ``POST …/inbox/:consumerPid?offset=N`` (the chunks from N on), for a push transfer we requested."""
    base = "/participants/{name}/inbox/{pid}"
    receiving: dict[tuple[str, str], asyncio.Lock] = {}
    failures: dict[tuple[str, str], dict[int, int]] = {}

    async def authorise(request: web.Request, *, streamed: bool) -> tuple[ParticipantRuntime, TransferRecord]:
        return await _token_holder(node, request, role="consumer", push=True, streamed=streamed)

    async def manifest(request: web.Request) -> web.Response:
        participant, record = await authorise(request, streamed=False)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with manifest and envelope")
        ephemeral = _ephemeral_of(body.get("sealing"))
        if record.manifest is None:
            try:
                if ephemeral:  # the transfer key must derive before anything is accepted
                    _push_key(participant, record, ephemeral)
                record = await _accept_manifest(node.transfers, participant, record, body,
                                                data_address={"push": {}, "ephemeral": ephemeral})
            except MoveFailed as exc:
                await node.transfers.do(participant, record.id, "terminate", str(exc)[:900],
                                        expected_state=State.STARTED.value)
                raise BadRequest(str(exc)) from None
            except _Stopped:
                raise Unauthorized("the token is not valid for this transfer, caller or state") from None
            if ephemeral:
                await node.transfers_repo.add_event(participant.id, record.id, now_text(), "sealed", SEALED_DETAIL)
        else:
            try:
                same = manifests.decode(body.get("manifest")) == manifests.decode(record.manifest)
            except manifests.ManifestError as exc:
                raise BadRequest(f"the manifest is malformed: {exc}") from None
            if not same or ephemeral != (record.data_address or {}).get("ephemeral"):
                raise Conflict("this transfer already has another manifest or key; it cannot change")
            if record.size is not None and record.received >= record.size:
                node.transfers.react_soon(participant, record.id)  # all here: place it and complete
        return web.json_response({"received": record.received, "size": record.size})

    async def data(request: web.Request) -> web.Response:
        participant, record = await authorise(request, streamed=True)
        key = (participant.id, record.id)
        if record.manifest is None:
            raise Conflict("send the manifest (PUT …/manifest) before the payload")
        lock = receiving.setdefault(key, asyncio.Lock())
        if lock.locked():
            raise TooManyRequests("a push of this transfer is already being received", retry_after=1)
        try:
            async with lock:
                return await receive_push(participant, key, request)
        finally:
            if not lock.locked() and receiving.get(key) is lock:
                del receiving[key]

    async def receive_push(participant: ParticipantRuntime, key: tuple[str, str],
                           request: web.Request) -> web.Response:
        task = asyncio.current_task()
        assert task is not None
        node.transfers.serving(key, task)  # before the state is read: a suspension or termination cuts it
        try:
            return await receive(participant, key, request)
        finally:
            node.transfers.served(key, task)

    async def receive(participant: ParticipantRuntime, key: tuple[str, str], request: web.Request) -> web.Response:
        record = await node.transfers_repo.get(*key)
        if record is None or record.state != State.STARTED.value or record.manifest is None:
            raise Unauthorized("the token is not valid for this transfer, caller or state")
        if reason := await _not_receivable(node, participant, record):
            await node.transfers.do(participant, record.id, "terminate", reason, expected_state=State.STARTED.value)
            raise Conflict(reason)
        manifest = manifests.decode(record.manifest)
        if record.received >= manifest.size:  # all here already (an answer got lost): nothing to cut or write
            node.transfers.react_soon(participant, record.id)
            return web.json_response({"received": manifest.size, "complete": True})
        ephemeral = str((record.data_address or {}).get("ephemeral") or "")
        seal_key = _push_key(participant, record, ephemeral) if ephemeral else None
        offset = request.query.get("offset", "")
        if not offset.isdigit() or int(offset) != record.received:
            return _resend(record.received, f"this transfer resumes at byte {record.received}")
        if request.content_length != wire_length(manifest, record.received, seal_key is not None):
            raise BadRequest("Content-Length does not match the rest of the payload from this offset")
        target = node.vault.partial_path(participant, record.agreement_id, record.id)
        progress = _Progress(record.received)
        try:
            await asyncio.to_thread(filemodes.make_dir, target.parent)
            with await _open_writer(node, participant, record, manifest, target, progress) as out:
                if progress.received != record.received:  # the file lost its tail: resume further back
                    return _resend(progress.received, f"this transfer resumes at byte {progress.received}")
                await _receive(node.transfers, participant, record, manifest, request.content, out, progress,
                               seal_key)
        except _BadChunk as exc:
            counts = failures.setdefault(key, {})
            counts[exc.index] = counts.get(exc.index, 0) + 1
            if counts[exc.index] > node.config.node.transfer_chunk_retries:
                failures.pop(key, None)
                reason = f"chunk {exc.index} failed verification {counts[exc.index]} times ({exc.why}); giving up"
                await node.transfers.do(participant, record.id, "terminate", reason,
                                        expected_state=State.STARTED.value)
                node.vault.discard_partial(participant, record.agreement_id, record.id)
                raise Conflict(reason) from None
            await node.transfers_repo.add_event(participant.id, record.id, now_text(), "retry",
                                                f"chunk {exc.index} {exc.why}; asked the provider again")
            return _resend(progress.received, f"chunk {exc.index} {exc.why}")
        except (_Dropped, ConnectionError, ClientError, asyncio.IncompleteReadError) as exc:
            # The provider went away mid-body: what was verified is kept; it resumes from there.
            log.info("push interrupted", id=record.id, at=progress.received, error=str(exc)[:200])
            return _resend(progress.received, "the body ended early")
        except StorageError as exc:  # the vault refuses this data for good (its folder's key is not ours)
            reason = f"the data cannot be stored here: {exc}"
            await node.transfers.do(participant, record.id, "terminate", reason[:900],
                                    expected_state=State.STARTED.value)
            node.vault.discard_partial(participant, record.agreement_id, record.id)
            raise Conflict(reason) from None
        except OSError as exc:  # our own storage failed: not the provider's fault, and not a resend loop
            log.error("push not stored", id=record.id, error=str(exc)[:200])
            await node.transfers_repo.add_event(participant.id, record.id, now_text(), "error",
                                                f"the vault could not store the data: {str(exc)[:200]}")
            raise StorageError(f"the consumer could not store the data ({exc.strerror or exc})") from None
        failures.pop(key, None)
        complete = progress.received >= manifest.size
        if complete:
            node.transfers.react_soon(participant, record.id)
        return web.json_response({"received": progress.received, "complete": complete})

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


def _push_key(participant: ParticipantRuntime, record: TransferRecord, ephemeral: str) -> bytes:
    """The transfer key, from our X25519 key and the provider's ephemeral public key (multibase)."""
    from connector.identity.multikey import MultikeyError, decode_multibase

    try:
        return sealing.recipient_key(participant.keys.agreement, decode_multibase(ephemeral),
                                     record.provider_pid or "")
    except (MultikeyError, sealing.SealError) as exc:
        raise MoveFailed(f"the provider's ephemeral key is unusable: {exc}") from exc


async def finish_push(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    """Consumer: every pushed chunk is verified and written; place the file and complete the transfer."""
    record = await service.node.transfers_repo.get(participant.id, transfer_id)
    if record is None or record.manifest is None or record.state != State.STARTED.value:
        return
    target = service.node.vault.partial_path(participant, record.agreement_id, record.id)
    if await asyncio.to_thread(target.exists):
        await _finish(service, participant, record, manifests.decode(record.manifest), target)


async def _finish(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                  manifest: manifests.Manifest, target: Path) -> None:
    """Every chunk verified: move the file into place beside its bundle, then complete the transfer."""
    node = service.node
    async with service.lock((participant.id, record.id)):
        current = await node.transfers_repo.get(participant.id, record.id)
        if current is None or current.state != State.STARTED.value or current.pending is not None:
            return
        final = await asyncio.to_thread(node.vault.keep, target, record.asset_id or record.id, current.envelope or {})
        relative = str(final.relative_to(node.data_dir))
        current = _replace(current, received=manifest.size, vault_path=relative)
        log.info("payload verified", id=record.id, bytes=manifest.size, chunks=len(manifest.chunks), path=relative)
        await service._send(participant, current, Kind.COMPLETION)
