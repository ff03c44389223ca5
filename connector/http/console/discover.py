"""The console's discover pages: the participant's peers and peer directory, a search over the offers its
catalog cache holds (when the node keeps one), a peer's catalog with each offer's terms in plain words, and
the "Negotiate" button that starts a negotiation for an offer.

The peer to browse is a form value handed to the management API (``POST /catalog/query``), which resolves
and fetches it with the participant's signature and the node's outbound checks; the page itself fetches
nothing. What a peer's catalog says (titles, descriptions, policy values) is the peer's free text: the
templates escape it like everything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connector.errors import BadRequest, NotFound
from connector.http.console import i18n
from connector.http.console.api import segment
from connector.http.console.view import BASE, Console, Ctx, NavItem
from connector.protocol.catalog_entries import DATA_CLASSES
from usage_policies.words import describe

NAV = (NavItem(f"{BASE}/discover", "nav.discover"),)

#: The longest peer reference (as ``CatalogQuery`` and ``NegotiationStart`` take it).
MAX_PEER = 2048
#: The longest offer id (as ``NegotiationStart`` takes it).
MAX_OFFER_ID = 512
#: Most datasets and offers of one catalog shown (the rest is counted, not shown).
MAX_DATASETS = 200
MAX_OFFERS = 20
#: Bounds on what is shown of a dataset (those of the catalog cache).
MAX_TITLE = 500
MAX_DESCRIPTION = 5000
#: Offers of one search page.
SEARCH_PAGE = 20
#: Most characters of a search filter (the search route's own bound).
MAX_FILTER = 500
SEARCH_FILTERS = ("q", "region", "dataClass")

i18n.add({
    "discover.title": ("Discover data", "发现数据"),
    "discover.intro": ("Find data other participants offer: browse a peer's catalog, read each offer's terms, and "
                       "start a negotiation.",
                       "查找其他参与方提供的数据：浏览对方的目录，阅读每个要约的条款，然后发起协商。"),
    "discover.browse": ("Browse a peer's catalog", "浏览对方的目录"),
    "discover.browse.peer": ("Peer (its URL, DSP endpoint or did:web)", "对方（URL、DSP 端点或 did:web）"),
    "discover.browse.help": ("The node asks the peer for its catalog as this participant, with a signed request.",
                             "本节点以本参与方的身份，用签名请求向对方获取目录。"),
    "discover.browse.submit": ("Show the catalog", "查看目录"),
    "discover.browse.this": ("Browse", "浏览"),
    "discover.peer_required": ("Name the peer whose catalog to show (its URL or did:web).",
                               "请填写要查看目录的对方（URL 或 did:web）。"),
    "discover.peer_too_long": ("The peer reference is too long (at most 2048 characters).",
                               "对方地址过长（最多 2048 个字符）。"),
    "discover.peers": ("Verified peers", "已验证的对方"),
    "discover.peers.none": ("No verified peers yet: browse a peer's catalog to meet one.",
                            "尚无已验证的对方：浏览对方的目录即可结识。"),
    "discover.directory": ("Peer directory", "对方名录"),
    "discover.directory.help": ("Participants this participant knows of (handshakes, bootstrap peers, gossip). What "
                                "they state of themselves is self-asserted.",
                                "本参与方所知的参与方（握手、引导节点、传播）。其自述信息未经验证。"),
    "discover.directory.none": ("The directory is empty.", "名录为空。"),
    "discover.col.name": ("Legal name", "法定名称"),
    "discover.col.did": ("DID", "DID"),
    "discover.col.region": ("Region", "地区"),
    "discover.col.industry": ("Industry", "行业"),
    "discover.col.endpoint": ("DSP endpoint", "DSP 端点"),
    "discover.col.verified": ("Verified", "验证时间"),
    "discover.col.seen": ("Last seen", "最近出现"),
    "discover.search": ("Search offers", "搜索要约"),
    "discover.search.help": ("Searches the offers of known peers' catalogs, as this node last fetched them.",
                             "在本节点最近获取的已知对方目录中搜索要约。"),
    "discover.search.q": ("Words", "关键词"),
    "discover.search.region": ("Provider's region (e.g. CN-GD)", "提供方地区（例如 CN-GD）"),
    "discover.search.class": ("Data class", "数据级别"),
    "discover.search.any_class": ("Any", "任意"),
    "discover.search.submit": ("Search", "搜索"),
    "discover.search.found": ("{n} offers found.", "找到 {n} 个要约。"),
    "discover.search.more": ("More offers match: narrow the search.", "还有更多匹配的要约：请缩小搜索范围。"),
    "discover.search.none": ("No offer matches.", "没有匹配的要约。"),
    "discover.search.off": ("This node keeps no catalog cache, so there is no search: browse a peer's catalog "
                            "instead.",
                            "本节点未保存目录缓存，无法搜索：请直接浏览对方的目录。"),
    "discover.catalog": ("Catalog", "目录"),
    "discover.catalog.of": ("Catalog of {peer}", "{peer} 的目录"),
    "discover.catalog.provider": ("Provider", "提供方"),
    "discover.catalog.asked": ("Asked", "查询地址"),
    "discover.catalog.empty": ("This catalog offers no datasets to this participant.",
                               "该目录未向本参与方提供任何数据集。"),
    "discover.catalog.more": ("{n} more datasets are not shown.", "另有 {n} 个数据集未显示。"),
    "discover.catalog.more_offers": ("{n} more offers of this dataset are not shown.",
                                     "该数据集另有 {n} 个要约未显示。"),
    "discover.dataset.id": ("Dataset id", "数据集编号"),
    "discover.dataset.untitled": ("(untitled)", "（无标题）"),
    "discover.dataset.class": ("Data class", "数据级别"),
    "discover.offer": ("Offer", "要约"),
    "discover.offer.terms": ("Terms", "条款"),
    "discover.offer.raw": ("The offer as published (ODRL, JSON)", "发布的要约原文（ODRL，JSON）"),
    "discover.offer.none": ("No offer: this dataset cannot be negotiated.", "无要约：该数据集无法协商。"),
    "discover.negotiate": ("Negotiate", "协商"),
    "discover.negotiate.started": ("Negotiation started.", "协商已开始。"),
    "discover.negotiate.offer_required": ("Name the offer to negotiate.", "请指明要协商的要约。"),
})


@dataclass(frozen=True)
class OfferView:
    id: str
    sentences: list[str]
    raw: str


@dataclass(frozen=True)
class DatasetView:
    id: str
    title: str
    description: str
    data_class: str
    offers: list[OfferView]
    more_offers: int


@dataclass(frozen=True)
class CatalogView:
    provider: str
    endpoint: str
    datasets: list[DatasetView]
    more: int


def text_of(value: Any, limit: int) -> str:
    """A string property as compacted JSON-LD may write it (a string, ``{"@value": …}``, or a list of them,
    e.g. language-tagged titles): the first readable one, cut to *limit*."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str | dict)), "")
    if isinstance(value, dict):
        value = value.get("@value", "")
    return value[:limit] if isinstance(value, str) else ""


