"""Typed values of constraint operands and their comparison (ODRL 2.2 §2.5.1 ``dataType``).

Right operands arrive as lexical forms; they are turned into Python values once, when a policy is
compiled, according to the constraint's ``dataType`` or else the kind of its left operand:

* ``xsd:dateTime`` → aware :class:`datetime` (an instant: ``…10.999Z`` and ``…+01:00`` compare by the
  instant they denote). A value without a zone offset is taken as UTC.
* ``xsd:date`` (and a date written without a time for a date-time operand) → :class:`Day`, the whole day:
  XML Schema's date values are "top-open intervals of exactly one day in length on the timelines of
  dateTime". An instant compares equal to the day it falls in, less before it, greater after it, so
  ``dateTime lteq "2017-12-31"^^xsd:date`` holds until the end of that day (ODRL 2.2 IM Example 18: "valid
  until the end of the year 2017") and ``lt "2018-01-01"^^xsd:date`` until the day begins (Example 13).
* ``xsd:duration`` → :class:`Duration` (months and seconds kept apart, XML Schema 1.1 §3.3.6; a
  duration is compared against an :class:`Elapsed` span by calendar arithmetic on the span's start).
* ``xsd:decimal``/``integer``/``double`` … → :class:`~decimal.Decimal` or :class:`int`.
* strings and IRIs → :class:`str`.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

import msgspec

from usage_policies.model import TDS, XSD


class ValueKind(enum.Enum):
    """What a left operand yields; decides how an untyped right operand is read."""

    DATETIME = "dateTime"
    DURATION = "duration"
    DECIMAL = "decimal"
    INTEGER = "integer"
    STRING = "string"
    IRI = "iri"
    REGION = "region"
    DATA_CLASS = "dataClass"


class Duration(msgspec.Struct, frozen=True):
    """An ``xsd:duration``: months and seconds are incomparable units, so both are kept."""

    months: int = 0
    seconds: Decimal = Decimal(0)

    def add_to(self, start: datetime) -> datetime:
        total = start.year * 12 + (start.month - 1) + self.months
        year, month = divmod(total, 12)
        day = min(start.day, _days_in_month(year, month + 1))
        moved = start.replace(year=year, month=month + 1, day=day)
        return moved + timedelta(seconds=float(self.seconds))

    def __str__(self) -> str:
        return format_duration(self)


class Elapsed(msgspec.Struct, frozen=True):
    """A span of time from ``start`` to ``end`` (the value of ``odrl:elapsedTime``)."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return format_duration(Duration(seconds=Decimal(str((self.end - self.start).total_seconds()))))


class Day(msgspec.Struct, frozen=True):
    """An ``xsd:date``: the instants from ``start`` up to, not including, ``end`` (one day later)."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return self.start.date().isoformat()


class DataClass(enum.Enum):
    """``tds:dataClass`` values. general < important < core is an order; personal stands apart."""

    GENERAL = "general"
    IMPORTANT = "important"
    CORE = "core"
    PERSONAL = "personal"


DATA_CLASS_RANK = {DataClass.GENERAL: 0, DataClass.IMPORTANT: 1, DataClass.CORE: 2}

_DURATION = re.compile(
    r"^(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)

_NUMERIC = {
    XSD + name
    for name in (
        "decimal", "double", "float", "integer", "int", "long", "short", "byte", "nonNegativeInteger",
        "positiveInteger", "nonPositiveInteger", "negativeInteger", "unsignedInt", "unsignedLong",
        "unsignedShort", "unsignedByte",
    )
}
_INTEGERS = {x for x in _NUMERIC if not x.endswith(("decimal", "double", "float"))}


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (date(year, month + 1, 1) - date(year, month, 1)).days


def parse_datetime(text: str) -> datetime:
    """xsd:dateTime or xsd:date lexical form → aware datetime (UTC when no offset is given)."""
    value = text.strip()
    if len(value) == 10:
        value += "T00:00:00"
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_DATE = re.compile(r"^(-?\d{4,}-\d{2}-\d{2})(Z|[+-]\d{2}:\d{2})?$")


def parse_day(text: str) -> Day | datetime:
    """xsd:date lexical form → :class:`Day` (UTC when no offset is given); a value that names a time of day
    as well is read as the instant it names."""
    m = _DATE.match(text.strip())
    if m is None:
        return parse_datetime(text)
    start = parse_datetime(f"{m.group(1)}T00:00:00{m.group(2) or ''}")
    return Day(start=start, end=start + timedelta(days=1))


def parse_duration(text: str) -> Duration:
    m = _DURATION.match(text.strip())
    if m is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(f"not an xsd:duration: {text!r}")
    sign, years, months, weeks, days, hours, minutes, seconds = m.groups()
    total_months = int(years or 0) * 12 + int(months or 0)
    total_seconds = (
        Decimal(int(weeks or 0) * 7 + int(days or 0)) * 86400
        + Decimal(int(hours or 0)) * 3600
        + Decimal(int(minutes or 0)) * 60
        + Decimal(seconds or 0)
    )
    if sign:
        return Duration(months=-total_months, seconds=-total_seconds)
    return Duration(months=total_months, seconds=total_seconds)


def format_duration(d: Duration) -> str:
    sign = "-" if d.months < 0 or d.seconds < 0 else ""
    months, seconds = abs(d.months), abs(d.seconds)
    out = "P"
    if months >= 12:
        out += f"{months // 12}Y"
    if months % 12:
        out += f"{months % 12}M"
    days, rest = divmod(seconds, 86400)
    if days:
        out += f"{int(days)}D"
    if rest:
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        out += "T"
        out += f"{int(hours)}H" if hours else ""
        out += f"{int(minutes)}M" if minutes else ""
        out += f"{secs.normalize():f}S" if secs else ""
    return sign + (out if out != "P" else "PT0S")


def parse_decimal(text: str) -> Decimal | int:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return int(value) if value == value.to_integral_value() and "." not in text and "e" not in text.lower() \
        else value


def parse_data_class(text: str) -> DataClass:
    name = text.removeprefix(TDS).removeprefix("tds:")
    try:
        return DataClass(name)
    except ValueError:
        raise ValueError(f"not a data class (general, important, core, personal): {text!r}") from None


def coerce(lexical: str, datatype: str | None, kind: ValueKind) -> object:
    """Read a right-operand lexical form. ``datatype`` wins over the left operand's ``kind``."""
    if datatype is not None:
        if datatype == XSD + "date":
            return parse_day(lexical)
        if datatype in (XSD + "dateTime", XSD + "dateTimeStamp"):
            return parse_datetime(lexical)
        if datatype in (XSD + "duration", XSD + "dayTimeDuration", XSD + "yearMonthDuration"):
            return parse_duration(lexical)
        if datatype in _INTEGERS:
            value = parse_decimal(lexical)
            if not isinstance(value, int):
                raise ValueError(f"not an integer: {lexical!r}")
            return value
        if datatype in _NUMERIC:
            return parse_decimal(lexical)
        if datatype == XSD + "boolean":
            if lexical not in ("true", "false", "1", "0"):
                raise ValueError(f"not a boolean: {lexical!r}")
            return lexical in ("true", "1")
        if kind is ValueKind.DATA_CLASS:
            return parse_data_class(lexical)
        return lexical
    if kind is ValueKind.DATETIME:
        return parse_day(lexical)
    if kind is ValueKind.DURATION:
        return parse_duration(lexical)
    if kind in (ValueKind.DECIMAL, ValueKind.INTEGER):
        return parse_decimal(lexical)
    if kind is ValueKind.DATA_CLASS:
        return parse_data_class(lexical)
    return lexical


