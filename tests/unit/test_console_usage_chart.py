"""The usage page's chart and the evidence file's name, without a node."""

from __future__ import annotations

import pytest

from connector.http.console.agreements import evidence_filename
from connector.http.console.usage import MAX_DAYS, TOP, chart, uses_per_day


def use(at: str, purpose: str = "R&D", decision: str = "permit", kind: str = "use") -> dict:
    return {"kind": kind, "at": at, "purpose": purpose, "decision": decision}


def test_permitted_uses_only_are_counted_by_day_and_purpose():
    entries = [use("2026-03-01T10:00:00Z"), use("2026-03-01T11:00:00Z", "QA"), use("2026-03-02T09:00:00Z"),
               use("2026-03-02T09:30:00Z", decision="deny"), use("2026-03-02T09:40:00Z", kind="redelivery"),
               use("2026-03-02T09:50:00Z", purpose=""), {"kind": "delete", "at": "2026-03-03T00:00:00Z"}]
    assert uses_per_day(entries) == {"2026-03-01": {"R&D": 1, "QA": 1}, "2026-03-02": {"R&D": 1, "(none)": 1}}


def test_no_use_draws_no_chart():
    assert chart({}) is None and chart({"2026-03-01": {}}) is None


def test_bars_stack_their_purposes_up_to_the_tallest_day():
    drawn = chart({"2026-03-01": {"R&D": 3, "QA": 1}, "2026-03-02": {"QA": 2}})
    assert drawn is not None and [(b.day, b.total) for b in drawn.bars] == [("2026-03-01", 4), ("2026-03-02", 2)]
    first, second = drawn.bars
    # one colour per purpose, the same on every day; segments stack from the axis up, without gaps
    assert [s.purpose for s in first.segments] == ["QA", "R&D"] and [s.purpose for s in second.segments] == ["QA"]
    assert first.segments[0].color == second.segments[0].color != first.segments[1].color
    assert first.segments[0].y + first.segments[0].height == pytest.approx(drawn.bottom_y)
    assert first.segments[1].y + first.segments[1].height == pytest.approx(first.segments[0].y)
    assert first.segments[1].y == pytest.approx(TOP)  # the tallest day reaches the top
    assert second.segments[0].height == pytest.approx(sum(s.height for s in first.segments) / 2)
    assert [t.value for t in drawn.ticks] == [0, 2, 4] and drawn.total == 6 and not drawn.capped


def test_many_days_are_capped_in_the_chart_but_not_in_its_table():
    per_day = {f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}": {"R&D": 1} for i in range(MAX_DAYS + 10)}
    drawn = chart(per_day)
    assert drawn is not None and drawn.capped
    assert len(drawn.bars) == MAX_DAYS and len(drawn.rows) == MAX_DAYS + 10
    assert drawn.bars[-1].day == max(per_day) and drawn.bars[-1].show_label
    assert sum(b.show_label for b in drawn.bars) <= 12


@pytest.mark.parametrize(("agreement_id", "name"), [
    ("urn:uuid:0b6f5a52-4a8e-4c1e-9d6b-1f0e2a3b4c5d", "agreement-urn_uuid_0b6f5a52-4a8e-4c1e-9d6b-1f0e2a3b4c5d.json"),
    ('a"b\r\nContent-Type: text/html', "agreement-a_b_Content-Type_text_html.json"),
    ("../../etc/passwd", "agreement-etc_passwd.json"),
    ("...", "agreement-evidence.json"),
])
def test_the_evidence_file_name_is_safe(agreement_id, name):
    assert evidence_filename(agreement_id) == name
