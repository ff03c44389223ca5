"""An application reads received data through the usage API — the only way to it on the consumer's node.

The application has a management token of its own (named after it). Each read names the agreement, the
purpose and a use id of the application's choosing; the node decides with the agreement's policy, logs
the decision and counts the use before it releases a byte. A retry with the same use id is not counted
twice; a use for another purpose, or over the limit, is refused with the policy's reasons.

    python examples/usage_app.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from connector.client import ClientError, ManagementClient
from connector.logging import configure
from connector.testing import NodeFactory
from usage_policies import templates


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="tds-example-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            provider = await nodes.start("acme", region="CN-GD")
            consumer = await nodes.start("parts", region="CN-GD-GZ")
            own = provider.data_dir / "files" / provider.participant.name  # the provider's own files
            own.mkdir(parents=True, exist_ok=True)
            (own / "yield.csv").write_text("lot,yield\nL1,0.97\nL2,0.95\n")
            await provider.client.add_asset({"id": "yield", "contentType": "text/csv",
                                             "dataAddress": {"type": "File", "path": "yield.csv"}})
            await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
            await provider.client.add_policy("terms", templates.combine(
                templates.purpose("yield", "R&D"), templates.max_uses("yield", 2), templates.log_each_use("yield")))
            await provider.client.add_contract_definition("y", access_policy_id="open", contract_policy_id="terms",
                                                          assets=["yield"])
            offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
            started = await consumer.client.negotiate(provider.public_url, offer)
            agreement = (await consumer.client.negotiation(started["id"], wait_s=15))["agreement"]["@id"]
            transfer = await consumer.client.start_transfer(agreement)
            await consumer.client.transfer(transfer["id"], wait_s=30)

            # The application gets a token of its own: its name is what the usage log records.
            token = (await consumer.client.create_token("yield-dashboard"))["token"]
            app = ManagementClient(consumer.node.management_url, token)

            async def read(use_id: str, purpose: str) -> None:
                try:
                    data = b"".join([c async for c in app.use_data(agreement, use_id, purpose=purpose)])
                    print(f"{use_id} ({purpose}): {len(data)} bytes")
                except ClientError as exc:
                    print(f"{use_id} ({purpose}): refused: {exc.message}")

            await read("morning-report", "R&D")
            await read("morning-report", "R&D")      # a retry: the same decision, not counted again
            await read("sales-deck", "marketing")    # another purpose: refused
            await read("evening-report", "R&D")
            await read("night-report", "R&D")        # over the limit of 2: refused
            summary = await app.usage(agreement)
            print(f"uses counted: {summary['uses']}; latest: "
                  + ", ".join(f"{e['decision']} [{e['application']}]" for e in summary["latest"]))
            await app.close()
        finally:
            await nodes.close()


if __name__ == "__main__":
    asyncio.run(main())
