"""What each party decides on the other's message (connector.protocol.decisions): the provider on a contract
request, the consumer on the agreement it is sent. Plain values in, an outcome out: no store, no clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from msgspec.structs import replace

from connector.protocol import contracts
from connector.protocol.decisions import (
    CatalogOffer,
    ContractRequest,
    Expected,
    Move,
    Outcome,
    ProviderFacts,
    check_agreement,
    decide_request,
)
from connector.protocol.errors import MessageError
from connector.protocol.export_control import ExportRule
from connector.protocol.policy import PeerFacts
from connector.services.catalog import catalog_offer, visible_offers
from connector.store.records import Asset, ContractDefinition, PolicyRecord
from connector.store.repository import CatalogSnapshot

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ASSET = "sensor-data"
CONSUMER = "did:web:parts.example"
PROVIDER = "did:web:acme.example"

OPEN = {"@id": "urn:tds:policy:open", "@type": "Set", "permission": [{"action": "use"}]}
RESEARCH = {"@id": "urn:tds:policy:research", "@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"}]}]}
GD_ONLY = {"@id": "urn:tds:policy:gd", "@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "CN-GD"}]}]}
VERIFIED_GD = {"@id": "urn:tds:policy:verified-gd", "@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "tds:verifiedRegion", "operator": "isPartOf", "rightOperand": "CN-GD"}]}]}
MEMBERS = {"@id": "urn:tds:policy:members", "@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "tds:memberOf", "operator": "eq", "rightOperand": "urn:tds:space:auto-parts"}]}]}
UNTIL_2026 = {"@id": "urn:tds:policy:until", "@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2026-01-01T00:00:00Z"}]}]}
CN_CORE = (ExportRule(region="CN", data_classes=["core"]),)

OFFERED = contracts.read_policy(RESEARCH, "policy")  # the contract terms, as the engine normalises them
OFFER_ID = contracts.offer_id("cd1", ASSET, OFFERED)


def requested(policy: dict[str, Any] = RESEARCH, *, offer_id: str = OFFER_ID, target: str = ASSET) -> ContractRequest:
    """A request as the provider stored it: the offer normalised, with the consumer's offer id."""
    return ContractRequest.of(offer_id, target, contracts.message_offer(contracts.read_policy(policy, "offer"),
                                                                       offer_id, target))


CATALOG = CatalogOffer(definition_id="cd1", assets=frozenset({ASSET}), access_policy=OPEN, contract_policy=RESEARCH,
                       data_class="core")
REGISTRY = "did:web:registry.example"


def peer(*, stated: str | None = None, verified: str | None = None, **claims: Any) -> PeerFacts:
    """The requester: the region it states in its self-description, and what trusted credentials verify."""
    return PeerFacts(CONSUMER, self_asserted_region=stated, self_described=stated is not None,
                     verified_region=verified, region_issuer=REGISTRY if verified else None, **claims)


FACTS = ProviderFacts(peer=peer(stated="CN-GD-GZ", verified="CN-GD-GZ"), holder_region="CN-GD", export_rules=CN_CORE)
COUNTER = contracts.message_offer(OFFERED, OFFER_ID, ASSET)


def terminate(reason: str) -> Outcome:
    return Outcome(Move.TERMINATE, reason)


# -- the provider, on a contract request ----------------------------------------------------------------

