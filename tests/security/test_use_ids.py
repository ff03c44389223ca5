"""Attacks on the usage API's use ids: a use id permitted once must not become unlimited release.

A use id names one use by one application for one action and purpose. A retry with the same parameters
by the same application is re-delivered at most ``usage.redeliveries`` times within
``usage.redelivery_window_s``, counted once, each re-delivery logged; anything else is a 409.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from attack_setup import CONTENT, agreement_with_data, use

from connector.config import UsageSection
from connector.testing import eventually
from usage_policies import templates

TERMS = templates.combine(templates.purpose("qi", "R&D"), templates.max_uses("qi", 5),
                          templates.for_duration("qi", "P30D"))
USE = {"useId": "report-1", "action": "use", "purpose": "R&D", "deliver": True}


async def test_twenty_repeats_release_the_data_three_more_times_then_409(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, TERMS)
    answers = [await use(consumer.node, consumer.token, {**USE, "agreementId": agreement}) for _ in range(20)]
    assert [a[0] for a in answers] == [200] * 4 + [409] * 16
    assert all(a[1] == CONTENT for a in answers[:4])
    refusal = json.loads(answers[4][1])
    assert refusal["conflict"] == ["redeliveries"] and "usage.redeliveries" in refusal["message"]
    assert CONTENT[:20] not in answers[4][1]
    summary = await consumer.client.usage(agreement)
    assert summary["uses"] == 1  # counted once
    entries = (await consumer.client.usage_log(agreement))["entries"]
    assert [e["kind"] for e in entries] == ["use", "redelivery", "redelivery", "redelivery"]


@pytest.mark.parametrize(("change", "conflict"), [({"purpose": "marketing"}, "purpose"),
                                                  ({"action": "distribute"}, "action")])
async def test_the_same_use_id_with_another_purpose_or_action_is_409(nodes, change, conflict):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, TERMS)
    assert (await use(consumer.node, consumer.token, {**USE, "agreementId": agreement}))[0] == 200
    status, body, _ = await use(consumer.node, consumer.token, {**USE, "agreementId": agreement, **change})
    assert status == 409 and json.loads(body)["conflict"] == [conflict]
    assert len((await consumer.client.usage_log(agreement))["entries"]) == 1


async def test_another_applications_token_cannot_replay_a_use_id(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, TERMS)
    assert (await use(consumer.node, consumer.token, {**USE, "agreementId": agreement}))[0] == 200
    other = (await consumer.client.create_token("reporting"))["token"]
    status, body, _ = await use(consumer.node, other, {**USE, "agreementId": agreement})
    assert status == 409 and json.loads(body)["conflict"] == ["application"]
    assert CONTENT[:20] not in body


async def test_a_retry_after_the_redelivery_window_is_409(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, TERMS)
    p = consumer.participant
    first = await consumer.node.usage.use(p, application="cli", agreement_id=agreement, action="use",
                                          purpose="R&D", use_id="late")
    assert first.permitted
    later = datetime.now(UTC) + timedelta(seconds=301)
    with pytest.raises(Exception) as refused:
        await consumer.node.usage.use(p, application="cli", agreement_id=agreement, action="use", purpose="R&D",
                                      use_id="late", now=later)
    assert getattr(refused.value, "status", None) == 409 and "usage.redelivery_window_s" in str(refused.value)


async def test_a_retry_is_decided_again_and_a_closed_policy_window_refuses_it(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, TERMS)
    # Keep the re-delivery window open past the policy's 30 days, so that the policy decides the retry.
    node = consumer.node
    node.usage.config = UsageSection(redelivery_window_s=90 * 86400)
    p = consumer.participant
    assert (await node.usage.use(p, application="cli", agreement_id=agreement, action="use", purpose="R&D",
                                 use_id="u1")).permitted
    retry = await node.usage.use(p, application="cli", agreement_id=agreement, action="use", purpose="R&D",
                                 use_id="u1", now=datetime.now(UTC) + timedelta(days=31))
    assert not retry.permitted and retry.repeated
    assert any("elapsedTime" in r or "P30D" in r for r in retry.reasons), retry.reasons


async def test_a_retry_after_revocation_is_refused(nodes):
    provider, consumer = await nodes.start("acme"), await nodes.start("parts")
    agreement = await agreement_with_data(provider, consumer, TERMS)
    assert (await use(consumer.node, consumer.token, {**USE, "agreementId": agreement}))[0] == 200
    await provider.client.revoke(agreement, "contract ended")

    async def revoked():
        return (await consumer.client.agreement(agreement))["state"] == "REVOKED"

    await eventually(revoked)
    status, body, _ = await use(consumer.node, consumer.token, {**USE, "agreementId": agreement})
    assert status == 409 and CONTENT[:20] not in body
