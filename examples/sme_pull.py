"""An SME pulls a dataset it may use for R&D only.

The provider offers inspection data under a purpose policy. The SME negotiates, pulls the data straight
from the provider (every chunk checked against the provider's signed manifest before it is sealed into its
vault), has it released through the usage API for R&D, and checks it against the evidence bundle its node kept.

    python examples/sme_pull.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from connector.logging import configure
from connector.payload import manifest as manifests
from connector.testing import NodeFactory
from usage_policies import templates


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="tds-example-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            provider = await nodes.start("acme", legal_name="ACME Precision Manufacturing Co.", region="CN-GD")
            sme = await nodes.start("parts", legal_name="Pearl River Parts Ltd.", region="CN-GD-GZ")

            # The provider's side: a file in its own files folder, offered for R&D use only.
            data = provider.data_dir / "files" / provider.participant.name / "inspection.csv"
            data.parent.mkdir(exist_ok=True)
            data.write_text("part,defects\n" + "".join(f"P-{i},{i % 5}\n" for i in range(5000)))
            await provider.client.add_asset({"id": "inspection", "title": "Inspection results",
                                             "contentType": "text/csv",
                                             "dataAddress": {"type": "File", "path": "inspection.csv"}})
            await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
            await provider.client.add_policy("rnd", templates.purpose("inspection", "R&D"))
            await provider.client.add_contract_definition("inspection", access_policy_id="open",
                                                          contract_policy_id="rnd", assets=["inspection"])

            # The SME: browse, negotiate, pull.
            catalog = await sme.client.catalog(provider.public_url)
            offer = catalog["dataset"][0]["hasPolicy"][0]
            print(f"offer {offer['@id']}: {offer['permission'][0]['constraint']}")
            started = await sme.client.negotiate(provider.public_url, offer["@id"])
            agreement = (await sme.client.negotiation(started["id"], wait_s=15))["agreement"]["@id"]
            transfer = await sme.client.start_transfer(agreement)
            final = await sme.client.transfer(transfer["id"], wait_s=30)
            print(f"transfer {final['state']}: {final['received']} bytes in the vault at {final['vaultPath']}")
            assert final["state"] == "COMPLETED"

            # The vault keeps it encrypted at rest; the usage API decides, logs, then releases the plaintext.
            stored = (sme.data_dir / final["vaultPath"]).read_bytes()
            assert b"part,defects" not in stored
            payload = b"".join([c async for c in sme.client.use_data(agreement, "check-1", purpose="R&D")])
            print(f"{len(stored)} bytes sealed in the vault; {len(payload)} bytes released for R&D")

            # Check of the released data against the signed manifest (what `tds manifest verify` does).
            bundle = await sme.client.transfer_bundle(transfer["id"])
            manifest, _envelope, binding = manifests.read_bundle(bundle)
            chunks = [payload[i:i + manifest.chunk_size] for i in range(0, len(payload), manifest.chunk_size)]
            assert len(payload) == manifest.size
            assert all(manifests.chunk_ok(manifest, i, c) for i, c in enumerate(chunks))
            print(f"payload matches manifest {manifests.digest(manifest)} signed by {binding.provider}")
        finally:
            await nodes.close()


if __name__ == "__main__":
    asyncio.run(main())
