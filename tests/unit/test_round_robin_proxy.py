"""The load balancer the scale-out tests put in front of a node's processes (``connector.testing.RoundRobinProxy``):
requests in turn, passed on unchanged, bodies streamed both ways, a dead upstream skipped."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from connector.testing import RoundRobinProxy, free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MIB = 1024 * 1024


class Upstreams:
    """Small HTTP servers on 127.0.0.1 standing in for a node's processes; all stopped at the end."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.servers: list[asyncio.Server] = []

    async def start(self, name: str, handler: Handler | None = None) -> str:
        async def echo(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            seen = {"name": name, "method": request.method, "target": request.raw_path,
                    "host": request.headers.get("Host"), "signature": request.headers.get("Signature"),
                    "body": body.decode()}
            return web.json_response(seen, status=201, headers={"X-Upstream": name})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler or echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def resetting(self) -> str:
        """A server that reads a request's head and drops the connection before answering (a process killed then)."""

        async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.transport.abort()

        server = await asyncio.start_server(drop, "127.0.0.1", 0)
        self.servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        for server in self.servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    servers = Upstreams()
    yield servers
    await servers.close()


@pytest.fixture
async def proxy() -> AsyncIterator[RoundRobinProxy]:
    started = RoundRobinProxy()
    await started.start(port=0)
    yield started
    await started.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def dead_url() -> str:
    """An address nothing listens on: its connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


async def answered_by(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["name"])


async def test_requests_go_to_the_upstreams_in_turn(upstreams, proxy, session):
    a, b, c = [await upstreams.start(name) for name in "abc"]
    proxy.upstreams = [a, b, c]
    names = [await answered_by(session, f"{proxy.url}/x") for _ in range(7)]
    assert names == ["a", "b", "c", "a", "b", "c", "a"]
    assert proxy.counts == {a: 3, b: 2, c: 2}


async def test_the_request_and_answer_pass_unchanged(upstreams, proxy, session):
    proxy.upstreams = [await upstreams.start("a")]
    target = "/api/dsp/p%2Fq/negotiations/request?x=1&y=%20z"
    headers = {"Host": "connector.example:8443", "Signature": "sig1=:abc:", "Content-Type": "application/json"}
    async with session.post(f"{proxy.url}{target}", data=b'{"k": 1}', headers=headers) as resp:
        seen = await resp.json()
        assert (resp.status, resp.headers["X-Upstream"]) == (201, "a")
    assert seen == {"name": "a", "method": "POST", "target": target, "host": "connector.example:8443",
                    "signature": "sig1=:abc:", "body": '{"k": 1}'}


async def test_bodies_stream_both_ways(upstreams, proxy, session):
    """A few MiB up and down, each side seeing the first bytes before the other has sent the rest: neither
    body is held whole in the proxy."""
    upload = [os.urandom(MIB) for _ in range(4)]
    download = [os.urandom(MIB) for _ in range(4)]
    upstream_has_first, client_has_first = asyncio.Event(), asyncio.Event()
    received = hashlib.sha256()

    async def exchange(request: web.Request) -> web.StreamResponse:
        async for piece in request.content.iter_any():
            received.update(piece)
            upstream_has_first.set()
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(download[0])
        await asyncio.wait_for(client_has_first.wait(), 20)
        for block in download[1:]:
            await response.write(block)
        await response.write_eof()
        return response

    proxy.upstreams = [await upstreams.start("a", exchange)]

    async def body() -> AsyncIterator[bytes]:
        yield upload[0]
        await asyncio.wait_for(upstream_has_first.wait(), 20)
        for block in upload[1:]:
            yield block

    answered = hashlib.sha256()
    headers = {"Content-Length": str(sum(map(len, upload)))}
    async with session.post(f"{proxy.url}/upload", data=body(), headers=headers) as resp:
        assert resp.status == 200
        async for piece in resp.content.iter_any():
            answered.update(piece)
            client_has_first.set()
    assert received.hexdigest() == hashlib.sha256(b"".join(upload)).hexdigest()
    assert answered.hexdigest() == hashlib.sha256(b"".join(download)).hexdigest()


async def test_an_upstream_that_refuses_is_skipped(upstreams, proxy, session):
    a, b = await upstreams.start("a"), await upstreams.start("b")
    dead = dead_url()
    proxy.upstreams = [a, dead, b]
    names = [await answered_by(session, f"{proxy.url}/x") for _ in range(6)]
    assert names == ["a", "b", "b", "a", "b", "b"]
    assert (proxy.counts[dead], proxy.skipped[dead]) == (0, 2)


async def test_an_upstream_that_drops_the_connection_before_answering_is_skipped(upstreams, proxy, session):
    """The body of a request already sent to it goes again, whole, to the next upstream."""
    dropping, a = await upstreams.resetting(), await upstreams.start("a")
    proxy.upstreams = [dropping, a]
    body = json.dumps({"n": list(range(1000))})
    async with session.post(f"{proxy.url}/x", data=body, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 201
        seen = await resp.json()
    assert (seen["name"], seen["body"]) == ("a", body)
    assert (proxy.counts[dropping], proxy.skipped[dropping]) == (0, 1)


async def test_an_upstream_stopped_after_answering_is_skipped_on_its_kept_alive_connections(upstreams, proxy, session):
    a, b = await upstreams.start("a"), await upstreams.start("b")
    proxy.upstreams = [a, b]
    assert [await answered_by(session, f"{proxy.url}/x") for _ in range(2)] == ["a", "b"]
    await upstreams.runners[0].cleanup()  # the process behind a is gone
    upstreams.runners.pop(0)
    assert [await answered_by(session, f"{proxy.url}/x") for _ in range(4)] == ["b"] * 4


@pytest.mark.parametrize("count", [0, 2])
async def test_502_when_no_upstream_answers(proxy, session, count):
    proxy.upstreams = [dead_url() for _ in range(count)]
    async with session.post(f"{proxy.url}/x", data=b"{}") as resp:
        assert resp.status == 502
        assert "no upstream answered" in await resp.text()


async def test_an_answer_cut_short_upstream_drops_the_clients_connection(upstreams, proxy, session):
    async def dies_midway(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(os.urandom(MIB))
        assert request.transport is not None
        request.transport.abort()
        return response

    proxy.upstreams = [await upstreams.start("a", dies_midway)]
    async with session.get(f"{proxy.url}/stream") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
