"""plan_use: a permitted use's duties become effects; a deny has none."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from usage_policies import templates as t
from usage_policies.enforce import (
    AppendLog,
    DeleteAt,
    IncrementCounter,
    InformProvider,
    Meter,
    UsageState,
    plan_use,
)
from usage_policies.evaluate import DutyState, Outcome, Request
from usage_policies.jsonld import parse_policy
from usage_policies.report import DeonticState

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
A, PROVIDER, CONSUMER = "urn:asset:a", "did:web:provider", "did:web:consumer"
USE = Request(party=CONSUMER, action="use", target=A)


def agreement(offer: dict) -> dict:
    return {**offer, "@type": "Agreement", "assigner": PROVIDER, "assignee": CONSUMER}


def plan(offer: dict, state: UsageState | None = None, request: Request = USE):
    return plan_use(parse_policy(agreement(offer)), state or UsageState(), request, NOW)


def test_every_permitted_use_is_counted():
    p = parse_policy(agreement(t.allow(A)))
    result = plan_use(p, UsageState(), USE, NOW)
    assert result.permitted
    assert result.effects == (IncrementCounter(key=p.uid, at=NOW),)


def test_counter_comes_from_the_usage_state():
    assert plan(t.max_uses(A, 2), UsageState(use_count=1)).permitted
    refused = plan(t.max_uses(A, 2), UsageState(use_count=2))
    assert refused.decision.outcome is Outcome.DENY and refused.effects == ()
    assert "use count is 3, policy requires at most 2" in refused.decision.reasons[0]


def test_log_each_use_appends_a_log_entry():
    effects = plan(t.log_each_use(A)).effects
    assert AppendLog(agreement=effects[0].key, party=CONSUMER, action="http://www.w3.org/ns/odrl/2/use",
                     target=A, at=NOW) in effects


@pytest.mark.parametrize(("informed", "expected"), [(None, PROVIDER), ("did:web:auditor", "did:web:auditor")])
def test_inform_on_use_informs_the_provider_or_the_named_party(informed, expected):
    effects = plan(t.inform_on_use(A, informed_party=informed)).effects
    assert [e.party for e in effects if isinstance(e, InformProvider)] == [expected]


@pytest.mark.parametrize(
    ("first_use", "delete_at"),
    [(None, datetime(2025, 7, 1, 12, 0, tzinfo=UTC)),  # first use now: 30 days from now
     (datetime(2025, 5, 10, tzinfo=UTC), datetime(2025, 6, 9, tzinfo=UTC))],
)
def test_use_and_delete_after_schedules_deletion_from_first_use(first_use, delete_at):
    effects = plan(t.use_and_delete_after(A, "P30D"), UsageState(first_use=first_use)).effects
    assert DeleteAt(target=A, time=delete_at) in effects


def test_use_and_delete_after_refuses_use_once_the_period_is_over():
    result = plan(t.use_and_delete_after(A, "P30D"), UsageState(first_use=datetime(2025, 4, 1, tzinfo=UTC)))
    assert not result.permitted


def test_delete_without_period_is_due_right_after_the_use():
    assert DeleteAt(target=A, time=NOW) in plan(t.use_and_delete_after(A)).effects


def test_price_per_use_meters_the_amount():
    effects = plan(t.price_per_use(A, "0.25", "http://dbpedia.org/resource/Euro")).effects
    assert Meter(amount=Decimal("0.25"), unit="http://dbpedia.org/resource/Euro", party=PROVIDER) in effects


def priced(duty: dict) -> dict:
    return {"@id": "urn:p", "@type": "Offer", "target": A, "permission": [{"action": "use", "duty": [duty]}]}


@pytest.mark.parametrize("per", ["use", "query"])
def test_a_price_per_use_or_per_query_meters_each_use(per):
    effects = plan(priced(t.price_duty("0.25", "CNY", per=per))).effects
    assert [e for e in effects if isinstance(e, Meter)] == [Meter(amount=Decimal("0.25"), unit="CNY", party=PROVIDER)]


@pytest.mark.parametrize("per", ["gigabyte", "period"])
def test_a_price_per_gigabyte_or_per_period_is_left_to_the_statement(per):
    result = plan(priced(t.price_duty("10", "CNY", per=per)))
    assert result.permitted and not [e for e in result.effects if isinstance(e, Meter)]


def test_a_price_meters_its_compensated_party():
    duty = {**t.price_duty("1", "CNY"), "odrl:compensatedParty": "did:web:collector"}
    assert [e.party for e in plan(priced(duty)).effects if isinstance(e, Meter)] == ["did:web:collector"]


@pytest.mark.parametrize(("duty", "reason"), [
    ({"action": "odrl:compensate"}, "duty 'compensate' states no payAmount, so it cannot be metered"),
    ({"action": "odrl:compensate", "constraint": [
        {"leftOperand": "odrl:payAmount", "operator": "gt", "rightOperand": "1", "unit": "CNY"}]},
     "payAmount is stated with 'eq', not 'gt'"),
    ({"action": "odrl:compensate", "constraint": [
        {"leftOperand": "odrl:payAmount", "operator": "eq", "rightOperand": "1"}]},
     "a price names no currency (the payAmount constraint's unit)"),
])
def test_a_price_that_cannot_be_metered_refuses_the_use_with_the_reason(duty, reason):
    result = plan(priced(duty))
    assert not result.permitted and result.effects == ()
    assert result.decision.reasons[-1] == reason


def test_a_duty_the_node_cannot_carry_out_refuses_the_use():
    offer = {"@id": "urn:p", "@type": "Offer", "target": A,
             "permission": [{"action": "use", "duty": [{"action": "odrl:watermark"}]}]}
    result = plan(offer)
    assert not result.permitted and result.effects == ()
    assert "cannot be carried out" in result.decision.reasons[-1]


def test_pre_condition_duty_blocks_until_the_usage_state_reports_it_fulfilled():
    offer = {"@id": "urn:p", "@type": "Offer", "target": A,
             "permission": [{"action": "use",
                             "duty": [{"@id": "urn:consent", "action": "odrl:obtainConsent"}]}]}
    assert not plan(offer).permitted
    done = UsageState(duty_states={"urn:consent": DutyState(deontic=DeonticState.FULFILLED)})
    result = plan(offer, done)
    assert result.permitted and len(result.effects) == 1  # the consent is not an effect, only the count


def test_deny_has_no_effects():
    result = plan(t.purpose(A, "R&D"), request=Request(party=CONSUMER, target=A, purpose="ads"))
    assert result.decision.outcome is Outcome.DENY and result.effects == ()


def test_a_before_use_duty_without_a_uid_is_reported_by_its_path():
    offer = {"@id": "urn:p", "@type": "Offer", "target": A,
             "permission": [{"action": "use", "duty": [{"action": "odrl:obtainConsent"}]}]}
    assert not plan(offer).permitted
    done = UsageState(duty_states={"permission[0].duty[0]": DutyState(deontic=DeonticState.FULFILLED)})
    assert plan(offer, done).permitted


@pytest.mark.parametrize(
    ("operator", "deadline"),
    [("lt", datetime(2025, 7, 1, tzinfo=UTC)), ("lteq", datetime(2025, 7, 2, tzinfo=UTC))],
)
def test_a_deletion_deadline_given_as_a_date_is_that_days_start_or_end(operator, deadline):
    offer = {"@id": "urn:p", "@type": "Offer", "target": A, "permission": [{"action": "use", "duty": [
        {"action": "odrl:delete", "constraint": [{"leftOperand": "dateTime", "operator": operator,
                                                  "rightOperand": {"@value": "2025-07-01", "@type": "xsd:date"}}]}]}]}
    assert DeleteAt(target=A, time=deadline) in plan(offer).effects
