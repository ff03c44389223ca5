"""A post-paid price per use, settled by a signed statement that either side can check offline.

The provider offers a table at 2.50 CNY per use for R&D; the price is a duty of the agreement both sign. The
consumer uses the data three times, and its node's signed receipts reach the provider. The provider closes the
stretch early and sends the signed statement; the consumer's node checks it against its own usage log on
arrival, and the consumer accepts it (countersigns). The exported bundle — statement, acceptance and both
parties' DID documents — verifies with no node and no network.

    python examples/settlement.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from connector.logging import configure
from connector.protocol.statements import verify_bundle
from connector.testing import NodeFactory, eventually
from usage_policies import templates


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="tds-example-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            provider = await nodes.start("acme", region="CN-GD")
            consumer = await nodes.start("parts", region="CN-GD-GZ")

            # The provider: an asset offered for R&D at 2.50 CNY per use, settled after use (post-paid).
            await provider.client.add_asset({"id": "qi", "title": "Quality inspection 2026"})
            await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
            await provider.client.add_policy("paid", templates.policy_from_options(
                ["R&D"], price=templates.price_duty("2.50", "CNY")))
            await provider.client.add_contract_definition("qi", access_policy_id="open", contract_policy_id="paid",
                                                          assets=["qi"])

            # The consumer negotiates as for any offer; the price is part of what both sign.
            offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
            started = await consumer.client.negotiate(provider.public_url, offer)
            negotiation = await consumer.client.negotiation(started["id"], wait_s=15)
            agreement = negotiation["agreement"]["@id"]
            print(f"negotiation {negotiation['state']}: 2.50 CNY per use for R&D")

            # Three uses; each is logged, signed and reported back to the provider as a receipt.
            for n in (1, 2, 3):
                decision = await consumer.client.use(agreement, f"report-{n}", purpose="R&D")
                assert decision["decision"] == "permit", decision

            async def receipts() -> int:
                held = int((await provider.client.usage_report(agreement))["receivedEntries"])
                return held if held >= 3 else 0

            held = await eventually(receipts, what="the receipts at the provider")
            print(f"3 uses made; {held} receipts reached the provider")

            # The provider closes the stretch now rather than at the end of the month.
            issued = await provider.client.issue_statement(agreement, until="now")
            print(f"statement issued for {issued['period']['label']}: {issued['total']} {issued['currency']} "
                  f"for {issued['quantities'].get('use', '0')} uses")

            # The consumer's node checks it against its own records on arrival; one that passes awaits an answer.
            async def received() -> dict[str, Any] | None:
                held = await consumer.client.statements(agreement=agreement)
                return next((s for s in held if s["id"] == issued["id"] and s["state"] != "issued"), None)

            arrived = await eventually(received, what="the statement at the consumer")
            print(f"consumer's node: statement {arrived['state']}, checked against its own usage log "
                  f"({arrived['total']} {arrived['currency']})")

            accepted = await consumer.client.accept_statement(issued["id"])
            print(f"consumer: statement {accepted['state']}")

            async def seen_accepted() -> dict[str, Any] | None:
                found = await provider.client.statement(issued["id"])
                return found if found["state"] == "accepted" else None

            seen = await eventually(seen_accepted, what="the acceptance at the provider")
            print(f"provider: statement {seen['state']} ({seen['total']} {seen['currency']})")

            # The bundle carries everything needed to check it: no node, no network.
            verified = verify_bundle(await consumer.client.export_statement(issued["id"]))
            print(f"exported bundle verified offline: {verified.total} {issued['currency']}, "
                  f"answer {verified.answer}, signatures verified")
        finally:
            await nodes.close()


if __name__ == "__main__":
    asyncio.run(main())
