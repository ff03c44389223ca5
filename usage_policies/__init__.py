"""usage_policies: an ODRL 2.2 policy engine (pure: no I/O, no clock).

``parse_policy`` reads ODRL JSON-LD, ``evaluate(policy, request, world, now)`` decides a request with
reasons and a FORCE compliance report, ``decide(policy, request, world, now)`` gives the same outcome,
reasons and duties without building the report (``compile(policy)`` once, then ``decide`` per request;
``evaluate`` on the same compiled policy when the report is wanted), ``plan_use`` adds the effects of
the duties of a permitted use, ``to_dsp`` writes a policy for the Dataspace Protocol, ``templates`` builds
the common policies, and ``check_history(policy, events, now)`` judges a history of performed actions (the
usage log's entries, via ``events_from_log``) against a policy.

Duties. The world tells the engine what became of a duty (``World.duty_states``, or
``UsageState.duty_states`` for ``plan_use``: fulfilled, violated) under one of three names, looked up in
this order:

* its ``uid``, when the policy gives it one;
* its path in the policy's atomic rules: ``permission[0].duty[1]``, ``prohibition[2].remedy[0]``,
  ``obligation[0]`` (indexes from 0; ``duties_by_path(policy)`` lists them). For a policy whose rules are
  not compact these are the positions in the document itself. A path names one rule's duty, so it tells
  apart two rules that carry the same duty;
* its content key, ``duty_key(duty)``: ``ni:///sha-256;…`` of the duty's canonical form, the same for every
  spelling of the duty and for every rule that carries it (the atomic rules of one compact rule share it).

Each duty's report (``DutyReport``) carries its ``path`` and ``key``, so a caller told "duty 'obtainConsent'
must be fulfilled before use" knows what to report once it is done.
"""

from __future__ import annotations

from usage_policies import templates
from usage_policies.enforce import UsageState, UseDecision, plan_use
from usage_policies.errors import NotRepresentableError, PolicyError, PolicySyntaxError
from usage_policies.evaluate import (
    CompiledPolicy,
    Decision,
    Outcome,
    Request,
    Verdict,
    World,
    compile,
    decide,
    duties_by_path,
    evaluate,
)
from usage_policies.jsonld import parse_policy, to_dsp
from usage_policies.model import duty_key
from usage_policies.monitor import Event, MonitoringResult, Violation, check_history, events_from_log

__all__ = [
    "CompiledPolicy",
    "Decision",
    "Event",
    "MonitoringResult",
    "NotRepresentableError",
    "Outcome",
    "PolicyError",
    "PolicySyntaxError",
    "Request",
    "UsageState",
    "UseDecision",
    "Verdict",
    "Violation",
    "World",
    "check_history",
    "compile",
    "decide",
    "duties_by_path",
    "duty_key",
    "evaluate",
    "events_from_log",
    "parse_policy",
    "plan_use",
    "templates",
    "to_dsp",
]
