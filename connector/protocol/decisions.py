"""What each party of a contract negotiation decides on the other's message (pure).

Theory of operation
-------------------
The negotiation service gathers the facts — the catalog entry a request names, what is verified of the
peer, the node's export rules, whether it has already counter-offered — and asks this module; the answer
is an :class:`Outcome` naming the move, with its reason and its terms. The service then acts on it: it
sends the agreement, the counter-offer or the termination, or refuses the agreement message. Nothing here
reads a clock, a store or the network; ``now`` is an argument.

The provider, on a contract request (:func:`decide_request`), in this order:

1. the offer must be in the catalog: the contract definition the offer id names offers the dataset;
2. export control must let data of the dataset's class reach the requester's verified region (a region
   credential by an issuer trusted for regions; the region its self-description states does not count);
3. the definition's access policy must admit the requester now, as the catalog would show the offer to it
   (a definition without its access or contract policy, or a dataset that is gone, is not shown);
4. the requested terms are the offered terms → agree; other terms → one counter-offer with ours; other
   terms again after that counter-offer → terminate.

The consumer, on the agreement the provider sent (:func:`check_agreement`): it must be an ODRL Agreement
with the fields DSP 2025-1 §7.3.3 requires, state the terms last offered, be for the dataset asked for, and
name this participant as assignee and the provider as assigner → verify; anything else is refused with the
reason, and the negotiation stays where it is. The provider's proof is checked afterwards, against the DID
document the service resolves (``connector.protocol.agreements.verify``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from connector.protocol import contracts, export_control, ids
from connector.protocol.export_control import ExportRule
from connector.protocol.policy import PeerFacts, decide_access

#: The fields an agreement must carry (DSP 2025-1 §7.3.3), besides its rules.
AGREEMENT_FIELDS = ("@id", "target", "assigner", "assignee", "timestamp")


class Move(enum.Enum):
    """What to do; the provider's moves are named as the service's steps."""

    AGREE = "agree"  # provider: send the agreement on the requested terms
    OFFER = "offer"  # provider: counter-offer with the offered terms
    TERMINATE = "terminate"  # provider: end the negotiation, with the reason
    VERIFY = "verify"  # consumer: accept the agreement (then check its proof and verify it)
    REFUSE = "refuse"  # consumer: refuse the agreement message, with the reason; the state stays


class Outcome(msgspec.Struct, frozen=True):
    """A decision: the move, the reason a peer's operator can read, and the terms the move carries."""

    move: Move
    reason: str = ""
    #: AGREE: the requested offer, whose terms are agreed; OFFER: the counter-offer to send.
    offer: dict[str, Any] | None = None
    #: VERIFY: the agreement as received.
    agreement: dict[str, Any] | None = None


def _terminate(reason: str) -> Outcome:
    return Outcome(Move.TERMINATE, reason)


def _refuse(reason: str) -> Outcome:
    return Outcome(Move.REFUSE, reason)


# -- the provider ---------------------------------------------------------------------------------------


class ContractRequest(msgspec.Struct, frozen=True):
    """What the consumer asks for: the offer id it named, the dataset (the provider's asset id), and the terms
    (a normalised offer). *dataset* is the id under which the provider's catalog shows that asset (an absolute
    IRI, ``connector.protocol.ids``), the target of a counter-offer; '' for *target* itself."""

    offer_id: str
    target: str
    offer: dict[str, Any]
    dataset: str = ""

    @classmethod
    def of(cls, offer_id: str, target: str, offer: dict[str, Any], *,
           shown_as: Callable[[str], str] | None = None) -> ContractRequest:
        """The request for *target* (an asset id of the provider), or, if it names none, for the dataset our
        offer id names; *shown_as* gives the id the provider's catalog shows for an asset id."""
        target = target or contracts.offer_parts(offer_id)[1] or ""
        return cls(offer_id, target, offer, shown_as(target) if shown_as is not None and target else "")

    @property
    def definition_id(self) -> str:
        """The contract definition the offer id names (``CD:ASSET:VERSION``)."""
        return contracts.offer_parts(self.offer_id)[0]


