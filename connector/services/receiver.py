"""The consumer's side of the data plane: pulling a payload, receiving a pushed one, and the one
verify-before-write pipeline both use, then placing the file and completing the transfer.

Pull (:func:`pull`): fetches the manifest and the signed envelope, checks the envelope against the
provider's DID document and the binding (agreement, both pids, both DIDs), then streams the payload into
``vault/PARTICIPANT/AGREEMENT/.TRANSFER.part``. Each chunk is collected in one reusable buffer, hashed and
compared with the manifest *before* it is sealed under the agreement's data key and written (the vault is
encrypted at rest, see :mod:`connector.services.vault`); a bad chunk is dropped and fetched again with a
``Range`` request from its offset, up to ``transfer_chunk_retries`` times, then the transfer is terminated
with the reason. The resume point (bytes verified and written) is committed as the stream goes; after a
connection drop or a restart of either node the pull continues from there (the partial file is first cut
back to it). Only when the last chunk is verified is the file renamed into place, so nothing half-written
is ever visible under its final name.

Push (:class:`Inbox`, behind the routes of :mod:`connector.http.dataplane`): the provider's manifest and
envelope are checked as above, then the pushed body is received with the same pipeline (:func:`_receive`).
A chunk that does not verify, a body that starts elsewhere than the resume point or ends early, is answered
with the resume point to send again from; a chunk that fails too often terminates the transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import ClientError, StreamReader

from connector import filemodes
from connector.errors import (
    BadRequest,
    Conflict,
    OutboundRefused,
    PeerError,
    StorageError,
    TdsError,
    TooManyRequests,
    Unauthorized,
)
from connector.faults import crash_point
from connector.logging import get_logger
from connector.payload import manifest as manifests
from connector.payload import sealing
from connector.protocol.agreement_lifecycle import IN_FORCE
from connector.protocol.transfer import Kind, State
from connector.services.dataplane import SEALED_DETAIL, Lane, MoveFailed, wire_length
from connector.services.process_shell import Key, backoff
from connector.services.transfer import (
    EPHEMERAL_PROPERTY,
    MANIFEST_PROPERTY,
    SEALING_PROPERTY,
    SEALING_SCHEME,
    TransferService,
    _property,
    _replace,
)
from connector.services.vault import DataKeyError, VaultWriteError
from connector.store.records import TransferRecord

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.vault import VaultWriter

log = get_logger(component="dataplane")

#: Commit the resume point at least every this many bytes.
CHECKPOINT_BYTES = 16 * 1024 * 1024
#: Bytes of chunks received and handed to the worker but not yet written, at most (two chunks at least).
IN_FLIGHT_BYTES = 4 * 1024 * 1024


class _Stopped(Exception):
    """The transfer left STARTED meanwhile (suspended, terminated): the pull just ends."""


async def pull(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    """Pull the payload of a STARTED transfer into the vault, then complete the transfer."""
    try:
        await _pull(service, participant, transfer_id)
    except (asyncio.CancelledError, _Stopped):
        return
    except (MoveFailed, StorageError, OutboundRefused) as exc:  # StorageError: the vault cannot take it for good
        # (its key is not ours); OutboundRefused: the provider's data address leads where the guard refuses to go.
        log.warning("pull failed", id=transfer_id, reason=str(exc))
        await _give_up(service, participant, transfer_id, str(exc))
    except Exception:
        log.exception("pull stopped", id=transfer_id)


async def _give_up(service: TransferService, participant: ParticipantRuntime, transfer_id: str,
                   reason: str) -> None:
    """Terminate a STARTED transfer with *reason* and remove what it wrote. If even that cannot be committed now
    (the database's disk is full too), the partial file still goes, and the stall limit's timer tries again."""
    try:
        await service.do(participant, transfer_id, "terminate", reason[:900], expected_state=State.STARTED)
    except StorageError as exc:
        log.error("transfer not terminated", id=transfer_id, reason=reason[:300], error=exc.message)
    record = await service.repository.get(participant.id, transfer_id)
    if record is not None:
        await asyncio.to_thread(service.vault.discard_partial, participant, record.agreement_id, record.id)


class _Pause:
    """The pauses between a move's attempts: growing (:func:`backoff`), counted again from the first whenever
    the transfer made progress since the last failure, and none once the next attempt would start after the
    stall limit (``transfer_stall_timeout_s`` from the last progress)."""

    def __init__(self, service: TransferService, key: Key) -> None:
        self.service, self.key = service, key
        self.attempt = 0
        self.since: float | None = None
        self.delay: float | None = None

    def next(self) -> float | None:
        """The pause before the next attempt (also kept as :attr:`delay`), or None: the stall limit is reached,
        give up."""
        since = self.service.progressed_at(self.key)
        if since != self.since:
            self.since, self.attempt = since, 0
        self.attempt += 1
        delay = backoff(self.attempt)
        self.delay = delay if self.service.now() + delay <= since + self.service.stall_timeout else None
        return self.delay


async def _pull(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    record = await service.repository.get(participant.id, transfer_id)
    if record is None or record.state != State.STARTED or record.data_address is None:
        return
    if reason := await _not_receivable(service, participant, record):
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
        seal_key = push_key(participant, record, ephemeral)
    key = (participant.id, record.id)
    target = service.vault.partial_path(participant, record.agreement_id, record.id)
    retries = service.chunk_retries
    failures: dict[int, int] = {}
    pause = _Pause(service, key)
    progress = _Progress(record.received)
    noted = {"sealed": record.manifest is not None, "resume": False}
    while True:  # one attempt per turn, until the payload is in the vault or the transfer is given up
        before = service.progressed_at(key)
        try:
            if record.manifest is None:
                if seal_key is not None and not noted["sealed"]:  # once (a resumed pull keeps the same key)
                    await service.repository.add_event(participant.id, record.id, service.timestamp(), "sealed",
                                                       SEALED_DETAIL)
                    noted["sealed"] = True
                record = await _fetch_manifest(service, participant, record, address, headers)
                progress.received = 0
            assert record.manifest is not None
            manifest = manifests.decode(record.manifest)
            if progress.received and not noted["resume"]:
                await service.repository.add_event(participant.id, record.id, service.timestamp(), "resume",
                                                   f"resuming the pull at byte {progress.received} of {manifest.size}")
                noted["resume"] = True
            current = await service.repository.get(participant.id, record.id)
            if current is None or current.state != State.STARTED:
                raise _Stopped
            if not current.vault_path:  # not placed yet (only its completion may be left)
                while progress.received < manifest.size or (manifest.size == 0 and not target.exists()):
                    await _stream_once(service, participant, record, manifest, endpoint, headers, target, progress,
                                       seal_key)
            await _finish(service, participant, record, manifest, target)
            return
        except _BadChunk as exc:
            failures[exc.index] = failures.get(exc.index, 0) + 1
            if failures[exc.index] > retries:
                raise MoveFailed(f"chunk {exc.index} failed verification {failures[exc.index]} times "
                                 f"({exc.why}); giving up") from None
            await _note(service, record, "retry", f"chunk {exc.index} {exc.why}; fetching it again")
        except (OutboundRefused, DataKeyError):
            raise  # final: the pull is terminated with the reason
        except StorageError as exc:  # this node could not store what arrived (vault or database): not the
            # provider's doing. The attempt ends, its partial file goes (the space is freed), and it starts again.
            why = await _not_stored(service, participant, record, exc, before, pause.next)
            progress.received = 0
            delay = pause.delay
            if delay is None:
                raise MoveFailed(service.stall_reason(record, 0, why)) from None
            await asyncio.sleep(delay)
        except (PeerError, OSError, ConnectionError) as exc:
            delay = pause.next()
            if delay is None:
                raise MoveFailed(f"the provider's data endpoint failed for "
                                 f"{service.stall_timeout:.0f} s: {exc}") from None
            log.info("pull interrupted; resuming", id=record.id, at=progress.received, error=str(exc)[:200])
            await _note(service, record, "resume", f"stream interrupted ({str(exc)[:200]}); resuming at byte "
                                                   f"{progress.received} in {delay:.1f} s")
            await asyncio.sleep(delay)


async def _note(service: TransferService, record: TransferRecord, kind: str, detail: str) -> None:
    """Add an event to the transfer's history; one the database cannot take now (its disk is full) is logged
    instead, and the pull goes on."""
    try:
        await service.repository.add_event(record.participant_id, record.id, service.timestamp(), kind, detail)
    except StorageError as exc:
        log.warning("transfer event not recorded", id=record.id, kind=kind, detail=detail[:300], error=exc.message)


def _storage_failure(exc: BaseException, folder: Path, database: str = "the database") -> StorageError:
    """*exc*, a failure to store received data, as a :class:`StorageError` whose message names the error and
    where (the agreement's *folder*, or the *database*), never the data."""
    if isinstance(exc, StorageError):
        return exc if isinstance(exc, VaultWriteError) else StorageError(f"writing in {database} failed: {exc.message}")
    if isinstance(exc, OSError):
        return VaultWriteError(exc, folder)
    return StorageError(f"{type(exc).__name__}: {str(exc)[:200]}")


def _database(service: TransferService) -> str:
    """The node's database file as a reason names it (relative to the data folder)."""
    path = service.repository.store.path
    if not isinstance(path, Path):
        return f"the store {service.repository.store.describe()}"
    return f"the database {path.relative_to(service.data_dir) if path.is_relative_to(service.data_dir) else path}"


async def _not_stored(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                      exc: BaseException, progressed_before: float, pause: Callable[[], float | None] | None = None,
                      *, then: str = "") -> str:
    """An attempt (begun when the transfer had last progressed at *progressed_before*) could not store what it
    received: remove the transfer's partial file (the space it took is freed; the next attempt starts at byte
    0), tell the service (what the attempt wrote was no progress; the stall limit names the cause), then ask
    *pause* for the pause before the next attempt and note why and what next in the history and the log.
    Returns the reason. What cannot be noted in the database (its disk is full too) is logged, and the
    attempts go on."""
    folder = service.vault.agreement_dir(participant, record.agreement_id)
    why = f"could not store the received data: {_storage_failure(exc, folder, _database(service)).message}"
    await asyncio.to_thread(service.vault.discard_partial, participant, record.agreement_id, record.id)
    key = (participant.id, record.id)
    service.attempt_failed(key, why, progressed_before)
    delay = pause() if pause is not None else None
    step = then or ("giving up" if delay is None else f"trying again in {delay:.1f} s")
    log.warning("transfer attempt failed", id=record.id, reason=why, next=step)
    try:
        await service.repository.set_received(participant.id, record.id, 0)
        await service.repository.add_event(participant.id, record.id, service.timestamp(), "error",
                                           f"{why}; the partial file was removed; {step}")
    except StorageError as failed:
        log.warning("transfer attempt failure not recorded", id=record.id, error=failed.message)
    return why


async def _not_receivable(service: TransferService, participant: ParticipantRuntime, record: TransferRecord
                          ) -> str | None:
    """Why the agreement's data may no longer be received here (revoked meanwhile), or None."""
    agreement = await service.contracts.agreement(participant.id, record.agreement_id)
    if agreement is None or agreement.state not in IN_FORCE:
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
    url = _property(address, MANIFEST_PROPERTY) or f"{address['endpoint']}/manifest"
    response = await service.client.request("GET", url, signer=participant.signer, headers=headers)
    if response.status != 200:
        raise MoveFailed(f"the provider refused the manifest request ({response.status})")
    return await _accept_manifest(service, participant, record, response.json())


async def _accept_manifest(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                           body: Any, **changes: Any) -> TransferRecord:
    """Check the provider's manifest and envelope (signature, binding, vault quota), then store them.

    The transfer must still be STARTED (:class:`_Stopped` otherwise); *changes* are stored with them."""
    if not isinstance(body, dict):
        raise MoveFailed("the manifest does not verify: the body is not a JSON object")
    try:
        manifest = manifests.decode(body.get("manifest"))
        document = await service.resolver.resolve(record.counterparty_did)
        binding = manifests.Binding(agreement_id=record.agreement_id, provider_pid=record.provider_pid or "",
                                    consumer_pid=record.id, provider=record.counterparty_did, consumer=participant.did)
        manifests.verify_envelope(body.get("envelope"), manifest, document, binding)
    except (manifests.ManifestError, TdsError) as exc:
        raise MoveFailed(f"the manifest does not verify: {exc}") from exc
    quota = service.vault_quota_bytes
    used = await asyncio.to_thread(service.vault.usage, participant)
    if used + manifest.size > quota:
        raise MoveFailed(f"vault quota exceeded: {manifest.size} more bytes would make {used + manifest.size} of the "
                         f"participant's {quota} (node.vault_quota_bytes)")
    async with service.lock((participant.id, record.id)):
        current = await service.repository.get(participant.id, record.id)
        if current is None or current.state != State.STARTED:
            raise _Stopped
        bundle = manifests.bundle(manifest, body["envelope"], document)
        updated = _replace(current, manifest=manifests.encode(manifest), envelope=bundle, size=manifest.size,
                           received=0, **changes)
        updated = await service.commit(current, updated, "manifest",
                                       f"manifest of {manifest.size} bytes in {len(manifest.chunks)} chunks "
                                       f"({manifest.algorithm}), envelope signed by {record.counterparty_did}")
    service.progressed((participant.id, record.id))
    await asyncio.to_thread(service.vault.discard_partial, participant, updated.agreement_id, updated.id)
    return updated


class _Progress:
    """The resume point of a pull: bytes verified and written, in order."""

    def __init__(self, received: int) -> None:
        self.received = received


async def _stream_once(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                       manifest: manifests.Manifest, endpoint: str, headers: dict[str, str], target: Path,
                       progress: _Progress, seal_key: bytes | None = None) -> None:
    """One GET from the resume point on, advancing *progress* as chunks are verified and written."""
    with await _open_writer(service, participant, record, manifest, target, progress) as out:
        send = dict(headers)
        if progress.received:
            send["Range"] = f"bytes={progress.received}-"
        try:
            async with service.client.stream(endpoint, signer=participant.signer, headers=send) as resp:
                if resp.status == 401:
                    raise MoveFailed("the provider refused the transfer token")
                if resp.status != (206 if progress.received else 200):
                    raise _Dropped(f"the data endpoint answered {resp.status}")
                await _receive(service, participant, record, manifest, resp.content, out, progress, seal_key)
        except PeerError as exc:
            if isinstance(exc, (_Dropped, OutboundRefused)):
                raise
            raise _Dropped(exc.message) from exc


async def _open_writer(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                       manifest: manifests.Manifest, target: Path, progress: _Progress) -> VaultWriter:
    """The vault's partial file of a transfer, open at the resume point (moved back, and saved, if the
    file lost its tail since that point was committed). The caller closes it."""
    out = await asyncio.to_thread(service.vault.writer, participant, record.agreement_id, target,
                                  chunk_size=manifest.chunk_size, received=progress.received)
    try:
        if out.received < progress.received:
            progress.received = out.received
            await service.repository.set_received(participant.id, record.id, progress.received)
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

    A pipeline: the event loop takes the pieces of each chunk off *content* as they arrived (no copy) and hands
    them to the stream's own worker thread (:class:`Lane`), which takes the chunks in order, puts each together
    in its one reusable buffer, verifies it and writes it only if it verifies; once one fails, it writes none
    after it. Two chunks are with the worker at most, or more up to :data:`IN_FLIGHT_BYTES` (memory). The resume
    point advances over the chunks the worker has written, in order, and never past one that failed.
    """
    last = max(len(manifest.chunks), 1) - 1
    stall = service.stall_timeout
    tag = sealing.TAG_SIZE if seal_key is not None else 0
    depth = max(2, IN_FLIGHT_BYTES // manifest.chunk_size)
    joined: memoryview | None = None  # the worker's: where a chunk's pieces are put together (made on first use)
    half = manifest.size // 2
    checkpoint = progress.received
    #: Chunks given to the worker and not yet counted, in order: (its verdict, index, plaintext length).
    pending: deque[tuple[asyncio.Future[bool], int, int]] = deque()
    refused = False  # a chunk failed on the worker: it writes no later one (read and written on the worker only)
    context = record.provider_pid or ""

    def join(pieces: list[memoryview]) -> memoryview:
        nonlocal joined
        if joined is None:
            joined = memoryview(bytearray(manifest.chunk_size + tag))
        at = 0
        for piece in pieces:
            joined[at:at + len(piece)] = piece
            at += len(piece)
        return joined[:at]

    def check_and_write(pieces: list[memoryview], index: int) -> bool:
        nonlocal refused
        if refused:
            return False
        refused = True  # until this chunk is written: a failure below leaves every later chunk unwritten
        chunk = pieces[0] if len(pieces) == 1 else join(pieces)
        if seal_key is not None:  # decrypt, then verify the plaintext against the manifest, then store
            try:
                chunk = memoryview(sealing.open_chunk(seal_key, context, index, chunk))
            except sealing.SealError:
                return False
        if not manifests.chunk_ok(manifest, index, chunk):
            return False
        out.write(index, chunk, last=index == last)  # sealed for the vault, on this same worker thread
        refused = False
        return True

    async def settle(*, wait: bool = True) -> None:
        """Count the oldest chunk given to the worker once it is written (waiting for it unless *wait* is
        False), then every later one already done."""
        nonlocal checkpoint
        while pending and (wait or pending[0][0].done()):
            wait = False
            job, index, length = pending[0]
            ok = await asyncio.shield(job)  # a cancellation stops the stream, not the job: keep() waits for it
            pending.popleft()
            if not ok:
                raise _BadChunk(index, "did not match its digest")
            progress.received += length
            service.moved("received", length)
            service.progressed((participant.id, record.id))
            if progress.received - checkpoint >= CHECKPOINT_BYTES:
                await service.repository.set_received(participant.id, record.id, progress.received)
                checkpoint = progress.received
                if checkpoint - CHECKPOINT_BYTES < half <= checkpoint:
                    crash_point("consumer-mid-receive")

    lane = Lane("tds-receive")
    try:
        fetched = progress.received
        spare = memoryview(b"")  # received beyond the chunk being filled (pieces come as the socket gave them)
        while fetched < manifest.size:
            index = fetched // manifest.chunk_size
            want = manifest.chunk_length(index)
            wire = want + tag
            if len(pending) >= depth:
                await settle()  # the oldest chunk's pieces go once it is written
            pieces: list[memoryview] = []
            filled = 0
            try:
                async with asyncio.timeout(stall):  # a peer trickling bytes must not hold the transfer forever
                    while filled < wire:
                        data = spare if spare else memoryview(await _piece(content))
                        if not data:
                            while pending:
                                await settle()
                            raise _BadChunk(index, "the stream ended early") if filled else _Dropped(
                                "the stream ended early")
                        take = min(len(data), wire - filled)
                        pieces.append(data[:take])
                        spare = data[take:]
                        filled += take
            except TimeoutError:
                raise _Dropped(f"chunk {index} did not arrive within {stall:g} s") from None
            pending.append((lane.run(check_and_write, pieces, index), index, want))
            fetched += want
            await settle(wait=False)
        while pending:
            await settle()
    except BaseException as exc:
        failed = exc
        raise
    else:
        failed = None
    finally:
        async def keep() -> None:
            # Chunks still with the worker when the stream failed: each written one counts, in order, up to the
            # first that was not (the worker writes none after it).
            counting = True
            while pending:
                job, _, length = pending.popleft()
                with contextlib.suppress(Exception):
                    if await job and counting:
                        progress.received += length
                        service.moved("received", length)
                        continue
                counting = False
            lane.close()
            if progress.received != checkpoint:
                await service.repository.set_received(participant.id, record.id, progress.received)

        try:
            await _uninterrupted(keep())
        except (StorageError, OSError) as exc:
            if failed is None:
                raise
            # What ended the stream is what counts (a full disk that failed a write fails the save too); the
            # resume point stays where it was last saved, and the file is cut back to it on the next attempt.
            log.info("resume point not saved", id=record.id, at=progress.received, error=str(exc)[:200])


async def _piece(content: StreamReader) -> bytes:
    """The next piece of a body as it arrived (not joined with others: no copy), or b"" at its end."""
    while True:
        data, end_of_http_chunk = await content.readchunk()
        if data or not end_of_http_chunk:  # (b"", True) only marks where a chunk of a chunked body ended
            return data


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


# -- receiving a push -------------------------------------------------------------------------------------


class Received(msgspec.Struct, frozen=True):
    """The inbox's answer to a pushed body: its resume point, whether every byte is here, and, when the
    provider must send again from ``received``, why."""

    received: int
    complete: bool = False
    resend: str | None = None


class Inbox:
    """The consumer's side of a push transfer we requested: the provider's manifest, accepted once, and the
    pushed bodies, one at a time per transfer, each received from the resume point on."""

    def __init__(self, service: TransferService) -> None:
        self.service = service
        self._receiving: dict[Key, asyncio.Lock] = {}
        self._failures: dict[Key, dict[int, int]] = {}

    async def offer(self, participant: ParticipantRuntime, record: TransferRecord, body: dict[str, Any],
                    ephemeral: str) -> TransferRecord:
        """Check and store the provider's manifest and envelope (*body*; *ephemeral*: the provider's
        ephemeral key of a sealed transfer, or ""). The same offer again is answered as before; another
        manifest or key for the transfer is a conflict."""
        service = self.service
        if record.manifest is None:
            try:
                if ephemeral:  # the transfer key must derive before anything is accepted
                    push_key(participant, record, ephemeral)
                record = await _accept_manifest(service, participant, record, body,
                                                data_address={"push": {}, "ephemeral": ephemeral})
            except MoveFailed as exc:
                await service.do(participant, record.id, "terminate", str(exc)[:900],
                                 expected_state=State.STARTED)
                raise BadRequest(str(exc)) from None
            except _Stopped:
                raise Unauthorized("the token is not valid for this transfer, caller or state") from None
            if ephemeral:
                await service.repository.add_event(participant.id, record.id, service.timestamp(), "sealed",
                                                            SEALED_DETAIL)
        else:
            try:
                same = manifests.decode(body.get("manifest")) == manifests.decode(record.manifest)
            except manifests.ManifestError as exc:
                raise BadRequest(f"the manifest is malformed: {exc}") from None
            if not same or ephemeral != (record.data_address or {}).get("ephemeral"):
                raise Conflict("this transfer already has another manifest or key; it cannot change")
            if record.size is not None and record.received >= record.size:
                service.react_soon(participant, record.id)  # all here: place it and complete
        return record

    async def receive(self, participant: ParticipantRuntime, record: TransferRecord, offset: int | None,
                      length: int | None, content: StreamReader) -> Received:
        """Receive a pushed body of *length* bytes that starts at plaintext *offset* (None: not given)."""
        key = (participant.id, record.id)
        if record.manifest is None:
            raise Conflict("send the manifest (PUT …/manifest) before the payload")
        lock = self._receiving.setdefault(key, asyncio.Lock())
        if lock.locked():
            raise TooManyRequests("a push of this transfer is already being received", retry_after=1,
                                  limit="push-in-progress")
        try:
            async with lock:
                task = asyncio.current_task()
                assert task is not None
                self.service.serving(key, task)  # before the state is read: a suspension or termination cuts it
                try:
                    return await self._receive(participant, key, offset, length, content)
                finally:
                    self.service.served(key, task)
        finally:
            if not lock.locked() and self._receiving.get(key) is lock:
                del self._receiving[key]

    async def _receive(self, participant: ParticipantRuntime, key: Key, offset: int | None, length: int | None,
                       content: StreamReader) -> Received:
        service = self.service
        record = await service.repository.get(*key)
        if record is None or record.state != State.STARTED or record.manifest is None:
            raise Unauthorized("the token is not valid for this transfer, caller or state")
        if reason := await _not_receivable(service, participant, record):
            await service.do(participant, record.id, "terminate", reason, expected_state=State.STARTED)
            raise Conflict(reason)
        manifest = manifests.decode(record.manifest)
        if record.received >= manifest.size:  # all here already (an answer got lost): nothing to cut or write
            service.react_soon(participant, record.id)
            return Received(manifest.size, complete=True)
        ephemeral = str((record.data_address or {}).get("ephemeral") or "")
        seal_key = push_key(participant, record, ephemeral) if ephemeral else None
        if offset is None or offset != record.received:
            return Received(record.received, resend=f"this transfer resumes at byte {record.received}")
        if length != wire_length(manifest, record.received, seal_key is not None):
            raise BadRequest("Content-Length does not match the rest of the payload from this offset")
        target = service.vault.partial_path(participant, record.agreement_id, record.id)
        progress = _Progress(record.received)
        before = service.progressed_at(key)
        try:
            await asyncio.to_thread(filemodes.make_dir, target.parent)
            with await _open_writer(service, participant, record, manifest, target, progress) as out:
                if progress.received != record.received:  # the file lost its tail: resume further back
                    return Received(progress.received,
                                    resend=f"this transfer resumes at byte {progress.received}")
                await _receive(service, participant, record, manifest, content, out, progress, seal_key)
            if progress.received >= manifest.size:  # all here: placed now, so that a failure to is answered
                await _place(service, participant, record, manifest, target)
        except _BadChunk as exc:
            counts = self._failures.setdefault(key, {})
            counts[exc.index] = counts.get(exc.index, 0) + 1
            if counts[exc.index] > service.chunk_retries:
                self._failures.pop(key, None)
                reason = f"chunk {exc.index} failed verification {counts[exc.index]} times ({exc.why}); giving up"
                await service.do(participant, record.id, "terminate", reason, expected_state=State.STARTED)
                service.vault.discard_partial(participant, record.agreement_id, record.id)
                raise Conflict(reason) from None
            await service.repository.add_event(participant.id, record.id, service.timestamp(), "retry",
                                                f"chunk {exc.index} {exc.why}; asked the provider again")
            return Received(progress.received, resend=f"chunk {exc.index} {exc.why}")
        except (_Dropped, ConnectionError, ClientError, asyncio.IncompleteReadError) as exc:
            # The provider went away mid-body: what was verified is kept; it resumes from there.
            log.info("push interrupted", id=record.id, at=progress.received, error=str(exc)[:200])
            return Received(progress.received, resend="the body ended early")
        except DataKeyError as exc:  # the vault refuses this data for good (its folder's key is not ours)
            reason = f"the data cannot be stored here: {exc}"
            await service.do(participant, record.id, "terminate", reason[:900], expected_state=State.STARTED)
            service.vault.discard_partial(participant, record.agreement_id, record.id)
            raise Conflict(reason) from None
        except (StorageError, OSError) as exc:  # this node could not store it (a full disk, an I/O error, the
            # database): not the provider's fault. The partial file goes (its space is freed) and the provider,
            # answered 503, sends again from byte 0 after a pause, within its stall limit and ours.
            self._failures.pop(key, None)
            await _not_stored(service, participant, record, exc, before,
                              then="the provider is asked to send it again from byte 0")
            failure = _storage_failure(exc, target.parent)  # the peer is told the error, not where
            what = failure.what if isinstance(failure, VaultWriteError) else failure.message
            raise StorageError(f"the consumer could not store the data ({what}); it resumes at byte 0") from None
        self._failures.pop(key, None)
        complete = progress.received >= manifest.size
        if complete:
            service.react_soon(participant, record.id)
        return Received(progress.received, complete=complete)


def push_key(participant: ParticipantRuntime, record: TransferRecord, ephemeral: str) -> bytes:
    """The transfer key, from our X25519 key and the provider's ephemeral public key (multibase)."""
    from connector.identity.multikey import MultikeyError, decode_multibase

    try:
        return sealing.recipient_key(participant.keys.agreement, decode_multibase(ephemeral),
                                     record.provider_pid or "")
    except (MultikeyError, sealing.SealError) as exc:
        raise MoveFailed(f"the provider's ephemeral key is unusable: {exc}") from exc


async def finish_push(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    """Consumer: every pushed chunk is verified and written; place the file (if the inbox has not) and complete
    the transfer."""
    record = await service.repository.get(participant.id, transfer_id)
    if record is None or record.manifest is None or record.state != State.STARTED:
        return
    target = service.vault.partial_path(participant, record.agreement_id, record.id)
    if record.vault_path or await asyncio.to_thread(target.exists):
        try:
            await _finish(service, participant, record, manifests.decode(record.manifest), target)
        except DataKeyError:
            raise
        except (StorageError, OSError) as exc:  # the stall limit ends it if it stays so
            await _not_stored(service, participant, record, exc, service.progressed_at((participant.id, record.id)),
                              then="the provider has sent it all: the stall limit ends the transfer")


async def _place(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                 manifest: manifests.Manifest, target: Path) -> TransferRecord | None:
    """Every chunk verified: move the file into place beside its bundle and note where (the transfer stays
    STARTED until its completion is sent). The transfer as placed, or None if it moved on meanwhile. A failure
    to write raises :class:`~connector.services.vault.VaultWriteError` (or the store's error)."""
    async with service.lock((participant.id, record.id)):
        current = await service.repository.get(participant.id, record.id)
        if current is None or current.state != State.STARTED or current.pending is not None:
            return None
        if current.vault_path:
            return current
        final = await asyncio.to_thread(service.vault.keep, target, record.asset_id or record.id,
                                        current.envelope or {})
        relative = str(final.relative_to(service.data_dir))
        log.info("payload verified", id=record.id, bytes=manifest.size, chunks=len(manifest.chunks), path=relative)
        placed = _replace(current, received=manifest.size, vault_path=relative)
        return await service.commit(current, placed, "")


async def _finish(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                  manifest: manifests.Manifest, target: Path) -> None:
    """Every chunk verified: place the file (unless it is already), then complete the transfer."""
    if await _place(service, participant, record, manifest, target) is None:
        return
    async with service.lock((participant.id, record.id)):
        current = await service.repository.get(participant.id, record.id)
        if current is None or current.state != State.STARTED or current.pending is not None or not current.vault_path:
            return
        await service._send(participant, current, Kind.COMPLETION)
