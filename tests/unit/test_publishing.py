"""Publishing catalog entries on a real database file, without a node or sockets: a policy must be valid
ODRL, a contract definition may name only what exists, an asset's file must be the participant's own, an
HttpData asset is fetched into a snapshot, each version of the bytes gets its manifest, and an entry that
an offer, an agreement in force or a starting negotiation still needs is not deleted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.errors import BadRequest, Conflict, NotFound
from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.protocol.agreement_lifecycle import AgreementState
from connector.protocol.negotiation import Role
from connector.protocol.negotiation import State as NegotiationState
from connector.services import addresses
from connector.services.publishing import Publishing
from connector.store.db import Store
from connector.store.records import AgreementRecord, Asset, ContractDefinition, NegotiationRecord, PolicyRecord
from connector.store.repository import ContractRepository, Participant, SqliteRepository

OPEN = {"@type": "Set", "permission": [{"action": "use"}]}
NOW = "2026-12-06T10:00:00+00:00"


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:{name}.example", legal_name=name, region="CN-GD",
                         created_at=NOW)
    return ParticipantRuntime(record, ParticipantKeys.generate(), f"https://{name}.example")


def read(path: str) -> bytes:
    return Path(path).read_bytes()


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        yield self.data


class Answer:
    def __init__(self, data: bytes) -> None:
        self.status = 200
        self.content = Body(data)


class Backend:
    """An HTTP backend whose bytes the test changes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[tuple[str, bool]] = []

    @contextlib.asynccontextmanager
    async def stream(self, url: str, *, backend: bool = False) -> AsyncIterator[Answer]:
        self.asked.append((url, backend))
        yield Answer(self.data)


class Setup:
    def __init__(self, data_dir: Path, store: Store) -> None:
        self.data_dir = data_dir
        self.contracts = ContractRepository(store)
        self.backend = Backend(b"lot,defects\n1,0\n")
        self.manifests: list[tuple[str, str, Path]] = []

        async def manifest_for(p: ParticipantRuntime, asset: Asset, path: Path) -> None:
            self.manifests.append((p.name, asset.id, path))

        self.service = Publishing(
            self.contracts, self.backend, manifest_for=manifest_for, snapshot_limit=1024,
            confinement=lambda p: addresses.confinement(data_dir, p.name, {}))
        self.acme, self.sme = runtime("acme"), runtime("sme")
        for p in (self.acme, self.sme):
            (data_dir / "files" / p.name).mkdir(parents=True)


@pytest.fixture
async def setup(tmp_path):
    store = Store(tmp_path / "t.db")
    await store.open()
    s = Setup(tmp_path, store)
    for p in (s.acme, s.sme):
        await SqliteRepository(store).add_participant(p.record)
    yield s
    await store.close()


async def test_a_file_asset_is_published_with_its_manifest(setup):
    (setup.data_dir / "files" / "acme" / "qi.csv").write_text("lot,defects\n")
    asset = Asset(id="qi", data_address={"type": "File", "path": "qi.csv"}, created_at=NOW)
    published = await setup.service.add_asset(setup.acme, asset)
    assert published == asset
    assert await setup.service.entry(setup.acme, Asset, "qi") == asset
    assert setup.manifests == [("acme", "qi", setup.data_dir / "files" / "acme" / "qi.csv")]
    assert await setup.service.entries(setup.sme, Asset) == []  # one participant's entries only


async def test_another_participants_file_is_refused_and_nothing_is_published(setup):
    (setup.data_dir / "files" / "sme" / "secret.csv").write_text("x")
    asset = Asset(id="qi", data_address={"type": "File", "path": str(setup.data_dir / "files" / "sme" / "secret.csv")})
    with pytest.raises(BadRequest):
        await setup.service.add_asset(setup.acme, asset)
    assert await setup.service.entries(setup.acme, Asset) == [] and setup.manifests == []


