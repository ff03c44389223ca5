"""The consumer's side of the data plane (``connector.services.receiver``) without a node or a socket: a pull
from the provider's data endpoint (routed in memory here) and a push received by the inbox. The manifest and
its signed envelope are checked before anything is fetched; every chunk is verified before it is written,
sealed, to the vault; a tampered chunk, a body of the wrong size, a manifest that does not verify are refused
and end the transfer with the reason."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest
from dataplane_setup import (
    AGREEMENT,
    CHUNK,
    CONSUMER_PID,
    PROVIDER_PID,
    RETRIES,
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

from connector.errors import BadRequest, Conflict, PeerError, StorageError
from connector.payload import manifest as manifests
from connector.payload import sealing, vaultfile
from connector.services import receiver
from connector.services.transfer import (
    ENDPOINT_TYPE,
    EPHEMERAL_PROPERTY,
    MANIFEST_PROPERTY,
    PULL,
    PUSH,
    SEALING_PROPERTY,
    SEALING_SCHEME,
    token_hash,
)
from connector.services.vault import is_vault_file
from connector.store.records import TransferRecord
from connector.testing import FullDisk, Reply, Sent, StreamedBody


class DataEndpoint:
    """The provider's data endpoint as a pull reads it (``connector.http.dataplane.routes``, without the HTTP):
    ``GET …/manifest`` answers the manifest and its envelope; ``GET …`` the payload, from the ``Range`` asked
    for (206) or whole (200), chunk by chunk, each sealed when *seal_key* is given. On the way, chunks in
    :attr:`damage` arrive altered (index → how many more times), a body ends :attr:`short_by` bytes early, and
    the connection breaks off after :attr:`break_after` bytes (once)."""

    def __init__(self, setup: Setup, data: bytes, *, seal_key: bytes | None = None,
                 envelope: dict[str, Any] | None = None) -> None:
        self.data, self.seal_key = data, seal_key
        self.manifest = manifest_of(data)
        self.offer = {"manifest": manifests.encode(self.manifest),
                      "envelope": envelope if envelope is not None else setup.envelope(self.manifest)}
        self.damage: dict[int, int] = {}
        self.short_by = 0
        self.break_after: int | None = None

    def __call__(self, sent: Sent) -> Reply:
        if sent.url.endswith("/manifest"):
            return Reply(200, self.offer)
        offset = int(sent.headers["Range"].removeprefix("bytes=").rstrip("-")) if "Range" in sent.headers else 0
        assert offset % CHUNK == 0, "a pull resumes at a chunk boundary"
        wire = b""
        for index, plain in enumerate(chunks_of(self.data)[offset // CHUNK:], start=offset // CHUNK):
            piece = bytearray(plain if self.seal_key is None else
                              sealing.seal_chunk(self.seal_key, PROVIDER_PID, index, plain))
            if self.damage.get(index):
                self.damage[index] -= 1
                piece[len(piece) // 2] ^= 0xFF
            wire += piece
        wire = wire[:len(wire) - self.short_by]
        pieces: list[bytes | BaseException] = [wire[i:i + 1000] for i in range(0, len(wire), 1000)]
        if self.break_after is not None:
            pieces = [wire[:self.break_after], PeerError("the connection was reset")]
            self.break_after = None
        return Reply(206 if offset else 200, pieces=pieces)


def data_url(setup: Setup) -> str:
    return f"{setup.acme.base_url}/data/{PROVIDER_PID}"


def data_address(setup: Setup, *extra: dict[str, str]) -> dict[str, Any]:
    """The data address of acme's start message: the endpoint, the token, where the manifest is."""
    url = data_url(setup)
    return {"@type": "DataAddress", "endpointType": ENDPOINT_TYPE, "endpoint": url, "endpointProperties": [
        {"@type": "EndpointProperty", "name": "authorization", "value": TOKEN},
        {"@type": "EndpointProperty", "name": "authType", "value": "bearer"},
        {"@type": "EndpointProperty", "name": MANIFEST_PROPERTY, "value": f"{url}/manifest"}, *extra]}


