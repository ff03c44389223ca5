"""Management routes of federated search (``connector.services.search``): search the participant's catalog
cache, start a crawl now, and see how each provider's last crawl went."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from connector.config import REGION_RE
from connector.errors import BadRequest, NotFound
from connector.http.management import Query, Route
from connector.http.middleware import query_int
from connector.protocol.catalog_entries import DATA_CLASSES, terms_line
from connector.store.catalog_cache import MAX_PAGE, CachedOffer, SearchQuery

if TYPE_CHECKING:
    from connector.participant import ParticipantRuntime
    from connector.services.search import SearchService

#: Most characters of one filter value (a DID, a feature, the words searched for).
MAX_VALUE = 500
_FEATURE = re.compile(r"^[A-Za-z0-9:._&/ -]{1,100}$")


class OfferOut(msgspec.Struct, frozen=True, rename="camel"):
    provider_did: str
    provider_legal_name: str
    provider_region: str
    provider_industry: str
    dsp_endpoint: str
    dataset_id: str
    offer_id: str
    title: str
    description: str
    keywords: list[str]
    themes: list[str]
    data_class: str
    terms: str
    features: list[str]
    policy: dict[str, Any]
    fetched_at: float
    age_seconds: float


class SearchOut(msgspec.Struct, frozen=True, rename="camel"):
    #: Matches counted up to 1000; *more*: there are more (narrow the search).
    total: int
    more: bool
    limit: int
    offset: int
    offers: list[OfferOut]


class CrawlOut(msgspec.Struct, frozen=True, rename="camel"):
    provider_did: str
    dsp_endpoint: str
    crawled_at: float
    fetched_at: float | None
    offers: int
    skipped: int
    failures: int
    error: str


def _text(request: web.Request, name: str) -> str:
    value = request.query.get(name, "").strip()
    if len(value) > MAX_VALUE:
        raise BadRequest(f"query parameter {name} must be at most {MAX_VALUE} characters", path=name)
    return value


def search_query(request: web.Request) -> SearchQuery:
    """The search of ``?q=&region=&provider=&dataClass=&industry=&feature=&limit=&offset=``."""
    region = _text(request, "region")
    if region and not REGION_RE.match(region):
        raise BadRequest("region must be an ISO 3166 code such as CN or CN-GD", path="region")
    data_class = _text(request, "dataClass")
    if data_class and data_class not in DATA_CLASSES:
        raise BadRequest(f"dataClass must be one of {', '.join(DATA_CLASSES)}", path="dataClass")
    features = request.query.getall("feature", [])
    if len(features) > 10 or any(not _FEATURE.match(f) for f in features):
        raise BadRequest("feature: at most 10, each 1-100 letters, digits or :._&/- (e.g. no-export-restriction)",
                         path="feature")
    return SearchQuery(q=_text(request, "q"), region=region, provider=_text(request, "provider"),
                       data_class=data_class, industry=_text(request, "industry"), features=features,
                       limit=query_int(request, "limit", default=50, low=1, high=MAX_PAGE),
                       offset=query_int(request, "offset", default=0, low=0, high=1_000_000))


def offer_out(offer: CachedOffer, now: float) -> OfferOut:
    return OfferOut(
        provider_did=offer.provider_did, provider_legal_name=offer.provider_legal_name,
        provider_region=offer.provider_region, provider_industry=offer.provider_industry,
        dsp_endpoint=offer.dsp_endpoint, dataset_id=offer.dataset_id, offer_id=offer.offer_id, title=offer.title,
        description=offer.description, keywords=offer.keywords, themes=offer.themes, data_class=offer.data_class,
        terms=terms_line(offer.policy), features=offer.features, policy=offer.policy, fetched_at=offer.fetched_at,
        age_seconds=round(max(0.0, now - offer.fetched_at), 3))


SEARCH_QUERY = {
    "q": Query("words to find in titles, descriptions and keywords (all of them, as prefixes)",
               {"type": "string", "maxLength": MAX_VALUE}),
    "region": Query("the provider's region as it states it, with its sub-regions (CN finds CN-GD)",
                    {"type": "string", "pattern": REGION_RE.pattern}),
    "provider": Query("the provider's DID or legal name", {"type": "string", "maxLength": MAX_VALUE}),
    "dataClass": Query("the dataset's data class", {"type": "string", "enum": list(DATA_CLASSES)}),
    "industry": Query("the provider's industry as it states it", {"type": "string", "maxLength": MAX_VALUE}),
    "feature": Query("a property of the offer's policy (repeatable): no-export-restriction, export-within:CN, "
                     "purpose:R&D, any-purpose, use-limit, time-limit, logged-use",
                     {"type": "string", "pattern": _FEATURE.pattern}),
    "limit": Query("most offers to return", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}),
    "offset": Query("offers to skip (paging)", {"type": "integer", "minimum": 0, "default": 0}),
}


def management_routes(search_of: Callable[[], SearchService | None],
                      participant: Callable[[web.Request], ParticipantRuntime]) -> list[Route]:
    """``GET /search``, ``POST /search/crawl``, ``GET /search/crawls``; *search_of* gives the search service
    (read when a request comes), *participant* the token's participant (404 for the admin token)."""

    def using() -> SearchService:
        found = search_of()
        if found is None:
            raise NotFound("this node keeps no catalog cache")
        return found

    async def search(request: web.Request) -> web.Response:
        query = search_query(request)
        service = using()
        page = await service.search(participant(request), query)
        now = service.clock()
        out = SearchOut(total=page.total, more=page.more, limit=query.limit, offset=query.offset,
                        offers=[offer_out(o, now) for o in page.offers])
        return web.json_response(msgspec.to_builtins(out))

    async def crawl(request: web.Request) -> web.Response:
        report = await using().crawl(participant(request))
        return web.json_response(report.as_json())

    async def crawls(request: web.Request) -> web.Response:
        rows = await using().crawls(participant(request))
        return web.json_response([msgspec.to_builtins(CrawlOut(**msgspec.structs.asdict(r))) for r in rows])

    return [
        Route("GET", "/search", search, "Search the offers this participant's known peers show it (its catalog "
              "cache, filled by crawling their catalogs as this participant)", tag="search", response=SearchOut,
              query=SEARCH_QUERY),
        Route("POST", "/search/crawl", crawl, "Crawl the known peers' catalogs now (this participant)",
              tag="search", body_required=False),
        Route("GET", "/search/crawls", crawls, "Each known provider's last crawl: when, offers kept, failures",
              tag="search", response=list[CrawlOut]),
    ]
