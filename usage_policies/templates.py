"""Builders for the common usage-policy classes of data spaces.

Each builder returns a DSP 2025-1 ``Offer`` for one asset (``negotiation/contract-schema.json``,
``MessageOffer``: ``@type`` ``Offer`` with a ``target``), ready for a catalog or a contract offer
message. :func:`combine` joins several into one offer whose permission needs all their constraints and
carries all their duties, e.g. ``combine(purpose(t, "R&D"), max_uses(t, 10), log_each_use(t))``.

The ``@id`` defaults to a name-based UUID of the content, so the same policy always gets the same id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from usage_policies.values import parse_duration, show

JsonObject = dict[str, Any]

DATA_CLASSES = ("general", "important", "core", "personal")
XSD_DATETIME = "http://www.w3.org/2001/XMLSchema#dateTime"
XSD_DURATION = "http://www.w3.org/2001/XMLSchema#duration"
XSD_DECIMAL = "http://www.w3.org/2001/XMLSchema#decimal"
XSD_INTEGER = "http://www.w3.org/2001/XMLSchema#integer"
TDS_DATA_CLASS = "https://w3id.org/tds/v1#dataClass"
TDS_EXPORT_DESTINATION = "https://w3id.org/tds/v1#exportDestination"
TDS_VERIFIED_REGION = "https://w3id.org/tds/v1#verifiedRegion"
TDS_MEMBER_OF = "https://w3id.org/tds/v1#memberOf"
TDS_QUERY_COLUMNS = "https://w3id.org/tds/v1#queryColumns"
TDS_QUERY_AGGREGATES = "https://w3id.org/tds/v1#queryAggregates"
TDS_MIN_GROUP_SIZE = "https://w3id.org/tds/v1#minGroupSize"
TDS_EPSILON_PER_QUERY = "https://w3id.org/tds/v1#epsilonPerQuery"
TDS_EPSILON_TOTAL = "https://w3id.org/tds/v1#epsilonTotal"
TDS_QUERY_TEMPLATES = "https://w3id.org/tds/v1#queryTemplates"
#: The aggregates a sandbox query may compute (``connector.protocol.sandbox.AGGREGATES``).
SANDBOX_AGGREGATES = ("count", "sum", "avg", "min", "max", "stddev")
#: The types of a query template's parameters.
PARAMETER_TYPES = ("integer", "real", "text")


def _uid(body: JsonObject) -> str:
    digest = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'tds-policy:' + digest)}"


def offer(
    target: str,
    *,
    permissions: Sequence[JsonObject] = (),
    prohibitions: Sequence[JsonObject] = (),
    obligations: Sequence[JsonObject] = (),
    uid: str | None = None,
    assigner: str | None = None,
    conflict: str | None = None,
) -> JsonObject:
    """A DSP ``Offer`` with the given rules (at least one permission or prohibition)."""
    if not permissions and not prohibitions:
        raise ValueError("an offer needs at least one permission or prohibition")
    body: JsonObject = {"@type": "Offer", "target": target}
    if assigner is not None:
        body["assigner"] = assigner
    if conflict is not None:
        body["odrl:conflict"] = {"@id": f"odrl:{conflict}"}
    if permissions:
        body["permission"] = [dict(p) for p in permissions]
    if prohibitions:
        body["prohibition"] = [dict(p) for p in prohibitions]
    if obligations:
        body["obligation"] = [dict(o) for o in obligations]
    return {"@id": uid or _uid(body), **body}


def constraint(left_operand: str, operator: str, right_operand: Any) -> JsonObject:
    return {"leftOperand": left_operand, "operator": operator, "rightOperand": right_operand}


def _datetime(value: datetime | str) -> JsonObject:
    text = show(value) if isinstance(value, datetime) else value
    return {"@value": text, "@type": XSD_DATETIME}


def _duration(iso8601: str) -> JsonObject:
    parse_duration(iso8601)  # reject a malformed duration here, not at the consumer
    return {"@value": iso8601, "@type": XSD_DURATION}


def _one_or_many(values: str | Sequence[str]) -> tuple[str, Any]:
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        raise ValueError("at least one value is needed")
    return ("eq", items[0]) if len(items) == 1 else ("isAnyOf", items)


def _permission(
    constraints: Sequence[JsonObject] = (), duties: Sequence[JsonObject] = (), action: str = "use"
) -> JsonObject:
    rule: JsonObject = {"action": action}
    if constraints:
        rule["constraint"] = list(constraints)
    if duties:
        rule["duty"] = list(duties)
    return rule


def allow(target: str, *, action: str = "use", assigner: str | None = None) -> JsonObject:
    """Anyone who holds the agreement may *action* (default ``use``) the asset."""
    return offer(target, permissions=[_permission(action=action)], assigner=assigner)


def prohibit(
    target: str, action: str | Sequence[str], *, allow_action: str = "use", assigner: str | None = None
) -> JsonObject:
    """Use is allowed, *action* (e.g. ``odrl:distribute``) is not; the prohibition wins (§2.8)."""
    actions = [action] if isinstance(action, str) else list(action)
    return offer(
        target, permissions=[_permission(action=allow_action)],
        prohibitions=[{"action": a} for a in actions], assigner=assigner, conflict="prohibit",
    )


def restrict_to(target: str, consumers: str | Sequence[str], *, assigner: str | None = None) -> JsonObject:
    """Only the named consumer(s) (participant DIDs) may use the asset."""
    parties = [consumers] if isinstance(consumers, str) else list(consumers)
    return offer(target, permissions=[{"action": "use", "assignee": p} for p in parties], assigner=assigner)


def purpose(target: str, purposes: str | Sequence[str], *, assigner: str | None = None) -> JsonObject:
    """Use only for the given purpose(s) (``odrl:purpose``; ``isA`` taxonomy via World)."""
    op, value = _one_or_many(purposes)
    rule = _permission([constraint("odrl:purpose", op, value)])
    return offer(target, permissions=[rule], assigner=assigner)


def region(target: str, regions: str | Sequence[str], *, assigner: str | None = None) -> JsonObject:
    """Use only inside the region(s); sub-regions count (CN-GD-GZ is inside CN). ``odrl:spatial`` is the region
    the party states: for one a trusted issuer vouches for, :func:`verified_region`."""
    values = [regions] if isinstance(regions, str) else list(regions)
    return offer(
        target, permissions=[_permission([constraint("odrl:spatial", "isAnyOf", values)])], assigner=assigner
    )


def verified_region(target: str, regions: str | Sequence[str], *, assigner: str | None = None) -> JsonObject:
    """Only parties established inside the region(s), as a credential by an issuer trusted for regions says
    (``tds:verifiedRegion``); sub-regions count. A party without such a credential does not qualify."""
    values = [regions] if isinstance(regions, str) else list(regions)
    if not values:
        raise ValueError("at least one region is needed")
    return offer(
        target, permissions=[_permission([constraint(TDS_VERIFIED_REGION, "isAnyOf", values)])], assigner=assigner
    )


def member_of(target: str, spaces: str | Sequence[str], *, assigner: str | None = None) -> JsonObject:
    """Only members of the data space(s) (any of them), as a membership credential by an issuer trusted for
    that space says (``tds:memberOf``)."""
    op, value = _one_or_many(spaces)
    return offer(target, permissions=[_permission([constraint(TDS_MEMBER_OF, op, value)])], assigner=assigner)


def no_export_outside(target: str, home: str, *, assigner: str | None = None) -> JsonObject:
    """Data may only go to participants located in *home* (``tds:exportDestination``: the recipient's region as a
    credential by an issuer trusted for regions says; the node fills in no other)."""
    return offer(
        target, permissions=[_permission([constraint(TDS_EXPORT_DESTINATION, "isPartOf", home)])],
        assigner=assigner,
    )


def max_uses(target: str, n: int, *, assigner: str | None = None) -> JsonObject:
    """At most *n* uses (``odrl:count`` counts the attempted use, so ``lteq n``)."""
    if n < 1:
        raise ValueError("max_uses needs n >= 1")
    count = {"@value": str(n), "@type": XSD_INTEGER}  # DSP right operands are strings or objects
    rule = _permission([constraint("odrl:count", "lteq", count)])
    return offer(target, permissions=[rule], assigner=assigner)


def during(
    target: str, start: datetime | str, end: datetime | str, *, assigner: str | None = None
) -> JsonObject:
    """Use from *start* (inclusive) until *end* (exclusive)."""
    return offer(
        target,
        permissions=[_permission([
            constraint("odrl:dateTime", "gteq", _datetime(start)),
            constraint("odrl:dateTime", "lt", _datetime(end)),
        ])],
        assigner=assigner,
    )


def for_duration(target: str, iso8601: str, *, assigner: str | None = None) -> JsonObject:
    """Use for a duration after the first use (``odrl:elapsedTime lteq``, e.g. ``P30D``)."""
    return offer(
        target, permissions=[_permission([constraint("odrl:elapsedTime", "lteq", _duration(iso8601))])],
        assigner=assigner,
    )


def use_and_delete_after(
    target: str, iso8601: str | None = None, *, assigner: str | None = None
) -> JsonObject:
    """Use for the duration since first use, then delete (right after each use when None)."""
    duty: JsonObject = {"action": "odrl:delete"}
    constraints = []
    if iso8601 is not None:
        duty["constraint"] = constraints = [constraint("odrl:elapsedTime", "lteq", _duration(iso8601))]
    return offer(target, permissions=[_permission(constraints, duties=[duty])], assigner=assigner)


def log_each_use(target: str, *, assigner: str | None = None) -> JsonObject:
    """Every use is logged (duty ``odrl:acceptTracking``, carried out as a signed log entry)."""
    rule = _permission(duties=[{"action": "odrl:acceptTracking"}])
    return offer(target, permissions=[rule], assigner=assigner)


def inform_on_use(
    target: str, *, informed_party: str | None = None, assigner: str | None = None
) -> JsonObject:
    """The provider (or *informed_party*) is informed of every use (duty ``odrl:inform``)."""
    duty: JsonObject = {"action": "odrl:inform"}
    if informed_party is not None:
        duty["odrl:informedParty"] = informed_party
    return offer(target, permissions=[_permission(duties=[duty])], assigner=assigner)


def price_per_use(
    target: str, amount: Decimal | str, currency: str, *, assigner: str | None = None
) -> JsonObject:
    """Each use costs *amount* in *currency* (a code such as ``CNY``, or an IRI such as
    ``http://dbpedia.org/resource/Euro``), post-paid: settled by the period's statement."""
    return offer(target, permissions=[_permission(duties=[price_duty(amount, currency)])], assigner=assigner)


def price_duty(
    amount: Decimal | str,
    currency: str,
    *,
    per: str = "use",
    period: str = "P1M",
    rounding: str = "0.01 half-up",
    tiers: Sequence[str] = (),
    prepaid: bool = False,
) -> JsonObject:
    """A price as an ODRL ``compensate`` duty (``usage_policies.pricing`` reads it back): *amount* in *currency*
    per *per* (``use``, ``query``, ``gigabyte`` or ``period``), billed by *period* (``P1M``, ``P1W``, ``P1D``),
    each statement line rounded by *rounding*, with graduated *tiers* (``"1000:2.00"``: from the 1,001st unit
    on, each costs 2.00). *prepaid*: due before use (a precondition, ``event lt policyUsage``) instead of settled
    by the period's statement."""
    from usage_policies import pricing

    try:
        value = pricing.parse_decimal(amount if isinstance(amount, Decimal) else str(amount), "the price")
        basis = pricing.Basis(per)
        pricing.parse_rounding(rounding)
        parsed = [pricing.parse_tier(t) for t in tiers]
    except (pricing.PricingError, ValueError) as exc:
        raise ValueError(str(exc) if isinstance(exc, pricing.PricingError) else
                         f"a price is per {', '.join(b.value for b in pricing.Basis)}, not {per!r}") from exc
    if period not in pricing.PERIODS:
        raise ValueError(f"the billing period must be one of {', '.join(pricing.PERIODS)}, not {period!r}")
    if not currency or not isinstance(currency, str):
        raise ValueError("a price needs a currency (e.g. CNY)")
    try:
        pricing.currency_code(currency)
    except pricing.PricingError as exc:
        raise ValueError(f"{exc} (a currency is a code such as CNY, or an IRI ending in one)") from exc
    if len(parsed) > pricing.MAX_TIERS or len({t.start for t in parsed}) != len(parsed) or \
            any(t.start == 0 for t in parsed):
        raise ValueError(f"price tiers start at distinct quantities above 0 (at most {pricing.MAX_TIERS})")
    constraints: list[JsonObject] = [
        {**constraint("odrl:payAmount", "eq", {"@value": format(value, "f"), "@type": XSD_DECIMAL}), "unit": currency},
        constraint(pricing.METERED_PER, "eq", {"@id": "https://w3id.org/tds/v1#" + basis.value}),
        constraint(pricing.BILLING_PERIOD, "eq", period),
        constraint(pricing.ROUNDING, "eq", rounding),
    ]
    if parsed:
        constraints.append(constraint(pricing.PRICE_TIERS, "isAnyOf", [pricing.tier_text(t) for t in parsed]))
    if prepaid:
        constraints.append(constraint("odrl:event", "lt", {"@id": "odrl:policyUsage"}))
    return {"action": "odrl:compensate", "constraint": constraints}


def sandbox(
    target: str,
    *,
    columns: Sequence[str] | None = None,
    aggregates: Sequence[str] | None = None,
    min_group_size: int = 10,
    epsilon_per_query: float | Decimal | None = None,
    epsilon_total: float | Decimal | None = None,
    templates: Sequence[Mapping[str, Any]] = (),
    max_queries: int | None = None,
    assigner: str | None = None,
) -> JsonObject:
    """Computation only ("available but invisible"): aggregate queries (``odrl:aggregate``) that run in the
    provider's data sandbox, whose results leave it only for groups of at least *min_group_size* records.

    *columns* and *aggregates* (of :data:`SANDBOX_AGGREGATES`) narrow what a query may use (None: all the
    asset offers). With a differential-privacy budget (*epsilon_per_query* and *epsilon_total*, both or
    neither) every result carries Laplace noise and any aggregate query may be asked; without one, only the
    *templates* run: mappings ``{"id", "sql", "parameters": {name: "integer" | "real" | "text"}}``, each
    carried in the policy as its JSON text (a constraint on ``tds:queryTemplates``, so that it survives the
    policy's normalisation). *max_queries* bounds the number of queries (``odrl:count``)."""
    constraints: list[JsonObject] = []
    if columns is not None:
        names = list(columns)
        if not all(isinstance(c, str) and c for c in names):
            raise ValueError("columns must be non-empty names")
        constraints.append(constraint(TDS_QUERY_COLUMNS, "isAnyOf", names))
    if aggregates is not None:
        chosen = [a.lower() for a in aggregates]
        unknown = [a for a in chosen if a not in SANDBOX_AGGREGATES]
        if unknown or not chosen:
            raise ValueError(f"aggregates must be some of {', '.join(SANDBOX_AGGREGATES)}")
        constraints.append(constraint(TDS_QUERY_AGGREGATES, "isAnyOf", chosen))
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 1:
        raise ValueError("min_group_size must be a whole number of at least 1")
    constraints.append(constraint(TDS_MIN_GROUP_SIZE, "gteq", {"@value": str(min_group_size),
                                                                "@type": XSD_INTEGER}))
    if (epsilon_per_query is None) != (epsilon_total is None):
        raise ValueError("a privacy budget needs both epsilon_per_query and epsilon_total")
    if epsilon_per_query is not None and epsilon_total is not None:
        per_query, total = _epsilon(epsilon_per_query), _epsilon(epsilon_total)
        if total < per_query:
            raise ValueError("epsilon_total must be at least epsilon_per_query")
        constraints.append(constraint(TDS_EPSILON_PER_QUERY, "lteq", _decimal(per_query)))
        constraints.append(constraint(TDS_EPSILON_TOTAL, "lteq", _decimal(total)))
    elif not templates:
        raise ValueError("without a privacy budget (epsilon_per_query, epsilon_total) only query templates run: "
                         "give templates")
    if templates:
        constraints.append(constraint(TDS_QUERY_TEMPLATES, "isAnyOf", [_template_text(t) for t in templates]))
        ids = [t["id"] for t in templates]
        if len(set(ids)) != len(ids):
            raise ValueError("template ids must be unique")
    if max_queries is not None:
        if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
            raise ValueError("max_queries must be a whole number of at least 1")
        constraints.append(constraint("odrl:count", "lteq", {"@value": str(max_queries), "@type": XSD_INTEGER}))
    return offer(target, permissions=[_permission(constraints, action="odrl:aggregate")], assigner=assigner)


def sandbox_from_options(
    *, columns: Sequence[str] | None = None, aggregates: Sequence[str] | None = None, min_group_size: int = 10,
    epsilon_per_query: float | Decimal | None = None, epsilon_total: float | Decimal | None = None,
    templates: Sequence[Mapping[str, Any]] = (), max_queries: int | None = None, price: JsonObject | None = None,
) -> JsonObject:
    """:func:`sandbox` without a target or ``@id``, as :func:`policy_from_options` (the offer sets the target;
    publishing gives the id): the policy of ``tds policy add --sandbox``, with *price* (a :func:`price_duty`,
    typically per query) as a duty of its queries. ``ValueError`` names a bad value or combination (a privacy
    budget without both epsilons, no budget and no templates, a malformed template …)."""
    built = sandbox(OPTIONS_TARGET, columns=columns, aggregates=aggregates, min_group_size=min_group_size,
                    epsilon_per_query=epsilon_per_query, epsilon_total=epsilon_total, templates=templates,
                    max_queries=max_queries)
    if price is not None:
        built["permission"][0]["duty"] = [price]
    built.pop("target", None)
    built.pop("@id", None)
    return built


def _epsilon(value: float | Decimal) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("epsilon must be a number")
    number = Decimal(str(value))
    if not number.is_finite() or number <= 0:
        raise ValueError("epsilon must be a positive number")
    return number


def _decimal(value: Decimal) -> JsonObject:
    return {"@value": format(value.normalize(), "f"), "@type": XSD_DECIMAL}


def _template_text(template: Mapping[str, Any]) -> str:
    """A query template as the JSON text the policy carries (keys sorted, no spaces)."""
    extra = set(template) - {"id", "sql", "parameters"}
    if extra:
        raise ValueError(f"a query template has an id, its sql and parameters, not {', '.join(sorted(extra))}")
    ident, sql, parameters = template.get("id"), template.get("sql"), template.get("parameters", {})
    if not isinstance(ident, str) or not ident or not isinstance(sql, str) or not sql.strip():
        raise ValueError("a query template needs an id and its sql")
    if not isinstance(parameters, Mapping) or not all(
        isinstance(k, str) and k and v in PARAMETER_TYPES for k, v in parameters.items()
    ):
        raise ValueError(f"a query template's parameters map names to one of {', '.join(PARAMETER_TYPES)}")
    body = {"id": ident, "sql": sql, "parameters": dict(parameters)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def data_class_defaults(
    target: str, data_class: str, *, home: str = "CN", assigner: str | None = None,
    purposes: str | Sequence[str] | None = None,
) -> JsonObject:
    """The default policy for a data class (``tds:dataClass``), strictest last:

    * ``general``: use, each use logged;
    * ``important``: and no export outside *home*, the provider informed of each use;
    * ``core``: and use only inside *home*, no distribution or sale;
    * ``personal``: use for the given *purposes* only, no export outside *home*, logged and informed,
      and deleted a year after first use.
    """
    if data_class not in DATA_CLASSES:
        raise ValueError(f"data class must be one of {DATA_CLASSES}")
    parts = [log_each_use(target)]
    if data_class in ("important", "core", "personal"):
        parts += [no_export_outside(target, home), inform_on_use(target)]
    if data_class == "core":
        parts += [region(target, home), prohibit(target, ["odrl:distribute", "odrl:sell"])]
    if data_class == "personal":
        if not purposes:
            raise ValueError("personal data needs the purposes it may be used for")
        parts += [purpose(target, purposes), use_and_delete_after(target, "P1Y")]
    return combine(*parts, assigner=assigner)


def combine(*offers: JsonObject, uid: str | None = None, assigner: str | None = None) -> JsonObject:
    """One offer for the same target: a single ``use`` permission with every constraint and duty of the
    parts' ``use`` permissions, the other permissions and all prohibitions as they are."""
    if not offers:
        raise ValueError("nothing to combine")
    targets = {o["target"] for o in offers}
    if len(targets) != 1:
        raise ValueError("combined offers must have the same target")
    constraints: list[JsonObject] = []
    duties: list[JsonObject] = []
    assignees: list[str] = []
    others: list[JsonObject] = []
    prohibitions: list[JsonObject] = []
    conflict = None
    for o in offers:
        for p in o.get("permission", []):
            if p.get("action") == "use" and set(p) <= {"action", "constraint", "duty", "assignee"}:
                constraints += [c for c in p.get("constraint", []) if c not in constraints]
                duties += [d for d in p.get("duty", []) if d not in duties]
                if "assignee" in p and p["assignee"] not in assignees:
                    assignees.append(p["assignee"])
            elif p not in others:
                others.append(p)
        prohibitions += [p for p in o.get("prohibition", []) if p not in prohibitions]
        conflict = conflict or o.get("odrl:conflict", {}).get("@id", "").removeprefix("odrl:") or None
    use = _permission(constraints, duties)
    # restrict_to's assignees bind every merged constraint and duty: one permission per consumer.
    permissions = [{**use, "assignee": a} for a in assignees] or [use]
    return offer(
        next(iter(targets)), permissions=[*permissions, *others], prohibitions=prohibitions, uid=uid,
        assigner=assigner or next((o["assigner"] for o in offers if "assigner" in o), None),
        conflict=conflict,
    )



#: The placeholder target of a policy built from options: the offer that names the policy sets the real one.
OPTIONS_TARGET = "urn:tds:target"


def policy_from_options(
    purposes: Sequence[str] = (), uses: int | None = None, duration: str | None = None,
    regions: Sequence[str] = (), export_region: str | None = None, consumers: Sequence[str] = (),
    log_uses: bool = False, inform: bool = False, *, verified_regions: Sequence[str] = (),
    spaces: Sequence[str] = (), price: JsonObject | None = None,
) -> JsonObject:
    """The templates the options name (those of ``tds policy add`` and of the console's policy form) combined
    into one policy without a target or ``@id`` (the offer sets the target; publishing gives the id): at most
    *uses* uses, within *duration* (ISO 8601) of the first, no export outside *export_region*, and *price* (a
    :func:`price_duty`) as a duty of the use. No option: allow use. ``ValueError`` names a bad value (a malformed
    duration, fewer than one use)."""
    target = OPTIONS_TARGET
    parts = [allow(target)]
    if price is not None:
        parts.append(offer(target, permissions=[_permission(duties=[price])]))
    if purposes:
        parts.append(purpose(target, list(purposes)))
    if uses is not None:
        parts.append(max_uses(target, uses))
    if duration:
        parts.append(for_duration(target, duration))
    if regions:
        parts.append(region(target, list(regions)))
    if verified_regions:
        parts.append(verified_region(target, list(verified_regions)))
    if spaces:
        parts.append(member_of(target, list(spaces)))
    if export_region:
        parts.append(no_export_outside(target, export_region))
    if consumers:
        parts.append(restrict_to(target, list(consumers)))
    if log_uses:
        parts.append(log_each_use(target))
    if inform:
        parts.append(inform_on_use(target))
    combined = combine(*parts)
    combined.pop("target", None)
    combined.pop("@id", None)
    return combined
