"""Key rotation on disk: the keyring, the DID document it gives, the vault's data keys re-wrapped, and what a
rotation or a re-wrap killed at any step leaves (always one complete set of keys; no data key lost)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from connector.errors import Unauthorized
from connector.identity import did as dids
from connector.identity import keys as keyfiles
from connector.identity.keys import ParticipantKeys, load_keys, load_node_key, rotate_keys, save_keys
from connector.identity.resolver import DidResolver
from connector.payload import vaultfile
from connector.services import vault

DID = "did:web:node.example:participants:acme"
NOW = "2026-01-02T03:04:05+00:00"


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, bytes, ParticipantKeys]:
    node_key = load_node_key(tmp_path, create=True)
    keys = ParticipantKeys.generate()
    save_keys(tmp_path / "acme", keys, node_key)
    return tmp_path / "acme", node_key, keys


def document(keys: ParticipantKeys) -> dict:
    return dids.did_document(DID, signing_multikey=keys.signing_multikey, agreement_multikey=keys.agreement_multikey,
                             signing_fragment=keys.signing_id, agreement_fragment=keys.agreement_id,
                             retired=keys.retired)


def test_a_rotation_makes_new_current_keys_and_keeps_the_old_public_keys(folder):
    path, node_key, first = folder
    rotated = rotate_keys(path, node_key, now=NOW)
    assert (rotated.signing_id, rotated.agreement_id) == ("key-3", "key-4")
    assert rotated.fingerprints() != first.fingerprints()
    assert [(r.id, r.kind, r.multikey, r.retired) for r in rotated.retired] == [
        ("key-1", "ed25519", first.signing_multikey, NOW), ("key-2", "x25519", first.agreement_multikey, NOW)]
    loaded = load_keys(path, node_key)
    assert loaded.fingerprints() == rotated.fingerprints() and loaded.signing_id == "key-3"
    # the old X25519 private key is kept (sealed) until the vault no longer needs it; the old Ed25519 one is gone
    assert [(i, bytes(k)) for i, k in loaded.retired_agreement] == [("key-2", bytes(first.agreement))]
    sealed = (path / keyfiles.retired_file("key-2")).read_bytes()
    assert bytes(first.agreement) not in sealed and bytes(first.signing) not in b"".join(
        p.read_bytes() for p in path.iterdir())
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in path.iterdir())
    again = rotate_keys(path, node_key, now=NOW)
    assert (again.signing_id, again.agreement_id) == ("key-5", "key-6") and len(again.retired) == 4
    keyfiles.destroy_retired(path, again)
    assert load_keys(path, node_key).retired_agreement == () and not list(path.glob("retired-*"))


def test_the_did_document_lists_old_signing_keys_for_assertions_only(folder):
    path, node_key, first = folder
    rotated = rotate_keys(path, node_key, now=NOW)
    doc = document(rotated)
    assert doc["authentication"] == [f"{DID}#key-3"]
    assert doc["assertionMethod"] == [f"{DID}#key-3", f"{DID}#key-1"]
    assert doc["keyAgreement"] == [f"{DID}#key-4"] and dids.agreement_key(doc) == rotated.agreement_multikey
    assert dids.verification_key(doc, f"{DID}#key-1", "assertionMethod") == bytes(first.verify_key)
    assert dids.verification_key(doc, f"{DID}#key-3", "authentication") == bytes(rotated.verify_key)
    with pytest.raises(dids.DidError, match="not listed for authentication"):
        dids.verification_key(doc, f"{DID}#key-1", "authentication")  # an old key authenticates no request
    with pytest.raises(dids.DidError):
        dids.verification_key(doc, f"{DID}#key-2", "assertionMethod")  # an X25519 key signs nothing


def test_a_folder_without_a_keyring_holds_first_keys(folder):
    path, node_key, first = folder
    loaded = load_keys(path, node_key)
    assert (loaded.signing_id, loaded.agreement_id, loaded.retired) == ("key-1", "key-2", ())
    assert document(loaded) == dids.did_document(DID, signing_multikey=first.signing_multikey,
                                                 agreement_multikey=first.agreement_multikey)


class Killed(Exception):
    pass


@pytest.mark.parametrize("step", range(4))
def test_a_rotation_killed_at_any_rename_leaves_one_complete_set_of_keys(folder, monkeypatch, step):
    """Renames in order: the kept old X25519 copy, the keyring (the commit point), the signing key, the
    key-agreement key. Killed before the commit point, the old keys stay; after it, the new ones."""
    path, node_key, first = folder
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) - 1 == step:
            raise Killed
        real(src, dst)

    monkeypatch.setattr(keyfiles.os, "replace", replace)
    with pytest.raises(Killed):
        rotate_keys(path, node_key, now=NOW)
    monkeypatch.setattr(keyfiles.os, "replace", real)
    committed = step >= 2
    # a reader (a tool beside the running node) sees one consistent set at once, before any recovery
    seen = load_keys(path, node_key)
    assert (seen.signing_id == "key-3") is committed
    assert (seen.fingerprints() == first.fingerprints()) is not committed
    keyfiles.recover(path, node_key)
    after = load_keys(path, node_key)
    assert after.fingerprints() == seen.fingerprints() and after.signing_id == seen.signing_id
    assert not [p.name for p in path.iterdir() if p.name.endswith((".new", ".tmp"))]
    assert bool(list(path.glob("retired-*"))) is committed
    # and the next rotation goes through
    assert rotate_keys(path, node_key, now=NOW).signing_id == ("key-5" if committed else "key-3")


# -- the vault's data keys --------------------------------------------------------------------------------


def vault_with(root: Path, key: bytes, agreements: list[str]) -> dict[str, bytes]:
    """A participant's vault folder with one small sealed file per agreement; their plaintexts."""
    plain = {}
    for agreement in agreements:
        folder = root / vault.safe_name(agreement)
        folder.mkdir(parents=True)
        with vault.open_partial(folder / ".t.part", key, agreement, chunk_size=1024, received=0) as out:
            out.write(0, agreement.encode() * 3, last=True)
        vault.place(folder / ".t.part", folder / "data")
        plain[agreement] = agreement.encode() * 3
    return plain


