"""The console's pure parts: language choice, sessions, where login may send a browser, and its texts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.http import console
from connector.http.console import i18n
from connector.http.console.sessions import (
    IDLE_S,
    LIFETIME_S,
    MAX_SESSIONS,
    MAX_SESSIONS_PER_TOKEN,
    Sessions,
    csrf_ok,
)
from connector.http.console.view import safe_next

TEMPLATES = Path(console.__file__).parent / "templates"


@pytest.mark.parametrize(("cookie", "accept", "region", "expected"), [
    ("en", "zh-CN,zh;q=0.9", "CN", "en"),          # the user's choice first
    ("zh", "en-US", None, "zh"),
    (None, "zh-CN,zh;q=0.9,en;q=0.8", None, "zh"),  # then the browser's
    (None, "en-GB,en;q=0.9,zh;q=0.5", "CN", "en"),
    (None, "fr-FR,zh;q=0.4,en;q=0.3", None, "zh"),  # the best it can have
    (None, "de, fr", "CN-GD", "zh"),                # then the participant's region
    (None, "", "DE", "en"),
    (None, None, None, "en"),
    ("xx", "zh;q=0", "CN", "zh"),                   # a bad cookie and q=0 count for nothing
    (None, "en;q=abc, zh", None, "zh"),
])
def test_language_choice(cookie, accept, region, expected):
    assert i18n.choose(cookie, accept, region) == expected


def test_an_absurd_accept_language_is_cut_short():
    assert i18n.choose(None, ",".join(["xx"] * 100_000) + ",zh", None) == "en"


def test_every_text_has_both_languages_and_every_key_a_page_uses_exists():
    console.routes([], tokens=None, participants=None)  # type: ignore[arg-type]  # imports every page module
    for key, texts in i18n.CATALOG.items():
        assert texts["en"].strip() and texts["zh"].strip(), key
        assert set(re.findall(r"{(\w+)}", texts["en"])) == set(re.findall(r"{(\w+)}", texts["zh"])), key
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([\w.]+)["']\s*[,)]""", template.read_text()))
    missing = sorted(k for k in used if k not in i18n.CATALOG)
    assert not missing, f"templates use texts without a translation: {missing}"


def test_a_text_defined_twice_differently_is_refused():
    i18n.add({"test.same": ("Same", "相同")})
    i18n.add({"test.same": ("Same", "相同")})
    with pytest.raises(ValueError, match="defined twice"):
        i18n.add({"test.same": ("Other", "其他")})


@pytest.mark.parametrize(("target", "expected"), [
    ("/console/agreements?x=1", "/console/agreements?x=1"),
    ("//evil.example/console/", "/console/"),
    ("https://evil.example/console/", "/console/"),
    ("/console/\\evil", "/console/"),
    ("/consolex", "/console/"),
    ("/console/\r\nSet-Cookie: a=b", "/console/"),
    (None, "/console/"),
])
def test_login_sends_a_browser_only_to_a_console_page(target, expected):
    assert safe_next(target) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_when_idle_and_after_its_lifetime():
    clock = Clock()
    sessions = Sessions(clock)
    sid, session = sessions.open("token-a")
    assert sessions.get(sid) is session and session.token == "token-a"
    clock.now += IDLE_S - 1
    assert sessions.get(sid) is session          # a request keeps it alive ...
    clock.now += IDLE_S - 1
    assert sessions.get(sid) is session
    clock.now += LIFETIME_S                      # ... but not beyond its lifetime
    assert sessions.get(sid) is None
    idle_id, _ = sessions.open("token-b")
    clock.now += IDLE_S + 1
    assert sessions.get(idle_id) is None


def test_session_ids_are_random_long_and_not_kept_in_clear():
    sessions = Sessions(Clock())
    ids = {sessions.open("t")[0] for _ in range(50)}
    assert len(ids) == 50 and all(len(i) >= 43 for i in ids)
    assert not any(i in repr(sessions.__dict__) for i in ids)
    assert sessions.get("not-a-session") is None and sessions.get("x" * 10_000) is None and sessions.get(None) is None


def test_sessions_are_bounded_least_recently_used_first():
    clock = Clock()
    sessions = Sessions(clock)
    first, _ = sessions.open("t0")
    for i in range(1, MAX_SESSIONS):
        clock.now += 0.001
        sessions.open(f"t{i}")
    clock.now += 0.001
    assert sessions.get(first) is not None      # used now: the next to go is another one
    sessions.open("one-more")
    assert len(sessions) == MAX_SESSIONS and sessions.get(first) is not None


def test_one_token_holds_a_bounded_number_of_sessions_and_its_logins_evict_only_its_own():
    """Attack: a tenant logs in with its own token again and again to push every other session (the host
    admin's among them) out of the node's bounded table."""
    clock = Clock()
    sessions = Sessions(clock)
    admin, _ = sessions.open("admin-token")
    mine = []
    for _ in range(MAX_SESSIONS_PER_TOKEN * 5):
        clock.now += 0.001
        mine.append(sessions.open("tenant-token")[0])
    assert len(sessions) == MAX_SESSIONS_PER_TOKEN + 1 and sessions.get(admin) is not None
    assert [sessions.get(m) is not None for m in mine[-MAX_SESSIONS_PER_TOKEN:]] == [True] * MAX_SESSIONS_PER_TOKEN
    assert sessions.get(mine[0]) is None


def test_a_full_table_evicts_from_the_token_holding_the_most_sessions(monkeypatch):
    monkeypatch.setattr("connector.http.console.sessions.MAX_SESSIONS", 30)
    clock = Clock()
    sessions = Sessions(clock)
    admin, _ = sessions.open("admin-token")
    for i in range(29):  # the table filled by a tenant's many tokens, one holding more than the others
        clock.now += 0.001
        sessions.open("tenant-main" if i % 2 else f"tenant-{i}")
    clock.now += 3600.0  # the admin's session is the least recently used of all
    sessions.open("someone")
    assert len(sessions) == 30 and sessions.get(admin) is not None


def test_logout_closes_and_csrf_compares_exactly():
    sessions = Sessions(Clock())
    sid, session = sessions.open("t")
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, "") and not csrf_ok(session, session.csrf[:-1])
    sessions.close(sid)
    assert sessions.get(sid) is None


async def test_a_long_console_request_authenticates_its_token_again(monkeypatch):
    """A live stream calls the API for minutes: a token revoked meanwhile stops it within RECHECK_S."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from connector.errors import Unauthorized
    from connector.http.console import api
    from connector.http.management import Route
    from connector.store.repository import Token

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    token = Token(participant_id="p1", application="cli", admin=False)
    revoked = False
    checks = 0

    async def recheck() -> Token:
        nonlocal checks
        checks += 1
        if revoked:
            raise Unauthorized("unknown or revoked token")
        return token

    bound = api.ManagementApi([Route("GET", "/things/{id}", handler, "one thing")]).bound(
        make_mocked_request("GET", "/console/"), token, recheck)
    assert await bound.get("/things/a%2Fb") == {"ok": True}
    assert checks == 0  # within RECHECK_S of the request's own authentication
    monkeypatch.setattr(api, "RECHECK_S", 0.0)
    assert await bound.get("/things/x") == {"ok": True} and checks == 1
    revoked = True
    with pytest.raises(Unauthorized):
        await bound.get("/things/x")
