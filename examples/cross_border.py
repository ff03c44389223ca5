"""A cross-border refusal: core data of a node in China does not go to a partner in Germany.

The provider's node keeps the default export rule that `tds init` writes for a node in China (data
classed ``core`` or ``personal`` stays in ``CN``). The rule reads a recipient's region only from a credential
by an issuer the provider trusts for regions — here an enterprise registry — never from what the recipient
says of itself. A domestic SME sees and gets the dataset; the foreign partner does not see it in the catalog,
and a request made anyway is refused with the rule as reason.

    python examples/cross_border.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from connector.logging import configure
from connector.testing import NodeFactory


async def main() -> None:
    configure("warning")  # the nodes' own log lines would drown the story
    with tempfile.TemporaryDirectory(prefix="tds-example-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            provider = await nodes.start("acme", legal_name="ACME Precision Manufacturing Co.", region="CN-GD")
            domestic = await nodes.start("parts", legal_name="Pearl River Parts Ltd.", region="CN-GD-GZ")
            foreign = await nodes.start("partner", legal_name="Bavaria Maschinen GmbH", region="DE-BY")
            registry = await nodes.start("registry", legal_name="Enterprise Registry", region="CN-GD")
            rules = provider.node.config.export_control
            print("provider's export rules:", [(r.region, r.data_classes) for r in rules])

            # The registry vouches for each company's region of establishment with a signed credential, which
            # it delivers to the company's node; the provider trusts the registry for regions (for nothing else).
            for company, region in ((domestic, "CN-GD"), (foreign, "DE-BY")):
                issued = await registry.client.issue_credential(company.participant.did, "region", {"region": region})
                await registry.client.deliver_credential(issued["id"])
                print(f"registry vouches: {company.participant.record.legal_name} is established in {region}")
            await provider.client.trust_issuer(registry.participant.did, ["region"])

            await provider.client.add_asset({"id": "line-7-process", "title": "Line 7 process parameters",
                                             "dataClass": "core"})
            await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
            await provider.client.add_contract_definition("line-7", access_policy_id="open",
                                                          contract_policy_id="open", assets=["line-7-process"])
            for peer in (domestic, foreign):  # the handshake: each presents its credentials to the provider
                await peer.client.verify_peer(provider.public_url)

            seen = (await domestic.client.catalog(provider.public_url)).get("dataset", [])
            print(f"domestic SME sees {[d['@id'] for d in seen]}")
            hidden = (await foreign.client.catalog(provider.public_url)).get("dataset", [])
            print(f"foreign partner sees {[d['@id'] for d in hidden]}")
            line_7 = f"urn:tds:asset:{provider.participant.did}:line-7-process"  # datasets have absolute ids
            assert [d["@id"] for d in seen] == [line_7] and hidden == []

            # The partner learnt the offer id elsewhere and asks anyway: the provider refuses, with the reason.
            offer = seen[0]["hasPolicy"][0]["@id"]
            participant = foreign.participant
            dsp = provider.participant.dsp_base
            record = await foreign.node.negotiations.request(
                participant, dsp, provider.participant.did,
                {"@id": offer, "@type": "Offer", "permission": [{"action": "use"}]}, offer, "line-7-process")
            final = await foreign.client.negotiation(record.id, wait_s=15)
            print(f"foreign partner's negotiation: {final['state']}: {final['reason']}")
            assert final["state"] == "TERMINATED" and "export control" in final["reason"]
        finally:
            await nodes.close()


if __name__ == "__main__":
    asyncio.run(main())