async def test_an_http_asset_is_snapshotted_and_refreshed_into_new_versions(setup):
    asset = Asset(id="qi", data_address={"type": "HttpData", "url": "https://backend.internal/qi.csv"})
    published = await setup.service.add_asset(setup.acme, asset)
    address = published.data_address
    assert address["type"] == "File" and address["origin"] == "https://backend.internal/qi.csv"
    assert read(address["path"]) == setup.backend.data
    assert setup.backend.asked == [("https://backend.internal/qi.csv", True)]  # through the backend guard
    assert len(setup.manifests) == 1

    same, changed = await setup.service.refresh_asset(setup.acme, "qi")
    assert not changed and same.data_address["sha256"] == address["sha256"] and len(setup.manifests) == 1

    setup.backend.data = b"lot,defects\n1,2\n"
    fresh, changed = await setup.service.refresh_asset(setup.acme, "qi")
    assert changed and fresh.data_address["sha256"] != address["sha256"]
    assert (await setup.service.entry(setup.acme, Asset, "qi")).data_address == fresh.data_address
    assert len(setup.manifests) == 2

    with pytest.raises(Conflict, match="already exists"):
        await setup.service.add_asset(setup.acme, asset)


async def test_refresh_needs_an_asset_fetched_from_a_backend(setup):
    await setup.service.add_asset(setup.acme, Asset(id="plain"))
    with pytest.raises(BadRequest, match="no origin"):
        await setup.service.refresh_asset(setup.acme, "plain")
    with pytest.raises(NotFound):
        await setup.service.refresh_asset(setup.sme, "plain")


async def test_a_policy_gets_an_id_and_invalid_odrl_is_refused_naming_the_place(setup):
    record = await setup.service.add_policy(setup.acme, "rnd", OPEN, NOW)
    assert record.policy["@id"] == "urn:tds:policy:rnd"
    with pytest.raises(BadRequest) as refused:
        await setup.service.add_policy(setup.acme, "bad", {"@type": "Set", "permission": [{"action": 7}]}, NOW)
    assert refused.value.path.startswith("$.policy")
    assert [p.id for p in await setup.service.entries(setup.acme, PolicyRecord)] == ["rnd"]
    with pytest.raises(Conflict, match=r"^policy 'rnd' already exists"):
        await setup.service.add_policy(setup.acme, "rnd", OPEN, NOW)


async def test_a_definition_may_name_only_policies_and_assets_that_exist(setup):
    await setup.service.add_policy(setup.acme, "rnd", OPEN, NOW)
    await setup.service.add_asset(setup.acme, Asset(id="qi"))
    await setup.service.add_policy(setup.sme, "theirs", OPEN, NOW)

    def definition(access: str, assets: list[str]) -> ContractDefinition:
        return ContractDefinition(id="cd", access_policy_id=access, contract_policy_id="rnd", assets=assets)

    with pytest.raises(BadRequest) as refused:
        await setup.service.add_definition(setup.acme, definition("theirs", ["qi"]))  # another participant's
    assert refused.value.path == "$.accessPolicyId"
    with pytest.raises(BadRequest) as refused:
        await setup.service.add_definition(setup.acme, definition("rnd", ["qi", "nope"]))
    assert refused.value.path == "$.assets[1]"
    await setup.service.add_definition(setup.acme, definition("rnd", ["qi"]))
    with pytest.raises(Conflict, match=r"^contract definition 'cd' already exists"):
        await setup.service.add_definition(setup.acme, definition("rnd", ["qi"]))
    assert await setup.service.delete(setup.acme, ContractDefinition, "cd")
    assert not await setup.service.delete(setup.acme, ContractDefinition, "cd")


async def test_a_policy_an_offer_names_is_kept_and_the_refusal_names_the_offer(setup):
    for policy_id in ("open", "rnd", "spare"):
        await setup.service.add_policy(setup.acme, policy_id, OPEN, NOW)
    await setup.service.add_asset(setup.acme, Asset(id="qi"))
    await setup.service.add_definition(setup.acme, ContractDefinition(
        id="cd", access_policy_id="open", contract_policy_id="rnd", assets=["qi"]))
    for policy_id in ("open", "rnd"):
        with pytest.raises(Conflict) as refused:
            await setup.service.delete(setup.acme, PolicyRecord, policy_id)
        assert refused.value.message == f"policy '{policy_id}' is still in use by offers cd: first delete those offers"
        assert refused.value.details == {"references": {"offers": ["cd"]}}
    assert await setup.service.delete(setup.acme, PolicyRecord, "spare")
    assert [p.id for p in await setup.service.entries(setup.acme, PolicyRecord)] == ["open", "rnd"]
    assert await setup.service.delete(setup.acme, ContractDefinition, "cd")  # an offer: needed by nothing
    assert await setup.service.delete(setup.acme, PolicyRecord, "rnd")
    assert await setup.service.delete(setup.acme, Asset, "qi")


