"""Attack: go on using a management token after it was revoked, or after its participant was suspended or
removed, counting on the node still holding the token in memory from the request just before.

The node keeps the tokens it found in its store for a few seconds; each test first has the token used (so that
it is held), then changes it through the API and sends the very next request at once."""

from __future__ import annotations

import pytest
from refusals import refused


@pytest.fixture
async def hosted(nodes):
    """acme hosts alpha; the admin's client and alpha."""
    host = await nodes.start("acme")
    return host, nodes.client(host, host.admin_token), await nodes.host(host, "alpha")


async def test_a_revoked_token_is_refused_on_the_very_next_request(nodes, hosted):
    host, _, alpha = hosted
    made = await alpha.client.create_token("erp")
    app = nodes.client(host, made["token"])
    assert (await app.participant())["name"] == "alpha"
    await alpha.client.revoke_token(made["id"])
    error = await refused(app.participant(), 401)
    assert "unknown or revoked token" in error.message


async def test_a_suspended_participants_token_is_refused_on_the_very_next_use(hosted):
    _, admin, alpha = hosted
    assert (await alpha.client.participant())["name"] == "alpha"
    await admin.suspend_participant("alpha", "hosting contract ended")
    error = await refused(alpha.client._call("POST", "/usage", {"agreementId": "urn:uuid:x", "useId": "u1"}), 403)
    assert "suspended" in error.message


async def test_a_removed_participants_token_is_unknown_on_the_very_next_request(hosted):
    _, admin, alpha = hosted
    assert (await alpha.client.participant())["name"] == "alpha"
    await admin.remove_participant("alpha")
    await refused(alpha.client.participant(), 401)


async def test_a_revoked_metrics_token_is_refused_on_the_very_next_scrape(nodes, hosted):
    host, admin, _ = hosted
    made = await admin.create_metrics_token("prometheus")
    scraper = nodes.client(host, made["token"])
    assert "tds_http_requests" in await scraper.metrics()
    await admin.revoke_metrics_token(made["id"])
    await refused(scraper.metrics(), 401)


async def test_on_a_shared_store_a_token_revoked_by_another_process_is_refused_on_the_next_request(
        nodes, hosted, nodes_on_postgres):
    """Several processes of a node share a PostgreSQL store: a revocation made by one of them (here, written to the
    store behind this process's back) must count here at once, so no token is held in memory there."""
    from connector.testing import store_connection

    shared = await nodes.start("beta")
    assert shared.node.store.postgres and shared.node.store.process_id is not None
    made = await shared.client.create_token("erp")
    app = nodes.client(shared, made["token"])
    assert (await app.participant())["name"] == "beta"
    with store_connection(shared.data_dir) as db:  # what another process's revocation writes
        assert db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?",
                          ["2026-12-06T00:00:00Z", made["id"]]).rowcount == 1
    await refused(app.participant(), 401)
    await shared.node.stop()
