"""Offers and agreements as they travel in DSP messages (pure).

ODRL terms are compared after the policy engine has read them, so the same terms written differently
(``odrl:eq``, ``eq`` or the full IRI; one permission or a list) compare equal. What is compared is the
*terms*: the rules, their constraints and duties — not the offer id, target, parties or timestamp.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import rfc8785

from connector.protocol import ids
from connector.protocol.errors import MessageError
from connector.protocol.policy import parsed_policy
from usage_policies import NotRepresentableError, PolicySyntaxError, to_dsp
from usage_policies.model import PolicyType

_IDENTITY_KEYS = frozenset(
    {"@id", "@type", "@context", "uid", "target", "assigner", "assignee", "timestamp", "profile"}
)
RULE_KEYS = ("permission", "prohibition", "obligation")


def read_policy(policy: Any, field: str) -> dict[str, Any]:
    """Normalise an ODRL policy object through the engine; raise MessageError listing every problem.

    A stored ``Set`` is carried as an ``Offer`` (DSP carries only offers and agreements). The engine's reading
    is memoised (``connector.protocol.policy.parsed_policy``); the result is a new object every time.
    """
    if not isinstance(policy, dict):
        raise MessageError(f"{field} must be an ODRL policy object", path=field)
    try:
        parsed = parsed_policy(policy)
        if parsed.type is PolicyType.SET:
            parsed = msgspec.structs.replace(parsed, type=PolicyType.OFFER)
        return to_dsp(parsed)
    except (PolicySyntaxError, NotRepresentableError) as exc:
        raise MessageError(f"{field} is not a valid ODRL policy: {exc}", path=field) from exc


def terms(policy: dict[str, Any]) -> dict[str, Any]:
    """The terms of a normalised policy (rules only)."""
    return {k: v for k, v in policy.items() if k not in _IDENTITY_KEYS and not k.startswith("https://w3id.org/tds/")}


def same_terms(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two normalised policies state the same rules (RFC 8785 canonical comparison).

    Terms whose JSON texts with sorted keys are equal have equal canonical forms, which is the common case (a
    request for the offered terms, an agreement on them) and is told without canonicalising either; anything
    else is compared canonically (``1`` and ``1.0``, for one, are the same number there). A text holding
    ``null`` always is, since ``msgspec`` also writes a NaN so (which RFC 8785 refuses)."""
    ta, tb = terms(a), terms(b)
    try:
        text = msgspec.json.encode(ta, order="sorted")
        if b"null" not in text and text == msgspec.json.encode(tb, order="sorted"):
            return True
    except (TypeError, ValueError):
        pass
    return bytes(rfc8785.dumps(ta)) == bytes(rfc8785.dumps(tb))


def catalog_offer(policy: dict[str, Any], offer_id: str) -> dict[str, Any]:
    """An ``Offer`` for a dataset's ``hasPolicy`` (contract-schema ``Offer``: no target)."""
    return {"@id": offer_id, "@type": "Offer", **_rules(policy)}


def message_offer(policy: dict[str, Any], offer_id: str, target: str) -> dict[str, Any]:
    """An ``Offer`` inside a negotiation message (contract-schema ``MessageOffer``: with target)."""
    return {"@id": offer_id, "@type": "Offer", "target": target, **_rules(policy)}


def agreement(
    policy: dict[str, Any], *, agreement_id: str, target: str, assigner: str, assignee: str, timestamp: str
) -> dict[str, Any]:
    """An ``Agreement`` (DSP 2025-1 §7.3.3: target, assigner, assignee and timestamp are required)."""
    return {
        "@id": agreement_id,
        "@type": "Agreement",
        "target": target,
        "assigner": assigner,
        "assignee": assignee,
        "timestamp": timestamp,
        **_rules(policy),
    }


def _rules(policy: dict[str, Any]) -> dict[str, Any]:
    rules = {k: policy[k] for k in RULE_KEYS if policy.get(k)}
    if not rules.get("permission") and not rules.get("prohibition"):
        rules.setdefault("permission", [])
    return rules


def offer_id(definition_id: str, asset_id: str, policy: dict[str, Any]) -> str:
    """Our offer id for *asset_id* under a contract definition: ``urn:tds:offer:CD:ASSET:VERSION``
    (``connector.protocol.ids``); the version changes when the contract policy's terms do."""
    version = hashlib.sha256(bytes(rfc8785.dumps(terms(policy)))).hexdigest()[:12]
    return ids.offer_iri(definition_id, asset_id, version)


def offer_parts(offer_id: str) -> tuple[str, str | None]:
    """The contract definition and the asset an offer id of ours names (``[urn:tds:offer:]CD:ASSET[:VERSION]``,
    the older ids without the prefix too); other parts are ignored."""
    return ids.offer_parts(offer_id)
