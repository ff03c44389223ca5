"""Moving asset files from the old node-wide ``files/`` into each participant's own ``files/NAME/``, on a
temporary data folder with in-memory assets — no node, no sockets."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from connector.identity.keys import ParticipantKeys
from connector.participant import ParticipantRuntime
from connector.services import addresses
from connector.services.legacy_files import move_into_own_roots
from connector.store.records import Asset
from connector.store.repository import Participant


class AssetShelf:
    """Each participant's assets, as ``ContractRepository.entries`` and ``replace_asset`` keep them."""

    def __init__(self) -> None:
        self.assets: dict[str, dict[str, Asset]] = {}
        self.replaced: list[tuple[str, str]] = []

    def add(self, participant_id: str, asset_id: str, address: dict[str, object]) -> None:
        self.assets.setdefault(participant_id, {})[asset_id] = Asset(id=asset_id, data_address=address)

    def path(self, participant_id: str, asset_id: str) -> object:
        return self.assets[participant_id][asset_id].data_address.get("path")

    async def entries(self, participant_id: str, kind: type[Asset]) -> list[Asset]:
        assert kind is Asset
        return list(self.assets.get(participant_id, {}).values())

    async def replace_asset(self, participant_id: str, asset: Asset) -> None:
        self.assets[participant_id][asset.id] = asset
        self.replaced.append((participant_id, asset.id))


def runtime(name: str) -> ParticipantRuntime:
    record = Participant(id=name, name=name, did=f"did:web:example.org:participants:{name}", legal_name=name.title(),
                         region="CN")
    return ParticipantRuntime(record, ParticipantKeys.generate(), "https://example.org")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for name in ("acme", "bolt"):
        (tmp_path / addresses.FILES / name).mkdir(parents=True)
    return tmp_path


@pytest.fixture
def participants() -> list[ParticipantRuntime]:
    return [runtime("acme"), runtime("bolt")]


@pytest.fixture
def shelf() -> AssetShelf:
    return AssetShelf()


async def move(data_dir: Path, participants: list[ParticipantRuntime], shelf: AssetShelf) -> int:
    def confinement(participant: ParticipantRuntime) -> addresses.Confinement:
        return addresses.confinement(data_dir, participant.name, {})

    return await move_into_own_roots(participants, shelf, confinement, data_dir / addresses.FILES)  # type: ignore[arg-type]


def shared_file(data_dir: Path, relative: str, content: bytes = b"lot,defects\n") -> Path:
    path = data_dir / addresses.FILES / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


async def test_a_relative_path_in_the_shared_folder_moves_and_stays_relative(data_dir, participants, shelf):
    old = shared_file(data_dir, "reports/qi.csv")
    shelf.add("acme", "qi", {"type": "File", "path": "reports/qi.csv"})
    assert await move(data_dir, participants, shelf) == 1
    assert (data_dir / "files" / "acme" / "reports" / "qi.csv").read_bytes() == b"lot,defects\n"
    assert not old.exists()
    assert shelf.path("acme", "qi") == "reports/qi.csv"  # now relative to files/acme/


async def test_an_absolute_path_in_the_shared_folder_is_rewritten_to_the_new_place(data_dir, participants, shelf):
    old = shared_file(data_dir, "qi.csv")
    shelf.add("acme", "qi", {"type": "File", "path": str(old), "sha256": "kept"})
    await move(data_dir, participants, shelf)
    assert shelf.path("acme", "qi") == str(data_dir / "files" / "acme" / "qi.csv")
    assert shelf.assets["acme"]["qi"].data_address["sha256"] == "kept"  # the rest of the address stays


async def test_a_file_several_participants_name_is_copied_to_each(data_dir, participants, shelf):
    old = shared_file(data_dir, "common.csv")
    shelf.add("acme", "a", {"type": "File", "path": "common.csv"})
    shelf.add("bolt", "b", {"type": "File", "path": "common.csv"})
    assert await move(data_dir, participants, shelf) == 2
    for name in ("acme", "bolt"):
        assert (data_dir / "files" / name / "common.csv").read_bytes() == b"lot,defects\n"
    assert old.exists()  # no one loses data


async def test_an_asset_already_in_its_own_folder_is_left_alone(data_dir, participants, shelf):
    (data_dir / "files" / "acme" / "qi.csv").write_bytes(b"x\n")
    shelf.add("acme", "qi", {"type": "File", "path": "qi.csv"})
    assert await move(data_dir, participants, shelf) == 0
    assert shelf.replaced == []


async def test_another_participants_own_file_is_not_taken(data_dir, participants, shelf):
    theirs = data_dir / "files" / "bolt" / "plan.csv"
    theirs.write_bytes(b"bolt's plan\n")
    shelf.add("acme", "sneaky", {"type": "File", "path": str(theirs)})
    assert await move(data_dir, participants, shelf) == 0
    assert theirs.read_bytes() == b"bolt's plan\n" and shelf.replaced == []
    assert not (data_dir / "files" / "acme" / "bolt" / "plan.csv").exists()


async def test_a_file_outside_the_shared_folder_stays_where_it_is(data_dir, participants, shelf, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "qi.csv"
    elsewhere.write_bytes(b"x\n")
    shelf.add("acme", "qi", {"type": "File", "path": str(elsewhere)})
    assert await move(data_dir, participants, shelf) == 0
    assert elsewhere.exists() and shelf.path("acme", "qi") == str(elsewhere)


@pytest.mark.parametrize("address", [{"type": "HttpData", "url": "https://backend.example/qi"},
                                     {"type": "File"}, {}])
async def test_addresses_that_name_no_file_path_are_skipped(data_dir, participants, shelf, address):
    shelf.add("acme", "qi", address)
    assert await move(data_dir, participants, shelf) == 0


async def test_a_file_placed_by_an_interrupted_start_is_kept_and_the_asset_rewritten(data_dir, participants, shelf):
    shared_file(data_dir, "qi.csv", b"old copy\n")
    (data_dir / "files" / "acme" / "qi.csv").write_bytes(b"placed before\n")
    address = {"type": "File", "path": str(data_dir / "files" / "qi.csv")}
    shelf.add("acme", "qi", address)
    assert await move(data_dir, participants, shelf) == 1
    assert (data_dir / "files" / "acme" / "qi.csv").read_bytes() == b"placed before\n"
    assert shelf.assets["acme"]["qi"] == msgspec.structs.replace(
        Asset(id="qi", data_address=address), data_address={**address, "path": str(data_dir / "files" / "acme" /
                                                                                       "qi.csv")})


async def test_only_the_participants_given_are_moved(data_dir, participants, shelf):
    shared_file(data_dir, "qi.csv")
    shelf.add("bolt", "qi", {"type": "File", "path": "qi.csv"})
    assert await move(data_dir, participants[:1], shelf) == 0
    assert shelf.replaced == []