def sealed_properties(ephemeral: str, scheme: str = SEALING_SCHEME) -> list[dict[str, str]]:
    return [{"@type": "EndpointProperty", "name": SEALING_PROPERTY, "value": scheme},
            {"@type": "EndpointProperty", "name": EPHEMERAL_PROPERTY, "value": ephemeral}]


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    setup = await open_setup(tmp_path)
    yield setup
    await setup.close()


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pull's pause before resuming a broken stream, made nil (the attempts are recorded)."""
    return no_backoff(monkeypatch, receiver)


async def pulled(setup: Setup, endpoint: DataEndpoint, *properties: dict[str, str]) -> TransferRecord:
    """parts pulls from *endpoint* (its transfer STARTED with the data address); the transfer as it ends."""
    setup.client.route(data_url(setup), endpoint)
    await setup.consumer_transfer(PULL, data_address(setup, *properties))
    await receiver.pull(setup.service, setup.parts, CONSUMER_PID)
    return await setup.record(setup.parts, CONSUMER_PID)


def streams(setup: Setup) -> list[Sent]:
    """The payload requests made (not the manifest's)."""
    return [s for s in setup.client.requests("GET", data_url(setup)) if not s.url.endswith("/manifest")]


def vault_plaintext(setup: Setup, record: TransferRecord) -> bytes:
    path = setup.data_dir / record.vault_path
    with setup.service.vault.reader(setup.parts, path, record.agreement_id) as reader:
        return b"".join(reader.chunk(i) for i in range(reader.chunks))


async def refused(setup: Setup, record: TransferRecord, reason: str) -> None:
    """The pull ended: parts' transfer TERMINATED with *reason*, told to acme, and nothing kept in the vault."""
    assert (record.state, record.reason) == ("TERMINATED", reason)
    [told] = setup.client.messages("TransferTerminationMessage")
    assert told["providerPid"] == PROVIDER_PID and told["reason"] == [reason]
    assert setup.service.vault.payload(setup.parts, AGREEMENT) is None
    assert not setup.service.vault.partial_path(setup.parts, AGREEMENT, CONSUMER_PID).exists()


# -- pulling -----------------------------------------------------------------------------------------------


async def test_a_pulled_payload_is_verified_sealed_into_the_vault_and_the_transfer_completed(setup: Setup) -> None:
    data = payload()
    record = await pulled(setup, DataEndpoint(setup, data))

    assert (record.state, record.received, record.size) == ("COMPLETED", SIZE, SIZE)
    [completion] = setup.client.messages("TransferCompletionMessage")
    assert (completion["providerPid"], completion["consumerPid"]) == (PROVIDER_PID, CONSUMER_PID)
    path = setup.data_dir / record.vault_path
    assert path == setup.service.vault.payload(setup.parts, AGREEMENT)
    assert is_vault_file(path) and not any(chunk in path.read_bytes() for chunk in chunks_of(data))  # sealed at rest
    assert vault_plaintext(setup, record) == data
    bundle = manifests.read_bundle(record.envelope)
    assert bundle[0] == manifest_of(data) and bundle[2].consumer_pid == CONSUMER_PID
    for sent in setup.client.requests("GET", data_url(setup)):
        assert sent.caller == setup.parts.did and sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [s.url for s in setup.client.requests("GET", data_url(setup))] == [f"{data_url(setup)}/manifest",
                                                                              data_url(setup)]
    assert not setup.service.vault.partial_path(setup.parts, AGREEMENT, CONSUMER_PID).exists()


async def test_a_sealed_payload_is_opened_verified_and_sealed_again_for_the_vault(setup: Setup) -> None:
    data = payload()
    key, ephemeral = transfer_key(setup.parts)
    record = await pulled(setup, DataEndpoint(setup, data, seal_key=key), *sealed_properties(ephemeral))
    assert record.state == "COMPLETED"
    assert vault_plaintext(setup, record) == data
    assert "sealed" in [kind for kind, _ in await setup.events(setup.parts, CONSUMER_PID)]


