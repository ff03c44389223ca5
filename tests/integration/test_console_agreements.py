"""The console's agreements pages between two real nodes: both sides list the agreement, its terms in words,
both proofs checked offline, the evidence file the CLI verifies, revocation by the provider only, a transfer
started by the consumer, and nothing of it for another participant's token."""

from __future__ import annotations

import asyncio
import html
import json
import re

import aiohttp
from click.testing import CliRunner
from console_pages import agree, page

from connector.cli import main
from connector.http.console.api import segment
from connector.protocol import agreements as evidence_check
from connector.testing import eventually, store_connection

TITLE = "<script>alert(1)</script> Quality inspection"


async def agreement_between(nodes, *, uses: int = 5):
    """acme publishes an asset whose title holds markup under a purpose + max-uses policy; parts agrees to it
    and has crawled acme's catalog (so it knows the title)."""
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agree(provider, consumer, title=TITLE, uses=uses)
    await consumer.client.crawl()
    return provider, consumer, agreement


def flash_error(text: str) -> str:
    found = re.search(r'<p class="flash error" role="alert"[^>]*>(.*?)</p>', text, re.S)
    assert found, text
    return html.unescape(found.group(1))


async def test_both_sides_list_the_agreement_with_role_peer_state_and_the_title_escaped(nodes):
    provider, consumer, agreement = await agreement_between(nodes)
    status, text, _ = await page(provider.node, provider.token, "/console/agreements")
    assert status == 200
    row = text[text.index(f'data-agreement="{agreement}"'):]
    row = row[:row.index("</tr>")]
    assert "Provider" in row and consumer.participant.did in row and "FINALIZED" in row
    assert f'href="/console/agreements/{segment(agreement)}"' in row
    assert html.escape(TITLE, quote=False) in row and "<script>" not in text

    async def consumer_row():
        status, text, _ = await page(consumer.node, consumer.token, "/console/agreements")
        assert status == 200 and "<script>alert" not in text
        return text if html.escape(TITLE, quote=False) in text else None

    text = await eventually(consumer_row, what="the crawled title on the consumer's agreements page")
    row = text[text.index(f'data-agreement="{agreement}"'):]
    assert "Consumer" in row[:row.index("</tr>")] and provider.participant.did in row[:row.index("</tr>")]


async def test_terms_in_words_and_both_proofs_checked_valid(nodes):
    provider, consumer, agreement = await agreement_between(nodes)
    for node, role in ((provider, "provider"), (consumer, "consumer")):
        status, text, _ = await page(node.node, node.token, f"/console/agreements/{segment(agreement)}")
        assert status == 200, text
        assert "Use is allowed for the purpose R&amp;D" in text and "At most 5 uses" in text
        assert "<details>" in text and "odrl:count" in text  # the raw ODRL
        assert 'data-proof="provider" data-status="valid"' in text
        assert 'data-proof="consumer" data-status="valid"' in text
        assert f"{provider.participant.did}#key-1" in text and f"{consumer.participant.did}#key-1" in text
        assert ('id="revoke"' in text) == (role == "provider")
        assert ('id="transfer"' in text) == (role == "consumer")
        assert f'href="/console/usage/{segment(agreement)}"' in text
    status, text, _ = await page(provider.node, provider.token, f"/console/agreements/{segment(agreement)}")
    assert 'data-confirm="' in text[text.index('id="revoke"'):]


async def test_a_changed_stored_term_shows_both_proofs_invalid_with_the_reason(nodes):
    _, consumer, agreement = await agreement_between(nodes)
    with store_connection(consumer.data_dir) as db:
        db.execute("UPDATE agreements SET agreement = replace(agreement, '\"lteq\"', '\"lt\"')")
    status, text, _ = await page(consumer.node, consumer.token, f"/console/agreements/{segment(agreement)}")
    assert status == 200
    for role in ("provider", "consumer"):
        row = text[text.index(f'data-proof="{role}"'):]
        row = row[:row.index("</tr>")]
        assert 'data-status="invalid"' in row and "invalid" in row and "does not verify" in row, row


async def test_the_terms_in_chinese(nodes):
    _, consumer, agreement = await agreement_between(nodes)
    async with aiohttp.ClientSession() as s, s.get(
            f"{consumer.node.management_url}/console/agreements/{segment(agreement)}",
            headers={"Authorization": f"Bearer {consumer.token}", "Accept-Language": "zh-CN"}) as r:
        text = await r.text()
    assert r.status == 200 and "最多使用 5 次" in text and "有效" in text


async def test_the_evidence_download_is_a_json_attachment_the_cli_verifies(nodes, tmp_path):
    _, consumer, agreement = await agreement_between(nodes)
    status, body, headers = await page(consumer.node, consumer.token,
                                       f"/console/agreements/{segment(agreement)}/evidence.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    disposition = headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+\.json"',
                                                                 disposition), disposition
    evidence = json.loads(body)
    assert evidence["agreement"]["@id"] == agreement
    assert [c.status for c in evidence_check.check_bundle(evidence)] == ["valid", "valid"]
    path = tmp_path / "evidence.json"
    path.write_text(body)
    result = await asyncio.to_thread(CliRunner().invoke, main, ["agreement", "verify", "--file", str(path)])
    assert result.exit_code == 0 and "dual-signed" in result.output, result.output
    # a changed term no longer verifies, and the page of such an agreement would say so
    evidence["agreement"]["permission"][0]["action"] = "distribute"
    checks = evidence_check.check_bundle(evidence)
    assert [c.status for c in checks] == ["invalid", "invalid"]


