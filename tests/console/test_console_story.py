"""The whole story in the console, clicked through in chromium: an SME hosted on one node publishes data with a
usage policy; an SME hosted on another node finds it, negotiates, gets the data, uses it; the provider revokes
the agreement and reads the usage report; the hosting enterprise's admin sees its participants.

With ``TDS_CONSOLE_SCREENSHOTS=1`` the tests also save the main pages as docs/console/*.png (1280x800; the
Chinese ones need a CJK font installed, e.g. Debian's fonts-wqy-microhei).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from console_setup import WAIT_MS, login
from playwright.async_api import expect

from connector.testing import eventually

#: A title a hostile publisher might choose: the consumer's console must show it as text and run nothing.
HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
PAYLOAD = bytes(range(256)) * 1024  # 256 KiB
#: What makes a page wider than its window: the first texts that stick out with no scrolling box to hold them.
WIDEST = """(() => {
    const held = e => { for (let a = e; a && a !== document.body; a = a.parentElement) {
        if (getComputedStyle(a).overflowX !== "visible") { return true; } } return false; };
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const found = [];
    for (let n = walker.nextNode(); n && found.length < 3; n = walker.nextNode()) {
        const range = document.createRange();
        range.selectNodeContents(n);
        if (range.getBoundingClientRect().right > window.innerWidth + 1 && !held(n.parentElement)) {
            found.push(n.parentElement.tagName.toLowerCase() + ": " + n.textContent.trim().slice(0, 80));
        }
    }
    return found;
})()"""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


async def shoot(page: Any, name: str) -> None:
    """The page as docs/console/NAME.png, when TDS_CONSOLE_SCREENSHOTS=1 asks for the pictures."""
    if os.environ.get("TDS_CONSOLE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def watch_dialogs(page: Any, seen: list[tuple[str, str]]) -> None:
    """Record every dialog the page opens; accept the console's own confirmations (data-confirm forms)."""

    async def on_dialog(dialog: Any) -> None:
        seen.append((dialog.type, dialog.message))
        if dialog.type == "confirm":
            await dialog.accept()
        else:
            await dialog.dismiss()

    page.on("dialog", on_dialog)


async def click_and_wait(page: Any, selector: str) -> None:
    async with page.expect_navigation():
        await page.click(selector)


async def nav(page: Any, label: str) -> None:
    async with page.expect_navigation():
        await page.get_by_role("navigation").get_by_role("link", name=label, exact=True).click()


async def no_injected_image(page: Any) -> None:
    assert await page.locator("img[src='x']").count() == 0


