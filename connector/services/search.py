"""Federated search: each hosted participant's catalog cache of the offers its known peers show it.

There is no central catalog. On an interval (``[discovery] crawl_interval_s``), and when asked
(``POST /search/crawl``), the crawler reads, for each hosted participant, the catalog of every peer that
participant knows (*known*: the peer directory, or the peers it verified), with signed DSP catalog requests
as that participant (``FederationService.peer_catalog``). So each provider's access policies still decide
what is seen: two participants of one node may see different offers of the same provider, and each searches
only its own cache.

A provider's offers are replaced in one transaction (offers it no longer shows are dropped); providers no
longer known are forgotten. Everything is bounded: offers kept per provider and per participant, the time
one provider's catalog and one whole crawl may take, providers read at once. A peer that fails (unreachable,
refusing, answering with something that is not its catalog) is logged and counted; its offers seen before
stay, with their age, until it is no longer known.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from connector.config import DiscoverySection
from connector.errors import Conflict, NotFound, TdsError
from connector.logging import get_logger
from connector.protocol.catalog_entries import CatalogRefused, read_catalog
from connector.store.catalog_cache import CachedOffer, CatalogCache, Crawl, Provider, SearchPage, SearchQuery

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime

log = get_logger(component="search")

#: The providers a participant knows: (participant) -> providers (did, DSP endpoint, what they state).
Known = Callable[["ParticipantRuntime"], Awaitable[list[Provider]]]
#: A provider's catalog as a participant sees it: (participant, DSP endpoint) -> the catalog JSON.
PeerCatalog = Callable[["ParticipantRuntime", str], Awaitable[Any]]


def provider_of(entry: Any) -> Provider:
    """A :class:`Provider` from a verified peer or a directory entry (``did``, ``dsp_endpoint``, and what it
    states of itself where the entry has it)."""
    return Provider(did=entry.did, dsp_endpoint=entry.dsp_endpoint,
                    legal_name=getattr(entry, "legal_name", "") or "", region=getattr(entry, "region", "") or "",
                    industry=getattr(entry, "industry", "") or "")


class CrawlReport(msgspec.Struct):
    """What one crawl of one participant did."""

    participant: str
    providers: int = 0
    offers: int = 0
    failed: dict[str, str] = msgspec.field(default_factory=dict)
    skipped: int = 0
    over_bound: int = 0
    not_reached: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"participant": self.participant, "providers": self.providers, "offers": self.offers,
                "failed": self.failed, "skipped": self.skipped, "overBound": self.over_bound,
                "notReached": self.not_reached, "seconds": round(self.seconds, 3)}


class Counters(msgspec.Struct):
    """Counted across crawls (exported as metrics by the node)."""

    crawls: int = 0
    failures: int = 0
    offers_skipped: int = 0
    offers_over_bound: int = 0


class SearchService:
    """Crawls each participant's known providers into its catalog cache, and searches that cache."""

    def __init__(
        self, cache: CatalogCache, peer_catalog: PeerCatalog, known: Known, settings: DiscoverySection, *,
        participants: Callable[[], Iterable[ParticipantRuntime]] = tuple,
        clock: Callable[[], float] = time.time, counted: Callable[[str, int], None] | None = None,
    ) -> None:
        self.cache = cache
        self.peer_catalog = peer_catalog
        self.known = known
        self.settings = settings
        self.participants = participants
        self.clock = clock
        self.counters = Counters()
        self.counted = counted
        self._task: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    # -- crawling ----------------------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            setattr(self.counters, name, getattr(self.counters, name) + n)
            if self.counted is not None:
                self.counted(name, n)

    async def crawl(self, participant: ParticipantRuntime) -> CrawlReport:
        """Read the catalogs of the providers *participant* knows into its cache (one crawl at a time each)."""
        lock = self._locks.setdefault(participant.id, asyncio.Lock())
        async with lock:
            return await self._crawl(participant)

    async def _crawl(self, participant: ParticipantRuntime) -> CrawlReport:
        started = time.monotonic()
        report = CrawlReport(participant.name)
        providers = [p for p in await self.known(participant) if p.did != participant.did]
        report.providers = len(providers)
        deadline = started + self.settings.crawl_timeout_s
        gate = asyncio.Semaphore(self.settings.crawl_concurrency)
        # Catalogs are fetched side by side; what room is left in the cache is taken one provider at a time.
        storing = asyncio.Lock()

        async def one(provider: Provider) -> None:
            async with gate:
                left = deadline - time.monotonic()
                if left <= 0:
                    report.not_reached += 1
                    return
                await self._crawl_provider(participant, provider, report,
                                           min(left, self.settings.crawl_provider_timeout_s), storing)

        await asyncio.gather(*(one(p) for p in providers))
        await self.cache.keep_only(participant.id, {p.did for p in providers})
        report.seconds = time.monotonic() - started
        self._count("crawls")
        log.info("catalogs crawled", participant=participant.name, providers=report.providers, offers=report.offers,
                 failed=len(report.failed), seconds=round(report.seconds, 3))
        return report

    async def _crawl_provider(self, participant: ParticipantRuntime, provider: Provider, report: CrawlReport,
                              timeout_s: float, storing: asyncio.Lock) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                catalog = await self.peer_catalog(participant, provider.dsp_endpoint)
            async with storing:
                room = self.settings.crawl_max_offers - await self.cache.count(participant.id,
                                                                               except_provider=provider.did)
                read = read_catalog(catalog, provider_did=provider.did, dsp_endpoint=provider.dsp_endpoint,
                                    max_offers=max(0, min(self.settings.crawl_max_offers_per_provider, room)))
                await self.cache.replace(participant.id, provider, read.entries, fetched_at=self.clock(),
                                         skipped=read.skipped + read.over_bound)
        except (TdsError, CatalogRefused, TimeoutError) as exc:
            reason = (exc.message if isinstance(exc, TdsError) else str(exc)) or "timed out"
            report.failed[provider.did] = reason
            self._count("failures")
            log.warning("catalog not crawled", participant=participant.name, provider=provider.did, reason=reason)
            await self.cache.failed(participant.id, provider, reason, at=self.clock())
            return
        report.offers += len(read.entries)
        report.skipped += read.skipped
        report.over_bound += read.over_bound
        self._count("offers_skipped", read.skipped)
        self._count("offers_over_bound", read.over_bound)
        if read.skipped or read.over_bound:
            log.warning("catalog offers left out", participant=participant.name, provider=provider.did,
                        unreadable=read.skipped, over_bound=read.over_bound)

    async def crawl_all(self) -> list[CrawlReport]:
        """One crawl of every hosted participant; one participant's failure does not stop the others."""
        reports = []
        for participant in list(self.participants()):
            try:
                reports.append(await self.crawl(participant))
            except TdsError as exc:
                self._count("failures")
                log.warning("crawl failed", participant=participant.name, reason=exc.message)
        return reports

    def start(self, interval_s: float) -> None:
        """Crawl every *interval_s* seconds in the background (0: never on a timer)."""
        if interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._every(interval_s), name="catalog-crawler")

    async def _every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)  # ok-sleep: the crawl interval itself (the first one after start-up)
            await self.crawl_all()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def forget(self, participant_id: str) -> None:
        self._locks.pop(participant_id, None)

    # -- searching ---------------------------------------------------------------------------------------------

    async def search(self, participant: ParticipantRuntime, query: SearchQuery) -> SearchPage:
        """The offers in *participant*'s cache that match *query*."""
        return await self.cache.search(participant.id, query)

    async def crawls(self, participant: ParticipantRuntime) -> list[Crawl]:
        return await self.cache.crawls(participant.id)

    async def cached_offer(self, participant: ParticipantRuntime, offer_id: str) -> CachedOffer:
        """The cached offer *offer_id* (a search result's), to negotiate it without naming its provider."""
        found = await self.cache.offers_with_id(participant.id, offer_id)
        if not found:
            raise NotFound(f"offer {offer_id[:200]} is not in this participant's catalog cache; name the peer, or "
                           "search first", path="peer")
        if len({o.provider_did for o in found}) > 1:
            raise Conflict(f"offer {offer_id[:200]} is offered by {len(found)} providers; name the peer",
                           path="peer")
        return found[0]

    def age_s(self, offer: CachedOffer) -> float:
        return max(0.0, self.clock() - offer.fetched_at)
