"""The data sandbox's privacy and its signed result (connector.protocol.sandbox): k, Laplace noise, the budget's
split, clipping, the differencing attack, and the provider's signature over what leaves.

Statistical tests draw from seeded generators (the production code is given ``random.SystemRandom``), so
each runs the same way every time; their bounds are several standard errors wide.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import statistics

import pytest
import rfc8785
from sandbox_setup import DP, SCHEMA, TEMPLATES, Table, people

from connector.identity import did as dids
from connector.identity.keys import ParticipantKeys
from connector.protocol import sandbox as sb

DRAWS = 20_000


def test_laplace_noise_has_mean_zero_and_mean_absolute_deviation_equal_to_its_scale():
    rng = random.Random(20250601)
    for scale in (0.5, 2.0, 40.0):
        draws = [sb.laplace_noise(scale, rng) for _ in range(DRAWS)]
        # Laplace(b): mean 0, E|X| = b, standard deviation b·√2; the bounds are over 5 standard errors.
        assert abs(statistics.fmean(draws)) < 5 * scale * 2**0.5 / DRAWS**0.5
        assert abs(statistics.fmean(abs(d) for d in draws) / scale - 1) < 0.04
        assert sum(d > 0 for d in draws) / DRAWS == pytest.approx(0.5, abs=0.02)
    assert sb.laplace_noise(0.0, rng) == 0.0


def _count_query(sql: str, terms: sb.SandboxTerms = DP) -> sb.CheckedQuery:
    return sb.check_query(sql, {}, terms, SCHEMA)


def test_a_noisy_count_is_unbiased_with_the_scale_one_over_epsilon():
    terms = sb.SandboxTerms(epsilon_per_query=0.5, epsilon_total=100)
    checked = _count_query("SELECT count(*) FROM data", terms)
    rng = random.Random(7)
    released = [sb.apply_privacy(checked, [(500, 500)], terms, rng).rows[0][0] for _ in range(DRAWS)]
    errors = [r - 500 for r in released]
    assert all(isinstance(r, int) for r in released)
    assert abs(statistics.fmean(errors)) < 0.15  # scale 2: standard error 2·√2/√20000 = 0.02
    assert statistics.fmean(abs(e) for e in errors) == pytest.approx(2.0, rel=0.06)  # rounding to whole counts


def test_the_budget_is_split_evenly_over_the_noisy_outputs():
    checked = _count_query("SELECT region, count(*), count(age), sum(salary), avg(age) FROM data GROUP BY region")
    kinds = [(o.kind, o.epsilon, o.sensitivity, o.width) for o in checked.outputs]
    assert kinds == [("key", 0.0, None, 1), ("count", 0.25, 1.0, 1), ("count", 0.25, 1.0, 1),
                     ("sum", 0.25, 200_000.0, 1), ("avg", 0.25, 100.0, 2)]
    assert sum(o.epsilon for o in checked.outputs) == pytest.approx(checked.epsilon) == pytest.approx(1.0)


def test_each_outputs_noise_has_the_scale_of_its_share():
    # two counts share epsilon 1: each gets 1/2, so its noise has the scale 2 (not 1)
    checked = _count_query("SELECT count(*), count(age) FROM data")
    rng = random.Random(11)
    rows = [sb.apply_privacy(checked, [(1000, 1000, 1000)], DP, rng).rows[0] for _ in range(DRAWS)]
    for i in (0, 1):
        mad = statistics.fmean(abs(r[i] - 1000) for r in rows)
        assert mad == pytest.approx(2.0, rel=0.06)


def test_a_noisy_sum_has_the_scale_of_the_columns_bound_over_its_share():
    # bounds 18..100: sensitivity 100; epsilon 1, of which the sum gets half (the other half counts the group)
    checked = _count_query("SELECT sum(age) FROM data")
    rng = random.Random(5)
    errors = [sb.apply_privacy(checked, [(4000, 80)], DP, rng).rows[0][0] - 4000 for _ in range(DRAWS)]
    assert abs(statistics.fmean(errors)) < 16  # standard error 200·√2/√20000 = 2
    assert statistics.fmean(abs(e) for e in errors) == pytest.approx(200.0, rel=0.04)


def test_the_emitted_statement_clips_the_summed_values_to_the_declared_bounds():
    checked = _count_query("SELECT sum(salary), avg(age) FROM data")
    # total(), which never fails: a sum() of integers past 2**63 would, on the values of single rows.
    assert ('TOTAL(CASE WHEN "salary" < 0 THEN 0 WHEN "salary" > 200000 THEN 200000 ELSE "salary" END)'
            in checked.sql)
    assert 'TOTAL(CASE WHEN "age" < 18 THEN 18 WHEN "age" > 100 THEN 100 ELSE "age" END), COUNT("age")' in checked.sql
    rows = [*people(20), (100, "north", 1e12, 500, "outlier"), (101, "north", -5e9, -3, "outlier")]
    table = Table(rows)
    try:
        [(total, age_sum, age_count, n)] = table.run(checked)
    finally:
        table.close()
    assert total == sum(r[2] for r in people(20)) + 200_000 + 0  # the outliers count as the bounds
    assert age_sum == sum(r[3] for r in people(20)) + 100 + 18 and age_count == n == 22


def test_under_a_budget_no_query_fails_on_the_value_of_one_row():
    """Attack: a condition on one row makes the query fail (abs() of the least integer is an "integer overflow")
    or not: the failure leaves without noise, one exact bit per query."""
    checked = _count_query("SELECT count(*) FROM data WHERE abs(iif(id = 7, cast('-9223372036854775808' AS INTEGER), "
                           "0)) >= 0")
    table = Table(people(20))
    try:
        [(count, n)] = table.run(checked)
    finally:
        table.close()
    assert count == n == 20


def test_a_noisy_average_stays_within_the_columns_bounds():
    checked = _count_query("SELECT avg(age) FROM data")
    rng = random.Random(3)
    # a hundred rows at the upper bound: noise on the sum and on the count pushes the ratio past 100 often
    values = [sb.apply_privacy(checked, [(10_000, 100, 100)], DP, rng).rows[0][0] for _ in range(2000)]
    assert min(values) >= 18 and max(values) <= 100 and max(values) == 100


def test_under_a_budget_small_groups_are_dropped_and_neither_the_group_size_nor_their_number_leaves():
    checked = _count_query("SELECT region, count(*) FROM data GROUP BY region")
    rows = [("north", 400, 400), ("south", 9, 9), ("east", 3, 3), ("west", 1, 1), ("void", 0, 0)]
    result = sb.apply_privacy(checked, rows, DP, random.Random(0))
    assert [r[0] for r in result.rows] == ["north"]
    assert result.suppressed_groups is None  # exact, it would tell that small groups are there
    assert result.columns == ["region", "COUNT(*)"] and all(len(r) == 2 for r in result.rows)
    assert result.noise and result.epsilon_spent == 1.0


# --- which groups leave: exact k without a budget, a noisy count under one ------------------------------

#: k = 20 with epsilon 2 on one count: noise of scale 1/2, narrow enough that k itself is the threshold.
NARROW = sb.SandboxTerms(epsilon_per_query=2.0, epsilon_total=100.0, min_group_size=20)
SEEDS = range(400)


def _left(terms: sb.SandboxTerms, n: int, seeds: range, sql: str = "SELECT region, count(*) FROM data GROUP BY "
                                                                  "region") -> int:
    """For how many of *seeds* a group of *n* rows leaves, the noise drawn from a generator seeded with each."""
    checked = sb.check_query(sql, {}, terms, SCHEMA)
    width = sum(o.width for o in checked.outputs) + 1
    row = ("north", *[n] * (width - 1)) if checked.outputs[0].kind == "key" else (n,) * width
    return sum(bool(sb.apply_privacy(checked, [row], terms, random.Random(seed)).rows) for seed in seeds)


def test_without_a_budget_a_group_leaves_on_its_exact_size():
    template = sb.QueryTemplate(id="t", sql="SELECT region, count(*) FROM data GROUP BY region")
    terms = sb.SandboxTerms(templates=[template], min_group_size=20)
    checked = sb.check_query("", {}, terms, SCHEMA, template_id="t")
    for seed in range(20):
        result = sb.apply_privacy(checked, [("north", 19, 19), ("south", 20, 20)], terms, random.Random(seed))
        assert result.rows == [["south", 20]] and result.suppressed_groups == 1
        assert not result.noise and result.threshold_epsilon == 0


def test_under_a_budget_a_group_of_exactly_k_rows_sometimes_leaves_and_sometimes_not():
    assert 150 < _left(NARROW, 20, SEEDS) < 250  # half the time: its noisy count is as likely above k as below


def test_under_a_budget_a_group_far_above_k_leaves():
    assert _left(NARROW, 40, SEEDS) == len(SEEDS)


@pytest.mark.parametrize(("epsilon", "k"), [(2.0, 20), (1.0, 10), (0.1, 5)])
def test_under_a_budget_a_group_of_one_row_almost_never_leaves(epsilon, k):
    terms = sb.SandboxTerms(epsilon_per_query=epsilon, epsilon_total=100.0, min_group_size=k)
    assert _left(terms, 1, range(10_000)) == 0  # at most THRESHOLD_DELTA each


def test_when_the_noise_is_wide_the_threshold_rises_above_k():
    # epsilon 0.1: noise of scale 10 on the count; k = 5 alone would let a one-row group out a third of the time
    wide = sb.SandboxTerms(epsilon_per_query=0.1, epsilon_total=100.0, min_group_size=5)
    assert sb.noisy_threshold(5, 10.0) == pytest.approx(1 + 10 * math.log(1 / (2 * sb.THRESHOLD_DELTA)))
    assert _left(wide, 5, SEEDS) == 0  # k rows are far below it now
    assert _left(wide, 400, SEEDS) == len(SEEDS)
    assert sb.noisy_threshold(20, 0.5) == 20  # narrow noise: k itself


def test_the_threshold_reads_the_released_counts_own_noise_and_draws_nothing_more():
    checked = sb.check_query("SELECT region, count(*) AS n FROM data GROUP BY region", {}, NARROW, SCHEMA)
    assert checked.threshold_output == 1 and checked.threshold_epsilon == 0 and checked.outputs[1].epsilon == 2.0
    for seed in SEEDS:
        rng = random.Random(seed)
        result = sb.apply_privacy(checked, [("north", 20, 20)], NARROW, rng)
        again = random.Random(seed)
        noisy = 20 + sb.laplace_noise(0.5, again)  # the released count's one draw
        assert bool(result.rows) == (noisy >= 20)
        assert rng.random() == again.random()  # no draw beside it
        if result.rows:
            assert result.rows == [["north", round(noisy)]] and round(noisy) >= 20


def test_a_query_that_releases_no_count_spends_a_share_of_its_epsilon_on_a_count_and_says_so():
    checked = sb.check_query("SELECT region, sum(age) FROM data GROUP BY region", {}, NARROW, SCHEMA)
    assert checked.threshold_output is None and checked.threshold_epsilon == 1.0  # one share of two
    assert checked.outputs[1].epsilon == 1.0 and checked.epsilon == 2.0  # the query spends its epsilon, no more
    result = sb.apply_privacy(checked, [("north", 5000, 100)], NARROW, random.Random(0))
    assert result.threshold_epsilon == 1.0 and result.epsilon_spent == 2.0 and len(result.rows) == 1
    document = sb.result_document(agreement_id="urn:uuid:a", provider="did:web:p.example", consumer="did:web:c.example",
                                  query="q", parameters={}, result=result, issued_at="2026-03-01T10:00:00Z")
    assert document["thresholdEpsilon"] == 1.0 and document["suppressedGroups"] is None
    assert 150 < _left(NARROW, 20, SEEDS, "SELECT sum(age) FROM data") < 250


@pytest.mark.parametrize(("sql", "source"), [
    ("SELECT avg(age), count(age), count(*) FROM data", 2),
    ("SELECT avg(age), count(DISTINCT age) FROM data", 1),
    ("SELECT sum(age), avg(salary) FROM data", 1),
    ("SELECT region, sum(age) FROM data GROUP BY region", None),
])
def test_the_count_that_decides_is_the_groups_own_size_first_then_a_columns_then_an_averages(sql, source):
    checked = sb.check_query(sql, {}, DP, SCHEMA)
    assert checked.threshold_output == source
    assert (checked.threshold_epsilon == 0) == (source is not None)


def test_without_a_budget_values_leave_exactly_and_big_integers_as_json_numbers():
    template = sb.QueryTemplate(id="t", sql="SELECT region, sum(id) FROM data GROUP BY region")
    terms = sb.SandboxTerms(templates=[template], min_group_size=2)
    checked = sb.check_query("", {}, terms, SCHEMA, template_id="t")
    result = sb.apply_privacy(checked, [("north", 2**60, 5), ("south", 7, 5), ("east", None, 1)], terms,
                              random.Random(0))
    assert result.rows == [["north", float(2**60)], ["south", 7]] and result.suppressed_groups == 1
    assert not result.noise and result.epsilon_spent == 0
    sb.result_hash(result.columns, result.rows)  # canonical JSON takes it


def test_rows_that_do_not_fit_the_checked_query_are_an_error():
    checked = _count_query("SELECT count(*) FROM data")
    with pytest.raises(ValueError):
        sb.apply_privacy(checked, [(1, 2, 3)], DP, random.Random(0))


def test_a_differencing_attack_gets_only_noise():
    """Two overlapping counts differing by one row (a tracker) would tell that row's value. Exact answers
    make that certain, so free-form queries need a differential-privacy budget: each answer is noisy, the
    difference is mostly not the victim's 1 or 0, and the budget caps how often the attacker may average."""
    victim = 42
    everyone = "SELECT count(*) FROM data WHERE salary >= 40000"
    all_but = f"SELECT count(*) FROM data WHERE salary >= 40000 AND id <> {victim}"
    # without a budget, the consumer cannot write these queries at all
    for sql in (everyone, all_but):
        with pytest.raises(sb.QueryRefused) as caught:
            sb.check_query(sql, {}, TEMPLATES, SCHEMA)
        assert caught.value.rule == "dp-required"
    terms = sb.SandboxTerms(epsilon_per_query=0.5, epsilon_total=1.0)
    a, b = (sb.check_query(sql, {}, terms, SCHEMA) for sql in (everyone, all_but))
    table = Table(people())
    try:
        rows_a, rows_b = table.run(a), table.run(b)
    finally:
        table.close()
    assert rows_a[0][0] - rows_b[0][0] == 1  # the exact answers give the victim away
    rng = random.Random(99)
    differences = []
    for _ in range(5000):
        answer_a = sb.apply_privacy(a, rows_a, terms, rng).rows[0][0]
        answer_b = sb.apply_privacy(b, rows_b, terms, rng).rows[0][0]
        differences.append(answer_a - answer_b)
    assert sum(d == 1 for d in differences) / len(differences) < 0.15
    assert len(set(differences)) > 20
    assert statistics.pstdev(differences) > 3  # two draws of scale 2: standard deviation 4
    assert abs(statistics.fmean(differences) - 1) < 0.3  # only averaging many answers would tell
    assert terms.epsilon_total / terms.epsilon_per_query == 2  # … and the budget allows two queries


