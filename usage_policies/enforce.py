"""Duties and obligations planning for one local use of received data (pure).

``plan_use(agreement_policy, usage_state, attempted_use, now)`` evaluates the agreement for the attempted
use and, on a permit, returns the effects the node must carry out, as data:

=========================  ===========================================================================
effect                     from
=========================  ===========================================================================
:class:`IncrementCounter`  every permitted use (``odrl:count`` and ``odrl:elapsedTime`` depend on it)
:class:`AppendLog`         a duty ``odrl:acceptTracking`` ("log each use")
:class:`InformProvider`    a duty ``odrl:inform`` (the ``informedParty``, else the assigner)
:class:`DeleteAt`          a duty ``odrl:delete``; the time is the duty's ``dateTime`` bound, or
                           first use + its ``elapsedTime`` bound, or ``now`` (delete after this use)
:class:`Meter`             a duty ``odrl:compensate`` priced per use or per query (a price per
                           gigabyte or per period is billed by its period's statement instead)
=========================  ===========================================================================

Duty semantics are those of :mod:`usage_policies.evaluate`: a duty due *before* use is a pre-condition
checked there (the use is denied until the usage state reports it fulfilled); a duty due *with or after*
use becomes one of the effects above. A with-or-after duty this node cannot carry out (an action not in
the table, or a ``compensate`` whose price cannot be read, such as one without an amount) turns the permit
into a deny with a reason: the node must not accept a use whose duties it would silently drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

import msgspec

from usage_policies.evaluate import (
    EMPTY_WORLD,
    CompiledPolicy,
    Decision,
    Outcome,
    Request,
    Verdict,
    World,
    decide,
    evaluate,
    expand_action,
)
from usage_policies.model import ODRL, Constraint, Duty, Literal, Policy, iter_constraints
from usage_policies.pricing import Basis, PricingError, read_term
from usage_policies.report import DutyState
from usage_policies.values import Day, Duration, ValueKind, coerce, parse_duration


class UsageState(msgspec.Struct, frozen=True, kw_only=True):
    """What the node knows about the use of one agreement so far."""

    use_count: int = 0
    first_use: datetime | None = None
    duty_states: Mapping[str, DutyState] = msgspec.field(default_factory=dict)
    world: World = EMPTY_WORLD


class IncrementCounter(msgspec.Struct, frozen=True, kw_only=True):
    """Count this use under ``key`` (the agreement); ``at`` is the first use if none was recorded."""

    key: str
    at: datetime


class AppendLog(msgspec.Struct, frozen=True, kw_only=True):
    agreement: str
    party: str | None
    action: str
    target: str | None
    at: datetime


class InformProvider(msgspec.Struct, frozen=True, kw_only=True):
    party: str | None
    agreement: str
    action: str
    target: str | None
    at: datetime


class DeleteAt(msgspec.Struct, frozen=True, kw_only=True):
    target: str | None
    time: datetime


class Meter(msgspec.Struct, frozen=True, kw_only=True):
    amount: Decimal
    unit: str | None
    party: str | None = None


Effect: TypeAlias = IncrementCounter | AppendLog | InformProvider | DeleteAt | Meter


class UseDecision(msgspec.Struct, frozen=True, kw_only=True):
    #: With its report (a :class:`Decision`), or without it (a :class:`Verdict`: ``plan_use(…, report=False)``);
    #: both have ``outcome``, ``reasons``, ``duties`` and ``permitted``.
    decision: Decision | Verdict
    effects: tuple[Effect, ...] = ()

    @property
    def permitted(self) -> bool:
        return self.decision.outcome is Outcome.PERMIT


def _bound(duty: Duty, left_operand: str) -> Constraint | None:
    for c in iter_constraints(duty.constraints):
        if c.left_operand == ODRL + left_operand and c.operator in (ODRL + "lt", ODRL + "lteq", ODRL + "eq"):
            return c
    return None


def _delete_time(duty: Duty, first_use: datetime, now: datetime) -> datetime:
    c = _bound(duty, "dateTime")
    if c is not None and c.right_operand and isinstance(c.right_operand[0], Literal):
        term = c.right_operand[0]
        bound = coerce(term.value, term.datatype or c.data_type, ValueKind.DATETIME)
        if isinstance(bound, Day):  # a whole day: "lteq"/"eq" that day leaves until its end
            return bound.start if c.operator == ODRL + "lt" else bound.end
        if isinstance(bound, datetime):
            return bound
    c = _bound(duty, "elapsedTime")
    if c is not None and c.right_operand and isinstance(c.right_operand[0], Literal):
        duration: Duration = parse_duration(c.right_operand[0].value)
        return duration.add_to(first_use)
    return now


def _amount_unit(duty: Duty) -> str | None:
    for c in (*iter_constraints(duty.constraints), *iter_constraints(duty.action.refinement)):
        if c.left_operand == ODRL + "payAmount":
            return c.unit
    return None


def _party(value: object) -> str | None:
    return value if isinstance(value, str) else getattr(value, "uid", None)


def plan_use(
    agreement_policy: Policy | CompiledPolicy,
    usage_state: UsageState,
    attempted_use: Request,
    now: datetime,
    *,
    report: bool = True,
) -> UseDecision:
    """Decide one use and list the effects to carry out (none on a deny).

    The counters in *attempted_use* are replaced by those of *usage_state*, and the world's duty states
    are those of the usage state, so the caller keeps one source of truth. With ``report=False`` the use is
    decided first (:func:`usage_policies.evaluate.decide`): the same outcome, reasons, duties and effects,
    without the compliance report, which costs most of a decision.
    """
    policy = agreement_policy.policy if isinstance(agreement_policy, CompiledPolicy) else agreement_policy
    request = msgspec.structs.replace(
        attempted_use, action=expand_action(attempted_use.action), use_count=usage_state.use_count,
        first_use=usage_state.first_use,
    )
    world = usage_state.world
    if usage_state.duty_states:
        world = msgspec.structs.replace(world, duty_states={**world.duty_states, **usage_state.duty_states})
    decision: Decision | Verdict = (
        evaluate(agreement_policy, request, world, now) if report else decide(agreement_policy, request, world, now)
    )
    if decision.outcome is not Outcome.PERMIT:
        return UseDecision(decision=decision)
    first_use = usage_state.first_use or now
    provider = _party(policy.assigner)
    effects: list[Effect] = [IncrementCounter(key=policy.uid, at=now)]
    problems: list[str] = []
    target = request.target if request.target is not None else _party(policy.target)
    for duty in decision.duties:
        action = duty.action.name
        if action == ODRL + "acceptTracking":
            effects.append(AppendLog(agreement=policy.uid, party=request.party, action=request.action,
                                     target=target, at=now))
        elif action == ODRL + "inform":
            effects.append(InformProvider(party=duty.informed_party or _party(duty.assigner) or provider,
                                          agreement=policy.uid, action=request.action, target=target, at=now))
        elif action == ODRL + "delete":
            effects.append(DeleteAt(target=_party(duty.target) or target,
                                    time=_delete_time(duty, first_use, now)))
        elif action == ODRL + "compensate":
            try:
                term = read_term(duty)
            except PricingError as exc:
                problems.append(str(exc).removeprefix("the duty: "))
                continue
            # Per transferred gigabyte or per period, a price is met by its statement (usage_policies.pricing),
            # not by each use.
            if term.basis in (Basis.USE, Basis.QUERY):
                effects.append(Meter(amount=term.unit_price, unit=_amount_unit(duty),
                                     party=duty.compensated_party or provider))
        else:
            problems.append(f"duty {action!r} cannot be carried out by this node")
    if problems:
        if isinstance(decision, Decision):
            return UseDecision(decision=Decision(outcome=Outcome.DENY, reasons=[*decision.reasons, *problems],
                                                 report=decision.report))
        return UseDecision(decision=Verdict(outcome=Outcome.DENY, reasons=(*decision.reasons, *problems)))
    return UseDecision(decision=decision, effects=tuple(effects))
