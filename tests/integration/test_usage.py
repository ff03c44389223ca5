"""Usage enforcement on the consumer's node: decided, counted exactly once, logged and signed."""

from __future__ import annotations

import asyncio
import signal

import pytest

from connector.services.usage import check_log
from connector.testing import ProcessNode, eventually, store_connection
from usage_policies import templates


async def agreement_between(provider, consumer_client, consumer_url_peer, *, uses=3, purpose="R&D") -> str:
    target = "qi"
    await provider.client.add_asset({"id": target})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    usage = templates.combine(templates.purpose(target, purpose), templates.max_uses(target, uses),
                              templates.for_duration(target, "P30D"), templates.log_each_use(target))
    await provider.client.add_policy("rnd", usage)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="rnd",
                                                  assets=[target])
    catalog = await consumer_client.catalog(consumer_url_peer)
    offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer_client.negotiate(consumer_url_peer, offer)
    final = await consumer_client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    return str(final["agreement"]["@id"])


async def test_uses_up_to_the_limit_then_denied_with_reasons(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    for i in range(3):
        result = await consumer.client.use(agreement, f"use-{i}", purpose="R&D")
        assert result["decision"] == "permit" and result["seq"] == i + 1
    fourth = await consumer.client.use(agreement, "use-3", purpose="R&D")
    assert fourth["decision"] == "deny" and any("count" in r for r in fourth["reasons"]), fourth
    wrong = await consumer.client.use(agreement, "use-4", purpose="marketing")
    assert wrong["decision"] == "deny" and any("purpose" in r for r in wrong["reasons"]), wrong
    summary = await consumer.client.usage(agreement)
    assert summary["uses"] == 3
    assert summary["allowance"]["usesLeft"] == 0 and summary["allowance"]["usesAllowed"] == 3
    assert 29 * 86400 < summary["allowance"]["secondsLeft"] <= 30 * 86400
    assert [e["decision"] for e in summary["latest"]] == ["deny", "deny", "permit", "permit", "permit"]


async def test_retry_with_the_same_use_id_is_not_counted_again(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    first = await consumer.client.use(agreement, "report-1", purpose="R&D")
    again = await consumer.client.use(agreement, "report-1", purpose="R&D")
    # Counted once; the re-delivery is a log entry of its own (and so a receipt to the provider).
    assert again["repeated"] and again["decision"] == "permit" and again["seq"] == first["seq"] + 1
    assert (await consumer.client.usage(agreement))["uses"] == 1
    entries = (await consumer.client.usage_log(agreement))["entries"]
    assert [(e["kind"], e["use_id"], e["uses"]) for e in entries] == [("use", "report-1", 1),
                                                                      ("redelivery", "report-1", 1)]


async def test_counters_exact_under_200_concurrent_uses_with_retries(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url, uses=150)
    ids = [f"u{i}" for i in range(200)]
    results = await asyncio.gather(*(consumer.client.use(agreement, i, purpose="R&D") for i in ids))
    retries = await asyncio.gather(*(consumer.client.use(agreement, i, purpose="R&D") for i in ids[::3]))
    assert sum(r["decision"] == "permit" for r in results) == 150
    assert all(r["repeated"] for r in retries)
    by_id = dict(zip(ids, results, strict=True))
    assert all(r["decision"] == by_id[i]["decision"] for i, r in zip(ids[::3], retries, strict=True))
    assert (await consumer.client.usage(agreement))["uses"] == 150
    log = await consumer.client.usage_log(agreement)
    # A retry of a permitted use is logged as a re-delivery; the same deny asked again adds nothing.
    redelivered = sum(by_id[i]["decision"] == "permit" for i in ids[::3])
    assert len(log["entries"]) == 200 + redelivered
    assert check_log(log["entries"], log["heads"], log["didDocument"]) is None
    assert len(log["heads"]) < 200  # concurrent uses shared commit groups (one signed head per group)


@pytest.mark.parametrize(
    ("edit", "seq"),
    [
        ("UPDATE usage_log SET entry = replace(entry, '\"deny\"', '\"permit\"') WHERE seq = 4", 4),
        ("DELETE FROM usage_log WHERE seq = 2", 3),
        ("UPDATE usage_log SET seq = -1 WHERE seq = 2; UPDATE usage_log SET seq = 2 WHERE seq = 3; "
         "UPDATE usage_log SET seq = 3 WHERE seq = -1", 3),
    ],
    ids=["edited", "deleted", "reordered"],
)
async def test_tampered_log_is_caught_by_log_verify(nodes, edit, seq):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    for i in range(5):
        await consumer.client.use(agreement, f"u{i}", purpose="R&D")
    log = await consumer.client.usage_log(agreement)
    assert check_log(log["entries"], log["heads"], log["didDocument"]) is None
    with store_connection(consumer.data_dir) as db:
        for statement in edit.split("; "):
            db.execute(statement)
    code, out = await tds(consumer, "log", "verify", agreement)
    assert code == 1 and f"BROKEN at entry #{seq}" in out, out


async def tds(node, *args: str) -> tuple[int, str]:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", *args, "--node", node.node.management_url, "--token", node.token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def test_log_verify_and_usage_show_cli(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    code, out = await tds(consumer, "use", agreement, "--use-id", "cli-1", "--purpose", "R&D")
    assert code == 0 and out.startswith("permit: use #1 logged")
    code, out = await tds(consumer, "use", agreement, "--use-id", "cli-2", "--purpose", "sales")
    assert code == 1 and out.startswith("deny") and "purpose" in out
    code, out = await tds(consumer, "usage", "show", agreement)
    assert code == 0 and "2 of 3 uses left" in out and "days left" in out
    code, out = await tds(consumer, "log", "verify", agreement)
    assert code == 0 and "2 entries, 1 permitted use(s), chain intact" in out


@pytest.mark.parametrize("crash_at", ["usage-before-commit", "usage-after-commit"])
async def test_kill_9_around_the_commit(nodes, tmp_path, crash_at):
    provider = await nodes.start("acme")
    consumer = ProcessNode(tmp_path, "parts")
    await consumer.start({"TDS_CRASH_AT": crash_at})
    client = consumer.client
    try:
        agreement = await agreement_between(provider, client, provider.public_url)
        with pytest.raises(Exception):  # noqa: B017 - the connection dies with the process
            await client.use(agreement, "the-use", purpose="R&D")
        assert await consumer.exited(20) == -signal.SIGKILL
        await consumer.start()
        summary = await client.usage(agreement)
        log = await client.usage_log(agreement)
        if crash_at == "usage-before-commit":
            assert summary["uses"] == 0 and log["entries"] == []  # no trace
        else:
            assert summary["uses"] == 1 and [e["use_id"] for e in log["entries"]] == ["the-use"]
        retry = await client.use(agreement, "the-use", purpose="R&D")
        assert retry["decision"] == "permit"
        assert retry["repeated"] is (crash_at == "usage-after-commit")
        summary = await client.usage(agreement)
        log = await client.usage_log(agreement)
        # Counted once: the use, and after a crash past its commit, the retry as a logged re-delivery.
        kinds = ["use", "redelivery"] if crash_at == "usage-after-commit" else ["use"]
        assert summary["uses"] == 1 and [e["kind"] for e in log["entries"]] == kinds
        assert check_log(log["entries"], log["heads"], log["didDocument"]) is None
    finally:
        await consumer.stop()


async def test_use_check_counts_nothing_and_a_use_without_o_is_counted(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    code, out = await tds(consumer, "use", agreement, "--check", "--purpose", "R&D")
    assert code == 0 and out.startswith("permit: a use now would be permitted") and "3 of 3 uses left" in out, out
    assert "no data held here" in out  # none was transferred
    code, out = await tds(consumer, "use", agreement, "--check", "--purpose", "sales")
    assert code == 1 and out.startswith("deny: a use now would be denied") and "purpose" in out, out
    code, out = await tds(consumer, "use", agreement, "--check", "--use-id", "x", "--purpose", "R&D")
    assert code == 2 and "--check only asks" in out, out
    code, out = await tds(consumer, "use", agreement, "--purpose", "R&D")
    assert code == 2 and "--use-id" in out, out
    assert (await consumer.client.usage(agreement))["uses"] == 0
    code, out = await tds(consumer, "use", agreement, "--use-id", "cli-1", "--purpose", "R&D")
    assert code == 0 and "counted without delivery" in out, out
    code, out = await tds(consumer, "use", agreement, "--check", "--purpose", "R&D")
    assert code == 0 and "2 of 3 uses left" in out, out
    assert (await consumer.client.usage(agreement))["uses"] == 1


async def test_a_revocation_is_plain_in_every_command(nodes, tmp_path):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_between(provider, consumer.client, provider.public_url)
    assert (await consumer.client.use(agreement, "u1", purpose="R&D"))["decision"] == "permit"
    code, out = await tds(provider, "agreement", "revoke", agreement, "--reason", "contract ended")
    assert code == 0, out

    async def revoked():
        [row], [theirs] = await consumer.client.agreements(), await provider.client.agreements()
        return row.get("dataDeleted") and theirs["revocation"]["status"] == "acknowledged"

    await eventually(revoked)
    code, out = await tds(consumer, "agreements")
    assert code == 0 and "REVOKED" in out and "revoked by the provider at " in out and "contract ended" in out, out
    assert "data deleted here at " in out
    code, out = await tds(consumer, "agreements", "--state", "revoked")
    assert code == 0 and agreement in out, out
    code, out = await tds(consumer, "agreements", "--state", "FINALIZED")
    assert code == 0 and out.strip() == "no agreements in state FINALIZED", out
    code, out = await tds(consumer, "agreements", "--state", "gone")
    assert code == 2 and "Invalid value for '--state'" in out, out
    code, out = await tds(provider, "agreements")
    assert code == 0 and "REVOKED" in out and "contract ended" in out and "confirmed" in out, out
    code, out = await tds(consumer, "usage", "show", agreement)
    assert code == 0 and "revoked by the provider at " in out and "contract ended: no uses left" in out, out
    assert "0 of 3 uses left" in out
    target = tmp_path / "data.csv"
    code, out = await tds(consumer, "use", agreement, "--use-id", "u2", "--purpose", "R&D", "-o", str(target))
    assert code == 1 and "revoked this agreement at " in out and "contract ended" in out, out
    assert not target.exists() and not target.with_name("data.csv.part").exists()
    code, out = await tds(consumer, "use", agreement, "--check", "--purpose", "R&D")
    assert code == 1 and "revoked" in out, out
    code, out = await tds(consumer, "use", agreement, "--use-id", "u3", "--purpose", "R&D", "-o",
                          str(tmp_path / "no" / "such" / "folder.csv"))
    assert code == 2 and "cannot write" in out and "nothing was used" in out, out


async def test_kill_9_under_concurrent_uses_loses_no_answered_use_and_leaves_no_gap(nodes, tmp_path):
    provider = await nodes.start("acme")
    consumer = ProcessNode(tmp_path, "parts")
    await consumer.start()
    try:
        agreement = await agreement_between(provider, consumer.client, provider.public_url, uses=150)
        answered: list[dict] = []
        enough = asyncio.Event()

        async def application(worker: int) -> None:
            for i in range(20):
                try:
                    result = await consumer.client.use(agreement, f"w{worker}-{i}", purpose="R&D")
                except Exception:  # the connection dies with the process
                    return
                answered.append(result | {"useId": f"w{worker}-{i}"})
                if len(answered) >= 60:
                    enough.set()

        workers = [asyncio.ensure_future(application(w)) for w in range(16)]
        await asyncio.wait_for(enough.wait(), 60)
        await consumer.kill()  # while uses are being decided and committed
        await asyncio.gather(*workers)
        await consumer.start()
        log = await consumer.client.usage_log(agreement)
        entries = {e["use_id"]: e for e in log["entries"]}
        # Every use answered before the kill is in the log, as it was answered.
        assert all((entries[a["useId"]]["seq"], entries[a["useId"]]["hash"], entries[a["useId"]]["decision"]) ==
                   (a["seq"], a["entryHash"], a["decision"]) for a in answered)
        assert [e["seq"] for e in log["entries"]] == list(range(1, len(log["entries"]) + 1))
        assert check_log(log["entries"], log["heads"], log["didDocument"]) is None
        permits = sum(e["decision"] == "permit" for e in log["entries"])
        assert (await consumer.client.usage(agreement))["uses"] == permits <= 150
        # And the node goes on deciding on that log.
        after = await consumer.client.use(agreement, "after-restart", purpose="R&D")
        assert after["seq"] == len(log["entries"]) + 1
    finally:
        await consumer.stop()
