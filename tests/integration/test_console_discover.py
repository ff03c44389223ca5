"""The console's discover and negotiations pages between two real nodes: a peer's catalog with its terms in plain
words (a hostile title escaped), the Negotiate button through to a FINALIZED negotiation with both signatures
checked, its live stream, and the refusals (another participant's negotiation, a bad peer, a wrong action)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aiohttp

from connector.http.console.api import segment
from connector.testing import HostedParticipant, RunningNode
from usage_policies import templates

TITLE = "<script>alert(1)</script>"
DESCRIPTION = "<img src=x onerror=alert(1)> sensor readings"


@dataclass
class Pair:
    provider: RunningNode
    consumer: RunningNode
    other: HostedParticipant  # another participant hosted on the consumer's node

    @property
    def console(self) -> str:
        return f"{self.consumer.node.management_url}/console"


async def pair(nodes) -> Pair:
    provider = await nodes.start("prov")
    consumer = await nodes.start("cons")
    other = await nodes.host(consumer, "sme-other")
    await provider.client.add_asset({"id": "readings", "title": TITLE, "description": DESCRIPTION})
    policy = templates.purpose("readings", "R&D")
    policy.pop("target")
    policy.pop("@id")
    await provider.client.add_policy("purpose-rd", policy)
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="purpose-rd",
                                                  assets=["readings"])
    return Pair(provider, consumer, other)


def bearer(token: str, lang: str = "en") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept-Language": lang}


async def get(url: str, token: str, *, lang: str = "en", **params: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params, headers=bearer(token, lang),
                                                   allow_redirects=False) as r:
        return r.status, await r.text()


async def post(url: str, token: str, form: dict[str, str]) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.post(url, data=form, headers=bearer(token),
                                                    allow_redirects=False) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


def negotiate_form(page: str) -> dict[str, str]:
    """The first Negotiate form's hidden fields, as a browser would post them."""
    form = page[page.index('action="/console/discover/negotiate"'):]
    fields = dict(re.findall(r'name="(offerId|peer)" value="([^"]*)"', form[:form.index("</form>")]))
    return {k: html.unescape(v) for k, v in fields.items()}


async def negotiated(p: Pair) -> str:
    """Negotiate the provider's offer from the catalog page; the negotiation's id once it is FINALIZED."""
    _, page = await get(f"{p.console}/discover/catalog", p.consumer.token, peer=p.provider.public_url)
    status, location, _ = await post(f"{p.console}/discover/negotiate", p.consumer.token, negotiate_form(page))
    assert status == 303, location
    assert location.startswith("/console/negotiations/")
    negotiation_id = unquote(location.rsplit("/", 1)[-1])
    final = await p.consumer.client.negotiation(negotiation_id, wait_s=10)
    assert final["state"] == "FINALIZED", final
    return negotiation_id


