"""The participants this node hosts: loading them at start, adding and removing them at run time, and
finding them by name, id or DID.

Every other service reaches a participant through the registry's lookups (``by_id``, ``by_name``), so a
participant added here is served at once and a removed one is unknown everywhere the next moment. What
else a removal must undo (open negotiations, transfers, receipts, admission places) is not the
registry's business: the services that hold such state register a *leaving* hook, called in order
before the participant's rows and folders are deleted.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from connector import filemodes
from connector.bootstrap import keys_dir, new_participant_keys, new_token, node_key, participant_did
from connector.config import Config
from connector.errors import ConfigError, Conflict, NotFound
from connector.identity.keys import ParticipantKeys, load_keys
from connector.logging import get_logger
from connector.participant import ParticipantRuntime
from connector.services import addresses
from connector.store.repository import Participant, SqliteRepository

log = get_logger(component="participants")

#: Called with a participant that is being removed, after it stopped being served and before its rows go.
Leaving = Callable[[ParticipantRuntime], Awaitable[None]]


class ParticipantRegistry:
    """The hosted participants, each with its keys and endpoints (:class:`ParticipantRuntime`)."""

    def __init__(
        self, data_dir: Path, config: Config, repo: SqliteRepository, *,
        folders_of: Callable[[str], list[Path]], counted: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.repo = repo
        #: The folders a participant's removal deletes besides its keys (its own data root, its vault).
        self._folders_of = folders_of
        self._counted = counted
        self._by_name: dict[str, ParticipantRuntime] = {}
        self._by_id: dict[str, ParticipantRuntime] = {}
        self._by_did: dict[str, ParticipantRuntime] = {}
        self._changing = asyncio.Lock()
        self._leaving: list[Leaving] = []

    # -- lookups -----------------------------------------------------------------------------------------

    def by_name(self, name: str) -> ParticipantRuntime | None:
        return self._by_name.get(name)

    def by_id(self, participant_id: str) -> ParticipantRuntime | None:
        return self._by_id.get(participant_id)

    def by_did(self, did: str) -> ParticipantRuntime | None:
        return self._by_did.get(did)

    def first(self) -> ParticipantRuntime | None:
        """The node's own participant (the one ``tds init`` made): the first one loaded."""
        return next(iter(self._by_name.values()), None)

    def __iter__(self) -> Iterator[ParticipantRuntime]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def local_did_document(self, did: str) -> dict[str, object] | None:
        """A hosted participant's DID document, answered without a network round trip."""
        found = self._by_did.get(did)
        return found.did_document() if found is not None else None

    def on_leaving(self, hook: Leaving) -> None:
        self._leaving.append(hook)

    # -- changes -----------------------------------------------------------------------------------------

    def _serve(self, record: Participant, keys: ParticipantKeys) -> ParticipantRuntime:
        runtime = ParticipantRuntime(record, keys, self.config.public_url)
        # Its own files folder: the only place in the data folder its assets may name (services.addresses).
        filemodes.make_dir(addresses.confinement(self.data_dir, record.name, {}).own)
        self._by_name[record.name] = runtime
        self._by_id[record.id] = runtime
        self._by_did[record.did] = runtime
        self._counted(len(self._by_name))
        return runtime

    async def load(self) -> None:
        """Serve every participant in the database, each with its keys unsealed by the node key."""
        records = await self.repo.participants()
        if not records:
            raise ConfigError(f"the database in {self.data_dir} has no participant (was `tds init` run?)")
        try:
            sealing_key = node_key(self.data_dir)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"node key: {exc}") from exc
        for record in records:
            try:
                keys = load_keys(keys_dir(self.data_dir, record.name), sealing_key)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"keys of participant {record.name!r}: {exc}") from exc
            if record.did.startswith("did:web:") and not record.brought_did:
                expected = participant_did(self.config, keys, record.name, "web")
                if expected != record.did:
                    raise ConfigError(
                        f"participant {record.name!r} has DID {record.did} but node.public_url gives {expected}; "
                        "a did:web moves with the public URL",
                        path="node.public_url",
                    )
            self._serve(record, keys)

    async def add(
        self, name: str, *, legal_name: str, region: str, industry: str = "", contact: str = "",
        did: str | None = None,
    ) -> tuple[ParticipantRuntime, str]:
        """Host a new participant: keys sealed with the node key, its DID (a did:web under this node unless
        it brings one), a first management token (returned once). Served at once, without a restart."""
        async with self._changing:
            if name in self._by_name or await self.repo.participant_by_name(name) is not None:
                raise Conflict(f"participant {name!r} already exists", path="name")
            if keys_dir(self.data_dir, name).exists():
                raise Conflict(f"keys for {name!r} already exist in the data folder", path="name")
            if did is not None and did in self._by_did:
                raise Conflict(f"{did} is already hosted here", path="did")
            keys = await asyncio.to_thread(new_participant_keys, self.data_dir, name)
            own_did = participant_did(self.config, keys, name, "web")
            now = datetime.now(UTC).isoformat(timespec="seconds")
            record = Participant(id=name, name=name, did=did or own_did, legal_name=legal_name, region=region,
                                 industry=industry, contact=contact, created_at=now,
                                 brought_did=did is not None and did != own_did)
            token = new_token()
            try:
                await self.repo.add_participant(record, first_token=token)
            except BaseException as exc:
                # Not hosted after all: its keys must not block a later attempt under the same name.
                await asyncio.to_thread(shutil.rmtree, keys_dir(self.data_dir, name), True)
                if isinstance(exc, sqlite3.IntegrityError):
                    raise Conflict(f"participant {name!r} or DID {record.did} already exists", path="name") from exc
                raise
            runtime = self._serve(record, keys)
        log.info("participant added", participant=name, did=record.did)
        return runtime, token

    async def remove(self, name: str) -> dict[str, object]:
        """Stop hosting participant *name* and delete everything the node holds of it: its rows in every
        table that has a ``participant_id`` (tokens, catalog, negotiations, agreements, transfers, usage
        log, receipts …), its keys, its data root ``files/NAME/`` and its vault folder. The node's own
        participant (the one ``tds init`` made) cannot be removed. Irreversible: the participant's DID
        document, endpoints and tokens are gone at once. Returns what was removed."""
        async with self._changing:
            runtime = self._by_name.get(name)
            if runtime is None:
                raise NotFound(f"no participant {name!r} is hosted here")
            if name == self.config.participant.name or runtime is self.first():
                raise Conflict(f"{name!r} is the node's own participant and cannot be removed", path="name")
            # Unhosted first: from here on its endpoints answer 404, and no timer or delivery of its
            # processes finds it any more.
            del self._by_name[name]
            self._by_id.pop(runtime.id, None)
            self._by_did.pop(runtime.did, None)
            self._counted(len(self._by_name))
            for hook in self._leaving:
                await hook(runtime)
            rows = await self.repo.delete_participant(runtime.id)
            # Its own files/NAME/ only: a folder the operator assigned it in [data_roots] is the operator's.
            # The name passed NAME_RE when it was added (no '/', no '..'): still, never leave the data folder.
            inside = self.data_dir.resolve()
            folders = [f for f in (keys_dir(self.data_dir, name), *self._folders_of(name))
                       if f.resolve().is_relative_to(inside)]
            removed = [str(f.relative_to(self.data_dir)) for f in folders if f.exists()]
            for folder in folders:
                await asyncio.to_thread(shutil.rmtree, folder, True)
        log.info("participant removed", participant=name, did=runtime.did, rows=rows, folders=removed)
        return {"name": name, "did": runtime.did, "removedRows": rows, "removedFolders": removed}
