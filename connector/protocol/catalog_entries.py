"""What a peer's catalog offers, read into flat, bounded entries for the catalog cache (pure).

A consumer's node keeps, per hosted participant, the offers it saw in each known provider's catalog
(DSP 2025-1 §6: a ``Catalog`` of DCAT ``Dataset`` entries, each with its ODRL ``Offer`` in ``hasPolicy``).
:func:`read_catalog` turns one catalog into :class:`OfferEntry` rows: the dataset's descriptive fields (as
the provider wrote them, cut to the lengths the management API itself accepts), the offer's id and policy,
and :func:`policy_features`, the few properties of the policy a searcher filters on. What it cannot read
is a :class:`CatalogRefused` (the catalog as a whole) or is skipped and counted (one dataset or offer).

No I/O and no clock: the caller says when the catalog was fetched and how many offers it may keep.
"""

from __future__ import annotations

from typing import Any

import msgspec

TDS_NS = "https://w3id.org/tds/v1#"
#: Bounds on what is kept of one dataset (the management API's own limits on an asset).
MAX_TITLE = 500
MAX_DESCRIPTION = 5000
MAX_KEYWORDS = 50
MAX_KEYWORD = 100
MAX_ID = 512
#: A policy kept in the cache larger than this (canonical JSON bytes) is not kept: the offer is skipped.
MAX_POLICY_BYTES = 16 * 1024
DATA_CLASSES = ("general", "important", "core", "personal")


class CatalogRefused(Exception):
    """A peer's answer that is not a DSP catalog of the provider it was asked of."""


class OfferEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One offer of one dataset in one provider's catalog, as a participant saw it."""

    provider_did: str
    dsp_endpoint: str
    dataset_id: str
    offer_id: str
    title: str = ""
    description: str = ""
    keywords: list[str] = []
    themes: list[str] = []
    data_class: str = ""
    media_type: str = ""
    policy: dict[str, Any] = {}
    features: list[str] = []


class CatalogRead(msgspec.Struct, frozen=True, kw_only=True):
    """The entries read from one catalog, and how many offers were left out (unreadable or over the bound)."""

    entries: list[OfferEntry]
    skipped: int = 0
    over_bound: int = 0


def _text(value: Any, limit: int) -> str:
    """A string property as JSON-LD compacted may write it: a string, a ``{"@value": …}``, or a list of them
    (language-tagged titles): the first readable one, cut to *limit*."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str | dict)), "")
    if isinstance(value, dict):
        value = value.get("@value", "")
    return value[:limit] if isinstance(value, str) else ""


def _texts(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        text = item.get("@id") or item.get("@value") if isinstance(item, dict) else item
        if isinstance(text, str) and text.strip() and len(out) < MAX_KEYWORDS:
            out.append(text.strip()[:MAX_KEYWORD])
    return out


def _first(dataset: dict[str, Any], *keys: str) -> Any:
    return next((dataset[k] for k in keys if k in dataset), None)


def _operand(name: Any) -> str:
    """``odrl:purpose``, ``purpose`` and ``http://www.w3.org/ns/odrl/2/purpose`` all read as ``purpose``."""
    text = name.get("@id", "") if isinstance(name, dict) else name
    if not isinstance(text, str):
        return ""
    for sep in ("#", "/", ":"):
        text = text.rsplit(sep, 1)[-1]
    return text