def compare(left: object, right: object) -> int:
    """Three-way comparison of typed values; TypeError when they have no common order."""
    if isinstance(left, Elapsed):
        if isinstance(right, Duration):
            return _sign3(left.end, right.add_to(left.start))
        if isinstance(right, Elapsed):
            return _sign3(left.end - left.start, right.end - right.start)
        raise TypeError(f"cannot compare an elapsed time with {_kind_name(right)}")
    if isinstance(left, Duration) and isinstance(right, Duration):
        if left.months == right.months:
            return _sign3(left.seconds, right.seconds)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return _sign3(left.add_to(epoch), right.add_to(epoch))
    if isinstance(left, datetime) and isinstance(right, datetime):
        return _sign3(left, right)
    if isinstance(left, datetime) and isinstance(right, Day):
        return -1 if left < right.start else (1 if left >= right.end else 0)
    if isinstance(left, Day) and isinstance(right, datetime):
        return -compare(right, left)
    if isinstance(left, Day) and isinstance(right, Day):
        return _sign3(left.start, right.start)
    if isinstance(left, int | Decimal) and isinstance(right, int | Decimal) \
            and not isinstance(left, bool) and not isinstance(right, bool):
        return _sign3(left, right)
    if isinstance(left, DataClass) and isinstance(right, DataClass):
        if left is right:
            return 0
        if left in DATA_CLASS_RANK and right in DATA_CLASS_RANK:
            return _sign3(DATA_CLASS_RANK[left], DATA_CLASS_RANK[right])
        raise TypeError(f"data classes {left.value!r} and {right.value!r} have no order")
    if isinstance(left, str) and isinstance(right, str):
        # Strings and IRIs have equality only (ODRL 2.2 §2.5.1 gives no order on them).
        if left == right:
            return 0
        raise TypeError("strings have no order")
    if type(left) is type(right) and left == right:
        return 0
    raise TypeError(f"cannot compare {_kind_name(left)} with {_kind_name(right)}")


def values_equal(left: object, right: object) -> bool:
    try:
        return compare(left, right) == 0
    except TypeError:
        return False


def _sign3(a: object, b: object) -> int:
    return 0 if a == b else (-1 if a < b else 1)  # type: ignore[operator]


def _kind_name(value: object) -> str:
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, Day):
        return "a date"
    if isinstance(value, Duration):
        return "a duration"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, DataClass):
        return "a data class"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def show(value: object) -> str:
    """A value as a human reads it in a reason."""
    # The usual values first, by their exact type: isinstance against the structs below is slow.
    kind = type(value)
    if kind is str:
        return repr(value)
    if kind is int or kind is Decimal:
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, DataClass):
        return repr(value.value)
    if isinstance(value, Duration | Elapsed | Day):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple | list | frozenset | set):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)
