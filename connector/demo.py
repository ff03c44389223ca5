"""``tds demo``: a small data space on loopback, narrated step by step.

Two enterprises each run a node on free loopback ports in a temporary folder; each fetches the other's
signed self-description over a signed request and verifies it. Every step prints one plain line with its
evidence; the command exits non-zero if any step did not behave as expected.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
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


async def publish_and_negotiate(provider: DemoNode, consumer: DemoNode, say: Callable[[str], None]) -> str:
    """The provider publishes a dataset under a usage policy; the consumer finds it and negotiates."""
    from usage_policies import templates

    files = provider.node.data_dir / "files"
    files.mkdir(exist_ok=True)
    rows = [f"P-{i:05d},{['pass', 'pass', 'pass', 'rework'][i % 4]},{(i * 37) % 100 / 100:.2f}" for i in range(20000)]
    (files / "qi-2026-q3.csv").write_text("part,result,deviation_mm\n" + "\n".join(rows) + "\n")
    await provider.client.add_asset({
        "id": "qi-2026-q3", "title": "Quality inspection results, 2026 Q3", "contentType": "text/csv",
        "dataClass": "important", "keywords": ["quality", "inspection"],
        "dataAddress": {"type": "File", "path": "qi-2026-q3.csv"},
    })
    target = "qi-2026-q3"
    usage = templates.combine(templates.purpose(target, "R&D"), templates.max_uses(target, 3),
                              templates.for_duration(target, "P30D"), templates.log_each_use(target))
    await provider.client.add_policy("members", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("rnd-3-uses", usage)
    await provider.client.add_contract_definition("qi-offer", access_policy_id="members",
                                                  contract_policy_id="rnd-3-uses", assets=[target])
    say("ACME publishes 'Quality inspection results, 2026 Q3' (class: important) under a usage policy:")
    say("  purpose R&D, at most 3 uses, within 30 days of the first use, log each use.")
    catalog = await consumer.client.catalog(provider.node.config.public_url)
    datasets = catalog.get("dataset", [])
    if not datasets:
        raise DemoFailed("the consumer's catalog view is empty")
    offer_id = datasets[0]["hasPolicy"][0]["@id"]
    say(f"Pearl River Parts finds it in ACME's catalog: dataset {datasets[0]['@id']}, offer {offer_id}")
    started = time.perf_counter()
    negotiation = await consumer.client.negotiate(provider.node.config.public_url, offer_id)
    final = await consumer.client.negotiation(negotiation["id"], wait_s=15)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if final["state"] != "FINALIZED":
        raise DemoFailed(f"negotiation ended {final['state']}: {final.get('reason')}")
    agreement = final["agreement"]
    say(f"They negotiate over DSP 2025-1: REQUESTED -> AGREED -> VERIFIED -> FINALIZED in {elapsed_ms:.0f} ms")
    say(f"  agreement {agreement['@id']}, signed off at {agreement['timestamp']}")
    say(f"  provider {agreement['assigner']}")
    say(f"  consumer {agreement['assignee']}")
    theirs = [a["id"] for a in await provider.client.agreements()]
    if agreement["@id"] not in theirs:
        raise DemoFailed("the provider does not hold the same agreement")
    say("  both nodes hold the same agreement.")
    return str(agreement["@id"])


async def transfer_and_verify(provider: DemoNode, consumer: DemoNode, agreement_id: str,
                              say: Callable[[str], None]) -> None:
    """The consumer pulls the agreed dataset straight from the provider and checks where every byte came from."""
    from connector.payload import manifest as manifests

    started = time.perf_counter()
    record = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(record["id"], wait_s=30)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if final["state"] != "COMPLETED":
        raise DemoFailed(f"transfer ended {final['state']}: {final.get('reason')}")
    manifest, envelope, binding = manifests.read_bundle(await consumer.client.transfer_bundle(record["id"]))
    if binding.provider != (await provider.client.participant())["did"] or binding.agreement_id != agreement_id:
        raise DemoFailed("the manifest is not bound to this provider and agreement")
    say(f"Pearl River Parts pulls the dataset from ACME (HttpData-PULL, no broker): REQUESTED -> STARTED -> "
        f"COMPLETED in {elapsed_ms:.0f} ms")
    say(f"  {manifest.size} bytes in {len(manifest.chunks)} chunk(s), each checked against the manifest "
        f"({manifest.algorithm}) before it was written")
    say(f"  manifest {manifests.digest(manifest)}")
    say(f"  signed ({envelope['proof']['cryptosuite']}) by {binding.provider}")
    say(f"  bound to agreement {binding.agreement_id} and consumer {binding.consumer}")
    say(f"  stored in the consumer's vault: {final['vaultPath']} (with its .bundle.json for offline checks)")


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
                names = ", ".join(p["legalName"] for p in known)
                say(f"{me['legalName']} now knows {len(known)} verified peer(s): {names}")
                if len(known) != 1:
                    raise DemoFailed(f"{me['name']} should know exactly one peer")
            agreement_id = await publish_and_negotiate(acme, parts, say)
            await transfer_and_verify(acme, parts, agreement_id, say)
            if keep_running:
                for n in nodes:
                    say(f"  {n.node.config.participant.name}: public {n.node.config.public_url}, "
                        f"management {n.node.management_url}, token {n.token}")
                say("Nodes keep running; press Ctrl+C to stop.")
                await asyncio.Event().wait()
            say("Demo finished: two nodes verified each other, agreed on a usage contract and moved the data "
                "with a signed, verified manifest. Stopping the nodes.")
        finally:
            for n in nodes:
                await n.client.close()
                await n.node.stop()
