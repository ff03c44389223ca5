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
