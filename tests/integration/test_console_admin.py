"""The console's admin pages and a participant's tokens page on a real node: hosting an SME and handing over its
first token, suspending and resuming it, metrics tokens, and who may see which page."""

from __future__ import annotations

import re

import aiohttp
import pytest
from markupsafe import escape

from connector.http.console.view import SESSION_COOKIE


async def console(node, token: str, method: str, path: str, data=None) -> tuple[int, str, dict]:
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    async with aiohttp.ClientSession() as s, s.request(method, f"{node.node.management_url}{path}", data=data,
                                                        headers=headers, allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)


async def scrape(base: str, token: str) -> tuple[int, bool]:
    """``GET /metrics`` with *token*: its status and whether the node's metrics came back."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics", headers=headers) as r:
        return r.status, "tds_participants" in await r.text()


def shown_token(page: str) -> str:
    found = re.search(r'<code id="token-value" class="once">([^<]+)</code>', page)
    assert found is not None, "the page shows no token"
    return found[1]


async def test_a_participants_token_is_refused_on_the_admin_pages(nodes):
    host = await nodes.start("acme")
    for method, path in (("GET", "/console/admin"), ("POST", "/console/admin/participants"),
                         ("POST", "/console/admin/participants/acme/suspend"),
                         ("POST", "/console/admin/metrics-tokens")):
        status, page, _ = await console(host, host.token, method, path, {"name": "x", "legal_name": "X",
                                                                         "region": "CN", "application": "x"})
        assert status == 403, path
        assert "for the node&#39;s admin token" in page
    status, _, _ = await console(host, host.admin_token, "GET", "/console/admin")
    assert status == 200
    assert [p["name"] for p in await nodes.client(host, host.admin_token).participants()] == ["acme"]


async def test_the_admin_hosts_an_sme_whose_token_is_shown_once_and_works(nodes):
    host = await nodes.start("acme")
    status, page, headers = await console(host, host.admin_token, "POST", "/console/admin/participants", {
        "name": "sme-one", "legal_name": "SME <b>One</b> Ltd.", "region": "CN-GD", "industry": "parts",
        "contact": "ops@sme.example"})
    assert status == 201 and headers["Cache-Control"] == "no-store"
    assert "shown only now" in page and "Hand this token to the participant" in page
    token = shown_token(page)
    status, overview, _ = await console(host, token, "GET", "/console/")
    assert status == 200 and "SME &lt;b&gt;One&lt;/b&gt; Ltd." in overview and "<b>One</b>" not in overview

    status, admin_page, _ = await console(host, host.admin_token, "GET", "/console/admin")
    assert status == 200 and 'data-participant="sme-one" data-state="active"' in admin_page
    assert token not in admin_page  # shown once: never again
    assert "SME &lt;b&gt;One&lt;/b&gt; Ltd." in admin_page and 'data-quota="vault">10.0 GiB' in admin_page

    # bad input: a readable 4xx page, nothing hosted
    status, page, _ = await console(host, host.admin_token, "POST", "/console/admin/participants",
                                    {"name": "Bad Name", "legal_name": "X", "region": "CN"})
    assert status == 400 and "name" in page and "<html" in page
    status, page, _ = await console(host, host.admin_token, "POST", "/console/admin/participants",
                                    {"name": "sme-one", "legal_name": "Again", "region": "CN"})
    assert status == 409 and "<html" in page
    status, page, _ = await console(host, host.admin_token, "POST", "/console/admin/participants", {"name": ""})
    assert status == 400 and "Give a name, a legal name and a region" in page
    admin = nodes.client(host, host.admin_token)
    assert [p["name"] for p in await admin.participants()] == ["acme", "sme-one"]


async def test_suspending_an_sme_refuses_its_console_with_the_reason_and_resuming_restores_it(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one")
    reason = "contract <b>ended</b>"
    status, _, headers = await console(host, host.admin_token, "POST", "/console/admin/participants/sme-one/suspend",
                                       {"reason": reason})
    assert status == 303 and headers["Location"] == "/console/admin"
    for path in ("/console/", "/console/transfers", "/console/publishing", "/console/tokens"):
        status, page, _ = await console(host, sme.token, "GET", path)
        assert status == 403, path
        assert "is suspended" in page and str(escape(reason)) in page and reason not in page
    status, admin_page, _ = await console(host, host.admin_token, "GET", "/console/admin")
    assert 'data-participant="sme-one" data-state="suspended"' in admin_page and str(escape(reason)) in admin_page
    assert "/console/admin/participants/sme-one/resume" in admin_page
    # the node's own participant cannot be suspended: no button, and the API's refusal if asked all the same
    assert "/console/admin/participants/acme/suspend" not in admin_page
    status, page, _ = await console(host, host.admin_token, "POST", "/console/admin/participants/acme/suspend",
                                    {"reason": ""})
    assert status == 409 and "<html" in page
    status, page, _ = await console(host, host.admin_token, "POST", "/console/admin/participants/nobody/resume")
    assert status == 404

    status, _, _ = await console(host, host.admin_token, "POST", "/console/admin/participants/sme-one/resume")
    assert status == 303
    status, page, _ = await console(host, sme.token, "GET", "/console/")
    assert status == 200 and sme.participant.did in page


async def test_the_admin_token_reads_no_participant_page(nodes):
    host = await nodes.start("acme")
    await host.client.add_asset({"id": "secret-asset", "title": "Secret"})
    for path in ("/console/", "/console/transfers", "/console/publishing", "/console/tokens",
                 "/console/publishing/policies/new"):
        status, page, headers = await console(host, host.admin_token, "GET", path)
        assert status == 303 and headers["Location"] == "/console/admin", path
        assert "secret-asset" not in page
    for path in ("/console/transfers", "/console/publishing/policies", "/console/tokens"):
        status, page, _ = await console(host, host.admin_token, "POST", path, {"application": "x", "id": "p"})
        assert status == 403 and "reads no participant" in page, path
    assert [a["id"] for a in await host.client.entries("assets")] == ["secret-asset"]
    assert await host.client.entries("policies") == []


async def test_metrics_tokens_are_created_shown_once_and_revoked(nodes):
    host = await nodes.start("acme")
    base = host.node.management_url
    status, page, headers = await console(host, host.admin_token, "POST", "/console/admin/metrics-tokens",
                                          {"application": "prometheus"})
    assert status == 201 and headers["Cache-Control"] == "no-store" and "shown only once" in page
    token = shown_token(page)
    assert await scrape(base, token) == (200, True)
    status, admin_page, _ = await console(host, host.admin_token, "GET", "/console/admin")
    [token_id] = re.findall(r'<tr data-token="([^"]+)">', admin_page)
    assert token not in admin_page and "prometheus" in admin_page
    status, _, _ = await console(host, host.admin_token, "POST", f"/console/admin/metrics-tokens/{token_id}/revoke")
    assert status == 303
    assert await scrape(base, token) == (401, False)
    status, _, _ = await console(host, host.admin_token, "POST", "/console/admin/metrics-tokens/nothing/revoke")
    assert status == 404
    status, page, _ = await console(host, host.admin_token, "POST", "/console/admin/metrics-tokens",
                                    {"application": "bad name!"})
    assert status == 400 and "application" in page


async def test_a_participant_creates_and_revokes_its_own_tokens(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one")
    status, page, headers = await console(host, sme.token, "POST", "/console/tokens", {"application": "erp-sync"})
    assert status == 201 and headers["Cache-Control"] == "no-store"
    token = shown_token(page)
    status, overview, _ = await console(host, token, "GET", "/console/")
    assert status == 200 and sme.participant.did in overview
    status, listing, _ = await console(host, sme.token, "GET", "/console/tokens")
    assert status == 200 and "erp-sync" in listing and token not in listing and "(this session)" in listing
    ids = dict((app, tid) for tid, app in re.findall(r'<tr data-token="([^"]+)">\s*<th scope="row">([\w.-]+)',
                                                     listing))
    assert set(ids) == {"cli", "erp-sync"}
    # another participant's token: not its tokens
    status, _, _ = await console(host, host.token, "POST", f"/console/tokens/{ids['erp-sync']}/revoke")
    assert status == 404
    status, _, _ = await console(host, token, "GET", "/console/")
    assert status == 200
    status, _, _ = await console(host, sme.token, "POST", f"/console/tokens/{ids['erp-sync']}/revoke")
    assert status == 303
    status, page, _ = await console(host, token, "GET", "/console/")
    assert status == 401 and "<html" in page


async def test_a_session_needs_its_csrf_token_to_host_a_participant(nodes):
    host = await nodes.start("acme")
    base = host.node.management_url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     headers={"Accept-Language": "en"}) as s:
        async with s.get(f"{base}/console/login") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]
        async with s.post(f"{base}/console/login", data={"token": host.admin_token, "csrf": csrf,
                                                         "next": "/console/"}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/admin"
        assert any(c.key == SESSION_COOKIE for c in s.cookie_jar)
        async with s.get(f"{base}/console/admin") as r:
            page = await r.text()
            session_csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        form = {"name": "sme-one", "legal_name": "SME One", "region": "CN"}
        async with s.post(f"{base}/console/admin/participants", data=form, allow_redirects=False) as r:
            assert r.status == 403
        async with s.post(f"{base}/console/admin/participants", data={**form, "csrf": session_csrf},
                          allow_redirects=False) as r:
            assert r.status == 201 and "shown only now" in await r.text()


@pytest.mark.parametrize("path", ["/console/admin", "/console/tokens"])
async def test_the_pages_are_in_both_languages(nodes, path):
    host = await nodes.start("acme")
    token = host.admin_token if path == "/console/admin" else host.token
    async with aiohttp.ClientSession() as s, s.get(f"{host.node.management_url}{path}", headers={
            "Authorization": f"Bearer {token}", "Accept-Language": "zh-CN"}) as r:
        page = await r.text()
    assert r.status == 200 and ("托管的参与方" in page if path == "/console/admin" else "管理令牌" in page)


async def test_the_admin_sees_how_much_of_its_vault_quota_each_participant_uses(nodes):
    host = await nodes.start("acme", vault_quota_bytes=1_000_000)
    sme = await nodes.host(host, "sme-one")
    held = host.node.vault.participant_dir("sme-one")
    held.mkdir(parents=True, exist_ok=True)
    (held / "received.bin").write_bytes(b"x" * 250_000)
    listed = {p["name"]: p for p in await nodes.client(host, host.admin_token).participants()}
    assert listed["sme-one"]["vaultBytes"] == 250_000 and listed["acme"]["vaultBytes"] == 0
    status, page, _ = await console(host, host.admin_token, "GET", "/console/admin")
    assert status == 200
    row = page[page.index('data-participant="sme-one"'):]
    assert 'data-vault="250000"' in row[:row.index("</tr>")]
    assert '<meter min="0" max="1000000" value="250000"' in page
    # A participant learns nothing of the others' use: the listing is the admin's.
    status, _, _ = await console(host, sme.token, "GET", "/console/admin")
    assert status == 403
