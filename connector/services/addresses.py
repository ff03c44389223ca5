"""Where a provider's bytes come from: a registry of data address types (a Protocol per type).

An asset's ``dataAddress`` names its type; ``File`` is a local file under one of the node's data roots
(``node.data_roots``, default ``DATA_DIR/files``). Paths are resolved with symlinks followed and must end
inside a root: ``..`` components, absolute paths elsewhere and symlinks that lead out are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from connector.errors import BadRequest


class AddressType(Protocol):
    def resolve(self, address: dict[str, Any], roots: list[Path]) -> Path:
        """The local file holding the asset's bytes; raise :class:`BadRequest` naming the problem."""


def confine(path_text: str, roots: list[Path]) -> Path:
    if not roots:
        raise BadRequest("this node has no data roots configured", path="dataAddress.path")
    raw = Path(path_text)
    if ".." in raw.parts:
        raise BadRequest("dataAddress.path must not contain '..'", path="dataAddress.path")
    candidate = raw if raw.is_absolute() else roots[0] / raw
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise BadRequest(f"dataAddress.path {path_text!r} does not exist", path="dataAddress.path") from exc
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    raise BadRequest(f"dataAddress.path {path_text!r} is outside the node's data roots", path="dataAddress.path")


class LocalFile:
    def resolve(self, address: dict[str, Any], roots: list[Path]) -> Path:
        path = address.get("path")
        if not isinstance(path, str) or not path:
            raise BadRequest("a File data address needs a path", path="dataAddress.path")
        resolved = confine(path, roots)
        if not resolved.is_file():
            raise BadRequest(f"dataAddress.path {path!r} is not a regular file", path="dataAddress.path")
        return resolved


#: Data address types by lower-case name (``File`` and ``file`` are the same type).
REGISTRY: dict[str, AddressType] = {"file": LocalFile()}


def resolve(address: dict[str, Any], roots: list[Path]) -> Path:
    kind = address.get("type")
    handler = REGISTRY.get(kind.lower()) if isinstance(kind, str) else None
    if handler is None:
        raise BadRequest(f"unknown data address type {kind!r} (known: {', '.join(REGISTRY)})",
                         path="dataAddress.type")
    return handler.resolve(address, roots)


def roots_of(data_dir: Path, configured: list[str]) -> list[Path]:
    return [(p if p.is_absolute() else data_dir / p) for p in map(Path, configured or ["files"])]
