"""The fakes of ``connector.testing`` that the socket-free tests stand on: the clock moved by hand and the
recording outbound client (what it keeps of a request, which answer wins, how a stream and an upload go). Also the
node factory's fresh start after another process took a node's port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from connector.errors import OutboundRefused, PeerError
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.store.repository import Participant
from connector.testing import FakeClock, InMemoryPeer, RecordingClient, Reply, Sent, StreamedBody

PEER = "https://parts.example/api/dsp/2025-1"


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example", legal_name=name.title(), region="CN-GD")
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


# -- FakeClock ---------------------------------------------------------------------------------------------


def test_a_fake_clock_moves_its_three_readings_together_and_only_forward() -> None:
    clock = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), monotonic_start=50.0)
    assert clock() == clock.now == datetime(2026, 3, 1, 9, 0, tzinfo=UTC).timestamp()
    clock.advance(90)
    assert clock.utc() == datetime(2026, 3, 1, 9, 1, 30, tzinfo=UTC) and clock.monotonic() == 140.0
    clock.now += 10
    assert clock.monotonic() == 150.0
    with pytest.raises(ValueError, match="does not go back"):
        clock.now -= 1
    assert clock.monotonic() == 150.0


# -- RecordingClient ---------------------------------------------------------------------------------------


class Echo(InMemoryPeer):
    async def answer(self, method: str, path: str, body: object, caller: str) -> tuple[int, object]:
        return 200, {"path": path, "caller": caller, "body": body}


async def test_a_request_is_kept_with_its_signer_and_answered_by_the_peer_it_is_under() -> None:
    acme = runtime("acme")
    client = RecordingClient()
    client.connect(Echo(PEER))
    answer = await client.request("POST", f"{PEER}/transfers/request", json_body={"a": 1}, signer=acme.signer,
                                  headers={"X-Trace": "1"})
    assert answer.status == 200
    assert answer.json() == {"path": "/transfers/request", "caller": acme.did, "body": {"a": 1}}
    assert client.sent == [Sent("POST", f"{PEER}/transfers/request", {"a": 1}, acme.did, acme.key_id,
                                {"X-Trace": "1"})]


async def test_a_canned_answer_comes_first_then_the_longest_route_then_nobody() -> None:
    client = RecordingClient()
    client.route("https://parts.example", lambda sent: (200, "outer"))
    client.route(PEER, lambda sent: Reply(202, "inner"))
    client.answer("GET", f"{PEER}/catalog", "canned", status=203)
    assert (await client.request("GET", f"{PEER}/catalog")).status == 203
    assert (await client.request("GET", f"{PEER}/other")).json() == "inner"
    assert (await client.request("GET", "https://parts.example/did.json")).json() == "outer"
    with pytest.raises(PeerError, match="unreachable"):
        await client.request("GET", "https://parts.example.org/")  # not under the prefix: another host
    busy = RecordingClient(unreachable_status=503)
    down = await busy.request("POST", PEER)
    assert (down.status, down.json()) == (503, {"reason": ["the peer is not there"]})


async def test_an_address_the_guard_refuses_is_refused_before_anything_is_sent() -> None:
    client = RecordingClient()
    client.refuse("https://10.0.0.1", "a private address")
    with pytest.raises(OutboundRefused, match="a private address"):
        client.check_target("https://10.0.0.1/inbox")
    with pytest.raises(OutboundRefused):
        await client.request("GET", "https://10.0.0.1/inbox")
    assert client.sent == [] and client.check_target(PEER).hostname == "parts.example"


async def test_a_stream_hands_over_its_pieces_and_breaks_off_where_told() -> None:
    client = RecordingClient()
    client.answer("GET", PEER, pieces=[b"abc", b"", b"defg", PeerError("reset")])
    async with client.stream(PEER, headers={"Range": "bytes=3-"}, backend=True) as response:
        assert response.status == 200
        assert await response.content.read(2) == b"ab"
        assert await response.content.readany() == b"c"
        assert await response.content.read(3) == b"def"  # the empty piece is no end
        assert await response.content.readany() == b"g"
        with pytest.raises(PeerError, match="reset"):
            await response.content.readany()
    [sent] = client.sent
    assert sent.headers == {"Range": "bytes=3-"} and sent.backend


async def test_a_whole_body_streams_as_one_piece() -> None:
    client = RecordingClient()
    client.answer("GET", PEER, b"payload")
    async with client.stream(PEER) as response:
        assert [p async for p in response.content.iter_chunked(4)] == [b"payl", b"oad"]
        assert await response.content.readany() == b""


async def test_an_upload_is_read_to_the_end_and_kept_with_its_length() -> None:
    client = RecordingClient()
    client.answer("POST", f"{PEER}/inbox?offset=0", {"received": 6})

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    answer = await client.upload(f"{PEER}/inbox?offset=0", body(), 6, headers={"Authorization": "Bearer t"})
    assert answer.json() == {"received": 6}
    [sent] = client.sent
    assert sent.body == b"abcdef" and sent.headers == {"Authorization": "Bearer t", "Content-Length": "6"}


async def test_a_json_get_that_is_not_answered_200_is_a_peer_error() -> None:
    client = RecordingClient()
    client.answer("GET", f"{PEER}/a", {"x": 1})
    client.answer("GET", f"{PEER}/b", {"reason": ["no"]}, status=404)
    assert await client.get_json(f"{PEER}/a") == {"x": 1}
    with pytest.raises(PeerError, match="answered 404"):
        await client.get_json(f"{PEER}/b")


async def test_a_streamed_body_reads_exactly_what_is_asked() -> None:
    content = StreamedBody([b"0123456789"])
    assert await content.read(4) == b"0123"
    assert await content.read() == b"456789"
    assert await content.read() == b""


async def test_a_node_made_afresh_after_its_port_was_taken_starts_on_an_empty_store(tmp_path, monkeypatch,
                                                                                   nodes_on_postgres):
    """NodeFactory starts a node afresh in the same folder when another process took its port first. On PostgreSQL
    the store is a schema named after the folder, which outlives the folder: it is dropped with it."""
    import errno

    from connector.node import Node
    from connector.testing import NodeFactory

    real_start, refused = Node.start, []

    async def port_taken_once(self: Node) -> None:
        if not refused:
            refused.append(self)
            raise OSError(errno.EADDRINUSE, "address already in use")
        await real_start(self)

    monkeypatch.setattr(Node, "start", port_taken_once)
    factory = NodeFactory(tmp_path)
    try:
        started = await factory.start("parts")
        assert refused and started.node.store.postgres
        assert [p.name for p in started.node.participants.all_hosted()] == ["parts"]
    finally:
        await factory.close()