def _values(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("@value", item.get("@id"))
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            out.append(str(item))
    return out


def _rules(policy: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    rules = policy.get(kind, [])
    rules = rules if isinstance(rules, list) else [rules]
    return [r for r in rules if isinstance(r, dict)]


def _constraints(rule: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    items = rule.get("constraint", [])
    for c in items if isinstance(items, list) else [items]:
        if not isinstance(c, dict):
            continue
        nested = c.get("and") or c.get("or") or c.get("xone") or c.get("andSequence")
        if isinstance(nested, list):
            found += [n for n in nested if isinstance(n, dict)]
        else:
            found.append(c)
    return found


def policy_features(policy: dict[str, Any]) -> list[str]:
    """The properties of an offer's policy a searcher filters on, sorted:

    ``no-export-restriction`` or ``export-within:REGION`` (``tds:exportDestination``); ``purpose:P`` for each
    purpose allowed, or ``any-purpose``; ``recipient-region:R`` (``odrl:spatial``); ``use-limit``
    (``odrl:count``); ``time-limit`` (``odrl:dateTime``, ``odrl:elapsedTime``); ``logged-use``
    (``odrl:acceptTracking``, ``odrl:inform`` duties); ``prohibits:ACTION``."""
    features: set[str] = set()
    purposes: set[str] = set()
    exports: set[str] = set()
    for rule in _rules(policy, "permission"):
        for c in _constraints(rule):
            operand, values = _operand(c.get("leftOperand")), _values(c.get("rightOperand"))
            if operand == "purpose":
                purposes.update(values)
            elif operand == "exportDestination":
                exports.update(values)
            elif operand == "spatial":
                features.update(f"recipient-region:{v}" for v in values)
            elif operand == "count":
                features.add("use-limit")
            elif operand in ("dateTime", "elapsedTime"):
                features.add("time-limit")
        duties = rule.get("duty", [])
        for duty in duties if isinstance(duties, list) else [duties]:
            if isinstance(duty, dict) and _operand(duty.get("action")) in ("acceptTracking", "inform"):
                features.add("logged-use")
    for rule in _rules(policy, "prohibition"):
        features.update(f"prohibits:{_operand(a)}" for a in _values(rule.get("action")) if _operand(a))
    features.update({f"export-within:{r}" for r in exports} or {"no-export-restriction"})
    features.update({f"purpose:{p}" for p in purposes} or {"any-purpose"})
    return sorted(f[:MAX_KEYWORD] for f in features)


def terms_line(policy: dict[str, Any]) -> str:
    """An offer's terms in one line, e.g. ``use; purpose R&D; at most 5 uses; no export outside CN``."""
    parts: list[str] = []
    for rule in _rules(policy, "permission"):
        parts.append(_operand(rule.get("action")) or "use")
        for c in _constraints(rule):
            operand, values = _operand(c.get("leftOperand")), ", ".join(_values(c.get("rightOperand")))
            parts.append({
                "purpose": f"purpose {values}", "exportDestination": f"no export outside {values}",
                "spatial": f"recipient in {values}", "count": f"at most {values} uses",
                "elapsedTime": f"within {values}", "dateTime": f"time {c.get('operator')} {values}",
            }.get(operand, f"{operand} {c.get('operator')} {values}"))
        duties = rule.get("duty", [])
        for duty in duties if isinstance(duties, list) else [duties]:
            if isinstance(duty, dict):
                parts.append(f"duty {_operand(duty.get('action'))}")
    for rule in _rules(policy, "prohibition"):
        parts.append("prohibited " + ", ".join(_operand(a) for a in _values(rule.get("action"))))
    return "; ".join(parts) or "no terms"


def _offers(dataset: dict[str, Any]) -> list[Any]:
    offers = dataset.get("hasPolicy", dataset.get("odrl:hasPolicy", []))
    return offers if isinstance(offers, list) else [offers]


def read_catalog(
    catalog: Any, *, provider_did: str, dsp_endpoint: str, max_offers: int
) -> CatalogRead:
    """The offers of *catalog* (a provider's answer to a catalog request), at most *max_offers*.

    Raises :class:`CatalogRefused` if it is not a catalog, or names another participant than *provider_did*
    (a node may not pass off another's offers as its own)."""
    if not isinstance(catalog, dict):
        raise CatalogRefused("the answer is not a JSON object")
    kind = catalog.get("@type")
    if kind not in ("Catalog", "dcat:Catalog") and not (isinstance(kind, list) and "Catalog" in kind):
        raise CatalogRefused(f"the answer is not a Catalog (@type {str(kind)[:40]!r})")
    participant = catalog.get("participantId", catalog.get("dspace:participantId"))
    if participant is not None and participant != provider_did:
        raise CatalogRefused(f"the catalog is of {str(participant)[:200]!r}, not of {provider_did}")
    datasets = catalog.get("dataset", [])
    if not isinstance(datasets, list):
        datasets = [datasets]
    entries: list[OfferEntry] = []
    skipped = over = 0
    seen: set[tuple[str, str]] = set()
    for dataset in datasets:
        if not isinstance(dataset, dict) or not isinstance(dataset.get("@id"), str) \
                or not 0 < len(dataset["@id"]) <= MAX_ID:
            skipped += max(1, len(_offers(dataset)) if isinstance(dataset, dict) else 1)
            continue
        data_class = _text(_first(dataset, TDS_NS + "dataClass", "tds:dataClass", "dataClass"), 20)
        base = {
            "provider_did": provider_did, "dsp_endpoint": dsp_endpoint, "dataset_id": dataset["@id"],
            "title": _text(_first(dataset, "dct:title", "title", "dcterms:title"), MAX_TITLE),
            "description": _text(_first(dataset, "dct:description", "description", "dcterms:description"),
                                 MAX_DESCRIPTION),
            "keywords": _texts(_first(dataset, "dcat:keyword", "keyword")),
            "themes": _texts(_first(dataset, "dcat:theme", "theme")),
            "data_class": data_class if data_class in DATA_CLASSES else "",
            "media_type": _text(_first(dataset, "dcat:mediaType", "mediaType"), 200),
        }
        for offer in _offers(dataset):
            offer_id = offer.get("@id") if isinstance(offer, dict) else None
            if not isinstance(offer_id, str) or not 0 < len(offer_id) <= MAX_ID \
                    or (dataset["@id"], offer_id) in seen \
                    or len(msgspec.json.encode(offer)) > MAX_POLICY_BYTES:
                skipped += 1
                continue
            if len(entries) >= max_offers:
                over += 1
                continue
            seen.add((dataset["@id"], offer_id))
            entries.append(OfferEntry(offer_id=offer_id, policy=offer, features=policy_features(offer), **base))
    return CatalogRead(entries=entries, skipped=skipped, over_bound=over)
