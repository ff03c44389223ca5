"""The registry of hosted participants on a real data folder and database file, without a node or sockets:
loading, adding (and what a failed add leaves), lookups, and what a removal deletes and whom it tells."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.bootstrap import DB_FILE, init_node, keys_dir, store_location
from connector.config import load_config
from connector.errors import ConfigError, Conflict, NotFound
from connector.participant import ParticipantRuntime
from connector.services.participants import ParticipantRegistry
from connector.store.db import Store
from connector.store.repository import SqliteRepository


class Setup:
    def __init__(self, data_dir: Path, store: Store) -> None:
        self.data_dir = data_dir
        self.repo = SqliteRepository(store)
        self.counts: list[int] = []
        self.left: list[str] = []
        self.registry = ParticipantRegistry(
            data_dir, load_config(data_dir), self.repo, counted=self.counts.append,
            folders_of=lambda name: [data_dir / "files" / name, data_dir / "vault" / name])

        async def leaving(p: ParticipantRuntime) -> None:
            # Called while the participant is no longer served and before its rows go.
            assert self.registry.by_name(p.name) is None
            assert await self.repo.participant_by_name(p.name) is not None
            self.left.append(p.name)

        self.registry.on_leaving(leaving)


@pytest.fixture
async def setup(tmp_path: Path):
    data_dir = tmp_path / "node"
    init_node(data_dir, name="acme", region="CN-GD", port=8181, dev_mode=True)
    store = Store(store_location(data_dir, load_config(data_dir)))
    await store.open()
    yield Setup(data_dir, store)
    await store.close()


async def test_load_serves_the_participants_of_the_database(setup):
    await setup.registry.load()
    acme = setup.registry.by_name("acme")
    assert acme is not None and setup.registry.first() is acme
    assert setup.registry.by_id(acme.id) is acme and setup.registry.by_did(acme.did) is acme
    assert setup.registry.local_did_document(acme.did)["id"] == acme.did
    assert setup.registry.local_did_document("did:web:elsewhere.example") is None
    assert (setup.data_dir / "files" / "acme").is_dir()
    assert setup.counts[-1] == 1 and len(setup.registry) == 1


@pytest.mark.sqlite_store  # the database file removed
async def test_load_refuses_an_empty_database(tmp_path):
    data_dir = tmp_path / "node"
    init_node(data_dir, name="acme", port=8181, dev_mode=True)
    (data_dir / DB_FILE).unlink()
    store = Store(data_dir / DB_FILE)
    await store.open()
    try:
        registry = ParticipantRegistry(data_dir, load_config(data_dir), SqliteRepository(store),
                                       folders_of=lambda _: [])
        with pytest.raises(ConfigError, match="has no participant"):
            await registry.load()
    finally:
        await store.close()


async def test_a_did_web_that_no_longer_matches_the_public_url_is_refused(setup):
    text = (setup.data_dir / "tds.toml").read_text().replace("http://127.0.0.1:8181", "https://moved.example")
    (setup.data_dir / "tds.toml").write_text(text)
    registry = ParticipantRegistry(setup.data_dir, load_config(setup.data_dir), setup.repo, folders_of=lambda _: [])
    with pytest.raises(ConfigError, match="moves with the public URL"):
        await registry.load()


async def test_an_added_participant_is_served_at_once_with_a_working_first_token(setup):
    await setup.registry.load()
    sme, token = await setup.registry.add("sme-one", legal_name="SME One Ltd.", region="CN-GD")
    assert setup.registry.by_name("sme-one") is sme and setup.registry.by_did(sme.did) is sme
    assert sme.did == "did:web:127.0.0.1%3A8181:participants:sme-one"
    found = await setup.repo.find_token(token)
    assert found is not None and found.participant_id == sme.id and not found.admin
    assert keys_dir(setup.data_dir, "sme-one").is_dir()
    assert setup.counts[-1] == 2


@pytest.mark.parametrize("name, did, what", [
    ("acme", None, "already exists"),
    ("sme-two", "acme-did", "already hosted"),
])
async def test_a_second_participant_by_the_same_name_or_did_is_a_conflict(setup, name, did, what):
    await setup.registry.load()
    if did == "acme-did":
        did = setup.registry.by_name("acme").did
    with pytest.raises(Conflict, match=what):
        await setup.registry.add(name, legal_name="X", region="CN", did=did)
    assert len(setup.registry) == 1


async def test_an_add_that_fails_in_the_database_leaves_no_keys_behind(setup):
    await setup.registry.load()

    async def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    setup.repo.add_participant = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await setup.registry.add("sme-one", legal_name="SME One Ltd.", region="CN-GD")
    assert not keys_dir(setup.data_dir, "sme-one").exists()
    assert setup.registry.by_name("sme-one") is None


async def test_removal_unhosts_tells_the_services_and_deletes_rows_and_folders(setup):
    await setup.registry.load()
    sme, token = await setup.registry.add("sme-one", legal_name="SME One Ltd.", region="CN-GD")
    (setup.data_dir / "vault" / "sme-one").mkdir(parents=True)
    (setup.data_dir / "files" / "sme-one" / "lot.csv").write_text("lot,defects\n")
    removed = await setup.registry.remove("sme-one")
    assert setup.left == ["sme-one"]
    assert setup.registry.by_name("sme-one") is None and setup.registry.by_did(sme.did) is None
    assert await setup.repo.find_token(token) is None
    assert await setup.repo.participant_by_name("sme-one") is None
    assert removed["removedRows"] >= 2  # the participant and its token
    assert sorted(removed["removedFolders"]) == ["files/sme-one", "keys/sme-one", "vault/sme-one"]
    for folder in ("files/sme-one", "keys/sme-one", "vault/sme-one"):
        assert not (setup.data_dir / folder).exists()
    assert (setup.data_dir / "files" / "acme").is_dir()
    # The name is free again: added anew, it starts with nothing of before.
    again, _ = await setup.registry.add("sme-one", legal_name="SME One Ltd.", region="CN-GD")
    assert again.did == sme.did and again is not sme


async def test_the_nodes_own_participant_and_strangers_cannot_be_removed(setup):
    await setup.registry.load()
    with pytest.raises(Conflict, match="node's own participant"):
        await setup.registry.remove("acme")
    with pytest.raises(NotFound):
        await setup.registry.remove("nobody")
    assert setup.left == [] and setup.registry.by_name("acme") is not None


async def test_a_removal_never_deletes_outside_the_data_folder(setup, tmp_path):
    outside = tmp_path / "operator-data"
    outside.mkdir()
    (outside / "keep.csv").write_text("x")
    setup.registry._folders_of = lambda name: [outside]  # a misconfigured hook must not reach out
    await setup.registry.load()
    await setup.registry.add("sme-one", legal_name="SME One Ltd.", region="CN-GD")
    removed = await setup.registry.remove("sme-one")
    assert (outside / "keep.csv").exists()
    assert removed["removedFolders"] == ["keys/sme-one"]
