"""The console's usage pages between two real nodes: a use through the console form is decided, counted and
logged (meter, chart, decisions, chain), a deny shows its reasons, a check counts nothing, and the provider
reads the consumer's receipts with their anomalies highlighted."""

from __future__ import annotations

import html
import json
import re
import time

import aiohttp
from console_pages import agree, page

from connector.http.console.api import segment
from connector.net import signing
from connector.testing import eventually

TITLE = "<img src=x onerror=alert(1)> Quality inspection"


async def agreement_between(provider, consumer, *, uses: int = 5) -> str:
    """*provider* offers an asset for R&D, at most *uses* times; *consumer* agrees to it."""
    return await agree(provider, consumer, title=TITLE, uses=uses)


def section(text: str, element_id: str) -> str:
    start = text.index(f'id="{element_id}"')
    return text[start:text.index("</section>", start)]


def bars(text: str) -> list[tuple[str, str]]:
    """The chart's bars: (day, total)."""
    return re.findall(r'<g class="bar" data-day="([0-9-]+)" data-total="(\d+)">', text)


async def test_a_use_through_the_console_is_counted_charted_and_logged(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer)
    usage = f"/console/usage/{segment(agreement)}"
    status, text, _ = await page(consumer.node, consumer.token, usage)
    assert status == 200 and "0 of 5 uses" in text and "chain intact (no entries yet)" in text
    assert "No permitted use yet." in text and 'id="use"' in text

    status, _, headers = await page(consumer.node, consumer.token, f"{usage}/use",
                                    {"mode": "use", "action": "use", "purpose": "R&D"})
    assert status == 303 and headers["Location"] == f"{usage}?seq=1#result"
    summary = await consumer.client.usage(agreement)
    assert summary["uses"] == 1 and summary["latest"][0]["decision"] == "permit"
    assert summary["latest"][0]["application"] == "cli"  # the token's application, as through the API
    log = await consumer.client.usage_log(agreement)
    [entry] = log["entries"]
    assert entry["use_id"]  # an id the server made up for the use

    status, text, _ = await page(consumer.node, consumer.token, f"{usage}?seq=1")
    assert status == 200
    assert 'data-decision="permit"' in section(text, "result")
    assert re.search(r'<meter id="uses-meter"[^>]* max="5" value="1"', text)
    assert "1 of 5 uses" in section(text, "allowance")
    assert bars(text) == [(entry["at"][:10], "1")]
    assert "<title" in section(text, "chart") and "<desc" in section(text, "chart")
    assert "<details>" in section(text, "chart") and entry["at"][:10] in section(text, "chart")
    chain = section(text, "chain")
    assert f"chain intact (1 entries, head {entry['hash'][:16]}" in chain and 'data-chain="intact"' in chain
    decisions = section(text, "decisions")
    assert 'data-seq="1"' in decisions and "permission #1 allows this" in decisions
    async with aiohttp.ClientSession() as s, s.get(f"{consumer.node.management_url}{usage}", headers={
            "Authorization": f"Bearer {consumer.token}", "Accept-Language": "zh-CN"}) as r:
        text = await r.text()
    assert r.status == 200 and "已使用 1 次" in text and "共 5 次" in text and "1 条记录" in text


async def test_a_denied_use_and_a_check_show_their_reasons(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer)
    usage = f"/console/usage/{segment(agreement)}"
    # a check: the decision and its reasons on the page, nothing counted or logged
    status, text, _ = await page(consumer.node, consumer.token, f"{usage}/use", {"mode": "check", "purpose": "sales"})
    assert status == 200
    result = section(text, "result")
    assert 'data-decision="deny"' in result and "Nothing was counted or logged." in result
    assert "policy requires" in result and "sales" in result
    assert (await consumer.client.usage_log(agreement))["entries"] == []
    # a counted use for a purpose the policy does not allow: denied, logged, its reason shown
    purpose = "<img src=x onerror=alert(1)>"
    status, _, headers = await page(consumer.node, consumer.token, f"{usage}/use", {"mode": "use", "purpose": purpose})
    assert status == 303
    status, text, _ = await page(consumer.node, consumer.token, headers["Location"].split("#")[0])
    result = section(text, "result")
    assert 'data-decision="deny"' in result and "policy requires" in result
    assert html.escape(purpose, quote=False) in result and "<img src=x" not in text
    assert "0 of 5 uses" in text and bars(text) == []
    summary = await consumer.client.usage(agreement)
    assert summary["uses"] == 0 and summary["latest"][0]["decision"] == "deny"


