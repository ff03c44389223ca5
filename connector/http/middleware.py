"""The one place where errors become HTTP responses, plus request bounds, metrics and the access log.

A :class:`~connector.errors.TdsError` becomes its status with a JSON body. Under a DSP base the body is
the DSP error type of that protocol area (``CatalogError``, ``ContractNegotiationError``,
``TransferError``); elsewhere ``{"error", "message", "path"}``. Anything unexpected is logged with its
traceback and answered 500 without details.

Every request answered gets one access log line (``"event": "request"``, level info): listener, method,
route template (``/participants/{name}/data/{pid}``, never the path as sent), status, duration, and who
asked: the verified peer DID or the management token's application. Never a header, query, token or body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from connector.errors import BadRequest, PayloadTooLarge, TdsError, TooManyRequests
from connector.http.auth import CALLER_DID, TOKEN
from connector.logging import get_logger
from connector.protocol import contexts

DSP_CONTEXT = contexts.DSP
_DSP_AREA = re.compile(r"/api/dsp/2025-1/(catalog|negotiations|transfers)\b")
_DSP_ERROR_TYPE = {"catalog": "CatalogError", "negotiations": "ContractNegotiationError",
                   "transfers": "TransferError"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The process ids a DSP request named (set by the DSP handlers), echoed in its error body.
PIDS = web.RequestKey("tds_pids", dict)
_PID_FIELDS = {"negotiations": ("providerPid", "consumerPid"), "transfers": ("providerPid", "consumerPid")}
log = get_logger(component="http")
access_log = get_logger(component="access")
#: The route of a request that matched none (404, 405), in the access log.
NO_ROUTE = "(no route)"


class RequestMetrics(Protocol):
    def answered(self, listener: str, status: int, seconds: float, limit: str | None = None) -> None: ...


def route_of(request: web.Request) -> str:
    """The template of the route *request* matched (``/participants/{name}/did.json``), never its path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else NO_ROUTE


def access_line(listener: str, request: web.Request, status: int, seconds: float) -> None:
    if not access_log.is_enabled_for(logging.INFO):  # the node logs warnings only: nothing to put together
        return
    fields: dict[str, Any] = {"listener": listener, "method": request.method, "route": route_of(request),
                              "status": status, "ms": round(seconds * 1000, 1)}
    peer = request.get(CALLER_DID)
    if peer:
        fields["peer"] = peer
    token = request.get(TOKEN)
    if token is not None:
        fields["application"] = token.application
    access_log.info("request", **fields)


def error_body(request: web.Request, exc: TdsError) -> dict[str, Any]:
    match = _DSP_AREA.search(request.path)
    if match:
        body: dict[str, Any] = {
            "@context": [DSP_CONTEXT],
            "@type": _DSP_ERROR_TYPE[match.group(1)],
            "code": str(exc.status),
            "reason": [exc.message],
        }
        # ContractNegotiationError / TransferError require both pids (DSP 2025-1 schemas), and the DSP context
        # reads them as IRIs (``@type: @id``), which an empty string is not. Each is the process's, else what
        # the request named; a side that has no process (a refused opening request) is named by a fresh
        # ``urn:uuid:`` for this refusal, which no process will ever have.
        for field in _PID_FIELDS.get(match.group(1), ()):
            body[field] = ((getattr(exc, "dsp_fields", {}) or {}).get(field) or request.get(PIDS, {}).get(field)
                           or f"urn:uuid:{uuid.uuid4()}")
        return body
    body = {"error": exc.code, "message": exc.message}
    if exc.path:
        body["path"] = exc.path
    body.update(getattr(exc, "details", None) or {})
    return body


def error_middleware(listener: str, metrics: RequestMetrics | None = None) -> Any:
    """The outermost middleware of *listener*: errors rendered, then the request counted in *metrics* and
    logged (see the module docstring)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        limit: str | None = None
        started = time.perf_counter()
        try:
            response = await handler(request)
            status = response.status
            return response
        except TdsError as exc:
            status = exc.status
            if status >= 500:
                log.warning("request failed", method=request.method, path=request.path, error=exc.message)
            else:
                log.info("request refused", method=request.method, path=request.path, status=status,
                         reason=exc.message)
            headers = None
            retry_after = getattr(exc, "retry_after", None)  # a 429, or a 503 of a node too busy now
            if isinstance(retry_after, int):
                headers = {"Retry-After": str(retry_after)}
            if isinstance(exc, TooManyRequests):
                limit = exc.limit
            return web.json_response(error_body(request, exc), status=status, headers=headers)
        except web.HTTPRequestEntityTooLarge as exc:
            status = 413
            err = PayloadTooLarge(f"request body too large: {exc.text.rstrip('.')} (node.max_request_bytes)")
            return web.json_response(error_body(request, err), status=413)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status >= 400 and exc.content_type != "application/json":
                # RFC 9110 §15.5.6: a 405 names the methods the resource does support.
                allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
                message = (f"{request.method} is not allowed here; allowed: {allow['Allow']}" if allow
                           else exc.reason)
                err = TdsError(message)
                err.status, err.code = exc.status, exc.reason.lower().replace(" ", "-")
                return web.json_response(error_body(request, err), status=exc.status, headers=allow)
            raise
        except Exception:
            log.exception("unhandled error", method=request.method, path=request.path)
            err = TdsError("internal error")
            return web.json_response(error_body(request, err), status=500)
        finally:
            seconds = time.perf_counter() - started
            if metrics is not None:
                metrics.answered(listener, status, seconds, limit)
            access_line(listener, request, status, seconds)

    return middleware


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    """Query parameter *name* as an integer from *low* to *high*, or *default* when it is absent.

    ASCII digits only: ``str.isdigit`` also accepts digits such as ``"¹"`` that ``int`` refuses, and ``int``
    accepts other scripts' digits, signs, spaces and underscores, none of which a URL needs.
    """
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not low <= int(raw) <= high:
        raise BadRequest(f"query parameter {name} must be an integer from {low} to {high}", path=name)
    return int(raw)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (already bounded by the app's client_max_size)."""
    from connector.http.auth import BODY

    body = request.get(BODY)
    raw = body if body is not None else await request.read()
    if not raw:
        raise BadRequest("request body is empty; a JSON object is required")
    from connector import jsonbound

    try:
        return jsonbound.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from exc
