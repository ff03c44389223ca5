"""How the node asks the policy engine: who is asking, from where, for what, and when (pure: ``now`` is an
argument)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import replace

from connector.protocol.export_control import RecipientRegion
from usage_policies import Decision, PolicySyntaxError, Request, World, evaluate, parse_policy
from usage_policies.model import Policy
from usage_policies.operands import generation as operands_generation

if TYPE_CHECKING:
    from connector.identity.trust import PeerClaims

ODRL = "http://www.w3.org/ns/odrl/2/"


class PeerFacts(msgspec.Struct, frozen=True):
    """What this participant knows about a peer, in two kinds.

    *Self-asserted*: what the peer says of itself in its self-description. The description is signed by the
    peer's own key, which proves who said it, not that it is true; it feeds ``odrl:spatial`` and what is shown
    of the peer, and never export control or a ``tds:verified…`` operand.

    *Verified*: the claims of credentials by issuers this participant trusts for their kind, as counted in the
    latest handshake (``connector.identity.trust.PeerClaims``, filled by :meth:`with_claims`): the region with
    the issuer that vouches for it, memberships of data spaces (space, role), the legal entity's identifiers
    (unified social credit code and/or LEI) and certification levels. Empty: nothing verified.
    """

    did: str
    self_asserted_region: str | None = None
    self_asserted_legal_name: str | None = None
    #: The peer exchanged a verified self-description with this participant: a TDS node, which reads the
    #: node's own JSON-LD context (``connector.protocol.contexts``).
    self_described: bool = False
    verified_region: str | None = None
    region_issuer: str | None = None
    memberships: tuple[tuple[str, str], ...] = ()
    verified_legal_name: str | None = None
    legal_entity_ids: tuple[str, ...] = ()
    certification_levels: tuple[str, ...] = ()

    def with_claims(self, claims: PeerClaims | None) -> PeerFacts:
        """These facts with the verified ones of *claims* (None, or claims about another DID: none)."""
        if claims is None or claims.holder != self.did:
            return replace(self, verified_region=None, region_issuer=None, memberships=(), verified_legal_name=None,
                           legal_entity_ids=(), certification_levels=())
        entity = claims.legal_entity.value if claims.legal_entity is not None else None
        return replace(
            self,
            verified_region=claims.region.value.region if claims.region is not None else None,
            region_issuer=claims.region.issuer if claims.region is not None else None,
            memberships=tuple((m.value.data_space, m.value.role) for m in claims.memberships),
            verified_legal_name=entity.legal_name if entity is not None else None,
            legal_entity_ids=tuple(i for i in (entity.unified_social_credit_code, entity.lei_code) if i)
            if entity is not None else (),
            certification_levels=tuple(dict.fromkeys(c.value.certification_level for c in claims.certifications)),
        )

    @property
    def recipient_region(self) -> RecipientRegion:
        """The peer's region as export control reads it: verified, with the self-asserted one beside it."""
        return RecipientRegion(self.verified_region, self.region_issuer, self.self_asserted_region)

    def request(self, *, action: str = "use", target: str | None = None, data_class: str | None = None,
                export_destination: str | None = None) -> Request:
        """The policy engine's request for this peer acting on *target*: ``odrl:spatial`` reads the region the
        peer states, ``tds:exportDestination`` (unless given) and the ``tds:verified…`` operands only what is
        verified."""
        return Request(
            party=self.did,
            action=action if ":" in action else ODRL + action,
            target=target,
            region=self.self_asserted_region,
            recipient=self.did,
            connector=self.did,
            data_class=data_class,
            export_destination=export_destination,
            verified_region=self.verified_region,
            member_of=tuple(dict.fromkeys(space for space, _ in self.memberships)),
            legal_entity_ids=self.legal_entity_ids,
            certification_levels=self.certification_levels,
        )


#: How many policies :func:`parsed_policy` keeps (all of them are dropped when it is full), and the longest JSON
#: text it keeps one for (a request may carry a policy of any size up to the body limit; the memo stays small).
PARSED_ENTRIES = 256
PARSED_MAX_BYTES = 8192
_parsed: dict[tuple[int, bytes], Policy] = {}


def parsed_policy(policy: Any) -> Policy:
    """``parse_policy(policy)``, memoised by the policy's JSON text and the generation of the operand registry
    (which the parser reads): a contract definition's access and contract policies and the offer a consumer
    asks for are read again on every request and catalog page, and returning the same policy object lets the
    engine reuse its compiled form too (``usage_policies.evaluate`` memoises that by object).

    On a miss the JSON text itself is parsed, so that one text always reads as one policy. A policy that does
    not encode as JSON, whose text holds ``null`` (which is also how ``msgspec`` writes a NaN), or whose text is
    longer than :data:`PARSED_MAX_BYTES` is parsed as it is, unmemoised. Raises :class:`PolicySyntaxError` as
    ``parse_policy`` does; a refusal is not memoised."""
    try:
        text = msgspec.json.encode(policy)
    except (TypeError, ValueError):
        return parse_policy(policy)
    if len(text) > PARSED_MAX_BYTES or b"null" in text:
        return parse_policy(policy)
    key = (operands_generation(), text)
    found = _parsed.get(key)
    if found is None:
        found = parse_policy(msgspec.json.decode(text))
        if len(_parsed) >= PARSED_ENTRIES:
            _parsed.clear()  # simple and safe under threads; a policy read again is parsed once more
        _parsed[key] = found
    return found


def decide_access(
    policy: dict[str, Any], peer: PeerFacts, *, target: str | None, now: datetime, action: str = "use",
    data_class: str | None = None, export_destination: str | None = None,
) -> Decision:
    """Evaluate an access or contract policy for *peer* acting on *target* now."""
    parsed = parsed_policy(policy)
    request = peer.request(action=action, target=target, data_class=data_class,
                           export_destination=export_destination)
    # tds:exportDestination of the recipient: its verified region only.
    world = World(party_regions={peer.did: peer.verified_region} if peer.verified_region else {})
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
    """Whether an agreement's policy lets its data go to *peer* now: dates, regions, export rules, parties and
    verified claims must hold; purpose, counts and other use-time terms are left to the consumer's usage
    control. The export destination is the peer's verified region."""
    return decide_access(transfer_view(policy), peer, target=target, now=now, action="use",
                         export_destination=peer.verified_region)


def check_policy(policy: dict[str, Any]) -> None:
    """Raise :class:`PolicySyntaxError` if *policy* is not a valid ODRL policy."""
    parse_policy(policy)


__all__ = ["Decision", "PeerFacts", "PolicySyntaxError", "check_policy", "decide_access", "decide_transfer",
           "parsed_policy", "transfer_view"]
