"""The console in chromium: login and logout, the session cookie, languages, tenants side by side, CSRF,
the keyboard and a phone's screen."""

from __future__ import annotations

from console_setup import HostedSmes, login

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def test_a_wrong_token_is_refused_and_the_login_page_stays(browser, hosted: HostedSmes):
    page = await browser.page()
    await page.goto(f"{hosted.console}/login")
    await page.fill("#token", "not-a-token-of-this-node")
    async with page.expect_navigation() as navigation:
        await page.click("button[type=submit]")
    assert (await navigation.value).status == 401
    assert page.url == f"{hosted.console}/login"
    assert await page.inner_text("[role=alert]") == "Unknown or revoked token."
    assert await page.is_visible("#token")
    assert [c for c in await page.context.cookies() if c["name"] == "tds_console"] == []
    # and the node's pages still send this browser to the login page
    await page.goto(f"{hosted.console}/")
    assert page.url.startswith(f"{hosted.console}/login?next=")


async def test_an_smes_token_opens_its_overview_with_its_did(browser, hosted: HostedSmes):
    page = await browser.page()
    await login(page, hosted.console, hosted.one.token)
    assert page.url == f"{hosted.console}/"
    assert "SME One Ltd." in await page.inner_text("h1")
    assert await page.inner_text("main code.did") == hosted.one.participant.did
    assert hosted.two.participant.did not in await page.content()


async def test_the_session_cookie_is_http_only_and_same_site_strict(browser, hosted: HostedSmes):
    page = await browser.page()
    await login(page, hosted.console, hosted.one.token)
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "tds_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/console/"
    assert hosted.one.token not in cookie["value"]
    assert "tds_console" not in await page.evaluate("document.cookie")  # the page's scripts cannot read it


async def test_logout_ends_the_session_and_its_cookie_no_longer_works(browser, hosted: HostedSmes):
    page = await browser.page()
    await login(page, hosted.console, hosted.one.token)
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "tds_console"]
    async with page.expect_navigation():
        await page.click("header form[action$='/logout'] button")
    assert page.url == f"{hosted.console}/login"
    assert [c for c in await page.context.cookies() if c["name"] == "tds_console"] == []
    # the old cookie, put back into another browser, opens nothing
    other = await browser.page()
    await other.context.add_cookies([cookie])
    response = await other.goto(f"{hosted.console}/")
    assert other.url.startswith(f"{hosted.console}/login") and response.status == 200
    assert await other.is_visible("#token")


async def test_the_browsers_language_is_shown_and_the_switch_sticks(browser, hosted: HostedSmes):
    english, chinese = await browser.page(locale="en-US"), await browser.page(locale="zh-CN")
    for page in (english, chinese):
        await login(page, hosted.console, hosted.one.token)
    assert await english.get_attribute("html", "lang") == "en"
    assert await english.inner_text("header nav a[aria-current=page]") == "Overview"
    assert await chinese.get_attribute("html", "lang") == "zh-CN"
    assert await chinese.inner_text("header nav a[aria-current=page]") == "概览"
    # the switch link turns the Chinese browser's console into English, and it stays so
    async with chinese.expect_navigation():
        await chinese.click("header .tools a[href*='/lang/']")
    assert chinese.url == f"{hosted.console}/"
    assert await chinese.get_attribute("html", "lang") == "en"
    assert await chinese.inner_text("header nav a[aria-current=page]") == "Overview"
    assert [c["value"] for c in await chinese.context.cookies() if c["name"] == "tds_lang"] == ["en"]
    await chinese.goto(f"{hosted.console}/login")
    assert await chinese.inner_text("h1") == "Log in"
    async with chinese.expect_navigation():
        await chinese.click("header .tools a[href*='/lang/']")
    assert await chinese.inner_text("h1") == "登录"
    assert await english.inner_text("header nav a[aria-current=page]") == "Overview"  # the other browser's own


