"""Attacks on the data sandbox between two real nodes (connector.services.sandbox, connector.http.sandbox).

The consumer of an agreement over a sandboxed table tries to get rows out: statements the check refuses, sent
through its own node and straight to the provider as signed DSP requests; malformed requests; templates and
parameters the agreement does not give; a transfer of the table's data. Others try to query an agreement that
is not theirs. Each is a 4xx with a readable reason (the rule, where a query broke one), never a 500, never a
row; each refusal of a query under the caller's own agreement is an entry of the provider's usage chain.
"""

from __future__ import annotations

import stat

import pytest
from attack_setup import post_signed

from connector.client import ClientError
from connector.protocol import messages as m
from usage_policies import templates

ASSET = "payroll"
ROWS = 300
#: A count by region, kept in the provider's terms for the template-only agreement.
BY_REGION = {"id": "by-region", "sql": "SELECT region, count(*) AS n FROM data WHERE age >= :min_age GROUP BY region",
             "parameters": {"min_age": "integer"}}
STATEMENTS = [
    ("SELECT * FROM data", "raw-rows"),
    ("SELECT region, salary FROM data", "raw-rows"),
    ("SELECT name, count(*) FROM data GROUP BY name", "column"),
    ("SELECT count(*) FROM data; DROP TABLE data", "not-select"),
    ("ATTACH DATABASE '/tmp/x.db' AS y", "not-select"),
    ("PRAGMA table_info(data)", "not-select"),
    ("SELECT count(*) FROM sqlite_master", "table"),
    ("SELECT count(*) FROM data WHERE readfile('/etc/passwd') IS NOT NULL", "function"),
    ("SELECT count(*), load_extension('/tmp/evil.so') FROM data", "function"),
    ("SELECT region, count(*) FROM data WHERE salary > (SELECT avg(salary) FROM data) GROUP BY region", "subquery"),
    ("SELECT count(*) FROM data a JOIN data b ON a.region = b.region", "join"),
    ("SELECT count(*) FROM data UNION SELECT salary FROM data", "union"),
    ("SELECT region, max(salary) FROM data GROUP BY region", "dp-aggregate"),
    ("SELECT region, count(*) FROM data GROUP BY region HAVING count(*) < 3", "dp-aggregate"),
    ("SELECT count(name) FROM data", "column"),
]


def payroll_csv() -> str:
    """A table with a column the agreement keeps closed (name) and a region with two people in it."""
    regions = ["north", "south", "east"]
    lines = ["name,region,salary,age"]
    for i in range(ROWS):
        region = "tiny" if i < 2 else regions[i % 3]
        lines.append(f"person-{i},{region},{1000 + 37 * i},{20 + i % 45}")
    return "\n".join(lines) + "\n"


async def sandbox_agreement(provider, consumer, policy: dict) -> str:
    folder = provider.data_dir / "files" / provider.participant.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "payroll.csv").write_text(payroll_csv())
    await provider.client.add_asset({"id": ASSET, "contentType": "text/csv",
                                     "dataAddress": {"type": "File", "path": "payroll.csv"}, "sandbox": True,
                                     "sandboxBounds": {"salary": [0, 20000], "age": [18, 70]},
                                     "sandboxColumns": ["region", "salary", "age"]})
    await provider.client.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
    await provider.client.add_policy("compute", policy)
    await provider.client.add_contract_definition("cd", access_policy_id="open", contract_policy_id="compute",
                                                  assets=[ASSET])
    offer = (await consumer.client.catalog(provider.public_url))["dataset"][0]["hasPolicy"][0]["@id"]
    started = await consumer.client.negotiate(provider.public_url, offer)
    final = await consumer.client.negotiation(started["id"], wait_s=15)
    assert final["state"] == "FINALIZED", final
    return str(final["agreement"]["@id"])