class CatalogOffer(msgspec.Struct, frozen=True):
    """The contract definition a request names, as the provider's catalog holds it."""

    definition_id: str
    assets: frozenset[str]
    #: The definition's access and contract policies as stored; None: the policy is missing.
    access_policy: dict[str, Any] | None
    contract_policy: dict[str, Any] | None
    #: The data class of the requested dataset; None: the dataset is not in the catalog.
    data_class: str | None


class ProviderFacts(msgspec.Struct, frozen=True):
    """What the provider knows when it decides: the requester, where the data is held, the node's export
    rules, and whether it has already counter-offered in this negotiation."""

    peer: PeerFacts
    holder_region: str
    export_rules: tuple[ExportRule, ...] = ()
    countered: bool = False


def decide_request(
    request: ContractRequest, offer: CatalogOffer | None, facts: ProviderFacts, now: datetime
) -> Outcome:
    """Agree, counter-offer or terminate a contract request (see the module's theory of operation).

    Raises :class:`~connector.protocol.errors.MessageError` if the stored contract policy is not valid ODRL.
    """
    if offer is None or request.target not in offer.assets:
        return _terminate(f"offer {request.offer_id!r} is not in this catalog")
    refused = export_control.refusal(
        facts.export_rules, data_class="general" if offer.data_class is None else offer.data_class,
        holder_region=facts.holder_region, recipient=facts.peer.recipient_region)
    if refused:
        return _terminate(refused)
    access = None if offer.access_policy is None else decide_access(offer.access_policy, facts.peer, target=None,
                                                                    now=now)
    ours = None
    if access is not None and access.permitted and offer.contract_policy is not None:
        ours = contracts.read_policy(offer.contract_policy, "policy")
    if ours is None or offer.data_class is None:
        why = ": " + "; ".join(access.reasons) if access is not None and access.reasons else ""
        return _terminate(f"the access policy of offer {request.offer_id!r} does not admit you{why}")
    if contracts.same_terms(request.offer, ours):
        return Outcome(Move.AGREE, offer=request.offer)
    if facts.countered:
        return _terminate("the requested terms still differ from the offer after a counter-offer")
    counter_id = contracts.offer_id(offer.definition_id, request.target, ours)
    return Outcome(Move.OFFER, offer=contracts.message_offer(ours, counter_id, request.dataset or request.target))


# -- the consumer ---------------------------------------------------------------------------------------


class Expected(msgspec.Struct, frozen=True):
    """What the consumer's agreement must state: the terms last offered (normalised), the dataset asked for
    ('' if not known; the provider's absolute id of it and the asset id itself are the same dataset), this
    participant as assignee and the provider as assigner. *any_parties*: the provider is the compatibility
    kit, which may name other parties."""

    offer: dict[str, Any]
    target: str
    consumer: str
    provider: str
    any_parties: bool = False


def check_agreement(agreement: Any, expected: Expected) -> Outcome:
    """Verify or refuse the agreement in a ContractAgreementMessage (see the module's theory of operation).

    Raises :class:`~connector.protocol.errors.MessageError` if its rules are not valid ODRL.
    """
    if not isinstance(agreement, dict):
        return _refuse("agreement must be an ODRL Agreement object")
    problems = [f"agreement.{field} is missing" for field in AGREEMENT_FIELDS
                if not isinstance(agreement.get(field), str) or not agreement[field]]
    if problems:
        return _refuse("; ".join(problems))
    policy = contracts.read_policy(agreement, "agreement")
    if not contracts.same_terms(policy, expected.offer):
        return _refuse("the agreement's terms differ from the offer")
    if expected.target and not ids.same_dataset(expected.provider, agreement["target"], expected.target):
        return _refuse(f"the agreement is for {agreement['target']}, not {expected.target}")
    if agreement["assignee"] != expected.consumer and not expected.any_parties:
        return _refuse(f"the agreement's assignee is {agreement['assignee']}, not {expected.consumer}")
    if agreement["assigner"] != expected.provider and not expected.any_parties:
        return _refuse(f"the agreement's assigner is {agreement['assigner']}, not {expected.provider}")
    return Outcome(Move.VERIFY, agreement=agreement)


__all__ = ["AGREEMENT_FIELDS", "CatalogOffer", "ContractRequest", "Expected", "Move", "Outcome", "ProviderFacts",
           "check_agreement", "decide_request"]