async def test_the_provider_revokes_and_the_consumer_sees_it_revoked(nodes):
    provider, consumer, agreement = await agreement_between(nodes)
    detail = f"/console/agreements/{segment(agreement)}"
    # the consumer cannot revoke: a readable refusal, and nothing changed
    status, text, _ = await page(consumer.node, consumer.token, f"{detail}/revoke", {"reason": "no"})
    assert status == 403 and "Only the provider can revoke" in flash_error(text)
    # no reason: refused with a readable message
    status, text, _ = await page(provider.node, provider.token, f"{detail}/revoke", {"reason": "  "})
    assert status == 400 and "reason" in flash_error(text)
    assert (await provider.client.agreement(agreement))["state"] == "FINALIZED"

    reason = "audit <b>finding</b>"
    status, _, headers = await page(provider.node, provider.token, f"{detail}/revoke", {"reason": reason})
    assert status == 303 and headers["Location"] == detail
    assert (await provider.client.agreement(agreement))["state"] == "REVOKED"
    status, text, _ = await page(provider.node, provider.token, detail)
    assert status == 200 and "REVOKED" in text and 'id="revoke"' not in text
    assert re.search(r'data-revocation-status="(pending|acknowledged)"', text)

    async def acknowledged():
        _, text, _ = await page(provider.node, provider.token, detail)
        return 'data-revocation-status="acknowledged"' in text

    await eventually(acknowledged, what="the consumer's deletion receipt on the provider's page")

    async def consumer_sees_it():
        _, text, _ = await page(consumer.node, consumer.token, detail)
        return text if "REVOKED" in text and 'id="revocation"' in text else None

    text = await eventually(consumer_sees_it, what="the revocation on the consumer's page")
    assert "audit &lt;b&gt;finding&lt;/b&gt;" in text and "<b>finding" not in text  # the peer's reason, escaped
    assert 'id="transfer"' not in text
    _, listing, _ = await page(consumer.node, consumer.token, "/console/agreements")
    row = listing[listing.index(f'data-agreement="{agreement}"'):]
    assert "REVOKED" in row[:row.index("</tr>")]


async def test_the_consumer_starts_a_transfer_and_is_sent_to_its_page(nodes):
    provider, consumer, agreement = await agreement_between(nodes)
    detail = f"/console/agreements/{segment(agreement)}"
    status, text, _ = await page(provider.node, provider.token, f"{detail}/transfer", {})
    assert status == 403 and "Only the consumer" in flash_error(text)
    status, _, headers = await page(consumer.node, consumer.token, f"{detail}/transfer", {})
    assert status == 303 and headers["Location"].startswith("/console/transfers/")
    transfers = await consumer.client.transfers()
    assert [segment(t["id"]) for t in transfers if t["agreementId"] == agreement] == [
        headers["Location"].rsplit("/", 1)[1]]


async def test_another_participants_token_sees_none_of_it(nodes):
    provider, consumer, agreement = await agreement_between(nodes)
    stranger = await nodes.host(consumer, "sme-one")
    detail = f"/console/agreements/{segment(agreement)}"
    for path, form in ((detail, None), (f"{detail}/evidence.json", None), (f"{detail}/revoke", {"reason": "x"}),
                       (f"{detail}/transfer", {}), (f"/console/usage/{segment(agreement)}", None),
                       (f"/console/usage/{segment(agreement)}/use", {"mode": "use", "purpose": "R&D"})):
        status, text, headers = await page(stranger.node, stranger.token, path, form)
        assert status == 404 and headers["Content-Type"].startswith("text/html"), (path, status)
        assert "Traceback" not in text
    status, text, _ = await page(stranger.node, stranger.token, "/console/agreements")
    assert status == 200 and agreement not in text
    assert (await consumer.client.usage(agreement))["uses"] == 0
    assert (await provider.client.agreement(agreement))["state"] == "FINALIZED"


async def test_a_session_must_send_the_forms_csrf_token(nodes):
    provider, _, agreement = await agreement_between(nodes)
    base = provider.node.management_url
    detail = f"/console/agreements/{segment(agreement)}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        s.cookie_jar.update_cookies({"tds_lang": "en"})
        async with s.get(f"{base}/console/login") as r:
            login_csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)
        async with s.post(f"{base}/console/login", data={"csrf": login_csrf, "token": provider.token,
                                                         "next": detail}) as r:
            text = await r.text()
            assert r.status == 200 and 'id="revoke"' in text
        csrf = re.search(r'name="csrf" value="([^"]+)"', text[text.index('id="revoke"'):]).group(1)
        async with s.post(f"{base}{detail}/revoke", data={"reason": "forged"}) as r:
            assert r.status == 403
        assert (await provider.client.agreement(agreement))["state"] == "FINALIZED"
        async with s.post(f"{base}{detail}/revoke", data={"reason": "contract ended", "csrf": csrf}) as r:
            text = await r.text()
            assert r.status == 200 and r.url.path == f"/console/agreements/{agreement}"
            assert "Agreement revoked; the consumer is being told." in text  # the flash after the redirect
    assert (await provider.client.agreement(agreement))["state"] == "REVOKED"
