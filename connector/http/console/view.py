"""The console's request handling: who is asking, in which language, and how a page is rendered.

A page handler takes a :class:`Ctx` and returns a response. :meth:`Console.page` wraps it: the caller is the
session's token (cookie ``tds_console``) or a request's ``Authorization: Bearer`` token (scripts and tests;
no session, no CSRF needed: a browser never sends it by itself). Without either, a page redirects to the
login page (GET) or answers 401. A state-changing request of a session must carry the session's CSRF token
and, where the browser sends one, an ``Origin`` of this listener. Every refusal (the API's errors included)
is an HTML page with the refusal's status, so a user reads the reason and a script sees the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from connector.errors import Forbidden, PayloadTooLarge, TdsError, Unauthorized
from connector.http.console import i18n
from connector.http.console.api import BoundApi, ManagementApi, segment
from connector.http.console.sessions import Session, Sessions, csrf_ok
from connector.logging import get_logger
from connector.store.repository import Token

if TYPE_CHECKING:
    from multidict import MultiDictProxy

    from connector.services.participants import ParticipantRegistry
    from connector.services.tokens import TokenService

BASE = "/console"
SESSION_COOKIE = "tds_console"
LOGIN_CSRF_COOKIE = "tds_login_csrf"
STATIC = Path(__file__).parent / "static"
log = get_logger(component="console")

#: What every console answer carries: nothing from elsewhere runs, nothing frames it, nothing is cached.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it a browser sends a form's POST with `Origin: null`, which the origin check
    # refuses; "same-origin" keeps the Origin on our own forms and gives other sites no referrer.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

PageHandler = Callable[["Ctx"], Awaitable[web.StreamResponse]]
#: A live stream ends after this long; the browser's EventSource then connects again by itself.
STREAM_S = 600.0


class NavItem(NamedTuple):
    path: str
    label: str
    #: "participant" (a participant's or application's token) or "admin" (the node's admin token).
    audience: str = "participant"


@dataclass
class Ctx:
    """One console request: its caller, language, API and rendering."""

    console: Console
    request: web.Request
    token: Token
    api: BoundApi
    lang: i18n.Lang
    session: Session | None
    #: The posted form of a state-changing request (empty for GET).
    form: Mapping[str, Any] = field(default_factory=dict)

    def t(self, key: str, **fields: object) -> str:
        return i18n.translate(self.lang, key, **fields)

    def flash(self, kind: str, text: str) -> None:
        if self.session is not None:
            self.session.flashes.append((kind, text))

    def redirect(self, to: str, *, ok: str | None = None) -> web.Response:
        """303 to *to* (a console path), with *ok* shown there once."""
        if ok:
            self.flash("ok", ok)
        return web.Response(status=303, headers={"Location": to, **SECURITY_HEADERS})

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        return self.console.render(self.request, template, status=status, lang=self.lang, token=self.token,
                                   session=self.session, **values)


class Console:
    """What the console's pages share: the API, the sessions, the templates and the navigation."""

    def __init__(self, api: ManagementApi, tokens: TokenService, participants: ParticipantRegistry) -> None:
        self.api, self.tokens, self.participants = api, tokens, participants
        self.sessions = Sessions()
        self.nav: list[NavItem] = []
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["seg"] = segment
        self.env.filters["q"] = lambda v: quote(str(v), safe="")

    # who is asking ----------------------------------------------------------------------------------------
    def region_of(self, token: Token | None) -> str | None:
        found = self.participants.by_id(token.participant_id) if token and token.participant_id else None
        found = found or self.participants.first()
        return found.record.region if found is not None else None

    def lang_of(self, request: web.Request, token: Token | None) -> i18n.Lang:
        return i18n.choose(request.cookies.get(i18n.COOKIE), request.headers.get("Accept-Language"),
                           self.region_of(token))

    async def caller(self, request: web.Request) -> tuple[Token, Session | None, str]:
        """The request's token, its session (None for a Bearer request) and the token's value; Unauthorized if
        none."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if header:
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("the console takes 'Authorization: Bearer <token>' or a session cookie")
            return await self.tokens.authenticate(value.strip()), None, value.strip()
        session_id = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id)
        if session is None:
            raise Unauthorized("not logged in")
        try:
            token = await self.tokens.authenticate(session.token)
        except Unauthorized:
            self.sessions.close(session_id)  # its token was revoked (or its participant removed)
            raise
        return token, session, session.token

    # pages ------------------------------------------------------------------------------------------------
    def page(self, *, audience: str = "participant") -> Callable[[PageHandler], Callable[[web.Request],
                                                                                         Awaitable[web.StreamResponse]]]:
        """Wrap a page handler: the caller authenticated, CSRF checked, refusals rendered (module docstring).
        *audience*: "participant" (the admin token is sent to the admin pages), "admin" (admin token only)
        or "any"."""

        def wrap(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            @functools.wraps(handler)
            async def run(request: web.Request) -> web.StreamResponse:
                try:
                    token, session, value = await self.caller(request)
                except Unauthorized as exc:
                    return self._unauthenticated(request, exc)
                lang = self.lang_of(request, token)
                api = self.api.bound(request, token, functools.partial(self.tokens.authenticate, value))
                ctx = Ctx(self, request, token, api, lang, session)
                try:
                    if request.method not in ("GET", "HEAD"):
                        ctx.form = await self._checked_form(request, session, lang)
                    if audience == "admin" and not token.admin:
                        raise Forbidden(ctx.t("admin.only"))
                    if audience == "participant" and token.participant_id is None:
                        if token.admin and request.method == "GET":
                            return ctx.redirect(f"{BASE}/admin")
                        raise Forbidden(ctx.t("participant.only"))
                    response = await handler(ctx)
                except TdsError as exc:
                    log.info("console request refused", method=request.method, path=request.path,
                             status=exc.status, reason=exc.message)
                    return self.error_page(request, ctx, exc)
                for name, value in SECURITY_HEADERS.items():
                    response.headers.setdefault(name, value)
                return response

            return run

        return wrap

    async def _checked_form(self, request: web.Request, session: Session | None,
                            lang: i18n.Lang) -> MultiDictProxy[Any]:
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge as exc:
            raise PayloadTooLarge(i18n.translate(lang, "error.too_large", limit=request.client_max_size)) from exc
        if session is not None:
            offered = request.headers.get("X-CSRF-Token") or _text(form.get("csrf"))
            if not csrf_ok(session, offered) or not same_origin(request):
                log.warning("console form refused: CSRF token or origin wrong", path=request.path,
                            origin=request.headers.get("Origin", "")[:200])
                raise Forbidden(i18n.translate(lang, "csrf.failed"))
        return form

    def _unauthenticated(self, request: web.Request, exc: Unauthorized) -> web.StreamResponse:
        if request.method == "GET" and "Authorization" not in request.headers:
            target = f"{BASE}/login?next={quote(request.path_qs, safe='')}"
            if request.headers.get("HX-Request"):
                return web.Response(status=401, headers={"HX-Redirect": target, **SECURITY_HEADERS})
            response = web.Response(status=303, headers={"Location": target, **SECURITY_HEADERS})
            if request.cookies.get(SESSION_COOKIE):
                response.del_cookie(SESSION_COOKIE, path=f"{BASE}/")
            return response
        lang = self.lang_of(request, None)
        return self.render(request, "error.html", status=401, lang=lang, token=None, session=None,
                           message=exc.message, status_code=401)

    def error_page(self, request: web.Request, ctx: Ctx, exc: TdsError) -> web.Response:
        status = exc.status if 400 <= exc.status < 600 else 500
        return ctx.render("error.html", status=status, message=exc.message, status_code=status)

    def render(self, request: web.Request, template: str, *, status: int = 200, lang: i18n.Lang,
               token: Token | None, session: Session | None, **values: Any) -> web.Response:
        flashes, session_flashes = [], session.flashes if session is not None else []
        flashes, session_flashes[:] = list(session_flashes), []
        audience = None if token is None else "admin" if token.admin else "participant"
        html = self.env.get_template(template).render(
            t=functools.partial(i18n.translate, lang), lang=lang, base=BASE, token=token,
            csrf=session.csrf if session is not None else "", flashes=flashes, path=request.path,
            nav=[n for n in self.nav if n.audience == audience], next_lang="en" if lang == "zh" else "zh",
            **values)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers=SECURITY_HEADERS)


async def event_stream(ctx: Ctx, messages: AsyncGenerator[dict[str, Any], None],
                       ended: Callable[[TdsError], dict[str, Any]]) -> web.StreamResponse:
    """Server-sent events: each of *messages* (``static/console.js`` says their shape) until one is final, or
    :data:`STREAM_S` has passed. A refusal on the way (its token revoked, its participant suspended) ends the
    stream with the final message *ended* makes of it. A page checks that the caller may see the process
    before it calls this, so that a refusal is a page, not a stream."""
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(ctx.request)

    async def send(message: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(message, ensure_ascii=False)}\n\n".encode())

    try:
        try:
            async with asyncio.timeout(STREAM_S), contextlib.aclosing(messages):
                async for message in messages:
                    await send(message)
                    if message.get("final"):
                        break
        except TimeoutError:
            pass
        except TdsError as exc:
            await send(ended(exc))
        await response.write_eof()
    except ConnectionResetError:
        log.debug("console event stream closed by the browser", path=ctx.request.path)
    return response


def same_origin(request: web.Request) -> bool:
    """Whether the request's ``Origin`` (when the browser sent one) is this listener."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return hmac.compare_digest(parts.netloc.lower(), request.host.lower())


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def safe_next(value: str | None) -> str:
    """Where to go after login: a console path only (never another site)."""
    if value and value.startswith(f"{BASE}/") and not value.startswith("//") and "\\" not in value \
            and "\n" not in value and "\r" not in value:
        return value
    return f"{BASE}/"
