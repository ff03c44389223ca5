"""The peer directory: per hosted participant, the participants it knows of, without a central server.

Each entry is the subject's own latest signed self-description (its proof checked against the subject's DID
document, resolved through the node's resolver), what it says (DID, DSP endpoint, legal name, region,
industry: self-asserted), who it was learned from, when it was last seen and when it expires. Entries come
from bootstrap peers (``[discovery] bootstrap``), from ``tds peer add`` (a handshake, like ``tds peer
verify``) and from gossip (``connector.services.gossip``); they go when they expire (not re-issued by their
subject within ``item_ttl_s``), or when the directory is full and a newcomer needs the room: then the entries
learned by gossip go, those of the source that brought the most first, seen longest ago first
(:func:`connector.protocol.gossip.evictions`); entries verified here (by handshake, bootstrap peers) never
go for a newcomer, and keep that standing when a newer self-description of theirs comes by gossip. What
decides whether an item is taken is the pure core ``connector.protocol.gossip``; this module keeps its views,
checks signatures and persists.

``Directory.known(participant_id)`` is the list the catalog crawler reads: every participant the given one
knows of, itself and the node's other participants excluded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from connector.config import DiscoverySection
from connector.errors import TdsError
from connector.identity import credentials
from connector.identity import did as dids
from connector.identity.resolver import proof_key_id
from connector.logging import get_logger
from connector.protocol import gossip as core
from connector.services.ports import PeerFetcher, Resolver
from connector.store.directory import DirectoryEntry, DirectoryRepository

if TYPE_CHECKING:
    from connector.identity.trust import PeerClaims
    from connector.participant import ParticipantRuntime

__all__ = ["Admitted", "Directory", "DirectoryEntry", "limits_of"]

log = get_logger(component="directory")
#: ``learned_from`` of entries verified directly (a handshake, or the subject's own gossip), of bootstrap peers.
HANDSHAKE = "handshake"
BOOTSTRAP = "bootstrap"
#: Entries verified here: never let go to make room for a newcomer.
VERIFIED_HERE = frozenset({HANDSHAKE, BOOTSTRAP})
#: Signature checks run at once for one message.
VERIFY_CONCURRENCY = 8
DSP_SUFFIX = "/api/dsp/2025-1"

VerifyPeer = Callable[["ParticipantRuntime", str], Awaitable[tuple[credentials.Subject, str]]]
ClaimsOf = Callable[[str, str], Awaitable["PeerClaims | None"]]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def limits_of(settings: DiscoverySection) -> core.Limits:
    return core.Limits(max_item_bytes=settings.max_item_bytes, max_items_per_message=settings.max_items_per_message,
                       max_message_bytes=settings.max_message_bytes, max_entries=settings.max_entries,
                       item_ttl_s=settings.item_ttl_s)


class Admitted(msgspec.Struct, frozen=True):
    """What became of the items of one message: DIDs taken, and refusals by reason."""

    accepted: list[str]
    refused: dict[str, int]


class Directory:
    """The hosted participants' directories: in memory for gossip, in the store for restarts."""

    def __init__(
        self, repo: DirectoryRepository, resolver: Resolver, client: PeerFetcher, *, settings: DiscoverySection,
        participants: Callable[[], Iterable[ParticipantRuntime]], verify_peer: VerifyPeer,
        claims_of: ClaimsOf | None = None, refused: Callable[[str], None] | None = None,
        evicted: Callable[[int], None] | None = None, clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.repo = repo
        self.resolver = resolver
        self.client = client
        self.settings = settings
        self.limits = limits_of(settings)
        self.participants = participants
        self.verify_peer = verify_peer
        self.claims_of = claims_of
        self.refused = refused or (lambda reason: None)
        #: Told how many entries a full directory let go to make room for newcomers.
        self.evicted = evicted or (lambda count: None)
        self.clock = clock
        self._views: dict[str, core.View] = {}
        self._entries: dict[str, dict[str, DirectoryEntry]] = {}
        #: Own items, re-issued well before they expire: by DID.
        self._own: dict[str, core.Item] = {}

    # -- who is hosted, who is discoverable ------------------------------------------------------------

    def hidden(self, participant: ParticipantRuntime) -> bool:
        return not self.settings.discoverable or participant.name in self.settings.hidden

    def hidden_dids(self) -> set[str]:
        return {p.did for p in self.participants() if self.hidden(p)}

    def view(self, participant_id: str) -> core.View:
        found = self._views.get(participant_id)
        if found is None:
            found = self._views[participant_id] = core.View(self.limits)
            self._entries[participant_id] = {}
        found.own = frozenset(p.did for p in self.participants())
        return found

    # -- lifecycle -------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read every hosted participant's stored directory back (dropping what expired meanwhile)."""
        now = self.clock()
        for participant in self.participants():
            view = self.view(participant.id)
            expired: list[str] = []
            for entry in await self.repo.entries(participant.id):
                screened = core.screen(entry.self_description, now=now, limits=self.limits)
                if screened.item is None:
                    expired.append(entry.did)
                    continue
                view.put(screened.item)
                self._entries[participant.id][entry.did] = entry
            await self.repo.remove(participant.id, expired)
        self.refresh_own(now)

    def forget(self, participant_id: str) -> None:
        self._views.pop(participant_id, None)
        self._entries.pop(participant_id, None)

    def reissue_own(self, did: str) -> None:
        """A hosted participant's keys changed: its own item is issued anew (with the new keys) when next sent."""
        self._own.pop(did, None)

    def refresh_own(self, now: datetime) -> None:
        """Put each discoverable hosted participant's own item into every view, re-issued when a quarter of
        ``item_ttl_s`` has passed (so that it never expires while its node runs); hidden ones leave."""
        hosted = list(self.participants())
        refresh = timedelta(seconds=self.settings.item_ttl_s / 4)
        for p in hosted:
            if self.hidden(p):
                self._own.pop(p.did, None)
                continue
            item = self._own.get(p.did)
            if item is None or now - item.issued >= refresh or now < item.issued:
                signer = p.signer
                document = credentials.issue(p.subject(), signer.key, now=now, key_id=signer.key_id)
                screened = core.screen(document, now=now, limits=self.limits)
                if screened.item is not None:
                    self._own[p.did] = screened.item
        for p in hosted:
            view = self.view(p.id)
            for other in hosted:
                own = self._own.get(other.did)
                held = view.items.get(other.did)
                if own is None:
                    if held is not None:
                        view.remove(other.did)
                elif held is None or held.version != own.version:
                    view.put(own)

    async def expire(self, now: datetime) -> int:
        """Drop expired entries everywhere; return how many went."""
        gone = 0
        for participant_id, view in list(self._views.items()):
            dids_gone = [d for d in view.expire(now) if d not in view.own]
            for did in dids_gone:
                self._entries[participant_id].pop(did, None)
            await self.repo.remove(participant_id, dids_gone)
            gone += len(dids_gone)
        return gone

    # -- what is known ---------------------------------------------------------------------------------

    def known(self, participant_id: str) -> list[DirectoryEntry]:
        """Every participant *participant_id* learned of and that has not expired, by DID. The node's other
        participants are not listed (a tenant's listings show nothing of another's); peers learn of them by
        gossip like of any other."""
        now = credentials.utc_text(self.clock())
        found = self._entries.get(participant_id, {})
        return [found[d] for d in sorted(found) if found[d].expires_at > now]

    async def listing(self, participant: ParticipantRuntime) -> list[dict[str, Any]]:
        """The directory as the management API shows it: each entry with the claims the participant presented
        to this one, if any (counted ones only; ``None``: it presented nothing)."""
        out: list[dict[str, Any]] = []
        for entry in self.known(participant.id):
            row = {_camel(k): v for k, v in msgspec.to_builtins(entry).items() if k != "self_description"}
            row["claims"] = await self._claims(participant.id, entry.did)
            out.append(row)
        return out

    async def _claims(self, participant_id: str, did: str) -> dict[str, Any] | None:
        if self.claims_of is None:
            return None
        claims = await self.claims_of(participant_id, did)
        if claims is None:
            return None
        return {
            "memberships": sorted({m.value.data_space for m in claims.memberships}),
            "verifiedRegion": claims.region.value.region if claims.region else None,
            "legalEntity": claims.legal_entity.value.legal_name if claims.legal_entity else None,
            "certifications": sorted({c.value.certification_level for c in claims.certifications}),
            "notCounted": len(claims.not_counted),
        }

    @staticmethod
    def _entry_of(item: core.Item, subject: credentials.Subject, learned_from: str, now: str) -> DirectoryEntry:
        return DirectoryEntry(
            did=item.did, dsp_endpoint=subject.dsp_endpoint, legal_name=subject.legal_name, region=subject.region,
            industry=subject.industry, issued_at=item.issued_text, expires_at=credentials.utc_text(item.expires),
            digest=item.digest, learned_from=learned_from, last_seen=now, self_description=dict(item.document))

    # -- taking items in -------------------------------------------------------------------------------

    async def admit(self, participant: ParticipantRuntime, documents: list[Any], *, learned_from: str,
                    over_limit: int = 0) -> Admitted:
        """Screen, verify and keep the self-descriptions of one message, each on its own: a bad one never
        hides the good ones beside it. *over_limit*: items of the message beyond its bound (not read). When
        the directory is full, a newcomer takes the place of the entry least worth keeping, if any may go."""
        now = self.clock()
        view = self.view(participant.id)
        held = self._entries[participant.id]
        refused: Counter[str] = Counter()
        if over_limit:
            refused[core.Refusal.OVER_LIMIT] += over_limit
        candidates: dict[str, core.Item] = {}
        confirmed: list[str] = []
        may_evict: bool | None = None
        for document in documents:
            screened = core.screen(document, now=now, limits=self.limits)
            item = screened.item
            if item is None:
                refused[str(screened.refusal)] += 1
                continue
            verdict = view.consider(item)
            if verdict is core.Refusal.OVER_LIMIT:
                if may_evict is None:
                    may_evict = any(e.learned_from not in VERIFIED_HERE for e in held.values())
                verdict = True if may_evict else verdict
            if isinstance(verdict, core.Refusal):
                refused[verdict] += 1
            elif verdict and (item.did not in candidates or candidates[item.did].version < item.version):
                candidates[item.did] = item
            elif verdict is False and item.did in held and self._source(learned_from, item) in VERIFIED_HERE:
                confirmed.append(item.did)  # the same item, now from its subject or a bootstrap peer
        gate = asyncio.Semaphore(VERIFY_CONCURRENCY)

        async def checked(item: core.Item) -> tuple[core.Item, credentials.Subject | None]:
            async with gate:
                return item, await self._verify(item, now)

        results = await asyncio.gather(*(checked(i) for i in candidates.values()))
        subjects: dict[str, credentials.Subject] = {}
        for item, subject in results:
            if subject is None:
                refused[core.Refusal.BAD_SIGNATURE] += 1
            else:
                subjects[item.did] = subject
        # Decided without awaiting from here on: another message may have changed the view meanwhile.
        verified = [i for i in candidates.values() if i.did in subjects]
        gone = self._make_room(participant.id, view, [i.did for i in verified if i.did not in view.items])
        taken, refusals = view.admit(verified)
        refused.update(refusals)
        accepted: list[DirectoryEntry] = []
        stamp = credentials.utc_text(now)
        for item in taken:
            source = self._source(learned_from, item)
            before = held.get(item.did)
            if before is not None and before.learned_from in VERIFIED_HERE and source not in VERIFIED_HERE:
                source = before.learned_from  # verified here once: it stays so
            entry = self._entry_of(item, subjects[item.did], source, stamp)
            held[item.did] = entry
            accepted.append(entry)
        changed = list(accepted)
        for did in confirmed:
            known = held.get(did)
            if known is not None and known.learned_from not in VERIFIED_HERE:
                held[did] = msgspec.structs.replace(known, learned_from=self._source(learned_from, known),
                                                    last_seen=stamp)
                changed.append(held[did])
        await self.repo.save(participant.id, changed)
        await self.repo.remove(participant.id, gone)
        for reason, count in refused.items():
            for _ in range(count):
                self.refused(str(reason))
        if refused:
            log.info("gossip items refused", participant=participant.name, source=learned_from,
                     refused=dict(refused))
        return Admitted([e.did for e in accepted], {str(k): v for k, v in refused.items()})

    @staticmethod
    def _source(learned_from: str, item: core.Item | DirectoryEntry) -> str:
        """Where an item came from, as its entry says: a subject sending its own item is verified directly."""
        return HANDSHAKE if learned_from == item.did else learned_from

    def _make_room(self, participant_id: str, view: core.View, newcomers: list[str]) -> list[str]:
        """Let go of as many entries learned by gossip as *newcomers* need room in a full directory (the least
        worth keeping: :func:`core.evictions`); return their DIDs."""
        need = len(view.items) + len(set(newcomers)) - self.limits.max_entries
        if need <= 0:
            return []
        held = self._entries[participant_id]
        coming = set(newcomers)
        gone = core.evictions(((e.did, e.learned_from, e.last_seen) for e in held.values()
                               if e.learned_from not in VERIFIED_HERE and e.did not in coming), need)
        for did in gone:
            view.remove(did)
            del held[did]
        if gone:
            self.evicted(len(gone))
            log.info("directory full: entries let go for newcomers", participant=participant_id, count=len(gone))
        return gone

    async def _verify(self, item: core.Item, now: datetime) -> credentials.Subject | None:
        try:
            subject = core.verify(item, await self.resolver.resolve(item.did, key_id=proof_key_id(item.document)),
                                  now=now)
        except (credentials.SelfDescriptionError, dids.DidError, TdsError) as exc:
            log.info("gossip item does not verify", did=item.did[:200], reason=str(exc)[:300])
            return None
        if not subject.dsp_endpoint.startswith(("http://", "https://")):
            return None
        return subject

    async def seen(self, participant: ParticipantRuntime, did: str) -> None:
        """*did* answered or called *participant* just now."""
        entry = self._entries.get(participant.id, {}).get(did)
        if entry is not None:
            stamp = credentials.utc_text(self.clock())
            self._entries[participant.id][did] = msgspec.structs.replace(entry, last_seen=stamp)
            await self.repo.touch(participant.id, did, stamp)
