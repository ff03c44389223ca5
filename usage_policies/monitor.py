"""Monitoring: does a history of performed actions comply with a policy? (pure)

``check_history(policy, events, now) -> MonitoringResult`` looks back over what was done, where
:func:`usage_policies.evaluate.evaluate` decides one attempt before it happens. Each event is an action
someone performed (a :class:`~usage_policies.evaluate.Request` with the time it happened); the usage
log's entries become events with :func:`events_from_log`. Every rule, duty and remedy is matched against
an event by the engine itself (``evaluate`` on a one-rule policy at the event's time), so targets,
parties, the action hierarchy, refinements, constraints and ``and``/``or``/``xone`` mean exactly what
they mean when a use is decided.

Semantics (the ODRL CG "monitoring scenario"; events are taken in time order, ties in the given order):

* **Closed world.** Every event must be permitted by an active permission. An action no permission
  covers is a violation.
* **Counts per rule.** ``odrl:count`` of a permission is the number of earlier events exercised under
  *that* permission, plus this one; ``odrl:elapsedTime`` runs from that permission's first exercise.
* **Prohibitions** (ODRL 2.2 §2.6.3). An event an active prohibition covers is a violation, unless one of
  the prohibition's remedies is performed by a *later* event. The policy's conflict strategy ``perm``
  lets an active permission override it (ODRL 2.2 §2.8); otherwise the prohibition stands.
* **Duties of a permission** (ODRL 2.2 §2.6.5), timed as :func:`usage_policies.evaluate.duty_timing`
  says, so that monitoring agrees with the decisions the node made:

  - a duty due *before use* must be performed by an event before the permission's first exercise. If
    it was not, the duty is violated at that exercise: its consequences (ODRL 2.2 §2.6.4) must then be
    performed by events *after* the violation, and the duty itself must still be performed, late;
    without consequences the violation stands.
  - a duty due *with or after use* (``compensate``, ``inform``, ``delete``, … without the
    ``event lt policyUsage`` idiom) must have been performed by some event before ``now``, before or
    after the first exercise.
* **Obligations** (policy level, ODRL 2.2 §2.6.4) must be performed by some event before ``now``, by the
  policy-level assignee and on the policy-level target when the obligation names none (§2.7.1).

A duty, remedy or obligation is performed by an event its action (with refinements), target and
assignee match and its constraints hold for at that time. A duty without an assignee or target may be
performed by anyone, on any asset. The ``odrl:event`` constraints of a duty say *when* it is due (see
``duty_timing``); they are not checked against the event. Events after ``now`` are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import msgspec

from usage_policies.evaluate import (
    EMPTY_WORLD,
    CompiledPolicy,
    Request,
    World,
    compile_policy,
    duty_timing,
    evaluate,
)
from usage_policies.ledger import Entry
from usage_policies.model import (
    ODRL,
    AnyConstraint,
    ConflictStrategy,
    Constraint,
    Duty,
    Permission,
    Policy,
    Prohibition,
    rule_with_policy_defaults,
)
from usage_policies.report import DutyTiming, Satisfaction
from usage_policies.values import parse_datetime

SATISFIED = Satisfaction.SATISFIED


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One performed action: what was done (``request``: party, action, target, context) and when."""

    at: datetime
    request: Request
    ref: str = ""  # where it came from, e.g. a log entry's sequence number; shown in violations


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """Something in the history the policy does not allow, with the event and the rule concerned."""

    reason: str
    event: str | None = None  # ``Event.ref`` (or ``#index``) of the event concerned, if one is
    rule: str | None = None
    #: What is wrong: ``unpermitted`` (no active permission allows the event), ``prohibited`` (an active
    #: prohibition forbids it), ``duty`` (a duty of an exercised permission not performed in time) or
    #: ``obligation``.
    kind: str = "unpermitted"