def read(root: Path, keys, agreement: str) -> bytes:
    with vault.open_reader(root / vault.safe_name(agreement) / "data", keys, agreement) as reader:
        return b"".join(vault.read_all(reader))


def test_rewrap_moves_every_data_key_under_the_new_vault_key(tmp_path):
    old, new = (vaultfile.vault_key(bytes(PrivateKey.generate()), "acme") for _ in range(2))
    root = tmp_path / "vault" / "acme"
    plain = vault_with(root, old, ["urn:a1", "urn:a2", "urn:a3"])
    assert vault.rewrap(root, [new, old]) == vault.Rewrap(3, 0)
    assert all(read(root, new, a) == p for a, p in plain.items())
    assert vault.rewrap(root, [new, old]) == vault.Rewrap(0, 0)  # nothing left to do
    with pytest.raises(vault.DataKeyError):
        vault.read_key(root / vault.safe_name("urn:a1"), old, "urn:a1")


def test_a_rewrap_killed_midway_loses_no_data_key_and_finishes_when_run_again(tmp_path, monkeypatch):
    old, new = (vaultfile.vault_key(bytes(PrivateKey.generate()), "acme") for _ in range(2))
    root = tmp_path / "vault" / "acme"
    plain = vault_with(root, old, ["urn:a1", "urn:a2", "urn:a3"])
    real, done = os.replace, []

    def replace(src, dst):
        if Path(dst).name == vault.KEY_FILE and len(done) == 1:
            raise Killed  # the second data key's new wrap is written beside the old one, not yet renamed
        done.append(dst)
        real(src, dst)

    monkeypatch.setattr(vault.os, "replace", replace)
    with pytest.raises(Killed):
        vault.rewrap(root, [new, old])
    monkeypatch.setattr(vault.os, "replace", real)
    # every file still opens with the keys the node holds (the new one, and the old one it keeps until done)
    assert all(read(root, [new, old], a) == p for a, p in plain.items())
    assert vault.rewrap(root, [new, old]) == vault.Rewrap(2, 0)
    assert all(read(root, new, a) == p for a, p in plain.items())
    assert not list(root.rglob("*.tmp"))


