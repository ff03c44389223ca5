"""A peer established abroad that declares a region at home in its own self-description.

The self-description is signed by the peer's own key: it proves who said it, not that it is true. Export
control counts only a region that a credential by an issuer the provider trusts for regions vouches for, so a
peer in Germany that writes ``CN-GD`` into its self-description is refused core data wherever data could start
to flow — the catalog (the offer is not shown), the negotiation (terminated) and the transfer start
(terminated) — with a reason naming the missing verified region. Real nodes on 127.0.0.1.
"""

from __future__ import annotations

import msgspec

from connector.store.records import Asset
from connector.testing import RunningNode, eventually

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
MISSING = "no verified region: no credential from an issuer trusted for regions"


async def _publish(provider: RunningNode, data_class: str) -> None:
    files = provider.data_dir / "files" / provider.participant.name
    files.mkdir(parents=True, exist_ok=True)
    (files / "line-7.csv").write_text("station,temperature\n1,231.5\n")
    await provider.client.add_asset({"id": "line-7", "title": "Line 7 process parameters", "dataClass": data_class,
                                     "dataAddress": {"type": "File", "path": "line-7.csv"}})


async def _space(nodes):
    """A provider in Guangdong (the default rule: core data stays in CN), a registry it trusts for regions, a
    domestic peer the registry vouches for, and the attacker: in Germany, its self-description says CN-GD."""
    provider = await nodes.start("acme", region="CN-GD")
    registry = await nodes.start("registry", legal_name="Enterprise Registry", region="CN-GD")
    domestic = await nodes.start("parts", region="CN-GD")
    attacker = await nodes.start("mallory", legal_name="Mallory GmbH", region="CN-GD")
    issued = await registry.client.issue_credential(domestic.participant.did, "region", {"region": "CN-GD"})
    await registry.client.deliver_credential(issued["id"])
    await provider.client.trust_issuer(registry.participant.did, ["region"])
    await provider.client.add_policy("open", OPEN)
    return provider, registry, domestic, attacker


async def _ask_anyway(attacker: RunningNode, provider: RunningNode) -> dict:
    """The attacker requests the offer it learnt elsewhere; its negotiation once it has ended."""
    offer_id = "cd:line-7:guessed"  # the contract definition and the dataset: all the provider reads first
    record = await attacker.node.negotiations.request(
        attacker.participant, provider.participant.dsp_base, provider.participant.did,
        {"@id": offer_id, "@type": "Offer", "permission": [{"action": "use"}]}, offer_id, "line-7")
    return await attacker.client.negotiation(record.id, wait_s=15)  # type: ignore[no-any-return]


async def test_a_self_asserted_region_is_refused_core_data_at_catalog_and_negotiation(nodes):
    provider, _, domestic, attacker = await _space(nodes)
    await _publish(provider, "core")
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["line-7"])
    for peer in (domestic, attacker):  # the handshake: self-descriptions, then presentations
        verified = await peer.client.verify_peer(provider.public_url)
        assert verified["peer"]["region"] == "CN-GD"
    # the attacker's self-description reached the provider as written: CN-GD, self-asserted
    [known] = [p for p in await provider.client.peers() if p["did"] == attacker.participant.did]
    assert known["region"] == "CN-GD"

    # catalog: the domestic peer, vouched for, sees the core dataset; the attacker does not
    assert len((await domestic.client.catalog(provider.public_url)).get("dataset", [])) == 1
    assert (await attacker.client.catalog(provider.public_url)).get("dataset", []) == []

    # negotiation: asked for anyway, it is terminated, naming the missing verified region
    final = await _ask_anyway(attacker, provider)
    assert final["state"] == "TERMINATED"
    assert "export control: data classed 'core' may not leave CN" in final["reason"]
    assert MISSING in final["reason"]
    assert "its self-description states CN-GD: self-asserted, which does not count" in final["reason"]
    assert await provider.client.agreements() == []


async def test_a_region_credential_from_an_untrusted_issuer_does_not_count_either(nodes):
    provider, _, _, attacker = await _space(nodes)
    # the attacker vouches for itself: a credential it issued about its own DID
    issued = await attacker.client.issue_credential(attacker.participant.did, "region", {"region": "CN-GD"})
    await attacker.client.import_credential(issued["document"])
    await _publish(provider, "core")
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["line-7"])
    await attacker.client.verify_peer(provider.public_url)
    assert (await attacker.client.catalog(provider.public_url)).get("dataset", []) == []
    final = await _ask_anyway(attacker, provider)
    assert final["state"] == "TERMINATED" and MISSING in final["reason"]
    [shown] = await provider.client.peer_claims(attacker.participant.did)
    assert shown["counted"] == [] and "not trusted" in shown["notCounted"][0]["reason"]


async def test_a_verified_region_abroad_wins_over_the_declared_one(nodes):
    provider, registry, _, attacker = await _space(nodes)
    issued = await registry.client.issue_credential(attacker.participant.did, "region", {"region": "DE-BY"})
    await registry.client.deliver_credential(issued["id"])
    await _publish(provider, "core")
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["line-7"])
    await attacker.client.verify_peer(provider.public_url)
    assert (await attacker.client.catalog(provider.public_url)).get("dataset", []) == []
    final = await _ask_anyway(attacker, provider)
    assert final["state"] == "TERMINATED"
    assert f"the recipient is in DE-BY (verified by {registry.participant.did})" in final["reason"]


async def test_a_self_asserted_region_is_refused_core_data_at_transfer_start(nodes):
    provider, _, _, attacker = await _space(nodes)
    # The data is general when the attacker agrees to it (no rule applies, so no verified region is needed) ...
    await _publish(provider, "general")
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open",
                                                  assets=["line-7"])
    await attacker.client.verify_peer(provider.public_url)
    [dataset] = (await attacker.client.catalog(provider.public_url))["dataset"]
    started = await attacker.client.negotiate(provider.public_url, dataset["hasPolicy"][0]["@id"])
    agreed = await attacker.client.negotiation(started["id"], wait_s=15)
    assert agreed["state"] == "FINALIZED", agreed
    # ... then the provider classes it core: the transfer start checks export control again. (The asset's row is
    # rewritten here: an asset an agreement needs cannot be deleted and added again.)
    contracts, acme = provider.node.contracts, provider.participant.id
    line_7 = await contracts.entry(acme, Asset, "line-7")
    await contracts.replace_asset(acme, msgspec.structs.replace(line_7, data_class="core"))
    record = await attacker.client.start_transfer(agreed["agreement"]["@id"])
    final = await attacker.client.transfer(record["id"], wait_s=15)
    assert final["state"] == "TERMINATED"
    assert "export control: data classed 'core' may not leave CN" in final["reason"] and MISSING in final["reason"]

    async def provider_terminated() -> bool:
        return [t["state"] for t in await provider.client.transfers()] == ["TERMINATED"]

    await eventually(provider_terminated)
