"""Typed values: date-times as instants, durations, numbers, data classes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from usage_policies.model import XSD
from usage_policies.values import (
    DataClass,
    Day,
    Duration,
    Elapsed,
    ValueKind,
    coerce,
    compare,
    format_duration,
    parse_datetime,
    parse_duration,
    show,
)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("2024-02-12T11:20:10.999Z", "2024-02-12T11:20:10Z", 1),
        ("2024-02-12T11:20:10Z", "2024-02-12T12:20:10+01:00", 0),
        ("2023-12-31T06:00Z", "2023-12-31T06:00:00Z", 0),  # DSP example: no seconds
        ("2024-01-01", "2024-01-01T00:00:00Z", 0),  # a date-only date-time: its first instant
        ("2024-01-01T00:00:00", "2024-01-01T00:00:00Z", 0),  # no offset: UTC
    ],
)
def test_datetimes_compare_as_instants(a, b, expected):
    assert compare(parse_datetime(a), parse_datetime(b)) == expected


@pytest.mark.parametrize(
    ("text", "months", "seconds"),
    [("P30D", 0, 30 * 86400), ("PT1H30M", 0, 5400), ("P1Y2M", 14, 0), ("P1W", 0, 7 * 86400),
     ("PT0.5S", 0, Decimal("0.5")), ("-P1D", 0, -86400)],
)
def test_parse_duration(text, months, seconds):
    assert parse_duration(text) == Duration(months=months, seconds=Decimal(seconds))


@pytest.mark.parametrize("text", ["P", "PT", "30D", "P1DT", "P1.5D", "PXD"])
def test_malformed_durations_are_rejected(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["P30D", "PT1H30M", "P1Y2M", "P2DT3H4M5.5S"])
def test_duration_format_round_trips(text):
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_elapsed_compares_with_calendar_months():
    start = datetime(2024, 1, 31, tzinfo=UTC)
    # One month after 31 January 2024 is 29 February 2024 (end of month clamps).
    assert compare(Elapsed(start=start, end=datetime(2024, 2, 29, tzinfo=UTC)), parse_duration("P1M")) == 0
    assert compare(Elapsed(start=start, end=datetime(2024, 3, 1, tzinfo=UTC)), parse_duration("P1M")) == 1


@pytest.mark.parametrize(
    ("lexical", "datatype", "kind", "expected"),
    [
        ("5", None, ValueKind.INTEGER, 5),
        ("5.50", XSD + "decimal", ValueKind.STRING, Decimal("5.50")),
        ("7", XSD + "integer", ValueKind.STRING, 7),
        ("R&D", None, ValueKind.IRI, "R&D"),
        ("core", None, ValueKind.DATA_CLASS, DataClass.CORE),
        ("true", XSD + "boolean", ValueKind.STRING, True),
    ],
)
def test_coerce_reads_by_datatype_then_kind(lexical, datatype, kind, expected):
    assert coerce(lexical, datatype, kind) == expected


@pytest.mark.parametrize(
    ("lexical", "datatype", "kind"),
    [("soon", XSD + "dateTime", ValueKind.STRING), ("5.5", XSD + "integer", ValueKind.STRING),
     ("secret", None, ValueKind.DATA_CLASS), ("NaN", None, ValueKind.DECIMAL)],
)
def test_coerce_rejects_values_that_do_not_fit(lexical, datatype, kind):
    with pytest.raises(ValueError):
        coerce(lexical, datatype, kind)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(DataClass.GENERAL, DataClass.CORE, -1), (DataClass.CORE, DataClass.IMPORTANT, 1),
     (5, Decimal("5.0"), 0), (Decimal("0.1"), 1, -1)],
)
def test_ordered_values(a, b, expected):
    assert compare(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [("a", "b"), (DataClass.PERSONAL, DataClass.CORE), (5, "5"), (datetime(2024, 1, 1, tzinfo=UTC), 5)],
)
def test_values_without_a_common_order_raise_type_error(a, b):
    with pytest.raises(TypeError):
        compare(a, b)


DAY = coerce("2017-12-31", XSD + "date", ValueKind.DATETIME)


@pytest.mark.parametrize(
    ("instant", "expected"),
    [("2017-12-30T23:59:59Z", -1), ("2017-12-31T00:00:00Z", 0), ("2017-12-31T23:59:59.999Z", 0),
     ("2018-01-01T00:00:00Z", 1), ("2018-01-01T00:30:00+01:00", 0)],
)
def test_an_xsd_date_is_the_whole_day(instant, expected):
    # XML Schema: date values are "top-open intervals of exactly one day in length".
    assert isinstance(DAY, Day)
    assert compare(parse_datetime(instant), DAY) == expected
    assert compare(DAY, parse_datetime(instant)) == -expected


def test_a_date_with_an_offset_is_that_days_interval_in_its_zone():
    day = coerce("2017-12-31+01:00", XSD + "date", ValueKind.DATETIME)
    assert isinstance(day, Day) and day.start == parse_datetime("2017-12-30T23:00:00Z")


def test_a_date_written_for_a_date_time_operand_is_a_day_and_a_date_time_is_an_instant():
    assert coerce("2017-12-31", None, ValueKind.DATETIME) == DAY
    assert coerce("2017-12-31T10:00:00Z", XSD + "date", ValueKind.DATETIME) == parse_datetime("2017-12-31T10:00:00Z")
    assert show(DAY) == "2017-12-31"
