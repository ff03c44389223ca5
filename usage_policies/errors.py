"""Errors of the policy engine: one hierarchy, by who is at fault.

A policy *deny* is never an exception; it is a :class:`usage_policies.evaluate.Decision` with reasons.
Exceptions are for input the engine cannot read (the peer's or the operator's fault) and for policies
that cannot be expressed in the requested wire form.
"""

from __future__ import annotations

JsonPath = str
Problem = tuple[JsonPath, str]


class PolicyError(Exception):
    """Base of every error raised by ``usage_policies``."""

    http_status = 400
    dsp_code = "400"


class PolicySyntaxError(PolicyError):
    """A malformed policy. ``problems`` lists *every* problem found, each as (JSON path, message).

    The JSON path uses ``$`` for the root and ``[i]`` / ``.name`` steps, so an operator can find the
    offending term in the document they sent.
    """

    http_status = 400
    dsp_code = "400"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        lines = "; ".join(f"{path}: {message}" for path, message in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in policy: {lines}")


class NotRepresentableError(PolicyError):
    """A valid policy that the requested wire format (DSP 2025-1) cannot carry, e.g. an ``odrl:Set``."""

    http_status = 422
    dsp_code = "422"
