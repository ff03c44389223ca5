"""Upgrade: asset files from the node-wide ``files/`` folder move into their participant's own root.

Nodes once let every participant publish any file under ``files/``, so one tenant could name another's
files. Each participant now has ``files/NAME/`` (``connector.services.addresses``). At start, an asset
whose ``File`` address no longer resolves inside its participant's roots but did lie under the old shared
``files/`` is moved there (copied instead when assets of several participants name the same file, so no
one loses data), and its address is rewritten to match. An asset file that lay elsewhere is left where it
is, with a warning: it cannot be transferred until it is registered again from the participant's roots.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from connector import filemodes
from connector.errors import BadRequest
from connector.logging import get_logger
from connector.services import addresses
from connector.store.records import Asset

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.store.repository import ContractRepository

log = get_logger(component="files")


async def move_into_own_roots(
    participants: Collection[ParticipantRuntime], contracts: ContractRepository,
    confinement: Callable[[ParticipantRuntime], addresses.Confinement], files_dir: Path,
) -> int:
    """Move the asset files of every hosted participant in *participants* that lie outside its roots (as
    *confinement* gives them) but under the old shared *files_dir* (the data folder's ``files/``) into
    ``files/NAME/``, rewriting the assets in *contracts*; return how many assets were changed."""
    shared = await asyncio.to_thread(files_dir.resolve)
    plans: list[tuple[ParticipantRuntime, Asset, Path, Path, str]] = []
    for participant in participants:
        where = confinement(participant)
        for asset in await contracts.entries(participant.id, Asset):
            path = asset.data_address.get("path") if asset.data_address else None
            if str(asset.data_address.get("type", "")).lower() != "file" or not isinstance(path, str):
                continue
            try:
                addresses.confine(path, where)
                continue  # already where it belongs
            except BadRequest:
                pass
            raw = Path(path)
            try:
                old = (raw if raw.is_absolute() else shared / raw).resolve(strict=True)
            except (OSError, RuntimeError):
                old = None
            own_folders = {(shared / p.name).resolve() for p in participants}
            if (old is None or not old.is_file() or not old.is_relative_to(shared)
                    or any(old.is_relative_to(folder) for folder in own_folders)):
                log.warning("asset file outside its participant's data roots: it cannot be transferred until the "
                            "asset is registered again from them", participant=participant.name, asset=asset.id)
                continue
            relative = old.relative_to(shared)
            plans.append((participant, asset, old, where.own / relative,
                          str(relative) if not raw.is_absolute() else str(where.own / relative)))
    users = Counter(old for _, _, old, _, _ in plans)
    for participant, asset, old, target, new_path in plans:
        await asyncio.to_thread(_place, old, target, move=users[old] == 1)
        address = {**asset.data_address, "path": new_path}
        await contracts.replace_asset(participant.id, msgspec.structs.replace(asset, data_address=address))
        log.info("asset file moved into its participant's own folder", participant=participant.name,
                 asset=asset.id, path=str(target))
    return len(plans)


def _place(old: Path, target: Path, *, move: bool) -> None:
    filemodes.make_dir(target.parent)
    if target.exists():
        return  # placed by an earlier, interrupted start
    if move:
        os.replace(old, target)
    else:
        shutil.copy2(old, target)
