"""Settlement between two nodes: the provider issues a statement of an agreement's post-paid prices from the
consumer's signed receipts and its own records, the consumer's node checks it against its own log, and the
operator accepts it; a stretch is settled once; a statement exported verifies offline; a per-GB price bills the
transfers completed and a per-query price the sandbox queries answered; a host's platform share shows in the
statement and in the host's report; a disputed stretch is issued again; a statement reaches a consumer that was
offline; and the node issues a statement by itself once its billing period has ended."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
from console_pages import agree_to_first_offer
from test_sandbox import ASSET, GROUP_BY, negotiated, publish

from connector.http.management import PREFIX
from connector.protocol import statements
from connector.testing import eventually
from usage_policies import pricing, templates

CONTENT = b"lot,defects\nL1,0\nL2,3\n" * 1000


async def api(who: Any, method: str, path: str, body: Any = None, *, token: str | None = None
              ) -> tuple[int, Any]:
    """A management call as *who* (a node or a hosted participant, with its token unless *token* is given): the
    status and the answer (JSON, or the text of any other media type)."""
    headers = {"Authorization": f"Bearer {token or who.token}"}
    async with aiohttp.ClientSession(headers=headers) as s, s.request(
            method, f"{who.node.management_url}{PREFIX}{path}", json=body) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def priced_agreement(provider: Any, consumer: Any, duty: dict[str, Any], *, data: bool = False) -> str:
    """Offer an asset of *provider*'s under a use permission with the price *duty*, negotiate it for *consumer*
    (with *data*: a file asset, pulled into the consumer's vault), and return the agreement id."""
    asset: dict[str, Any] = {"id": "qi"}
    if data:
        root = provider.data_dir / "files" / provider.participant.name
        root.mkdir(parents=True, exist_ok=True)
        (root / "qi.csv").write_bytes(CONTENT)
        asset.update(contentType="text/csv", dataAddress={"type": "File", "path": "qi.csv"})
    await provider.client.add_asset(asset)
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("priced", {"@type": "Set", "permission": [{"action": "use", "duty": [duty]}]})
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="priced",
                                                  assets=["qi"])
    agreement, _ = await agree_to_first_offer(provider, consumer)
    return agreement


async def used(provider: Any, consumer: Any, agreement: str, uses: int) -> None:
    """*uses* counted uses of the agreement on the consumer's node, their receipts held by the provider."""
    for i in range(uses):
        assert (await consumer.client.use(agreement, f"u{i}"))["decision"] == "permit"

    async def received() -> bool:
        return (await provider.client.usage_report(agreement))["receivedEntries"] == uses

    await eventually(received, what="the receipts at the provider")


async def issued(provider: Any, agreement: str) -> dict[str, Any]:
    status, body = await api(provider, "POST", "/statements", {"agreement": agreement, "until": "now"})
    assert status == 201, body
    return dict(body)


async def in_state(who: Any, statement_id: str, state: str) -> dict[str, Any]:
    """The statement as *who* shows it, once it is in *state*."""

    async def check() -> dict[str, Any] | None:
        status, body = await api(who, "GET", f"/statements/{statement_id}")
        return body if status == 200 and body["state"] == state else None

    return dict(await eventually(check, what=f"statement {statement_id} {state}"))


async def settled(provider: Any, consumer: Any, agreement: str) -> dict[str, Any]:
    """A statement issued up to now, received by the consumer, accepted, and the acceptance at the provider."""
    statement = await issued(provider, agreement)
    await in_state(consumer, statement["id"], "received")
    status, body = await api(consumer, "POST", f"/statements/{statement['id']}/accept")
    assert status == 200 and body["state"] == "accepted", body
    return await in_state(provider, statement["id"], "accepted")


