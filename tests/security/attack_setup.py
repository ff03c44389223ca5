"""What the attacks need set up: an agreement with data in the consumer's vault, signed requests as a peer."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from connector.net import signing

CONTENT = b"lot,defects\nL1,0\nL2,3\n" * 1000


async def agreement_with_data(provider: Any, consumer: Any, policy: dict[str, Any], *, pull: bool = True) -> str:
    """Publish a file on *provider* under *policy*, negotiate it for *consumer*, and (with *pull*) pull it
    into the consumer's vault. Returns the agreement id."""
    root = provider.data_dir / "files" / provider.participant.name
    root.mkdir(parents=True, exist_ok=True)
    (root / "qi.csv").write_bytes(CONTENT)
    await provider.client.add_asset({"id": "qi", "contentType": "text/csv",
                                     "dataAddress": {"type": "File", "path": "qi.csv"}})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("terms", policy)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="terms",
                                                  assets=["qi"])
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    negotiation = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(negotiation["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    agreement = str(final["agreement"]["@id"])
    if pull:
        started = await consumer.client.start_transfer(agreement)
        done = await consumer.client.transfer(started["id"], wait_s=20)
        assert done["state"] == "COMPLETED", done
    return agreement


async def use(node: Any, token: str, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    """``POST …/usage`` with *token*: status, body bytes (the data, or a JSON answer) and headers."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s, s.post(
            f"{node.management_url}/api/management/v1/usage", json=body) as r:
        return r.status, await r.read(), dict(r.headers)


async def post_signed(participant: Any, url: str, body: Any) -> tuple[int, Any]:
    """A DSP request signed by *participant* (its real key): status and JSON answer."""
    raw = json.dumps(body).encode()
    headers = signing.sign_request("POST", url, raw, key=participant.keys.signing, key_id=participant.key_id,
                                   now=time.time(), headers={"Content-Type": "application/json"})
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def tds(node: Any, *args: str) -> tuple[int, str]:
    """Run the ``tds`` CLI against *node*'s management API with its token: exit code and output."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", *args, "--node", node.node.management_url, "--token", node.token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()
