"""The data sandbox between two nodes: a provider offers a CSV for computation only, a consumer negotiates and asks
aggregate queries; the rows never leave the provider, the answers come back noisy, with small groups suppressed,
counted in the provider's usage chain and signed by the provider."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from connector.client import ClientError
from connector.errors import TdsError
from connector.net import signing
from connector.protocol import sandbox as sb
from connector.services.catalog import SANDBOX_FORMAT
from connector.services.sandbox_engine import Workers
from connector.services.usage import check_log
from connector.testing import eventually, store_connection
from usage_policies import templates

TDS = "https://w3id.org/tds/v1#"
ASSET = "defects"
REGIONS = ("north", "south", "east", "west")
#: The one region with fewer rows than the minimum group size (10): its group never comes back.
RARE = "islands"
GROUP_BY = "SELECT region, avg(defect_rate) FROM data GROUP BY region"
BY_PLANT = {"id": "by-plant", "sql": "SELECT region, count(*) AS n FROM data WHERE plant_id = :plant GROUP BY region",
            "parameters": {"plant": "integer"}}


def defects_csv(rows: int = 2000, seed: int = 7) -> tuple[str, dict[str, float]]:
    """*rows* rows of region, defect_rate, plant_id (5 of them in RARE), and each region's true average."""
    rng = random.Random(seed)
    lines, by_region = ["region,defect_rate,plant_id"], {}
    for i in range(rows):
        region = RARE if i < 5 else REGIONS[i % len(REGIONS)]
        rate = round(rng.uniform(0.0, 0.2) + 0.05 * REGIONS.index(region) if region != RARE else 0.9, 4)
        lines.append(f"{region},{rate},{i % 20}")
        by_region.setdefault(region, []).append(rate)
    return "\n".join(lines) + "\n", {k: statistics.fmean(v) for k, v in by_region.items()}


async def publish(provider, policy: dict, *, rows: int = 2000) -> dict[str, float]:
    """The provider's sandbox asset (a CSV of *rows* rows, defect_rate bounded to [0, 1]) under *policy*."""
    text, truth = defects_csv(rows)
    folder = provider.data_dir / "files" / provider.participant.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defects.csv").write_text(text)
    added = await provider.client.add_asset({"id": ASSET, "title": "Defect rates by plant", "contentType": "text/csv",
                                             "dataAddress": {"type": "File", "path": "defects.csv"}, "sandbox": True,
                                             "sandboxBounds": {"defect_rate": [0, 1]}})
    assert added["sandbox"]["schema"]["rows_rounded"] == rows
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("compute", policy)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="compute",
                                                  assets=[ASSET])
    return truth


async def negotiated(provider, consumer) -> str:
    catalog = await consumer.client.catalog(provider.public_url)
    offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    return str(final["agreement"]["@id"])


async def sandbox_pair(nodes, **terms):
    """Two nodes, the provider's sandbox asset offered under ``templates.sandbox(**terms)`` and negotiated."""
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    settings = {"epsilon_per_query": 0.5, "epsilon_total": 10, "min_group_size": 10, **terms}
    truth = await publish(provider, templates.sandbox(ASSET, **settings))
    return provider, consumer, await negotiated(provider, consumer), truth


