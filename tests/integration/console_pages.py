"""What the console's page tests between two real nodes share: an agreement to look at, and a page request."""

from __future__ import annotations

import aiohttp

from usage_policies import templates

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def agree(provider, consumer, *, title: str, uses: int = 5) -> str:
    """*provider* offers an asset titled *title* for R&D, at most *uses* times; *consumer* agrees to it. The
    agreement's id."""
    await provider.client.add_asset({"id": "qi", "title": title})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_policy("rnd", templates.combine(templates.purpose("qi", "R&D"),
                                                              templates.max_uses("qi", uses)))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="rnd",
                                                  assets=["qi"])
    agreement, _ = await agree_to_first_offer(provider, consumer)
    return agreement


async def agree_to_first_offer(provider, consumer) -> tuple[str, dict]:
    """*consumer* negotiates the first offer of *provider*'s catalog until both sides are FINALIZED: the
    agreement's id and the catalog as the consumer saw it."""
    catalog = await consumer.client.catalog(provider.public_url)
    offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    theirs = await provider.client.negotiation(final["providerPid"], wait_s=15)
    assert theirs["state"] == "FINALIZED", theirs
    return str(final["agreement"]["@id"]), catalog


async def page(node, token: str, path: str, form: dict | None = None) -> tuple[int, str, dict]:
    """GET (or POST *form* to) a console path with ``Authorization: Bearer``, in English (the nodes' region
    is CN, whose default is Chinese); redirects are not followed."""
    method = "GET" if form is None else "POST"
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    async with aiohttp.ClientSession() as s, s.request(method, f"{node.management_url}{path}", data=form,
                                                        headers=headers, allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)
