# ruff: noqa: RUF001  (the Chinese sentences use full-width punctuation)
"""Policies in plain words (usage_policies.words): every template, every published policy, odd input."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from usage_policies import templates as T
from usage_policies.words import MAX_CHARS, MAX_SENTENCES, describe, duration_words

TARGET = "urn:uuid:asset-1"
PUBLISHED = Path("/work/shared/odrl-tests/published-policies")

# builder → (policy, a sentence expected in English, the same in Chinese)
TEMPLATE_CASES: dict[str, tuple[Callable[[], dict[str, Any]], str, str]] = {
    "allow": (lambda: T.allow(TARGET), "Use is allowed", "允许使用"),
    "prohibit": (lambda: T.prohibit(TARGET, ["odrl:distribute", "odrl:sell"]), "Distribute is not allowed", "禁止分发"),
    "restrict_to": (lambda: T.restrict_to(TARGET, "did:web:example.com:b"), "Only for did:web:example.com:b",
                    "仅限 did:web:example.com:b"),
    "purpose": (lambda: T.purpose(TARGET, "R&D"), "Use is allowed for the purpose R&D", "允许使用，仅限用途：R&D"),
    "region": (lambda: T.region(TARGET, "CN-GD"), "Only in region CN-GD", "仅限区域 CN-GD"),
    "verified_region": (lambda: T.verified_region(TARGET, "CN"),
                        "Only for participants whose region a trusted issuer vouches for: CN",
                        "仅限受信任签发方证明其所在区域为以下之一的参与方：CN"),
    "member_of": (lambda: T.member_of(TARGET, "X"), "Only members of data space X", "仅限数据空间 X 的成员"),
    "no_export_outside": (lambda: T.no_export_outside(TARGET, "CN"), "The data must not leave CN", "数据不得离开 CN"),
    "max_uses": (lambda: T.max_uses(TARGET, 100), "At most 100 uses", "最多使用 100 次"),
    "during": (lambda: T.during(TARGET, "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
               "From 2025-01-01T00:00:00Z on", "自 2025-01-01T00:00:00Z 起"),
    "for_duration": (lambda: T.for_duration(TARGET, "P30D"), "Within 30 days of the first use", "首次使用后 30天 内"),
    "use_and_delete_after": (lambda: T.use_and_delete_after(TARGET, "P1Y"),
                             "The data is deleted 1 year after the first use", "首次使用 1年 后删除数据"),
    "log_each_use": (lambda: T.log_each_use(TARGET), "Each use is logged", "每次使用都会被记录"),
    "inform_on_use": (lambda: T.inform_on_use(TARGET), "The provider is informed of each use",
                      "每次使用都会通知提供方"),
    "price_per_use": (lambda: T.price_per_use(TARGET, "2.50", "CNY"),
                      "Pay 2.50 CNY per use, settled monthly (rounded to 0.01, half up)",
                      "每次使用支付 2.50 CNY，按月结算（精确到 0.01，四舍五入）"),
    "price_duty": (lambda: T.offer(TARGET, permissions=[{"action": "use", "duty": [T.price_duty("2.50", "CNY")]}]),
                   "Pay 2.50 CNY per use, settled monthly (rounded to 0.01, half up)",
                   "每次使用支付 2.50 CNY，按月结算（精确到 0.01，四舍五入）"),
    "data_class_defaults": (lambda: T.data_class_defaults(TARGET, "core"), "Sell is not allowed", "禁止出售"),
    "combine": (lambda: T.combine(T.purpose(TARGET, "R&D"), T.max_uses(TARGET, 10), T.log_each_use(TARGET)),
                "At most 10 uses", "最多使用 10 次"),
    "offer": (lambda: T.offer(TARGET, prohibitions=[{"action": "odrl:distribute"}]), "Distribute is not allowed",
              "禁止分发"),
    "policy_from_options": (lambda: T.policy_from_options(["R&D"], uses=3, duration="P2W", log_uses=True,
                                                          price=T.price_duty("2.50", "CNY", period="P1W")),
                            "Pay 2.50 CNY per use, settled weekly (rounded to 0.01, half up)",
                            "每次使用支付 2.50 CNY，按周结算（精确到 0.01，四舍五入）"),
    "constraint": (lambda: T.offer(TARGET, permissions=[{"action": "use", "constraint": [
        T.constraint("odrl:count", "lt", "5")]}]), "Fewer than 5 uses", "使用少于 5 次"),
    "sandbox": (lambda: T.sandbox(TARGET, min_group_size=20, epsilon_per_query=0.5, epsilon_total=5),
                "Results only for groups of at least 20 records: smaller groups are left out",
                "仅返回至少包含 20 条记录的分组，更小的分组不予返回"),
    "sandbox_from_options": (lambda: T.sandbox_from_options(min_group_size=20, epsilon_per_query=0.5,
                                                            epsilon_total=5),
                             "Results only for groups of at least 20 records: smaller groups are left out",
                             "仅返回至少包含 20 条记录的分组，更小的分组不予返回"),
}


def test_every_template_builder_has_a_case() -> None:
    builders = {
        name for name, fn in inspect.getmembers(T, inspect.isfunction)
        if fn.__module__ == T.__name__ and not name.startswith("_")
    }
    assert builders <= set(TEMPLATE_CASES)


@pytest.mark.parametrize("name", sorted(TEMPLATE_CASES))
def test_template_in_both_languages(name: str) -> None:
    build, english, chinese = TEMPLATE_CASES[name]
    policy = build()
    en, zh = describe(policy, "en"), describe(policy, "zh")
    assert english in en
    assert chinese in zh
    assert len(en) == len(zh)


@pytest.mark.parametrize("path", sorted(PUBLISHED.glob("*.jsonld")), ids=lambda p: p.stem)
def test_published_policy_has_sentences(path: Path) -> None:
    policy = json.loads(path.read_text())
    for lang in ("en", "zh"):
        sentences = describe(policy, lang)
        assert sentences
        assert all(isinstance(s, str) and s for s in sentences)


def test_published_policies_are_there() -> None:
    assert len(list(PUBLISHED.glob("*.jsonld"))) > 20


def test_every_rule_of_a_combined_policy_is_said() -> None:
    policy = T.data_class_defaults(TARGET, "personal", purposes="R&D")
    assert describe(policy, "en") == [
        "Use is allowed for the purpose R&D",
        "The data must not leave CN",
        "Within 1 year of the first use",
        "Each use is logged",
        "The provider is informed of each use",
        "The data is deleted 1 year after the first use",
    ]


@pytest.mark.parametrize(("text", "en", "zh"), [
    ("P30D", "30 days", "30天"),
    ("P1Y", "1 year", "1年"),
    ("P1Y6M", "1 year, 6 months", "1年6个月"),
    ("PT2H30M", "2 hours, 30 minutes", "2小时30分钟"),
    ("P2W", "2 weeks", "2周"),
    ("PT0.5S", "0.5 seconds", "0.5秒"),
])
def test_durations_in_words(text: str, en: str, zh: str) -> None:
    assert duration_words(text, "en") == en
    assert duration_words(text, "zh") == zh


@pytest.mark.parametrize("text", ["P", "PT", "P1DT", "30 days", "", "P-1D"])
def test_not_a_duration(text: str) -> None:
    assert duration_words(text, "en") is None


def test_every_sandbox_term_is_said_in_both_languages() -> None:
    policy = T.sandbox(TARGET, columns=["region", "salary"], aggregates=["count", "avg"], min_group_size=10,
                       epsilon_per_query=0.5, epsilon_total=5, max_queries=100, templates=[
                           {"id": "by-region", "sql": "SELECT region, count(*) FROM data GROUP BY region"}])
    en, zh = describe(policy, "en"), describe(policy, "zh")
    assert en == [
        "Aggregate is allowed",
        "Queries may use only the columns region, salary",
        "Queries may compute only count, avg",
        "Results only for groups of at least 10 records: smaller groups are left out",
        "Each query's results carry random noise (differential privacy, ε at most 0.5 per query)",
        "All queries together spend a privacy budget of at most ε 5",
        "The provider's query templates: by-region",
        "At most 100 uses",
    ]
    assert zh[1:3] == ["查询只能使用以下列：region、salary", "查询只能计算：count、avg"]
    assert zh[6] == "提供方的查询模板：by-region" and len(zh) == len(en)


def test_a_sandbox_term_with_an_unusual_operator_gets_a_generic_sentence() -> None:
    policy = {"permission": [{"action": "odrl:aggregate", "constraint": [
        {"leftOperand": "tds:minGroupSize", "operator": "lt", "rightOperand": 3},
        {"leftOperand": "tds:queryTemplates", "operator": "isAnyOf", "rightOperand": ["{not json", 7]}]}]}
    en = describe(policy, "en")
    assert "Condition: the smallest group in a result is less than 3" in en
    assert "The provider's query templates: {not json, 7" in en


def test_prefixed_and_expanded_spellings_read_alike() -> None:
    prefixed = {"odrl:permission": [{"odrl:action": {"@id": "odrl:use"}, "odrl:constraint": [{
        "odrl:leftOperand": {"@id": "odrl:spatial"}, "odrl:operator": {"@id": "odrl:isAnyOf"},
        "odrl:rightOperand": ["CN-GD"]}]}]}
    expanded = {"http://www.w3.org/ns/odrl/2/permission": [{
        "http://www.w3.org/ns/odrl/2/action": "http://www.w3.org/ns/odrl/2/use",
        "http://www.w3.org/ns/odrl/2/constraint": [{
            "http://www.w3.org/ns/odrl/2/leftOperand": "http://www.w3.org/ns/odrl/2/spatial",
            "http://www.w3.org/ns/odrl/2/operator": "http://www.w3.org/ns/odrl/2/eq",
            "http://www.w3.org/ns/odrl/2/rightOperand": {"@value": "CN-GD"}}]}]}
    assert describe(prefixed, "en") == describe(expanded, "en") == ["Use is allowed", "Only in region CN-GD"]


def test_logical_constraint_says_each_part() -> None:
    policy = {"permission": [{"action": "use", "constraint": [{"or": {"@list": [
        {"leftOperand": "spatial", "operator": "eq", "rightOperand": "CN"},
        {"leftOperand": "tds:memberOf", "operator": "eq", "rightOperand": "space-x"},
    ]}}]}]}
    assert describe(policy, "en")[1] == "At least one of these: only in region CN; only members of data space space-x"
    assert describe(policy, "zh")[1] == "须至少满足其一：仅限区域 CN; 仅限数据空间 space-x 的成员"


def test_unknown_terms_get_a_generic_sentence() -> None:
    policy = {"permission": [{"action": "ex:fly", "constraint": [
        {"leftOperand": "ex:altitude", "operator": "ex:below", "rightOperand": {"@value": "300"}}]}]}
    assert describe(policy, "en") == ["ex:fly is allowed", "Condition: ex:altitude ex:below 300"]


def test_prohibition_with_a_condition_is_not_a_restriction() -> None:
    policy = {"permission": [{"action": "use"}], "prohibition": [{"action": "distribute", "constraint": [
        {"leftOperand": "spatial", "operator": "isNoneOf", "rightOperand": ["CN"]}]}]}
    assert describe(policy, "en")[1] == "Distribute is not allowed when the region is none of CN"


def test_duty_due_before_use_and_consequence() -> None:
    policy = {"permission": [{"action": "use", "duty": [{
        "action": "compensate", "constraint": [
            {"leftOperand": "payAmount", "operator": "eq", "rightOperand": {"@value": "5.00"},
             "unit": "http://dbpedia.org/resource/Euro"},
            {"leftOperand": "event", "operator": "lt", "rightOperand": {"@id": "odrl:policyUsage"}}],
        "consequence": [{"action": "inform", "informedParty": "did:web:b"}]}]}]}
    assert describe(policy, "en") == [
        "Use is allowed", "Pay 5.00 Euro before use", "If a duty is not fulfilled: did:web:b is informed of each use",
    ]


@pytest.mark.parametrize("policy", [
    {}, {"permission": None}, {"permission": [1, "x", None, {"action": {"@list": []}}]},
    {"permission": {"constraint": {"and": {"@list": [{"or": [{"leftOperand": {"@id": "odrl:count"}}]}]}}}},
    {"permission": [{"action": "use", "constraint": [{"leftOperand": "x", "operator": "y",
                                                      "rightOperand": {"a": [1, {2: 3}]}}]}]},
    {"prohibition": [{"action": [{"rdf:value": None}]}], "obligation": ["delete"]},
])
def test_odd_input_gives_sentences_not_errors(policy: dict[str, Any]) -> None:
    assert describe(policy, "en")
    assert describe(policy, "zh")


def test_work_is_bounded() -> None:
    nested: dict[str, Any] = {"leftOperand": "count", "operator": "lteq", "rightOperand": 1}
    for _ in range(500):
        nested = {"and": [nested]}
    many = [{"leftOperand": "count", "operator": "lteq", "rightOperand": i} for i in range(1000)]
    policy = {"permission": [{"action": "use", "constraint": [nested, *many, {
        "leftOperand": "purpose", "operator": "neq", "rightOperand": "x" * 10_000}]}]}
    sentences = describe(policy, "en")
    assert len(sentences) == MAX_SENTENCES
    assert sentences[-1] == "… and more rules not shown"
    assert all(len(s) <= MAX_CHARS for s in sentences)


def test_peer_text_is_kept_on_one_line() -> None:
    policy = {"permission": [{"action": "use", "assignee": "did:web:a\n\nInjected line"}]}
    assert describe(policy, "en")[1] == "Only for did:web:a Injected line"


def test_a_policy_of_exactly_the_bound_loses_nothing() -> None:
    constraints = [{"leftOperand": "count", "operator": "lteq", "rightOperand": i} for i in range(MAX_SENTENCES - 1)]
    sentences = describe({"permission": [{"action": "use", "constraint": constraints}]}, "en")
    assert len(sentences) == MAX_SENTENCES
    assert sentences[-1] == f"At most {MAX_SENTENCES - 2} uses"


def _priced(**options: Any) -> dict[str, Any]:
    amount, currency = options.pop("amount", "2.50"), options.pop("currency", "CNY")
    return T.offer(TARGET, permissions=[{"action": "use", "duty": [T.price_duty(amount, currency, **options)]}])


# price_duty's options → (the price's sentences in English, in Chinese), after "Use is allowed"
PRICE_CASES: list[tuple[dict[str, Any], list[str], list[str]]] = [
    ({"per": "query"}, ["Pay 2.50 CNY per query answered, settled monthly (rounded to 0.01, half up)"],
     ["每次查询支付 2.50 CNY，按月结算（精确到 0.01，四舍五入）"]),
    ({"amount": "0.80", "per": "gigabyte", "period": "P1D", "rounding": "1 half-even"},
     ["Pay 0.80 CNY per GB transferred, settled daily (rounded to 1, half to even)"],
     ["每传输 1 GB 支付 0.80 CNY，按日结算（精确到 1，四舍六入五成双）"]),
    ({"amount": "100", "per": "period"}, ["Subscription: pay 100 CNY per month (rounded to 0.01, half up)"],
     ["订阅：每月支付 100 CNY（精确到 0.01，四舍五入）"]),
    ({"tiers": ["1000:2.00", "5000:1.50"]},
     ["Pay 2.50 CNY per use, settled monthly (rounded to 0.01, half up)",
      "After 1000 uses, each further use costs 2.00 CNY", "After 5000 uses, each further use costs 1.50 CNY"],
     ["每次使用支付 2.50 CNY，按月结算（精确到 0.01，四舍五入）", "超过 1000 次使用后，每次使用 2.00 CNY",
      "超过 5000 次使用后，每次使用 1.50 CNY"]),
    ({"per": "gigabyte", "tiers": ["10:1"], "rounding": "0.1 floor"},
     ["Pay 2.50 CNY per GB transferred, settled monthly (rounded to 0.1, down)",
      "After 10 GB, each further GB costs 1 CNY"],
     ["每传输 1 GB 支付 2.50 CNY，按月结算（精确到 0.1，向下舍入）", "超过 10 GB 后，每 GB 1 CNY"]),
    ({"prepaid": True}, ["Pay 2.50 CNY before use"], ["使用前支付 2.50 CNY"]),
    ({"currency": "http://dbpedia.org/resource/Euro", "period": "P1W"},
     ["Pay 2.50 Euro per use, settled weekly (rounded to 0.01, half up)"],
     ["每次使用支付 2.50 Euro，按周结算（精确到 0.01，四舍五入）"]),
]


@pytest.mark.parametrize(("options", "en", "zh"), PRICE_CASES, ids=[str(c[0]) for c in PRICE_CASES])
def test_a_price_in_both_languages(options: dict[str, Any], en: list[str], zh: list[str]) -> None:
    policy = _priced(**options)
    assert describe(policy, "en") == ["Use is allowed", *en]
    assert describe(policy, "zh") == ["允许使用", *zh]


def test_a_price_as_a_peers_catalog_compacts_it_reads_alike() -> None:
    compacted = {"permission": [{"action": "odrl:use", "duty": [{"action": "odrl:compensate", "constraint": [
        {"leftOperand": "odrl:payAmount", "operator": "odrl:eq", "rightOperand": {"@value": "2.50"}, "unit": "CNY"},
        {"leftOperand": "tds:meteredPer", "operator": "odrl:eq", "rightOperand": {"@id": "tds:use"}},
        {"leftOperand": "tds:billingPeriod", "operator": "odrl:eq", "rightOperand": "P1M"},
        {"leftOperand": "tds:rounding", "operator": "odrl:eq", "rightOperand": "0.01 half-up"}]}]}]}
    assert describe(compacted, "en") == describe(_priced(), "en")


def test_a_price_without_its_terms_is_said_with_the_terms_statements_apply() -> None:
    policy = {"permission": [{"action": "use", "duty": [{"action": "compensate", "constraint": [
        {"leftOperand": "payAmount", "operator": "eq", "rightOperand": "3", "unit": "EUR"}]}]}]}
    assert describe(policy, "en")[1] == "Pay 3 EUR per use, settled monthly (rounded to 0.01, half up)"


@pytest.mark.parametrize(("term", "en"), [
    ({"leftOperand": "tds:meteredPer", "operator": "eq", "rightOperand": "tds:banana"},
     ["Pay 3 EUR", "This duty applies when what the price is paid for is tds:banana"]),
    ({"leftOperand": "tds:billingPeriod", "operator": "eq", "rightOperand": "P3M"},
     ["Pay 3 EUR per use (rounded to 0.01, half up)", "This duty applies when the billing period is P3M"]),
    ({"leftOperand": "tds:rounding", "operator": "eq", "rightOperand": "0.01 sideways"},
     ["Pay 3 EUR per use, settled monthly", "This duty applies when the rounding is 0.01 sideways"]),
    ({"leftOperand": "tds:priceTiers", "operator": "isAnyOf", "rightOperand": ["1000"]},
     ["Pay 3 EUR per use, settled monthly (rounded to 0.01, half up)",
      "This duty applies when a price tier is 1000"]),
])
def test_a_price_term_that_cannot_be_read_is_said_as_written_and_not_assumed(term: dict[str, Any],
                                                                              en: list[str]) -> None:
    policy = {"permission": [{"action": "use", "duty": [{"action": "compensate", "constraint": [
        {"leftOperand": "payAmount", "operator": "eq", "rightOperand": "3", "unit": "EUR"}, term]}]}]}
    assert describe(policy, "en")[1:] == en
    assert len(describe(policy, "zh")) == len(en) + 1


def test_price_terms_on_another_duty_are_said_as_written() -> None:
    policy = {"permission": [{"action": "use", "duty": [{"action": "inform", "constraint": [
        {"leftOperand": "tds:billingPeriod", "operator": "eq", "rightOperand": "P1M"}]}]}]}
    assert describe(policy, "en")[1:] == ["The provider is informed of each use",
                                          "This duty applies when the billing period is P1M"]
