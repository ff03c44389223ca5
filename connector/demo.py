"""``tds demo``: a small data space on loopback, narrated step by step.

Two enterprises each run a node on free loopback ports in a temporary folder; each fetches the other's
signed self-description over a signed request and verifies it. Every step prints one plain line with its
evidence; the command exits non-zero if any step did not behave as expected.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.bootstrap import init_node
from connector.client import ManagementClient
from connector.node import Node
from connector.testing import free_port


@dataclass
class DemoNode:
    node: Node
    client: ManagementClient
    token: str


class DemoFailed(Exception):
    pass


async def start_demo_node(root: Path, name: str, legal_name: str, region: str, industry: str) -> DemoNode:
    port = free_port()
    result = init_node(root / name, name=name, legal_name=legal_name, port=port, management_port=free_port(),
                       region=region, industry=industry, dev_mode=True)
    node = Node(root / name, result.config)
    await node.start()
    return DemoNode(node, ManagementClient(node.management_url, result.token), result.token)


async def run_demo(say: Callable[[str], None] = print, keep_running: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="tds-demo-") as tmp:
        root = Path(tmp)
        nodes: list[DemoNode] = []
        try:
            say("Starting two connector nodes on loopback (dev mode, embedded SQLite in a temporary folder).")
            acme = await start_demo_node(root, "acme", "ACME Precision Manufacturing Co.", "CN-GD", "manufacturing")
            nodes.append(acme)
            parts = await start_demo_node(root, "parts", "Pearl River Parts Ltd.", "CN-GD-GZ", "automotive-parts")
            nodes.append(parts)
            for n in nodes:
                info = await n.client.participant()
                say(f"  {info['legalName']}: {info['did']}")
                say(f"    DSP endpoint {info['dspEndpoint']}, signing key {info['fingerprints']['ed25519']}")
            for a, b in ((acme, parts), (parts, acme)):
                me = await a.client.participant()
                peer_url = b.node.config.public_url
                say(f"{me['legalName']} asks {peer_url} who it is, over an RFC 9421-signed handshake ...")
                result: dict[str, Any] = await a.client.verify_peer(peer_url)
                peer = result["peer"]
                if not result.get("verified"):
                    raise DemoFailed(f"{me['name']} could not verify {peer_url}")
                say(f"  verified: {peer['legalName']} ({peer['region']}, {peer['industry']}), {peer['id']}")
                say("  the self-description's eddsa-jcs-2022 proof matches the key in its DID document,")
                say("  and the peer verified our own self-description and signature in return.")
            for n in nodes:
                known = await n.client.peers()
                me = await n.client.participant()
                names = ", ".join(p["legal_name"] for p in known)
                say(f"{me['legalName']} now knows {len(known)} verified peer(s): {names}")
                if len(known) != 1:
                    raise DemoFailed(f"{me['name']} should know exactly one peer")
            if keep_running:
                for n in nodes:
                    say(f"  {n.node.config.participant.name}: public {n.node.config.public_url}, "
                        f"management {n.node.management_url}, token {n.token}")
                say("Nodes keep running; press Ctrl+C to stop.")
                await asyncio.Event().wait()
            say("Demo finished: both nodes verified each other. Stopping the nodes.")
        finally:
            for n in nodes:
                await n.client.close()
                await n.node.stop()
