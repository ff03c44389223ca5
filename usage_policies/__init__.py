"""usage_policies: an ODRL 2.2 policy engine (pure: no I/O, no clock).

``evaluate(policy, request, world, now)`` decides a request with reasons and a FORCE compliance report.
"""

from __future__ import annotations

from usage_policies.errors import PolicyError, PolicySyntaxError
from usage_policies.evaluate import Decision, Outcome, Request, World, evaluate

__all__ = [
    "Decision",
    "Outcome",
    "PolicyError",
    "PolicySyntaxError",
    "Request",
    "World",
    "evaluate",
]