async def test_a_damaged_chunk_is_fetched_again_from_its_offset(setup: Setup) -> None:
    data = payload()
    endpoint = DataEndpoint(setup, data)
    endpoint.damage[1] = 1
    record = await pulled(setup, endpoint)
    assert record.state == "COMPLETED" and vault_plaintext(setup, record) == data
    assert [s.headers.get("Range") for s in streams(setup)] == [None, f"bytes={CHUNK}-"]
    assert ("retry", "chunk 1 did not match its digest; fetching it again") in (
        await setup.events(setup.parts, CONSUMER_PID))


async def test_a_chunk_that_keeps_failing_verification_ends_the_transfer(setup: Setup) -> None:
    endpoint = DataEndpoint(setup, payload())
    endpoint.damage[1] = 99
    record = await pulled(setup, endpoint)
    await refused(setup, record, f"chunk 1 failed verification {RETRIES + 1} times (did not match its digest); "
                                 "giving up")
    assert [s.headers.get("Range") for s in streams(setup)] == [None] + [f"bytes={CHUNK}-"] * RETRIES


async def test_a_tampered_sealed_chunk_does_not_open_and_ends_the_transfer(setup: Setup) -> None:
    key, ephemeral = transfer_key(setup.parts)
    endpoint = DataEndpoint(setup, payload(), seal_key=key)
    endpoint.damage[0] = 99
    record = await pulled(setup, endpoint, *sealed_properties(ephemeral))
    await refused(setup, record, f"chunk 0 failed verification {RETRIES + 1} times (did not match its digest); "
                                 "giving up")


async def test_a_body_shorter_than_the_manifest_says_ends_the_transfer(setup: Setup) -> None:
    endpoint = DataEndpoint(setup, payload())
    endpoint.short_by = 10
    record = await pulled(setup, endpoint)
    await refused(setup, record, f"chunk 3 failed verification {RETRIES + 1} times (the stream ended early); "
                                 "giving up")


async def test_a_stream_that_breaks_off_is_resumed_after_the_last_verified_chunk(setup: Setup,
                                                                                  retries: list[int]) -> None:
    data = payload()
    endpoint = DataEndpoint(setup, data)
    endpoint.break_after = 2 * CHUNK + 100
    record = await pulled(setup, endpoint)
    assert record.state == "COMPLETED" and vault_plaintext(setup, record) == data
    assert [s.headers.get("Range") for s in streams(setup)] == [None, f"bytes={2 * CHUNK}-"]
    assert retries == [1]


@pytest.mark.parametrize(("envelope", "why"), [
    (lambda s, m: s.envelope(m, consumer_pid="urn:uuid:someone-else"),
     "the envelope is for another agreement, transfer or party"),
    (lambda s, m: s.envelope(manifest_of(b"other data")), "the envelope does not sign this manifest"),
    (lambda s, m: s.envelope(m, signer=s.parts), "signed by did:web:parts.example, not by the provider"),
    (lambda s, m: None, "not a payload envelope"),
])
async def test_a_manifest_whose_envelope_does_not_verify_is_refused_before_any_data_is_fetched(
        setup: Setup, envelope: Any, why: str) -> None:
    data = payload()
    endpoint = DataEndpoint(setup, data, envelope=envelope(setup, manifest_of(data)) or {})
    record = await pulled(setup, endpoint)
    assert record.state == "TERMINATED" and record.reason.startswith("the manifest does not verify: ")
    assert why in record.reason
    assert streams(setup) == [] and record.manifest is None


async def test_a_manifest_the_provider_does_not_give_ends_the_transfer(setup: Setup) -> None:
    setup.client.answer("GET", f"{data_url(setup)}/manifest", {"reason": ["expired"]}, status=403)
    record = await pulled(setup, DataEndpoint(setup, payload()))
    await refused(setup, record, "the provider refused the manifest request (403)")
    assert streams(setup) == []


async def test_a_refused_transfer_token_ends_the_transfer(setup: Setup) -> None:
    setup.client.answer("GET", data_url(setup), {"reason": ["expired"]}, status=401)
    record = await pulled(setup, DataEndpoint(setup, payload()))
    await refused(setup, record, "the provider refused the transfer token")