class MonitoringResult(msgspec.Struct, frozen=True, kw_only=True):
    compliant: bool
    violations: tuple[Violation, ...] = ()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class _Matcher:
    """One rule (or duty) as a one-rule compiled policy, asked "does it cover this event?"."""

    def __init__(self, policy: Policy, rule: Permission | Prohibition, label: str) -> None:
        if isinstance(rule, Permission):
            permissions: tuple[Permission, ...] = (msgspec.structs.replace(rule, duties=()),)
            prohibitions: tuple[Prohibition, ...] = ()
        else:
            permissions, prohibitions = (), (msgspec.structs.replace(rule, remedies=()),)
        self.label = label
        self.compiled: CompiledPolicy = compile_policy(
            msgspec.structs.replace(policy, permissions=permissions, prohibitions=prohibitions, obligations=())
        )

    def check(self, request: Request, world: World, at: datetime) -> tuple[bool, list[str]]:
        """Whether the rule covers *request* at *at*, and if not, why (in this rule's own words)."""
        report = evaluate(self.compiled, request, world, at).report.rules[0]
        if report.active:
            return True, []
        parts = [p.reason for p in report.premises if p.reason and p.satisfaction is not SATISFIED]
        parts += [c.reason for c in report.constraints if c.reason and c.satisfaction is not SATISFIED]
        return False, [f"{self.label} does not apply: " + "; ".join(parts)]


def _duty_constraints(constraints: tuple[AnyConstraint, ...]) -> tuple[AnyConstraint, ...]:
    # ``event lt policyUsage`` says when a duty is due, not what performing it looks like.
    return tuple(c for c in constraints if not (isinstance(c, Constraint) and c.left_operand == ODRL + "event"))


def _duty_matcher(policy_uid: str, duty: Duty, label: str) -> _Matcher:
    as_rule = Permission(action=duty.action, uid=duty.uid, target=duty.target, assignee=duty.assignee,
                         constraints=_duty_constraints(duty.constraints))
    return _Matcher(Policy(uid=policy_uid), as_rule, label)


def _name(duty: Duty) -> str:
    name = duty.action.name
    return name[len(ODRL):] if name.startswith(ODRL) else name


class _History:
    def __init__(self, policy_uid: str, events: list[Event], world: World) -> None:
        self.policy_uid = policy_uid
        self.events = events
        self.world = world

    def ref(self, i: int) -> str:
        return self.events[i].ref or f"#{i + 1}"

    def performed(self, duty: Duty, label: str, start: int = 0, stop: int | None = None) -> int | None:
        """The first event in ``events[start:stop]`` performing *duty*, or None."""
        matcher = _duty_matcher(self.policy_uid, duty, label)
        for i in range(start, len(self.events) if stop is None else stop):
            event = self.events[i]
            if matcher.check(event.request, self.world, event.at)[0]:
                return i
        return None


