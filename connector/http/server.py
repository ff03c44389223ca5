"""The HTTP server both listeners run on: aiohttp's, with the requests it refuses itself answered and
logged the project's way.

aiohttp's parser refuses some requests before any middleware runs: a request line or header field over
its limit (8190 bytes), a malformed header, a request that is not HTTP. aiohttp would answer those 400
with the parser's message as a plain-text body and log a traceback through the stdlib logger
``aiohttp.server``; both quote the offending line, which can be an ``Authorization`` header with a valid
token in it. Here they get a JSON error body in the shape :mod:`connector.http.middleware` gives (a
readable reason, never the request's content) and one JSON log line with the status, the reason and the
peer. Everything that reaches the application is still rendered by the error middleware alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from connector.logging import get_logger

log = get_logger(component="http")


def refusal_reason(exc: BaseException | None, limit: int) -> str:
    """Why the parser refused a request, in words that quote nothing of the request itself."""
    if isinstance(exc, LineTooLong):
        return f"the request line or a header field is longer than {limit} bytes"
    if isinstance(exc, BadHttpMethod):
        if "HTTPS" in exc.message:  # aiohttp's own words, no request content
            return "HTTPS traffic on a plain HTTP port"
        return "the request method is not valid HTTP"
    if isinstance(exc, BadStatusLine):
        return "the request line is not valid HTTP"
    if isinstance(exc, InvalidHeader):
        return "a request header is malformed"
    if isinstance(exc, InvalidURLError):
        return "the request target is not a valid URL"
    return "the request is not valid HTTP"


class _Handler(RequestHandler):
    """aiohttp's connection handler with its own error answers and log lines (see the module docstring)."""

    __slots__ = ("_listener", "_requests_total")
    _listener: str
    _requests_total: Any

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # *message* is the parser's text, which quotes the request: it is neither logged nor sent.
        if isinstance(exc, HttpProcessingError) or status < 500:
            status = status if 400 <= status < 500 else 400
            code, reason = "bad-request", refusal_reason(exc, max(self.max_line_size, self.max_field_size))
            log.info("request refused before routing", listener=self._listener, status=status, reason=reason,
                     peer=request.remote)
        elif status == 504:
            code, reason = "timeout", "the request took too long to handle"
            log.warning("request timed out", listener=self._listener, status=status, peer=request.remote)
        else:
            # Only what escaped the error middleware gets here (a response that failed while being sent).
            code, reason = "internal", "internal error"
            log.error("request failed outside the application", listener=self._listener, status=status,
                      error=type(exc).__name__ if exc is not None else None, peer=request.remote)
        if self._requests_total is not None:
            self._requests_total.labels(listener=self._listener, status=str(status)).inc()
        if request.writer.output_size > 0:
            # Part of an answer already left: the connection cannot carry another one (as aiohttp does).
            raise ConnectionError("response already started; the connection is closed instead")
        response = web.json_response({"error": code, "message": reason}, status=status)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's other error logs ("Unhandled exception", a handler without a response): one JSON line
        # naming the exception's type, without the traceback or message, which may quote the request.
        exc = kw.get("exc_info")
        log.error("http server error", listener=self._listener, detail=str(args[0])[:200] if args else "",
                  error=type(exc).__name__ if isinstance(exc, BaseException) else None)


