"""The host's platform share on the console's admin page of a real node: set through a session's form (with its
CSRF token) and listed, taken off with 0, refused for the host itself with the API's reason and for any token but
the node's admin token; and the host's report of accepted statements beside it."""

from __future__ import annotations

import re

import aiohttp
from console_pages import page
from test_settlement import priced_agreement, settled, used

from connector.http.console.view import SESSION_COOKIE
from usage_policies import templates


def share_cell(admin_page: str, name: str) -> str:
    """The platform share shown in *name*'s row of the participants table (its ``data-platform-share``)."""
    found = re.search(rf'<tr data-participant="{re.escape(name)}"[^>]*>.*?data-platform-share="([^"]*)"', admin_page,
                      re.S)
    assert found is not None, f"no platform share shown for {name}"
    return found[1]


async def test_the_admin_sets_a_platform_share_through_the_form_and_sees_it_listed(nodes):
    host = await nodes.start("acme")
    await nodes.host(host, "sme-one")
    base = host.node.management_url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     headers={"Accept-Language": "en"}) as s:
        async with s.get(f"{base}/console/login") as r:
            login_csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]
        async with s.post(f"{base}/console/login", data={"token": host.admin_token, "csrf": login_csrf,
                                                         "next": "/console/admin"}, allow_redirects=False) as r:
            assert r.status == 303
        assert any(c.key == SESSION_COOKIE for c in s.cookie_jar)
        async with s.get(f"{base}/console/admin") as r:
            before = await r.text()
        assert share_cell(before, "sme-one") == "0"
        assert "/console/admin/participants/sme-one/platform-share" in before
        assert "/console/admin/participants/acme/platform-share" not in before  # the host pays none: no form
        csrf = re.search(r'name="csrf" value="([^"]+)"', before)[1]
        action = f"{base}/console/admin/participants/sme-one/platform-share"

        async with s.post(action, data={"percent": "10"}, allow_redirects=False) as r:
            assert r.status == 403  # no CSRF token: refused, nothing set
        async with s.post(action, data={"percent": "12.5", "csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/admin"
        async with s.get(f"{base}/console/admin") as r:
            after = await r.text()
        assert share_cell(after, "sme-one") == "12.5" and "Platform share of sme-one: 12.5%." in after
    listed = {p["name"]: p for p in await nodes.client(host, host.admin_token).participants()}
    assert listed["sme-one"]["platformShare"] == "12.5" and listed["acme"]["platformShare"] is None


async def test_a_platform_share_of_0_takes_it_off(nodes):
    host = await nodes.start("acme")
    await nodes.host(host, "sme-one")
    path = "/console/admin/participants/sme-one/platform-share"
    assert (await page(host.node, host.admin_token, path, {"percent": "10"}))[0] == 303
    status, _, _ = await page(host.node, host.admin_token, path, {"percent": "0"})
    assert status == 303
    status, admin_page, _ = await page(host.node, host.admin_token, "/console/admin")
    assert status == 200 and share_cell(admin_page, "sme-one") == "0"


async def test_the_host_itself_is_refused_a_platform_share_with_the_apis_reason(nodes):
    host = await nodes.start("acme")
    status, refused, _ = await page(host.node, host.admin_token, "/console/admin/participants/acme/platform-share",
                                    {"percent": "10"})
    assert status == 409 and "<html" in refused
    assert "is the node&#39;s own participant and cannot be charged a platform share" in refused


async def test_a_bad_percentage_is_a_readable_400(nodes):
    host = await nodes.start("acme")
    await nodes.host(host, "sme-one")
    path = "/console/admin/participants/sme-one/platform-share"
    for percent, reason in (("", "Give a percentage from 0 to 100."), ("150", "from 0 to 100, not 150"),
                            ("ten", "percent")):
        status, refused, _ = await page(host.node, host.admin_token, path, {"percent": percent})
        assert status == 400 and reason in refused and "<html" in refused, percent
    status, admin_page, _ = await page(host.node, host.admin_token, "/console/admin")
    assert share_cell(admin_page, "sme-one") == "0"


async def test_a_participants_token_cannot_set_a_platform_share(nodes):
    host = await nodes.start("acme")
    sme = await nodes.host(host, "sme-one")
    for token in (sme.token, host.token):
        status, refused, _ = await page(host.node, token, "/console/admin/participants/sme-one/platform-share",
                                        {"percent": "50"})
        assert status == 403 and "for the node&#39;s admin token" in refused
    listed = {p["name"]: p for p in await nodes.client(host, host.admin_token).participants()}
    assert listed["sme-one"]["platformShare"] is None


async def test_the_admin_page_shows_the_hosts_report_of_accepted_statements(nodes):
    host, consumer = await nodes.start("hub"), await nodes.start("parts")
    sme = await nodes.host(host, "sme")
    status, _, _ = await page(host.node, host.admin_token, "/console/admin/participants/sme/platform-share",
                              {"percent": "10"})
    assert status == 303
    agreement = await priced_agreement(sme, consumer, templates.price_duty("2.50", "CNY"))
    await used(sme, consumer, agreement, 2)
    await settled(sme, consumer, agreement)
    status, admin_page, _ = await page(host.node, host.admin_token, "/console/admin")
    assert status == 200
    report = admin_page[admin_page.index('id="report"'):]
    row = report[report.index('<tr data-account="sme">'):]
    row = row[:row.index("</tr>")]
    assert re.findall(r'data-amount="CNY">([^<]+)<', row) == ["4.50 CNY", "0.50 CNY"]
    assert '<strong data-platform="CNY">0.50 CNY</strong>' in report
