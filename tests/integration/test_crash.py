"""kill -9 of the provider at three points of a negotiation: both sides still end FINALIZED, with one
agreement each, and no message handled twice."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from connector.testing import ProcessNode


@pytest.mark.parametrize(
    "crash_at",
    ["provider-after-storing-request", "after-delivering-agreement", "provider-after-receiving-verification"],
)
async def test_provider_killed_mid_negotiation_recovers(nodes, tmp_path, crash_at):
    provider = ProcessNode(tmp_path, "acme")
    await provider.start({"TDS_CRASH_AT": crash_at})
    admin = provider.client
    try:
        await admin.add_asset({"id": "qi"})
        await admin.add_policy("open", {"@type": "Set", "permission": [{"action": "use"}]})
        await admin.add_contract_definition("cd", access_policy_id="open", contract_policy_id="open", assets=["qi"])
        consumer = await nodes.start("parts")
        info = await admin.participant()
        peer = info["dspEndpoint"]
        catalog = await consumer.client.catalog(peer)
        offer = catalog["dataset"][0]["hasPolicy"][0]["@id"]

        started = await consumer.client.negotiate(peer, offer)
        assert await provider.exited(20) == -signal.SIGKILL  # it really was killed at the crash point
        await provider.start()  # restarted, as an operator or a supervisor would

        mine = await consumer.client.negotiation(started["id"], wait_s=30)
        assert mine["state"] == "FINALIZED", mine
        theirs = await admin.negotiation(mine["providerPid"], wait_s=30)
        assert theirs["state"] == "FINALIZED", theirs
        assert [a["id"] for a in await consumer.client.agreements()] == [mine["agreement"]["@id"]]
        assert [a["id"] for a in await admin.agreements()] == [mine["agreement"]["@id"]]
        for side in (mine, theirs):
            handled = Counter(e["detail"].split(" from ")[0] for e in side["history"] if e["kind"] == "message-in")
            assert all(n == 1 for n in handled.values()), (crash_at, side["history"])
    finally:
        await provider.stop()
