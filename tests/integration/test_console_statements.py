"""The console's statements pages between two real nodes: both sides list a statement with its period,
agreement, counterparty, total and state; its page shows the lines, the receipt range and the answer; the
consumer accepts or disputes it (with a reason), the provider issues one now; the policy form puts a price in
words; and another participant's token sees none of it."""

from __future__ import annotations

import html
import json
import re

import aiohttp
from console_pages import agree_to_first_offer, page

from connector.http.console.api import segment
from connector.testing import eventually
from usage_policies import templates

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def priced(nodes, *, uses: int = 3):
    """acme offers an asset at 2.50 CNY per use; parts agrees to it and uses it *uses* times; acme holds the
    receipts. The two nodes and the agreement's id."""
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await provider.client.add_asset({"id": "qi", "title": "Quality inspection"})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_policy("paid", templates.policy_from_options(
        ["R&D"], price=templates.price_duty("2.50", "CNY")))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="paid",
                                                  assets=["qi"])
    agreement, _ = await agree_to_first_offer(provider, consumer)
    for i in range(uses):
        assert (await consumer.client.use(agreement, f"u{i}", purpose="R&D"))["decision"] == "permit"

    async def receipts_held() -> bool:
        return bool((await provider.client.usage_report(agreement))["receivedEntries"] == uses)

    await eventually(receipts_held, what="the receipts at the provider")
    return provider, consumer, agreement


async def statement_between(nodes, *, uses: int = 3):
    """A statement acme issued (until now) and parts received."""
    provider, consumer, agreement = await priced(nodes, uses=uses)
    summary = await provider.client.issue_statement(agreement, until="now")

    async def received() -> bool:
        return any(s["id"] == summary["id"] and s["state"] == "received" for s in await consumer.client.statements())

    await eventually(received, what="the statement at the consumer")
    return provider, consumer, agreement, summary


def row_of(text: str, statement_id: str) -> str:
    row = text[text.index(f'data-statement="{statement_id}"'):]
    return row[:row.index("</tr>")]


def flash_error(text: str) -> str:
    found = re.search(r'<p class="flash error" role="alert"[^>]*>(.*?)</p>', text, re.S)
    assert found, text
    return html.unescape(found.group(1))


async def test_both_sides_list_the_statement_with_period_agreement_counterparty_total_and_state(nodes):
    provider, consumer, agreement, summary = await statement_between(nodes)
    label = summary["period"]["label"]
    for node, peer, role, state in ((provider, consumer, "Provider", "(issued|delivered)"),
                                    (consumer, provider, "Consumer", "received")):
        status, text, _ = await page(node.node, node.token, "/console/statements")
        assert status == 200, text
        row = row_of(text, summary["id"])
        assert f'href="/console/statements/{segment(summary["id"])}">{label}</a>' in row
        assert agreement in row and peer.participant.did in row and role in row
        assert "7.50 CNY" in row and "3 uses" in row and re.search(f"state-{state}", row), row
    _, text, _ = await page(provider.node, provider.token, "/console/statements")
    assert 'id="issue"' in text and f'<option value="{agreement}">' in text
    _, text, _ = await page(consumer.node, consumer.token, "/console/statements")
    assert 'id="issue"' not in text  # no agreement of its own as provider


async def test_the_list_narrows_to_a_period_and_refuses_a_bad_one(nodes):
    provider, _, _, summary = await statement_between(nodes, uses=1)
    status, text, _ = await page(provider.node, provider.token, "/console/statements?period=1999-01")
    assert status == 200 and summary["id"] not in text and "No statements yet." in text
    status, text, _ = await page(provider.node, provider.token, "/console/statements?period=2026-13")
    assert status == 400 and "A period is written 2026-11" in text


async def test_a_statements_page_shows_its_lines_receipts_and_answer(nodes):
    provider, consumer, agreement, summary = await statement_between(nodes)
    detail = f"/console/statements/{segment(summary['id'])}"
    for node, role in ((provider, "provider"), (consumer, "consumer")):
        status, text, _ = await page(node.node, node.token, detail)
        assert status == 200, text
        assert summary["id"] in text and f'href="/console/agreements/{segment(agreement)}"' in text
        line = text[text.index('data-basis="use"'):]
        line = line[:line.index("</tr>")]
        assert "<td>3</td>" in line and "2.50 CNY" in line and "7.50 CNY" in line
        assert re.search(r"entries 1 to \d+ of the usage log \(3 permitted uses\)", text), text
        assert 'data-answer="none"' in text
        assert ('id="respond"' in text) == (role == "consumer")
        assert ('id="issue-next"' in text) == (role == "provider")
        assert f'href="{detail}/statement.json"' in text and f'href="{detail}/statement.csv"' in text


async def test_the_consumer_accepts_and_the_provider_sees_it_accepted(nodes):
    provider, consumer, _, summary = await statement_between(nodes)
    detail = f"/console/statements/{segment(summary['id'])}"
    status, text, _ = await page(provider.node, provider.token, f"{detail}/accept", {})
    assert status == 403 and "Only the consumer answers" in flash_error(text)
    status, _, headers = await page(consumer.node, consumer.token, f"{detail}/accept", {})
    assert status == 303 and headers["Location"] == detail
    _, text, _ = await page(consumer.node, consumer.token, detail)
    assert "state-accepted" in text and 'data-answer="accepted"' in text and 'id="respond"' not in text

    async def provider_sees_it() -> str | None:
        _, text, _ = await page(provider.node, provider.token, detail)
        return text if 'data-answer="accepted"' in text else None

    await eventually(provider_sees_it, what="the acceptance on the provider's page")


