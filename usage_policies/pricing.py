"""Prices in agreements, and what a period of use costs (pure; exact decimal arithmetic, no floats).

A price is an ODRL duty ``odrl:compensate`` of a permission (ODRL 2.2 vocabulary, ``compensate``; its amount is
``odrl:payAmount eq <decimal>`` with the currency as the constraint's ``unit``). The project's terms, on the same
duty, say what it is paid for and how a statement rounds:

=========================  ===============================================================================
left operand               right operand
=========================  ===============================================================================
``tds:meteredPer``         ``tds:use`` (default: each permitted use), ``tds:query`` (each query answered by
                           the provider's data sandbox), ``tds:gigabyte`` (each 10^9 bytes transferred) or
                           ``tds:period`` (a subscription: each billing period begun)
``tds:billingPeriod``      ``P1M`` (calendar months, the default), ``P1W`` (ISO weeks) or ``P1D`` (days), UTC
``tds:rounding``           ``"<quantum> <mode>"``, e.g. ``"0.01 half-up"`` (the default): each line of a
                           statement is rounded to the quantum, the total is the sum of the rounded lines
``tds:priceTiers``         ``isAnyOf`` of ``"<from>:<unit price>"``: graduated tiers within one statement
                           (``"1000:2.00"``: from the 1,001st unit on, each costs 2.00)
=========================  ===============================================================================

**Pre-paid and post-paid.** A ``compensate`` duty carrying ``odrl:event lt|lteq odrl:policyUsage`` is due
*before* use: the engine (:mod:`usage_policies.evaluate`) denies every use until the world reports the duty
fulfilled, so a pre-paid price is a precondition. Every other ``compensate`` duty is *post-paid*: it does not
block a use (the engine treats it as due with or after use), a use metered per use carries a
:class:`usage_policies.enforce.Meter` effect in its log entry, and the duty is met by settling the statement of
its period (:mod:`connector.protocol.statements`). Statements bill post-paid terms only.

Quantities come from evidence both sides hold (the shell counts them: signed usage receipts, transfer records,
signed query results); this module turns quantities into amounts the same way on both sides.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

import msgspec

from usage_policies.errors import PolicyError
from usage_policies.model import ODRL, TDS, Constraint, Duty, Literal, Policy, Ref, iter_constraints

METERED_PER = TDS + "meteredPer"
BILLING_PERIOD = TDS + "billingPeriod"
ROUNDING = TDS + "rounding"
PRICE_TIERS = TDS + "priceTiers"
#: The pricing terms (see the module's table); registered as terms in :mod:`usage_policies.operands`.
PRICING_OPERANDS = frozenset({METERED_PER, BILLING_PERIOD, ROUNDING, PRICE_TIERS})

DEFAULT_ROUNDING = "0.01 half-up"
DEFAULT_PERIOD = "P1M"
PERIODS = ("P1M", "P1W", "P1D")
#: Bytes in one gigabyte (SI, as transfer volumes are billed).
GIGABYTE = 10**9
#: The most tiers one price may have, and the largest amount or quantity a statement handles.
MAX_TIERS = 16
MAX_AMOUNT = Decimal("1e15")
_ROUNDING_MODES = {"half-up": ROUND_HALF_UP, "half-even": ROUND_HALF_EVEN, "up": ROUND_UP, "down": ROUND_DOWN,
                   "ceiling": ROUND_CEILING, "floor": ROUND_FLOOR}
_DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,12})?")
_QUANTA = ("1", "0.1", "0.01", "0.001", "0.0001", "0.00001", "0.000001")
#: A currency code: letters first, then letters, digits, '.', '_' or '-' (it ends up in CSV exports and reports).
_CURRENCY = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
#: The arithmetic of prices never rounds on its own: every amount and quantity is bounded (15 integer and 12
#: fractional digits), so a product of two and a sum of a few fit in 100 digits exactly; anything that would
#: still round is an error (Inexact trapped). Only :meth:`Rounding.apply` rounds, by the agreement's rule.
_EXACT = Context(prec=100, Emax=999_999, Emin=-999_999, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])
_ROUNDING_CONTEXT = Context(prec=100, Emax=999_999, Emin=-999_999, traps=[InvalidOperation, DivisionByZero, Overflow])


class PricingError(PolicyError):
    """A price the node cannot meter: a missing or malformed amount, basis, period, rounding or tier."""

    http_status = 400
    dsp_code = "400"


class Basis(enum.StrEnum):
    """What a price is paid for (``tds:meteredPer``)."""

    USE = "use"
    QUERY = "query"
    GIGABYTE = "gigabyte"
    PERIOD = "period"


class Tier(msgspec.Struct, frozen=True):
    """From *start* units on (exclusive: the tier's first unit is ``start + 1``), each costs *unit_price*."""

    start: Decimal
    unit_price: Decimal


class Rounding(msgspec.Struct, frozen=True):
    quantum: Decimal
    mode: str  # a key of _ROUNDING_MODES

    def __str__(self) -> str:
        return f"{self.quantum} {self.mode}"

    def apply(self, amount: Decimal) -> Decimal:
        try:
            return amount.quantize(self.quantum, rounding=_ROUNDING_MODES[self.mode], context=_ROUNDING_CONTEXT)
        except DecimalException as exc:
            raise PricingError(f"{amount} cannot be rounded to {self.quantum}") from exc


class PriceTerm(msgspec.Struct, frozen=True, kw_only=True):
    """One price of an agreement: a ``compensate`` duty read (see the module's docstring)."""

    basis: Basis
    unit_price: Decimal
    currency: str
    tiers: tuple[Tier, ...] = ()
    period: str = DEFAULT_PERIOD
    rounding: Rounding = Rounding(Decimal("0.01"), "half-up")
    prepaid: bool = False
    party: str | None = None
    #: Where the duty is in the policy's atomic rules (``permission[0].duty[1]``).
    path: str = ""


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a statement: a quantity of one basis at its price, the amount rounded by the term's rule."""

    basis: Basis
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str
    tiers: tuple[Tier, ...] = ()


def parse_decimal(text: object, what: str) -> Decimal:
    """A non-negative decimal written plainly (``12``, ``2.50``): no exponent, sign, NaN or infinity."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if isinstance(text, Decimal):
        text = format(text, "f")
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise PricingError(f"{what} must be a plain non-negative decimal number, not {text!r}")
    return Decimal(text)


def parse_rounding(text: object) -> Rounding:
    """``"0.01 half-up"`` → :class:`Rounding`. The quantum is a power of ten between 1 and 0.000001."""
    parts = text.split() if isinstance(text, str) else []
    if len(parts) != 2 or parts[1] not in _ROUNDING_MODES:
        raise PricingError(f"rounding must be '<quantum> <mode>' with mode one of {', '.join(_ROUNDING_MODES)}, "
                           f"not {text!r}")
    # Written exactly so: 0.010 would round to three places, and its text would differ from 0.01's.
    if parts[0] not in _QUANTA:
        raise PricingError(f"the rounding quantum must be 1, 0.1, … or 0.000001, not {parts[0]}")
    return Rounding(Decimal(parts[0]), parts[1])


def parse_tier(text: object) -> Tier:
    """``"1000:2.00"`` → from the 1,001st unit on, each costs 2.00."""
    if not isinstance(text, str) or text.count(":") != 1:
        raise PricingError(f"a price tier is '<from>:<unit price>', not {text!r}")
    start, price = text.split(":")
    return Tier(parse_decimal(start, "a tier's start"), parse_decimal(price, "a tier's unit price"))


def tier_text(tier: Tier) -> str:
    return f"{format(tier.start, 'f')}:{format(tier.unit_price, 'f')}"


def currency_code(unit: str | None) -> str:
    """The currency a ``unit`` names: a code as given (``CNY``), or the last segment of an IRI."""
    if not unit:
        raise PricingError("a price names no currency (the payAmount constraint's unit)")
    text = unit.rstrip("/#")
    for sep in ("#", "/", ":"):
        text = text.rsplit(sep, 1)[-1]
    if not _CURRENCY.fullmatch(text):
        raise PricingError(f"a price's currency cannot be read from {unit[:80]!r}")
    return text


def _value(c: Constraint) -> object:
    terms = c.right_operand
    if len(terms) != 1:
        return None
    term = terms[0]
    return term.value if isinstance(term, Literal) else term.iri if isinstance(term, Ref) else None


def _bare(iri: object) -> str:
    text = str(iri or "")
    for sep in ("#", "/", ":"):
        text = text.rsplit(sep, 1)[-1]
    return text


def _is_before_use(duty: Duty) -> bool:
    # The engine's own reading of when a duty is due, so that a price is never both a precondition there and
    # billed here (imported here: usage_policies.evaluate imports the operands, which import this module).
    from usage_policies.evaluate import duty_timing
    from usage_policies.report import DutyTiming

    return duty_timing(duty) is DutyTiming.BEFORE_USE


#: Each pricing term's one operator (``tds:priceTiers`` lists its tiers, ``isAnyOf``; the others state one value).
_OPERATORS = {ODRL + "payAmount": ODRL + "eq", METERED_PER: ODRL + "eq", BILLING_PERIOD: ODRL + "eq",
              ROUNDING: ODRL + "eq", PRICE_TIERS: ODRL + "isAnyOf"}


def read_term(duty: Duty, *, path: str = "") -> PriceTerm:
    """The price a ``compensate`` *duty* states. Raises :class:`PricingError` naming what cannot be read (its
    message starts with *path*, or "the duty")."""
    where = path or "the duty"
    if duty.action.name != ODRL + "compensate":
        raise PricingError(f"{where} is not a compensate duty")
    amount: Decimal | None = None
    currency = ""
    basis, period, rounding = Basis.USE, DEFAULT_PERIOD, parse_rounding(DEFAULT_ROUNDING)
    tiers: list[Tier] = []
    seen: set[str] = set()
    for c in (*iter_constraints(duty.constraints), *iter_constraints(duty.action.refinement)):
        lo = c.left_operand
        operator = _OPERATORS.get(lo)
        if operator is None:
            continue
        name = lo.rsplit("/", 1)[-1].rsplit("#", 1)[-1]
        # One statement of each term: two would let a reader take either (a display the first, a bill the last).
        if lo in seen:
            raise PricingError(f"{where}: a price states {name} once")
        seen.add(lo)
        if c.operator != operator:
            raise PricingError(f"{where}: {name} is stated with '{_bare(operator)}', not '{_bare(c.operator)}'")
        try:
            if lo == ODRL + "payAmount":
                amount = parse_decimal(_value(c), "payAmount")
                currency = currency_code(c.unit)
            elif lo == METERED_PER:
                value = _bare(_value(c))
                try:
                    basis = Basis(value)
                except ValueError:
                    raise PricingError(f"meteredPer must be one of {', '.join(b.value for b in Basis)}, "
                                       f"not {value!r}") from None
            elif lo == BILLING_PERIOD:
                period = str(_value(c) or "")
                if period not in PERIODS:
                    raise PricingError(f"billingPeriod must be one of {', '.join(PERIODS)}, not {period!r}")
            elif lo == ROUNDING:
                rounding = parse_rounding(_value(c))
            else:
                values = [t.value if isinstance(t, Literal) else None for t in c.right_operand]
                if len(values) > MAX_TIERS:
                    raise PricingError(f"at most {MAX_TIERS} price tiers")
                tiers.extend(parse_tier(v) for v in values)
        except PricingError as exc:
            raise PricingError(f"{where}: {exc}") from None
    if amount is None:
        raise PricingError(f"{where}: duty 'compensate' states no payAmount, so it cannot be metered")
    tiers.sort(key=lambda t: t.start)
    if len({t.start for t in tiers}) != len(tiers) or any(t.start == 0 for t in tiers):
        raise PricingError(f"{where}: price tiers must start at distinct quantities above 0")
    return PriceTerm(basis=basis, unit_price=amount, currency=currency, tiers=tuple(tiers), period=period,
                     rounding=rounding, prepaid=_is_before_use(duty), party=duty.compensated_party, path=path)


def price_terms(policy: Policy) -> tuple[PriceTerm, ...]:
    """Every price of *policy* (its permissions' ``compensate`` duties and its ``compensate`` obligations), in
    order. A compensate duty that states no amount is an error: it could not be metered."""
    out: list[PriceTerm] = []
    for i, permission in enumerate(policy.permissions):
        for j, duty in enumerate(permission.duties):
            if duty.action.name == ODRL + "compensate":
                out.append(read_term(duty, path=f"permission[{i}].duty[{j}]"))
    for k, duty in enumerate(policy.obligations):
        if duty.action.name == ODRL + "compensate":
            out.append(read_term(duty, path=f"obligation[{k}]"))
    return tuple(out)


def postpaid_terms(policy: Policy) -> tuple[PriceTerm, ...]:
    """The prices a statement bills: the post-paid ones. All must share one currency, rounding and period."""
    terms = tuple(t for t in price_terms(policy) if not t.prepaid)
    if len({(t.currency, str(t.rounding), t.period) for t in terms}) > 1:
        raise PricingError("the post-paid prices of one agreement must share one currency, rounding and billing "
                           "period")
    if len({t.basis for t in terms}) != len(terms):
        raise PricingError("an agreement states at most one post-paid price per basis")
    return terms


def _bounded(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0 or value > MAX_AMOUNT:
        raise PricingError(f"{what} must lie between 0 and {MAX_AMOUNT:f}, not {value}")
    return value


def charge(term: PriceTerm, quantity: Decimal) -> Decimal:
    """What *quantity* units cost under *term*, exactly (graduated tiers; not rounded). Raises
    :class:`PricingError` for a quantity or an amount outside 0 … :data:`MAX_AMOUNT`."""
    _bounded(quantity, "a quantity")
    bands = [(Decimal(0), term.unit_price), *((t.start, t.unit_price) for t in term.tiers)]
    try:
        with localcontext(_EXACT):
            total = Decimal(0)
            for i, (start, price) in enumerate(bands):
                end = bands[i + 1][0] if i + 1 < len(bands) else None
                if quantity <= start:
                    break
                units = (min(quantity, end) if end is not None else quantity) - start
                total += units * price
    except DecimalException as exc:
        raise PricingError(f"{quantity} units at {term.unit_price} cannot be charged exactly") from exc
    return _bounded(total, "an amount")


def bill(terms: Iterable[PriceTerm], quantities: Mapping[Basis, Decimal]) -> tuple[tuple[Line, ...], Decimal]:
    """The lines and the total of a statement: one line per term, each rounded by its rule."""
    lines: list[Line] = []
    for term in terms:
        quantity = quantities.get(term.basis, Decimal(0))
        amount = term.rounding.apply(charge(term, quantity))
        lines.append(Line(basis=term.basis, quantity=quantity, unit_price=term.unit_price, amount=amount,
                          currency=term.currency, tiers=term.tiers))
    with localcontext(_EXACT):
        total = sum((line.amount for line in lines), Decimal(0))
    return tuple(lines), _bounded(total, "a statement's total")


def gigabytes(byte_count: int) -> Decimal:
    """*byte_count* in gigabytes (10^9 bytes), exactly."""
    if isinstance(byte_count, bool) or not isinstance(byte_count, int) or byte_count < 0 or \
            byte_count > MAX_AMOUNT * GIGABYTE:
        raise PricingError(f"a byte count is a whole number between 0 and {MAX_AMOUNT * GIGABYTE:f}, "
                           f"not {byte_count!r}")
    return Decimal(byte_count).scaleb(-9, context=_EXACT)


def share(total: Decimal, percent: Decimal, rounding: Rounding) -> tuple[Decimal, Decimal]:
    """(the platform's share, the provider's net) of *total* for a platform share of *percent*, the share
    rounded by the statement's rule and the net the rest (so the two always add up to the total)."""
    if not isinstance(percent, Decimal) or not percent.is_finite() or percent < 0 or percent > 100:
        raise PricingError(f"a platform share is a percentage between 0 and 100, not {percent}")
    parse_decimal(percent, "a platform share")  # plainly written: at most 12 decimals
    _bounded(total, "a total")
    with localcontext(_EXACT):
        platform = rounding.apply(total * percent / 100)
        return platform, total - platform


# -- billing periods (UTC) ---------------------------------------------------------------------------------------

def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise PricingError("billing periods need timezone-aware times")
    return moment.astimezone(UTC)


def period_start(moment: datetime, period: str = DEFAULT_PERIOD) -> datetime:
    """The start of the billing period that holds *moment*."""
    moment = _utc(moment)
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if period == "P1M":
        return day.replace(day=1)
    if period == "P1W":
        return day - timedelta(days=day.weekday())
    if period == "P1D":
        return day
    raise PricingError(f"billingPeriod must be one of {', '.join(PERIODS)}, not {period!r}")


def period_end(start: datetime, period: str = DEFAULT_PERIOD) -> datetime:
    """The end (exclusive) of the billing period that begins at *start* (a :func:`period_start`)."""
    start = period_start(start, period)
    try:
        if period == "P1M":  # December's end is the next year's January 1
            return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        return start + timedelta(days=7 if period == "P1W" else 1)
    except (OverflowError, ValueError) as exc:
        raise PricingError(f"the billing period from {start.date()} ends after the year 9999") from exc


def period_label(start: datetime, period: str = DEFAULT_PERIOD) -> str:
    """``2026-11`` (month), ``2026-W48`` (ISO week) or ``2026-11-30`` (day)."""
    start = period_start(start, period)
    if period == "P1M":
        return f"{start.year:04d}-{start.month:02d}"
    if period == "P1W":
        year, week, _ = start.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return start.date().isoformat()


def parse_period_label(label: str) -> tuple[datetime, str]:
    """A period label (as :func:`period_label` writes it) → (its start, its billing period)."""
    # ASCII digits only: a label round-trips through period_label, and int() would read other scripts' digits.
    text = label if isinstance(label, str) else ""
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}", text):
            year, month = map(int, text.split("-"))
            return datetime(year, month, 1, tzinfo=UTC), "P1M"
        if re.fullmatch(r"[0-9]{4}-W[0-9]{2}", text):
            monday = date.fromisocalendar(int(text[:4]), int(text[6:]), 1)
            return datetime(monday.year, monday.month, monday.day, tzinfo=UTC), "P1W"
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC), "P1D"
    except ValueError:
        pass
    raise PricingError(f"a period is written 2026-11, 2026-W48 or 2026-11-30, not {str(label)[:40]!r}")


def amount_text(value: Decimal) -> str:
    """A decimal as a statement writes it: plain, never in exponent form."""
    return format(value, "f")


def line_json(line: Line) -> dict[str, Any]:
    return {"basis": str(line.basis), "quantity": amount_text(line.quantity), "unitPrice": amount_text(line.unit_price),
            "tiers": [tier_text(t) for t in line.tiers], "amount": amount_text(line.amount),
            "currency": line.currency}


def terms_json(terms: Iterable[PriceTerm]) -> list[dict[str, Any]]:
    """The prices as a statement quotes them (so that a price not in the agreement is seen)."""
    return [{"basis": str(t.basis), "unitPrice": amount_text(t.unit_price), "currency": t.currency,
             "tiers": [tier_text(x) for x in t.tiers], "period": t.period, "rounding": str(t.rounding)}
            for t in terms]

