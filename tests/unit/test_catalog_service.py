"""The catalog service with in-memory catalog entries, verified peers and their verified claims: what a peer sees
(access policy, export control, the clock), the facts it is judged by, paging and single datasets — no node, no
sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol.export_control import ExportRule
from connector.protocol.policy import PeerFacts
from connector.services.catalog import CatalogService
from connector.store.records import Asset, ContractDefinition, PolicyRecord
from connector.store.repository import CatalogSnapshot, Participant, Peer
from connector.testing import REGISTRY_DID, FixedClaims, peer_claims

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
GD_ONLY = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "spatial", "operator": "isPartOf", "rightOperand": "CN-GD"}]}]}
VERIFIED_GD = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "tds:verifiedRegion", "operator": "isPartOf", "rightOperand": "CN-GD"}]}]}
MEMBERS = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "tds:memberOf", "operator": "isAnyOf", "rightOperand": ["urn:tds:space:auto-parts"]}]}]}
UNTIL_2030 = {"@type": "Set", "permission": [{"action": "use", "constraint": [
    {"leftOperand": "dateTime", "operator": "lt", "rightOperand": "2030-01-01T00:00:00Z"}]}]}
NOW = datetime(2026, 6, 1, tzinfo=UTC)
GD_PEER = "did:web:parts.example"
BJ_PEER = "did:web:north.example"
DE_PEER = "did:web:partner.example"
#: A peer established in Germany (its region credential says so) whose self-description states CN-GD.
LIAR = "did:web:liar.example"
#: What trusted issuers' credentials verify of the peers: GD_PEER has none, and states its region only.
CLAIMS = FixedClaims(peer_claims(BJ_PEER, region="CN-BJ", spaces=["urn:tds:space:auto-parts"]),
                     peer_claims(DE_PEER, region="DE-BY"), peer_claims(LIAR, region="DE-BE"), participants=["acme"])


class CatalogEntries:
    """The catalog entries of each participant, as ``ContractRepository.catalog`` reads them."""

    def __init__(self) -> None:
        self.assets: dict[str, dict[str, Asset]] = {}
        self.policies: dict[str, dict[str, PolicyRecord]] = {}
        self.definitions: dict[str, list[ContractDefinition]] = {}
        self.reads = 0

    def publish(self, participant_id: str, asset: Asset, *, access: dict[str, Any], cd: str,
                contract: dict[str, Any] = OPEN) -> None:
        self.assets.setdefault(participant_id, {})[asset.id] = asset
        policies = self.policies.setdefault(participant_id, {})
        for kind, policy in (("access", access), ("contract", contract)):
            # As the management API stores them: with an id.
            policies[f"{cd}-{kind}"] = PolicyRecord(id=f"{cd}-{kind}",
                                                    policy={**policy, "@id": f"urn:tds:policy:{cd}-{kind}"})
        self.definitions.setdefault(participant_id, []).append(ContractDefinition(
            id=cd, access_policy_id=f"{cd}-access", contract_policy_id=f"{cd}-contract", assets=[asset.id]))

    async def catalog(self, participant_id: str) -> CatalogSnapshot:
        self.reads += 1
        return CatalogSnapshot(self.assets.get(participant_id, {}), self.policies.get(participant_id, {}),
                               self.definitions.get(participant_id, []))


class PeerBook:
    """The verified peers of each participant, as ``Repository.peers`` reads them."""

    def __init__(self, peers: dict[str, list[Peer]] | None = None) -> None:
        self.by_participant = peers or {}

    async def peers(self, participant_id: str) -> list[Peer]:
        return self.by_participant.get(participant_id, [])

    async def peer(self, participant_id: str, did: str) -> Peer | None:
        return next((p for p in self.by_participant.get(participant_id, []) if p.did == did), None)


def peer(did: str, region: str, legal_name: str = "Peer Ltd") -> Peer:
    return Peer(did, legal_name, region, "manufacturing", f"https://{did}/dsp", "2026-01-01T00:00:00Z")


def runtime(name: str, region: str = "CN-GD") -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:example.org:participants:{name}",
                         legal_name=name.title(), region=region)
    return ParticipantRuntime(record, ParticipantKeys.generate(), "https://example.org")


@pytest.fixture
def acme() -> ParticipantRuntime:
    return runtime("acme")


@pytest.fixture
def entries() -> CatalogEntries:
    return CatalogEntries()


@pytest.fixture
def book() -> PeerBook:
    return PeerBook({"acme": [peer(GD_PEER, "CN-GD-GZ", "Parts Co"), peer(BJ_PEER, "CN-BJ"),
                              peer(DE_PEER, "DE-BY"), peer(LIAR, "CN-GD")]})


def service(entries: CatalogEntries, book: PeerBook, rules: list[ExportRule] | None = None,
            now: datetime = NOW) -> CatalogService:
    return CatalogService(entries, book, rules or [], clock=lambda: now, claims_of=CLAIMS)  # type: ignore[arg-type]


def dataset_ids(catalog: dict[str, Any]) -> list[str]:
    """The asset ids listed, each under its absolute id ``urn:tds:asset:<participant DID>:<asset id>``."""
    prefix = f"urn:tds:asset:{catalog['participantId']}:"
    listed = [d["@id"] for d in catalog.get("dataset", [])]
    assert all(i.startswith(prefix) for i in listed), listed
    return [i[len(prefix):] for i in listed]


async def test_peer_facts_without_credentials_are_what_the_self_description_asserts(entries, book, acme):
    facts = await service(entries, book).peer_facts(acme, GD_PEER)
    assert facts == PeerFacts(GD_PEER, self_asserted_region="CN-GD-GZ", self_asserted_legal_name="Parts Co",
                              self_described=True)
    assert facts.verified_region is None and facts.recipient_region.verified is None


async def test_peer_facts_carry_the_verified_claims_beside_the_self_asserted_ones(entries, book, acme):
    facts = await service(entries, book).peer_facts(acme, LIAR)
    assert (facts.self_asserted_region, facts.verified_region, facts.region_issuer) == ("CN-GD", "DE-BE", REGISTRY_DID)
    member = await service(entries, book).peer_facts(acme, BJ_PEER)
    assert member.memberships == (("urn:tds:space:auto-parts", "member"),)


async def test_the_claims_are_asked_of_the_participant_that_decides(entries, book, acme):
    CLAIMS.asked.clear()
    await service(entries, book).peer_facts(acme, DE_PEER)
    assert CLAIMS.asked == [("acme", DE_PEER)]


async def test_without_a_claims_source_nothing_is_verified(entries, book, acme):
    facts = await CatalogService(entries, book, []).peer_facts(acme, BJ_PEER)  # type: ignore[arg-type]
    assert facts == PeerFacts(BJ_PEER, self_asserted_region="CN-BJ", self_asserted_legal_name="Peer Ltd",
                              self_described=True)


async def test_an_unverified_peer_has_only_its_did(entries, book, acme):
    assert await service(entries, book).peer_facts(acme, "did:key:z6Mkstranger") == PeerFacts("did:key:z6Mkstranger")


async def test_peers_verified_by_another_participant_do_not_count(entries, book):
    other = runtime("other")
    assert await service(entries, book).peer_facts(other, GD_PEER) == PeerFacts(GD_PEER)


@pytest.mark.parametrize(("caller", "expected"), [
    (GD_PEER, ["gd-data", "open-data"]),
    (BJ_PEER, ["open-data"]),
    ("did:key:z6Mkstranger", ["open-data"]),
])
async def test_the_catalog_lists_what_the_access_policy_admits(entries, book, acme, caller, expected):
    entries.publish("acme", Asset(id="open-data"), access=OPEN, cd="open")
    entries.publish("acme", Asset(id="gd-data"), access=GD_ONLY, cd="gd")
    catalog, total = await service(entries, book).catalog(acme, caller)
    assert dataset_ids(catalog) == expected and total == len(expected)


@pytest.mark.parametrize(("caller", "expected"), [
    (BJ_PEER, ["members-data"]),  # a verified member, with a verified region in Beijing
    (GD_PEER, []),  # states CN-GD-GZ, nothing verified
    (LIAR, []),  # states CN-GD, verified in DE-BE
])
async def test_verified_claim_policies_read_only_what_is_verified(entries, book, acme, caller, expected):
    entries.publish("acme", Asset(id="verified-gd-data"), access=VERIFIED_GD, cd="gd")
    entries.publish("acme", Asset(id="members-data"), access=MEMBERS, cd="members")
    catalog, _ = await service(entries, book).catalog(acme, caller)
    assert dataset_ids(catalog) == expected


async def test_a_verified_region_within_admits(entries, book, acme):
    entries.publish("acme", Asset(id="verified-gd-data"), access=VERIFIED_GD, cd="gd")
    claims = FixedClaims(peer_claims(GD_PEER, region="CN-GD"))
    catalog, _ = await CatalogService(entries, book, [], clock=lambda: NOW,  # type: ignore[arg-type]
                                      claims_of=claims).catalog(acme, GD_PEER)
    assert dataset_ids(catalog) == ["verified-gd-data"]


@pytest.mark.parametrize(("caller", "visible"), [
    (BJ_PEER, True),  # verified in CN-BJ
    (DE_PEER, False),  # verified abroad
    (GD_PEER, False),  # states CN-GD-GZ: self-asserted, not verified
    (LIAR, False),  # states CN-GD, verified abroad
    ("did:key:z6Mkx", False),  # nothing known
])
async def test_export_rules_hide_core_data_from_recipients_abroad_or_unverified(entries, book, acme, caller, visible):
    entries.publish("acme", Asset(id="line-7", data_class="core"), access=OPEN, cd="cd")
    rules = [ExportRule(region="CN", data_classes=["core"])]
    catalog, _ = await service(entries, book, rules).catalog(acme, caller)
    assert dataset_ids(catalog) == (["line-7"] if visible else [])


async def test_export_rules_leave_other_data_classes_alone(entries, book, acme):
    entries.publish("acme", Asset(id="general"), access=OPEN, cd="cd")
    rules = [ExportRule(region="CN", data_classes=["core"])]
    catalog, _ = await service(entries, book, rules).catalog(acme, DE_PEER)
    assert dataset_ids(catalog) == ["general"]


@pytest.mark.parametrize(("now", "visible"), [(NOW, True), (datetime(2031, 1, 1, tzinfo=UTC), False)])
async def test_access_is_decided_at_the_services_clock(entries, book, acme, now, visible):
    entries.publish("acme", Asset(id="until-2030"), access=UNTIL_2030, cd="cd")
    catalog, _ = await service(entries, book, now=now).catalog(acme, GD_PEER)
    assert dataset_ids(catalog) == (["until-2030"] if visible else [])


async def test_a_page_of_the_catalog_and_the_total(entries, book, acme):
    for name in ("a", "b", "c", "d"):
        entries.publish("acme", Asset(id=name), access=OPEN, cd=f"cd-{name}")
    catalog, total = await service(entries, book).catalog(acme, GD_PEER, offset=1, limit=2)
    assert dataset_ids(catalog) == ["b", "c"] and total == 4


async def test_the_catalog_is_read_once_per_request(entries, book, acme):
    for name in ("a", "b", "c"):
        entries.publish("acme", Asset(id=name), access=OPEN, cd=f"cd-{name}")
    await service(entries, book).catalog(acme, GD_PEER)
    assert entries.reads == 1


async def test_the_catalog_names_its_participant_and_service(entries, book, acme):
    catalog, _ = await service(entries, book).catalog(acme, GD_PEER)
    assert catalog["participantId"] == acme.did and "dataset" not in catalog
    assert catalog["service"] == [{"@id": f"{acme.did}#dsp", "@type": "DataService",
                                   "endpointURL": acme.dsp_base}]


async def test_a_dataset_carries_its_offers_and_descriptive_fields(entries, book, acme):
    entries.publish("acme", Asset(id="qi", title="Quality", keywords=["quality"], content_type="text/csv"),
                    access=OPEN, cd="cd")
    found = await service(entries, book).find_dataset(acme, GD_PEER, "qi")
    assert found is not None
    assert found["@id"] == f"urn:tds:asset:{acme.did}:qi"
    assert found["dct:title"] == "Quality" and found["dcat:keyword"] == ["quality"]
    assert found["dcat:mediaType"] == "text/csv"
    [offer] = found["hasPolicy"]
    assert offer["@id"].startswith("urn:tds:offer:cd:qi:")


@pytest.mark.parametrize("asked", ["qi", "urn:tds:asset:did:web:example.org:participants:acme:qi"])
async def test_a_dataset_is_found_by_its_absolute_id_and_by_the_asset_id(entries, book, acme, asked):
    entries.publish("acme", Asset(id="qi"), access=OPEN, cd="cd")
    found = await service(entries, book).find_dataset(acme, GD_PEER, asked)
    assert found is not None and found["@id"] == f"urn:tds:asset:{acme.did}:qi"


async def test_an_absolute_id_of_another_participant_names_no_dataset(entries, book, acme):
    entries.publish("acme", Asset(id="qi"), access=OPEN, cd="cd")
    other = "urn:tds:asset:did:web:example.org:participants:other:qi"
    assert await service(entries, book).find_dataset(acme, GD_PEER, other) is None


async def test_datasets_kept_bare_are_listed_under_their_own_ids(entries, book, acme):
    entries.publish("acme", Asset(id="CAT0101"), access=OPEN, cd="cd")
    catalog_service = service(entries, book)
    catalog_service.bare_ids = frozenset({"CAT0101"})
    catalog, _ = await catalog_service.catalog(acme, GD_PEER)
    assert [d["@id"] for d in catalog["dataset"]] == ["CAT0101"]


async def test_a_dataset_the_peer_may_not_see_is_not_found(entries, book, acme):
    entries.publish("acme", Asset(id="gd-data"), access=GD_ONLY, cd="gd")
    assert await service(entries, book).find_dataset(acme, BJ_PEER, "gd-data") is None


async def test_another_participants_entries_are_not_listed(entries, book, acme):
    entries.publish("other", Asset(id="theirs"), access=OPEN, cd="cd")
    catalog, total = await service(entries, book).catalog(acme, GD_PEER)
    assert total == 0 and "dataset" not in catalog