async def test_an_sme_publishes_another_finds_negotiates_gets_uses_and_is_revoked(browser, nodes):
    acme = await nodes.start("acme")
    maker = await nodes.host(acme, "maker", legal_name="Maker Parts Ltd.")
    parts = await nodes.start("parts")
    buyer = await nodes.host(parts, "buyer", legal_name="Buyer Tools Ltd.")
    maker_console, buyer_console = f"{acme.node.management_url}/console", f"{parts.node.management_url}/console"
    dialogs: list[tuple[str, str]] = []
    provider, consumer = await browser.page(), await browser.page()
    seen: list[tuple[Any, str]] = []  # (browser page, console page's URL), to look at on a phone at the end

    async def keep(page: Any, name: str) -> None:
        seen.append((page, page.url))
        await shoot(page, name)
    watch_dialogs(provider, dialogs)
    watch_dialogs(consumer, dialogs)

    # The provider publishes an asset (an uploaded file), a usage policy and an offer.
    await login(provider, maker_console, maker.token)
    await nav(provider, "Publishing")
    await click_and_wait(provider, "#assets a[href$='/publishing/assets/new']")
    await provider.fill("#asset-id", "gear-specs")
    await provider.fill("#asset-title", HOSTILE_TITLE)
    await provider.fill("#asset-description", "Gear tolerances, 2026 series")
    await provider.set_input_files("#asset-file", files=[{"name": "gears.csv", "mimeType": "text/csv",
                                                          "buffer": PAYLOAD}])
    await click_and_wait(provider, "main form button[type=submit]")
    assert await provider.inner_text("tr[data-asset='gear-specs'] td >> nth=0") == \
        f"{HOSTILE_TITLE}\nGear tolerances, 2026 series"
    await no_injected_image(provider)
    for policy_id, options in (("open", {}), ("rnd", {"#policy-purposes": "R&D", "#policy-max-uses": "5"})):
        await click_and_wait(provider, "a[href$='/publishing/policies/new']")
        await provider.fill("#policy-id", policy_id)
        for field, value in options.items():
            await provider.fill(field, value)
        if options:
            await provider.check("#policy-log")
            await click_and_wait(provider, "button[name=action][value=preview]")
            assert "R&D" in await provider.inner_text("#preview-words")
        await click_and_wait(provider, "button[name=action][value=save]")
        assert await provider.locator(".flash.ok").count() == 1
    await click_and_wait(provider, "a[href$='/publishing/offers/new']")
    await provider.fill("#offer-id", "gear-offer")
    await provider.select_option("#offer-access", "open")
    await provider.select_option("#offer-contract", "rnd")
    await provider.select_option("#offer-assets", ["gear-specs"])
    await click_and_wait(provider, "main form button[type=submit]")
    assert await provider.locator(".flash.ok").count() == 1
    await keep(provider, "publishing")

    # The consumer browses the provider's catalog: the hostile title is text, nothing runs.
    await login(consumer, buyer_console, buyer.token)
    await nav(consumer, "Discover data")
    await keep(consumer, "discover")
    await consumer.fill("#browse-peer", maker.public_url)
    await click_and_wait(consumer, "#browse button[type=submit]")
    dataset = consumer.locator("section.dataset[data-dataset$=':gear-specs']")
    assert await dataset.locator("h2").inner_text() == HOSTILE_TITLE
    assert "R&D" in await dataset.locator("ul.terms").inner_text()
    await no_injected_image(consumer)
    await keep(consumer, "discover-catalog")

    # Negotiate: the negotiation page follows it live to FINALIZED; both proofs check.
    await click_and_wait(consumer, "section.dataset[data-dataset$=':gear-specs'] form button[type=submit]")
    assert "/console/negotiations/" in consumer.url
    await expect(consumer.locator("#negotiation-live [data-field=state]")).to_have_text("FINALIZED", timeout=WAIT_MS)
    proofs = consumer.locator("#proofs tr[data-proof]")
    await expect(proofs).to_have_count(2, timeout=WAIT_MS)  # at its final state the page loads itself again
    assert await proofs.evaluate_all("rows => rows.map(r => [r.dataset.proof, r.dataset.status])") == \
        [["provider", "valid"], ["consumer", "valid"]]
    await keep(consumer, "negotiation")
    await click_and_wait(consumer, "#agreement a[href*='/agreements/']")
    agreement_url = consumer.url
    assert await consumer.locator("#proofs tr[data-status=valid]").count() == 2
    await keep(consumer, "agreement")

    # Get the data: the transfer page shows it COMPLETED with every chunk verified.
    await click_and_wait(consumer, "#transfer button[type=submit]")
    assert "/console/transfers/" in consumer.url
    live = consumer.locator("#transfer-live")
    await expect(live.locator("[data-field=state]")).to_have_text("COMPLETED", timeout=WAIT_MS)
    await expect(live.locator("progress")).to_have_attribute("value", str(len(PAYLOAD)), timeout=WAIT_MS)
    assert await live.locator("progress").evaluate("bar => [bar.value, bar.max]") == [len(PAYLOAD), len(PAYLOAD)]
    # Ended, the page loads itself again: no more buttons for what can no longer be done.
    await expect(consumer.locator("form[action$='/terminate']")).to_have_count(0, timeout=WAIT_MS)
    chunks = await live.locator("[data-field=chunks]").inner_text()
    done, _, total = chunks.partition(" of ")
    assert done == total and int(total) >= 1, chunks
    await keep(consumer, "transfer")

    # Use it: a counted use moves the meter.
    await consumer.goto(agreement_url)
    await click_and_wait(consumer, "a[href*='/usage/']")
    meter = consumer.locator("#uses-meter")
    assert await meter.get_attribute("value") == "0" and await meter.get_attribute("max") == "5"
    await consumer.fill("#use-purpose", "R&D")
    await click_and_wait(consumer, "#use button[value=use]")
    assert await consumer.get_attribute("#result [data-decision]", "data-decision") == "permit"
    assert await meter.get_attribute("value") == "1"
    assert await consumer.inner_text("#uses-text") == "1 of 5 uses"
    await keep(consumer, "usage")

    # The provider revokes in its console; the consumer's agreement shows it revoked.
    await nav(provider, "Agreements")
    await click_and_wait(provider, "#agreements a[href*='/agreements/']")
    assert provider.url == agreement_url.replace(buyer_console, maker_console)
    await provider.fill("#revoke-reason", "contract ended")
    await click_and_wait(provider, "#revoke button[type=submit]")
    assert await provider.locator("#revocation").is_visible()
    assert ("confirm", "Revoke this agreement? The consumer can no longer use the data.") in dialogs

    async def revoked() -> bool:
        await consumer.goto(agreement_url)
        return await consumer.locator("#revocation").count() == 1

    await eventually(revoked, what="the revocation on the consumer's agreement page")
    assert "REVOKED" in await consumer.inner_text("#state")
    assert "contract ended" in await consumer.inner_text("#revocation")
    assert await consumer.locator("#transfer").count() == 0  # no more getting the data

    # The provider's usage report of the agreement.
    await click_and_wait(provider, "a[href*='/usage/']")
    assert await provider.locator("#receipts").is_visible()
    assert await provider.locator("#receipts dl.facts").count() == 1

    assert [d for d in dialogs if d[0] != "confirm"] == []  # the hostile title never ran
    await no_injected_image(provider)
    await no_injected_image(consumer)
    # The overview with the story's activity, in both languages.
    await nav(consumer, "Overview")
    await keep(consumer, "overview-en")
    # Every page of the story fits a phone's width (tables scroll inside their card, never the page).
    too_wide = []
    for page, url in seen:
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(url)
        if await page.evaluate("document.documentElement.scrollWidth > window.innerWidth"):
            too_wide.append((url.split("/console/")[1], await page.evaluate(WIDEST)))
    assert not too_wide, "pages wider than a phone, with what sticks out:\n" + "\n".join(map(str, too_wide))
    chinese = await browser.page(locale="zh-CN")
    await login(chinese, buyer_console, buyer.token)
    assert await chinese.get_attribute("html", "lang") == "zh-CN"
    await shoot(chinese, "overview-zh")


