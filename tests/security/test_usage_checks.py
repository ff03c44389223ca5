"""Attacks on the usage API's dry run and on the agreements listing.

A dry run (``"dryRun": true``) answers what a use would be decided now and must never become a use: it
takes no use id and no ``deliver``, counts nothing, logs nothing, releases nothing, and is bounded like any
call. Another participant's token learns nothing from it. A revoked agreement says so, with its reason,
everywhere; a listing filter that is not a state is a 400 naming it.
"""

from __future__ import annotations

import json

import pytest
from attack_setup import CONTENT, agreement_with_data, use

from connector.ratelimit import RateLimiter
from connector.testing import eventually
from usage_policies import templates

MAX3 = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 3),
                         templates.for_duration("qi", "P30D"))
CHECK = {"action": "use", "purpose": "R&D", "dryRun": True}


async def _entries(consumer, agreement) -> list[dict]:
    return (await consumer.client.usage_log(agreement))["entries"]


async def test_dry_runs_count_nothing_and_answer_as_the_use_would(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3)
    for _ in range(10):
        status, body, headers = await use(consumer.node, consumer.token, {**CHECK, "agreementId": agreement})
        answer = json.loads(body)
        assert status == 200 and answer["decision"] == "permit" and answer["dryRun"] is True, answer
        assert answer["allowance"]["usesLeft"] == 3 and answer["dataHeld"] is True and answer["seq"] == 0
        assert CONTENT[:20] not in body and "X-TDS-Decision" not in headers
    assert await _entries(consumer, agreement) == []
    for i in range(3):
        assert (await consumer.client.use(agreement, f"u{i}", purpose="R&D"))["decision"] == "permit"
    status, body, _ = await use(consumer.node, consumer.token, {**CHECK, "agreementId": agreement})
    answer = json.loads(body)
    assert status == 403 and answer["decision"] == "deny" and answer["dryRun"] is True
    assert any("count" in r for r in answer["reasons"]) and answer["allowance"]["usesLeft"] == 0
    wrong = await consumer.client.check_use(agreement, purpose="marketing")
    assert wrong["decision"] == "deny" and any("purpose" in r for r in wrong["reasons"])
    assert len(await _entries(consumer, agreement)) == 3
    assert (await consumer.client.usage(agreement))["uses"] == 3


@pytest.mark.parametrize(("extra", "path"), [
    ({"useId": "report-1"}, "$.useId"),
    ({"deliver": True}, "$.deliver"),
    ({"deliver": False}, "$.deliver"),
    ({"useId": "report-1", "deliver": True}, "$.useId"),
])
async def test_a_dry_run_that_names_a_use_or_asks_for_the_data_is_a_400(nodes, extra, path):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3)
    status, body, _ = await use(consumer.node, consumer.token, {**CHECK, "agreementId": agreement, **extra})
    answer = json.loads(body)
    assert status == 400 and answer["path"] == path and "dry run" in answer["message"], answer
    assert CONTENT[:20] not in body
    assert await _entries(consumer, agreement) == []
    # The use id it named is still free: a real use under it is the first.
    assert (await consumer.client.use(agreement, "report-1", purpose="R&D"))["seq"] == 1


@pytest.mark.parametrize(("body", "path"), [
    ({"dryRun": "yes"}, "$.dryRun"),
    ({"dryRun": True, "count": 0}, "$.count"),
    ({"dryRun": True, "purpose": "x" * 201}, "$.purpose"),
    ({}, "$.useId"),  # a use without a use id, and no dry run
])
async def test_a_malformed_use_or_dry_run_is_a_400_naming_the_field(nodes, body, path):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3)
    status, raw, _ = await use(consumer.node, consumer.token, {"agreementId": agreement, **body})
    answer = json.loads(raw)
    assert status == 400 and answer["path"] == path, answer
    assert await _entries(consumer, agreement) == []