async def events(url: str, token: str) -> list[dict[str, Any]]:
    """Every message of a server-sent event stream, read until the server ends it."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url, headers=bearer(token)) as r:
        assert r.status == 200, await r.text()
        assert r.content_type == "text/event-stream"
        body = (await r.read()).decode()
    return [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]


async def test_a_peers_catalog_shows_its_terms_in_plain_words_and_escapes_its_text(nodes):
    p = await pair(nodes)
    status, page = await get(f"{p.console}/discover/catalog", p.consumer.token, peer=p.provider.public_url)
    assert status == 200, page
    assert "Use is allowed for the purpose R&amp;D" in page
    assert html.escape(TITLE) in page and TITLE not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    assert p.provider.participant.did in page
    assert "&#34;rightOperand&#34;: &#34;R&amp;D&#34;" in page  # the raw ODRL, escaped, in a <details>
    assert 'action="/console/discover/negotiate"' in page
    status, page = await get(f"{p.console}/discover/catalog", p.consumer.token, lang="zh",
                             peer=p.provider.public_url)
    assert status == 200 and "允许使用，仅限用途：R&amp;D" in page  # noqa: RUF001


async def test_negotiate_finalizes_and_the_page_shows_the_agreement_and_both_valid_signatures(nodes):
    p = await pair(nodes)
    negotiation_id = await negotiated(p)
    status, page = await get(f"{p.console}/negotiations/{segment(negotiation_id)}", p.consumer.token)
    assert status == 200, page
    final = await p.consumer.client.negotiation(negotiation_id)
    agreement_id = final["agreement"]["@id"]
    assert 'data-field="state">FINALIZED<' in page
    assert f'<code id="agreement-id">{agreement_id}</code>' in page
    assert re.findall(r'data-proof="(\w+)" data-status="(\w+)"', page) == [("provider", "valid"),
                                                                           ("consumer", "valid")]
    assert page.count(">valid</span>") == 2
    assert "Use is allowed for the purpose R&amp;D" in page
    assert "REQUESTED → AGREED → VERIFIED → FINALIZED" in page
    assert "data-live=" not in page  # final: nothing more to follow
    assert "/terminate" not in page and "/accept" not in page
    # the agreement the page links to is the one the management API holds
    assert (await p.consumer.client.agreement(agreement_id))["state"] == "FINALIZED"
    status, listing = await get(f"{p.console}/negotiations", p.consumer.token)
    assert status == 200 and f'data-negotiation="{final["id"]}"' in listing and "FINALIZED" in listing


async def test_another_participants_token_gets_404_for_the_negotiation(nodes):
    p = await pair(nodes)
    negotiation_id = await negotiated(p)
    for path in (f"/negotiations/{segment(negotiation_id)}", f"/negotiations/{segment(negotiation_id)}/events"):
        status, page = await get(f"{p.console}{path}", p.other.token)
        assert status == 404, (path, page)
        assert "no such negotiation" in page and "Traceback" not in page
    status, _, page = await post(f"{p.console}/negotiations/{segment(negotiation_id)}/terminate", p.other.token,
                                 {"reason": "not mine"})
    assert status == 404, page
    status, listing = await get(f"{p.console}/negotiations", p.other.token)
    assert status == 200 and negotiation_id not in listing
    assert (await p.consumer.client.negotiation(negotiation_id))["state"] == "FINALIZED"


async def test_the_live_stream_follows_a_new_negotiation_to_its_final_message(nodes):
    p = await pair(nodes)
    _, page = await get(f"{p.console}/discover/catalog", p.consumer.token, peer=p.provider.public_url)
    status, location, _ = await post(f"{p.console}/discover/negotiate", p.consumer.token, negotiate_form(page))
    assert status == 303
    messages = await events(f"{p.consumer.node.management_url}{location}/events", p.consumer.token)
    assert messages and all(m["id"] == "negotiation-live" for m in messages)
    assert [m["final"] for m in messages][-1] is True and not any(m["final"] for m in messages[:-1])
    assert messages[-1]["fields"]["state"] == "FINALIZED"
    assert messages[-1]["fields"]["steps"].endswith("FINALIZED")
    # a stream opened on a final negotiation ends at once with its final message
    again = await events(f"{p.consumer.node.management_url}{location}/events", p.consumer.token)
    assert len(again) == 1 and again[0]["final"] is True


async def test_bad_input_gives_readable_4xx_pages(nodes):
    p = await pair(nodes)
    status, page = await get(f"{p.console}/discover/catalog", p.consumer.token, peer="not-a-url")
    assert status == 400 and "peer must be an http(s) URL or a did:web" in page
    status, page = await get(f"{p.console}/discover/catalog", p.consumer.token, peer="")
    assert status == 400 and "Name the peer whose catalog to show" in page
    status, page = await get(f"{p.console}/discover/catalog", p.consumer.token, peer="https://x.example/" + "a" * 3000)
    assert status == 400 and "too long" in page
    status, _, page = await post(f"{p.console}/discover/negotiate", p.consumer.token, {"peer": "x"})
    assert status == 400 and "Name the offer to negotiate" in page
    status, page = await get(f"{p.console}/negotiations", p.consumer.token, state="NOPE")
    assert status == 400 and "Unknown state" in page
    status, page = await get(f"{p.console}/negotiations/no-such-id", p.consumer.token)
    assert status == 404 and "no such negotiation" in page
    negotiation_id = await negotiated(p)
    path = f"{p.console}/negotiations/{segment(negotiation_id)}"
    status, _, page = await post(f"{path}/terminate", p.consumer.token, {"reason": ""})
    assert status == 400 and "Give a reason for the termination" in page
    status, _, page = await post(f"{path}/terminate", p.consumer.token, {"reason": "too late"})
    assert status == 409 and "already FINALIZED" in page
    status, _, page = await post(f"{path}/accept", p.consumer.token, {})
    assert status == 409 and "only an OFFERED negotiation can be accepted" in page
    assert "Traceback" not in page


async def test_the_discover_page_lists_verified_peers_after_a_negotiation(nodes):
    p = await pair(nodes)
    await negotiated(p)
    status, page = await get(f"{p.console}/discover", p.consumer.token)
    assert status == 200, page
    assert f'data-peer="{p.provider.participant.did}"' in page
    assert 'action="/console/discover/catalog"' in page
    status, page = await get(f"{p.console}/discover", p.other.token)
    assert status == 200 and p.provider.participant.did not in page


async def test_a_session_needs_the_csrf_token_to_negotiate(nodes):
    p = await pair(nodes)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.get(f"{p.console}/login") as r:
            login = await r.text()
        login_csrf = re.search(r'name="csrf" value="([^"]+)"', login)
        assert login_csrf is not None
        async with s.post(f"{p.console}/login", data={"csrf": login_csrf.group(1), "token": p.consumer.token},
                          allow_redirects=False) as r:
            assert r.status == 303
        async with s.get(f"{p.console}/discover/catalog", params={"peer": p.provider.public_url}) as r:
            page = await r.text()
        form = negotiate_form(page)
        async with s.post(f"{p.console}/discover/negotiate", data=form, allow_redirects=False) as r:
            assert r.status == 403
        assert await p.consumer.client.negotiations() == []
        csrf = re.search(r'data-csrf="([^"]+)"', page)
        assert csrf is not None
        async with s.post(f"{p.console}/discover/negotiate", data={**form, "csrf": csrf.group(1)},
                          allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/console/negotiations/")
    assert len(await p.consumer.client.negotiations()) == 1


async def test_search_finds_a_crawled_offer_and_its_negotiate_button_works(nodes):
    p = await pair(nodes)
    await negotiated(p)  # the provider is now a verified peer, so the crawl visits it
    await p.consumer.client.crawl()
    status, page = await get(f"{p.console}/discover", p.consumer.token, q="sensor")
    assert status == 200, page
    results = page[page.index('id="search-results"'):]
    assert html.escape(TITLE) in results and TITLE not in page
    assert "Use is allowed for the purpose R&amp;D" in results
    status, location, _ = await post(f"{p.console}/discover/negotiate", p.consumer.token, negotiate_form(results))
    assert status == 303, location
    second = await p.consumer.client.negotiation(unquote(location.rsplit("/", 1)[-1]), wait_s=10)
    assert second["state"] == "FINALIZED"
    status, page = await get(f"{p.console}/discover", p.consumer.token, q="nothing-like-this")
    assert status == 200 and "No offer matches." in page
    status, page = await get(f"{p.console}/discover", p.consumer.token, region="not a region")
    assert status == 400 and "region must be an ISO 3166 code" in page
