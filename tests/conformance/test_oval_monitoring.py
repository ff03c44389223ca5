"""The OVAL monitoring suite (paolo7/ODRL-Engine, 50 cases): policy + event log → compliant or violation.

Each case's CSV event log becomes one agreement's hash-chained usage log (:mod:`usage_policies.ledger`),
the chain is verified, its entries become events (:func:`usage_policies.monitor.events_from_log`) and
:func:`usage_policies.monitor.check_history` judges them against the Turtle policy, read into the
engine's model with rdflib. Expected verdict: the case's folder (``valid/`` compliant, ``invalid/``
violation; odrl-tests/INDEX.md §2). ``now`` is the time of the last event.

Where the suite's semantics differ from the engine's, the case is marked ``xfail(strict=True)`` with the
reason (also tabled in ``tests/conformance/OVAL.md``); the engine is not bent to the suite:

* **Duties due with or after use** (``invalid/duty1``, ``invalid/consequence3``). OVAL requires every
  duty of a permission before its first exercise. The engine times duties (``evaluate.duty_timing``):
  only a duty with ``event lt policyUsage`` or a before-use action (``obtainConsent``, ``reviewPolicy``)
  is a pre-condition; ``compensate`` without that idiom is due with or after the use, as in the FORCE
  suite ("eventually fulfilled", case 059) and as the node meters it (``enforce.Meter``). So paying after
  the first print is compliant for us, and the consequence (watermark) is not triggered.
* **Untyped literals are strings** (``valid/date_datatype1``, ``valid/date_datatype2``). The right
  operand ``"2026-03-11T11:33:10"`` of the unregistered left operand ``ex:publicationDate`` has no
  datatype, so it is an ``xsd:string`` (RDF 1.1), and strings have equality only, no order, and never
  equal a date (ODRL 2.2 §2.5.1 ``dataType``). OVAL guesses that it is a date. With
  ``^^xsd:dateTime`` / ``^^xsd:date`` on the literal both cases pass (tested in
  ``tests/policy/test_policy_monitor.py``). For the same reason ``invalid/date_datatype1`` gets the
  expected verdict for a different reason: both of its events violate, not only the one at the bound of
  the strict ``lt``. It counts as a pass, since the suite checks verdicts; OVAL.md says so too.
"""

from __future__ import annotations

import pytest
from oval_data import SUITE, cases, events, policy_from, usage_log

from usage_policies import ledger
from usage_policies.monitor import check_history

_WITH_OR_AFTER = (
    "duty 'compensate' is due with or after the use (evaluate.duty_timing; FORCE 059): paying after the "
    "first exercise complies, so its consequence is not triggered; OVAL requires every duty before it"
)
_UNTYPED = (
    "an untyped right operand of an unregistered left operand is an xsd:string, which has no order and "
    "never equals a date (ODRL 2.2 §2.5.1 dataType); OVAL guesses a date"
)
DIFFERENCES = {
    "invalid/duty1": _WITH_OR_AFTER,
    "invalid/consequence3": _WITH_OR_AFTER,
    "valid/date_datatype1": _UNTYPED,
    "valid/date_datatype2": _UNTYPED,
}

CASES = cases()


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=DIFFERENCES[case["id"]])] if case["id"] in DIFFERENCES \
            else []
        yield pytest.param(case, id=case["id"], marks=marks)


def _judge(case: dict):
    policy = policy_from(SUITE / case["policy"])
    entries, requests = usage_log(policy.uid, SUITE / case["sotw"])
    head = ledger.head_document(entries[-1], signer="did:example:monitor", at=entries[-1].at)
    assert ledger.check_chain(entries, [head]) is None
    history = events(entries, requests)
    assert len(history) == case["events"]
    return check_history(policy, history, now=history[-1].at)


@pytest.mark.parametrize("case", list(_params()))
def test_oval_monitoring_case(case):
    result = _judge(case)
    assert result.compliant is case["expected_compliant"], (
        f"{case['id']}: {case['rationale']}; violations: {[v.reason for v in result.violations]}"
    )


def test_suite_has_50_cases():
    assert len(CASES) == 50
    assert sum(c["expected_compliant"] for c in CASES) == 25
    assert set(DIFFERENCES) <= {c["id"] for c in CASES}
