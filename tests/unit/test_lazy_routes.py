"""Routes built on their first request (``connector.http.server.LazyRoutes``, how the node serves its web console
without loading it to start): served as the application's own routes once built, never built for a request
elsewhere, and a path or method they do not have answered as the router answers it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector.http.server import LazyRoutes, lazy_middleware

SEEN = web.RequestKey("seen", bool)


class Pages:
    """The routes under /pages, counting how often they are built."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self) -> list[web.RouteDef]:
        self.built += 1

        async def page(request: web.Request) -> web.Response:
            return web.json_response({"name": request.match_info["name"], "seen": request.get(SEEN, False)})

        async def home(_: web.Request) -> web.Response:
            return web.Response(text="home")

        return [web.get("/pages", home), web.get("/pages/{name}", page), web.post("/pages/{name}/notes", page)]


@pytest.fixture
def pages() -> Pages:
    return Pages()


@pytest.fixture
async def client(pages: Pages) -> AsyncIterator[TestClient]:
    @web.middleware
    async def mark(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        request[SEEN] = True  # the application's middlewares run around the lazy routes too
        return await handler(request)

    async def other(_: web.Request) -> web.Response:
        return web.Response(text="other")

    app = web.Application(middlewares=[mark])
    app.add_routes([web.get("/other", other)])
    app.router.register_resource(LazyRoutes("/pages", pages))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_the_routes_are_built_on_the_first_request_under_their_prefix_and_only_once(
        client: TestClient, pages: Pages) -> None:
    assert (await client.get("/other")).status == 200
    assert (await client.get("/pagesx")).status == 404  # not under the prefix
    assert pages.built == 0
    for _ in range(3):
        response = await client.get("/pages/first")
        assert response.status == 200
        assert await response.json() == {"name": "first", "seen": True}
    assert (await (await client.get("/pages")).text()) == "home"
    assert pages.built == 1


async def test_a_path_they_do_not_have_is_404_and_a_method_they_do_not_allow_405(client: TestClient) -> None:
    assert (await client.get("/pages/a/b/c")).status == 404
    refused = await client.delete("/pages/first")
    assert refused.status == 405
    assert set(refused.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert (await client.post("/pages/first/notes")).status == 200


async def test_once_built_they_are_listed_with_the_applications_routes(client: TestClient) -> None:
    def listed() -> set[str]:
        return {route.resource.canonical for route in client.app.router.routes() if route.resource is not None}

    assert listed() == {"/other"}
    assert (await client.get("/pages/first")).status == 200
    assert listed() == {"/other", "/pages", "/pages/{name}", "/pages/{name}/notes"}


async def test_a_lazy_middleware_is_built_on_the_first_request_only_and_runs_around_the_handlers() -> None:
    built: list[int] = []

    def build() -> Any:
        built.append(1)

        @web.middleware
        async def mark(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
            request[SEEN] = True
            return await handler(request)

        return mark

    async def seen(request: web.Request) -> web.Response:
        return web.json_response(request.get(SEEN, False))

    app = web.Application(middlewares=[lazy_middleware(build)])
    app.add_routes([web.get("/seen", seen)])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert built == []
        for _ in range(3):
            assert await (await client.get("/seen")).json() is True
    assert built == [1]


#: Routes of several shapes: plain variables, a variable with a pattern of its own that spans segments, a segment
#: with text around a variable, and two routes that both match one path (the one added first answers).
def _shaped_routes() -> list[web.RouteDef]:
    def named(name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({"route": name, "match": dict(request.match_info)})

        return handler

    return [
        web.get("/x/{name}/items", named("items")),
        web.post("/x/{name}/items/{item}", named("item")),
        web.get("/x/{name}/items/{item}", named("item-get")),
        web.get("/x/{name}/files/{path:.+}", named("files")),
        web.get("/x/{name}/report.{format}", named("report")),
        web.get("/x/{name}/{kind}/latest", named("kind-latest")),
        web.get("/x/{name}/items/latest", named("items-latest")),  # shadowed by kind-latest, added before it
        web.get("/x/{name}/.well-known/version", named("version")),
        web.get("/x/{name}/a%20b", named("quoted")),
        # A specific route added after a general one that also matches its paths: aiohttp tries the longer literal
        # text before the first variable first, so the specific one answers.
        web.get("/x/{kind}/b", named("kind-b")),
        web.get("/x/y/b", named("y-b")),
        web.get("/x/z/{tail:.*}", named("z-tail")),
        web.get("/x/z/q/{id}", named("z-q")),
    ]


PATHS = [
    "/x/p/items", "/x/p/items/", "/x/p/items/7", "/x/p/items/latest", "/x/p/files/a", "/x/p/files/a/b/c",
    "/x/p/files/", "/x/p/report.json", "/x/p/report.", "/x/p/things/latest", "/x/p/.well-known/version",
    "/x/p/a%20b", "/x/p/a b", "/x/p", "/x", "/x/", "/x/p/items/7/8", "/x/%2F/items", "/x/p/ITEMS",
    "/x/y/b", "/x/w/b", "/x/z/q/1", "/x/z/r/1", "/x/z/q",
]


async def test_a_path_is_routed_as_aiohttp_routes_it_whatever_the_shape_of_the_routes() -> None:
    """The shape index (``connector.http.server._Shapes``) only narrows which routes are tried: every path and
    method gets the answer aiohttp's own router gives, the same route, status and ``Allow`` header."""
    plain = web.Application()
    plain.add_routes(_shaped_routes())
    lazy = web.Application()
    lazy.router.register_resource(LazyRoutes("/x", _shaped_routes))
    async with TestClient(TestServer(plain, host="127.0.0.1")) as expected, \
            TestClient(TestServer(lazy, host="127.0.0.1")) as got:
        answers = 0
        for path in PATHS:
            for method in ("GET", "POST", "DELETE"):
                want = await expected.request(method, path)
                have = await got.request(method, path)
                assert (have.status, have.headers.get("Allow")) == (want.status, want.headers.get("Allow")), \
                    (method, path)
                if want.status == 200:
                    answers += 1
                    assert await have.json() == await want.json(), (method, path)
        assert answers >= 10  # the table exercises the matches, not only the refusals
