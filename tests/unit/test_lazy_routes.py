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