async def test_the_consumer_disputes_with_a_reason_and_an_empty_one_is_refused(nodes):
    provider, consumer, _, summary = await statement_between(nodes)
    detail = f"/console/statements/{segment(summary['id'])}"
    status, text, _ = await page(consumer.node, consumer.token, f"{detail}/dispute", {"reason": "  "})
    assert status == 400 and "Give a reason for the dispute" in flash_error(text)
    status, _, _ = await page(consumer.node, consumer.token, f"{detail}/dispute",
                              {"reason": "uses <b>double</b> counted"})
    assert status == 303

    async def provider_sees_it() -> str | None:
        _, text, _ = await page(provider.node, provider.token, detail)
        return text if "state-disputed" in text else None

    text = await eventually(provider_sees_it, what="the dispute on the provider's page")
    assert 'data-answer="disputed"' in text
    assert "uses &lt;b&gt;double&lt;/b&gt; counted" in text and "<b>double" not in text  # the peer's reason, escaped


async def test_the_provider_issues_a_statement_now_and_is_sent_to_its_page(nodes):
    provider, consumer, agreement = await priced(nodes, uses=2)
    status, text, _ = await page(consumer.node, consumer.token, "/console/statements/issue", {"agreement": agreement})
    assert status == 403 and "Only the provider" in flash_error(text)
    status, _, headers = await page(provider.node, provider.token, "/console/statements/issue",
                                    {"agreement": agreement})
    assert status == 303 and headers["Location"].startswith("/console/statements/urn")
    [found] = await provider.client.statements(agreement=agreement)
    assert headers["Location"] == f"/console/statements/{segment(found['id'])}" and found["total"] == "5.00"


async def test_the_downloads_are_the_signed_json_and_the_csv(nodes):
    _, consumer, _, summary = await statement_between(nodes, uses=1)
    detail = f"/console/statements/{segment(summary['id'])}"
    status, body, headers = await page(consumer.node, consumer.token, f"{detail}/statement.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert re.fullmatch(r'attachment; filename="statement-[A-Za-z0-9._-]+\.json"', headers["Content-Disposition"])
    assert json.loads(body)["statement"]["id"] == summary["id"]
    status, body, headers = await page(consumer.node, consumer.token, f"{detail}/statement.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert body.splitlines()[0] == "statement,agreement,period,basis,quantity,unit_price,amount,currency,state"


async def test_the_pages_in_chinese(nodes):
    _, consumer, _, summary = await statement_between(nodes, uses=1)
    async with aiohttp.ClientSession() as s, s.get(
            f"{consumer.node.management_url}/console/statements/{segment(summary['id'])}",
            headers={"Authorization": f"Bearer {consumer.token}", "Accept-Language": "zh-CN"}) as r:
        text = await r.text()
    assert r.status == 200 and "结算单" in text and "提出异议" in text and "确认" in text


async def test_the_policy_form_puts_a_price_in_words(nodes):
    provider = await nodes.start("acme")
    form = {"id": "paid", "purposes": "R&D", "price": "2.50", "currency": "CNY", "price_per": "use",
            "billing_period": "P1M", "rounding": "", "tiers": "1000:2.00", "action": "preview"}
    status, text, _ = await page(provider.node, provider.token, "/console/publishing/policies", form)
    assert status == 200, text
    assert "Pay 2.50 CNY per use, settled monthly (rounded to 0.01, half up)" in text
    assert "After 1000 uses, each further use costs 2.00 CNY" in text
    status, text, _ = await page(provider.node, provider.token, "/console/publishing/policies",
                                 {**form, "currency": ""})
    assert status == 400 and "A price needs its currency" in text
    status, _, _ = await page(provider.node, provider.token, "/console/publishing/policies",
                              {**form, "action": "save"})
    assert status == 303
    [saved] = [p for p in await provider.client.entries("policies") if p["id"] == "paid"]
    assert "compensate" in json.dumps(saved["policy"])


async def test_another_participants_token_sees_none_of_it(nodes):
    _, consumer, agreement, summary = await statement_between(nodes, uses=1)
    stranger = await nodes.host(consumer, "sme-one")
    detail = f"/console/statements/{segment(summary['id'])}"
    for path, form in ((detail, None), (f"{detail}/statement.json", None), (f"{detail}/accept", {}),
                       (f"{detail}/dispute", {"reason": "x"}), ("/console/statements/issue", {"agreement": agreement})):
        status, text, headers = await page(stranger.node, stranger.token, path, form)
        assert status == 404 and headers["Content-Type"].startswith("text/html"), (path, status)
        assert "Traceback" not in text
    status, text, _ = await page(stranger.node, stranger.token, "/console/statements")
    assert status == 200 and summary["id"] not in text
    assert [s["state"] for s in await consumer.client.statements()] == ["received"]
