"""Who may read the node's metrics: they are the whole node's (every participant's negotiations, transfers,
uses and peers), so only the operator sees them: the admin token, or a metrics token the admin made for a
scraper. Strangers on the public port, participants and their applications do not.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import pytest

from connector.client import ClientError

PREFIX = "/api/management/v1"


async def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


def _names(text: str) -> set[str]:
    """The sample names and the metric families (``# TYPE NAME …``) of a Prometheus text exposition."""
    samples = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line[:1] not in ("", "#")}
    return samples | {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


async def test_a_stranger_on_the_public_port_reads_no_metrics(nodes):
    node = await nodes.start("acme")
    for path in ("/metrics", "/metrics/", "/participants/acme/metrics"):
        status, body = await _get(f"{node.public_url}{path}")
        assert status == 404 and "tds_" not in body, (path, status, body)
    # not with a valid token either: the public listener has no metrics route at all
    status, body = await _get(f"{node.public_url}/metrics", node.admin_token)
    assert status == 404 and "tds_" not in body


@pytest.mark.parametrize("token", [None, "", "not-a-token", "A" * 43])
async def test_the_management_metrics_need_a_valid_token(nodes, token):
    node = await nodes.start("acme")
    status, body = await _get(f"{node.node.management_url}/metrics", token)
    assert status == 401 and "tds_" not in body, (status, body)


async def test_participants_and_their_applications_do_not_see_node_wide_metrics(nodes):
    node = await nodes.start("acme")
    hosted = await nodes.host(node, "sme-one")
    application = await node.client.create_token("erp-sync")
    for who, token in (("the node's own participant", node.token), ("a hosted participant", hosted.token),
                       ("a participant's application", application["token"])):
        status, body = await _get(f"{node.node.management_url}/metrics", token)
        assert status == 403 and "tds_" not in body, (who, status, body)
        assert "admin token or a metrics token" in body


async def test_the_admin_token_reads_the_metrics_and_every_series_is_named_tds(nodes):
    node = await nodes.start("acme")
    status, text = await _get(f"{node.node.management_url}/metrics", node.admin_token)
    assert status == 200
    names = _names(text)
    assert names and all(name.startswith("tds_") for name in names), sorted(n for n in names if n[:4] != "tds_")
    for series in ("tds_http_requests_total", "tds_http_request_duration_seconds", "tds_rate_limit_refusals_total",
                   "tds_negotiations", "tds_transfers", "tds_transfer_bytes_total", "tds_usage_decisions_total",
                   "tds_receipt_anomalies_total", "tds_peer_errors_total", "tds_store_commit_seconds",
                   "tds_event_loop_lag_seconds", "tds_build_info", "tds_signature_failures_total",
                   "tds_participants", "tds_gossip_refused_items_total", "tds_gossip_sent_bytes_total",
                   "tds_catalog_crawl_events_total"):
        assert series in names, series


async def test_a_metrics_token_reads_the_metrics_and_nothing_else(nodes):
    node = await nodes.start("acme")
    admin = nodes.client(node, node.admin_token)
    created = await admin.create_metrics_token("prometheus")
    scraper = nodes.client(node, created["token"])
    assert "tds_participants 1.0" in await scraper.metrics()
    # nothing of a participant, and none of the admin routes
    for path in ("/participant", "/assets", "/negotiations", "/tokens", "/participants", "/metrics/tokens"):
        status, body = await _get(f"{node.node.management_url}{PREFIX}{path}", created["token"])
        assert status in (403, 404) and "tds_" not in body, (path, status, body)
    with pytest.raises(ClientError) as info:
        await scraper.create_metrics_token("another")
    assert info.value.status == 403
    # listed for the admin (never the value), and revoked it reads nothing
    listed = await admin.metrics_tokens()
    assert [(t["id"], t["application"]) for t in listed] == [(created["id"], "prometheus")]
    assert created["token"] not in str(listed)
    await admin.revoke_metrics_token(created["id"])
    status, _ = await _get(f"{node.node.management_url}/metrics", created["token"])
    assert status == 401


async def test_only_the_admin_makes_metrics_tokens(nodes):
    node = await nodes.start("acme")
    with pytest.raises(ClientError) as info:
        await node.client.create_metrics_token("prometheus")
    assert info.value.status == 403
    with pytest.raises(ClientError) as info:
        await node.client.metrics_tokens()
    assert info.value.status == 403


async def test_a_participant_cannot_revoke_a_metrics_token(nodes):
    node = await nodes.start("acme")
    created = await nodes.client(node, node.admin_token).create_metrics_token("prometheus")
    with pytest.raises(ClientError) as info:
        await node.client.revoke_token(created["id"])  # its own token route: not one of its tokens
    assert info.value.status == 404
    assert (await _get(f"{node.node.management_url}/metrics", created["token"]))[0] == 200


async def _tds(node, token: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connector", *args, "--node", node.node.management_url, "--token", token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


async def test_the_cli_makes_lists_and_revokes_a_metrics_token_with_the_admin_token(nodes):
    node = await nodes.start("acme")
    code, out = await _tds(node, node.admin_token, "token", "create", "prometheus", "--scope", "metrics")
    assert code == 0, out
    value = out.strip().splitlines()[-1]
    assert (await _get(f"{node.node.management_url}/metrics", value))[0] == 200
    code, out = await _tds(node, node.admin_token, "token", "list", "--scope", "metrics", "--json")
    [listed] = json.loads(out)
    assert code == 0 and listed["application"] == "prometheus" and value not in out
    code, out = await _tds(node, node.admin_token, "token", "revoke", listed["id"], "--scope", "metrics")
    assert code == 0, out
    assert (await _get(f"{node.node.management_url}/metrics", value))[0] == 401
    # a participant's token cannot make one
    code, out = await _tds(node, node.token, "token", "create", "prometheus", "--scope", "metrics")
    assert code != 0 and "admin token" in out
