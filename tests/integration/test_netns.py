"""Across hosts, over HTTPS: three nodes in three network namespaces on a bridge, dev mode off.

Each node has its own address in 10.77.0.0/24 (a range this test makes and owns), serves HTTPS with a
certificate from a CA made here, trusts only that CA outbound, and has the /24 in ``trusted_networks``.
Their participants' did:web resolve over https across the namespaces; a negotiation succeeds only if
each side verified the other's signatures. The test process reaches the nodes' management APIs through
an address on the test's own bridge, over HTTPS too (``management_tls = "node"``: off loopback, a management
listener in plain http is refused outside dev mode). Everything created is removed in a ``finally``.

Needs root and ``ip netns``; skipped otherwise, with the reason. The run is negotiation + transfer (the
data crosses the namespaces over https, verified chunk by chunk) + use through the usage API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import pytest

from connector.bootstrap import init_node, write_secret_text
from connector.client import ManagementClient
from connector.config import CONFIG_FILE, parse_config, render_config
from connector.protocol import ids
from connector.testing import eventually, write_tls
from usage_policies import templates

SUBNET = ipaddress.ip_network("10.77.0.0/24")
HOST_ADDRESS = "10.77.0.254"  # the test process's address, on the bridge the test makes
PUBLIC_PORT, MANAGEMENT_PORT = 8443, 8182
TAG = f"{os.getpid() % 100000}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def _why_not() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    try:
        listed = _ip("netns", "list", check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns list` failed: {exc}"
    if listed.returncode != 0:
        return f"`ip netns` is unavailable: {listed.stderr.strip()}"
    routes = _ip("-4", "route", "show", "match", str(SUBNET), check=False).stdout
    addresses = _ip("-4", "-o", "addr", "show", check=False).stdout
    if any(line and not line.startswith("default") for line in routes.splitlines()) or " 10.77.0." in addresses:
        return f"{SUBNET} is already in use on this machine"
    return None


@dataclass
class Namespace:
    name: str
    address: str
    veth: str


@pytest.fixture
def namespaces() -> Iterator[list[Namespace]]:
    """Three namespaces on a bridge, each with one address; removed afterwards whatever happened."""
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    bridge = f"tdsbr{TAG}"
    made: list[Namespace] = []
    try:
        try:
            _ip("link", "add", bridge, "type", "bridge")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot create a bridge: {exc.stderr.strip()}")
        _ip("addr", "add", f"{HOST_ADDRESS}/{SUBNET.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i in (1, 2, 3):
            ns = Namespace(f"tds{TAG}n{i}", str(SUBNET[i]), f"tdsv{TAG}n{i}")
            try:
                _ip("netns", "add", ns.name)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
            made.append(ns)
            _ip("link", "add", ns.veth, "type", "veth", "peer", "name", f"{ns.veth}p")
            _ip("link", "set", f"{ns.veth}p", "netns", ns.name)
            _ip("link", "set", ns.veth, "master", bridge)
            _ip("link", "set", ns.veth, "up")
            inside = ("netns", "exec", ns.name, "ip")
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "link", "set", f"{ns.veth}p", "name", "eth0")
            _ip(*inside, "addr", "add", f"{ns.address}/{SUBNET.prefixlen}", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
        yield made
    finally:
        for ns in made:
            _ip("link", "del", ns.veth, check=False)
            _ip("netns", "del", ns.name, check=False)
        _ip("link", "del", bridge, check=False)


@dataclass
class NsNode:
    ns: Namespace
    data_dir: Path
    token: str
    did: str
    proc: asyncio.subprocess.Process | None = None

    @property
    def public_url(self) -> str:
        return f"https://{self.ns.address}:{PUBLIC_PORT}"

    @property
    def management_url(self) -> str:
        return f"https://{self.ns.address}:{MANAGEMENT_PORT}"


def make_node(ns: Namespace, root: Path, ca: object, name: str, region: str) -> NsNode:
    data_dir = root / name
    result = init_node(data_dir, name=name, legal_name=f"{name.title()} Co.", port=PUBLIC_PORT,
                       management_port=MANAGEMENT_PORT, host=ns.address, public_url=f"https://{ns.address}:{PUBLIC_PORT}",
                       region=region, dev_mode=False, trusted_networks=(str(SUBNET),))
    tls = write_tls(ca, root / f"tls-{name}", ns.address)
    node = msgspec.structs.replace(result.config.node, management_host=ns.address, management_tls="node", **tls)
    text = render_config(msgspec.structs.replace(result.config, node=node))
    parse_config(text)
    write_secret_text(data_dir / CONFIG_FILE, text)
    return NsNode(ns, data_dir, result.token, result.did)


async def wait_healthy(node: NsNode, context: ssl.SSLContext, deadline_s: float = 15.0) -> None:
    async with aiohttp.ClientSession() as session:

        async def healthy() -> bool:
            assert node.proc is not None
            if node.proc.returncode is not None:
                log = (node.data_dir / "node.log").read_text()[-2000:]
                raise AssertionError(f"node in {node.ns.name} exited with {node.proc.returncode}:\n{log}")
            try:
                async with session.get(f"{node.public_url}/healthz", ssl=context) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, deadline_s, what=f"the node in {node.ns.name} answering")


async def stop(node: NsNode) -> None:
    proc = node.proc
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def publish(provider: ManagementClient, target: str, uses: int, data_dir: Path | None = None) -> None:
    asset: dict[str, object] = {"id": target}
    if data_dir is not None:  # a file to transfer
        own = data_dir / "files" / data_dir.name  # the participant's own files (named as its node here)
        own.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"L{i},{i % 3}\n" for i in range(500))
        (own / f"{target}.csv").write_text("lot,defects\n" + rows)
        asset["dataAddress"] = {"type": "File", "path": f"{target}.csv"}
    await provider.add_asset(asset)
    await provider.add_policy(f"open-{target}", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.add_policy(f"rnd-{target}", templates.combine(templates.purpose(target, "R&D"),
                                                                 templates.max_uses(target, uses)))
    await provider.add_contract_definition(f"cd-{target}", access_policy_id=f"open-{target}",
                                           contract_policy_id=f"rnd-{target}", assets=[target])


async def agree(consumer: ManagementClient, provider_url: str, target: str) -> str:
    catalog = await consumer.catalog(provider_url)
    [dataset] = [d for d in catalog["dataset"] if ids.local_asset_id(catalog["participantId"], d["@id"]) == target]
    started = await consumer.negotiate(provider_url, dataset["hasPolicy"][0]["@id"])
    final = await consumer.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    return str(final["agreement"]["@id"])


# Each node runs inside its own network namespace, where the host's loopback (and a PostgreSQL server on it) is
# out of reach: these nodes keep their SQLite store under `make test-postgres` too.
@pytest.mark.sqlite_store
async def test_three_nodes_in_three_namespaces_over_https(namespaces, tmp_path):
    import trustme

    ca = trustme.CA()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    enterprise, sme, partner = (
        make_node(ns, tmp_path, ca, name, region)
        for ns, name, region in zip(namespaces, ("enterprise", "sme", "partner"), ("CN-GD", "CN-GD", "DE-BY"),
                                    strict=True))
    nodes = [enterprise, sme, partner]
    clients: list[ManagementClient] = []
    try:
        for node in nodes:
            log = (node.data_dir / "node.log").open("wb")
            node.proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", node.ns.name, sys.executable, "-m", "connector", "serve",
                "--dir", str(node.data_dir), stdout=log, stderr=subprocess.STDOUT)
            log.close()
        await asyncio.gather(*(wait_healthy(node, context) for node in nodes))
        ent, sme_c, partner_c = (ManagementClient(n.management_url, n.token, ca=tmp_path / "ca.pem") for n in nodes)
        clients += [ent, sme_c, partner_c]

        # DID documents over https from another host, and each peer's signed self-description verified.
        async with aiohttp.ClientSession() as session:
            for node in nodes:
                url = f"{node.public_url}/participants/{node.data_dir.name}/did.json"
                async with session.get(url, ssl=context) as resp:
                    assert resp.status == 200 and (await resp.json())["id"] == node.did
        verified = await sme_c.verify_peer(enterprise.did)
        assert verified["peer"]["id"] == enterprise.did
        assert (await partner_c.verify_peer(sme.public_url))["peer"]["id"] == sme.did

        # Negotiations across namespaces (each signed request verified against a did:web fetched over
        # https), then uses counted on the consumer's side.
        await publish(ent, "qi", uses=2, data_dir=enterprise.data_dir)
        await publish(sme_c, "parts", uses=1)
        agreement = await agree(sme_c, enterprise.public_url, "qi")
        other = await agree(partner_c, sme.public_url, "parts")
        # The data crosses the namespaces over https, verified chunk by chunk, into the SME's vault.
        transfer = await sme_c.start_transfer(agreement)
        done = await sme_c.transfer(transfer["id"], wait_s=20)
        assert done["state"] == "COMPLETED", done
        expected = (enterprise.data_dir / "files" / enterprise.data_dir.name / "qi.csv").read_bytes()
        data = b"".join([c async for c in sme_c.use_data(agreement, "u0", purpose="R&D")])
        assert data == expected
        assert [(await sme_c.use(agreement, f"u{i}", purpose="R&D"))["decision"] for i in range(1, 3)] == [
            "permit", "deny"]
        assert (await partner_c.use(other, "p1", purpose="R&D"))["decision"] == "permit"
        assert (await sme_c.usage(agreement))["uses"] == 2
    finally:
        for client in clients:
            await client.close()
        for node in nodes:
            await stop(node)
