"""The peer directory between real nodes on 127.0.0.1: bootstrap peers, `peer add` and gossip."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from connector.bootstrap import init_node, write_secret_text
from connector.client import ClientError, ManagementClient
from connector.config import CONFIG_FILE, DiscoverySection, parse_config, render_config
from connector.node import Node
from connector.testing import eventually, free_port


class Space:
    """Nodes started with a ``[discovery]`` section of their own; :meth:`close` stops them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[tuple[Node, ManagementClient]] = []

    async def start(self, name: str, **discovery: object) -> tuple[Node, ManagementClient]:
        data_dir = self.root / name
        result = init_node(data_dir, name=name, legal_name=f"{name.title()} Co.", port=free_port(),
                           management_port=free_port(), region="CN-GD", dev_mode=True)
        section = msgspec.structs.replace(DiscoverySection(), gossip_interval_s=0.3, **discovery)
        text = render_config(msgspec.structs.replace(result.config, discovery=section))
        write_secret_text(data_dir / CONFIG_FILE, text)
        node = Node(data_dir, parse_config(text))
        await node.start()
        client = ManagementClient(node.management_url, result.token)
        self.nodes.append((node, client))
        return node, client

    async def close(self) -> None:
        for node, client in reversed(self.nodes):
            await client.close()
            await node.stop()


@pytest.fixture
async def space(tmp_path):
    found = Space(tmp_path)
    yield found
    await found.close()


def did_of(node: Node) -> str:
    first = node.participants.first()
    assert first is not None
    return str(first.did)


async def test_a_node_that_knows_one_peer_learns_of_the_peers_it_knows(space):
    a, _ = await space.start("alpha")
    b, _ = await space.start("bravo", bootstrap=[a.config.public_url])
    c, c_client = await space.start("charlie", bootstrap=[b.config.public_url])

    async def c_knows_a():
        return [e for e in await c_client.directory() if e["did"] == did_of(a)]

    found = await eventually(c_knows_a, 20, what="charlie's directory listing alpha")
    assert found[0]["learnedFrom"] == did_of(b)  # told by bravo, verified against alpha's own DID document
    assert found[0]["legalName"] == "Alpha Co."
    assert found[0]["dspEndpoint"].endswith("/participants/alpha/api/dsp/2025-1")
    # and alpha learns of charlie, whom it never met, the same way
    a_first = a.participants.first()
    assert a_first is not None
    await eventually(lambda: _has(a, did_of(c)), 20, what="alpha's directory listing charlie")
    # the search side's view of it
    assert did_of(a) in {e.did for e in c.directory.known(c.participants.first().id)}
    body, _ = c.metrics.render()
    assert b"tds_gossip_sent_bytes_total" in body


async def _has(node: Node, did: str) -> bool:
    first = node.participants.first()
    assert first is not None
    return any(e.did == did for e in node.directory.known(first.id))


async def test_peer_add_verifies_and_lists_and_an_undiscoverable_node_stays_out(space):
    a, _ = await space.start("alpha", discoverable=False)
    b, b_client = await space.start("bravo")
    c, c_client = await space.start("charlie")
    with pytest.raises(ClientError, match="keeps itself out of peer directories"):
        await b_client.add_peer(a.config.public_url)
    entry = await c_client.add_peer(b.config.public_url)
    assert entry["did"] == did_of(b) and entry["learnedFrom"] == "handshake"
    assert [e["did"] for e in await c_client.directory()] == [did_of(b)]
    await eventually(lambda: _has(b, did_of(c)), 20, what="bravo's directory listing charlie")
    # alpha gossips with bravo (it may learn), but nobody learns of alpha
    await b_client.verify_peer(a.config.public_url)
    assert not await _has(b, did_of(a))
    assert not await _has(c, did_of(a))


OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def publish(client: ManagementClient, name: str) -> None:
    asset = f"{name}-readings"
    await client.add_asset({"id": asset, "title": f"{name.title()} press readings", "dataClass": "general",
                            "description": "Hourly readings of one press line", "keywords": ["presses"]})
    await client.add_policy(f"{asset}-open", OPEN)
    await client.add_contract_definition(f"{asset}-cd", access_policy_id=f"{asset}-open",
                                         contract_policy_id=f"{asset}-open", assets=[asset])


async def test_a_newcomer_that_knows_one_peer_finds_every_members_offer_by_search(space):
    a, a_client = await space.start("alpha", crawl_interval_s=0.5)
    b, b_client = await space.start("bravo", bootstrap=[a.config.public_url], crawl_interval_s=0.5)
    await publish(a_client, "alpha")
    await publish(b_client, "bravo")
    _, c_client = await space.start("charlie", bootstrap=[b.config.public_url], crawl_interval_s=0.5)

    async def finds_both():
        page = await c_client.search("press readings")
        return {o["providerDid"] for o in page["offers"]} == {did_of(a), did_of(b)}

    await eventually(finds_both, 20, what="charlie's search listing alpha's and bravo's offers")