async def test_bad_input_and_the_wrong_side_are_readable_refusals(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer)
    usage = f"/console/usage/{segment(agreement)}"
    for path, form, status_expected, words in (
            (f"{usage}/use", {"mode": "delete-everything"}, 400, "Choose Check only or Use"),
            (f"{usage}/use", {"mode": "use", "purpose": "x" * 300}, 400, "at most 200 characters"),
            (f"{usage}?seq=abc", None, 400, "seq must be"),
            ("/console/usage/urn%3Auuid%3Anone", None, 404, "no such agreement")):
        status, text, headers = await page(consumer.node, consumer.token, path, form)
        assert status == status_expected and headers["Content-Type"].startswith("text/html"), (path, status)
        assert words in html.unescape(text), text
    status, text, _ = await page(provider.node, provider.token, f"{usage}/use", {"mode": "use", "purpose": "R&D"})
    assert status == 403 and "Only the consumer" in text
    assert (await consumer.client.usage(agreement))["uses"] == 0


async def test_the_usage_list_links_every_agreement(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer)
    for node in (provider, consumer):
        status, text, _ = await page(node.node, node.token, "/console/usage")
        assert status == 200 and f'href="/console/usage/{segment(agreement)}"' in text
        assert "<img src=x" not in text
    _, text, _ = await page(provider.node, provider.token, "/console/usage")
    assert html.escape(TITLE, quote=False) in text  # the provider's own title, escaped


async def test_the_provider_reads_the_receipts(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer)
    await page(consumer.node, consumer.token, f"/console/usage/{segment(agreement)}/use",
               {"mode": "use", "purpose": "R&D"})
    usage = f"/console/usage/{segment(agreement)}"

    async def received():
        _, text, _ = await page(provider.node, provider.token, usage)
        return text if bars(text) else None

    text = await eventually(received, what="the consumer's receipt on the provider's usage page")
    assert "1 of 5 uses" in text and len(bars(text)) == 1 and bars(text)[0][1] == "1"
    receipts = section(text, "receipts")
    assert "No anomaly in the receipts." in receipts and 'role="alert"' not in receipts
    assert 'id="use"' not in text and 'id="decisions"' not in text  # no use form on the provider's side


async def test_anomalies_in_the_receipts_are_highlighted(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer, uses=10)
    await provider.node.stop()  # the receipts of these uses are not delivered...
    for i in range(3):
        await consumer.client.use(agreement, f"u{i}", purpose="R&D")
    await consumer.node.receipts.close()  # ...and are sent by hand below
    await nodes.restart(provider)
    log = await consumer.client.usage_log(agreement)
    p = consumer.participant
    url = f"{provider.participant.dsp_base}/tds/usage-receipts"
    raw = json.dumps({"agreementId": agreement, "entries": log["entries"][2:], "heads": log["heads"]}).encode()
    headers = signing.sign_request("POST", url, raw, key=p.keys.signing, key_id=p.key_id, now=time.time(),
                                   headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        assert r.status == 409 and (await r.json())["anomaly"] == "gap"  # entries 1 and 2 are missing
    status, text, _ = await page(provider.node, provider.token, f"/console/usage/{segment(agreement)}")
    assert status == 200
    receipts = section(text, "receipts")
    assert re.search(r'role="alert" id="anomaly-summary">\s*<p>1 anomaly', receipts), receipts
    rows = re.findall(r'<tr class="anomaly">(.*?)</tr>', receipts, re.S)
    assert len(rows) == 1 and "gap" in rows[0]
