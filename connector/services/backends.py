"""Assets behind the provider's own HTTP backend: fetched into a local snapshot at registration.

An asset registered with ``{"type": "HttpData", "url": "https://backend.internal/…"}`` is fetched once,
through the outbound guard (a backend on a private network must be in ``node.trusted_networks``; none may
be one of the node's own listeners, whose answers would be published as the asset's data), into a
snapshot file in the participant's own files (``files/NAME/.snapshots/``), named by the SHA-256 of its
bytes. The asset's data address becomes that ``File`` (keeping the ``origin`` URL), its manifest is made
from the snapshot, and consumers verify what they receive against it as for any file.
``POST …/assets/{id}/refresh`` fetches again: bytes that changed become a new snapshot, hence a new version
with a new manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector import filemodes
from connector.errors import BadRequest, PayloadTooLarge, PeerError
from connector.services.ports import BackendReader

PIECE = 1 << 20
#: Inside the participant's own files folder (so its snapshots are its own files, and no one else's).
SNAPSHOTS = ".snapshots"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def is_http(address: dict[str, Any]) -> bool:
    kind = address.get("type")
    return isinstance(kind, str) and kind.lower() in ("httpdata", "http")


async def snapshot(client: BackendReader, own_files: Path, asset_id: str, url: str, *, limit: int) -> dict[str, Any]:
    """Fetch *url* through *client* into a snapshot under the participant's own files folder *own_files*,
    at most *limit* bytes (``node.max_snapshot_bytes``); return the ``File`` data address of it (with its
    origin)."""
    if not isinstance(url, str) or not url:
        raise BadRequest("an HttpData address needs a url", path="dataAddress.url")
    folder = own_files / SNAPSHOTS / _SAFE.sub("_", asset_id)
    await asyncio.to_thread(filemodes.make_dir, folder)
    partial = folder / f".{uuid.uuid4().hex}.part"
    digest, size = hashlib.sha256(), 0
    try:
        async with client.stream(url, backend=True) as resp:
            if resp.status != 200:
                raise BadRequest(f"the backend answered {resp.status} for {url}", path="dataAddress.url")
            with os.fdopen(filemodes.open_private(partial, os.O_WRONLY | os.O_TRUNC), "wb") as out:
                async for piece in resp.content.iter_chunked(PIECE):
                    size += len(piece)
                    if size > limit:
                        raise PayloadTooLarge(f"the backend's data exceeds node.max_snapshot_bytes ({limit})")
                    digest.update(piece)
                    await asyncio.to_thread(out.write, piece)
                await asyncio.to_thread(os.fsync, out.fileno())
    except PeerError as exc:
        raise BadRequest(f"the backend could not be read: {exc.message}", path="dataAddress.url") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    final = folder / f"{digest.hexdigest()}.bin"
    os.replace(partial, final)
    return {"type": "File", "path": str(final), "origin": url, "sha256": digest.hexdigest(), "size": size,
            "fetchedAt": datetime.now(UTC).isoformat(timespec="seconds")}
