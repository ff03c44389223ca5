"""Where a provider's bytes come from: a registry of data address types (a Protocol per type).

An asset's ``dataAddress`` names its type; ``File`` is a local file inside its participant's own data
roots: ``files/NAME/`` in the node's data folder, plus any folder the node's operator assigns to that
participant alone (``[data_roots]`` in ``tds.toml``). Paths are resolved with symlinks followed and must
end inside one of those roots: ``..`` components, absolute paths elsewhere and symlinks that lead out
are refused. Whatever the roots say, nothing else of the node's data folder (keys, database, vault,
other participants' files) and nothing in another participant's assigned roots is ever an asset's file:
a hosted tenant cannot publish another tenant's bytes or the node's secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from connector.errors import BadRequest

#: The folder of the data folder that holds each participant's own files (``files/NAME/``).
FILES = "files"


class Confinement(msgspec.Struct, frozen=True):
    """Where one participant's asset files may lie (see the module docstring)."""

    #: The participant's roots: its own ``files/NAME/`` first (relative paths start there), then the
    #: folders assigned to it.
    roots: tuple[Path, ...]
    #: The node's data folder: nothing in it outside the participant's own ``files/NAME/``.
    node_dir: Path
    #: Other participants' roots: a file in one of them is refused, unless a root of this participant inside
    #: it holds the file (nested roots: the innermost decides).
    others: tuple[Path, ...] = ()

    @property
    def own(self) -> Path:
        return self.roots[0]


def confinement(data_dir: Path, name: str, assigned: Mapping[str, list[str]]) -> Confinement:
    """Participant *name*'s confinement on a node with data folder *data_dir* and ``[data_roots]`` *assigned*."""

    def roots_of(who: str) -> tuple[Path, ...]:
        extra = (Path(p) if Path(p).is_absolute() else data_dir / p for p in assigned.get(who, []))
        return (data_dir / FILES / who, *extra)

    others = tuple(root for who in assigned if who != name for root in roots_of(who))
    return Confinement(roots_of(name), data_dir, others)


class AddressType(Protocol):
    def resolve(self, address: dict[str, Any], where: Confinement) -> Path:
        """The local file holding the asset's bytes; raise :class:`BadRequest` naming the problem."""


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.is_relative_to(folder.resolve())
    except OSError:
        return False


def confine(path_text: str, where: Confinement) -> Path:
    raw = Path(path_text)
    if ".." in raw.parts:
        raise BadRequest("dataAddress.path must not contain '..'", path="dataAddress.path")
    candidate = raw if raw.is_absolute() else where.own / raw
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise BadRequest(f"dataAddress.path {path_text!r} does not exist", path="dataAddress.path") from exc
    if _inside(resolved, where.own):
        return resolved
    outside = BadRequest(f"dataAddress.path {path_text!r} is outside this participant's data roots "
                         f"({where.own} and the folders assigned to it)", path="dataAddress.path")
    if _inside(resolved, where.node_dir):
        raise outside  # the node's own folders or another participant's files: never, whatever the roots say
    # Where assigned roots nest, a file belongs to the participant of the innermost root that holds it.
    holders = [(len(root.resolve().parts), mine) for roots, mine in ((where.roots[1:], True), (where.others, False))
               for root in roots if _inside(resolved, root)]
    if holders and max(holders)[1]:
        return resolved
    raise outside


class LocalFile:
    def resolve(self, address: dict[str, Any], where: Confinement) -> Path:
        path = address.get("path")
        if not isinstance(path, str) or not path:
            raise BadRequest("a File data address needs a path", path="dataAddress.path")
        resolved = confine(path, where)
        if not resolved.is_file():
            raise BadRequest(f"dataAddress.path {path!r} is not a regular file", path="dataAddress.path")
        return resolved


#: Data address types by lower-case name (``File`` and ``file`` are the same type).
REGISTRY: dict[str, AddressType] = {"file": LocalFile()}


def resolve(address: dict[str, Any], where: Confinement) -> Path:
    kind = address.get("type")
    handler = REGISTRY.get(kind.lower()) if isinstance(kind, str) else None
    if handler is None:
        raise BadRequest(f"unknown data address type {kind!r} (known: {', '.join(REGISTRY)})",
                         path="dataAddress.type")
    return handler.resolve(address, where)