# (name, request, catalog entry, facts, now) -> outcome: each branch of the provider's decision.
PROVIDER_CASES: list[tuple[str, ContractRequest, CatalogOffer | None, ProviderFacts, datetime, Outcome]] = [
    ("same terms: agree",
     requested(), CATALOG, FACTS, NOW, Outcome(Move.AGREE, offer=requested().offer)),
    ("same terms written otherwise: agree",
     requested({**RESEARCH, "permission": {**RESEARCH["permission"][0], "action": "odrl:use"}}), CATALOG, FACTS, NOW,
     Outcome(Move.AGREE, offer=requested().offer)),
    ("other terms: counter-offer with ours, under our offer id",
     requested(OPEN), CATALOG, FACTS, NOW, Outcome(Move.OFFER, offer=COUNTER)),
    ("other terms after a counter-offer: terminate",
     requested(OPEN), CATALOG, replace(FACTS, countered=True), NOW,
     terminate("the requested terms still differ from the offer after a counter-offer")),
    ("same terms after a counter-offer: agree",
     requested(), CATALOG, replace(FACTS, countered=True), NOW, Outcome(Move.AGREE, offer=requested().offer)),
    ("no such contract definition",
     requested(offer_id="cd9:sensor-data:1"), None, FACTS, NOW,
     terminate("offer 'cd9:sensor-data:1' is not in this catalog")),
    ("the definition does not offer the dataset",
     requested(target="other-data"), CATALOG, FACTS, NOW, terminate(f"offer {OFFER_ID!r} is not in this catalog")),
    ("the request names no target: the dataset is the offer id's",
     requested(target=""), CATALOG, FACTS, NOW,
     Outcome(Move.AGREE, offer=contracts.message_offer(OFFERED, OFFER_ID, ""))),
    ("export control: the recipient's verified region is outside the region",
     requested(), CATALOG, replace(FACTS, peer=peer(verified="DE")), NOW,
     terminate(f"export control: data classed 'core' may not leave CN; the recipient is in DE "
               f"(verified by {REGISTRY})")),
    ("export control: a verified region abroad wins over the region the recipient states",
     requested(), CATALOG, replace(FACTS, peer=peer(stated="CN-GD", verified="DE")), NOW,
     terminate(f"export control: data classed 'core' may not leave CN; the recipient is in DE "
               f"(verified by {REGISTRY})")),
    ("export control: the recipient's region is not known",
     requested(), CATALOG, replace(FACTS, peer=PeerFacts(CONSUMER)), NOW,
     terminate("export control: data classed 'core' may not leave CN, and the recipient has no verified region: "
               "no credential from an issuer trusted for regions")),
    ("export control: a self-asserted region never satisfies a rule",
     requested(), CATALOG, replace(FACTS, peer=peer(stated="CN-GD-GZ")), NOW,
     terminate("export control: data classed 'core' may not leave CN, and the recipient has no verified region: "
               "no credential from an issuer trusted for regions (its self-description states CN-GD-GZ: "
               "self-asserted, which does not count)")),
    ("export control: general data goes without a verified region",
     requested(), replace(CATALOG, data_class="general"), replace(FACTS, peer=peer(stated="DE")), NOW,
     Outcome(Move.AGREE, offer=requested().offer)),
    ("export control: data held outside the rule's region may go",
     requested(), CATALOG, replace(FACTS, holder_region="DE", peer=peer(verified="US")), NOW,
     Outcome(Move.AGREE, offer=requested().offer)),
    ("access denied: no verified region for a tds:verifiedRegion policy",
     requested(), replace(CATALOG, access_policy=VERIFIED_GD, data_class="general"),
     replace(FACTS, peer=peer(stated="CN-GD")), NOW,
     terminate(f"the access policy of offer {OFFER_ID!r} does not admit you: permission #1 does not apply: no verified "
               "region: no credential from an issuer trusted for regions, policy requires within 'CN-GD'")),
    ("access admitted: the verified region lies within",
     requested(), replace(CATALOG, access_policy=VERIFIED_GD), FACTS, NOW,
     Outcome(Move.AGREE, offer=requested().offer)),
    ("access denied: not a verified member of the data space",
     requested(), replace(CATALOG, access_policy=MEMBERS), FACTS, NOW,
     terminate(f"the access policy of offer {OFFER_ID!r} does not admit you: permission #1 does not apply: no verified "
               "membership: no membership credential from an issuer trusted for it, policy requires "
               "'urn:tds:space:auto-parts'")),
    ("access admitted: a verified member of the data space",
     requested(), replace(CATALOG, access_policy=MEMBERS),
     replace(FACTS, peer=peer(verified="CN-GD", memberships=(("urn:tds:space:auto-parts", "member"),))), NOW,
     Outcome(Move.AGREE, offer=requested().offer)),
    ("access denied: the region the requester states (odrl:spatial)",
     requested(), replace(CATALOG, access_policy=GD_ONLY, data_class="general"),
     replace(FACTS, peer=peer(stated="CN-BJ")), NOW,
     terminate(f"the access policy of offer {OFFER_ID!r} does not admit you: permission #1 does not apply: region "
               "is 'CN-BJ', policy requires within 'CN-GD'")),
    ("access admitted: the requester's region lies within",
     requested(), replace(CATALOG, access_policy=GD_ONLY), FACTS, NOW, Outcome(Move.AGREE, offer=requested().offer)),
    ("access denied: the policy's time has passed",
     requested(), replace(CATALOG, access_policy=UNTIL_2026), FACTS, NOW,
     terminate(f"the access policy of offer {OFFER_ID!r} does not admit you: permission #1 does not apply: "
               "date-time is 2026-06-01T00:00:00Z, policy requires less than 2026-01-01T00:00:00Z")),
    ("access admitted: the same policy before that time",
     requested(), replace(CATALOG, access_policy=UNTIL_2026), FACTS, datetime(2025, 12, 31, tzinfo=UTC),
     Outcome(Move.AGREE, offer=requested().offer)),
    ("the access policy is missing",
     requested(), replace(CATALOG, access_policy=None), FACTS, NOW,
     terminate(f"the access policy of offer {OFFER_ID!r} does not admit you")),
    ("the contract policy is missing",
     requested(), replace(CATALOG, contract_policy=None), FACTS, NOW,
     terminate(f"the access policy of offer {OFFER_ID!r} does not admit you: permission #1 allows this")),
    ("the dataset is gone: export control judges it as general data, the catalog no longer shows it",
     requested(), replace(CATALOG, data_class=None), replace(FACTS, peer=peer(stated="DE", verified="DE")), NOW,
     terminate(f"the access policy of offer {OFFER_ID!r} does not admit you: permission #1 allows this")),
]