def _first(node: dict[str, Any], *keys: str) -> Any:
    return next((node[k] for k in keys if k in node), None)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def offer_view(policy: Any, lang: i18n.Lang) -> OfferView:
    """An offer with its terms in plain words and as published."""
    policy = policy if isinstance(policy, dict) else {}
    offer_id = policy.get("@id")
    return OfferView(id=offer_id if isinstance(offer_id, str) else "", sentences=describe(policy, lang),
                     raw=json.dumps(policy, indent=2, ensure_ascii=False))


def catalog_view(catalog: Any, lang: i18n.Lang) -> CatalogView:
    """A peer's catalog (DSP 2025-1 §6) as the page shows it: its datasets with their offers, bounded."""
    catalog = catalog if isinstance(catalog, dict) else {}
    provider = text_of(_first(catalog, "participantId", "dspace:participantId"), MAX_PEER)
    endpoint = ""
    for service in _list(_first(catalog, "service", "dcat:service")):
        if isinstance(service, dict):
            endpoint = text_of(_first(service, "endpointURL", "dcat:endpointURL"), MAX_PEER)
            if endpoint:
                break
    raw_datasets = [d for d in _list(_first(catalog, "dataset", "dcat:dataset")) if isinstance(d, dict)]
    datasets = []
    for dataset in raw_datasets[:MAX_DATASETS]:
        offers = [o for o in _list(_first(dataset, "hasPolicy", "odrl:hasPolicy")) if isinstance(o, dict)]
        data_class = text_of(_first(dataset, "https://w3id.org/tds/v1#dataClass", "tds:dataClass", "dataClass"), 20)
        datasets.append(DatasetView(
            id=text_of(dataset.get("@id"), MAX_PEER),
            title=text_of(_first(dataset, "dct:title", "title", "dcterms:title"), MAX_TITLE),
            description=text_of(_first(dataset, "dct:description", "description", "dcterms:description"),
                                MAX_DESCRIPTION),
            data_class=data_class, offers=[offer_view(o, lang) for o in offers[:MAX_OFFERS]],
            more_offers=max(0, len(offers) - MAX_OFFERS)))
    return CatalogView(provider=provider, endpoint=endpoint, datasets=datasets,
                       more=max(0, len(raw_datasets) - MAX_DATASETS))


