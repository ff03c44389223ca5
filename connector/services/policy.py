"""How the node asks the policy engine: who is asking, from where, for what, and when."""

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


def check_policy(policy: dict[str, Any]) -> None:
    """Raise :class:`PolicySyntaxError` if *policy* is not a valid ODRL policy."""
    parse_policy(policy)


__all__ = ["Decision", "PeerFacts", "PolicySyntaxError", "check_policy", "decide_access"]