async def post_query(participant, provider, body: dict) -> tuple[int, dict]:
    """The DSP query request to *provider*, signed by *participant* (None: not signed at all)."""
    url = f"{provider.participant.dsp_base}/tds/sandbox/queries"
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if participant is not None:
        headers = signing.sign_request("POST", url, raw, key=participant.keys.signing, key_id=participant.key_id,
                                       now=time.time(), headers=headers)
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def tds(node, *args: str) -> tuple[int, str]:
    """The ``tds`` command line against *node*'s management API: exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", *args, "--node", node.node.management_url, "--token", node.token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def refused(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        await call
    return caught.value


async def test_the_catalog_shows_the_schema_for_computation_only_and_no_transfer_works(nodes):
    provider, consumer, agreement, _ = await sandbox_pair(nodes)
    [dataset] = (await consumer.client.catalog(provider.public_url))["dataset"]
    shown = dataset[TDS + "sandbox"]
    assert shown["@type"] == "@json"
    described = shown["@value"]
    assert "computation only" in described["use"]
    assert described["columns"] == [{"name": "region", "type": "text"},
                                    {"name": "defect_rate", "type": "real", "low": 0.0, "high": 1.0},
                                    {"name": "plant_id", "type": "integer"}]
    assert described["rowsRounded"] == 2000 and described["queryable"] == ["region", "defect_rate", "plant_id"]
    assert described["queryEndpoint"] == f"{provider.participant.dsp_base}/tds/sandbox/queries"
    assert [d["format"] for d in dataset["distribution"]] == [SANDBOX_FORMAT]
    for push in (False, True):
        started = await consumer.client.start_transfer(agreement, push=push)
        final = await consumer.client.transfer(started["id"], wait_s=15)
        assert final["state"] == "TERMINATED", final
        assert "computation only" in final["reason"] and "never leaves the provider" in final["reason"], final
    assert await provider.client.transfers() == []  # refused before any process was opened there


async def test_a_group_by_answers_noisy_averages_with_small_groups_suppressed_and_signed(nodes):
    provider, consumer, agreement, truth = await sandbox_pair(nodes)
    answer = await consumer.client.query(agreement, GROUP_BY)
    result = answer["result"]
    assert result["columns"] == ["region", "AVG(defect_rate)"] or result["columns"][0] == "region"
    by_region = {row[0]: row[1] for row in result["rows"]}
    assert set(by_region) == set(REGIONS)  # the rare region's 5 rows are a suppressed group
    assert result["noise"] is True and result["epsilonSpent"] == 0.5 and result["thresholdEpsilon"] == 0
    assert result["suppressedGroups"] is None  # under a budget, how many were left out is not told
    # Each average is a noisy sum (Laplace, scale 1 / 0.25 = 4) over about 499 rows: off by 0.05 once in about 500
    # regions (the sum's noise past 25), by 0.1 once in some 270,000 (past 50).
    for region, value in by_region.items():
        assert abs(value - truth[region]) < 0.1, (region, value, truth[region])
    document = answer["document"]
    assert document["rows"] == result["rows"] and document["consumer"] == consumer.participant.did
    sb.verify_result(document, provider.participant.did_document())
    forged = copy.deepcopy(document)
    forged["rows"][0][1] = 0.0
    forged["resultHash"] = sb.result_hash(forged["columns"], forged["rows"])
    with pytest.raises(TdsError):
        sb.verify_result(forged, provider.participant.did_document())
    assert answer["budget"] == {"queries": 1, "maxQueries": None, "epsilonUsed": 0.5, "epsilonTotal": 10.0}


async def test_the_budget_runs_out_and_the_query_after_it_is_refused_with_the_reason(nodes):
    _, consumer, agreement, _ = await sandbox_pair(nodes, epsilon_per_query=0.5, epsilon_total=1.5)
    for _ in range(3):
        await consumer.client.query(agreement, "SELECT count(*) FROM data")
    error = await refused(consumer.client.query(agreement, "SELECT count(*) FROM data"))
    assert error.status == 403 and error.body["rule"] == "budget", error.body
    assert "privacy budget is spent" in error.message and "1.5 of 1.5" in error.message


async def test_a_fresh_agreement_on_the_same_offer_is_no_fresh_budget(nodes):
    """Attack: the consumer spends the budget, negotiates the same offer again and asks the same rows more."""
    provider, consumer, agreement, _ = await sandbox_pair(nodes, epsilon_per_query=0.5, epsilon_total=1.0)
    for _ in range(2):
        await consumer.client.query(agreement, "SELECT count(*) FROM data")
    again = await negotiated(provider, consumer)
    assert again != agreement
    error = await refused(consumer.client.query(again, "SELECT count(*) FROM data"))
    assert error.status == 403 and error.body["rule"] == "budget", error.body
    assert "1 of 1 used" in error.message


async def test_at_most_max_queries_run(nodes):
    _, consumer, agreement, _ = await sandbox_pair(nodes, max_queries=2)
    for _ in range(2):
        await consumer.client.query(agreement, "SELECT count(*) FROM data")
    error = await refused(consumer.client.query(agreement, "SELECT count(*) FROM data"))
    assert error.status == 403 and error.body["rule"] == "policy", error.body
    assert "count" in error.message, error.message


async def test_a_template_runs_with_its_parameters(nodes):
    _, consumer, agreement, _ = await sandbox_pair(nodes, templates=[BY_PLANT])
    answer = await consumer.client.query(agreement, template_id="by-plant", parameters={"plant": "3"})
    assert answer["document"]["template"] == "by-plant" and answer["document"]["parameters"] == {"plant": 3}
    assert {row[0] for row in answer["result"]["rows"]} <= set(REGIONS)
    wrong = await refused(consumer.client.query(agreement, template_id="by-plant", parameters={"plant": "x"}))
    assert wrong.status == 422 and wrong.body["rule"] == "parameter"


async def test_a_refused_statement_is_a_4xx_naming_the_rule_and_logged_on_the_provider(nodes):
    provider, consumer, agreement, _ = await sandbox_pair(nodes)
    error = await refused(consumer.client.query(agreement, "SELECT region, defect_rate FROM data"))
    assert error.status == 422 and error.body["rule"] == "raw-rows", error.body
    log = await provider.client.usage_log(agreement)
    [entry] = log["entries"]
    assert entry["decision"] == "deny" and entry["action"] == "aggregate"
    assert any(r.startswith("refused (raw-rows)") for r in entry["reasons"]), entry
    assert "defect_rate" not in " ".join(entry["reasons"][1:]).replace("SELECT region, defect_rate", "")


async def test_a_revoked_agreement_refuses_queries(nodes):
    provider, consumer, agreement, _ = await sandbox_pair(nodes)
    await consumer.client.query(agreement, "SELECT count(*) FROM data")
    await provider.client.revoke(agreement, "contract ended")
    # The provider refuses at once; once the consumer's node has the revocation, it refuses before asking.
    error = await refused(consumer.client.query(agreement, "SELECT count(*) FROM data"))
    assert error.status == 409 and ("revoked" in error.message or "REVOKED" in error.message), error.message

    async def consumer_knows() -> bool:
        return (await consumer.client.agreement(agreement))["state"] == "REVOKED"

    await eventually(consumer_knows, what="the consumer's node holding the revocation")
    error = await refused(consumer.client.query(agreement, "SELECT count(*) FROM data"))
    assert error.status == 409


async def test_another_participants_token_and_a_stranger_cannot_query_the_agreement(nodes):
    provider, consumer, agreement, _ = await sandbox_pair(nodes)
    other = await nodes.host(consumer, "other")
    error = await refused(other.client.query(agreement, "SELECT count(*) FROM data"))
    assert error.status == 404
    stranger = await nodes.start("north")
    status, body = await post_query(stranger.participant, provider, {"agreementId": agreement,
                                                                      "query": "SELECT count(*) FROM data"})
    assert status == 404 and "result" not in body, body
    status, body = await post_query(None, provider, {"agreementId": agreement, "query": "SELECT count(*) FROM data"})
    assert status == 401 and "result" not in body, body


async def test_the_providers_usage_chain_counts_each_query_and_verifies(nodes):
    provider, consumer, agreement, _ = await sandbox_pair(nodes, epsilon_per_query=1, epsilon_total=2)
    for sql in ("SELECT count(*) FROM data", GROUP_BY):
        await consumer.client.query(agreement, sql)
    await refused(consumer.client.query(agreement, "SELECT plant_id FROM data"))  # refused: not counted
    await refused(consumer.client.query(agreement, "SELECT count(*) FROM data"))  # over the budget
    log = await provider.client.usage_log(agreement)
    assert check_log(log["entries"], log["heads"], log["didDocument"]) is None
    assert log["didDocument"]["id"] == provider.participant.did
    assert [(e["decision"], e["uses"]) for e in log["entries"]] == [("permit", 1), ("permit", 2), ("deny", 2),
                                                                    ("deny", 2)]
    assert [e["effects"] for e in log["entries"][:2]] == [["count", "epsilon 1.0"], ["count", "epsilon 1.0"]]
    # The consumer's node keeps nothing of the queries: no usage log of its own for the agreement.
    assert (await consumer.client.usage_log(agreement))["entries"] == []
    # A chain edited behind the node's back is caught, and queries stop until it is resolved.
    with store_connection(provider.data_dir) as db:
        db.execute("UPDATE usage_log SET entry = replace(entry, '\"deny\"', '\"permit\"') WHERE seq = 4")
    edited = await provider.client.usage_log(agreement)
    assert check_log(edited["entries"], edited["heads"], edited["didDocument"]) is not None


async def test_log_verify_on_the_providers_node_calls_the_chain_its_own_record_of_queries(nodes):
    provider, consumer, agreement, _ = await sandbox_pair(nodes)
    await consumer.client.query(agreement, "SELECT count(*) FROM data")
    code, out = await tds(provider, "log", "verify", agreement)
    assert code == 0 and "1 permitted use(s), chain intact" in out, out
    assert "the provider's own record of the queries it ran (no acknowledgement is due)" in out, out
    assert "not yet acknowledged" not in out, out


async def test_the_cli_adds_a_sandbox_asset_and_prints_a_querys_table(nodes, tmp_path):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    text, _ = defects_csv()
    csv = provider.data_dir / "files" / provider.participant.name / "defects.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text(text)
    code, out = await tds(provider, "asset", "add", ASSET, "--file", str(csv), "--sandbox", "--bounds",
                          "defect_rate=0:1", "--columns", "region,defect_rate")
    assert code == 0 and "for computation only: about 2000 rows" in out, out
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("compute", templates.sandbox(ASSET, epsilon_per_query=1, epsilon_total=1))
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="compute",
                                                  assets=[ASSET])
    agreement = await negotiated(provider, consumer)
    code, out = await tds(consumer, "query", agreement, GROUP_BY)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[0] == "region" and {line.split()[0] for line in lines[1:5]} == set(REGIONS), out
    assert ("4 group(s); groups whose noisy count is under the minimum left out, uncounted; epsilon spent 1 "
            "(1 of 1 used)") in out, out
    code, out = await tds(consumer, "query", agreement, "SELECT count(*) FROM data")
    assert code == 1 and "privacy budget is spent" in out and "(rule budget)" in out, out
    code, out = await tds(consumer, "query", agreement, "SELECT plant_id, count(*) FROM data GROUP BY plant_id")
    assert code == 1 and "(rule column)" in out, out


async def test_concurrent_queries_spend_the_budget_exactly(nodes):
    _, consumer, agreement, _ = await sandbox_pair(nodes, epsilon_per_query=0.5, epsilon_total=2)
    answers = await asyncio.gather(*(consumer.client.query(agreement, "SELECT count(*) FROM data")
                                     for _ in range(8)), return_exceptions=True)
    answered = [a for a in answers if isinstance(a, dict)]
    refusals = [a for a in answers if isinstance(a, ClientError)]
    assert len(answered) == 4 and len(refusals) == 4, answers
    assert all(r.status == 403 and r.body["rule"] == "budget" for r in refusals)
    assert sorted(a["budget"]["epsilonUsed"] for a in answered) == [0.5, 1.0, 1.5, 2.0]


@pytest.mark.parametrize(("extra", "path", "words"), [
    ({"sandboxBounds": {"region": [0, 1]}}, "sandboxBounds", "text"),
    ({"sandboxBounds": {"missing": [0, 1]}}, "sandboxBounds", "no such column"),
    ({"sandboxBounds": {"defect_rate": [1, 0]}}, "sandboxBounds", "low <= high"),
    ({"sandboxColumns": ["region", "secret"]}, "sandboxColumns", "'secret'"),
])
async def test_a_sandbox_asset_the_table_cannot_have_is_a_400_naming_the_field(nodes, extra, path, words):
    provider = await nodes.start("acme")
    folder = provider.data_dir / "files" / provider.participant.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defects.csv").write_text(defects_csv(50)[0])
    error = await refused(provider.client.add_asset({"id": ASSET, "sandbox": True, **extra,
                                                     "dataAddress": {"type": "File", "path": "defects.csv"}}))
    assert error.status == 400 and error.path == path and words in error.message, (error.path, error.message)
    assert await provider.client.entries("assets") == []
    assert not any((folder / ".sandbox").glob("*")), "a refused import leaves no table behind"


async def test_sandbox_fields_need_a_file_and_the_sandbox_flag(nodes):
    provider = await nodes.start("acme")
    error = await refused(provider.client.add_asset({"id": ASSET, "sandboxBounds": {"defect_rate": [0, 1]}}))
    assert error.status == 400 and error.path == "$.sandbox"
    error = await refused(provider.client.add_asset({"id": ASSET, "sandbox": True, "dataAddress": {
        "type": "HttpData", "url": "http://127.0.0.1:1/defects.csv"}}))
    assert error.status == 400 and "is a File" in error.message


async def test_deleting_a_sandbox_asset_deletes_its_table(nodes):
    provider = await nodes.start("acme")
    folder = provider.data_dir / "files" / provider.participant.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defects.csv").write_text(defects_csv(50)[0])
    added = await provider.client.add_asset({"id": ASSET, "sandbox": True,
                                             "dataAddress": {"type": "File", "path": "defects.csv"}})
    table = folder / ".sandbox" / added["sandbox"]["table"]
    assert table.is_file()
    await provider.client.delete_entry("assets", ASSET)
    assert not table.exists() and (folder / "defects.csv").is_file()


def _alive(pid: int) -> bool:
    """The process runs (a zombie no longer does)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _group_alive(pgid: int) -> bool:
    """A process of group *pgid* still runs."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


async def _gone(pids: list[int]) -> None:
    """Wait until none of *pids*, nor anything in their process groups, runs (polled, with a deadline)."""
    async def ended() -> bool:
        return not any(_alive(pid) or _group_alive(pid) for pid in pids)

    await eventually(ended, 10, every_s=0.01, what="the end of the sandbox's worker processes")


async def _publish_table(provider, rows: int = 50) -> None:
    folder = provider.data_dir / "files" / provider.participant.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defects.csv").write_text(defects_csv(rows)[0])
    await provider.client.add_asset({"id": ASSET, "sandbox": True,
                                     "dataAddress": {"type": "File", "path": "defects.csv"}})


async def test_a_node_that_offers_no_sandbox_table_runs_no_worker(nodes):
    _, consumer, agreement, _ = await sandbox_pair(nodes)
    await consumer.client.query(agreement, "SELECT count(*) FROM data")
    workers = consumer.node.sandbox.workers  # it asks queries, it offers no table
    assert await workers.ready() is None and workers.spare_pids == []
    await nodes.restart(consumer)
    assert await consumer.node.sandbox.workers.ready() is None


async def test_the_providers_spares_start_when_a_table_is_published_and_end_with_the_node(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    workers = provider.node.sandbox.workers
    assert await workers.ready() is None and workers.spare_pids == []
    await publish(provider, templates.sandbox(ASSET, epsilon_per_query=0.5, epsilon_total=10, min_group_size=10))
    assert await workers.ready() is not None
    primed = workers.spare_pids
    assert len(primed) == 2 and all(_alive(pid) for pid in primed)
    agreement = await negotiated(provider, consumer)
    answer = await consumer.client.query(agreement, GROUP_BY)  # in the older spare; another takes its place
    assert len(answer["result"]["rows"]) == len(REGIONS)
    assert workers.cold_starts == 0, "the first query waited for a worker to start"
    await workers.ready()
    now = workers.spare_pids
    assert len(now) == 2 and now[0] == primed[1] and primed[0] not in now
    await provider.node.stop()
    assert workers.spare_pids == []
    await _gone([*primed, *now])


async def test_a_node_that_starts_with_a_table_primes_its_spares_and_ends_them_with_its_last_table(nodes):
    provider = await nodes.start("acme")
    await _publish_table(provider)
    await nodes.restart(provider)
    workers = provider.node.sandbox.workers
    assert await workers.ready() is not None
    spares = workers.spare_pids
    assert len(spares) == 2 and all(_alive(pid) for pid in spares)
    await provider.client.delete_entry("assets", ASSET)
    assert workers.spare_pids == []
    await _gone(spares)


async def test_a_provider_with_no_room_answers_503_with_retry_after_and_spends_nothing(nodes):
    provider, consumer, agreement, _ = await sandbox_pair(nodes, epsilon_per_query=0.5, epsilon_total=10)
    await provider.node.sandbox.workers.close()
    workers = provider.node.sandbox.workers = Workers(max_running=1, max_wait_s=0.05)
    async with workers.slot():  # the one query the node may run now
        error = await refused(consumer.client.query(agreement, "SELECT count(*) FROM data"))
        assert error.status == 503 and error.body["rule"] == "busy", error.body
        assert "busy" in error.message
        url = f"{provider.participant.dsp_base}/tds/sandbox/queries"
        raw = json.dumps({"agreementId": agreement, "query": "SELECT count(*) FROM data"}).encode()
        participant = consumer.participant
        headers = signing.sign_request("POST", url, raw, key=participant.keys.signing, key_id=participant.key_id,
                                       now=time.time(), headers={"Content-Type": "application/json"})
        async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as response:
            assert response.status == 503 and int(response.headers["Retry-After"]) >= 1
            assert (await response.json(content_type=None))["rule"] == "busy"
    answer = await consumer.client.query(agreement, "SELECT count(*) FROM data")
    assert answer["budget"]["queries"] == 1 and answer["budget"]["epsilonUsed"] == 0.5  # the refused ones cost nothing


async def test_the_cli_adds_a_computation_only_policy_whose_terms_the_provider_enforces(nodes, tmp_path):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    template = tmp_path / "by-plant.json"
    template.write_text(json.dumps(BY_PLANT))
    code, out = await tds(provider, "policy", "add", "compute", "--sandbox", "--query-columns", "region,plant_id",
                          "--aggregates", "count,avg", "--min-group-size", "5", "--epsilon-per-query", "0.5",
                          "--epsilon-total", "1", "--max-queries", "3", "--query-template", str(template))
    assert code == 0 and "policy compute added" in out, out
    stored = next(p for p in await provider.client.entries("policies") if p["id"] == "compute")
    terms = sb.terms_of(stored["policy"])
    assert terms is not None
    assert (sorted(terms.columns or []), sorted(terms.aggregates), terms.min_group_size) == (
        ["plant_id", "region"], ["avg", "count"], 5)
    assert (terms.epsilon_per_query, terms.epsilon_total, terms.max_queries) == (0.5, 1.0, 3)
    assert [t.id for t in terms.templates] == ["by-plant"]
    # Offered under it, the asset answers under exactly these terms.
    folder = provider.data_dir / "files" / provider.participant.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defects.csv").write_text(defects_csv()[0])
    await provider.client.add_asset({"id": ASSET, "dataAddress": {"type": "File", "path": "defects.csv"},
                                     "sandbox": True, "sandboxBounds": {"defect_rate": [0, 1]}})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="compute",
                                                  assets=[ASSET])
    agreement = await negotiated(provider, consumer)
    code, out = await tds(consumer, "query", agreement, "--template", "by-plant", "--param", "plant=3")
    assert code == 0, out
    code, out = await tds(consumer, "query", agreement, "SELECT region, avg(defect_rate) FROM data GROUP BY region")
    assert code == 1 and "(rule column)" in out, out  # defect_rate is not among the query columns
    code, out = await tds(consumer, "query", agreement, "SELECT region, count(*) FROM data GROUP BY region")
    assert code == 0, out
    code, out = await tds(consumer, "query", agreement, "SELECT plant_id, count(*) FROM data GROUP BY plant_id")
    assert code == 1 and "privacy budget is spent" in out, out  # 0.5 + 0.5 of 1 used
