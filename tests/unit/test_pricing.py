"""Prices in agreements (usage_policies.pricing): exact decimals, graduated tiers, rounding rules, billing
periods, and what a compensate duty says read back from ODRL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from usage_policies import pricing
from usage_policies import templates as t
from usage_policies.evaluate import duty_timing
from usage_policies.jsonld import parse_policy
from usage_policies.pricing import Basis, PricingError
from usage_policies.report import DutyTiming

A = "urn:asset:a"
D = Decimal


def offer(*duties: dict) -> dict:
    return t.offer(A, permissions=[{"action": "use", "duty": list(duties)}])


def terms(*duties: dict) -> tuple[pricing.PriceTerm, ...]:
    return pricing.price_terms(parse_policy(offer(*duties)))


def term(amount: str = "3.00", *, tiers: tuple[str, ...] = (), rounding: str = "0.01 half-up",
         basis: Basis = Basis.USE) -> pricing.PriceTerm:
    return pricing.PriceTerm(basis=basis, unit_price=D(amount), currency="CNY",
                             tiers=tuple(sorted((pricing.parse_tier(x) for x in tiers), key=lambda x: x.start)),
                             rounding=pricing.parse_rounding(rounding))


def compensate(*constraints: dict, unit: str | None = "CNY", amount: object = "2.50") -> dict:
    pay = {"leftOperand": "odrl:payAmount", "operator": "eq", "rightOperand": amount}
    return {"action": "odrl:compensate",
            "constraint": [{**pay, **({"unit": unit} if unit else {})}, *constraints]}


def tds(name: str, value: object, operator: str = "eq") -> dict:
    return {"leftOperand": "https://w3id.org/tds/v1#" + name, "operator": operator, "rightOperand": value}


# -- decimals as written ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("0", D(0)), ("12", D(12)), ("2.50", D("2.50")),
    ("999999999999999.999999999999", D("999999999999999.999999999999")), (12, D(12)), (D("2.50"), D("2.50")),
    (D("1E+2"), D(100)),
])
def test_a_plain_decimal_is_read_exactly(text, value):
    parsed = pricing.parse_decimal(text, "x")
    assert parsed == value and str(parsed) == str(value)


@pytest.mark.parametrize("text", [
    "-1", "+1", "1e3", "1E3", "NaN", "nan", "Infinity", "inf", "1.", ".5", "1,5", "12\n", " 12", "12 ", "",
    "1234567890123456", "0.1234567890123", "\u0661\u0662", True, False, 1.5, None, -3, [1], D("NaN"), D("sNaN"),
    D("-1"), D("Infinity"), D("-0"),
])
def test_anything_but_a_plain_non_negative_decimal_is_refused(text):
    with pytest.raises(PricingError, match="plain non-negative decimal"):
        pricing.parse_decimal(text, "x")


# -- rounding ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["0.01 half-up", "1 down", "0.000001 half-even", "0.1 ceiling", "0.001 floor",
                                  "0.01 up"])
def test_a_rounding_rule_reads_back_as_written(text):
    assert str(pricing.parse_rounding(text)) == text


@pytest.mark.parametrize("text", ["0.010 half-up", "1.0 half-up", "0.0000001 half-up", "0.05 half-up", "10 half-up",
                                  "0.01", "0.01 bankers", "", None, "0.01 half-up extra", "-0.01 half-up",
                                  "1e-2 half-up", "half-up 0.01"])
def test_a_rounding_rule_that_is_not_a_power_of_ten_and_a_mode_is_refused(text):
    with pytest.raises(PricingError):
        pricing.parse_rounding(text)


@pytest.mark.parametrize(("rule", "amount", "rounded"), [
    ("0.01 half-up", "2.345", "2.35"), ("0.01 half-up", "2.344", "2.34"), ("0.01 half-even", "2.345", "2.34"),
    ("0.01 half-even", "2.355", "2.36"), ("0.01 up", "2.341", "2.35"), ("0.01 down", "2.349", "2.34"),
    ("0.01 ceiling", "2.341", "2.35"), ("0.01 floor", "2.349", "2.34"), ("1 half-up", "2.5", "3"),
    ("1 half-even", "2.5", "2"), ("0.000001 half-up", "0.0000005", "0.000001"), ("0.01 half-up", "7", "7.00"),
])
def test_rounding_applies_the_quantum_and_the_mode(rule, amount, rounded):
    assert pricing.amount_text(pricing.parse_rounding(rule).apply(D(amount))) == rounded


# -- charges: graduated tiers ----------------------------------------------------------------------------------

TIERED = ("10:2.00", "100:1.00")  # units 1-10 at 3.00, 11-100 at 2.00, from 101 on at 1.00


@pytest.mark.parametrize(("quantity", "amount"), [
    ("0", "0"), ("1", "3.00"), ("10", "30.00"), ("11", "32.00"), ("100", "210.00"), ("101", "211.00"),
    ("1000", "1110.00"), ("0.5", "1.500"), ("10.5", "31.0000"), ("100.25", "210.2500"),
])
def test_tiers_are_graduated_each_unit_at_the_price_of_its_band(quantity, amount):
    assert pricing.charge(term(tiers=TIERED), D(quantity)) == D(amount)


def test_tiers_are_applied_in_order_whatever_order_they_are_written_in():
    assert pricing.charge(term(tiers=("100:1.00", "10:2.00")), D(150)) == pricing.charge(term(tiers=TIERED), D(150))


@pytest.mark.parametrize(("price", "quantity", "amount"), [
    ("2.50", "7", "17.50"), ("0.001", "3", "0.003"), ("0", "1000", "0"),
    ("999999999999999", "1", "999999999999999"),
    ("0.000000000001", "999999999999999.999999999999", "999.999999999999999999999999"),
])
def test_a_charge_is_exact(price, quantity, amount):
    charged = pricing.charge(term(price), D(quantity))
    assert charged == D(amount) and pricing.amount_text(charged) == pricing.amount_text(D(amount))


@pytest.mark.parametrize("quantity", [D(-1), D("-0.000000001"), pricing.MAX_AMOUNT + 1, D("NaN"), D("Infinity"),
                                      D("sNaN")])
def test_a_quantity_outside_the_bounds_is_refused(quantity):
    with pytest.raises(PricingError, match="quantity"):
        pricing.charge(term(), quantity)


def test_an_amount_beyond_the_largest_a_statement_handles_is_refused_not_rounded():
    with pytest.raises(PricingError, match="amount"):
        pricing.charge(term("999999999999999.999999999999"), D("999999999999999.999999999999"))


def test_lines_are_rounded_each_and_the_total_is_their_sum():
    per_use = term("0.333")
    per_query = term("0.333", basis=Basis.QUERY)
    lines, total = pricing.bill([per_use, per_query], {Basis.USE: D(1), Basis.QUERY: D(1)})
    assert [pricing.amount_text(line.amount) for line in lines] == ["0.33", "0.33"]
    assert pricing.amount_text(total) == "0.66"  # not 0.67, the rounded sum of 0.666


def test_a_basis_without_a_quantity_bills_nothing():
    lines, total = pricing.bill([term("5")], {})
    assert lines[0].quantity == 0 and pricing.amount_text(total) == "0.00"


def test_a_statement_total_beyond_the_bound_is_refused():
    big = [term("999999999999999", basis=b) for b in (Basis.USE, Basis.QUERY)]
    with pytest.raises(PricingError, match="total"):
        pricing.bill(big, {Basis.USE: D(1), Basis.QUERY: D(1)})


@pytest.mark.parametrize(("byte_count", "gb"), [
    (0, "0.000000000"), (1, "0.000000001"), (1_500_000_000, "1.500000000"), (10**9, "1.000000000"),
    (int(pricing.MAX_AMOUNT) * 10**9, "1000000000000000.000000000"),
])
def test_gigabytes_are_exact_si_gigabytes(byte_count, gb):
    assert pricing.amount_text(pricing.gigabytes(byte_count)) == gb


@pytest.mark.parametrize("byte_count", [-1, True, 1.5, "10", int(pricing.MAX_AMOUNT) * 10**9 + 1])
def test_a_byte_count_that_is_not_a_bounded_whole_number_is_refused(byte_count):
    with pytest.raises(PricingError, match="byte count"):
        pricing.gigabytes(byte_count)


# -- the platform's share --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("total", "percent", "platform", "net"), [
    ("100.00", "10", "10.00", "90.00"), ("0.05", "50", "0.03", "0.02"), ("0.00", "10", "0.00", "0.00"),
    ("99.99", "0", "0.00", "99.99"), ("99.99", "100", "99.99", "0.00"), ("10.00", "33.333333333333", "3.33", "6.67"),
])
def test_the_share_is_rounded_and_the_net_is_the_rest(total, percent, platform, net):
    got = pricing.share(D(total), D(percent), pricing.parse_rounding("0.01 half-up"))
    assert tuple(map(pricing.amount_text, got)) == (platform, net) and sum(got) == D(total)


@pytest.mark.parametrize("percent", [D(-1), D("100.01"), D("NaN"), D("Infinity"), D("10.1234567890123")])
def test_a_share_outside_zero_to_a_hundred_percent_is_refused(percent):
    with pytest.raises(PricingError):
        pricing.share(D(100), percent, pricing.parse_rounding(pricing.DEFAULT_ROUNDING))


# -- billing periods (UTC) -----------------------------------------------------------------------------------

def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


PERIODS = [
    # (moment, period, start, end, label)
    (utc(2026, 11, 15, 10), "P1M", utc(2026, 11, 1), utc(2026, 12, 1), "2026-11"),
    (utc(2026, 12, 31, 23, 59, 59, 999999), "P1M", utc(2026, 12, 1), utc(2027, 1, 1), "2026-12"),
    (utc(2027, 1, 1), "P1M", utc(2027, 1, 1), utc(2027, 2, 1), "2027-01"),
    (utc(2028, 2, 29, 12), "P1M", utc(2028, 2, 1), utc(2028, 3, 1), "2028-02"),
    (utc(2026, 2, 28, 12), "P1M", utc(2026, 2, 1), utc(2026, 3, 1), "2026-02"),
    (datetime(2026, 12, 1, 1, tzinfo=timezone(timedelta(hours=8))), "P1M", utc(2026, 11, 1), utc(2026, 12, 1),
     "2026-11"),  # 1 am in Beijing on December 1 is still November in UTC
    (utc(2026, 1, 1), "P1W", utc(2025, 12, 29), utc(2026, 1, 5), "2026-W01"),
    (utc(2024, 12, 31), "P1W", utc(2024, 12, 30), utc(2025, 1, 6), "2025-W01"),
    (utc(2027, 1, 1), "P1W", utc(2026, 12, 28), utc(2027, 1, 4), "2026-W53"),
    (utc(2026, 11, 30, 23), "P1W", utc(2026, 11, 30), utc(2026, 12, 7), "2026-W49"),
    (utc(2028, 2, 29, 5), "P1D", utc(2028, 2, 29), utc(2028, 3, 1), "2028-02-29"),
    (utc(2026, 12, 31, 23, 59), "P1D", utc(2026, 12, 31), utc(2027, 1, 1), "2026-12-31"),
]


@pytest.mark.parametrize(("moment", "period", "start", "end", "label"), PERIODS)
def test_a_moment_lies_in_one_billing_period(moment, period, start, end, label):
    assert pricing.period_start(moment, period) == start
    assert pricing.period_end(moment, period) == end
    assert pricing.period_label(moment, period) == label


@pytest.mark.parametrize(("moment", "period", "start", "end", "label"), PERIODS)
def test_a_label_reads_back_as_its_period(moment, period, start, end, label):
    assert pricing.parse_period_label(label) == (start, period)


@pytest.mark.parametrize(("moment", "period", "start", "end", "label"), PERIODS)
def test_periods_tile_time(moment, period, start, end, label):
    assert pricing.period_start(end, period) == end
    assert pricing.period_start(end - timedelta(microseconds=1), period) == start


@pytest.mark.parametrize("label", ["2026-13", "2026-00", "2025-W53", "2026-W00", "2026-W54", "2026-02-30",
                                   "2027-02-29", "2026-1", "26-11", "2026/11", "2026-11 ", "2026-11\n",
                                   "\u0662\u0660\u0662\u0666-\u0661\u0661",  # Arabic-Indic digits
                                   "", None, 202611, "0000-01"])
def test_a_label_that_names_no_period_is_refused(label):
    with pytest.raises(PricingError, match="a period is written"):
        pricing.parse_period_label(label)


def test_a_time_without_its_zone_is_refused():
    with pytest.raises(PricingError, match="timezone"):
        pricing.period_start(datetime(2026, 11, 1), "P1M")


def test_an_unknown_billing_period_is_refused():
    with pytest.raises(PricingError, match="billingPeriod"):
        pricing.period_start(utc(2026, 11, 1), "P1Y")


def test_a_period_ending_after_the_year_9999_is_refused():
    with pytest.raises(PricingError, match="9999"):
        pricing.period_end(utc(9999, 12, 5), "P1M")


# -- reading prices from ODRL ---------------------------------------------------------------------------------

def test_a_price_duty_reads_back_as_its_term():
    [got] = terms(t.price_duty("2.50", "CNY", per="gigabyte", period="P1W", rounding="0.001 half-even",
                               tiers=["1000:2.00", "10:3"]))
    assert got == pricing.PriceTerm(
        basis=Basis.GIGABYTE, unit_price=D("2.50"), currency="CNY", period="P1W",
        tiers=(pricing.Tier(D(10), D(3)), pricing.Tier(D(1000), D("2.00"))),
        rounding=pricing.Rounding(D("0.001"), "half-even"), path="permission[0].duty[0]")


@pytest.mark.parametrize("per", list(Basis))
def test_each_basis_reads_back(per):
    assert terms(t.price_duty("1", "CNY", per=per.value))[0].basis is per


def test_a_bare_compensate_duty_is_a_post_paid_price_per_use_by_month_to_the_cent():
    [got] = terms(compensate())
    assert (got.basis, got.period, str(got.rounding), got.prepaid) == (Basis.USE, "P1M", "0.01 half-up", False)


@pytest.mark.parametrize(("unit", "currency"), [("CNY", "CNY"), ("http://dbpedia.org/resource/Euro", "Euro"),
                                                ("urn:iso:std:iso:4217:EUR", "EUR"), ("https://x.example/cur/USD/",
                                                                                      "USD")])
def test_the_currency_is_the_units_code_or_its_last_segment(unit, currency):
    assert terms(compensate(unit=unit))[0].currency == currency


def test_a_price_on_the_actions_refinement_is_read():
    duty = {"action": {"rdf:value": {"@id": "odrl:compensate"}, "odrl:refinement": [
        {"leftOperand": "odrl:payAmount", "operator": "eq", "rightOperand": "4.00", "unit": "CNY"}]}}
    assert terms(duty)[0].unit_price == D("4.00")


def test_a_compensate_obligation_is_a_price_too():
    policy = {**t.offer(A, permissions=[{"action": "use"}]), "obligation": [{**compensate(), "assigner": "did:web:p",
                                                                            "assignee": "did:web:c"}]}
    assert [x.path for x in pricing.price_terms(parse_policy(policy))] == ["obligation[0]"]


BAD_DUTIES = {
    "no payAmount": ({"action": "odrl:compensate"}, "states no payAmount"),
    "payAmount gt": (compensate(amount="1") | {"constraint": [
        {"leftOperand": "odrl:payAmount", "operator": "gt", "rightOperand": "1", "unit": "CNY"}]}, "'eq'"),
    "two payAmounts": (compensate({"leftOperand": "odrl:payAmount", "operator": "eq", "rightOperand": "0.01",
                                   "unit": "CNY"}), "payAmount once"),
    "payAmount with exponent": (compensate(amount="1e3"), "plain non-negative decimal"),
    "negative payAmount": (compensate(amount="-1"), "plain non-negative decimal"),
    "payAmount as a float beyond the digits": (compensate(amount=0.1 + 0.2), "plain non-negative decimal"),
    "no currency": (compensate(unit=None), "currency"),
    "currency with a formula": (compensate(unit="=HYPERLINK(1)"), "currency"),
    "meteredPer twice": (compensate(tds("meteredPer", {"@id": "tds:use"}), tds("meteredPer", {"@id": "tds:gigabyte"})),
                         "meteredPer once"),
    "meteredPer neq": (compensate(tds("meteredPer", {"@id": "tds:use"}, "neq")), "'eq'"),
    "meteredPer hour": (compensate(tds("meteredPer", {"@id": "tds:hour"})), "meteredPer must be one of"),
    "billingPeriod P1Y": (compensate(tds("billingPeriod", "P1Y")), "billingPeriod must be one of"),
    "rounding 0.05": (compensate(tds("rounding", "0.05 half-up")), "quantum"),
    "tier from 0": (compensate(tds("priceTiers", ["0:1"], "isAnyOf")), "above 0"),
    "tiers with one start twice": (compensate(tds("priceTiers", ["10:1", "10:2"], "isAnyOf")), "distinct"),
    "tiers in two constraints": (compensate(tds("priceTiers", ["10:1"], "isAnyOf"),
                                            tds("priceTiers", ["20:1"], "isAnyOf")), "priceTiers once"),
    "too many tiers": (compensate(tds("priceTiers", [f"{i}:1" for i in range(1, 18)], "isAnyOf")), "at most 16"),
    "tier without a price": (compensate(tds("priceTiers", ["10"], "isAnyOf")), "<from>:<unit price>"),
}


@pytest.mark.parametrize("name", BAD_DUTIES)
def test_a_price_that_cannot_be_metered_is_refused_naming_where_and_why(name):
    duty, reason = BAD_DUTIES[name]
    with pytest.raises(PricingError, match=r"^permission\[0\]\.duty\[0\]: ") as caught:
        terms(duty)
    assert reason in str(caught.value)


@pytest.mark.parametrize(("event", "prepaid"), [
    ({"leftOperand": "event", "operator": "lt", "rightOperand": {"@id": "odrl:policyUsage"}}, True),
    ({"leftOperand": "event", "operator": "lteq", "rightOperand": {"@id": "odrl:policyUsage"}}, True),
    ({"leftOperand": "event", "operator": "gt", "rightOperand": {"@id": "odrl:policyUsage"}}, False),
    ({"leftOperand": "event", "operator": "eq", "rightOperand": {"@id": "odrl:policyUsage"}}, False),
    ({"leftOperand": "event", "operator": "lt", "rightOperand": "policyUsage"}, False),  # a string, not the event
    ({"and": [{"leftOperand": "event", "operator": "lt", "rightOperand": {"@id": "odrl:policyUsage"}}]}, False),
    (None, False),
])
def test_a_price_is_pre_paid_exactly_when_the_engine_holds_it_a_precondition(event, prepaid):
    duty = compensate(*([event] if event else []))
    parsed = parse_policy(offer(duty)).permissions[0].duties[0]
    assert pricing.read_term(parsed).prepaid is prepaid
    assert (duty_timing(parsed) is DutyTiming.BEFORE_USE) is prepaid


def test_post_paid_terms_leave_out_pre_paid_ones():
    got = pricing.postpaid_terms(parse_policy(offer(t.price_duty("1", "CNY"),
                                                    t.price_duty("9", "CNY", per="period", prepaid=True))))
    assert [x.basis for x in got] == [Basis.USE]


@pytest.mark.parametrize("second", [
    t.price_duty("1", "EUR", per="query"), t.price_duty("1", "CNY", per="query", rounding="1 half-up"),
    t.price_duty("1", "CNY", per="query", period="P1D"), t.price_duty("2", "CNY"),
])
def test_post_paid_terms_of_one_agreement_share_currency_rounding_period_and_one_price_per_basis(second):
    with pytest.raises(PricingError):
        pricing.postpaid_terms(parse_policy(offer(t.price_duty("1", "CNY"), second)))


def test_quoted_terms_and_lines_are_written_plainly():
    one = term("2.50", tiers=("1000:2.00",))
    assert pricing.terms_json([one]) == [{"basis": "use", "unitPrice": "2.50", "currency": "CNY",
                                          "tiers": ["1000:2.00"], "period": "P1M", "rounding": "0.01 half-up"}]
    [line], _ = pricing.bill([one], {Basis.USE: D("1E+3")})
    assert pricing.line_json(line) == {"basis": "use", "quantity": "1000", "unitPrice": "2.50",
                                       "tiers": ["1000:2.00"], "amount": "2500.00", "currency": "CNY"}
