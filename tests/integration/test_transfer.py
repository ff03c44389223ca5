"""Transfer processes and the pull data plane between real nodes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os

import pytest

from connector.payload import manifest as manifests

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def agreed(provider, consumer, *, size=3 * 1024 * 1024 + 123, contract=OPEN, name="qi.bin"):
    """Publish a file on the provider, negotiate it; return (agreement id, the file's bytes' SHA-256)."""
    files = provider.data_dir / "files"
    files.mkdir(exist_ok=True)
    data = os.urandom(size)
    (files / name).write_bytes(data)
    await provider.client.add_asset({"id": "qi-2026", "title": "QI", "contentType": "application/octet-stream",
                                     "dataAddress": {"type": "File", "path": name}})
    await provider.client.add_policy("open", OPEN)
    await provider.client.add_policy("contract", contract)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="contract",
                                                  assets=["qi-2026"])
    catalog = await consumer.client.catalog(provider.public_url)
    offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=10)
    assert final["state"] == "FINALIZED", final
    return final["agreement"]["@id"], hashlib.sha256(data).hexdigest()


def vault_files(node):
    root = node.data_dir / "vault"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_pull_transfer_completes_and_payload_verifies(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement_id, sha = await agreed(provider, consumer)
    started = await consumer.client.start_transfer(agreement_id)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "COMPLETED", final
    assert "token" not in str(final).lower() or "tokenExpiresAt" in final
    path = consumer.data_dir / final["vaultPath"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    bundle = await consumer.client.transfer_bundle(started["id"])
    manifest, _, binding = manifests.read_bundle(bundle)
    assert binding.agreement_id == agreement_id and binding.consumer == consumer.participant.did
    assert manifest.size == path.stat().st_size
    [theirs] = await provider.client.transfers()
    assert theirs["state"] == "COMPLETED"
    assert [p for p in vault_files(consumer) if "/." in p] == []


@pytest.mark.parametrize("path", ["../tds.toml", "/etc/passwd"])
async def test_data_address_outside_the_roots_is_refused(nodes, path):
    provider = await nodes.start("acme")
    from connector.client import ClientError

    with pytest.raises(ClientError) as info:
        await provider.client.add_asset({"id": "x", "dataAddress": {"type": "File", "path": path}})
    assert info.value.status == 400
