"""A plant's defect rates, available but invisible: an industry partner computes with them, never sees them.

The provider offers its inspection table for computation only: the CSV is imported into a read-only table of
its data sandbox and the offer permits aggregate queries under a privacy budget. The partner negotiates as for
any offer, but no transfer is possible; it sends SQL instead. The provider checks each query against the
agreement, runs it next to the data, leaves out groups of fewer than ten records, adds noise, counts the query
in its own usage log and signs the result, which the partner's node verifies.

    python examples/sandbox_query.py
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

from connector.client import ClientError
from connector.logging import configure
from connector.services.usage import check_log
from connector.testing import NodeFactory
from usage_policies import templates

REGIONS = ("north", "south", "east", "west")


def inspection_csv(rows: int = 2000) -> str:
    """Defect rates per inspected lot: region, rate, plant; three lots from a plant on the islands."""
    rng = random.Random(2026)
    lines = ["region,defect_rate,plant_id"]
    for i in range(rows):
        region = "islands" if i < 3 else REGIONS[i % 4]
        lines.append(f"{region},{rng.uniform(0.01, 0.08) + 0.02 * (i % 4):.4f},{i % 25}")
    return "\n".join(lines) + "\n"


async def main() -> None:
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="tds-example-") as tmp:
        nodes = NodeFactory(Path(tmp), validate=False)
        try:
            provider = await nodes.start("acme", legal_name="ACME Precision Manufacturing Co.", region="CN-GD")
            partner = await nodes.start("parts", legal_name="Pearl River Parts Ltd.", region="CN-GD-GZ")

            # The provider: the CSV into the sandbox (defect_rate bounded to [0, 1]), offered for aggregates only,
            # at most epsilon 1 per query and 3 in all.
            data = provider.data_dir / "files" / provider.participant.name / "inspection.csv"
            data.parent.mkdir(exist_ok=True)
            data.write_text(inspection_csv())
            added = await provider.client.add_asset({
                "id": "inspection", "title": "Inspection results 2026", "contentType": "text/csv",
                "dataAddress": {"type": "File", "path": "inspection.csv"},
                "sandbox": True, "sandboxBounds": {"defect_rate": [0, 1]}})
            print(f"published for computation only: about {added['sandbox']['schema']['rows_rounded']} rows")
            await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
            await provider.client.add_policy("compute", templates.sandbox(
                "inspection", min_group_size=10, epsilon_per_query=1, epsilon_total=3))
            await provider.client.add_contract_definition("inspection", access_policy_id="open",
                                                          contract_policy_id="compute", assets=["inspection"])

            # The partner: the catalog shows the table's schema, not its rows; it negotiates as usual.
            [dataset] = (await partner.client.catalog(provider.public_url))["dataset"]
            schema = dataset["https://w3id.org/tds/v1#sandbox"]["@value"]
            print("columns:", ", ".join(f"{c['name']} ({c['type']})" for c in schema["columns"]))
            started = await partner.client.negotiate(provider.public_url, dataset["hasPolicy"][0]["@id"])
            agreement = (await partner.client.negotiation(started["id"], wait_s=15))["agreement"]["@id"]

            transfer = await partner.client.start_transfer(agreement)
            refused = await partner.client.transfer(transfer["id"], wait_s=15)
            why = "for computation only" if "computation only" in refused["reason"] else refused["reason"]
            print(f"transfer {refused['state']}: the provider's data is {why}")

            # Aggregates, noisy and signed; the islands' three lots are a group too small to come back.
            answer = await partner.client.query(agreement, "SELECT region, avg(defect_rate) AS rate FROM data "
                                                           "GROUP BY region ORDER BY region")
            for region, rate in answer["result"]["rows"]:
                print(f"  {region:6} average defect rate {rate:.3f}")
            result = answer["result"]
            # Under the budget a group leaves on its noisy count, and how many stayed in is not told.
            print(f"groups that left: {', '.join(row[0] for row in result['rows'])}; "
                  f"epsilon spent {result['epsilonSpent']}; signed by {answer['document']['provider']} (verified)")

            # The budget: two more queries fit, the fourth is refused with the reason.
            for n in (2, 3, 4):
                try:
                    await partner.client.query(agreement, "SELECT count(*) FROM data")
                    print(f"query {n}: answered")
                except ClientError as exc:
                    print(f"query {n}: refused ({exc.body['rule']}): {exc.message}")

            # The provider's own usage log counts every query, signed and chained.
            log = await provider.client.usage_log(agreement)
            intact = check_log(log["entries"], log["heads"], log["didDocument"]) is None
            uses = sum(e["decision"] == "permit" for e in log["entries"])
            print(f"provider's usage log: {len(log['entries'])} entries, {uses} queries counted, "
                  f"{'intact' if intact else 'BROKEN'}")
        finally:
            await nodes.close()


if __name__ == "__main__":
    asyncio.run(main())