async def test_the_admin_sees_the_hosted_participants_and_a_participant_cannot(browser, nodes):
    acme = await nodes.start("acme")
    await nodes.host(acme, "maker", legal_name="Maker Parts Ltd.", industry="machinery")
    sme = await nodes.host(acme, "buyer", legal_name="Buyer Tools Ltd.", industry="tools")
    console = f"{acme.node.management_url}/console"
    admin = await browser.page()
    await login(admin, console, acme.admin_token)
    assert admin.url == f"{console}/admin"
    rows = admin.locator("#participants tr[data-participant]")
    listed = await rows.evaluate_all("rows => rows.map(r => [r.dataset.participant, r.dataset.state])")
    assert sorted(listed) == [["acme", "active"], ["buyer", "active"], ["maker", "active"]]
    assert "Buyer Tools Ltd." in await admin.inner_text("#participants tr[data-participant=buyer]")
    await shoot(admin, "admin")
    # the admin's console reads no participant's data, and a participant's console has no admin pages
    await admin.goto(f"{console}/agreements")
    assert admin.url == f"{console}/admin"
    participant = await browser.page()
    await login(participant, console, sme.token)
    response = await participant.goto(f"{console}/admin")
    assert response.status == 403
    assert await participant.locator("#participants").count() == 0
