"""The provider's side of the data plane (``connector.services.sender``) without a node or a socket: the file
streamed from an offset or chunk by chunk sealed, the checks of the source file, and a push to the consumer's
inbox — wired back to back to a real consumer inbox (``receiver.Inbox``) in the same service, or to canned
answers — with what it refuses and how it ends a push that cannot go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from dataplane_setup import (
    CHUNK,
    CONSUMER_PID,
    PROVIDER_PID,
    SIZE,
    STALL_S,
    TOKEN,
    Setup,
    chunks_of,
    manifest_of,
    no_backoff,
    open_setup,
    payload,
    transfer_key,
)

from connector.errors import TdsError
from connector.payload import sealing
from connector.services import receiver, sender
from connector.services.dataplane import wire_length
from connector.services.transfer import PUSH, SEALING_SCHEME, token_hash
from connector.store.records import TransferRecord
from connector.testing import Reply, Sent, StreamedBody, eventually


class Collected:
    """A sink that keeps what is written to it, piece by piece."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.pieces.append(bytes(data))


class InboxRoutes:
    """The consumer's push inbox as its routes answer (``connector.http.dataplane.inbox_routes``, without the
    HTTP and its token check): ``PUT …/manifest`` offers the manifest to a real ``receiver.Inbox`` of parts,
    ``POST …?offset=N`` hands it the body in pieces; a refusal is its status and reason. Bytes at the offsets
    in :attr:`flip` of a body are altered in transit (once each)."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.inbox = receiver.Inbox(setup.service)
        self.flip: set[int] = set()

    async def __call__(self, sent: Sent) -> Reply:
        setup = self.setup
        record = await setup.record(setup.parts, CONSUMER_PID)
        try:
            if sent.method == "PUT":
                ephemeral = (sent.body.get("sealing") or {}).get("ephemeralKey", "")
                record = await self.inbox.offer(setup.parts, record, sent.body, ephemeral)
                return Reply(200, {"received": record.received, "size": record.size})
            offset = int(parse_qs(urlsplit(sent.url).query)["offset"][0])
            body = bytearray(sent.body)
            for at in sorted(self.flip):
                if offset <= at < offset + len(body):
                    body[at - offset] ^= 0xFF
                    self.flip.discard(at)
            pieces = [bytes(body[i:i + 1000]) for i in range(0, len(body), 1000)]
            answer = await self.inbox.receive(setup.parts, record, offset, int(sent.headers["Content-Length"]),
                                              StreamedBody(pieces))  # type: ignore[arg-type]
        except TdsError as exc:
            return Reply(exc.status, {"reason": [exc.message]})
        if answer.resend is not None:
            return Reply(422, {"error": "resend", "message": answer.resend, "received": answer.received})
        return Reply(200, {"received": answer.received, "complete": answer.complete})


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    setup = await open_setup(tmp_path)
    yield setup
    await setup.close()


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The push's pause before each attempt again, made nil (the attempts are recorded)."""
    return no_backoff(monkeypatch, sender)


def inbox_url(setup: Setup) -> str:
    return f"{setup.parts.base_url}/inbox/{CONSUMER_PID}"


async def pushing(setup: Setup, data: bytes, *, sealed: bool = False, **address: Any) -> TransferRecord:
    """acme's STARTED push of *data* to parts' inbox (sealed end to end with *sealed*), and parts' transfer
    waiting for it."""
    source: dict[str, Any] = {**setup.source(data), "push": {"endpoint": inbox_url(setup), "token": TOKEN}}
    if sealed:
        key, ephemeral = transfer_key(setup.parts)
        source.update(seal_key=key.hex(), ephemeral=ephemeral)
    source.update(address)
    await setup.consumer_transfer(PUSH, {"push": {}}, token_hash=token_hash(TOKEN))
    return await setup.provider_transfer(PUSH, source, manifest_of(data))


async def ended_with(setup: Setup, reason: str) -> None:
    """acme's push ended: its transfer TERMINATED with *reason*, told to parts."""
    record = await setup.record(setup.acme, PROVIDER_PID)
    assert (record.state, record.reason) == ("TERMINATED", reason)
    [told] = setup.client.messages("TransferTerminationMessage")
    assert told["consumerPid"] == CONSUMER_PID and told["reason"] == [reason]