@pytest.fixture
async def pair(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    policy = templates.sandbox(ASSET, epsilon_per_query=0.1, epsilon_total=100, min_group_size=5)
    return provider, consumer, await sandbox_agreement(provider, consumer, policy)


def query_url(provider) -> str:
    return f"{provider.participant.dsp_base}/tds/sandbox/queries"


async def test_statements_that_break_the_terms_are_refused_with_their_rule_both_ways_and_logged(pair):
    provider, consumer, agreement = pair
    for sql, rule in STATEMENTS:
        with pytest.raises(ClientError) as caught:
            await consumer.client.query(agreement, sql)
        assert caught.value.status == 422 and caught.value.body["rule"] == rule, (sql, caught.value.body)
        status, body = await post_signed(consumer.participant, query_url(provider),
                                         {"agreementId": agreement, "query": sql})
        assert status == 422 and body["rule"] == rule and body["message"], (sql, body)
        assert set(body) == {"error", "message", "rule"}, body
    log = (await provider.client.usage_log(agreement))["entries"]
    assert len(log) == 2 * len(STATEMENTS)
    assert all(e["decision"] == "deny" and e["uses"] == 0 for e in log)
    assert [e["reasons"][-1].split(")")[0] for e in log[::2]] == [f"refused ({rule}" for _, rule in STATEMENTS]
    assert not any("person-" in reason for e in log for reason in e["reasons"])


async def test_small_groups_never_come_back_nor_does_their_number(pair):
    _, consumer, agreement = pair
    answer = await consumer.client.query(agreement, "SELECT region, count(*) FROM data GROUP BY region")
    assert "tiny" not in {row[0] for row in answer["result"]["rows"]}
    assert answer["result"]["suppressedGroups"] is None  # the exact number would tell that a small group is there
    narrowed = await consumer.client.query(agreement, "SELECT count(*) FROM data WHERE region = 'tiny'")
    assert narrowed["result"]["rows"] == [] and narrowed["result"]["suppressedGroups"] is None
    absent = await consumer.client.query(agreement, "SELECT count(*) FROM data WHERE region = 'nowhere'")
    assert absent["result"] == narrowed["result"]  # two people, or no one: the same answer


@pytest.mark.parametrize("body", [
    {},
    {"query": "SELECT count(*) FROM data"},
    {"agreementId": 7, "query": "SELECT count(*) FROM data"},
    {"agreementId": "x", "query": ["SELECT"]},
    {"agreementId": "x", "query": "SELECT count(*) FROM data", "parameters": {"a": True}},
    {"agreementId": "x", "query": "SELECT count(*) FROM data", "parameters": {"a": {"b": 1}}},
    {"agreementId": "x", "query": "SELECT count(*) FROM data", "parameters": {f"p{i}": i for i in range(65)}},
    {"agreementId": "x" * 600, "query": "SELECT count(*) FROM data"},
    {"agreementId": "x", "query": "SELECT count(*) FROM data" + " " * 20_000},
    [],
    "SELECT count(*) FROM data",
])
async def test_malformed_requests_are_a_400_never_a_500(pair, body):
    provider, consumer, _ = pair
    status, answer = await post_signed(consumer.participant, query_url(provider), body)
    assert status == 400 and answer["message"], answer


async def test_parameters_and_templates_the_agreement_does_not_give_are_refused(pair):
    provider, consumer, agreement = pair
    status, body = await post_signed(consumer.participant, query_url(provider), {
        "agreementId": agreement, "query": "SELECT count(*) FROM data WHERE age > :a", "parameters": {"a": 1}})
    assert status == 422 and body["rule"] == "parameter", body
    status, body = await post_signed(consumer.participant, query_url(provider),
                                     {"agreementId": agreement, "templateId": "by-region",
                                      "parameters": {"min_age": 1}})
    assert status == 422 and body["rule"] == "template", body


async def test_free_form_sql_needs_a_privacy_budget(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await sandbox_agreement(provider, consumer, templates.sandbox(ASSET, templates=[BY_REGION],
                                                                               min_group_size=5))
    with pytest.raises(ClientError) as caught:
        await consumer.client.query(agreement, "SELECT region, count(*) FROM data GROUP BY region")
    assert caught.value.status == 422 and caught.value.body["rule"] == "dp-required"
    answer = await consumer.client.query(agreement, template_id="by-region", parameters={"min_age": 30})
    assert answer["result"]["noise"] is False and answer["result"]["epsilonSpent"] == 0
    with pytest.raises(ClientError) as caught:
        await consumer.client.query(agreement, template_id="by-region", parameters={"min_age": "30 OR 1=1"})
    assert caught.value.status == 422 and caught.value.body["rule"] == "parameter"


async def test_the_tables_data_is_never_transferred_and_its_file_is_read_only(pair):
    provider, consumer, agreement = pair
    message = m.TransferRequestMessage(consumerPid="urn:uuid:0e0b7c7e-3a59-4a83-9f5e-6a0f1b2c3d4e",
                                       agreementId=agreement, format="HttpData-PULL",
                                       callbackAddress=consumer.participant.dsp_base)
    status, body = await post_signed(consumer.participant, f"{provider.participant.dsp_base}/transfers/request",
                                     m.encode(message))
    assert status == 400 and body["@type"] == "TransferError", body
    assert "computation only" in body["reason"][0], body
    [asset] = await provider.client.entries("assets")
    table = (provider.data_dir / "files" / provider.participant.name / ".sandbox" / asset["sandbox"]["table"])
    assert stat.S_IMODE(table.stat().st_mode) == 0o400
    assert asset["sandbox"]["schema"]["queryable"] == ["region", "salary", "age"]


async def test_no_one_but_the_agreements_consumer_may_query_it(pair, nodes):
    provider, consumer, agreement = pair
    # A participant hosted on the consumer's node, with its own token: not its agreement.
    other = await nodes.host(consumer, "other")
    with pytest.raises(ClientError) as caught:
        await other.client.query(agreement, "SELECT count(*) FROM data")
    assert caught.value.status == 404
    # A peer that is no party, signing with its own key; the provider's own participant; no signature at all.
    stranger = await nodes.start("north")
    body = {"agreementId": agreement, "query": "SELECT count(*) FROM data"}
    for who in (stranger.participant, provider.participant):
        status, answer = await post_signed(who, query_url(provider), body)
        assert status == 404 and "document" not in answer, answer
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(query_url(provider), json=body) as response:
        assert response.status == 401
    # Refusals of strangers leave the agreement's chain alone.
    assert (await provider.client.usage_log(agreement))["entries"] == []
    # The consumer's own query still runs.
    assert (await consumer.client.query(agreement, "SELECT count(*) FROM data"))["result"]["rows"]