async def test_two_smes_at_once_each_see_only_their_own(browser, hosted: HostedSmes):
    one, two = hosted.one, hosted.two
    await two.client.add_asset({"id": "two-parts", "title": "Parts list"})
    await two.client.add_policy("two-open", OPEN)
    await two.client.add_contract_definition("two-cd", access_policy_id="two-open", contract_policy_id="two-open",
                                             assets=["two-parts"])
    catalog = await one.client.catalog(two.public_url)
    started = await one.client.negotiate(two.public_url, catalog["dataset"][0]["hasPolicy"][0]["@id"])
    mine = await one.client.negotiation(started["id"], wait_s=10)
    assert mine["state"] == "FINALIZED", mine
    theirs = mine["providerPid"]

    page_one, page_two = await browser.page(), await browser.page()
    await login(page_one, hosted.console, one.token)
    await login(page_two, hosted.console, two.token)
    for page, me, other in ((page_one, one, two), (page_two, two, one)):
        await page.reload()
        assert await page.inner_text("main dl.facts code.did") == me.participant.did
        assert other.participant.did not in await page.inner_text("main dl.facts")
    # each one's negotiation opens in its own session and is unknown in the other's
    for page, own, foreign in ((page_one, started["id"], theirs), (page_two, theirs, started["id"])):
        response = await page.goto(f"{hosted.console}/negotiations/{own}")
        assert response.status == 200, await page.inner_text("main")
        response = await page.goto(f"{hosted.console}/negotiations/{foreign}")
        assert response.status == 404
        assert await page.get_attribute("[role=alert]", "data-status") == "404"
        assert foreign not in await page.inner_text("main")


async def test_a_form_post_without_the_csrf_token_is_refused(browser, hosted: HostedSmes):
    page = await browser.page()
    await login(page, hosted.console, hosted.one.token)
    # the page's own script posts a console form as the browser would: same origin, the session cookie sent
    post = """async ([url, fields]) => {
        const r = await fetch(url, {method: "POST", body: new URLSearchParams(fields), credentials: "same-origin"});
        return [r.status, new URL(r.url).pathname, await r.text()];
    }"""
    publish = {"id": "stolen", "action": "save"}
    for fields in (publish, {**publish, "csrf": "a-guessed-token"}):
        status, _, text = await page.evaluate(post, [f"{hosted.console}/publishing/policies", fields])
        assert status == 403 and "reload the page" in text, (status, text[:300])
        status, _, _ = await page.evaluate(post, [f"{hosted.console}/logout", fields])
        assert status == 403
    await page.goto(f"{hosted.console}/publishing")
    assert page.url == f"{hosted.console}/publishing"  # still logged in
    assert await page.locator("tr[data-policy]").count() == 0  # and nothing was published
    # the page's own token is what makes the same requests work
    csrf = await page.get_attribute("body", "data-csrf")
    assert csrf
    status, path, _ = await page.evaluate(post, [f"{hosted.console}/publishing/policies", {**publish, "csrf": csrf}])
    assert (status, path) == (200, "/console/publishing")
    await page.reload()
    assert await page.locator("tr[data-policy=stolen]").count() == 1
    status, path, _ = await page.evaluate(post, [f"{hosted.console}/logout", {"csrf": csrf}])
    assert (status, path) == (200, "/console/login")


async def test_tab_reaches_the_skip_link_first_and_enter_moves_to_main(browser, hosted: HostedSmes):
    page = await browser.page()
    await login(page, hosted.console, hosted.one.token)
    await page.keyboard.press("Tab")
    focused = await page.evaluate("[document.activeElement.className, document.activeElement.getAttribute('href')]")
    assert focused == ["skip", "#main"]
    assert await page.is_visible("a.skip")  # it shows itself when focused
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"


async def test_a_phones_screen_shows_the_overview_without_scrolling_sideways(browser, hosted: HostedSmes):
    page = await browser.page(width=390, height=844)
    await login(page, hosted.console, hosted.one.token)
    assert await page.is_visible("main code.did")
    widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