def _form_text(ctx: Ctx, name: str) -> str:
    value = ctx.form.get(name)
    return value.strip() if isinstance(value, str) else ""


def checked_peer(ctx: Ctx, peer: str) -> str:
    if not peer:
        raise BadRequest(ctx.t("discover.peer_required"), path="peer")
    if len(peer) > MAX_PEER:
        raise BadRequest(ctx.t("discover.peer_too_long"), path="peer")
    return peer


async def _optional(ctx: Ctx, path: str, **query: Any) -> Any:
    """The route's answer, or None when the node does not offer it (no directory, no catalog cache)."""
    try:
        return await ctx.api.get(path, **query)
    except NotFound:
        return None


def routes(console: Console) -> list[web.RouteDef]:
    @console.page()
    async def page(ctx: Ctx) -> web.StreamResponse:
        peers = (await ctx.api.get("/peers")).get("peers", [])
        directory = await _optional(ctx, "/directory")
        filters = {name: ctx.request.query.get(name, "").strip()[:MAX_FILTER] for name in SEARCH_FILTERS}
        found = await _optional(ctx, "/search", limit=SEARCH_PAGE, **{k: v for k, v in filters.items() if v})
        results = None
        if found is not None:
            results = [{**o, "view": offer_view(o.get("policy"), ctx.lang)} for o in found.get("offers", [])]
        return ctx.render("discover.html", peers=peers,
                          directory=directory.get("entries", []) if directory is not None else None,
                          search=found, results=results, filters=filters,
                          searched=any(filters.values()), data_classes=DATA_CLASSES, max_peer=MAX_PEER)

    @console.page()
    async def catalog(ctx: Ctx) -> web.StreamResponse:
        peer = checked_peer(ctx, ctx.request.query.get("peer", "").strip())
        answer = await ctx.api.post("/catalog/query", {"peer": peer})
        return ctx.render("discover_catalog.html", peer=peer, catalog=catalog_view(answer, ctx.lang),
                          max_peer=MAX_PEER)

    @console.page()
    async def negotiate(ctx: Ctx) -> web.StreamResponse:
        offer_id, peer = _form_text(ctx, "offerId"), _form_text(ctx, "peer")
        if not offer_id or len(offer_id) > MAX_OFFER_ID:
            raise BadRequest(ctx.t("discover.negotiate.offer_required"), path="offerId")
        if len(peer) > MAX_PEER:
            raise BadRequest(ctx.t("discover.peer_too_long"), path="peer")
        # Without a peer the API takes the offer's provider from the catalog cache (a search result).
        started = await ctx.api.post("/negotiations", {"offerId": offer_id, **({"peer": peer} if peer else {})})
        return ctx.redirect(f"{BASE}/negotiations/{segment(str(started['id']))}",
                            ok=ctx.t("discover.negotiate.started"))

    return [
        web.get(f"{BASE}/discover", page),
        web.get(f"{BASE}/discover/catalog", catalog),
        web.post(f"{BASE}/discover/negotiate", negotiate),
    ]