# -- streaming a file --------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, CHUNK, SIZE - 1])
async def test_a_file_is_streamed_from_the_offset_asked_for(tmp_path: Path, offset: int) -> None:
    data = payload()
    path = tmp_path / "readings.bin"
    path.write_bytes(data)
    out = Collected()
    await sender.stream_file(path, offset, SIZE, out)
    assert b"".join(out.pieces) == data[offset:]


async def test_a_file_is_streamed_no_further_than_the_size_of_its_transfer(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "PIECE", 1000)  # pieces smaller than the file: it is read piece by piece
    data = payload()
    path = tmp_path / "readings.bin"
    path.write_bytes(data + b"appended later")
    out = Collected()
    await sender.stream_file(path, 0, SIZE, out)
    assert b"".join(out.pieces) == data
    assert {len(p) for p in out.pieces[:-1]} == {1000}


async def test_a_sealed_stream_is_each_chunk_sealed_for_its_place(tmp_path: Path) -> None:
    data = payload()
    path = tmp_path / "readings.bin"
    path.write_bytes(data)
    key = sealing.new_data_key()
    out = Collected()
    await sender.stream_sealed(path, manifest_of(data), 1, key, PROVIDER_PID, out)
    plain = chunks_of(data)[1:]
    assert [len(p) for p in out.pieces] == [len(c) + sealing.TAG_SIZE for c in plain]
    assert [sealing.open_chunk(key, PROVIDER_PID, i + 1, p) for i, p in enumerate(out.pieces)] == plain
    with pytest.raises(sealing.SealError):  # bound to its place: it does not open as another chunk
        sealing.open_chunk(key, PROVIDER_PID, 1, out.pieces[1])


def open_files(path: Path) -> int:
    """How many of this process's file descriptors are open on *path*."""
    import os

    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


@pytest.mark.parametrize("sealed", [False, True])
async def test_a_stream_the_consumer_leaves_closes_its_file_once_the_reads_ahead_are_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sealed: bool) -> None:

    monkeypatch.setattr(sender, "PIECE", 1000)
    data = payload()
    path = tmp_path / "readings.bin"
    path.write_bytes(data)

    class Leaving(Collected):
        async def write(self, data: bytes) -> None:
            await super().write(data)
            raise ConnectionResetError("the consumer went away")

    out = Leaving()
    with pytest.raises(ConnectionResetError):
        if sealed:
            await sender.stream_sealed(path, manifest_of(data), 0, sealing.new_data_key(), PROVIDER_PID, out)
        else:
            await sender.stream_file(path, 0, SIZE, out)
    assert len(out.pieces) == 1

    async def closed() -> bool:  # on the stream's worker thread, after its last read
        return open_files(path) == 0

    await eventually(closed, 10, every_s=0.01, what="the source file closed")


async def test_the_source_file_is_sent_only_as_the_version_the_manifest_was_made_of(setup: Setup) -> None:
    source = setup.source(b"t,value\n1,20.5\n")
    assert await sender.source_file(source) == (setup.data_dir / "files" / "readings.bin", None)
    setup.source(b"t,value\n1,20.5\n2,21.0\n")
    assert (await sender.source_file(source))[1] == "the asset's file changed since the transfer started"
    (setup.data_dir / "files" / "readings.bin").unlink()
    assert (await sender.source_file(source))[1] == "the asset's file is no longer available"


# -- pushing to the consumer's inbox -----------------------------------------------------------------------


async def test_a_push_delivers_every_byte_to_the_consumers_inbox_which_completes(setup: Setup) -> None:
    data = payload()
    setup.client.route(inbox_url(setup), InboxRoutes(setup))
    await pushing(setup, data)
    await sender.push(setup.service, setup.acme, PROVIDER_PID)

    offer, upload = setup.client.requests(prefix=inbox_url(setup))
    assert (offer.method, offer.url, offer.caller) == ("PUT", f"{inbox_url(setup)}/manifest", setup.acme.did)
    assert offer.headers["Authorization"] == f"Bearer {TOKEN}" and "sealing" not in offer.body
    assert (upload.method, upload.url, upload.caller) == ("POST", f"{inbox_url(setup)}?offset=0", setup.acme.did)
    assert upload.body == data and upload.headers["Content-Length"] == str(SIZE)
    assert upload.headers["Authorization"] == f"Bearer {TOKEN}"

    provider = await setup.record(setup.acme, PROVIDER_PID)
    assert provider.state == "STARTED" and provider.data_address["pushed"] is True  # the consumer completes it
    assert ("pushed", f"the consumer holds all {SIZE} bytes; its completion message is awaited") in (
        await setup.events(setup.acme, PROVIDER_PID))
    consumer = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert consumer is not None and consumer.state == "COMPLETED" and consumer.received == SIZE
    assert b"".join(_vault_chunks(setup, consumer)) == data


