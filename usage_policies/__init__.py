"""usage_policies: an ODRL 2.2 policy engine (pure: no I/O, no clock).

``parse_policy`` reads ODRL JSON-LD, ``evaluate(policy, request, world, now)`` decides a request with
reasons and a FORCE compliance report, ``plan_use`` adds the effects of the duties of a permitted use,
``to_dsp`` writes a policy for the Dataspace Protocol, ``templates`` builds the common policies, and
``check_history(policy, events, now)`` judges a history of performed actions (the usage log's entries,
via ``events_from_log``) against a policy.
"""

from __future__ import annotations

from usage_policies import templates
from usage_policies.enforce import UsageState, UseDecision, plan_use
from usage_policies.errors import NotRepresentableError, PolicyError, PolicySyntaxError
from usage_policies.evaluate import Decision, Outcome, Request, World, evaluate
from usage_policies.jsonld import parse_policy, to_dsp
from usage_policies.monitor import Event, MonitoringResult, Violation, check_history, events_from_log

__all__ = [
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
    "Violation",
    "World",
    "check_history",
    "evaluate",
    "events_from_log",
    "parse_policy",
    "plan_use",
    "templates",
    "to_dsp",
]