async def test_another_participants_dry_run_learns_nothing(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3)
    other = await nodes.host(consumer, "sme-two")
    status, body, _ = await use(consumer.node, other.token, {**CHECK, "agreementId": agreement})
    missing, nothing, _ = await use(consumer.node, other.token, {**CHECK, "agreementId": "urn:uuid:nothing"})
    assert (status, missing) == (404, 404)
    assert json.loads(body)["message"] == json.loads(nothing)["message"]  # the same answer as an id that is not
    assert CONTENT[:20] not in body and "dataHeld" not in json.loads(body)
    # Nor does the provider's own side of the agreement pass for a consumer's.
    status, _, _ = await use(provider.node, provider.token, {**CHECK, "agreementId": agreement})
    assert status == 404
    assert await _entries(consumer, agreement) == []


async def test_dry_runs_are_bounded_by_the_participants_request_rate(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3)
    consumer.node.tokens.limit = RateLimiter(rate=0.01, burst=3)
    statuses = [(await use(consumer.node, consumer.token, {**CHECK, "agreementId": agreement}))[0]
                for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    status, _, headers = await use(consumer.node, consumer.token,
                                   {"agreementId": agreement, "useId": "u1", "purpose": "R&D"})
    assert status == 429 and int(headers["Retry-After"]) >= 1


async def test_deliver_false_is_a_counted_use_without_the_data(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3)
    status, body, _ = await use(consumer.node, consumer.token,
                                {"agreementId": agreement, "useId": "u1", "purpose": "R&D", "deliver": False})
    answer = json.loads(body)
    assert status == 200 and answer["decision"] == "permit" and answer["seq"] == 1 and "dryRun" not in answer
    assert CONTENT[:20] not in body
    assert (await consumer.client.usage(agreement))["allowance"]["usesLeft"] == 2


@pytest.mark.parametrize("junk", ["junk", "revoked", "FINALIZED;DROP TABLE agreements", "FINALIZED,", "x" * 5000,
                                  "REVOKED,NOPE", "%00", "FINALIZED OR 1=1"])
async def test_an_agreements_filter_that_is_not_a_state_is_a_400_naming_it(nodes, junk):
    from urllib.parse import quote

    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    await agreement_with_data(provider, consumer, MAX3, pull=False)
    async with __import__("aiohttp").ClientSession(headers={"Authorization": f"Bearer {consumer.token}"}) as s, \
            s.get(f"{consumer.node.management_url}/api/management/v1/agreements?state={quote(junk)}") as r:
        status, answer = r.status, await r.json()
    if junk == "FINALIZED,":  # an empty item is left out, as for the other listings
        assert status == 200 and [a["state"] for a in answer] == ["FINALIZED"]
        return
    assert status == 400 and answer["path"] == "state", answer
    assert "known: AGREED, FINALIZED, REVOKED, VERIFIED" in answer["message"] and len(answer["message"]) < 200


async def test_a_revoked_agreement_says_so_with_its_reason_everywhere(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, MAX3)
    assert (await consumer.client.use(agreement, "u1", purpose="R&D"))["decision"] == "permit"
    await provider.client.revoke(agreement, "contract ended")

    async def applied():
        [row] = await consumer.client.agreements()
        return row if (row.get("revocation") or {}).get("status") == "applied" else None

    row = await eventually(applied)
    assert row["state"] == "REVOKED" and row["revocation"]["reason"] == "contract ended"
    assert row["dataDeleted"]["reason"] == "after the provider's revocation"
    assert [a["id"] for a in await consumer.client.agreements(["REVOKED"])] == [agreement]
    assert await consumer.client.agreements(["FINALIZED"]) == []
    assert (await consumer.client.agreement(agreement))["revocation"]["reason"] == "contract ended"
    [mine] = await provider.client.agreements(["REVOKED"])
    assert mine["revocation"]["reason"] == "contract ended" and mine["role"] == "provider"

    summary = await consumer.client.usage(agreement)
    assert summary["state"] == "REVOKED" and summary["revocation"]["reason"] == "contract ended"
    assert summary["allowance"]["usesLeft"] == 0
    for body in ({"useId": "u2", "purpose": "R&D"}, {"useId": "u3", "purpose": "R&D", "deliver": False}, CHECK):
        status, raw, _ = await use(consumer.node, consumer.token, {**body, "agreementId": agreement})
        message = json.loads(raw)["message"]
        assert status == 409 and "revoked this agreement at " in message and "contract ended" in message, raw
        assert CONTENT[:20] not in raw
