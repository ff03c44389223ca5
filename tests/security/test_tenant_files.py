"""Attacks by a hosted tenant on other tenants' files and the node's own folders through asset addresses.

Each participant publishes files from its own ``files/NAME/`` (and folders the operator gave to it alone);
nothing else of the node's data folder, and nothing of another participant, is ever an asset's file.
"""

from __future__ import annotations

import msgspec
import pytest

from connector.client import ClientError
from connector.config import CONFIG_FILE, ConfigError, parse_config, render_config
from connector.testing import eventually, store_connection

SECRET = b"B's confidential supplier prices\n"


async def _two_tenants(nodes):
    host = await nodes.start("host")
    a, b = await nodes.host(host, "tenant-a"), await nodes.host(host, "tenant-b")
    secret = host.data_dir / "files" / "tenant-b" / "prices.csv"
    secret.write_bytes(SECRET)
    return host, a, b, secret


async def _refused(client, path: str) -> ClientError:
    with pytest.raises(ClientError) as info:
        await client.add_asset({"id": "stolen", "dataAddress": {"type": "File", "path": path}})
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "symlinked-folder"])
async def test_a_tenant_cannot_publish_another_tenants_file(nodes, how):
    host, a, _, secret = await _two_tenants(nodes)
    own = host.data_dir / "files" / "tenant-a"
    if how == "absolute":
        path = str(secret)
    elif how == "dotdot":
        path = "../tenant-b/prices.csv"
    elif how == "symlink":
        (own / "innocent.csv").symlink_to(secret)
        path = "innocent.csv"
    else:
        (own / "shared").symlink_to(secret.parent)
        path = "shared/prices.csv"
    await _refused(a.client, path)
    assert await a.client._call("GET", "/assets") == []


@pytest.mark.parametrize("target", ["tds.db", "node.key", "admin.token", "tds.toml", "keys", "vault"])
async def test_a_tenant_cannot_publish_the_nodes_own_files(nodes, target):
    host, a, _, _ = await _two_tenants(nodes)
    path = host.data_dir / target
    if path.is_dir():
        path = next((p for p in path.rglob("*") if p.is_file()), path)
    await _refused(a.client, str(path))


async def test_an_assigned_root_that_covers_the_data_folder_still_hides_the_nodes_files(nodes, tmp_path):
    host, a, _, secret = await _two_tenants(nodes)
    # An operator's slip: the node's whole parent folder given to tenant-a as a further root.
    host.node.transfers.data_roots = {"tenant-a": [str(tmp_path)]}
    outside = tmp_path / "exports" / "tenant-a-report.csv"
    outside.parent.mkdir()
    outside.write_text("lot,defects\n")
    assert (await a.client.add_asset({"id": "report", "dataAddress": {"type": "File", "path": str(outside)}}))
    for path in (secret, host.data_dir / "tds.db", host.data_dir / "admin.token"):
        await _refused(a.client, str(path))


async def test_another_participants_assigned_root_is_refused_even_where_roots_overlap(nodes, tmp_path):
    host, a, b, _ = await _two_tenants(nodes)
    shared = tmp_path / "srv"
    (shared / "b").mkdir(parents=True)
    (shared / "b" / "plan.csv").write_text("b's plan\n")
    host.node.transfers.data_roots = {"tenant-a": [str(shared)], "tenant-b": [str(shared / "b")]}
    await _refused(a.client, str(shared / "b" / "plan.csv"))
    assert await b.client.add_asset({"id": "plan", "dataAddress": {"type": "File", "path": str(shared / "b" /
                                                                                            "plan.csv")}})


async def test_a_tenant_publishes_its_own_files(nodes):
    host, a, _, _ = await _two_tenants(nodes)
    (host.data_dir / "files" / "tenant-a" / "mine.csv").write_text("lot,defects\n")
    added = await a.client.add_asset({"id": "mine", "dataAddress": {"type": "File", "path": "mine.csv"}})
    assert added["id"] == "mine"


async def test_node_wide_data_roots_are_refused_with_the_replacement(tmp_path):
    from connector.bootstrap import init_node

    result = init_node(tmp_path / "n", name="acme", legal_name="Acme", port=0, region="CN-GD", dev_mode=True)
    text = render_config(result.config).replace("[node]\n", '[node]\ndata_roots = ["/srv/shared"]\n', 1)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.path == "node.data_roots" and "[data_roots]" in info.value.message
    # What `tds init` used to write (an empty list) still loads.
    assert parse_config(render_config(result.config).replace("[node]\n", "[node]\ndata_roots = []\n", 1))
    assert (tmp_path / "n" / CONFIG_FILE).exists()


async def test_legacy_files_move_into_their_owners_folder_at_start(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    own = provider.data_dir / "files" / "acme"
    (own / "qi.csv").write_bytes(b"lot,defects\nL1,0\n")
    await provider.client.add_asset({"id": "qi", "dataAddress": {"type": "File", "path": "qi.csv"}})
    await provider.node.stop()
    # As a node before per-participant folders kept it: the file in the node-wide files/ folder.
    (own / "qi.csv").rename(provider.data_dir / "files" / "qi.csv")
    await nodes.restart(provider)
    assert (own / "qi.csv").read_bytes() == b"lot,defects\nL1,0\n"
    assert not (provider.data_dir / "files" / "qi.csv").exists()
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["qi"])
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    negotiation = await consumer.client.negotiate(provider.public_url, offer)
    agreement = (await consumer.client.negotiation(negotiation["id"], wait_s=15))["agreement"]["@id"]
    started = await consumer.client.start_transfer(agreement)

    async def completed():
        return (await consumer.client.transfer(started["id"]))["state"] == "COMPLETED"

    await eventually(completed)


async def test_a_legacy_asset_naming_another_tenants_file_is_not_moved_and_not_served(nodes):
    host, a, _, secret = await _two_tenants(nodes)
    consumer = await nodes.start("parts")
    (host.data_dir / "files" / "tenant-a" / "ok.csv").write_text("x\n")
    await a.client.add_asset({"id": "sneaky", "dataAddress": {"type": "File", "path": "ok.csv"}})
    await a.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await a.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                           assets=["sneaky"])
    await host.node.stop()
    # A row written before confinement existed: tenant-a's asset names tenant-b's file.
    with store_connection(host.data_dir) as db:
        db.execute("UPDATE assets SET data_address = ? WHERE participant_id = 'tenant-a' AND id = 'sneaky'",
                   [msgspec.json.encode({"type": "File", "path": str(secret)}).decode()])
    await nodes.restart(host)
    assert secret.read_bytes() == SECRET  # left where it is, its owner's
    offer = (await consumer.client.catalog(a.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    negotiation = await consumer.client.negotiate(a.public_url, offer)
    agreement = (await consumer.client.negotiation(negotiation["id"], wait_s=15))["agreement"]["@id"]
    started = await consumer.client.start_transfer(agreement)
    final = await consumer.client.transfer(started["id"], wait_s=20)
    assert final["state"] == "TERMINATED" and "outside" in final["reason"], final
    vault = consumer.data_dir / "vault"
    assert not any(p.is_file() and p.stat().st_size > 0 and not p.name.startswith(".") for p in vault.rglob("*")
                   if "bundle" not in p.name)
