"""The catalog a participant shows to a peer (DSP 2025-1 §6): DCAT datasets with the offers the peer
may see, decided by each contract definition's access policy against the peer's verified identity.

What is known of a peer (:meth:`CatalogService.peer_facts`, also asked by the negotiation, transfer and receipt
services): what its self-description says (self-asserted), and what credentials by issuers the participant
trusts verify of it (*claims_of*: ``CredentialService.claims_of``, the claims counted in the latest handshake).

One snapshot read per request (no per-asset queries); the access policy is evaluated once per contract
definition, not per asset.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from connector.protocol import contexts, contracts, export_control, ids
from connector.protocol.decisions import CatalogOffer
from connector.protocol.export_control import ExportRule
from connector.protocol.messages import CONTEXT
from connector.protocol.policy import PeerFacts, decide_access
from connector.store.records import Asset, ContractDefinition
from connector.store.repository import CatalogSnapshot

if TYPE_CHECKING:
    from connector.identity.trust import PeerClaims
    from connector.participant import ParticipantRuntime
    from connector.store.repository import ContractRepository, Repository

TDS = contexts.TDS_NS
FORMATS = ("HttpData-PULL",)
#: The one distribution of a dataset offered for computation only: queries to the provider's data sandbox (an
#: absolute IRI: ``dct:format`` is read as one).
SANDBOX_FORMAT = TDS + "SandboxQuery"
#: What a sandbox dataset says of itself in its ``tds:sandbox``.
COMPUTATION_ONLY = ("computation only: the rows never leave the provider; aggregate queries under an agreement run "
                    "in its data sandbox, and only results over groups large enough (and noisy, under a privacy "
                    "budget) come back")


class Offered(msgspec.Struct, frozen=True):
    definition: ContractDefinition
    asset: Asset
    offer_id: str
    policy: dict[str, Any]


def offer_id(definition: ContractDefinition, asset_id: str, policy: dict[str, Any]) -> str:
    """``urn:tds:offer:CD:ASSET:VERSION``; the version changes when the contract policy does."""
    return contracts.offer_id(definition.id, asset_id, policy)


def _utc_now() -> datetime:
    return datetime.now(UTC)


#: Which claims of a peer count for a participant: (participant id, peer DID) → its counted claims, or None.
ClaimsOf = Callable[[str, str], Awaitable["PeerClaims | None"]]


async def no_claims(participant_id: str, did: str) -> PeerClaims | None:
    """No credentials verified: every peer has only what it says of itself."""
    return None


class CatalogService:
    """What each participant offers to a peer: reads the catalog entries, the verified peers and their
    verified claims (*claims_of*), and decides with :func:`visible_offers` under the node's export-control
    rules."""

    def __init__(
        self, contracts: ContractRepository, peers: Repository, export_rules: Sequence[ExportRule], *,
        clock: Callable[[], datetime] = _utc_now, claims_of: ClaimsOf = no_claims,
    ) -> None:
        self.contracts = contracts
        self.peers = peers
        self.export_rules = export_rules
        self.clock = clock
        self.claims_of = claims_of
        #: Asset ids shown as they are instead of under their absolute ids (``connector.protocol.ids``): only
        #: the compatibility kit's datasets in conformance mode, which the kit names by its own ids.
        self.bare_ids: frozenset[str] = frozenset()

    def dataset_id(self, participant: ParticipantRuntime, asset_id: str) -> str:
        """The id under which *participant* shows its asset *asset_id*: ``urn:tds:asset:<DID>:<asset id>``."""
        if asset_id in self.bare_ids:
            return asset_id
        return ids.dataset_iri(participant.did, asset_id)

    async def peer_facts(self, participant: ParticipantRuntime, did: str) -> PeerFacts:
        """What *participant* knows of the peer *did*: its self-description's claims (self-asserted) and the
        claims of its credentials that count (verified)."""
        peer = await self.peers.peer(participant.id, did)
        facts = PeerFacts(did) if peer is None else PeerFacts(
            did, self_asserted_region=peer.region, self_asserted_legal_name=peer.legal_name, self_described=True)
        return facts.with_claims(await self.claims_of(participant.id, did))

    async def offers_for(self, participant: ParticipantRuntime, peer: PeerFacts) -> list[Offered]:
        snapshot = await self.contracts.catalog(participant.id)
        return visible_offers(snapshot, peer, self.clock(), export_rules=self.export_rules,
                              holder_region=participant.record.region)

    def service(self, participant: ParticipantRuntime) -> dict[str, Any]:
        return {"@id": f"{participant.did}#dsp", "@type": "DataService", "endpointURL": participant.dsp_base}

    def dataset(self, participant: ParticipantRuntime, asset: Asset, offers: list[Offered]) -> dict[str, Any]:
        service_id = f"{participant.did}#dsp"
        formats = (SANDBOX_FORMAT,) if asset.sandbox is not None else FORMATS
        dataset: dict[str, Any] = {
            "@id": self.dataset_id(participant, asset.id),
            "@type": "Dataset",
            "hasPolicy": [contracts.catalog_offer(o.policy, o.offer_id) for o in offers],
            "distribution": [{"@type": "Distribution", "format": f, "accessService": service_id} for f in formats],
        }
        if asset.title:
            dataset["dct:title"] = asset.title
        if asset.description:
            dataset["dct:description"] = asset.description
        if asset.keywords:
            dataset["dcat:keyword"] = asset.keywords
        dataset["dcat:mediaType"] = asset.content_type
        dataset[TDS + "dataClass"] = asset.data_class
        if asset.sandbox is not None:
            dataset[TDS + "sandbox"] = sandbox_description(asset.sandbox, participant.dsp_base)
        return dataset

    async def catalog(
        self, participant: ParticipantRuntime, caller: str, *, offset: int = 0, limit: int = 100
    ) -> tuple[dict[str, Any], int]:
        """The catalog page for *caller*, and the total number of datasets it may see."""
        offers = await self.offers_for(participant, await self.peer_facts(participant, caller))
        by_asset: dict[str, list[Offered]] = {}
        for o in offers:
            by_asset.setdefault(o.asset.id, []).append(o)
        ids = sorted(by_asset)
        page = ids[offset : offset + limit]
        catalog: dict[str, Any] = {
            "@context": list(CONTEXT),
            "@id": f"{participant.did}#catalog",
            "@type": "Catalog",
            "participantId": participant.did,
            "service": [self.service(participant)],
        }
        if page:
            catalog["dataset"] = [self.dataset(participant, by_asset[i][0].asset, by_asset[i]) for i in page]
        return catalog, len(ids)

    async def find_dataset(
        self, participant: ParticipantRuntime, caller: str, dataset_id: str
    ) -> dict[str, Any] | None:
        """The dataset *dataset_id* (its absolute id, or the asset id itself) as *caller* may see it."""
        asset_id = ids.local_asset_id(participant.did, dataset_id)
        offers = [o for o in await self.offers_for(participant, await self.peer_facts(participant, caller))
                  if o.asset.id == asset_id]
        if not offers:
            return None
        return {"@context": list(CONTEXT), **self.dataset(participant, offers[0].asset, offers)}


def sandbox_description(kept: dict[str, Any], dsp_base: str) -> dict[str, Any]:
    """``tds:sandbox`` of a dataset offered for computation only: what it is for, where queries go, and its table's
    schema (columns with their types and declared bounds, the row count rounded to two significant digits, the
    columns a query may reference). A JSON literal (``@type: @json``): a JSON-LD processor keeps it as it is."""
    found = kept.get("schema")
    schema: dict[str, Any] = found if isinstance(found, dict) else {}
    columns = [{k: v for k, v in c.items() if v is not None} for c in schema.get("columns", []) if isinstance(c, dict)]
    from connector.services.sandbox import QUERY_PATH  # the sandbox is loaded when a sandbox offer is first shown

    return {"@type": "@json", "@value": {
        "use": COMPUTATION_ONLY,
        "queryEndpoint": f"{dsp_base}{QUERY_PATH}",
        "columns": columns,
        "rowsRounded": schema.get("rows_rounded"),
        "queryable": schema.get("queryable", []),
    }}


def catalog_offer(snapshot: CatalogSnapshot, definition_id: str, asset_id: str) -> CatalogOffer | None:
    """The contract definition *definition_id* with its policies and the data class of *asset_id*, as
    ``connector.protocol.decisions`` decides a request on it; None if there is no such definition."""
    definition = next((d for d in snapshot.definitions if d.id == definition_id), None)
    if definition is None:
        return None
    access = snapshot.policies.get(definition.access_policy_id)
    contract = snapshot.policies.get(definition.contract_policy_id)
    asset = snapshot.assets.get(asset_id)
    return CatalogOffer(
        definition_id=definition.id, assets=frozenset(definition.assets),
        access_policy=access.policy if access is not None else None,
        contract_policy=contract.policy if contract is not None else None,
        data_class=asset.data_class if asset is not None else None,
    )


def visible_offers(
    snapshot: CatalogSnapshot, peer: PeerFacts, now: datetime, *, export_rules: Sequence[ExportRule] = (),
    holder_region: str = "",
) -> list[Offered]:
    """Offers whose access policy permits *peer* now and that export control lets reach it (pure)."""
    out: list[Offered] = []
    for definition in snapshot.definitions:
        access = snapshot.policies.get(definition.access_policy_id)
        contract = snapshot.policies.get(definition.contract_policy_id)
        if access is None or contract is None:
            continue
        if not decide_access(access.policy, peer, target=None, now=now).permitted:
            continue
        policy = contracts.read_policy(contract.policy, "policy")
        for asset_id in definition.assets:
            asset = snapshot.assets.get(asset_id)
            if asset is None or export_control.refusal(export_rules, data_class=asset.data_class,
                                                       holder_region=holder_region, recipient=peer.recipient_region):
                continue
            out.append(Offered(definition, asset, offer_id(definition, asset_id, policy), policy))
    return out