async def test_a_sealed_push_carries_no_plaintext_and_the_consumer_opens_it(setup: Setup) -> None:
    data = payload()
    setup.client.route(inbox_url(setup), InboxRoutes(setup))
    provider = await pushing(setup, data, sealed=True)
    await sender.push(setup.service, setup.acme, PROVIDER_PID)

    offer, upload = setup.client.requests(prefix=inbox_url(setup))
    assert offer.body["sealing"] == {"scheme": SEALING_SCHEME, "ephemeralKey": provider.data_address["ephemeral"]}
    manifest = manifest_of(data)
    assert len(upload.body) == wire_length(manifest, 0, True) == SIZE + 4 * sealing.TAG_SIZE
    assert upload.headers["Content-Length"] == str(len(upload.body))
    assert not any(chunk in upload.body for chunk in chunks_of(data))
    consumer = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert consumer is not None and consumer.state == "COMPLETED"
    assert b"".join(_vault_chunks(setup, consumer)) == data


async def test_a_push_sends_only_what_the_consumer_does_not_hold_yet(setup: Setup) -> None:
    data = payload()
    url = inbox_url(setup)
    setup.client.answer("PUT", f"{url}/manifest", {"received": 2 * CHUNK, "size": SIZE})
    setup.client.answer("POST", f"{url}?offset={2 * CHUNK}", {"received": SIZE, "complete": True})
    await pushing(setup, data)
    await sender.push(setup.service, setup.acme, PROVIDER_PID)

    [upload] = setup.client.requests("POST", url)
    assert upload.body == data[2 * CHUNK:] and upload.headers["Content-Length"] == str(SIZE - 2 * CHUNK)
    assert ("push", f"the consumer holds {2 * CHUNK} of {SIZE} bytes; pushing the rest") in (
        await setup.events(setup.acme, PROVIDER_PID))
    assert (await setup.record(setup.acme, PROVIDER_PID)).data_address["pushed"] is True


async def test_a_chunk_the_consumer_could_not_verify_is_pushed_again_from_its_resume_point(
        setup: Setup, retries: list[int]) -> None:
    data = payload()
    inbox = InboxRoutes(setup)
    inbox.flip.add(CHUNK + 7)  # chunk 1 arrives altered, once
    setup.client.route(inbox_url(setup), inbox)
    await pushing(setup, data)
    await sender.push(setup.service, setup.acme, PROVIDER_PID)

    first, again = setup.client.requests("POST", inbox_url(setup))
    assert first.url.endswith("?offset=0") and again.url.endswith(f"?offset={CHUNK}")
    assert again.body == data[CHUNK:]
    assert retries == [1]
    assert ("resume", "the consumer asked for a resend (chunk 1 did not match its digest); again in 0.0 s") in (
        await setup.events(setup.acme, PROVIDER_PID))
    consumer = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert consumer is not None and consumer.state == "COMPLETED"
    assert b"".join(_vault_chunks(setup, consumer)) == data


@pytest.mark.parametrize(("manifest_answer", "upload_answer", "reason"), [
    (Reply(403, {"reason": ["not your transfer"]}), None,
     "the consumer refused the manifest (403: not your transfer)"),
    (Reply(200, {"received": 5}), None, "the consumer's answer to the manifest names no valid resume point"),
    (Reply(200, {"received": SIZE + CHUNK}), None,
     "the consumer's answer to the manifest names no valid resume point"),
    (Reply(200, {"size": SIZE}), None, "the consumer's answer to the manifest names no valid resume point"),
    (Reply(200, {"received": 0}), Reply(413, {"reason": ["too big"]}),
     "the consumer refused the payload (413: too big)"),
    (Reply(200, {"received": 0}), Reply(200, {"received": CHUNK + 1}),
     "the consumer's answer to the payload names no valid resume point"),
])
async def test_a_push_the_consumer_refuses_ends_the_transfer_with_the_reason(
        setup: Setup, manifest_answer: Reply, upload_answer: Reply | None, reason: str) -> None:
    url = inbox_url(setup)
    setup.client.answers[("PUT", f"{url}/manifest")] = manifest_answer
    if upload_answer is not None:
        setup.client.answers[("POST", f"{url}?offset=0")] = upload_answer
    await pushing(setup, payload())
    await sender.push(setup.service, setup.acme, PROVIDER_PID)
    await ended_with(setup, reason)
    assert len(setup.client.requests("PUT", url)) == 1  # refused: not tried again