class _Server(web.Server):
    def __init__(self, *args: Any, listener: str, requests_total: Any | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener
        self._requests_total = requests_total

    def __call__(self) -> RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler._listener = self._listener
        handler._requests_total = self._requests_total
        return handler


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections are handled by :class:`_Handler`. *listener* names the listener
    in log lines and in *requests_total* (the node's request counter, by listener and status)."""

    def __init__(self, app: web.Application, *, listener: str, requests_total: Any | None = None,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._listener = listener
        self._requests_total = requests_total

    async def _make_server(self) -> web.Server:
        # aiohttp builds the app's server (start-up signals, freezing, handler arguments); it is rebuilt
        # with the same settings around :class:`_Handler`, the one thing that differs.
        plain = await super()._make_server()
        return _Server(plain.request_handler, request_factory=plain.request_factory,
                       handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                       listener=self._listener, requests_total=self._requests_total, **plain._kwargs)


class LazyRoutes(web.AbstractResource):
    """Every path under *prefix* (and *prefix* itself), routed by the routes *build* returns, built on the first
    request there: what they need is not imported to start the listener. A request they match is handled as if
    they had been the listener's own routes (the application's middlewares, ``match_info``); one they do not match
    is answered 404, or 405 with the methods they allow. Once built, they are listed with the listener's own
    (``app.router.routes()``); before, none is.

    Register it with ``app.router.register_resource(LazyRoutes(...))``.

    A request is matched only against the routes of its path's shape (:class:`_Shapes`): aiohttp's own index goes
    by the text before a path's first variable, which all routes under ``/participants/{name}/`` share, and
    would try the pattern of each in turn."""

    def __init__(self, prefix: str, build: Callable[[], Sequence[web.RouteDef]]) -> None:
        super().__init__()
        self._prefix = prefix.rstrip("/")
        self._build = build
        self._router: web.UrlDispatcher | None = None
        self._shapes: _Shapes | None = None

    @property
    def canonical(self) -> str:
        return self._prefix

    def url_for(self, **kwargs: str) -> Any:
        raise NotImplementedError("the routes under a LazyRoutes prefix have no URLs to build")

    def add_prefix(self, prefix: str) -> None:
        self._prefix = prefix + self._prefix

    def get_info(self) -> Any:
        return {"prefix": self._prefix}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0 if self._router is None else len(self._router.routes())

    def __iter__(self) -> Iterator[Any]:
        return iter(()) if self._router is None else iter(self._router.routes())

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        path = request.rel_url.path_safe
        if path != self._prefix and not path.startswith(self._prefix + "/"):
            return None, set()
        if self._shapes is None:
            router = web.UrlDispatcher()
            router.add_routes(self._build())
            router.freeze()
            self._router = router
            self._shapes = _Shapes(router.resources())
        allowed: set[str] = set()
        for resource in self._shapes.candidates(path):
            match, methods = await resource.resolve(request)
            if match is not None:
                return match, set()
            allowed |= methods
        return None, allowed


#: A path variable without a pattern of its own (``{pid}``), as aiohttp compiles it: one segment, never a ``/``.
_ONE_SEGMENT = re.compile(r"\(\?P<\w+>\[\^\{\}/\]\+\)")


class _Shapes:
    """*resources* (in their order) by the shape of the paths they can match, in a tree of path segments: a route
    whose variables are all plain (``{pid}``) matches only paths with its own number of segments whose literal
    segments are its own, so a path is matched only against the routes along its own branches (a segment's literal
    branch and its variable branch). Any other resource (a variable with a pattern of its own, which may span
    segments; a prefix) is a candidate for every path."""

    def __init__(self, resources: Sequence[web.AbstractResource]) -> None:
        self._root = _Segment()
        self._anywhere: list[tuple[tuple[int, int], web.AbstractResource]] = []
        for order, resource in enumerate(resources):
            rank = (-len(_index_key(resource)), order)
            template = self._template(resource)
            if template is None:
                self._anywhere.append((rank, resource))
                continue
            node = self._root
            for part in template.split("/"):
                node = node.child("{" if "{" in part else part)
            node.resources.append((rank, resource))

    @staticmethod
    def _template(resource: web.AbstractResource) -> str | None:
        """The path template of a plain or one-segment-per-variable resource; None for any other."""
        if isinstance(resource, web.PlainResource):
            return resource.canonical
        if isinstance(resource, web.DynamicResource):
            pattern = resource.get_info()["pattern"].pattern
            return resource.canonical if "(?P<" not in _ONE_SEGMENT.sub("", pattern) else None
        return None

    def candidates(self, path: str) -> list[web.AbstractResource]:
        """The resources that may match *path*, in the order aiohttp's router tries them: the longest literal text
        before the first variable first (a specific route added after a general one still wins), then the order
        they were added."""
        found = list(self._anywhere)
        nodes = [self._root]
        for part in path.split("/"):
            nodes = [n for node in nodes for n in (node.children.get(part), node.children.get("{")) if n is not None]
            if not nodes:
                break
        else:
            for node in nodes:
                found += node.resources
        if len(found) > 1:
            found.sort(key=lambda entry: entry[0])
        return [resource for _, resource in found]


def _index_key(resource: web.AbstractResource) -> str:
    """The literal text aiohttp's router indexes *resource* by (``UrlDispatcher._get_resource_index_key``): its path
    up to the last ``/`` before its first variable; it tries longer ones first."""
    key = resource.canonical
    if "{" in key:
        key = key.partition("{")[0].rpartition("/")[0]
    return key.rstrip("/") or "/"


class _Segment:
    """A node of :class:`_Shapes`' tree: the branch of each literal segment that follows, ``{`` for a variable's
    branch, and the resources whose templates end here."""

    __slots__ = ("children", "resources")

    def __init__(self) -> None:
        self.children: dict[str, _Segment] = {}
        self.resources: list[tuple[tuple[int, int], web.AbstractResource]] = []

    def child(self, part: str) -> _Segment:
        node = self.children.get(part)
        if node is None:
            node = self.children[part] = _Segment()
        return node


def lazy_middleware(build: Callable[[], Middleware]) -> Middleware:
    """The middleware *build* returns, built on the listener's first request: what it needs is not imported to start
    the listener (as :class:`LazyRoutes` for routes)."""
    built: list[Middleware] = []

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not built:
            built.append(build())
        return await built[0](request, handler)

    return middleware