def test_a_data_key_that_opens_under_no_key_is_counted_and_left(tmp_path):
    old, new, other = (vaultfile.vault_key(bytes(PrivateKey.generate()), "acme") for _ in range(3))
    root = tmp_path / "vault" / "acme"
    vault_with(root, other, ["urn:x"])
    before = (root / "urn_x" / vault.KEY_FILE).read_bytes()
    assert vault.rewrap(root, [new, old]) == vault.Rewrap(0, 1)
    assert (root / "urn_x" / vault.KEY_FILE).read_bytes() == before


# -- peers: the DID resolver's cache ----------------------------------------------------------------------


class Web:
    """A did:web server holding the current document of one DID; counts fetches."""

    def __init__(self, doc: dict) -> None:
        self.doc, self.fetched = doc, 0

    async def get_json(self, url: str) -> dict:
        self.fetched += 1
        return self.doc


async def test_a_cached_document_is_fetched_again_for_a_key_it_does_not_list_at_most_once_per_interval(folder):
    path, node_key, _ = folder
    web, clock = Web(document(load_keys(path, node_key))), [100.0]
    resolver = DidResolver(web, dev_mode=True, refresh_interval_s=30, clock=lambda: clock[0])
    await resolver.verification_key(f"{DID}#key-1", "authentication")
    web.doc = document(rotate_keys(path, node_key, now=NOW))  # the peer rotated; our copy is still fresh
    assert await resolver.verification_key(f"{DID}#key-1", "assertionMethod")  # a known key: no fetch
    assert web.fetched == 1
    key = await resolver.verification_key(f"{DID}#key-3", "authentication")  # unknown: fetched again
    assert web.fetched == 2 and bytes(key) == bytes(load_keys(path, node_key).verify_key)
    for _ in range(5):  # made-up key ids cost at most one fetch per interval (and per DID)
        with pytest.raises(Unauthorized, match="is not listed for authentication"):
            await resolver.verification_key(f"{DID}#key-99", "authentication")
    assert web.fetched == 2
    clock[0] += 31
    for _ in range(5):
        with pytest.raises(Unauthorized, match="is not listed for authentication"):
            await resolver.verification_key(f"{DID}#key-99", "authentication")
    assert web.fetched == 3


# -- the registry at start: a rotation killed before its re-wrap is finished --------------------------------


async def test_a_start_after_a_rotation_killed_before_its_rewrap_finishes_it(tmp_path):
    from connector.bootstrap import init_node, keys_dir, node_key, store_location
    from connector.config import load_config
    from connector.services.participants import ParticipantRegistry
    from connector.store.db import Store
    from connector.store.repository import SqliteRepository

    data_dir = tmp_path / "node"
    init_node(data_dir, name="acme", region="CN-GD", port=8181, dev_mode=True)
    folder, sealing = keys_dir(data_dir, "acme"), node_key(data_dir)
    first = load_keys(folder, sealing)
    root = data_dir / "vault" / "acme"
    plain = vault_with(root, vaultfile.vault_key(bytes(first.agreement), "acme"), ["urn:a1", "urn:a2"])
    rotate_keys(folder, sealing, now=NOW)  # the node was killed here: keys committed, data keys not re-wrapped
    store = Store(store_location(data_dir, load_config(data_dir)))
    await store.open()
    try:
        registry = ParticipantRegistry(data_dir, load_config(data_dir), SqliteRepository(store),
                                       folders_of=lambda _: [])
        keep = vault.Vault(data_dir, key_of=vault.vault_keys, stop_receiving=None)  # type: ignore[arg-type]
        registry.rewrap_with(keep.rewrap)
        await registry.load()
        acme = registry.by_name("acme")
        assert acme is not None and acme.key_id.endswith("#key-3") and acme.keys.retired_agreement == ()
        assert not list(folder.glob("retired-*"))
        current = vaultfile.vault_key(bytes(acme.keys.agreement), "acme")
        assert all(read(root, current, a) == p for a, p in plain.items())
        assert acme.did_document()["assertionMethod"][1].endswith("#key-1")
    finally:
        await store.close()
