"""``tds demo``: a small data space on loopback, narrated step by step.

Two companies each run a node on free loopback ports in a temporary folder: the leading enterprise (ACME)
and an SME with its own node (Pearl River Parts). Each fetches the other's signed self-description over a
signed request and verifies it, and they agree on a usage contract. Then ACME's node hosts two more SMEs
as separate participants (own DIDs, keys, catalogs and tokens); contracts for data are agreed from the
enterprise to a hosted SME and between SMEs, hosted and independent, through the same protocol. Every step prints one
plain line with its evidence; the command exits non-zero if any step did not behave as expected.
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
    admin_token: str = ""


class DemoFailed(Exception):
    pass


async def start_demo_node(root: Path, name: str, legal_name: str, region: str, industry: str) -> DemoNode:
    port = free_port()
    result = init_node(root / name, name=name, legal_name=legal_name, port=port, management_port=free_port(),
                       region=region, industry=industry, dev_mode=True)
    node = Node(root / name, result.config)
    await node.start()
    return DemoNode(node, ManagementClient(node.management_url, result.token), result.token, result.admin_token)


async def publish_and_negotiate(provider: DemoNode, consumer: DemoNode, say: Callable[[str], None]) -> str:
    """The provider publishes a dataset under a usage policy; the consumer finds it and negotiates."""
    from usage_policies import templates

    await provider.client.add_asset({
        "id": "qi-2026-q3", "title": "Quality inspection results, 2026 Q3", "contentType": "text/csv",
        "dataClass": "important", "keywords": ["quality", "inspection"],
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
    from connector.protocol.agreements import check_bundle

    checks = check_bundle(await provider.client.agreement_evidence(agreement["@id"]))
    if [c.status for c in checks] != ["valid", "valid"]:
        raise DemoFailed(f"the agreement is not signed by both parties: {checks}")
    say("  both nodes hold the same agreement, signed by both parties (eddsa-jcs-2022 proofs checked).")
    return str(agreement["@id"])


async def negotiate_first_offer(consumer: ManagementClient, provider_url: str) -> dict[str, Any]:
    """Find the first offer in the provider's catalog and negotiate it to a final state."""
    catalog = await consumer.catalog(provider_url)
    datasets = catalog.get("dataset", [])
    if not datasets:
        raise DemoFailed(f"the catalog of {provider_url} is empty")
    started = await consumer.negotiate(provider_url, datasets[0]["hasPolicy"][0]["@id"])
    final: dict[str, Any] = await consumer.negotiation(started["id"], wait_s=15)
    if final["state"] != "FINALIZED":
        raise DemoFailed(f"negotiation ended {final['state']}: {final.get('reason')}")
    return final


async def host_smes(acme: DemoNode, parts: DemoNode, say: Callable[[str], None],
                    clients: list[ManagementClient]) -> None:
    """ACME's node hosts two SMEs; contracts enterprise -> hosted SME and between SMEs. The management
    clients it opens are appended to *clients* (the caller closes them)."""
    from connector.client import ClientError

    admin = ManagementClient(acme.node.management_url, acme.admin_token)
    clients.append(admin)
    hosted: dict[str, ManagementClient] = {}
    urls: dict[str, str] = {}
    say("ACME's node now hosts two SMEs that run nothing themselves (admin token; no restart):")
    for name, legal, region, industry in (("gz-sensors", "Guangzhou Sensor Works", "CN-GD-GZ", "sensors"),
                                          ("fs-molds", "Foshan Mould Studio", "CN-GD-FS", "moulds")):
        added = await admin.add_participant(name, legal_name=legal, region=region, industry=industry)
        client = ManagementClient(acme.node.management_url, added["token"])
        clients.append(client)
        hosted[name] = client
        urls[name] = added["dspEndpoint"].removesuffix("/api/dsp/2025-1")
        fingerprint = (await client.participant())["fingerprints"]["ed25519"]
        say(f"  {legal}: {added['did']}")
        say(f"    own DSP endpoint {added['dspEndpoint']}, own signing key {fingerprint} (sealed by the node key)")
    # an independent peer cannot tell a hosted participant from one with its own node
    verified = await parts.client.verify_peer(urls["fs-molds"])
    say(f"Pearl River Parts verifies {verified['peer']['legalName']} like any peer: {verified['peer']['id']}")

    final = await negotiate_first_offer(hosted["gz-sensors"], acme.node.config.public_url)
    say(f"Enterprise -> SME: Guangzhou Sensor Works (hosted) agrees with ACME on {final['agreement']['target']}: "
        f"{final['agreement']['@id']}")
    await hosted["fs-molds"].add_asset({"id": "mould-wear-2026", "title": "Mould wear measurements 2026",
                                        "contentType": "text/csv", "dataClass": "general"})
    await hosted["fs-molds"].add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await hosted["fs-molds"].add_contract_definition("wear", access_policy_id="open", contract_policy_id="open",
                                                     assets=["mould-wear-2026"])
    say("Foshan Mould Studio (hosted) publishes 'Mould wear measurements 2026' in its own catalog.")
    for consumer, label in ((hosted["gz-sensors"], "Guangzhou Sensor Works (hosted on the same node)"),
                            (parts.client, "Pearl River Parts (own node)")):
        final = await negotiate_first_offer(consumer, urls["fs-molds"])
        say(f"SME -> SME: {label} agrees on {final['agreement']['target']}: {final['agreement']['@id']}")
    ours = {a["id"] for a in await hosted["fs-molds"].agreements()}
    with_parts = final["agreement"]["@id"]  # Foshan's agreement with Pearl River Parts, not Guangzhou's business
    if with_parts not in ours:
        raise DemoFailed("the hosted provider does not hold the agreement")
    try:
        await hosted["gz-sensors"].agreement(with_parts)
        raise DemoFailed("a hosted SME could read another one's agreement")
    except ClientError as exc:
        if exc.status != 404:
            raise
    try:
        await admin.entries("assets")
        raise DemoFailed("the admin token could read a participant's data")
    except ClientError as exc:
        if exc.status != 404:
            raise
    say(f"Isolation: Foshan holds {len(ours)} agreements; Guangzhou's token on Foshan's agreement with Pearl River")
    say("  Parts gets 404, and the host's admin token, which added both SMEs, gets 404 on their data.")


async def run_demo(say: Callable[[str], None] = print, keep_running: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="tds-demo-") as tmp:
        root = Path(tmp)
        nodes: list[DemoNode] = []
        extra_clients: list[ManagementClient] = []
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
            await publish_and_negotiate(acme, parts, say)
            await host_smes(acme, parts, say, extra_clients)
            if keep_running:
                for n in nodes:
                    say(f"  {n.node.config.participant.name}: public {n.node.config.public_url}, "
                        f"management {n.node.management_url}, token {n.token}")
                say("Nodes keep running; press Ctrl+C to stop.")
                await asyncio.Event().wait()
            say("Demo finished: two nodes verified each other and agreed on a usage contract; one node hosts two")
            say("SMEs, which agreed on data with the enterprise and with other SMEs. Stopping the nodes.")
        finally:
            for client in extra_clients:
                await client.close()
            for n in nodes:
                await n.client.close()
                await n.node.stop()