async def test_a_payload_over_the_vault_quota_is_not_fetched(setup: Setup) -> None:
    setup.service.vault_quota_bytes = SIZE - 1
    record = await pulled(setup, DataEndpoint(setup, payload()))
    await refused(setup, record, f"vault quota exceeded: {SIZE} more bytes would make {SIZE} of the participant's "
                                 f"{SIZE - 1} (node.vault_quota_bytes)")
    assert streams(setup) == []


async def test_data_of_an_agreement_no_longer_in_force_is_not_received(setup: Setup) -> None:
    await setup.agreement(state="REVOKED")
    record = await pulled(setup, DataEndpoint(setup, payload()))
    await refused(setup, record, f"agreement {AGREEMENT} is REVOKED here: its data may no longer be received")
    assert setup.client.requests("GET", data_url(setup)) == []


async def test_a_sealing_scheme_this_node_does_not_read_ends_the_transfer(setup: Setup) -> None:
    _, ephemeral = transfer_key(setup.parts)
    record = await pulled(setup, DataEndpoint(setup, payload()), *sealed_properties(ephemeral, "rot13"))
    await refused(setup, record, f"the provider seals with 'rot13'; this node reads {SEALING_SCHEME}")


async def test_a_data_endpoint_that_fails_for_the_stall_timeout_ends_the_transfer(setup: Setup,
                                                                                   retries: list[int]) -> None:
    endpoint = DataEndpoint(setup, payload())

    def down(sent: Sent) -> Reply:
        if sent.url.endswith("/manifest"):
            return endpoint(sent)
        setup.clock.advance(STALL_S * 0.4)  # each attempt takes a while, and fails
        raise PeerError("GET failed: connection refused")

    setup.client.route(data_url(setup), down)
    await setup.consumer_transfer(PULL, data_address(setup))
    await receiver.pull(setup.service, setup.parts, CONSUMER_PID)
    record = await setup.record(setup.parts, CONSUMER_PID)
    await refused(setup, record, f"the provider's data endpoint failed for {STALL_S:.0f} s: GET failed: connection "
                                 "refused")
    assert len(streams(setup)) == 3 and retries == [1, 2, 3]


# -- receiving a push --------------------------------------------------------------------------------------


async def offered(setup: Setup, data: bytes, **offer: Any) -> tuple[receiver.Inbox, TransferRecord]:
    """parts' push transfer, STARTED, with acme's manifest and envelope accepted by its inbox."""
    record = await setup.consumer_transfer(PUSH, {"push": {}}, token_hash=token_hash(TOKEN))
    inbox = receiver.Inbox(setup.service)
    manifest = manifest_of(data)
    body = {"manifest": manifests.encode(manifest), "envelope": setup.envelope(manifest), **offer}
    return inbox, await inbox.offer(setup.parts, record, body, "")


def body(data: bytes) -> StreamedBody:
    return StreamedBody([data[i:i + 1000] for i in range(0, len(data), 1000)])


async def test_a_pushed_payload_is_verified_written_and_the_transfer_completed(setup: Setup) -> None:
    data = payload()
    inbox, record = await offered(setup, data)
    assert (record.size, record.received) == (SIZE, 0)
    answer = await inbox.receive(setup.parts, record, 0, SIZE, body(data))  # type: ignore[arg-type]
    assert answer == receiver.Received(SIZE, complete=True)
    done = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert done is not None and done.state == "COMPLETED" and vault_plaintext(setup, done) == data
    assert len(setup.client.messages("TransferCompletionMessage")) == 1


