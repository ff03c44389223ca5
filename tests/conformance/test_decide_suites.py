"""Every policy of the ODRL suites (``tests/shared/odrl-tests``, its INDEX.md) decided by both paths.

``compile(policy).decide(...)`` (decide first, no report) must give what ``evaluate`` gives with its report:
the same outcome and duties, and the same reasons, on a deny as on a permit. Each policy is decided for the
suite's own requests where it has them (the FORCE cases with their states of the world, the OVAL logs'
events, the Formal Semantics draft's evaluation requests) and for requests built from the policy itself:
its targets, parties and actions, values taken from its right operands (and just beside them, for the
ordered operators), members of its collections, its duties fulfilled or violated, and strangers.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import msgspec
import pytest

from connector.testing import shared_dir
from usage_policies import Outcome, PolicySyntaxError, Request, World, compile, evaluate, parse_policy
from usage_policies.evaluate import duties_by_path, expand_action
from usage_policies.model import (
    ODRL,
    TDS,
    AnyConstraint,
    AssetCollection,
    Constraint,
    LogicalConstraint,
    PartyCollection,
    Policy,
    Ref,
)
from usage_policies.report import DeonticState, DutyState
from usage_policies.values import parse_datetime

SUITES = shared_dir() / "odrl-tests"
Case = tuple[Request, World, datetime]

# Request fields that a built-in left operand reads, as they are.
FIELDS = {
    ODRL + "purpose": "purpose", ODRL + "spatial": "region", ODRL + "recipient": "recipient",
    ODRL + "systemDevice": "connector", ODRL + "event": "event", TDS + "dataClass": "data_class",
    TDS + "exportDestination": "export_destination", TDS + "verifiedRegion": "verified_region",
}
HELD = {TDS + "memberOf": "member_of", TDS + "legalEntityId": "legal_entity_ids",
        TDS + "certificationLevel": "certification_levels"}
NUMBERS = {ODRL + "payAmount": "pay_amount", ODRL + "percentage": "percentage"}
TIMES = [parse_datetime(t) for t in ("2017-02-12T11:20:10.999Z", "2024-02-12T11:20:10.999Z",
                                     "2024-02-12T05:20:10.999Z", "2025-06-01T12:00:00Z")]
STRANGER = "urn:stranger"


def _number(text: str) -> int | Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return int(value) if value == value.to_integral_value() and "." not in text else value


def _value(text: str) -> object:
    """An untyped request value as a caller would give it: a number, a date-time or the text itself."""
    number = _number(text)
    if number is not None:
        return number
    try:
        return parse_datetime(text)
    except ValueError:
        return text


class Hints:
    """Request values drawn from one policy."""

    def __init__(self, policy: Policy) -> None:
        self.fields: dict[str, list[object]] = {}
        self.context: dict[str, list[object]] = {}
        self.times: list[datetime] = list(TIMES)
        self.parties: list[str | None] = [None, STRANGER, "urn:member:party"]
        self.targets: list[str | None] = [None, STRANGER, "urn:member:asset"]
        self.actions: list[str] = ["use", "read", "odrl:sell", "write", "https://example.com/action"]
        self.collections: dict[str, set[str]] = {"urn:member:party": set(), "urn:member:asset": set()}
        for rule in (*policy.permissions, *policy.prohibitions, *policy.obligations):
            self.constraints(rule.constraints)
            if rule.action is not None:
                self.actions.append(rule.action.name)
                self.constraints(rule.action.refinement)
            for value, found, member in ((rule.target or policy.target, self.targets, "urn:member:asset"),
                                         (rule.assignee or policy.assignee, self.parties, "urn:member:party")):
                if isinstance(value, str):
                    found.append(value)
                    self.collections[member].add(value)
                elif isinstance(value, AssetCollection | PartyCollection):
                    ids = [i for i in (value.uid, value.source) if i is not None]
                    found.extend(ids)
                    self.collections[member].update(ids)
                    self.constraints(value.refinement)

    def constraints(self, constraints: tuple[AnyConstraint, ...]) -> None:
        for c in constraints:
            if isinstance(c, LogicalConstraint):
                self.constraints(c.constraints)
            else:
                self.atomic(c)

    def atomic(self, c: Constraint) -> None:
        texts = [t.iri if isinstance(t, Ref) else t.value for t in c.right_operand]
        lo = c.left_operand
        for text in texts:
            if lo == ODRL + "dateTime":
                try:
                    at = parse_datetime(text)
                except ValueError:
                    continue
                self.times += [at - timedelta(seconds=1), at, at + timedelta(seconds=1), at + timedelta(days=1)]
            elif lo == ODRL + "count":
                number = _number(text)
                if isinstance(number, int):
                    self.fields.setdefault("use_count", []).extend(n for n in (number - 1, number) if n >= 0)
            elif lo == ODRL + "elapsedTime":
                self.fields.setdefault("first_use", []).extend(
                    [None, TIMES[1] - timedelta(hours=1), TIMES[1] - timedelta(days=40)])
            elif lo in FIELDS:
                self.fields.setdefault(FIELDS[lo], []).extend([text, text.removeprefix(TDS), STRANGER])
            elif lo in HELD:
                self.fields.setdefault(HELD[lo], []).extend([(text,), (), (STRANGER, text)])
            elif lo in NUMBERS:
                number = _number(text)
                if number is not None:
                    self.fields.setdefault(NUMBERS[lo], []).extend([Decimal(number), Decimal(number) + 1])
                    self.fields.setdefault("pay_unit", []).extend([c.unit, "USD", None])
            else:  # an operand the engine does not know: given in the request's context
                value = _value(text)
                near = [value + 1, value - 1] if isinstance(value, int | Decimal) else []
                self.context.setdefault(lo, []).extend([value, *near, STRANGER])

    def cases(self, policy: Policy, n: int, seed: str) -> list[Case]:
        pick = random.Random(seed)
        duty_paths = list(duties_by_path(policy))
        worlds = [World(), World(part_of={m: frozenset(ids) for m, ids in self.collections.items()})]
        for path in duty_paths:
            for deontic in (DeonticState.FULFILLED, DeonticState.VIOLATED):
                worlds.append(msgspec.structs.replace(worlds[1], duty_states={path: DutyState(deontic=deontic)}))
        if duty_paths:
            everything = {p: DutyState(deontic=DeonticState.FULFILLED) for p in duty_paths}
            worlds.append(msgspec.structs.replace(worlds[1], duty_states=everything))
        out: list[Case] = []
        for _ in range(n):
            fields = {name: pick.choice(values) for name, values in self.fields.items() if pick.random() < 0.85}
            context = {lo: pick.choice(values) for lo, values in self.context.items() if pick.random() < 0.85}
            request = Request(party=pick.choice(self.parties), target=pick.choice(self.targets),
                              action=pick.choice(self.actions), context=context, uid="urn:request",
                              **fields)
            out.append((request, pick.choice(worlds), pick.choice(self.times)))
        return out


def assert_same(policy: Policy, cases: list[Case]) -> Counter[Outcome]:
    """Every case decided first, then each verdict's reasons read (a deny builds them only then): they must
    explain that case, though the same worlds decided the cases after it."""
    compiled = compile(policy)
    seen: Counter[Outcome] = Counter()
    verdicts = [compiled.decide(request, world, now) for request, world, now in cases]
    for (request, world, now), verdict in zip(cases, verdicts, strict=True):
        decision = evaluate(policy, request, world, now)
        assert (verdict.outcome, list(verdict.reasons), verdict.duties) == (
            decision.outcome, decision.reasons, decision.duties), (policy.uid, request, world, now)
        seen[verdict.outcome] += 1
    return seen


# --- The suites -----------------------------------------------------------------------------------------

def _force() -> list[tuple[str, Policy, list[Case]]]:
    from force_data import cases, policy_from, request_from, world_from

    own: dict[str, list[Case]] = {}
    for case in cases():
        files = case["files"]
        world, now = world_from(files["sotw"])
        own.setdefault(files["policy"], []).append((request_from(files["request"]), world, now))
    return [(f"force/{name}", policy_from(name), found) for name, found in sorted(own.items())]


def _oval_monitoring() -> list[tuple[str, Policy, list[Case]]]:
    from oval_data import SUITE, cases, events, policy_from, usage_log

    out = []
    for case in cases():
        policy = policy_from(SUITE / case["policy"])
        history = events(*usage_log(policy.uid, SUITE / case["sotw"]))
        own = [(msgspec.structs.replace(e.request, use_count=n), World(), e.at) for n, e in enumerate(history)]
        out.append((f"oval-monitoring/{case['id']}", policy, own))
    return out


def _json_policies(folder: str, pattern: str) -> list[tuple[str, Policy, list[Case]]]:
    out = []
    for path in sorted((SUITES / folder).rglob(pattern)):
        try:
            policy = parse_policy(json.loads(path.read_text(encoding="utf-8")))
        except PolicySyntaxError:
            continue  # refused with its reasons (test_published_policies, the suite's invalid files): no policy
        out.append((f"{folder}/{path.relative_to(SUITES / folder)}", policy, _evaluation_requests(path.parent)))
    return out


def _evaluation_requests(folder: Path) -> list[Case]:
    """The Formal Semantics draft's ``EvaluationRequest`` documents beside a policy (none elsewhere)."""
    out: list[Case] = []
    for path in sorted(folder.rglob("evaluationrequest*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        now, context = TIMES[-1], {}
        param = doc.get("requestParameters", {})
        value = param.get("value", {})
        text = value.get("@value", value.get("@id")) if isinstance(value, dict) else value
        if str(param.get("describesFeature", "")).endswith("CurrentXSDDateTime"):
            now = parse_datetime(text)
        elif text is not None:
            context[param["describesFeature"]] = _value(str(text))
        request = Request(party=doc.get("evaluatedParty"), action=expand_action(doc["evaluatedAction"]),
                          target=doc.get("evaluatedTarget"), context=context, uid=doc.get("@id"))
        out.append((request, World(), now))
    return out


def _all_policies() -> list[tuple[str, Policy, list[Case]]]:
    return [
        *_force(),
        *_oval_monitoring(),
        *_json_policies("published-policies", "*.jsonld"),
        *_json_policies("w3c-formal-semantics-examples", "policy*.json"),
        *_json_policies("oval-validation-suite", "*.jsonld"),
    ]


POLICIES = _all_policies()


def _cases(name: str, policy: Policy, own: list[Case]) -> list[Case]:
    return own + Hints(policy).cases(policy, 120, seed=name)


def test_every_suite_is_here():
    counts = Counter(name.split("/")[0] for name, _, _ in POLICIES)
    # 21 FORCE policies, 50 OVAL logs' policies, 62 published policies read (one refused), the draft's 5 and
    # the 29 of the 32 OVAL validation files that are valid policies (its 2 invalid ones and one without @id
    # are refused with their reasons).
    assert counts == {"force": 21, "oval-monitoring": 50, "published-policies": 62,
                      "w3c-formal-semantics-examples": 5, "oval-validation-suite": 29}


@pytest.mark.parametrize("name, policy, own", POLICIES, ids=[name for name, _, _ in POLICIES])
def test_decide_gives_what_evaluate_gives(name, policy, own):
    assert sum(assert_same(policy, _cases(name, policy, own)).values()) >= 120


def test_both_paths_are_taken():
    # The comparisons above are worth something only if permits and denies both occur: the FORCE cases alone
    # permit 27 requests and deny 38 (INDEX.md §1.4); the requests built from the policies permit under
    # most of them.
    force: Counter[Outcome] = Counter()
    permitting = 0
    for name, policy, own in POLICIES:
        if name.startswith("force/"):
            force.update(assert_same(policy, own))
        permitting += bool(assert_same(policy, _cases(name, policy, own))[Outcome.PERMIT])
    assert force == {Outcome.PERMIT: 27, Outcome.DENY: 38, Outcome.NOT_APPLICABLE: 3}
    assert permitting >= 120, f"only {permitting} of {len(POLICIES)} policies permit any of their requests"
