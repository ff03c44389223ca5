"""check_history: a history of performed actions against a policy (closed world, counts, prohibitions and
remedies, duties and consequences, obligations), and events_from_log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from usage_policies import ledger
from usage_policies.evaluate import Request
from usage_policies.model import (
    ODRL,
    XSD,
    Action,
    ConflictStrategy,
    Constraint,
    Duty,
    Literal,
    LogicalConstraint,
    LogicalOperand,
    Permission,
    Policy,
    Prohibition,
    Ref,
)
from usage_policies.monitor import Event, check_history, events_from_log

T0 = datetime(2026, 1, 11, 10, 0, tzinfo=UTC)
JOHN, BETH, DOC = "urn:party:john", "urn:party:beth", "urn:asset:doc"


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def event(minute: int, action: str, party: str = JOHN, target: str = DOC, **context: object) -> Event:
    return Event(at=at(minute), request=Request(party=party, action=action, target=target, context=context),
                 ref=f"e{minute}")


def lit(value: str | int, datatype: str = XSD + "integer") -> Literal:
    return Literal(value=str(value), datatype=datatype)


def c(left: str, op: str, right: Literal | Ref) -> Constraint:
    return Constraint(left_operand=left if ":" in left else ODRL + left, operator=ODRL + op, right_operand=(right,))


def allow(action: str, **fields: object) -> Permission:
    return Permission(action=Action(name=ODRL + action), **fields)  # type: ignore[arg-type]


def duty(action: str, *constraints: Constraint, consequences: tuple[Duty, ...] = ()) -> Duty:
    return Duty(action=Action(name=ODRL + action), constraints=constraints, consequences=consequences)


BEFORE_USE = c("event", "lt", Ref(ODRL + "policyUsage"))  # the ODRL idiom for "before the use"


def judge(*events: Event, now: datetime | None = None, **policy: object):
    return check_history(Policy(uid="urn:policy:p", **policy), events, now or at(100))  # type: ignore[arg-type]


# --- closed world --------------------------------------------------------------------------------------


def test_an_event_no_permission_covers_is_a_violation():
    result = judge(event(1, "print"), event(2, "modify"), permissions=(allow("print"),))
    assert not result.compliant
    [v] = result.violations
    assert v.event == "e2"
    assert "no permission allows this event" in v.reason and "'modify'" in v.reason


def test_events_every_permission_covers_comply():
    result = judge(event(1, "print"), event(2, "read", party=BETH), permissions=(allow("print"), allow("use")))
    assert result.compliant and result.violations == ()


def test_constraints_are_evaluated_at_the_time_of_each_event():
    deadline = c("dateTime", "lteq", lit("2026-01-11T10:30:00Z", XSD + "dateTime"))
    result = judge(event(10, "print"), event(40, "print"), permissions=(allow("print", constraints=(deadline,)),))
    assert [v.event for v in result.violations] == ["e40"]


def test_events_are_taken_in_time_order_and_those_after_now_are_ignored():
    late = event(200, "modify")
    result = judge(late, event(1, "print"), permissions=(allow("print"),), now=at(100))
    assert result.compliant


def test_xone_refinement_is_exactly_one():
    refinement = LogicalConstraint(operand=LogicalOperand.XONE, constraints=(
        c("urn:x:resolution", "lteq", lit(1024)), c("urn:x:media", "eq", Literal(value="paper"))))
    rule = Permission(action=Action(name=ODRL + "print", refinement=(refinement,)))
    ok = judge(event(1, "print", **{"urn:x:resolution": 6000, "urn:x:media": "paper"}), permissions=(rule,))
    both = judge(event(1, "print", **{"urn:x:resolution": 512, "urn:x:media": "paper"}), permissions=(rule,))
    assert ok.compliant
    assert not both.compliant and "exactly one" in both.violations[0].reason


def test_a_typed_date_literal_compares_as_a_date():
    # The OVAL date_datatype cases, with the datatype on the literal that their untyped strings lack.
    def rule(op: str, value: str, datatype: str) -> Permission:
        refinement = c("urn:x:publicationDate", op, Literal(value=value, datatype=datatype))
        return Permission(action=Action(name=ODRL + "print", refinement=(refinement,)))

    published = datetime(2026, 3, 11, tzinfo=UTC)
    e = event(1, "print", **{"urn:x:publicationDate": published})
    assert judge(e, permissions=(rule("eq", "2026-03-11", XSD + "date"),)).compliant
    assert judge(e, permissions=(rule("lteq", "2026-03-11T00:00:00", XSD + "dateTime"),)).compliant
    assert not judge(e, permissions=(rule("lt", "2026-03-11T00:00:00", XSD + "dateTime"),)).compliant
    untyped = judge(e, permissions=(rule("eq", "2026-03-11", XSD + "string"),))
    assert not untyped.compliant


# --- counts --------------------------------------------------------------------------------------------


def test_count_limits_the_exercises_of_each_rule():
    printing = allow("print", constraints=(c("count", "lteq", lit(2)),))
    result = judge(event(1, "print"), event(2, "print"), event(3, "print"), permissions=(printing,))
    assert [v.event for v in result.violations] == ["e3"]
    assert "use count is 3" in result.violations[0].reason


def test_count_is_per_rule_not_per_history():
    printing = allow("print", constraints=(c("count", "lteq", lit(2)),))
    history = (event(1, "modify"), event(2, "modify"), event(3, "print"), event(4, "print"))
    assert judge(*history, permissions=(printing, allow("modify"))).compliant


# --- prohibitions and remedies -------------------------------------------------------------------------


def _forbidden(*remedies: Duty) -> dict:
    return {
        "permissions": (allow("uninstall"), allow("compensate")),
        "prohibitions": (Prohibition(action=Action(name=ODRL + "uninstall"), assignee=JOHN, target=DOC,
                                     remedies=remedies),),
    }


def test_an_event_an_active_prohibition_covers_is_a_violation():
    result = judge(event(1, "uninstall"), **_forbidden())
    assert [v.event for v in result.violations] == ["e1"]
    assert "forbids" in result.violations[0].reason


def test_a_prohibition_that_does_not_apply_is_no_violation():
    assert judge(event(1, "uninstall", target="urn:asset:other"), **_forbidden()).compliant


def test_a_remedy_performed_after_the_violation_makes_it_good():
    pay = Duty(action=Action(name=ODRL + "compensate", refinement=(c("payAmount", "gteq", lit(50)),)))
    assert judge(event(1, "uninstall"), event(2, "compensate", pay=1), **_forbidden(pay)).compliant is False
    paid = Event(at=at(2), request=Request(party=JOHN, action="compensate", target=DOC, pay_amount=50))
    assert judge(event(1, "uninstall"), paid, **_forbidden(pay)).compliant


def test_a_remedy_performed_before_the_violation_does_not_count():
    pay = duty("compensate")
    result = judge(event(1, "compensate"), event(2, "uninstall"), **_forbidden(pay))
    assert not result.compliant
    assert "none of its remedies was performed after it" in result.violations[0].reason


def test_conflict_strategy_perm_lets_the_permission_win():
    forbidden = _forbidden()
    assert not judge(event(1, "uninstall"), **forbidden).compliant
    assert judge(event(1, "uninstall"), conflict=ConflictStrategy.PERM, **forbidden).compliant


# --- duties and consequences ---------------------------------------------------------------------------


def _with(*duties: Duty) -> dict:
    return {"permissions": (allow("print", duties=duties), allow("compensate"), allow("watermark"))}


def test_a_before_use_duty_done_before_the_first_exercise_complies():
    assert judge(event(1, "compensate"), event(2, "print"), **_with(duty("compensate", BEFORE_USE))).compliant


def test_a_before_use_duty_done_late_without_consequence_is_a_violation():
    result = judge(event(1, "print"), event(2, "compensate"), **_with(duty("compensate", BEFORE_USE)))
    [v] = result.violations
    assert v.event == "e1" and "not performed before its first exercise" in v.reason


def test_a_late_duty_is_made_good_by_its_consequence_after_the_violation():
    late = duty("compensate", BEFORE_USE, consequences=(duty("watermark"),))
    assert judge(event(1, "print"), event(2, "compensate"), event(3, "watermark"), **_with(late)).compliant


def test_a_consequence_done_before_the_violation_does_not_count():
    late = duty("compensate", BEFORE_USE, consequences=(duty("watermark"),))
    result = judge(event(1, "watermark"), event(2, "print"), event(3, "compensate"), **_with(late))
    assert [v.reason for v in result.violations] == [
        "duty 'compensate' of permission #1 was not performed before its first exercise, and its "
        "consequence 'watermark' was not performed after that"
    ]


def test_the_original_duty_is_still_due_after_its_consequence():
    late = duty("compensate", BEFORE_USE, consequences=(duty("watermark"),))
    result = judge(event(1, "print"), event(2, "watermark"), **_with(late))
    assert [v.reason for v in result.violations] == [
        "duty 'compensate' of permission #1 was not performed before its first exercise, and not afterwards "
        "either"
    ]


@pytest.mark.parametrize("when", [0, 2])
def test_a_with_or_after_use_duty_may_be_done_before_or_after_the_use(when):
    # compensate without ``event lt policyUsage`` is due with or after the use (evaluate.duty_timing).
    assert judge(event(when, "compensate"), event(1, "print"), **_with(duty("compensate"))).compliant


def test_a_with_or_after_use_duty_never_done_is_a_violation():
    result = judge(event(1, "print"), event(2, "print"), **_with(duty("compensate")))
    [v] = result.violations
    assert v.event == "e1" and "due with or after its use, was not performed" in v.reason


def test_the_duty_of_a_permission_never_exercised_is_not_due():
    assert judge(event(1, "watermark"), **_with(duty("compensate", BEFORE_USE))).compliant


def test_a_duty_is_matched_with_its_refinement():
    pay50 = Duty(action=Action(name=ODRL + "compensate", refinement=(c("payAmount", "eq", lit(50)),)))
    paid = Event(at=at(0), request=Request(party=JOHN, action="compensate", pay_amount=49))
    result = judge(paid, event(1, "print"), **_with(pay50))
    assert not result.compliant


# --- obligations ---------------------------------------------------------------------------------------


def test_an_obligation_must_be_performed_by_some_event():
    obligation = Duty(action=Action(name=ODRL + "print", refinement=(c("urn:x:resolution", "gteq", lit(600)),)))
    policy = {"permissions": (allow("print"),), "obligations": (obligation,)}
    low, high = event(1, "print", **{"urn:x:resolution": 300}), event(2, "print", **{"urn:x:resolution": 1000})
    assert judge(low, high, **policy).compliant
    result = judge(low, **policy)
    assert [v.reason for v in result.violations] == ["obligation 'print' was not performed"]


# --- the usage log as a history ------------------------------------------------------------------------


def test_events_from_log_keeps_what_happened_in_chain_order():
    head = None
    entries = []
    for fields in (
        {"kind": "use", "action": "print", "decision": "permit", "at": "2026-01-11T10:01:00Z"},
        {"kind": "use", "action": "modify", "decision": "deny", "at": "2026-01-11T10:02:00Z"},
        {"kind": "delete", "at": "2026-01-11T10:03:00Z"},
    ):
        head = ledger.append(head, agreement="urn:agreement:a", **fields)
        entries.append(head)
    events = events_from_log(entries)
    assert [(e.ref, e.request.action, e.at) for e in events] == [("#1", "print", at(1)), ("#3", "delete", at(3))]
    with_party = events_from_log(entries, lambda e: Request(party=JOHN, action=e.action or e.kind, target=DOC))
    assert judge(*with_party, permissions=(allow("print", assignee=JOHN), allow("delete"))).compliant


def test_an_obligation_is_the_policy_level_assignees_unless_it_names_its_own():
    # ODRL 2.2 IM §2.7.1: the policy-level assignee is shared by every rule, obligations included.
    policy = {"permissions": (allow("use"),), "obligations": (duty("delete"),), "assignee": JOHN}
    assert judge(event(1, "print"), event(2, "delete"), **policy).compliant
    result = judge(event(1, "print"), event(2, "delete", party=BETH), **policy)
    assert [v.kind for v in result.violations] == ["unpermitted", "obligation"]
