"""The node's metrics count what operators watch: processes by state, bytes moved, usage decisions, receipt
anomalies, peer errors, rate-limit refusals, store commits and the event loop's lag (README "Monitoring").
Each figure is read the way Prometheus reads it: from ``/metrics`` on the management listener."""

from __future__ import annotations

import asyncio

import pytest
from attack_setup import CONTENT, agreement_with_data
from prometheus_client.parser import text_string_to_metric_families

from connector.client import ClientError
from connector.metrics import software_version
from connector.store.migrations import MIGRATIONS
from connector.testing import eventually, free_port, store_connection

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}


async def scrape(nodes, node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of *node*'s metrics, read with its admin token: (name, sorted labels) -> value."""
    text = await nodes.client(node, node.admin_token).metrics()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_negotiation_a_pull_and_a_use_are_counted_on_both_sides(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, OPEN)
    assert (await consumer.client.use(agreement, "u1"))["decision"] == "permit"
    p, c = await scrape(nodes, provider), await scrape(nodes, consumer)
    assert value(p, "tds_negotiations", role="provider", state="FINALIZED") == 1
    assert value(c, "tds_negotiations", role="consumer", state="FINALIZED") == 1
    assert value(p, "tds_transfers", role="provider", state="COMPLETED") == 1
    assert value(c, "tds_transfers", role="consumer", state="COMPLETED") == 1
    assert value(c, "tds_transfers", role="consumer", state="STARTED") == 0
    assert value(p, "tds_transfer_bytes_total", direction="sent") == len(CONTENT)
    assert value(c, "tds_transfer_bytes_total", direction="received") == len(CONTENT)
    assert value(c, "tds_usage_decisions_total", decision="permit") == 1
    assert value(c, "tds_usage_decisions_total", decision="deny") == 0
    assert value(c, "tds_store_commit_seconds_count", durable="true") >= 1  # the use's log entry is fsynced
    assert value(p, "tds_store_commit_seconds_count", durable="false") >= 1
    # a signed DSP request was answered on the provider's public listener
    assert value(p, "tds_http_request_duration_seconds_count", listener="public") >= 1


async def test_a_pushed_payload_is_counted_as_sent_and_received(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, OPEN, pull=False)
    started = await consumer.client.start_transfer(agreement, push=True)
    assert (await consumer.client.transfer(started["id"], wait_s=20))["state"] == "COMPLETED"
    p, c = await scrape(nodes, provider), await scrape(nodes, consumer)
    assert value(p, "tds_transfer_bytes_total", direction="sent") == len(CONTENT)
    assert value(c, "tds_transfer_bytes_total", direction="received") == len(CONTENT)


async def test_a_denied_use_is_counted_as_deny(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    purpose_bound = {"@type": "Set", "permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "R&D"}]}]}
    agreement = await agreement_with_data(provider, consumer, purpose_bound)
    assert (await consumer.client.use(agreement, "u1", purpose="marketing"))["decision"] == "deny"
    c = await scrape(nodes, consumer)
    assert value(c, "tds_usage_decisions_total", decision="deny") == 1
    assert value(c, "tds_usage_decisions_total", decision="permit") == 0


async def test_rate_limit_refusals_are_counted_by_listener_and_budget(nodes):
    node = await nodes.start("acme", management_rate_per_s=0.001, management_burst=2)
    await node.client.participant()
    await node.client.participant()
    with pytest.raises(ClientError) as info:
        await node.client.participant()
    assert info.value.status == 429
    samples = await scrape(nodes, node)  # the admin token has a budget of its own
    assert value(samples, "tds_rate_limit_refusals_total", listener="management", limit="management") == 1
    assert value(samples, "tds_http_requests_total", listener="management", status="429") == 1


async def test_a_peer_that_cannot_be_reached_is_counted_by_kind(nodes):
    node = await nodes.start("acme")
    with pytest.raises(ClientError):
        await node.client.catalog(f"http://127.0.0.1:{free_port()}")
    samples = await scrape(nodes, node)
    assert value(samples, "tds_peer_errors_total", kind="connect") >= 1
    assert value(samples, "tds_peer_errors_total", kind="timeout") == 0


async def test_receipt_anomalies_are_the_stores_own_count_and_survive_a_restart(nodes):
    node = await nodes.start("acme")
    participant_id = node.participant.id
    with store_connection(node.data_dir) as db:
        for detail in ("entry #2 arrived with another hash", "entry #5 arrived with another hash"):
            db.execute("INSERT INTO receipt_anomalies (participant_id, agreement_id, at, kind, detail) "
                       "VALUES (?, 'agr-1', '2026-01-01T00:00:00Z', 'fork', ?)", [participant_id, detail])
    assert value(await scrape(nodes, node), "tds_receipt_anomalies_total", kind="fork") == 2
    await nodes.restart(node)
    samples = await scrape(nodes, node)
    assert value(samples, "tds_receipt_anomalies_total", kind="fork") == 2
    assert value(samples, "tds_receipt_anomalies_total", kind="gap") == 0


async def test_build_info_names_the_software_and_schema_version(nodes):
    node = await nodes.start("acme")
    samples = await scrape(nodes, node)
    assert value(samples, "tds_build_info", version=software_version(), schema=str(len(MIGRATIONS))) == 1


async def test_the_event_loop_lag_is_measured_while_the_node_runs_and_its_task_ends_with_it(nodes):
    node = await nodes.start("acme")

    async def measured():
        return value(await scrape(nodes, node), "tds_event_loop_lag_seconds_count") >= 1

    await eventually(measured, 10, what="a lag measurement")
    task = node.node.loop_lag.task
    assert task is not None and not task.done()
    await node.node.stop()
    assert task.done() and node.node.loop_lag.task is None
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "tds-event-loop-lag"]


async def test_two_nodes_in_one_process_keep_their_own_figures(nodes):
    a, b = await nodes.start("acme"), await nodes.start("parts")
    await nodes.host(a, "sme-one")
    assert value(await scrape(nodes, a), "tds_participants") == 2
    assert value(await scrape(nodes, b), "tds_participants") == 1
