"""The provider's side of the data plane: the file of a started transfer, read in chunks off the event
loop, streamed to a consumer who pulls it, or pushed to the consumer's inbox.

Serving a pull (the route is :mod:`connector.http.dataplane`): the file is sent from the requested offset by
the kernel's sendfile on a plain connection, else in 1 MiB pieces read off the event loop, or chunk by chunk,
each sealed, for a sealed transfer; the file must still be the version the manifest was made of
(:func:`source_file`). Pieces and chunks are read (and sealed) on the stream's own worker thread, the next ones
while the last is sent (:func:`_read_ahead`).

Pushing (:func:`push`): the manifest and envelope go first (``PUT …/inbox/:consumerPid/manifest``), and the
consumer answers its resume point; then the (sealed) chunks from there (``POST …?offset=N``), streamed. A 422
answer (a chunk did not verify there, or it resumes elsewhere) and a broken connection are retried after a
pause from the consumer's resume point, as long as it makes progress within ``transfer_stall_timeout_s``.
With every byte stored the push is noted as done; the consumer's completion message ends the transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from connector.errors import OutboundRefused, PeerError
from connector.faults import crash_point
from connector.logging import get_logger
from connector.payload import manifest as manifests
from connector.payload import sealing
from connector.protocol.transfer import State
from connector.services.dataplane import Lane, MoveFailed, wire_length
from connector.services.ports import PeerAnswer
from connector.services.process_shell import backoff, peer_reason
from connector.services.transfer import SEALING_SCHEME, TransferService, _replace
from connector.store.records import TransferRecord

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime

log = get_logger(component="dataplane")

PIECE = 1024 * 1024
#: Bytes handed to sendfile at once (counted as sent in between).
SEGMENT = 64 * 1024 * 1024
#: Pieces read (and sealed) ahead of the one being sent.
READ_AHEAD = 2


class Sink(Protocol):
    """Where a served payload goes (an HTTP response being streamed)."""

    async def write(self, data: bytes) -> None: ...


#: Sends *count* bytes of an open file from *offset* straight onto the connection (``loop.sendfile``).
SendFile = Callable[[IO[bytes], int, int], Awaitable[object]]


class CountedSink:
    """*sink*, with each piece written told to *moved* as sent (the node's bytes-moved metric). With *send_file*
    (a plain connection's ``loop.sendfile``), a plain file goes by the kernel's sendfile instead: from the page
    cache onto the socket, never copied through the process."""

    def __init__(self, sink: Sink, moved: Callable[[str, int], None], send_file: SendFile | None = None) -> None:
        self.sink = sink
        self.moved = moved
        self.send_file = send_file

    async def write(self, data: bytes) -> None:
        await self.sink.write(data)
        self.moved("sent", len(data))


async def source_file(source: dict[str, Any]) -> tuple[Path, str | None]:
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



async def stream_file(path: Path, offset: int, size: int, response: Sink) -> None:
    """Send *path* from *offset* to *size*: by sendfile when *response* offers it, else in pieces read off the
    event loop (constant memory)."""
    if isinstance(response, CountedSink) and response.send_file is not None:
        await _send_file(path, offset, size, response, response.send_file)
        return
    half = size // 2
    position = offset
    pieces = _read_ahead(path, range(offset, size, PIECE), lambda fd, at: os.pread(fd, min(PIECE, size - at), at))
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            if not piece:
                break
            await response.write(piece)
            if position < half <= position + len(piece):
                crash_point("provider-mid-stream")
            position += len(piece)


async def _send_file(path: Path, offset: int, size: int, sink: CountedSink, send_file: SendFile) -> None:
    """*path* from *offset* to *size* by *send_file*, :data:`SEGMENT` bytes at a time (each counted as sent)."""
    half = size // 2
    with await asyncio.to_thread(open, path, "rb") as file:
        position = offset
        while position < size:
            count = min(SEGMENT, size - position)
            await send_file(file, position, count)
            sink.moved("sent", count)
            if position < half <= position + count:
                crash_point("provider-mid-stream")
            position += count


async def stream_sealed(path: Path, manifest: manifests.Manifest, first: int, key: bytes, context: str,
                        response: Sink) -> None:
    """Send chunks *first*… of *path*, each sealed (end-to-end encryption), read and sealed off the loop."""
    chunks = _chunks(path, manifest, first, key, context, crash_at=None)
    async with contextlib.aclosing(chunks):
        async for piece in chunks:
            await response.write(piece)


async def _chunks(path: Path, manifest: manifests.Manifest, first: int, key: bytes | None, context: str,
                  crash_at: str | None = "provider-mid-push") -> AsyncGenerator[bytes, None]:
    """Chunks *first*… of *path*, sealed when *key* is given, each read (and sealed) off the event loop."""

    def read(fd: int, index: int) -> bytes:
        plain = os.pread(fd, manifest.chunk_length(index), index * manifest.chunk_size)
        return sealing.seal_chunk(key, context, index, plain) if key is not None else plain

    half = len(manifest.chunks) // 2
    index = first
    pieces = _read_ahead(path, range(first, len(manifest.chunks)), read)
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            yield piece
            if index == half and crash_at is not None:
                crash_point(crash_at)
            index += 1


async def _read_ahead(path: Path, steps: Iterable[int],
                      read: Callable[[int, int], bytes]) -> AsyncGenerator[bytes, None]:
    """``read(fd, step)`` for each of *steps* in order, on the stream's own worker thread, up to
    :data:`READ_AHEAD` of them ahead of the piece being sent: reading (and sealing) the next pieces overlaps
    sending this one. The file is opened for the stream and closed on the worker once its last read is done."""
    fd = os.open(path, os.O_RDONLY)
    lane = Lane("tds-send")
    ahead: deque[asyncio.Future[bytes]] = deque()
    try:
        for step in steps:
            ahead.append(lane.run(read, fd, step))
            if len(ahead) > READ_AHEAD:
                yield await ahead.popleft()
        while ahead:
            yield await ahead.popleft()
    finally:
        for job in ahead:  # not sent (the stream ended early): its error, if any, is not this stream's concern
            job.add_done_callback(_quietly)
        lane.close(lambda: os.close(fd))


def _quietly(job: asyncio.Future[bytes]) -> None:
    if not job.cancelled():
        job.exception()


async def _counted(pieces: AsyncIterator[bytes], moved: Callable[[str, int], None]) -> AsyncIterator[bytes]:
    """*pieces*, each told to *moved* as sent once the upload asks for the next one."""
    async for piece in pieces:
        yield piece
        moved("sent", len(piece))


async def push(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    """Provider: send the payload of a STARTED push transfer to the consumer's receiving endpoint."""
    try:
        await _push(service, participant, transfer_id)
    except asyncio.CancelledError:
        return
    except MoveFailed as exc:
        log.warning("push failed", id=transfer_id, reason=str(exc))
        await service.do(participant, transfer_id, "terminate", str(exc)[:900], expected_state=State.STARTED)
    except Exception:
        log.exception("push stopped", id=transfer_id)


async def _push(service: TransferService, participant: ParticipantRuntime, transfer_id: str) -> None:
    record = await service.repository.get(participant.id, transfer_id)
    if (record is None or record.state != State.STARTED or record.data_address is None
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
    stall = service.stall_timeout
    deadline = service.now() + stall
    attempt, best = 0, -1
    while True:
        path, problem = await source_file(source)
        if problem:
            raise MoveFailed(problem)
        try:
            # The envelope first: the consumer checks it (once) and answers its resume point.
            answer = await service.client.request("PUT", f"{endpoint}/manifest", json_body=offer,
                                               signer=participant.signer, headers=headers)
            if answer.status == 401 and await _consumer_moved_on(service, participant, record):
                return
            offset = _resume_point(answer, manifest, "manifest")
            if offset > best:  # progress since the last attempt: the stall clock starts again
                deadline, best, attempt = service.now() + stall, offset, 0
            if offset < manifest.size:
                detail = (f"the consumer holds {offset} of {manifest.size} bytes; pushing the rest" if offset else
                          f"pushing {manifest.size} bytes to {endpoint}" + (", sealed end to end" if seal_key else ""))
                await service.repository.add_event(participant.id, record.id, service.timestamp(), "push", detail)
                body = _counted(_chunks(path, manifest, offset // manifest.chunk_size, seal_key, record.id),
                                service.moved)
                answer = await service.client.upload(f"{endpoint}?offset={offset}", body,
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
            if service.now() + delay > deadline:
                raise MoveFailed(f"the consumer's receiving endpoint made no progress for {stall:g} s: "
                                 f"{exc}") from None
            log.info("push interrupted; resuming", id=record.id, error=str(exc)[:200])
            what = "the consumer asked for a resend" if isinstance(exc, _Resend) else "push interrupted"
            await service.repository.add_event(participant.id, record.id, service.timestamp(), "resume",
                                                f"{what} ({str(exc)[:200]}); again in {delay:.1f} s")
            await asyncio.sleep(delay)


class _Resend(Exception):
    """The consumer answered 422: push again from its resume point."""


async def _pushed(service: TransferService, participant: ParticipantRuntime, record: TransferRecord,
                  manifest: manifests.Manifest) -> None:
    """The consumer holds every byte: note it, so that a restart waits for its completion instead of pushing."""
    log.info("payload pushed", id=record.id, bytes=manifest.size)
    async with service.lock((participant.id, record.id)):
        current = await service.repository.get(participant.id, record.id)
        if current is None or current.state != State.STARTED or current.data_address is None:
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


def _resume_point(answer: PeerAnswer, manifest: manifests.Manifest, what: str) -> int:
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

