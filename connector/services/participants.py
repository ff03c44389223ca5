"""The participants this node hosts: loading them at start, adding and removing them at run time, and
finding them by name, id or DID.

Every other service reaches a participant through the registry's lookups (``by_id``, ``by_name``), so a
participant added here is served at once and a removed one is unknown everywhere the next moment. What
else a removal must undo (open negotiations, transfers, receipts, admission places) is not the
registry's business: the services that hold such state register a *leaving* hook, called in order
before the participant's rows and folders are deleted.

A suspended participant (:meth:`ParticipantRegistry.suspend`) leaves the lookups the same way, so that every
service finds it no more, but nothing of it is deleted: *suspending* hooks stop its work in progress, and
*resumed* hooks take it up again (:meth:`ParticipantRegistry.resume`). Only its DID document is still
served (:meth:`ParticipantRegistry.local_did_document`, :meth:`ParticipantRegistry.hosted`), so that what it
signed keeps verifying. The public routes use :meth:`ParticipantRegistry.serving`, which answers 403 for it.

A key rotation (:meth:`ParticipantRegistry.rotate`) replaces a participant's keys in one step
(:meth:`ParticipantRuntime.rotated`), then has the vault's data keys re-wrapped under the new key and, once
none is left under the old one, destroys the old X25519 private key (also at start, after a rotation that
was killed before it got there).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from connector import filemodes
from connector.bootstrap import keys_dir, new_participant_keys, new_token, node_key, participant_did
from connector.config import Config
from connector.errors import BadRequest, ConfigError, Conflict, Forbidden, NotFound
from connector.identity import keys as keyfiles
from connector.identity.keys import ParticipantKeys, load_keys
from connector.logging import get_logger
from connector.participant import ParticipantRuntime
from connector.services import addresses
from connector.store.repository import Participant, SqliteRepository

log = get_logger(component="participants")

#: Called with a participant that is being removed, after it stopped being served and before its rows go.
Leaving = Callable[[ParticipantRuntime], Awaitable[None]]
#: Called with a participant that was suspended, resumed, or whose keys were replaced.
Changed = Callable[[ParticipantRuntime], Awaitable[None]]
#: Re-wraps a participant's vault data keys under its current key; returns how many could not be opened.
Rewrapping = Callable[[ParticipantRuntime], Awaitable[int]]
#: A suspension's reason, as much as is kept.
MAX_REASON = 500


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
        #: Suspended participants by name: hosted, not served.
        self._suspended: dict[str, ParticipantRuntime] = {}
        self._changing = asyncio.Lock()
        self._leaving: list[Leaving] = []
        self._suspending: list[Changed] = []
        self._resumed: list[Changed] = []
        self._rotated: list[Changed] = []
        self._rewrap: Rewrapping | None = None

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

    def hosted(self, name: str) -> ParticipantRuntime | None:
        """A participant hosted here, served or suspended."""
        return self._by_name.get(name) or self._suspended.get(name)

    def _hosted_here(self, name: str, *, not_own: str | None = None) -> ParticipantRuntime:
        """The participant *name* hosted here (404 if none); with *not_own* (what would be done to it), a 409
        if it is the node's own participant."""
        runtime = self.hosted(name)
        if runtime is None:
            raise NotFound(f"no participant {name!r} is hosted here")
        if not_own is not None and (name == self.config.participant.name or runtime is self.first()):
            raise Conflict(f"{name!r} is the node's own participant and cannot be {not_own}", path="name")
        return runtime

    def hosted_by_id(self, participant_id: str) -> ParticipantRuntime | None:
        """By id, served or suspended (for duties owed to others that go on during a suspension)."""
        found = self._by_id.get(participant_id)
        if found is None:
            found = next((p for p in self._suspended.values() if p.id == participant_id), None)
        return found

    def all_hosted(self) -> list[ParticipantRuntime]:
        """Every participant hosted here, served or suspended, in the order they were loaded or added."""
        return sorted([*self._by_name.values(), *self._suspended.values()],
                      key=lambda p: (p.record.created_at, p.name))

    def is_suspended(self, name: str) -> bool:
        return name in self._suspended

    def serving(self, name: str) -> ParticipantRuntime | None:
        """The participant *name* if it is served; None if no such participant is hosted; 403 if it is suspended
        (a peer learns that it is, not why: the reason is the operator's and the participant's)."""
        if name in self._suspended:
            raise Forbidden(f"participant {name!r} is suspended on this node")
        return self._by_name.get(name)

    def refuse_suspended(self, participant_id: str) -> None:
        """403 for the management token of a suspended participant, with the operator's reason."""
        found = next((p for p in self._suspended.values() if p.id == participant_id), None)
        if found is not None:
            reason = found.record.suspended_reason
            raise Forbidden(f"participant {found.name!r} is suspended on this node"
                            + (f": {reason}" if reason else "") + "; its tokens are refused until it is resumed")

    def local_did_document(self, did: str) -> dict[str, object] | None:
        """A hosted participant's DID document (also a suspended one's), answered without a network round trip."""
        found = self._by_did.get(did) or next((p for p in self._suspended.values() if p.did == did), None)
        return found.did_document() if found is not None else None

    def on_leaving(self, hook: Leaving) -> None:
        self._leaving.append(hook)

    def on_suspending(self, hook: Changed) -> None:
        """*hook* stops a participant's work in progress when it is suspended (after it left the lookups)."""
        self._suspending.append(hook)

    def on_resumed(self, hook: Changed) -> None:
        """*hook* takes a resumed participant's work up again (after it is served again)."""
        self._resumed.append(hook)

    def on_rotated(self, hook: Changed) -> None:
        """*hook* learns that a participant's keys were replaced (after the switch)."""
        self._rotated.append(hook)

    def rewrap_with(self, rewrap: Rewrapping) -> None:
        """How the vault's data keys of a participant are re-wrapped after a key rotation."""
        self._rewrap = rewrap

    # -- changes -----------------------------------------------------------------------------------------

    def _serve(self, record: Participant, keys: ParticipantKeys) -> ParticipantRuntime:
        runtime = ParticipantRuntime(record, keys, self.config.public_url)
        # Its own files folder: the only place in the data folder its assets may name (services.addresses).
        filemodes.make_dir(addresses.confinement(self.data_dir, record.name, {}).own)
        if record.suspended_at is not None:
            self._suspended[record.name] = runtime
            return runtime
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
                folder = keys_dir(self.data_dir, record.name)
                if sealing_key is not None:
                    await asyncio.to_thread(keyfiles.recover, folder, sealing_key)  # a rotation killed midway
                keys = load_keys(folder, sealing_key)
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
        for runtime in self.all_hosted():  # a rotation killed before its data keys were all re-wrapped
            await self.settle_keys(runtime)

    async def follow(self) -> int:
        """Take up what another node process sharing the store changed: participants added (served here too),
        removed (no longer served here), suspended or resumed (each with the same hooks as here), and their
        other settings. Returns how many changed. (A key rotation elsewhere is taken up at the next start.)"""
        changed = 0
        async with self._changing:
            records = {r.name: r for r in await self.repo.participants()}
            sealing_key = None
            for name, record in records.items():
                runtime = self.hosted(name)
                if runtime is None:
                    if sealing_key is None:
                        sealing_key = node_key(self.data_dir)
                    try:
                        keys = load_keys(keys_dir(self.data_dir, name), sealing_key)
                    except (OSError, ValueError) as exc:
                        log.warning("participant added elsewhere; its keys cannot be read yet", participant=name,
                                    error=str(exc))
                        continue
                    self._serve(record, keys)
                    changed += 1
                    continue
                was_suspended = name in self._suspended
                runtime.record = record
                if record.suspended_at is not None and not was_suspended:
                    del self._by_name[name]
                    self._by_id.pop(runtime.id, None)
                    self._by_did.pop(runtime.did, None)
                    self._suspended[name] = runtime
                    for hook in self._suspending:
                        await hook(runtime)
                    changed += 1
                elif record.suspended_at is None and was_suspended:
                    del self._suspended[name]
                    self._by_name[name] = runtime
                    self._by_id[runtime.id] = runtime
                    self._by_did[runtime.did] = runtime
                    for hook in self._resumed:
                        await hook(runtime)
                    changed += 1
            for runtime in [p for p in self.all_hosted() if p.name not in records]:
                self._suspended.pop(runtime.name, None)
                self._by_name.pop(runtime.name, None)
                self._by_id.pop(runtime.id, None)
                self._by_did.pop(runtime.did, None)
                for leaving in self._leaving:
                    await leaving(runtime)
                changed += 1
            if changed:
                self._counted(len(self._by_name))
        return changed

    async def add(
        self, name: str, *, legal_name: str, region: str, industry: str = "", contact: str = "",
        did: str | None = None,
    ) -> tuple[ParticipantRuntime, str]:
        """Host a new participant: keys sealed with the node key, its DID (a did:web under this node unless
        it brings one), a first management token (returned once). Served at once, without a restart."""
        async with self._changing:
            if self.hosted(name) is not None or await self.repo.participant_by_name(name) is not None:
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
            runtime = self._hosted_here(name, not_own="removed")
            # Unhosted first: from here on its endpoints answer 404, and no timer or delivery of its
            # processes finds it any more.
            self._suspended.pop(name, None)
            self._by_name.pop(name, None)
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

    async def settle_keys(self, runtime: ParticipantRuntime) -> int:
        """After a rotation (or at start, after one that was killed midway): re-wrap the participant's vault data
        keys under its current key; if none is left under an old one, destroy the old X25519 private keys.
        Returns how many data keys opened under none of its keys (those keep the old keys alive)."""
        if not runtime.keys.retired_agreement:
            return 0
        unopened = await self._rewrap(runtime) if self._rewrap is not None else 0
        if unopened:
            log.warning("data keys that open under none of the participant's keys; old keys kept",
                        participant=runtime.name, count=unopened)
            return unopened
        keys = runtime.keys
        folder = keys_dir(self.data_dir, runtime.name)
        runtime.rotated(await asyncio.to_thread(keyfiles.destroy_retired, folder, keys))
        log.info("old key-agreement keys destroyed", participant=runtime.name,
                 keys=[key_id for key_id, _ in keys.retired_agreement])
        return 0

    async def rotate(self, name: str) -> dict[str, object]:
        """Replace participant *name*'s signing and key-agreement keys with new ones.

        Its DID document lists the new keys as current at once and keeps the old public keys (what they signed
        keeps verifying); self-descriptions and every signature from now on use the new key; the vault's data
        keys are re-wrapped under the new key-agreement key. A did:key cannot be rotated: the key is the DID."""
        async with self._changing:
            runtime = self._hosted_here(name)
            if runtime.did.startswith("did:key:"):
                raise Conflict(f"{name!r} uses a did:key, which is its key: a new key would be a new DID",
                               path="name")
            sealing_key = node_key(self.data_dir, create=True)
            assert sealing_key is not None
            now = datetime.now(UTC).isoformat(timespec="seconds")
            old = runtime.keys
            folder = keys_dir(self.data_dir, name)
            try:
                keys = await asyncio.to_thread(keyfiles.rotate_keys, folder, sealing_key, now=now)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"keys of participant {name!r} could not be rotated: {exc}") from exc
            # The running node switches in one step: from here on every signature uses the new key.
            runtime.rotated(keys)
            log.info("participant keys rotated", participant=name, did=runtime.did,
                     signing=runtime.key_id, retired=[old.signing_id, old.agreement_id])
            for hook in self._rotated:
                await hook(runtime)
            unopened = await self.settle_keys(runtime)
        current = runtime.keys
        return {"name": name, "did": runtime.did, "signingKey": runtime.key_id,
                "agreementKey": f"{runtime.did}#{current.agreement_id}",
                "retiredKeys": [f"{runtime.did}#{r.id}" for r in current.retired],
                "fingerprints": current.fingerprints(), "unopenedDataKeys": unopened,
                "oldKeyAgreementKeysKept": [f"{runtime.did}#{key_id}" for key_id, _ in current.retired_agreement]}

    async def suspend(self, name: str, reason: str = "") -> dict[str, object]:
        """Stop serving participant *name* without deleting anything: its public endpoints answer 403 (its DID
        document stays), its tokens are refused (403), its processes' retries, deadlines, transfers and receipts
        stop. Survives a restart. The node's own participant cannot be suspended."""
        reason = "".join(c if c.isprintable() else " " for c in reason)[:MAX_REASON].strip()
        async with self._changing:
            runtime = self._hosted_here(name, not_own="suspended")
            if name in self._suspended:
                raise Conflict(f"participant {name!r} is already suspended", path="name")
            now = datetime.now(UTC).isoformat(timespec="seconds")
            await self.repo.set_suspended(runtime.id, now, reason)
            runtime.record = msgspec.structs.replace(runtime.record, suspended_at=now, suspended_reason=reason)
            del self._by_name[name]
            self._by_id.pop(runtime.id, None)
            self._by_did.pop(runtime.did, None)
            self._suspended[name] = runtime
            self._counted(len(self._by_name))
            for hook in self._suspending:
                await hook(runtime)
        log.info("participant suspended", participant=name, did=runtime.did)
        return {"name": name, "did": runtime.did, "state": "suspended", "suspendedAt": now, "reason": reason}

    async def resume(self, name: str) -> dict[str, object]:
        """Serve a suspended participant again and take its work up where it stopped."""
        async with self._changing:
            runtime = self._suspended.get(name)
            if runtime is None:
                if name in self._by_name:
                    raise Conflict(f"participant {name!r} is not suspended", path="name")
                raise NotFound(f"no participant {name!r} is hosted here")
            await self.repo.set_suspended(runtime.id, None)
            runtime.record = msgspec.structs.replace(runtime.record, suspended_at=None, suspended_reason="")
            del self._suspended[name]
            self._by_name[name] = runtime
            self._by_id[runtime.id] = runtime
            self._by_did[runtime.did] = runtime
            self._counted(len(self._by_name))
            for hook in self._resumed:
                await hook(runtime)
        log.info("participant resumed", participant=name, did=runtime.did)
        return {"name": name, "did": runtime.did, "state": "active"}

    async def set_platform_share(self, name: str, percent: str) -> dict[str, object]:
        """Set the host's share of what participant *name* earns as a provider under post-paid prices: a
        percentage from 0 to 100, written plainly (``"10"``, ``"2.5"``); ``"0"`` takes it off. Statements issued
        from now on show the split (``connector.services.settlement``); those issued before keep theirs. The
        node's own participant is the host and pays none."""
        from usage_policies.pricing import PricingError, amount_text, parse_decimal

        try:
            value = parse_decimal(percent, "percent")
        except PricingError as exc:
            raise BadRequest(str(exc), path="$.percent") from exc
        if value > 100:
            raise BadRequest(f"a platform share is a percentage from 0 to 100, not {percent}", path="$.percent")
        async with self._changing:
            runtime = self._hosted_here(name, not_own="charged a platform share")
            text = amount_text(value.normalize()) if value else None
            await self.repo.set_platform_share(runtime.id, text)
            runtime.record = msgspec.structs.replace(runtime.record, platform_share=text)
        log.info("platform share set", participant=name, percent=text or "0")
        return {"name": name, "platformShare": text or "0"}
