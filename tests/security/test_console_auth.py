"""The console's doors: who gets in, with what, and what a forged or stale request gets.

Every attacker here holds something real: another participant's token, a revoked token, a session cookie
without its CSRF token, a form posted from another origin, the admin token on a participant's page.
"""

from __future__ import annotations

import re

import aiohttp
import pytest

from connector.http.console.view import SECURITY_HEADERS, SESSION_COOKIE


def jar(*, english: bool = True) -> aiohttp.ClientSession:
    # The default jar drops cookies of an IP address; a browser keeps them.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 headers={"Accept-Language": "en"} if english else None)


async def login(session: aiohttp.ClientSession, base: str, token: str) -> aiohttp.ClientResponse:
    async with session.get(f"{base}/console/login") as form:
        page = await form.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    async with session.post(f"{base}/console/login", data={"token": token, "csrf": csrf[1], "next": "/console/"},
                            allow_redirects=False) as answer:
        await answer.read()
        return answer


def session_csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "the page carries no CSRF token"
    return found[1]


@pytest.fixture
async def hosted(nodes):
    host = await nodes.start("acme", region="CN-GD")
    one = await nodes.host(host, "sme-one", region="CN-GD")
    two = await nodes.host(host, "sme-two", region="DE")
    return host, one, two


