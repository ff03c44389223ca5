"""Federated search between real nodes: a consumer crawls the catalog of a provider it knows, as itself, finds
the offer by keyword and region, and negotiates it by the offer id alone, through the API and the CLI."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.client import ClientError
from connector.testing import eventually

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
RND = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"}]}]}
ONLY = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "https://w3id.org/tds/v1#participantId", "operator": "eq",
     "rightOperand": "did:web:nobody.example"}]}]}


async def publish(node, asset: str, title: str, *, access=OPEN, contract=RND, keywords=("quality",)) -> None:
    await node.client.add_asset({"id": asset, "title": title, "description": "Camera scans of every part",
                                 "dataClass": "general", "keywords": list(keywords)})
    await node.client.add_policy(f"{asset}-access", access)
    await node.client.add_policy(f"{asset}-contract", contract)
    await node.client.add_contract_definition(f"{asset}-cd", access_policy_id=f"{asset}-access",
                                              contract_policy_id=f"{asset}-contract", assets=[asset])


async def cli(*args: str):
    """``tds ARGS`` on a thread of its own (the CLI runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


def printed(result) -> list[str]:
    """What the command printed (the nodes of the test, in the same process, log to the same stderr)."""
    return [line for line in result.output.splitlines() if not line.startswith('{"component"')]


async def test_a_crawled_offer_is_found_and_negotiated_by_its_id(nodes):
    provider = await nodes.start("acme", region="CN-GD")
    consumer = await nodes.start("parts", region="CN-BJ")
    await publish(provider, "qi-2026", "Quality inspection results")
    await consumer.client.verify_peer(provider.public_url)  # the consumer knows the provider
    report = await consumer.client.crawl()
    assert (report["providers"], report["offers"], report["failed"]) == (1, 1, {})

    async def found():
        page = await consumer.client.search("quality inspection", region="CN-GD")
        return page if page["offers"] else None

    page = await eventually(found, 10, what="the offer in the consumer's search")
    [offer] = page["offers"]
    assert offer["providerDid"] == provider.participant.did and offer["providerRegion"] == "CN-GD"
    assert offer["datasetId"] == f"urn:tds:asset:{provider.participant.did}:qi-2026"
    assert offer["terms"] == "use; purpose R&D" and "purpose:R&D" in offer["features"]
    assert (await consumer.client.search("quality", region="CN-BJ"))["offers"] == []
    [crawl] = await consumer.client.crawls()
    assert (crawl["providerDid"], crawl["offers"], crawl["failures"], crawl["error"]) == (
        provider.participant.did, 1, 0, "")
    started = await consumer.client.negotiate(None, offer["offerId"])
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    assert final["counterpartyDid"] == provider.participant.did


async def test_the_cli_prints_one_line_per_offer_and_negotiates_a_result(nodes):
    provider = await nodes.start("acme", region="CN-GD")
    consumer = await nodes.start("parts")
    await publish(provider, "qi-2026", "Quality inspection results")
    await publish(provider, "hidden", "Quality secrets", access=ONLY)  # its access policy admits nobody here
    await consumer.client.verify_peer(provider.public_url)
    result = await cli("search", "quality", "inspection", "--region", "CN-GD", "--crawl", "--dir",
                       str(consumer.data_dir))
    assert result.exit_code == 0, result.output
    lines = printed(result)
    assert len(lines) == 1, result.output
    [line] = lines
    offer_id = line.split("  offer ")[1].split()[0]
    assert line.startswith("Acme Co. (CN-GD)  ") and " ago  " in line and line.endswith("terms: use; purpose R&D")
    assert printed(await cli("search", "secrets", "--dir", str(consumer.data_dir)))[0].startswith("no offers found")
    negotiated = await cli("negotiate", offer_id, "--dir", str(consumer.data_dir))
    assert negotiated.exit_code == 0, negotiated.output
    assert printed(negotiated)[0].endswith(": FINALIZED")


@pytest.mark.parametrize(("query", "field"), [
    ({"region": "not a region"}, "region"), ({"data_class": "secret"}, "dataClass"), ({"limit": 0}, "limit"),
    ({"features": ["x" * 200]}, "feature"), ({"q": "q" * 600}, "q"),
])
async def test_bad_search_queries_are_400_naming_the_parameter(nodes, query, field):
    consumer = await nodes.start("parts")
    with pytest.raises(ClientError) as err:
        await consumer.client.search(**query)
    assert err.value.status == 400 and err.value.path == field


async def test_an_offer_id_not_in_the_cache_is_404(nodes):
    consumer = await nodes.start("parts")
    with pytest.raises(ClientError) as err:
        await consumer.client.negotiate(None, "urn:tds:offer:never:seen:1")
    assert err.value.status == 404 and err.value.path == "peer"