async def test_a_statement_of_uses_is_received_with_the_same_total_and_accepted(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced_agreement(provider, consumer, templates.price_duty("2.50", "CNY"))
    await used(provider, consumer, agreement, 3)
    statement = await issued(provider, agreement)
    assert statement["role"] == "provider" and statement["state"] in ("issued", "delivered")
    assert statement["quantities"] == {"use": "3"} and statement["total"] == "7.50"
    assert statement["currency"] == "CNY" and statement["counterparty"] == consumer.participant.did

    received = await in_state(consumer, statement["id"], "received")
    assert received["role"] == "consumer" and received["total"] == "7.50" and received["reason"] == ""
    assert received["document"]["receipts"]["first"] == 1 and received["document"]["receipts"]["last"] == 3
    status, accepted = await api(consumer, "POST", f"/statements/{statement['id']}/accept")
    assert status == 200 and accepted["state"] == "accepted"

    at_provider = await in_state(provider, statement["id"], "accepted")
    assert at_provider["answer"]["@type"] == statements.ACCEPTANCE_TYPE
    assert at_provider["answer"]["statementDigest"] == statements.digest(at_provider["document"])
    status, listed = await api(consumer, "GET", f"/statements?agreement={agreement}&role=consumer")
    assert status == 200 and [s["id"] for s in listed["statements"]] == [statement["id"]]


async def test_a_second_statement_for_the_same_stretch_is_refused(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced_agreement(provider, consumer, templates.price_duty("2.50", "CNY"))
    await used(provider, consumer, agreement, 1)
    first = await settled(provider, consumer, agreement)
    status, body = await api(provider, "POST", "/statements",
                             {"agreement": agreement, "until": first["period"]["end"]})
    assert status == 409 and first["id"] in body["message"] and "accepted" in body["message"], body


async def test_an_exported_statement_verifies_offline_and_as_csv_has_its_lines(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced_agreement(provider, consumer, templates.price_duty("2.50", "CNY"))
    await used(provider, consumer, agreement, 2)
    statement = await settled(provider, consumer, agreement)

    status, bundle = await api(consumer, "GET", f"/statements/{statement['id']}/export?format=json")
    assert status == 200
    verified = statements.verify_bundle(json.loads(json.dumps(bundle)))
    assert verified.statement == statement["id"] and verified.total == "5.00" and verified.answer == "accepted"

    status, text = await api(provider, "GET", f"/statements/{statement['id']}/export?format=csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert status == 200 and [(r["basis"], r["quantity"], r["unit_price"], r["amount"], r["currency"], r["state"])
                              for r in rows] == [("use", "2", "2.50", "5.00", "CNY", "accepted")]
    assert rows[0]["statement"] == statement["id"] and rows[0]["agreement"] == agreement


async def test_a_per_gigabyte_price_bills_the_completed_transfer_by_its_size(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced_agreement(provider, consumer, templates.price_duty("1000", "CNY", per="gigabyte"),
                                       data=True)
    started = await consumer.client.start_transfer(agreement)
    done = await consumer.client.transfer(started["id"], wait_s=20)
    assert done["state"] == "COMPLETED", done

    async def completed_at_provider() -> bool:
        return any(t["state"] == "COMPLETED" for t in await provider.client.transfers())

    await eventually(completed_at_provider, what="the transfer completed at the provider")
    statement = await issued(provider, agreement)
    size = len(CONTENT)
    assert statement["quantities"] == {"gigabyte": pricing.amount_text(pricing.gigabytes(size))}
    assert Decimal(statement["total"]) == (Decimal(size) * 1000 / 10**9).quantize(Decimal("0.01"))
    received = await in_state(consumer, statement["id"], "received")
    assert received["document"]["transfers"] == [{"providerPid": done["providerPid"], "bytes": size}]


async def test_a_platform_share_shows_in_the_statement_and_the_hosts_report_sums_it(nodes):
    host, consumer = await nodes.start("hub"), await nodes.start("parts")
    sme = await nodes.host(host, "sme")
    status, body = await api(host, "PUT", "/participants/sme/platform-share", {"percent": "10"},
                             token=host.admin_token)
    assert status == 200 and body == {"name": "sme", "platformShare": "10"}
    agreement = await priced_agreement(sme, consumer, templates.price_duty("2.50", "CNY"))
    await used(sme, consumer, agreement, 2)
    statement = await settled(sme, consumer, agreement)
    assert statement["total"] == "5.00"
    assert statement["share"] == {"platform": host.participant.did, "percent": "10", "platformAmount": "0.50",
                                  "providerAmount": "4.50"}

    status, report = await api(host, "GET", "/statements/report", token=host.admin_token)
    assert status == 200 and report["platform"] == {"CNY": "0.50"}
    mine = {p["name"]: p for p in report["participants"]}["sme"]
    assert mine["earned"] == {"CNY": "4.50"} and mine["platformShare"] == {"CNY": "0.50"}
    assert mine["owes"] == {} and mine["statements"] == 1


async def test_a_disputed_statement_is_superseded_by_a_new_one_for_the_same_stretch(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced_agreement(provider, consumer, templates.price_duty("2.50", "CNY"))
    await used(provider, consumer, agreement, 2)
    first = await issued(provider, agreement)
    await in_state(consumer, first["id"], "received")
    status, body = await api(consumer, "POST", f"/statements/{first['id']}/dispute", {"reason": "not our uses"})
    assert status == 200 and body["state"] == "disputed", body
    at_provider = await in_state(provider, first["id"], "disputed")
    assert at_provider["reason"] == "operator: not our uses"
    # The dispute carries the consumer's own figure for the stretch: its own two uses, not nothing.
    assert at_provider["answer"]["consumerTotal"] == "5.00", at_provider["answer"]

    second = await issued(provider, agreement)
    assert second["period"]["start"] == first["period"]["start"] and second["total"] == "5.00"
    received = await in_state(consumer, second["id"], "received")
    assert received["document"]["supersedes"] == first["id"]


async def test_a_statement_reaches_a_consumer_that_was_offline_across_a_restart_of_the_provider(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced_agreement(provider, consumer, templates.price_duty("2.50", "CNY"))
    await used(provider, consumer, agreement, 1)
    await consumer.node.stop()
    statement = await issued(provider, agreement)

    async def attempted() -> bool:
        _, shown = await api(provider, "GET", f"/statements/{statement['id']}")
        return bool(shown["reason"].startswith("not delivered yet"))

    await eventually(attempted, what="a failed delivery")
    await nodes.restart(provider)
    await nodes.restart(consumer)
    assert (await in_state(consumer, statement["id"], "received"))["total"] == "2.50"
    await in_state(provider, statement["id"], "delivered")


async def test_the_node_issues_a_statement_by_itself_once_the_billing_period_has_ended(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await priced_agreement(provider, consumer, templates.price_duty("2.50", "CNY", period="P1D"))
    await used(provider, consumer, agreement, 2)
    # Two days on (past the day's end and the grace after it), on both nodes' clocks.
    for node in (provider, consumer):
        node.node.settlement.clock = lambda: datetime.now(UTC) + timedelta(days=2)
    provider.node.settlement.wake()

    async def received() -> Any:
        _, listed = await api(consumer, "GET", f"/statements?agreement={agreement}")
        return listed["statements"][0] if listed["statements"] and \
            listed["statements"][0]["state"] == "received" else None

    statement = await eventually(received, what="a statement issued by itself")
    assert statement["total"] == "5.00" and statement["period"]["label"] == statement["period"]["start"][:10]
    assert statement["period"]["end"].endswith("T00:00:00.000000Z")


async def test_a_per_query_price_bills_the_sandbox_queries_the_consumer_kept_the_results_of(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    policy = templates.sandbox(ASSET, epsilon_per_query=0.5, epsilon_total=10, min_group_size=10)
    policy["permission"][0]["duty"] = [templates.price_duty("0.40", "CNY", per="query")]
    await publish(provider, policy)
    agreement = await negotiated(provider, consumer)
    asked = [(await consumer.client.query(agreement, GROUP_BY))["queryId"] for _ in range(2)]
    statement = await issued(provider, agreement)
    assert statement["quantities"] == {"query": "2"} and statement["total"] == "0.80"
    received = await in_state(consumer, statement["id"], "received")
    assert received["document"]["queries"] == sorted(asked)
