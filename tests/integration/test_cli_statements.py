"""Prices and settlement through ``tds`` between two real nodes: a price put in an offer with ``tds policy add``,
said in plain words in the consumer's catalog; uses metered from the receipts; ``tds statement issue`` by the
provider, ``tds statements --json`` on both sides, ``accept`` or ``dispute`` by the consumer, ``export`` as
signed JSON (checked offline by ``tds statement verify FILE``, which a changed byte fails) or CSV; a second
statement refused while one awaits its answer; the host's platform share and report."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from click.testing import CliRunner, Result
from console_pages import agree_to_first_offer

from connector.cli import catalog_lines, main
from connector.testing import eventually

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
PRICE = ("--price-per-use", "2.50", "--currency", "CNY")


async def invoke(*args: str) -> Result:
    """``tds ARGS`` on a thread of its own (the CLI runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


async def tds(node: Any, *args: str, code: int = 0, token: str | None = None) -> Result:
    """``tds ARGS`` against *node* with its token (or *token*); it exits *code*."""
    result = await invoke(*args, "--node", node.node.management_url, "--token", token or node.token)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result


async def tds_json(node: Any, *args: str, token: str | None = None) -> Any:
    return json.loads((await tds(node, *args, "--json", token=token)).stdout)


async def priced_agreement(nodes: Any, *price: str, provider: Any = None) -> tuple[Any, Any, str, dict[str, Any]]:
    """*provider* (acme, by default) offers an asset under `tds policy add paid-rnd --purpose R&D` with *price*;
    parts agrees to it. The provider, the consumer, the agreement's id and the catalog as parts saw it."""
    provider = provider or await nodes.start("acme")
    consumer = await nodes.start("parts")
    await provider.client.add_asset({"id": "qi", "title": "Quality inspection"})
    await provider.client.add_policy("open", OPEN)
    await tds(provider, "policy", "add", "paid-rnd", "--purpose", "R&D", *(price or PRICE))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="paid-rnd",
                                                  assets=["qi"])
    agreement, catalog = await agree_to_first_offer(provider, consumer)
    return provider, consumer, agreement, catalog


async def used(provider: Any, consumer: Any, agreement: str, n: int) -> None:
    """*n* permitted uses on the consumer's side, their receipts held by the provider."""
    for i in range(n):
        assert (await consumer.client.use(agreement, f"u{i}", purpose="R&D"))["decision"] == "permit"

    async def receipts_held() -> bool:
        return bool((await provider.client.usage_report(agreement))["receivedEntries"] == n)

    await eventually(receipts_held, what="the uses' receipts at the provider")


async def received(consumer: Any, statement_id: str, state: str = "received") -> dict[str, Any]:
    async def there() -> dict[str, Any] | None:
        rows = await tds_json(consumer, "statements")
        return next((r for r in rows if r["id"] == statement_id and r["state"] == state), None)

    return await eventually(there, what=f"the statement {state} on the consumer's side")  # type: ignore[no-any-return]


async def issued(nodes: Any, uses: int = 3) -> tuple[Any, Any, str, dict[str, Any]]:
    """A priced agreement with *uses* uses, and a statement the provider issued for them (until now)."""
    provider, consumer, agreement, _ = await priced_agreement(nodes)
    await used(provider, consumer, agreement, uses)
    summary = await tds_json(provider, "statement", "issue", "--agreement", agreement, "--until", "now")
    return provider, consumer, agreement, summary


async def test_the_consumers_catalog_says_the_price_in_plain_words(nodes):
    _, _, _, catalog = await priced_agreement(nodes)
    lines = catalog_lines(catalog)
    assert "        price: Pay 2.50 CNY per use, settled monthly (rounded to 0.01, half up)" in lines, lines


async def test_issued_listed_accepted_exported_and_verified_offline(nodes, tmp_path):
    provider, consumer, agreement, summary = await issued(nodes, uses=3)
    assert summary["id"].startswith("urn:uuid:") and summary["agreement"] == agreement
    assert (summary["role"], summary["quantities"], summary["total"], summary["currency"]) == (
        "provider", {"use": "3"}, "7.50", "CNY")
    mine = await tds_json(provider, "statements", "--agreement", agreement)
    assert [(r["id"], r["total"]) for r in mine] == [(summary["id"], "7.50")]

    theirs = await received(consumer, summary["id"])
    assert (theirs["role"], theirs["counterparty"], theirs["total"]) == ("consumer", provider.participant.did, "7.50")
    accepted = await tds_json(consumer, "statement", "accept", summary["id"])
    assert accepted["state"] == "accepted"

    async def provider_accepted() -> bool:
        return bool((await provider.client.statement(summary["id"]))["state"] == "accepted")

    await eventually(provider_accepted, what="the acceptance at the provider")
    path = tmp_path / "statement.json"
    result = await tds(consumer, "statement", "export", summary["id"], "-o", str(path))
    assert result.stdout == f"statement {summary['id']} written to {path} (json)\n"
    verified = await invoke("statement", "verify", str(path))  # no node, no token: offline
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines() == [
        f"statement {summary['id']}", f"  agreement  {agreement}", "  total      7.50 CNY",
        "  answer     accepted by the consumer", "  signatures verified"]