async def test_without_a_token_a_page_sends_to_login_and_an_action_is_401(hosted):
    host, _, _ = hosted
    base = host.node.management_url
    async with jar() as s:
        async with s.get(f"{base}/console/no-such-page?x=1", allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/console/login?next=%2Fconsole%2Fno-such-page%3Fx%3D1"
        async with s.get(f"{base}/console/no-such-page", headers={"Authorization": f"Bearer {host.token}"}) as r:
            assert r.status == 404 and "no such console page" in await r.text()
        async with s.get(f"{base}/console/", headers={"HX-Request": "true"}, allow_redirects=False) as r:
            assert r.status == 401 and r.headers["HX-Redirect"].startswith("/console/login")
        async with s.post(f"{base}/console/logout", allow_redirects=False) as r:
            assert r.status == 401 and "not logged in" in await r.text()
        for header in ("Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", f"Token {host.token}"):
            async with s.get(f"{base}/console/", headers={"Authorization": header}, allow_redirects=False) as r:
                assert r.status == 401, header
                assert "text/html" in r.headers["Content-Type"]


async def test_a_bearer_token_acts_as_its_own_participant_only(hosted):
    host, one, two = hosted
    base = host.node.management_url
    async with aiohttp.ClientSession() as s:
        for party in (one, two):
            async with s.get(f"{base}/console/", headers={"Authorization": f"Bearer {party.token}"}) as r:
                page = await r.text()
                assert r.status == 200
                me = party.participant.did
                other = (two if party is one else one).participant.did
                assert me in page and other not in page


async def test_every_answer_carries_the_security_headers(hosted):
    host, one, _ = hosted
    base = host.node.management_url
    async with aiohttp.ClientSession() as s:
        for url, headers in ((f"{base}/console/login", {}),
                             (f"{base}/console/", {"Authorization": f"Bearer {one.token}"}),
                             (f"{base}/console/", {"Authorization": "Bearer wrong"})):
            async with s.get(url, headers=headers, allow_redirects=False) as r:
                for name, value in SECURITY_HEADERS.items():
                    assert r.headers.get(name) == value, (url, name)


async def test_login_needs_its_own_csrf_token_and_a_live_token(hosted):
    host, one, _ = hosted
    base = host.node.management_url
    async with jar() as s:
        # A login form posted from elsewhere (no login CSRF cookie/field pair) is refused.
        async with s.post(f"{base}/console/login", data={"token": one.token, "csrf": "guess"},
                          allow_redirects=False) as r:
            assert r.status == 403 and SESSION_COOKIE not in r.cookies
        answer = await login(s, base, "not-a-token")
        assert answer.status == 401 and SESSION_COOKIE not in answer.cookies
        answer = await login(s, base, "x" * 5000)
        assert answer.status == 401
        answer = await login(s, base, one.token)
        assert answer.status == 303 and answer.headers["Location"] == "/console/"
        cookie = answer.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console/"
        assert one.token not in cookie.value  # the cookie holds a session id, never the token
        async with s.get(f"{base}/console/") as r:
            assert r.status == 200 and one.participant.did in await r.text()


async def test_a_session_form_needs_its_csrf_token_and_this_origin(hosted):
    host, one, _ = hosted
    base = host.node.management_url
    async with jar() as s:
        await login(s, base, one.token)
        async with s.get(f"{base}/console/") as r:
            csrf = session_csrf(await r.text())
        for data, headers in (({}, {}), ({"csrf": "forged"}, {}), ({"csrf": csrf}, {"Origin": "https://evil.example"}),
                              ({"csrf": csrf}, {"Origin": "null"})):
            async with s.post(f"{base}/console/logout", data=data, headers=headers, allow_redirects=False) as r:
                assert r.status == 403, (data, headers)
                assert "reload the page" in await r.text()
        async with s.get(f"{base}/console/", allow_redirects=False) as r:
            assert r.status == 200  # the refused forms did not log it out
        async with s.post(f"{base}/console/logout", data={}, headers={"X-CSRF-Token": csrf, "Origin": base},
                          allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/login"
        async with s.get(f"{base}/console/", allow_redirects=False) as r:
            assert r.status == 303  # logged out


async def test_a_session_ends_when_its_token_is_revoked(hosted):
    host, one, _ = hosted
    base = host.node.management_url
    extra = await one.client.create_token("browser")
    async with jar() as s:
        await login(s, base, extra["token"])
        async with s.get(f"{base}/console/") as r:
            assert r.status == 200 and 'id="application">browser<' in await r.text()
        await one.client.revoke_token(extra["id"])
        async with s.get(f"{base}/console/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/console/login")


async def test_the_admin_token_reads_no_participant_page(hosted):
    host, _, _ = hosted
    base = host.node.management_url
    async with aiohttp.ClientSession() as s, s.get(
            f"{base}/console/", headers={"Authorization": f"Bearer {host.admin_token}"}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/console/admin"


async def test_language_follows_cookie_then_browser_then_region(hosted):
    host, one, two = hosted
    base = host.node.management_url
    async with jar(english=False) as s:
        auth = {"Authorization": f"Bearer {one.token}"}
        async with s.get(f"{base}/console/", headers=auth) as r:
            assert '<html lang="zh-CN">' in await r.text()  # CN-GD, no Accept-Language
        async with s.get(f"{base}/console/", headers={"Authorization": f"Bearer {two.token}"}) as r:
            assert '<html lang="en">' in await r.text()  # DE
        async with s.get(f"{base}/console/", headers={**auth, "Accept-Language": "en-US,en;q=0.9"}) as r:
            assert '<html lang="en">' in await r.text()
        async with s.get(f"{base}/console/lang/en?next=//evil.example/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/"
        async with s.get(f"{base}/console/", headers={**auth, "Accept-Language": "zh-CN"}) as r:
            assert '<html lang="en">' in await r.text()  # the user's choice wins
        async with s.get(f"{base}/console/lang/fr", allow_redirects=False) as r:
            assert r.status == 404


async def test_static_files_are_only_the_console_s_own(hosted):
    host, _, _ = hosted
    base = host.node.management_url
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/console/static/htmx.min.js") as r:
            assert r.status == 200 and "javascript" in r.headers["Content-Type"]
        for name in ("..%2F__init__.py", "%2e%2e%2fview.py", "missing.js", "..%2F..%2F..%2Ftds.toml"):
            async with s.get(f"{base}/console/static/{name}") as r:
                assert r.status == 404, name
