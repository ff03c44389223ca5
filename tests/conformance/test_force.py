"""The FORCE ODRL test suite (SolidLab ODRL-Test-Suite, 68 cases), scored with the recommended
"Rule-Activation-Constraint-satisfaction-similarity" metric (odrl-tests/INDEX.md §1.4).

Each case: the policy, request and state-of-the-world Turtle files are read with rdflib and converted to
the engine's model; the engine's report is rendered as JSON-LD, read back with rdflib and compared with
the expected report in the test-case file.
"""

from __future__ import annotations

import json
import warnings

import pytest
from force_data import (
    cases,
    graph,
    policy_from,
    request_from,
    rule_activation_constraint_satisfaction,
    world_from,
)
from rdflib import Graph

from usage_policies.evaluate import Outcome, evaluate

CASES = cases()


def _run(case: dict):
    files = case["files"]
    world, now = world_from(files["sotw"])
    return evaluate(policy_from(files["policy"]), request_from(files["request"]), world, now)


def _produced_graph(case: dict) -> Graph:
    decision = _run(case)
    with warnings.catch_warnings():
        # rdflib's own JSON-LD parser builds a ConjunctiveGraph internally and warns about it.
        warnings.filterwarnings("ignore", "ConjunctiveGraph is deprecated", DeprecationWarning)
        return Graph().parse(data=json.dumps(decision.report.to_jsonld()), format="json-ld")


def test_force_suite_scores_68_of_68(capsys):
    failures = {}
    for case in CASES:
        problems = rule_activation_constraint_satisfaction(
            graph(case["files"]["testcase"]), _produced_graph(case)
        )
        if problems:
            failures[case["number"]] = problems
    passed = len(CASES) - len(failures)
    with capsys.disabled():  # shown in every run, not only with -s
        print(f"\nFORCE: {passed}/{len(CASES)}")
    assert len(CASES) == 68
    assert passed == 68, f"FORCE: {passed}/68; failing: {failures}"


@pytest.mark.parametrize("case", CASES, ids=[c["number"] for c in CASES])
def test_force_decision_matches_derived_decision(case):
    # index.json derives permit/deny/not-applicable from each expected report (INDEX.md §1.4).
    assert _run(case).outcome is Outcome(case["expected"]["derivedDecision"])


def test_metric_rejects_a_wrong_report():
    # The scorer itself must notice a difference: score case 009's expected report against 010's.
    by_number = {c["number"]: c for c in CASES}
    problems = rule_activation_constraint_satisfaction(
        graph(by_number["009"]["files"]["testcase"]),
        _produced_graph(by_number["010"]),
    )
    assert problems