async def test_a_file_changed_since_the_start_is_not_pushed(setup: Setup) -> None:
    await pushing(setup, payload())
    setup.source(payload(SIZE + 1))
    await sender.push(setup.service, setup.acme, PROVIDER_PID)
    await ended_with(setup, "the asset's file changed since the transfer started")
    assert setup.client.requests(prefix=inbox_url(setup)) == []


async def test_a_push_without_a_receiving_endpoint_ends_the_transfer(setup: Setup) -> None:
    await pushing(setup, payload(), push={})
    await sender.push(setup.service, setup.acme, PROVIDER_PID)
    await ended_with(setup, "the consumer's receiving endpoint is not known")


async def test_a_receiving_endpoint_the_outbound_guard_refuses_ends_the_transfer(setup: Setup) -> None:
    setup.client.refuse(inbox_url(setup), "a private address")
    await pushing(setup, payload())
    await sender.push(setup.service, setup.acme, PROVIDER_PID)
    await ended_with(setup, f"the consumer's receiving endpoint is refused: {inbox_url(setup)}/manifest: a private "
                            "address")


async def test_a_push_that_makes_no_progress_for_the_stall_timeout_ends_the_transfer(
        setup: Setup, retries: list[int]) -> None:
    url = inbox_url(setup)

    async def time_passes(sent: Sent) -> None:  # each attempt takes a while, and nobody answers
        if sent.url.startswith(url):
            setup.clock.advance(STALL_S * 0.4)

    setup.client.before_answer = time_passes
    await pushing(setup, payload())
    await sender.push(setup.service, setup.acme, PROVIDER_PID)
    await ended_with(setup, f"the consumer's receiving endpoint made no progress for {STALL_S:g} s: "
                            f"{url}/manifest is unreachable")
    assert len(setup.client.requests("PUT", url)) == 3 and retries == [1, 2, 3]
    resumed = [detail for kind, detail in await setup.events(setup.acme, PROVIDER_PID) if kind == "resume"]
    assert resumed == [f"push interrupted ({url}/manifest is unreachable); again in 0.0 s"] * 2


@pytest.mark.parametrize(("theirs", "ended"), [
    ("COMPLETED", False), ("TERMINATED", False), ("SUSPENDED", False), ("STARTED", True)])
async def test_a_refused_token_ends_the_push_quietly_when_the_consumers_transfer_moved_on(
        setup: Setup, theirs: str, ended: bool) -> None:
    url = inbox_url(setup)
    setup.client.answer("PUT", f"{url}/manifest", {"reason": ["the token is not valid"]}, status=401)
    setup.dsp[setup.parts.id].views[CONSUMER_PID] = theirs
    await pushing(setup, payload())
    await sender.push(setup.service, setup.acme, PROVIDER_PID)
    [view] = setup.client.requests("GET", setup.parts.dsp_base)
    assert view.url == f"{setup.parts.dsp_base}/transfers/{CONSUMER_PID}" and view.caller == setup.acme.did
    if ended:
        await ended_with(setup, "the consumer refused the manifest (401: the token is not valid)")
    else:  # the consumer's own message about it is on its way
        assert (await setup.record(setup.acme, PROVIDER_PID)).state == "STARTED"
        assert setup.client.messages("TransferTerminationMessage") == []


@pytest.mark.parametrize("state", ["SUSPENDED", "COMPLETED", "TERMINATED"])
async def test_a_transfer_that_is_not_started_is_not_pushed(setup: Setup, state: str) -> None:
    data = payload()
    await setup.provider_transfer(PUSH, {**setup.source(data), "push": {"endpoint": inbox_url(setup),
                                                                       "token": TOKEN}},
                                  manifest_of(data), state=state)
    await sender.push(setup.service, setup.acme, PROVIDER_PID)
    assert setup.client.sent == []
    assert (await setup.record(setup.acme, PROVIDER_PID)).state == state


def _vault_chunks(setup: Setup, record: TransferRecord) -> list[bytes]:
    """The plaintext of a received file, read from the vault with parts' key."""
    with setup.service.vault.reader(setup.parts, setup.data_dir / record.vault_path, record.agreement_id) as reader:
        return [reader.chunk(i) for i in range(reader.chunks)]