async def test_a_pushed_tampered_chunk_is_asked_for_again_then_ends_the_transfer(setup: Setup) -> None:
    data = payload()
    inbox, record = await offered(setup, data)
    tampered = bytearray(data)
    tampered[CHUNK + 5] ^= 1
    answer = await inbox.receive(setup.parts, record, 0, SIZE, body(bytes(tampered)))  # type: ignore[arg-type]
    assert answer == receiver.Received(CHUNK, resend="chunk 1 did not match its digest")
    record = await setup.record(setup.parts, CONSUMER_PID)
    assert record.received == CHUNK  # what verified is kept
    for _ in range(RETRIES - 1):
        answer = await inbox.receive(setup.parts, record, CHUNK, SIZE - CHUNK,
                                     body(bytes(tampered[CHUNK:])))  # type: ignore[arg-type]
        assert answer.resend == "chunk 1 did not match its digest"
    with pytest.raises(Conflict, match=f"chunk 1 failed verification {RETRIES + 1} times"):
        await inbox.receive(setup.parts, record, CHUNK, SIZE - CHUNK,
                            body(bytes(tampered[CHUNK:])))  # type: ignore[arg-type]
    ended = await setup.record(setup.parts, CONSUMER_PID)
    assert ended.state == "TERMINATED" and ended.reason.startswith("chunk 1 failed verification")
    assert not setup.service.vault.partial_path(setup.parts, AGREEMENT, CONSUMER_PID).exists()


async def test_a_pushed_body_that_starts_elsewhere_is_asked_for_from_the_resume_point(setup: Setup) -> None:
    data = payload()
    inbox, record = await offered(setup, data)
    answer = await inbox.receive(setup.parts, record, CHUNK, SIZE - CHUNK,
                                 body(data[CHUNK:]))  # type: ignore[arg-type]
    assert answer == receiver.Received(0, resend="this transfer resumes at byte 0")


async def test_a_pushed_body_of_the_wrong_length_is_refused(setup: Setup) -> None:
    data = payload()
    inbox, record = await offered(setup, data)
    with pytest.raises(BadRequest, match="Content-Length does not match"):
        await inbox.receive(setup.parts, record, 0, SIZE - 1, body(data[:-1]))  # type: ignore[arg-type]
    assert (await setup.record(setup.parts, CONSUMER_PID)).received == 0


async def test_a_pushed_body_that_ends_early_keeps_what_verified(setup: Setup) -> None:
    data = payload()
    inbox, record = await offered(setup, data)
    answer = await inbox.receive(setup.parts, record, 0, SIZE, body(data[:2 * CHUNK]))  # type: ignore[arg-type]
    assert answer == receiver.Received(2 * CHUNK, resend="the body ended early")
    record = await setup.record(setup.parts, CONSUMER_PID)
    answer = await inbox.receive(setup.parts, record, 2 * CHUNK, SIZE - 2 * CHUNK,
                                 body(data[2 * CHUNK:]))  # type: ignore[arg-type]
    assert answer == receiver.Received(SIZE, complete=True)
    done = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert done is not None and vault_plaintext(setup, done) == data


async def test_a_push_before_its_manifest_is_refused(setup: Setup) -> None:
    record = await setup.consumer_transfer(PUSH, {"push": {}}, token_hash=token_hash(TOKEN))
    with pytest.raises(Conflict, match="send the manifest"):
        await receiver.Inbox(setup.service).receive(setup.parts, record, 0, SIZE,
                                                    body(payload()))  # type: ignore[arg-type]


async def test_a_pushed_manifest_that_does_not_verify_is_refused_and_ends_the_transfer(setup: Setup) -> None:
    data = payload()
    record = await setup.consumer_transfer(PUSH, {"push": {}}, token_hash=token_hash(TOKEN))
    manifest = manifest_of(data)
    offer = {"manifest": manifests.encode(manifest), "envelope": setup.envelope(manifest, signer=setup.parts)}
    with pytest.raises(BadRequest, match="the manifest does not verify"):
        await receiver.Inbox(setup.service).offer(setup.parts, record, offer, "")
    ended = await setup.record(setup.parts, CONSUMER_PID)
    assert ended.state == "TERMINATED" and ended.manifest is None


async def test_the_same_offer_again_is_answered_as_before_and_another_one_is_a_conflict(setup: Setup) -> None:
    data = payload()
    inbox, record = await offered(setup, data)
    manifest = manifest_of(data)
    again = await inbox.offer(setup.parts, record, {"manifest": manifests.encode(manifest),
                                                    "envelope": setup.envelope(manifest)}, "")
    assert again.manifest == record.manifest
    other = manifest_of(payload())
    with pytest.raises(Conflict, match="another manifest or key"):
        await inbox.offer(setup.parts, record, {"manifest": manifests.encode(other),
                                                "envelope": setup.envelope(other)}, "")
    assert (await setup.record(setup.parts, CONSUMER_PID)).manifest == manifests.encode(manifest)


