"""How the node asks the policy engine: who is asking, from where, for what, and when (pure: ``now`` is an
argument)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from usage_policies import Decision, PolicySyntaxError, Request, World, evaluate, parse_policy

ODRL = "http://www.w3.org/ns/odrl/2/"


@dataclass(frozen=True)
class PeerFacts:
    """What this participant knows, verified, about a peer: its DID and its self-description's claims."""

    did: str
    region: str | None = None
    legal_name: str | None = None
    #: The peer exchanged a verified self-description with this participant: a TDS node, which reads the
    #: node's own JSON-LD context (``connector.protocol.contexts``).
    self_described: bool = False


def decide_access(
    policy: dict[str, Any], peer: PeerFacts, *, target: str | None, now: datetime, action: str = "use",
    data_class: str | None = None, export_destination: str | None = None,
) -> Decision:
    """Evaluate an access or contract policy for *peer* acting on *target* now."""
    parsed = parse_policy(policy)
    request = Request(
        party=peer.did,
        action=action if ":" in action else ODRL + action,
        target=target,
        region=peer.region,
        recipient=peer.did,
        connector=peer.did,
        data_class=data_class,
        export_destination=export_destination,
    )
    world = World(party_regions={peer.did: peer.region} if peer.region else {})
    return evaluate(parsed, request, world, now)


#: Left operands that are decided when the data is *used* on the consumer's side (by its usage control), not
#: when it is transferred: a transfer has no purpose or use count yet.
USE_TIME_OPERANDS = frozenset({"purpose", "count", "elapsedTime", "event", "payAmount", "percentage",
                               "delayPeriod", "meteredTime", "timeInterval"})


def _operand_name(value: Any) -> str:
    text = value.get("@id", "") if isinstance(value, dict) else str(value)
    for sep in ("#", "/", ":"):
        text = text.rsplit(sep, 1)[-1]
    return text


def _transfer_constraints(constraints: Any) -> Any:
    if not isinstance(constraints, list):
        return constraints
    kept = []
    for c in constraints:
        if not isinstance(c, dict):
            kept.append(c)
            continue
        if "leftOperand" in c:
            if _operand_name(c["leftOperand"]) not in USE_TIME_OPERANDS:
                kept.append(c)
            continue
        logical = {k: _transfer_constraints(v) if k in ("and", "or", "xone", "andSequence") else v
                   for k, v in c.items()}
        if any(isinstance(v, list) and v for k, v in logical.items() if k in ("and", "or", "xone", "andSequence")):
            kept.append(logical)
    return kept


def transfer_view(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy as it applies at transfer time: permissions and prohibitions without their use-time
    constraints (:data:`USE_TIME_OPERANDS`), which the consumer's usage control enforces on each use."""
    out = dict(policy)
    for key in ("permission", "prohibition"):
        rules = policy.get(key)
        if isinstance(rules, list):
            out[key] = [{**r, "constraint": _transfer_constraints(r["constraint"])}
                        if isinstance(r, dict) and "constraint" in r else r for r in rules]
    return out


def decide_transfer(policy: dict[str, Any], peer: PeerFacts, *, target: str | None, now: datetime) -> Decision:
    """Whether an agreement's policy lets its data go to *peer* now: dates, regions, export rules and parties
    must hold; purpose, counts and other use-time terms are left to the consumer's usage control."""
    return decide_access(transfer_view(policy), peer, target=target, now=now, action="use",
                         export_destination=peer.region)


def check_policy(policy: dict[str, Any]) -> None:
    """Raise :class:`PolicySyntaxError` if *policy* is not a valid ODRL policy."""
    parse_policy(policy)


__all__ = ["Decision", "PeerFacts", "PolicySyntaxError", "check_policy", "decide_access", "decide_transfer",
           "transfer_view"]
