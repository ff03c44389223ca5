"""What a participant publishes: its assets, usage policies and contract definitions (the catalog entries).

Peers see these through :mod:`connector.services.catalog`; this module keeps them consistent as they are
written: a policy must be valid ODRL, a contract definition may name only policies and assets that exist,
and an asset's data must lie where its participant may keep files (:mod:`connector.services.addresses`).
An ``HttpData`` asset is fetched once into a snapshot under the participant's own files (and again on
refresh); each version of an asset's bytes gets its manifest when it is published, not when a peer first
asks for it. A ``File`` asset offered for computation only (the data sandbox) is imported once into its
read-only table instead (``connector.services.sandbox.import_table``); its bytes get no manifest, since they
never leave, and deleting the asset deletes the table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from connector.errors import BadRequest, Conflict, NotFound
from connector.participant import ParticipantRuntime
from connector.protocol.policy import PolicySyntaxError, check_policy
from connector.services import addresses, backends
from connector.services import sandbox as sandboxes
from connector.services.ports import BackendReader
from connector.store.records import Asset, ContractDefinition, PolicyRecord
from connector.store.repository import ContractRepository

Entry = TypeVar("Entry", Asset, PolicyRecord, ContractDefinition)
#: Computes and stores the manifest of an asset's current bytes (``TransferService.manifest_for``).
ManifestFor = Callable[[ParticipantRuntime, Asset, Path], Awaitable[object]]
#: What the management API and the CLI call each kind of entry (a contract definition is an offer there).
NOUNS: dict[type[Any], str] = {Asset: "asset", PolicyRecord: "policy", ContractDefinition: "offer"}
#: How many ids of what still needs an entry a refusal names.
NAMED = 10


def _some(ids: list[str]) -> str:
    """``a, b, c`` — or the first NAMED of them and how many more."""
    more = f" and {len(ids) - NAMED} more" if len(ids) > NAMED else ""
    return ", ".join(ids[:NAMED]) + more


class Publishing:
    """A participant's catalog entries. *client* fetches ``HttpData`` snapshots (at most *snapshot_limit*
    bytes); *confinement* says where a participant's files may lie; *manifest_for* records the manifest
    of an asset's bytes."""

    def __init__(
        self, contracts: ContractRepository, client: BackendReader, *,
        confinement: Callable[[ParticipantRuntime], addresses.Confinement], manifest_for: ManifestFor,
        snapshot_limit: int, sandbox_max_rows: int = sandboxes.MAX_TABLE_ROWS,
        tables_changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.contracts = contracts
        #: Called once a sandbox asset's table is published or deleted (the node's sandbox workers start their
        #: spares, or end them with the last table).
        self.tables_changed = tables_changed
        self.client = client
        self.confinement = confinement
        self.manifest_for = manifest_for
        self.snapshot_limit = snapshot_limit
        self.sandbox_max_rows = sandbox_max_rows

    async def entries(self, participant: ParticipantRuntime, kind: type[Entry]) -> list[Entry]:
        return await self.contracts.entries(participant.id, kind)

    async def entry(self, participant: ParticipantRuntime, kind: type[Entry], entry_id: str) -> Entry | None:
        found: Entry | None = await self.contracts.entry(participant.id, kind, entry_id)
        return found

    async def delete(self, participant: ParticipantRuntime, kind: type[Entry], entry_id: str) -> bool:
        """Delete a catalog entry; False when there is none. 409 naming what still needs it: the offers that
        name a policy; the offers, agreements (not revoked) and starting negotiations of an asset. An offer
        goes at once: peers no longer see it, and the agreements made under it keep their own copy of its
        terms."""
        asset = await self.contracts.entry(participant.id, Asset, entry_id) if kind is Asset else None
        references = await self.contracts.delete_unreferenced(participant.id, kind, entry_id, did=participant.did)
        if references is None:
            return False
        if references:
            named = "; ".join(f"{what} {_some(ids)}" for what, ids in references.items())
            steps = {"offers": "delete those offers",
                     "agreements": "revoke those agreements (their transfers read the asset's data)",
                     "negotiations": "let those negotiations end"}
            first = " and ".join(steps[what] for what in references)
            err = Conflict(f"{NOUNS[kind]} {entry_id!r} is still in use by {named}: first {first}")
            err.details = {"references": references}  # type: ignore[attr-defined]
            raise err
        if asset is not None and asset.sandbox is not None:
            sandboxes.remove_table(sandboxes.table_path(self.confinement(participant).own, asset))
            if self.tables_changed is not None:
                await self.tables_changed()
        return True

    async def add_asset(self, participant: ParticipantRuntime, asset: Asset, *,
                        sandbox: sandboxes.SandboxImport | None = None) -> Asset:
        """Publish *asset*; its data address is checked (and an ``HttpData`` one fetched) first. 409 when an
        asset with its id exists. With *sandbox*: offered for computation only, its CSV imported into the data
        sandbox's table now (a ``File`` asset only)."""
        if sandbox is not None:
            return await self._add_sandboxed(participant, asset, sandbox)
        path = None
        if asset.data_address:
            if backends.is_http(asset.data_address):
                if await self.contracts.entry(participant.id, Asset, asset.id) is not None:
                    raise Conflict(f"asset {asset.id!r} already exists", path="id")
                address = await backends.snapshot(self.client, self.confinement(participant).own, asset.id,
                                                  asset.data_address.get("url", ""), limit=self.snapshot_limit)
                asset = msgspec.structs.replace(asset, data_address=address)
            path = addresses.resolve(asset.data_address, self.confinement(participant))
        await self.contracts.add_entry(participant.id, asset)
        if path is not None:
            await self.manifest_for(participant, asset, path)
        return asset

    async def _add_sandboxed(self, participant: ParticipantRuntime, asset: Asset, spec: sandboxes.SandboxImport
                             ) -> Asset:
        if str(asset.data_address.get("type", "")).lower() != "file":
            raise BadRequest("an asset offered for computation only (sandbox) is a File: a CSV under this "
                             "participant's data roots", path="dataAddress.type")
        where = self.confinement(participant)
        path = addresses.resolve(asset.data_address, where)
        if await self.contracts.entry(participant.id, Asset, asset.id) is not None:
            raise Conflict(f"asset {asset.id!r} already exists", path="id")
        kept = await sandboxes.import_table(where.own, asset.id, path, spec, max_rows=self.sandbox_max_rows)
        asset = msgspec.structs.replace(asset, sandbox=kept)
        try:
            await self.contracts.add_entry(participant.id, asset)
        except BaseException:
            sandboxes.remove_table(sandboxes.table_path(where.own, asset))
            raise
        if self.tables_changed is not None:
            await self.tables_changed()
        return asset

    async def refresh_asset(self, participant: ParticipantRuntime, asset_id: str) -> tuple[Asset, bool]:
        """Fetch an ``HttpData`` asset again from its backend; changed bytes become a new version. Returns the
        asset as it is now and whether it changed."""
        asset = await self.contracts.entry(participant.id, Asset, asset_id)
        if asset is None:
            raise NotFound("no such asset")
        origin = asset.data_address.get("origin")
        if not isinstance(origin, str):
            raise BadRequest("this asset is not fetched from an HTTP backend (no origin)", path="dataAddress")
        address = await backends.snapshot(self.client, self.confinement(participant).own, asset.id, origin,
                                          limit=self.snapshot_limit)
        changed = address["sha256"] != asset.data_address.get("sha256")
        if changed:
            asset = msgspec.structs.replace(asset, data_address=address)
            await self.contracts.replace_asset(participant.id, asset)
            await self.manifest_for(participant, asset, addresses.resolve(address, self.confinement(participant)))
        return asset, changed

    async def add_policy(self, participant: ParticipantRuntime, policy_id: str, policy: dict[str, Any],
                         created_at: str) -> PolicyRecord:
        """Publish an ODRL policy (given an ``@id`` from *policy_id* if it has none); 400 naming the first
        problem when it is not valid ODRL."""
        if "@id" not in policy and "uid" not in policy:
            policy = {**policy, "@id": f"urn:tds:policy:{policy_id}"}
        try:
            check_policy(policy)
        except PolicySyntaxError as exc:
            problems = getattr(exc, "problems", [])
            first = problems[0][0] if problems else ""
            raise BadRequest(f"policy is not valid ODRL: {exc}", path=f"$.policy{first.lstrip('$')}") from exc
        record = PolicyRecord(id=policy_id, policy=policy, created_at=created_at)
        await self.contracts.add_entry(participant.id, record)
        return record

    async def add_definition(self, participant: ParticipantRuntime, definition: ContractDefinition
                             ) -> ContractDefinition:
        """Publish a contract definition; 400 naming the field when a policy or an asset it names is missing."""
        for field, policy_id in (("accessPolicyId", definition.access_policy_id),
                                 ("contractPolicyId", definition.contract_policy_id)):
            if await self.contracts.entry(participant.id, PolicyRecord, policy_id) is None:
                raise BadRequest(f"no policy {policy_id!r}", path=f"$.{field}")
        known = {a.id for a in await self.contracts.entries(participant.id, Asset)}
        for i, asset_id in enumerate(definition.assets):
            if asset_id not in known:
                raise BadRequest(f"no asset {asset_id!r}", path=f"$.assets[{i}]")
        await self.contracts.add_entry(participant.id, definition)
        return definition