# -- the receiving pipeline (chunks with the worker while the next ones arrive) ------------------------------


def partial_chunks(setup: Setup) -> int:
    """How many sealed chunks parts' partial file holds (its length says)."""
    size = setup.service.vault.partial_path(setup.parts, AGREEMENT, CONSUMER_PID).stat().st_size
    assert (size - vaultfile.HEADER_SIZE) % (CHUNK + sealing.TAG_SIZE) == 0
    return (size - vaultfile.HEADER_SIZE) // (CHUNK + sealing.TAG_SIZE)


async def test_no_chunk_after_one_that_fails_is_written_though_it_was_received_already(setup: Setup) -> None:
    # The whole body is at hand: every chunk is received and handed on before the first is verified.
    data = payload()
    inbox, record = await offered(setup, data)
    tampered = bytearray(data)
    tampered[CHUNK + 5] ^= 1
    answer = await inbox.receive(setup.parts, record, 0, SIZE, body(bytes(tampered)))  # type: ignore[arg-type]
    assert answer == receiver.Received(CHUNK, resend="chunk 1 did not match its digest")
    assert (await setup.record(setup.parts, CONSUMER_PID)).received == CHUNK
    assert partial_chunks(setup) == 1  # chunk 0 alone: neither the bad chunk nor the good ones after it


async def test_a_body_sent_in_http_chunks_is_received_whole(setup: Setup) -> None:
    data = payload()
    inbox, record = await offered(setup, data)
    pieces: list[bytes | BaseException] = []
    for at in range(0, SIZE, 1000):
        pieces += [data[at:at + 1000], b""]  # b"": where an HTTP chunk of a chunked body ended, not its end
    answer = await inbox.receive(setup.parts, record, 0, SIZE, StreamedBody(pieces))  # type: ignore[arg-type]
    assert answer == receiver.Received(SIZE, complete=True)
    done = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert done is not None and done.state == "COMPLETED" and vault_plaintext(setup, done) == data


class Stalling(StreamedBody):
    """A body whose sender stops after the pieces given (the connection stays open, nothing more comes)."""

    def __init__(self, pieces: list[bytes | BaseException]) -> None:
        super().__init__(pieces)
        self.stalled = asyncio.Event()

    async def readchunk(self) -> tuple[bytes, bool]:
        piece = await super().readchunk()
        if piece[0]:
            return piece
        self.stalled.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_receipt_cut_short_keeps_every_chunk_written_and_its_resume_point(setup: Setup) -> None:
    # Cancelled (a suspension, the node stopping) with chunks still with the worker: they are written, or not,
    # before the partial file is closed, and the resume point saved says exactly what it holds.
    data = payload()
    inbox, record = await offered(setup, data)
    stalling = Stalling([data[at:at + 1000] for at in range(0, 2 * CHUNK + 100, 1000)])
    task = asyncio.create_task(inbox.receive(setup.parts, record, 0, SIZE, stalling))  # type: ignore[arg-type]
    await stalling.stalled.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await setup.record(setup.parts, CONSUMER_PID)).received == 2 * CHUNK
    assert partial_chunks(setup) == 2
    answer = await inbox.receive(setup.parts, await setup.record(setup.parts, CONSUMER_PID), 2 * CHUNK,
                                 SIZE - 2 * CHUNK, body(data[2 * CHUNK:]))  # type: ignore[arg-type]
    assert answer == receiver.Received(SIZE, complete=True)
    done = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert done is not None and vault_plaintext(setup, done) == data


