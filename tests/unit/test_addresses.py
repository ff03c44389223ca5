"""Where an asset's file may lie (connector.services.addresses), on a real folder tree without a node: a
participant's own files and its assigned roots, and every way out of them a tenant might try."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.errors import BadRequest
from connector.services import addresses


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    data = tmp_path / "node"
    # The assigned roots lie outside the data folder (shared/ beside node/): inside it, only files/NAME/ counts.
    for folder in ("node/files/acme", "node/files/sme", "node/keys/acme", "node/shared-inside",
                   "shared/acme-root/sme-inner", "shared/sme-root"):
        (tmp_path / folder).mkdir(parents=True)
    for file in ("node/files/acme/qi.csv", "node/files/sme/secret.csv", "node/keys/acme/signing.key", "node/tds.db",
                 "node/shared-inside/d.csv", "shared/acme-root/a.csv", "shared/acme-root/sme-inner/b.csv",
                 "shared/sme-root/c.csv"):
        (tmp_path / file).write_text("x")
    (tmp_path / "elsewhere.csv").write_text("x")
    return data


def where(data: Path, name: str = "acme") -> addresses.Confinement:
    shared = data.parent / "shared"
    assigned = {"acme": [str(shared / "acme-root"), "shared-inside"],
                "sme": [str(shared / "sme-root"), str(shared / "acme-root/sme-inner")]}
    return addresses.confinement(data, name, assigned)


def file(path: str) -> dict[str, str]:
    return {"type": "File", "path": path}


@pytest.mark.parametrize("path, expected", [
    ("qi.csv", "files/acme/qi.csv"),                       # relative: in its own files
    ("{data}/files/acme/qi.csv", "files/acme/qi.csv"),      # absolute, inside its own files
    ("{shared}/acme-root/a.csv", "../shared/acme-root/a.csv"),  # a root assigned to it
])
def test_a_participants_own_files_and_assigned_roots_resolve(tree, path, expected):
    resolved = addresses.resolve(file(path.format(data=tree, shared=tree.parent / "shared")), where(tree))
    assert resolved == (tree / expected).resolve()


@pytest.mark.parametrize("path", [
    "{data}/files/sme/secret.csv",            # another tenant's own files
    "{shared}/sme-root/c.csv",                # another tenant's assigned root
    "{shared}/acme-root/sme-inner/b.csv",     # nested: the innermost root (the other tenant's) decides
    "{data}/shared-inside/d.csv",             # a root assigned inside the data folder counts for nothing
    "{data}/keys/acme/signing.key",           # the node's secrets, even its own participant's keys
    "{data}/tds.db",                          # the database
    "{data}/../elsewhere.csv",                # '..'
    "../../tds.db",                           # '..', relative
])
def test_every_way_out_is_refused(tree, path):
    with pytest.raises(BadRequest) as refused:
        addresses.resolve(file(path.format(data=tree, shared=tree.parent / "shared")), where(tree))
    assert refused.value.path == "dataAddress.path"


def test_an_absolute_path_outside_the_data_folder_and_the_roots_is_refused(tree):
    with pytest.raises(BadRequest, match="outside this participant's data roots"):
        addresses.resolve(file(str(tree.parent / "elsewhere.csv")), where(tree))


def test_a_symlink_that_leads_out_is_refused_and_one_that_stays_in_resolves(tree):
    (tree / "files/acme/out.csv").symlink_to(tree / "files/sme/secret.csv")
    (tree / "files/acme/in.csv").symlink_to(tree / "files/acme/qi.csv")
    with pytest.raises(BadRequest, match="outside"):
        addresses.resolve(file("out.csv"), where(tree))
    assert addresses.resolve(file("in.csv"), where(tree)) == (tree / "files/acme/qi.csv").resolve()


def test_the_other_tenant_reaches_its_nested_root_but_not_the_outer_one(tree):
    sme = where(tree, "sme")
    shared = tree.parent / "shared"
    assert addresses.resolve(file(str(shared / "acme-root/sme-inner/b.csv")), sme).name == "b.csv"
    with pytest.raises(BadRequest):
        addresses.resolve(file(str(shared / "acme-root/a.csv")), sme)


@pytest.mark.parametrize("address, problem", [
    ({"type": "S3", "path": "x"}, "unknown data address type"),
    ({"path": "qi.csv"}, "unknown data address type"),
    ({"type": "File"}, "needs a path"),
    ({"type": "file", "path": "missing.csv"}, "does not exist"),
    ({"type": "File", "path": "."}, "not a regular file"),
])
def test_malformed_addresses_are_refused_naming_the_problem(tree, address, problem):
    with pytest.raises(BadRequest, match=problem):
        addresses.resolve(address, where(tree))