def check_history(
    policy: Policy, events: Iterable[Event], now: datetime, world: World = EMPTY_WORLD
) -> MonitoringResult:
    """Check every event of a history, and the duties and obligations it had to fulfil, against *policy*.

    Never raises for what the policy or the events say: anything that does not hold is a violation with
    a reason. A naive datetime is taken as UTC.
    """
    now = _aware(now)
    ordered = sorted(
        (e if e.at.tzinfo is not None else msgspec.structs.replace(e, at=_aware(e.at)) for e in events),
        key=lambda e: e.at,
    )
    history = _History(policy.uid, [e for e in ordered if e.at <= now], world)
    permissions = [_Matcher(policy, p, f"permission {p.uid or f'#{i + 1}'}")
                   for i, p in enumerate(policy.permissions)]
    prohibitions = [_Matcher(policy, p, f"prohibition {p.uid or f'#{i + 1}'}")
                    for i, p in enumerate(policy.prohibitions)]
    permission_wins = policy.conflict is ConflictStrategy.PERM
    counts = [0] * len(permissions)
    first_use: list[int | None] = [None] * len(permissions)
    violations: list[Violation] = []

    for i, event in enumerate(history.events):
        permitted_by: list[int] = []
        refusals: list[str] = []
        for k, matcher in enumerate(permissions):
            first = first_use[k]
            request = msgspec.structs.replace(
                event.request, use_count=counts[k],
                first_use=history.events[first].at if first is not None else None,
            )
            active, reasons = matcher.check(request, world, event.at)
            if active:
                permitted_by.append(k)
            else:
                refusals += reasons
        for k in permitted_by:
            counts[k] += 1
            if first_use[k] is None:
                first_use[k] = i
        if not permitted_by:
            why = "; ".join(refusals) if refusals else "the policy has no permission"
            violations.append(Violation(event=history.ref(i), reason=f"no permission allows this event: {why}"))
        if permitted_by and permission_wins:
            continue
        for prohibition, matcher in zip(policy.prohibitions, prohibitions, strict=True):
            if not matcher.check(event.request, world, event.at)[0]:
                continue
            remedied = any(
                history.performed(remedy, f"remedy of {matcher.label}", start=i + 1) is not None
                for remedy in prohibition.remedies
            )
            if not remedied:
                after = " and none of its remedies was performed after it" if prohibition.remedies else ""
                violations.append(Violation(event=history.ref(i), rule=prohibition.uid, kind="prohibited",
                                            reason=f"{matcher.label} forbids this event{after}"))

    for k, permission in enumerate(policy.permissions):
        first = first_use[k]
        if first is None:
            continue  # never exercised: its duties never became due
        for duty in permission.duties:
            violations += _check_duty(history, duty, permissions[k].label, first)

    for duty in policy.obligations:
        # ODRL 2.2 IM §2.7.1: the policy-level target and parties are the obligation's unless it names its own.
        if history.performed(rule_with_policy_defaults(policy, duty), "obligation") is None:
            violations.append(Violation(rule=duty.uid, kind="obligation",
                                        reason=f"obligation {_name(duty)!r} was not performed"))

    return MonitoringResult(compliant=not violations, violations=tuple(violations))


def _check_duty(history: _History, duty: Duty, label: str, first: int) -> list[Violation]:
    name = _name(duty)
    if duty_timing(duty) is DutyTiming.WITH_OR_AFTER_USE:
        if history.performed(duty, f"duty of {label}") is not None:
            return []
        return [Violation(event=history.ref(first), rule=duty.uid, kind="duty",
                          reason=f"duty {name!r} of {label}, due with or after its use, was not performed")]
    if history.performed(duty, f"duty of {label}", stop=first) is not None:
        return []
    late = f"duty {name!r} of {label} was not performed before its first exercise"
    if not duty.consequences:
        return [Violation(event=history.ref(first), rule=duty.uid, kind="duty", reason=late)]
    problems = []
    if history.performed(duty, f"duty of {label}", start=first) is None:
        problems.append(Violation(event=history.ref(first), rule=duty.uid, kind="duty",
                                  reason=f"{late}, and not afterwards either"))
    for consequence in duty.consequences:
        if history.performed(consequence, f"consequence of {label}", start=first + 1) is None:
            problems.append(Violation(
                event=history.ref(first), rule=consequence.uid, kind="duty",
                reason=f"{late}, and its consequence {_name(consequence)!r} was not performed after that",
            ))
    return problems


def events_from_log(
    entries: Sequence[Entry], request_of: Callable[[Entry], Request] | None = None
) -> list[Event]:
    """The events of a usage-log chain: every permitted use and every duty carried out.

    A denied use did not happen, so it is not an event; nor is a re-delivery of a use already counted, or
    a revocation (something done to the consumer, not by it). *request_of* builds the request of an entry
    (the caller knows the agreement's party and asset); by default only the action (a use's ``action``,
    else the entry's ``kind``) and the purpose are known.
    """

    def default(entry: Entry) -> Request:
        return Request(action=entry.action or entry.kind, purpose=entry.purpose or None)

    build = request_of or default
    return [
        Event(at=parse_datetime(entry.at.replace("Z", "+00:00")), request=build(entry), ref=f"#{entry.seq}")
        for entry in entries
        if not (entry.kind == "use" and entry.decision != "permit") and entry.kind not in _NOT_EVENTS
    ]


#: Log entries that record no action the consumer performed.
_NOT_EVENTS = frozenset({"redelivery", "revoked"})


__all__ = ["Event", "MonitoringResult", "Violation", "check_history", "events_from_log"]