@pytest.mark.parametrize(("request_", "offer", "facts", "now", "expected"), [c[1:] for c in PROVIDER_CASES],
                         ids=[c[0] for c in PROVIDER_CASES])
def test_the_provider_decides_a_request(request_, offer, facts, now, expected):
    assert decide_request(request_, offer, facts, now) == expected


def test_an_invalid_contract_policy_is_an_error_not_a_decision():
    broken = replace(CATALOG, contract_policy={"@id": "urn:x", "@type": "Set", "permission": "nonsense"})
    with pytest.raises(MessageError):
        decide_request(requested(), broken, FACTS, NOW)


def test_the_request_names_its_definition_and_dataset():
    request = ContractRequest.of("cd1:sensor-data:abc", "", {})
    assert (request.definition_id, request.target) == ("cd1", "sensor-data")
    assert ContractRequest.of("cd1:sensor-data:abc", "explicit", {}).target == "explicit"
    assert ContractRequest.of("offer-1", "", {}).target == ""


def _snapshot() -> CatalogSnapshot:
    assets = {"open-data": Asset(id="open-data"), "core-data": Asset(id="core-data", data_class="core"),
              "gone-data": Asset(id="gone-data")}
    policies = {p.id: p for p in (PolicyRecord(id="open", policy=OPEN), PolicyRecord(id="gd", policy=GD_ONLY),
                                  PolicyRecord(id="research", policy=RESEARCH))}
    definitions = [
        ContractDefinition(id="cd-open", access_policy_id="open", contract_policy_id="research",
                           assets=["open-data", "core-data"]),
        ContractDefinition(id="cd-gd", access_policy_id="gd", contract_policy_id="research", assets=["open-data"]),
        ContractDefinition(id="cd-no-access", access_policy_id="missing", contract_policy_id="research",
                           assets=["open-data"]),
        ContractDefinition(id="cd-no-contract", access_policy_id="open", contract_policy_id="missing",
                           assets=["open-data"]),
        ContractDefinition(id="cd-gone", access_policy_id="open", contract_policy_id="research",
                           assets=["gone-data", "never-data"]),
    ]
    del assets["gone-data"]
    return CatalogSnapshot(assets, policies, definitions)


@pytest.mark.parametrize("requester", [
    peer(stated="CN-GD", verified="CN-GD"), peer(stated="CN-BJ", verified="CN-BJ"), peer(stated="DE", verified="DE"),
    peer(stated="CN-GD"), peer(stated="CN-GD", verified="DE"), PeerFacts(CONSUMER),
], ids=["gd", "bj", "de", "gd-self-asserted", "de-claiming-gd", "unknown"])
def test_the_provider_agrees_to_exactly_the_offers_its_catalog_shows(requester):
    """Every offer the catalog shows a peer is agreed when requested as shown; every other is terminated."""
    snapshot, peer = _snapshot(), requester
    facts = ProviderFacts(peer=peer, holder_region="CN-GD", export_rules=CN_CORE)
    shown = {o.offer_id: o for o in visible_offers(snapshot, peer, NOW, export_rules=CN_CORE, holder_region="CN-GD")}
    assert shown  # the open definition shows at least its general data to everyone
    for definition in snapshot.definitions:
        for asset_id in definition.assets:
            offer_id = contracts.offer_id(definition.id, asset_id, OFFERED)
            request = ContractRequest.of(offer_id, asset_id, contracts.message_offer(OFFERED, offer_id, asset_id))
            outcome = decide_request(request, catalog_offer(snapshot, definition.id, asset_id), facts, NOW)
            assert (outcome.move is Move.AGREE) is (offer_id in shown), (definition.id, asset_id, outcome)
            asked_other = replace(request, offer=contracts.message_offer(contracts.read_policy(OPEN, "offer"),
                                                                         offer_id, asset_id))
            counter = decide_request(asked_other, catalog_offer(snapshot, definition.id, asset_id), facts, NOW)
            if offer_id in shown:
                # The counter-offer is the catalog's own offer for the dataset.
                assert counter == Outcome(Move.OFFER, offer=contracts.message_offer(
                    shown[offer_id].policy, shown[offer_id].offer_id, asset_id))
            else:
                assert counter.move is Move.TERMINATE