async def test_a_receipt_cancelled_while_a_chunk_is_being_written_waits_for_it_and_counts_it(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from connector.services import vault

    writing, go_on = threading.Event(), threading.Event()
    original = vault.VaultWriter.write

    def write(self: vault.VaultWriter, index: int, plaintext: Any, *, last: bool) -> None:
        if index == 1:
            writing.set()
            go_on.wait(10)
        original(self, index, plaintext, last=last)

    monkeypatch.setattr(vault.VaultWriter, "write", write)
    data = payload()
    inbox, record = await offered(setup, data)
    task = asyncio.create_task(inbox.receive(setup.parts, record, 0, SIZE, body(data)))  # type: ignore[arg-type]
    assert await asyncio.to_thread(writing.wait, 10)
    task.cancel()  # while the receipt waits for chunk 1 to be written
    asyncio.get_running_loop().call_soon(go_on.set)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await setup.record(setup.parts, CONSUMER_PID)).received == SIZE  # every chunk handed on was written
    partial = setup.service.vault.partial_path(setup.parts, AGREEMENT, CONSUMER_PID)
    assert partial.stat().st_size == vaultfile.sealed_size(CHUNK, SIZE)


# -- a full disk (or any failed write) ---------------------------------------------------------------------

ROOM = 2 * (CHUNK + sealing.TAG_SIZE)  # two chunks fit in the partial file, the third does not
FOLDER = "vault/parts/urn_uuid_agreement-1"


@pytest.mark.parametrize(("error", "what"), [
    (errno.ENOSPC, "No space left on device (ENOSPC)"),
    (errno.EDQUOT, "Disk quota exceeded (EDQUOT)"),
    (errno.EIO, "Input/output error (EIO)"),
    (errno.EROFS, "Read-only file system (EROFS)"),
    (errno.EACCES, "Permission denied (EACCES)"),
])
async def test_a_failed_write_ends_the_pull_attempt_frees_the_partial_file_and_the_pull_completes_once_it_can(
        setup: Setup, monkeypatch: pytest.MonkeyPatch, error: int, what: str) -> None:
    disk = FullDisk(room=ROOM, error=error).install(monkeypatch)
    pauses: list[int] = []

    def pause(attempt: int) -> float:
        pauses.append(attempt)
        if attempt == 2:
            disk.full = False  # the space is freed during the second pause
        return 0.0

    monkeypatch.setattr(receiver, "backoff", pause)
    data = payload()
    record = await pulled(setup, DataEndpoint(setup, data))

    assert record.state == "COMPLETED" and vault_plaintext(setup, record) == data
    assert disk.failures == 2 and pauses == [1, 2]
    assert disk.opened == [False, False, False]  # each attempt found the last one's partial file gone
    errors = [detail for kind, detail in await setup.events(setup.parts, CONSUMER_PID) if kind == "error"]
    assert errors == [f"could not store the received data: writing in {FOLDER} failed: {what}; the partial file "
                      f"was removed; trying again in 0.0 s"] * 2
    assert setup.client.messages("TransferTerminationMessage") == []
    assert not any(chunk in "".join(errors).encode() for chunk in chunks_of(data))  # the reason, not the data


async def test_a_sealed_pull_survives_a_full_disk_the_same_way(setup: Setup, monkeypatch: pytest.MonkeyPatch,
                                                               retries: list[int]) -> None:
    disk = FullDisk(room=ROOM).install(monkeypatch)
    monkeypatch.setattr(receiver, "backoff", lambda attempt: setattr(disk, "full", attempt < 3) or 0.0)
    data = payload()
    key, ephemeral = transfer_key(setup.parts)
    record = await pulled(setup, DataEndpoint(setup, data, seal_key=key), *sealed_properties(ephemeral))
    assert record.state == "COMPLETED" and vault_plaintext(setup, record) == data
    assert disk.failures == 3 and disk.opened == [False] * 4


