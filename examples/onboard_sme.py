"""A leading enterprise onboards an SME partner onto its own node.

The enterprise's operator (admin token) hosts the SME as a participant of its own: its own did:web, keys,
catalog and tokens. The SME then creates a token for its application and publishes a dataset, which the
enterprise — a separate participant on the same node — finds and agrees to use, exactly as with a peer
elsewhere.

    python examples/onboard_sme.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from connector.client import ManagementClient
from connector.logging import configure
from connector.testing import NodeFactory


async def main() -> None:
    configure("warning")  # the nodes' own log lines would drown the story
    with tempfile.TemporaryDirectory(prefix="tds-example-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            # One node, run by the enterprise (in production: `tds init` + `tds serve`).
            enterprise = await nodes.start("acme", legal_name="ACME Precision Manufacturing Co.", region="CN-GD")
            admin = nodes.client(enterprise, enterprise.admin_token)

            # 1. Host the SME: it gets its own identity and a first token, shown once.
            added = await admin.add_participant("lingnan-sensors", legal_name="Lingnan Sensors Ltd.",
                                                region="CN-GD-FS", industry="electronics")
            sme = ManagementClient(enterprise.node.management_url, added["token"])
            me = await sme.participant()
            print(f"hosted {me['legalName']} as {me['did']}")

            # 2. The SME gives its own application a token of its own, and publishes a dataset.
            app_token = (await sme.create_token("calibration-service"))["token"]
            app = ManagementClient(enterprise.node.management_url, app_token)
            await app.add_asset({"id": "calibration-2026", "title": "Sensor calibration curves 2026"})
            await app.add_policy("members", {"@type": "Set", "permission": [{"action": "use"}]})
            await app.add_policy("rnd", {"@type": "Set", "permission": [{"action": "use", "constraint": [
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"}]}]})
            await app.add_contract_definition("calibration", access_policy_id="members",
                                              contract_policy_id="rnd", assets=["calibration-2026"])

            # 3. The enterprise (its own participant on the same node) finds the offer and negotiates,
            #    over the node's public URL, through the full protocol.
            catalog = await enterprise.client.catalog(me["dspEndpoint"])
            offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
            started = await enterprise.client.negotiate(me["dspEndpoint"], offer)
            final = await enterprise.client.negotiation(started["id"], wait_s=15)
            print(f"negotiation {final['state']}: agreement {final['agreement']['@id']}")
            assert final["state"] == "FINALIZED"

            # 4. The SME's data is its own: the enterprise's token cannot see it.
            assert [a["id"] for a in await enterprise.client.entries("assets")] == []
            print("the enterprise's own token sees none of the SME's assets")
            for client in (sme, app):
                await client.close()
        finally:
            await nodes.close()


if __name__ == "__main__":
    asyncio.run(main())