# --- the signed result -----------------------------------------------------------------------------------

T = "2026-03-01T10:00:00Z"


def _provider():
    keys = ParticipantKeys.generate()
    did = dids.did_key_for(bytes(keys.verify_key))
    return did, keys, dids.did_key_document(did)


def _signed():
    did, keys, document = _provider()
    result = sb.Result(columns=["region", "n"], rows=[["north", 41], ["east", 12.5]], suppressed_groups=1,
                       epsilon_spent=0.5, noise=True)
    unsigned = sb.result_document(agreement_id="urn:uuid:agreement-1", provider=did, consumer="did:web:c.example",
                                  query="SELECT region, count(*) AS n FROM data GROUP BY region", parameters={},
                                  result=result, issued_at=T)
    signed = sb.sign_result(unsigned, keys.signing, key_id=dids.signing_key_id(did), created=T)
    return signed, document, result


def test_the_result_hash_is_sha256_of_the_canonical_columns_and_rows():
    signed, _, result = _signed()
    expected = hashlib.sha256(rfc8785.dumps({"columns": result.columns, "rows": result.rows})).hexdigest()
    assert signed["resultHash"] == "sha-256:" + expected
    assert signed["rows"] == result.rows and signed["suppressedGroups"] == 1 and signed["epsilonSpent"] == 0.5