async def test_a_disk_full_for_the_stall_timeout_ends_the_pull_with_the_reason_and_leaves_nothing(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    FullDisk(room=ROOM).install(monkeypatch)

    def pause(attempt: int) -> float:
        setup.clock.advance(STALL_S * 0.4)  # each failed attempt takes a while
        return 0.0

    monkeypatch.setattr(receiver, "backoff", pause)
    record = await pulled(setup, DataEndpoint(setup, payload()))
    await refused(setup, record, f"no data could be stored for {STALL_S:g} s (0 of {SIZE} bytes received): could "
                                 f"not store the received data: writing in {FOLDER} failed: No space left on device "
                                 "(ENOSPC)")
    assert not (setup.data_dir / FOLDER).exists()  # nor the agreement's data key, since nothing was kept


async def test_a_database_that_cannot_commit_the_resume_point_ends_the_attempt_the_same_way(
        setup: Setup, monkeypatch: pytest.MonkeyPatch, retries: list[int]) -> None:
    original = setup.transfers.set_received
    failing = {"left": 1}

    async def set_received(participant_id: str, transfer_id: str, received: int) -> None:
        if received and failing["left"]:
            failing["left"] -= 1
            raise StorageError("commit failed: database or disk is full")
        await original(participant_id, transfer_id, received)

    monkeypatch.setattr(setup.transfers, "set_received", set_received)
    monkeypatch.setattr(receiver, "CHECKPOINT_BYTES", CHUNK)  # the resume point is committed after each chunk
    data = payload()
    record = await pulled(setup, DataEndpoint(setup, data))
    assert record.state == "COMPLETED" and vault_plaintext(setup, record) == data
    assert ("error", "could not store the received data: writing in the database tds.db failed: commit failed: "
                     "database or disk is full; the partial file was removed; trying again in 0.0 s") in (
        await setup.events(setup.parts, CONSUMER_PID))
    assert [s.headers.get("Range") for s in streams(setup)] == [None, None]  # from byte 0 again


async def test_a_full_disk_while_receiving_a_push_frees_the_partial_file_and_asks_for_it_again(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk(room=ROOM).install(monkeypatch)
    data = payload()
    inbox, record = await offered(setup, data)
    with pytest.raises(StorageError) as refused_push:
        await inbox.receive(setup.parts, record, 0, SIZE, body(data))  # type: ignore[arg-type]
    assert refused_push.value.status == 503
    assert refused_push.value.message == ("the consumer could not store the data (No space left on device (ENOSPC)); "
                                          "it resumes at byte 0")
    assert not setup.service.vault.partial_path(setup.parts, AGREEMENT, CONSUMER_PID).exists()
    record = await setup.record(setup.parts, CONSUMER_PID)
    assert (record.state, record.received) == ("STARTED", 0)
    assert ("error", f"could not store the received data: writing in {FOLDER} failed: No space left on device "
                     "(ENOSPC); the partial file was removed; the provider is asked to send it again from byte 0") in (
        await setup.events(setup.parts, CONSUMER_PID))

    disk.full = False  # space freed: the provider's next attempt, from byte 0, goes through
    answer = await inbox.receive(setup.parts, record, 0, SIZE, body(data))  # type: ignore[arg-type]
    assert answer == receiver.Received(SIZE, complete=True)
    done = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert done is not None and done.state == "COMPLETED" and vault_plaintext(setup, done) == data


async def test_a_push_whose_file_cannot_be_placed_is_asked_for_again(setup: Setup,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.services import vault

    original = vault.place
    failing = {"left": 1}

    def place(partial: Path, final: Path) -> None:
        if failing["left"]:
            failing["left"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        original(partial, final)

    monkeypatch.setattr(vault, "place", place)
    data = payload()
    inbox, record = await offered(setup, data)
    with pytest.raises(StorageError, match=r"Input/output error \(EIO\)"):
        await inbox.receive(setup.parts, record, 0, SIZE, body(data))  # type: ignore[arg-type]
    folder = setup.data_dir / FOLDER
    assert not folder.exists() or [p.name for p in folder.iterdir()] == [".key"]  # nothing half-placed
    answer = await inbox.receive(setup.parts, await setup.record(setup.parts, CONSUMER_PID), 0, SIZE,
                                 body(data))  # type: ignore[arg-type]
    assert answer.complete
    done = await setup.service.wait(setup.parts.id, CONSUMER_PID, timeout_s=5)
    assert done is not None and done.state == "COMPLETED" and vault_plaintext(setup, done) == data
