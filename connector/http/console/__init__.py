"""The web console (``/console/`` on the management listener), for SME staff and the hosting enterprise.

Server-rendered pages (Jinja2, autoescaped) with a little progressive JavaScript (htmx, vendored; a page
works without it), and live updates by server-sent events. Log in with a participant's or an application's
token (kept in the node's memory; the browser holds a session cookie) or send ``Authorization: Bearer``;
the node's admin token sees the admin pages. Every read and every action is a management route called
in-process with the caller's token (``connector.http.console.api``), so the console can do exactly what
that token can do through the API and the CLI, and nothing more. Languages: English and simplified Chinese
(``connector.http.console.i18n``).

Each page module offers ``routes(console) -> list[web.RouteDef]`` and ``NAV`` (its navigation entries).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from connector.errors import NotFound, Unauthorized
from connector.http.console import i18n
from connector.http.console.api import ManagementApi
from connector.http.console.view import (
    BASE,
    LOGIN_CSRF_COOKIE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    STATIC,
    Console,
    Ctx,
    log,
    new_login_csrf,
    safe_next,
)
from connector.http.management import Handler, Route

if TYPE_CHECKING:
    from connector.services.participants import ParticipantRegistry
    from connector.services.tokens import TokenService

#: The longest token a login form may carry (a real one is 43 characters).
MAX_TOKEN_CHARS = 200
STATIC_FILES = frozenset(p.name for p in STATIC.iterdir() if p.is_file())


def routes(table: Sequence[Route], tokens: TokenService, participants: ParticipantRegistry) -> list[web.RouteDef]:
    """The console's routes over the management *table*."""
    # The page modules register their texts on import.
    from connector.http.console import (
        admin,
        agreements,
        discover,
        negotiations,
        overview,
        publishing,
        statements,
        transfers,
        usage,
    )

    console = Console(ManagementApi(table), tokens, participants)
    pages = [overview, discover, negotiations, agreements, transfers, usage, statements, publishing, admin]
    for module in pages:
        console.nav.extend(module.NAV)
    table_out = [
        web.get(BASE, to_console),
        web.get(f"{BASE}/login", login_form(console)),
        web.post(f"{BASE}/login", login(console)),
        web.post(f"{BASE}/logout", logout(console)),
        web.get(f"{BASE}/lang/{{lang}}", switch_language),
        web.get(f"{BASE}/static/{{name}}", static_file),
    ]
    for module in pages:
        table_out.extend(module.routes(console))

    @console.page(audience="any")
    async def unknown(ctx: Ctx) -> web.StreamResponse:
        raise NotFound(ctx.t("error.no_page"))

    table_out.append(web.get(f"{BASE}/{{tail:.*}}", unknown))  # last: an HTML 404 after login
    return table_out


async def to_console(_: web.Request) -> web.Response:
    return _see_other(f"{BASE}/")


def _see_other(to: str) -> web.Response:
    return web.Response(status=303, headers={"Location": to, **SECURITY_HEADERS})


def login_form(console: Console) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        lang = console.lang_of(request, None)
        csrf = new_login_csrf()
        response = console.render(request, "login.html", lang=lang, token=None, session=None,
                                  login_csrf=csrf, next=safe_next(request.query.get("next")), failed=None)
        response.set_cookie(LOGIN_CSRF_COOKIE, csrf, path=f"{BASE}/login", httponly=True, samesite="Strict",
                            secure=request.secure)
        return response

    return handler


def login(console: Console) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        lang = console.lang_of(request, None)
        form = await request.post()
        value = form.get("token")
        raw_next = form.get("next")
        target = safe_next(raw_next if isinstance(raw_next, str) else None)
        offered, expected = form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)

        def again(key: str, status: int) -> web.Response:
            csrf = new_login_csrf()
            response = console.render(request, "login.html", status=status, lang=lang, token=None, session=None,
                                      login_csrf=csrf, next=target, failed=i18n.translate(lang, key))
            response.set_cookie(LOGIN_CSRF_COOKIE, csrf, path=f"{BASE}/login", httponly=True, samesite="Strict",
                                secure=request.secure)
            return response

        if not (isinstance(offered, str) and expected and offered == expected):
            log.warning("console login refused: CSRF token missing or wrong")
            return again("csrf.failed", 403)
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TOKEN_CHARS:
            return again("login.failed", 401)
        try:
            token = await console.tokens.authenticate(value.strip())
        except Unauthorized:
            log.info("console login refused: unknown or revoked token")
            return again("login.failed", 401)
        session_id, _ = console.sessions.open(value.strip())
        log.info("console login", participant=token.participant_id, application=token.application,
                 admin=token.admin)
        if token.admin and target == f"{BASE}/":
            target = f"{BASE}/admin"
        response = _see_other(target)
        response.set_cookie(SESSION_COOKIE, session_id, path=f"{BASE}/", httponly=True, samesite="Strict",
                            secure=request.secure)
        response.del_cookie(LOGIN_CSRF_COOKIE, path=f"{BASE}/login")
        return response

    return handler


def logout(console: Console) -> Handler:
    @console.page(audience="any")
    async def handler(ctx: Ctx) -> web.StreamResponse:
        console.sessions.close(ctx.request.cookies.get(SESSION_COOKIE))
        response = _see_other(f"{BASE}/login")
        response.del_cookie(SESSION_COOKIE, path=f"{BASE}/")
        return response

    return handler


async def switch_language(request: web.Request) -> web.Response:
    lang = request.match_info["lang"]
    if lang not in i18n.LANGS:
        raise web.HTTPNotFound()
    response = _see_other(safe_next(request.query.get("next")))
    response.set_cookie(i18n.COOKIE, lang, path=f"{BASE}/", max_age=365 * 86400, samesite="Lax",
                        secure=request.secure)
    return response


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.Response(body=(STATIC / name).read_bytes(), content_type=content_type,
                        headers={**SECURITY_HEADERS, "Cache-Control": "max-age=3600"})