def test_a_signed_result_verifies_with_the_providers_did_document():
    signed, document, _ = _signed()
    assert signed["proof"]["cryptosuite"] == "eddsa-jcs-2022"
    sb.verify_result(signed, document)


@pytest.mark.parametrize("tamper", [
    lambda d: d["rows"][0].__setitem__(1, 40),
    lambda d: d["rows"].pop(),
    lambda d: d["columns"].__setitem__(0, "area"),
    lambda d: d.__setitem__("resultHash", "sha-256:" + "0" * 64),
    lambda d: d.__setitem__("suppressedGroups", 0),
    lambda d: d.__setitem__("consumer", "did:web:other.example"),
    lambda d: d.__setitem__("query", "SELECT count(*) FROM data"),
])
def test_a_tampered_result_does_not_verify(tamper):
    signed, document, _ = _signed()
    changed = copy.deepcopy(signed)
    tamper(changed)
    with pytest.raises(sb.ResultError):
        sb.verify_result(changed, document)


def test_rows_changed_with_a_matching_hash_still_fail_on_the_signature():
    signed, document, _ = _signed()
    changed = copy.deepcopy(signed)
    changed["rows"][0][1] = 4000
    changed["resultHash"] = sb.result_hash(changed["columns"], changed["rows"])
    with pytest.raises(sb.ResultError, match="proof does not verify"):
        sb.verify_result(changed, document)


def test_a_result_signed_by_someone_else_does_not_verify_as_the_providers():
    signed, document, _ = _signed()
    other_did, other_keys, other_document = _provider()
    forged = sb.sign_result({k: v for k, v in signed.items() if k != "proof"}, other_keys.signing,
                            key_id=dids.signing_key_id(other_did), created=T)
    with pytest.raises(sb.ResultError):
        sb.verify_result(forged, document)  # the provider's key did not sign it
    with pytest.raises(sb.ResultError, match="not that of the result's provider"):
        sb.verify_result(forged, other_document)  # the signer is not the provider the result names