def test_a_definition_the_catalog_does_not_hold_is_no_offer():
    assert catalog_offer(_snapshot(), "cd-unknown", "open-data") is None
    assert catalog_offer(_snapshot(), "cd-gone", "gone-data") == CatalogOffer(
        definition_id="cd-gone", assets=frozenset({"gone-data", "never-data"}), access_policy=OPEN,
        contract_policy=RESEARCH, data_class=None)


# -- the consumer, on the agreement it is sent ----------------------------------------------------------

AGREEMENT = contracts.agreement(OFFERED, agreement_id="urn:uuid:agreement-1", target=ASSET, assigner=PROVIDER,
                                assignee=CONSUMER, timestamp="2026-06-01T00:00:00Z")
EXPECTED = Expected(offer=contracts.message_offer(OFFERED, OFFER_ID, ASSET), target=ASSET, consumer=CONSUMER,
                    provider=PROVIDER)
STRANGER = "did:web:stranger.example"


def refuse(reason: str) -> Outcome:
    return Outcome(Move.REFUSE, reason)


# (name, agreement, what was asked for) -> outcome: each branch of the consumer's check.
CONSUMER_CASES: list[tuple[str, Any, Expected, Outcome]] = [
    ("the agreement states what was asked for",
     AGREEMENT, EXPECTED, Outcome(Move.VERIFY, agreement=AGREEMENT)),
    ("the same terms written otherwise",
     {**AGREEMENT, "permission": {**AGREEMENT["permission"][0], "action": "odrl:use"}}, EXPECTED,
     Outcome(Move.VERIFY, agreement={**AGREEMENT, "permission": {**AGREEMENT["permission"][0],
                                                                 "action": "odrl:use"}})),
    ("not an object",
     ["an", "agreement"], EXPECTED, refuse("agreement must be an ODRL Agreement object")),
    ("required fields missing or empty",
     {k: v for k, v in {**AGREEMENT, "assignee": ""}.items() if k not in ("@id", "timestamp")}, EXPECTED,
     refuse("agreement.@id is missing; agreement.assignee is missing; agreement.timestamp is missing")),
    ("a field that is not text",
     {**AGREEMENT, "target": {"@id": ASSET}}, EXPECTED, refuse("agreement.target is missing")),
    ("the terms differ",
     contracts.agreement(contracts.read_policy(OPEN, "policy"), agreement_id="urn:uuid:agreement-1", target=ASSET,
                         assigner=PROVIDER, assignee=CONSUMER, timestamp="2026-06-01T00:00:00Z"), EXPECTED,
     refuse("the agreement's terms differ from the offer")),
    ("the target differs",
     {**AGREEMENT, "target": "other-data"}, EXPECTED, refuse(f"the agreement is for other-data, not {ASSET}")),
    ("no target was known: any target",
     {**AGREEMENT, "target": "other-data"}, replace(EXPECTED, target=""),
     Outcome(Move.VERIFY, agreement={**AGREEMENT, "target": "other-data"})),
    ("the assignee is someone else",
     {**AGREEMENT, "assignee": STRANGER}, EXPECTED,
     refuse(f"the agreement's assignee is {STRANGER}, not {CONSUMER}")),
    ("the assigner is someone else",
     {**AGREEMENT, "assigner": STRANGER}, EXPECTED,
     refuse(f"the agreement's assigner is {STRANGER}, not {PROVIDER}")),
    ("the parties swapped: the assignee is checked first",
     {**AGREEMENT, "assigner": CONSUMER, "assignee": PROVIDER}, EXPECTED,
     refuse(f"the agreement's assignee is {PROVIDER}, not {CONSUMER}")),
    ("the compatibility kit may name other parties",
     {**AGREEMENT, "assigner": STRANGER, "assignee": STRANGER}, replace(EXPECTED, any_parties=True),
     Outcome(Move.VERIFY, agreement={**AGREEMENT, "assigner": STRANGER, "assignee": STRANGER})),
    ("the compatibility kit's agreement must still state the terms",
     {**AGREEMENT, "permission": [{"action": "use"}]}, replace(EXPECTED, any_parties=True),
     refuse("the agreement's terms differ from the offer")),
    ("the compatibility kit's agreement must still be for the dataset",
     {**AGREEMENT, "target": "other-data"}, replace(EXPECTED, any_parties=True),
     refuse(f"the agreement is for other-data, not {ASSET}")),
]


@pytest.mark.parametrize(("agreement", "expected", "outcome"), [c[1:] for c in CONSUMER_CASES],
                         ids=[c[0] for c in CONSUMER_CASES])
def test_the_consumer_checks_an_agreement(agreement, expected, outcome):
    assert check_agreement(agreement, expected) == outcome


def test_an_agreement_whose_rules_are_not_odrl_is_an_error_not_a_decision():
    with pytest.raises(MessageError) as raised:
        check_agreement({**AGREEMENT, "permission": "nonsense"}, EXPECTED)
    assert raised.value.path == "agreement"
