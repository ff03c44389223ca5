"""Templates: each produces a DSP-valid offer that the engine reads back and enforces as named."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from dsp_schema import dsp_errors

from usage_policies import templates as t
from usage_policies.evaluate import Outcome, Request, World, evaluate
from usage_policies.jsonld import parse_policy, to_dsp

A = "urn:asset:a"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EURO = "http://dbpedia.org/resource/Euro"

ALL = {
    "allow": t.allow(A),
    "prohibit": t.prohibit(A, "odrl:distribute"),
    "restrict_to": t.restrict_to(A, ["did:web:b", "did:web:c"]),
    "purpose": t.purpose(A, ["R&D", "safety"]),
    "region": t.region(A, "CN"),
    "no_export_outside": t.no_export_outside(A, "CN"),
    "verified_region": t.verified_region(A, ["CN-GD", "CN-BJ"]),
    "member_of": t.member_of(A, "urn:tds:space:auto-parts"),
    "member_of[any]": t.member_of(A, ["urn:tds:space:auto-parts", "urn:tds:space:optics"]),
    "max_uses": t.max_uses(A, 3),
    "during": t.during(A, "2025-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
    "for_duration": t.for_duration(A, "P30D"),
    "use_and_delete_after": t.use_and_delete_after(A, "P7D"),
    "log_each_use": t.log_each_use(A),
    "inform_on_use": t.inform_on_use(A),
    "price_per_use": t.price_per_use(A, "1.50", EURO),
    **{f"data_class_defaults[{c}]": t.data_class_defaults(A, c, purposes="R&D")
       for c in ("general", "important", "core", "personal")},
    "combine": t.combine(t.restrict_to(A, "did:web:b"), t.purpose(A, "R&D"), t.max_uses(A, 2)),
    "sandbox": t.sandbox(A, columns=["region", "salary"], aggregates=["count", "sum"], min_group_size=20,
                         epsilon_per_query=0.5, epsilon_total=5, max_queries=3,
                         templates=[{"id": "t", "sql": "SELECT count(*) FROM data WHERE age > :a",
                                     "parameters": {"a": "integer"}}]),
    "sandbox[templates only]": t.sandbox(A, templates=[{"id": "t", "sql": "SELECT count(*) FROM data"}]),
}


@pytest.mark.parametrize("name", ALL)
def test_template_is_dsp_valid_and_round_trips(name):
    offer = ALL[name]
    assert dsp_errors(offer) == []
    policy = parse_policy(offer)
    assert parse_policy(to_dsp(policy)) == policy


def test_ids_are_stable_and_content_based():
    assert t.max_uses(A, 3)["@id"] == t.max_uses(A, 3)["@id"] != t.max_uses(A, 4)["@id"]


def decide(offer: dict, world: World | None = None, **request) -> Outcome:
    fields = {"party": "did:web:b", "action": "use", "target": A, **request}
    return evaluate(parse_policy(offer), Request(**fields), world or World(), NOW).outcome


@pytest.mark.parametrize(
    ("name", "request_fields", "outcome"),
    [
        ("allow", {}, Outcome.PERMIT),
        ("prohibit", {"action": "odrl:distribute"}, Outcome.DENY),
        ("prohibit", {"action": "odrl:read"}, Outcome.PERMIT),
        ("restrict_to", {"party": "did:web:c"}, Outcome.PERMIT),
        ("restrict_to", {"party": "did:web:z"}, Outcome.DENY),
        ("purpose", {"purpose": "safety"}, Outcome.PERMIT),
        ("purpose", {"purpose": "ads"}, Outcome.DENY),
        ("region", {"region": "CN-GD-GZ"}, Outcome.PERMIT),
        ("region", {"region": "DE"}, Outcome.DENY),
        ("no_export_outside", {"export_destination": "CN-SH"}, Outcome.PERMIT),
        ("no_export_outside", {"export_destination": "US"}, Outcome.DENY),
        ("verified_region", {"verified_region": "CN-GD"}, Outcome.PERMIT),
        ("verified_region", {"verified_region": "CN-SH"}, Outcome.DENY),
        ("verified_region", {"region": "CN-GD"}, Outcome.DENY),  # stated, not verified
        ("member_of", {"member_of": ("urn:tds:space:optics", "urn:tds:space:auto-parts")}, Outcome.PERMIT),
        ("member_of", {"member_of": ("urn:tds:space:optics",)}, Outcome.DENY),
        ("member_of", {}, Outcome.DENY),
        ("member_of[any]", {"member_of": ("urn:tds:space:optics",)}, Outcome.PERMIT),
        ("max_uses", {"use_count": 2}, Outcome.PERMIT),
        ("max_uses", {"use_count": 3}, Outcome.DENY),
        ("during", {}, Outcome.PERMIT),
        ("for_duration", {"first_use": datetime(2025, 5, 2, 12, tzinfo=UTC)}, Outcome.PERMIT),
        ("for_duration", {"first_use": datetime(2025, 5, 1, tzinfo=UTC)}, Outcome.DENY),
        ("data_class_defaults[core]", {"region": "CN", "export_destination": "CN"}, Outcome.PERMIT),
        ("data_class_defaults[core]", {"region": "CN", "export_destination": "CN", "action": "odrl:sell"},
         Outcome.DENY),
        ("data_class_defaults[core]", {"region": "US", "export_destination": "CN"}, Outcome.DENY),
        ("data_class_defaults[personal]", {"purpose": "R&D", "export_destination": "CN"}, Outcome.PERMIT),
        ("data_class_defaults[personal]", {"purpose": "ads", "export_destination": "CN"}, Outcome.DENY),
        ("combine", {"purpose": "R&D", "use_count": 1}, Outcome.PERMIT),
        ("combine", {"purpose": "R&D", "use_count": 2}, Outcome.DENY),
        ("combine", {"purpose": "R&D", "party": "did:web:z"}, Outcome.DENY),
        # the sandbox's terms are applied to each query by the provider's sandbox: they hold at decision time
        ("sandbox", {"action": "odrl:aggregate"}, Outcome.PERMIT),
        ("sandbox", {"action": "aggregate", "use_count": 2}, Outcome.PERMIT),
        ("sandbox", {"action": "aggregate", "use_count": 3}, Outcome.DENY),
        ("sandbox", {"action": "use"}, Outcome.DENY),  # computation only: no other use
        ("sandbox[templates only]", {"action": "odrl:aggregate"}, Outcome.PERMIT),
    ],
)
def test_template_means_what_it_says(name, request_fields, outcome):
    assert decide(ALL[name], **request_fields) is outcome


def test_during_excludes_its_end():
    offer = t.during(A, "2025-01-01T00:00:00Z", "2025-06-01T12:00:00Z")
    assert decide(offer) is Outcome.DENY


@pytest.mark.parametrize(
    "build",
    [lambda: t.max_uses(A, 0), lambda: t.for_duration(A, "30 days"), lambda: t.price_per_use(A, "-1", EURO),
     lambda: t.data_class_defaults(A, "secret"), lambda: t.data_class_defaults(A, "personal"),
     lambda: t.combine(t.allow(A), t.allow("urn:other")), lambda: t.purpose(A, []), lambda: t.member_of(A, []),
     lambda: t.verified_region(A, []), lambda: t.sandbox(A), lambda: t.sandbox(A, epsilon_total=1),
     lambda: t.sandbox(A, aggregates=["median"], templates=[{"id": "t", "sql": "SELECT 1"}])],
)
def test_builders_reject_nonsense(build):
    with pytest.raises(ValueError):
        build()


def test_policy_from_options_without_options_allows_use():
    assert t.policy_from_options() == {"@type": "Offer", "permission": [{"action": "use"}]}


def test_policy_from_options_combines_the_templates_it_names():
    policy = t.policy_from_options(["R&D"], 2, "P30D", export_region="CN", log_uses=True, inform=True)
    assert "target" not in policy and "@id" not in policy  # the offer sets the target, publishing the id
    offer = {**policy, "target": A, "@id": "urn:uuid:options"}
    assert decide(offer, purpose="R&D", use_count=1, export_destination="CN") is Outcome.PERMIT
    assert decide(offer, purpose="ads", use_count=1, export_destination="CN") is Outcome.DENY
    assert decide(offer, purpose="R&D", use_count=3, export_destination="CN") is Outcome.DENY
    assert decide(offer, purpose="R&D", use_count=1, export_destination="US") is Outcome.DENY
    [permission] = policy["permission"]
    assert {d["action"] for d in permission["duty"]} == {"odrl:acceptTracking", "odrl:inform"}


@pytest.mark.parametrize("options", [{"uses": 0}, {"duration": "thirty days"}])
def test_policy_from_options_names_a_bad_value(options):
    with pytest.raises(ValueError):
        t.policy_from_options(**options)


def test_sandbox_terms_are_reported_as_terms_not_decided():
    decision = evaluate(parse_policy(ALL["sandbox"]), Request(party="did:web:b", action="odrl:aggregate", target=A),
                        World(), NOW)
    terms = [c for c in decision.report.rules[0].constraints if "tds/v1#" in (c.left_operand or "")]
    assert len(terms) == 6 and all(c.satisfied for c in terms)
    assert all("data sandbox applies to each query" in (c.reason or "") for c in terms)


def test_a_sandbox_term_with_an_unreadable_right_operand_is_still_a_syntax_error():
    from usage_policies.errors import PolicySyntaxError

    bad = {"@type": "Offer", "permission": [{"action": "odrl:aggregate", "constraint": [
        {"leftOperand": "https://w3id.org/tds/v1#minGroupSize", "operator": "gteq",
         "rightOperand": {"@value": "ten", "@type": "http://www.w3.org/2001/XMLSchema#integer"}}]}]}
    with pytest.raises(PolicySyntaxError):
        parse_policy(bad)


def test_sandbox_from_options_is_the_sandbox_template_without_a_target():
    """What ``tds policy add --sandbox`` stores: the offer of an asset sets the target, publishing gives the id."""
    options = {"columns": ["region"], "aggregates": ["count"], "min_group_size": 5, "max_queries": 4,
               "templates": [{"id": "t", "sql": "SELECT count(*) FROM data"}]}
    built = t.sandbox_from_options(**options)
    assert "target" not in built and "@id" not in built
    full = t.sandbox(A, **options)
    assert built == {k: v for k, v in full.items() if k not in ("target", "@id")}


@pytest.mark.parametrize("options", [{}, {"epsilon_total": 1}, {"epsilon_per_query": 2, "epsilon_total": 1},
                                     {"min_group_size": 0, "epsilon_per_query": 1, "epsilon_total": 1}])
def test_sandbox_from_options_names_a_bad_combination(options):
    with pytest.raises(ValueError):
        t.sandbox_from_options(**options)


# -- prices --------------------------------------------------------------------------------------------------------

PRICES = {
    "per use": t.price_duty("0.50", "CNY"),
    "per query": t.price_duty("2", "CNY", per="query", rounding="1 half-even"),
    "per gigabyte, tiered": t.price_duty("10.00", EURO, per="gigabyte", tiers=["100:8.00", "1000:5.00"]),
    "per week": t.price_duty("99.90", "CNY", per="period", period="P1W", rounding="0.1 up"),
    "per day, pre-paid": t.price_duty("5", "CNY", per="period", period="P1D", prepaid=True),
}


def priced(duty: dict) -> dict:
    return t.offer(A, permissions=[{"action": "use", "duty": [duty]}])


def price_of(policy: dict):
    from usage_policies import pricing

    return pricing.price_terms(parse_policy(policy))


@pytest.mark.parametrize("name", PRICES)
def test_a_price_is_a_dsp_valid_offer(name):
    assert dsp_errors(priced(PRICES[name])) == []


@pytest.mark.parametrize(("name", "expected"), [
    ("per use", ("use", "0.50", "CNY", (), "P1M", "0.01 half-up", False)),
    ("per query", ("query", "2", "CNY", (), "P1M", "1 half-even", False)),
    ("per gigabyte, tiered", ("gigabyte", "10.00", "Euro", ("100:8.00", "1000:5.00"), "P1M", "0.01 half-up", False)),
    ("per week", ("period", "99.90", "CNY", (), "P1W", "0.1 up", False)),
    ("per day, pre-paid", ("period", "5", "CNY", (), "P1D", "0.01 half-up", True)),
])
def test_a_price_reads_back_as_written(name, expected):
    from usage_policies import pricing

    [term] = price_of(priced(PRICES[name]))
    assert (term.basis.value, pricing.amount_text(term.unit_price), term.currency,
            tuple(map(pricing.tier_text, term.tiers)), term.period, str(term.rounding), term.prepaid) == expected


@pytest.mark.parametrize("name", PRICES)
def test_a_price_survives_the_dsp_form(name):
    policy = parse_policy(priced(PRICES[name]))
    assert price_of(to_dsp(policy)) == price_of(priced(PRICES[name]))


def test_the_price_per_use_template_is_a_post_paid_price_per_use():
    from usage_policies import pricing

    [term] = price_of(t.price_per_use(A, "1.50", EURO))
    assert (term.basis, term.unit_price, term.currency, term.prepaid) == (pricing.Basis.USE, Decimal("1.50"), "Euro",
                                                                         False)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"amount": "-1"}, "plain non-negative decimal"),
    ({"amount": "1e3"}, "plain non-negative decimal"),
    ({"amount": "NaN"}, "plain non-negative decimal"),
    ({"amount": "1.5000000000001"}, "plain non-negative decimal"),
    ({"per": "hour"}, "a price is per use, query, gigabyte, period, not 'hour'"),
    ({"period": "P1Y"}, "the billing period must be one of P1M, P1W, P1D, not 'P1Y'"),
    ({"rounding": "0.05 half-up"}, "the rounding quantum must be 1, 0.1"),
    ({"rounding": "0.01 nearest"}, "rounding must be '<quantum> <mode>'"),
    ({"tiers": ["1000"]}, "a price tier is '<from>:<unit price>'"),
    ({"tiers": ["0:1"]}, "price tiers start at distinct quantities above 0"),
    ({"tiers": ["5:1", "5:2"]}, "price tiers start at distinct quantities above 0"),
    ({"tiers": [f"{i}:1" for i in range(1, 18)]}, "at most 16"),
    ({"currency": ""}, "a price needs a currency"),
    ({"currency": "=cmd|' /C calc'!A0"}, "a currency is a code such as CNY"),
])
def test_a_price_with_a_bad_value_is_refused_with_a_readable_reason(kwargs, reason):
    arguments = {"amount": "1", "currency": "CNY", **kwargs}
    with pytest.raises(ValueError, match=re.escape(reason)):
        t.price_duty(arguments.pop("amount"), arguments.pop("currency"), **arguments)
