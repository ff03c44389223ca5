"""What is left of an agreement's limits, as the usage summary and the provider's report show it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector.services.usage import allowance

NOW = datetime(2026, 3, 10, tzinfo=UTC)


def policy(*constraints: dict[str, object]) -> dict[str, object]:
    return {"permission": [{"action": "use", "constraint": list(constraints)}]}


@pytest.mark.parametrize(("period", "until"), [("P1M", "2026-03-28T00:00:00.000000Z"),  # a month, not 30 days
                                               ("P1Y", "2027-02-28T00:00:00.000000Z"),
                                               ("PT36H", "2026-03-01T12:00:00.000000Z"),
                                               ("P1W", "2026-03-07T00:00:00.000000Z")])
def test_use_periods_are_read_as_the_engine_reads_them(period, until):
    out = allowance(policy({"leftOperand": "elapsedTime", "operator": "lteq", "rightOperand": period}), 1,
                    "2026-02-28T00:00:00Z", NOW)
    assert out["usePeriod"] == period and out["useUntil"] == until


def test_counts_left():
    out = allowance(policy({"leftOperand": "odrl:count", "operator": "lteq",
                            "rightOperand": {"@value": "3", "@type": "xsd:integer"}}), 2, None, NOW)
    assert out == {"usesAllowed": 3, "usesLeft": 1}


@pytest.mark.parametrize("value", ["three", "1e3", "²", {"@value": None}, "P1Q"])
def test_a_value_the_engine_would_not_read_is_left_out_not_a_crash(value):
    # The agreement's policy comes from the provider: whatever it says, the summary is answered.
    count = allowance(policy({"leftOperand": "count", "operator": "lteq", "rightOperand": value}), 0, None, NOW)
    period = allowance(policy({"leftOperand": "elapsedTime", "operator": "lteq", "rightOperand": value}), 0,
                       "2026-03-01T00:00:00Z", NOW)
    assert "usesAllowed" not in count and "useUntil" not in period