def _agreement(agreement_id: str, asset_id: str, *, role: Role = Role.PROVIDER,
               state: AgreementState = AgreementState.FINALIZED) -> AgreementRecord:
    return AgreementRecord(id=agreement_id, negotiation_id=f"n-{agreement_id}", role=role,
                           provider_did="did:web:acme.example", consumer_did="did:web:parts.example",
                           asset_id=asset_id, agreement={"@id": agreement_id}, state=state, created_at=NOW)


async def test_an_asset_is_kept_while_an_offer_an_agreement_in_force_or_a_starting_negotiation_needs_it(setup):
    for asset_id in ("qi", "old"):
        await setup.service.add_asset(setup.acme, Asset(id=asset_id))
    await setup.service.add_policy(setup.acme, "rnd", OPEN, NOW)
    await setup.service.add_definition(setup.acme, ContractDefinition(
        id="cd", access_policy_id="rnd", contract_policy_id="rnd", assets=["qi"]))
    dataset = "urn:tds:asset:did:web:acme.example:"  # agreements and requests name the dataset by its absolute id
    await setup.contracts.add_agreement(setup.acme.id, _agreement("a-1", dataset + "qi"))
    await setup.contracts.create_negotiation(NegotiationRecord(
        participant_id=setup.acme.id, id="n-1", role=Role.PROVIDER, state=NegotiationState.REQUESTED,
        counterparty_did="did:web:parts.example", asset_id=dataset + "qi"), "message-in")
    # What does not need "old": a revoked agreement, one where acme is the consumer, an ended negotiation.
    await setup.contracts.add_agreement(setup.acme.id, _agreement("a-2", dataset + "old",
                                                                  state=AgreementState.REVOKED))
    await setup.contracts.add_agreement(setup.acme.id, _agreement("a-3", "old", role=Role.CONSUMER))
    await setup.contracts.create_negotiation(NegotiationRecord(
        participant_id=setup.acme.id, id="n-2", role=Role.PROVIDER, state=NegotiationState.TERMINATED,
        counterparty_did="did:web:parts.example", asset_id=dataset + "old"), "message-in")

    with pytest.raises(Conflict) as refused:
        await setup.service.delete(setup.acme, Asset, "qi")
    assert refused.value.details == {"references": {"offers": ["cd"], "agreements": ["a-1"], "negotiations": ["n-1"]}}
    assert refused.value.message == (
        "asset 'qi' is still in use by offers cd; agreements a-1; negotiations n-1: first delete those offers and "
        "revoke those agreements (their transfers read the asset's data) and let those negotiations end")
    assert await setup.service.entry(setup.acme, Asset, "qi") is not None
    assert await setup.service.delete(setup.acme, Asset, "old")


async def test_another_participants_entries_are_not_found_and_stay(setup):
    await setup.service.add_policy(setup.acme, "rnd", OPEN, NOW)
    await setup.service.add_asset(setup.acme, Asset(id="qi"))
    await setup.service.add_definition(setup.acme, ContractDefinition(
        id="cd", access_policy_id="rnd", contract_policy_id="rnd", assets=["qi"]))
    for kind, entry_id in ((PolicyRecord, "rnd"), (Asset, "qi"), (ContractDefinition, "cd")):
        assert not await setup.service.delete(setup.sme, kind, entry_id)  # the API's 404
        assert await setup.service.entry(setup.acme, kind, entry_id) is not None


async def test_an_offer_naming_what_was_deleted_meanwhile_is_refused_in_the_write(setup):
    await setup.service.add_policy(setup.acme, "rnd", OPEN, NOW)
    offer = ContractDefinition(id="cd", access_policy_id="rnd", contract_policy_id="rnd", assets=["qi"])
    with pytest.raises(Conflict, match=r"^asset 'qi' was deleted while the offer was being added"):
        await setup.contracts.add_entry(setup.acme.id, offer)  # past the service's check, as in a race
    assert await setup.service.entries(setup.acme, ContractDefinition) == []