async def test_verify_of_a_changed_export_exits_1_with_the_reason(nodes, tmp_path):
    provider, _, _, summary = await issued(nodes, uses=2)
    bundle = await provider.client.export_statement(summary["id"])
    bundle["statement"]["lines"][0]["quantity"] = "1"
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(bundle))
    result = await invoke("statement", "verify", str(path))
    assert (result.exit_code, result.stdout) == (1, "")
    # The nodes of this test run in the same process and may log to stderr meanwhile: the command's own line.
    [line] = [text for text in result.stderr.splitlines() if text.startswith("error: ")]
    assert line.startswith(f"error: {path}: ") and "signature does not verify" in line, result.stderr


async def test_a_dispute_with_its_reason_reaches_the_provider(nodes):
    provider, consumer, _, summary = await issued(nodes, uses=1)
    await received(consumer, summary["id"])
    disputed = await tds_json(consumer, "statement", "dispute", summary["id"], "--reason", "no such use in our books")
    assert disputed["state"] == "disputed"

    async def provider_disputed() -> dict[str, Any] | None:
        found = await provider.client.statement(summary["id"])
        return found if found["state"] == "disputed" else None

    found = await eventually(provider_disputed, what="the dispute at the provider")
    assert "no such use in our books" in found["reason"]
    shown = (await tds(provider, "statement", "show", summary["id"])).stdout
    assert ["state", "disputed"] in [line.split() for line in shown.splitlines()]
    assert "no such use in our books" in shown


async def test_a_second_statement_while_one_awaits_its_answer_exits_1_naming_it(nodes):
    provider, _, agreement, summary = await issued(nodes, uses=1)
    result = await tds(provider, "statement", "issue", "--agreement", agreement, "--until", "now", code=1)
    assert result.stdout == ""
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # the nodes log there too
    assert summary["id"] in line, line


async def test_the_csv_export_has_one_row_per_line_for_accounting(nodes):
    provider, _, agreement, summary = await issued(nodes, uses=4)
    text = (await tds(provider, "statement", "export", summary["id"], "--format", "csv")).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["statement", "agreement", "period", "basis", "quantity", "unit_price", "amount",
                             "currency", "state"]
    assert [(r["statement"], r["agreement"], r["basis"], r["quantity"], r["unit_price"], r["amount"], r["currency"])
            for r in rows] == [(summary["id"], agreement, "use", "4", "2.50", "10.00", "CNY")]


async def test_the_platform_share_splits_statements_and_the_host_report_sums_them(nodes):
    host = await nodes.start("host")
    sme = await nodes.host(host, "acme")  # a participant the node hosts: the host takes its share
    provider, consumer, agreement, _ = await priced_agreement(nodes, provider=sme)
    admin = host.admin_token
    done = await tds_json(host, "participant", "share", "acme", "10", token=admin)
    assert done == {"name": "acme", "platformShare": "10"}
    await used(provider, consumer, agreement, 3)
    summary = await tds_json(provider, "statement", "issue", "--agreement", agreement, "--until", "now")
    assert summary["total"] == "7.50"
    assert (summary["share"]["percent"], summary["share"]["platformAmount"], summary["share"]["providerAmount"]) == (
        "10", "0.75", "6.75")
    await received(consumer, summary["id"])
    await tds_json(consumer, "statement", "accept", summary["id"])

    async def provider_accepted() -> bool:
        return bool((await provider.client.statement(summary["id"]))["state"] == "accepted")

    await eventually(provider_accepted, what="the acceptance at the provider")
    report = await tds_json(host, "statements", "--host-report", token=admin)  # accepted statements count
    [acme] = [p for p in report["participants"] if p["name"] == "acme"]
    assert (acme["earned"], acme["platformShare"], acme["statements"]) == ({"CNY": "6.75"}, {"CNY": "0.75"}, 1)
    assert report["platform"] == {"CNY": "0.75"}
    # a participant's token is not the admin's
    refused = await tds(provider, "statements", "--host-report", code=2)
    assert refused.stdout == "" and any(line.startswith("error: ") for line in refused.stderr.splitlines())
