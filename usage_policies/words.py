# ruff: noqa: RUF001  (the Chinese sentences use full-width punctuation)
"""ODRL policies in plain words, in English or simplified Chinese (pure: no I/O).

``describe(policy, lang)`` gives one short sentence per rule, constraint and duty of a policy as it is
written (compact JSON-LD with or without ``odrl:`` prefixes, full IRIs, ``{"@id": …}`` and ``{"@value": …}``
terms, logical constraints), for a person deciding whether to accept an offer. The policy is read as it
stands, without the engine's checks: a term the wording does not know gets a faithful generic sentence
(action, operand, operator and right operand as written) rather than being left out, so nothing a policy
asks for is hidden from the reader. The work is bounded: at most :data:`MAX_SENTENCES` sentences of at
most :data:`MAX_CHARS` characters, and nesting is followed :data:`MAX_DEPTH` levels deep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

from usage_policies.model import ODRL, TDS

Lang = Literal["en", "zh"]

MAX_SENTENCES = 200
MAX_CHARS = 200
MAX_DEPTH = 6
_MAX_VALUES = 50  # values shown of one right operand
_MAX_TEMPLATE_CHARS = 20_000  # a query template's JSON text read for its id (longer: shown cut, as written)
_PREFIXED = re.compile(r"\S*:\S")  # a sentence that begins with a compact IRI keeps its case (idsc:READ)

_RDF_VALUE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#value"

# Sentence templates, key → (English, 中文). Fields are filled with str.format.
_T: dict[str, tuple[str, str]] = {
    "allowed": ("{action} is allowed", "允许{action}"),
    "allowed_many": ("{action} are allowed", "允许{action}"),
    "allowed_purpose": ("{action} is allowed for the purpose {v}", "允许{action}，仅限用途：{v}"),
    "allowed_purpose_many": ("{action} are allowed for the purpose {v}", "允许{action}，仅限用途：{v}"),
    "allowed_purposes": ("{action} is allowed for one of the purposes {v}", "允许{action}，仅限以下用途之一：{v}"),
    "allowed_purposes_many": ("{action} are allowed for one of the purposes {v}",
                              "允许{action}，仅限以下用途之一：{v}"),
    "allowed_purpose_kind": ("{action} is allowed for a purpose that is a kind of {v}",
                             "允许{action}，仅限属于 {v} 的用途"),
    "allowed_purpose_kind_many": ("{action} are allowed for a purpose that is a kind of {v}",
                                  "允许{action}，仅限属于 {v} 的用途"),
    "not_purpose": ("Not for the purpose {v}", "不得用于：{v}"),
    "prohibited": ("{action} is not allowed", "禁止{action}"),
    "prohibited_many": ("{action} are not allowed", "禁止{action}"),
    "prohibited_if": ("{action} is not allowed when {cond}", "当{cond}时，禁止{action}"),
    "prohibited_if_many": ("{action} are not allowed when {cond}", "当{cond}时，禁止{action}"),
    "refined": ("{action} only when {cond}", "仅当{cond}时{action}"),
    "target_refined": ("Only the data where {cond}", "仅限满足以下条件的数据：{cond}"),
    "assignee": ("Only for {v}", "仅限 {v}"),
    "assignee_refined": ("Only for parties where {cond}", "仅限满足以下条件的参与方：{cond}"),
    "prohibited_for": ("This prohibition applies to {v}", "该禁止适用于 {v}"),
    "prohibited_for_refined": ("This prohibition applies to parties where {cond}",
                               "该禁止适用于满足以下条件的参与方：{cond}"),
    "max_uses": ("At most {v} uses", "最多使用 {v} 次"),
    "fewer_uses": ("Fewer than {v} uses", "使用少于 {v} 次"),
    "within_first_use": ("Within {v} of the first use", "首次使用后 {v} 内"),
    "from": ("From {v} on", "自 {v} 起"),
    "after": ("After {v}", "{v} 之后"),
    "before": ("Before {v}", "{v} 之前"),
    "until": ("Until {v}", "截至 {v}"),
    "region": ("Only in region {v}", "仅限区域 {v}"),
    "not_region": ("Not in region {v}", "不得在区域 {v}"),
    "verified_region": ("Only for participants whose region a trusted issuer vouches for: {v}",
                        "仅限受信任签发方证明其所在区域为以下之一的参与方：{v}"),
    "not_verified_region": ("Not for participants whose region a trusted issuer vouches for: {v}",
                            "不适用于受信任签发方证明其所在区域为以下之一的参与方：{v}"),
    "member_of": ("Only members of data space {v}", "仅限数据空间 {v} 的成员"),
    "member_of_any": ("Only members of one of the data spaces {v}", "仅限以下任一数据空间的成员：{v}"),
    "member_of_all": ("Only members of all the data spaces {v}", "仅限同时属于以下全部数据空间的成员：{v}"),
    "not_member_of": ("Not for members of data space {v}", "不适用于数据空间 {v} 的成员"),
    "no_export": ("The data must not leave {v}", "数据不得离开 {v}"),
    "no_export_to": ("The data must not go to {v}", "数据不得流向 {v}"),
    "recipient": ("Only for recipient {v}", "仅限接收方 {v}"),
    "connector": ("Only on connector {v}", "仅限连接器 {v}"),
    "legal_entity": ("Only for the legal entity {v}, as a trusted issuer vouches",
                     "仅限受信任签发方证明的法人 {v}"),
    "certified": ("Only for participants a trusted issuer certifies at level {v} or higher",
                  "仅限受信任签发方认证为 {v} 级或以上的参与方"),
    "data_class": ("Only for data of class {v}", "仅限 {v} 级数据"),
    "query_columns": ("Queries may use only the columns {v}", "查询只能使用以下列：{v}"),
    "query_aggregates": ("Queries may compute only {v}", "查询只能计算：{v}"),
    "min_group": ("Results only for groups of at least {v} records: smaller groups are left out",
                  "仅返回至少包含 {v} 条记录的分组，更小的分组不予返回"),
    "epsilon_query": ("Each query's results carry random noise (differential privacy, ε at most {v} per query)",
                      "每次查询的结果都加入随机噪声（差分隐私，每次查询 ε 不超过 {v}）"),
    "epsilon_total": ("All queries together spend a privacy budget of at most ε {v}",
                      "全部查询合计的隐私预算 ε 不超过 {v}"),
    "query_templates": ("The provider's query templates: {v}", "提供方的查询模板：{v}"),
    "condition": ("Condition: {cond}", "条件：{cond}"),
    "all_of": ("All of these: {items}", "须全部满足：{items}"),
    "any_of": ("At least one of these: {items}", "须至少满足其一：{items}"),
    "one_of": ("Exactly one of these: {items}", "须恰好满足其一：{items}"),
    "in_order": ("These, in this order: {items}", "须依次满足：{items}"),
    "log": ("Each use is logged", "每次使用都会被记录"),
    "log_for": ("Each use is logged for {v}", "每次使用都会被记录，供 {v} 查看"),
    "inform": ("The provider is informed of each use", "每次使用都会通知提供方"),
    "inform_party": ("{v} is informed of each use", "每次使用都会通知 {v}"),
    "delete_each": ("The data is deleted after each use", "每次使用后删除数据"),
    "delete_now": ("The data must be deleted", "必须删除数据"),
    "delete_after": ("The data is deleted {v} after the first use", "首次使用 {v} 后删除数据"),
    "delete_by": ("The data is deleted by {v}", "须在 {v} 前删除数据"),
    "pay": ("Pay {amount} {unit} per use", "每次使用支付 {amount} {unit}"),
    "pay_query": ("Pay {amount} {unit} per query answered", "每次查询支付 {amount} {unit}"),
    "pay_gigabyte": ("Pay {amount} {unit} per GB transferred", "每传输 1 GB 支付 {amount} {unit}"),
    "pay_period": ("Subscription: pay {amount} {unit} per {period}", "订阅：每{period}支付 {amount} {unit}"),
    "settled": ("{s}, settled {period}", "{s}，{period}结算"),
    "rounded": ("{s} (rounded to {quantum}, {mode})", "{s}（精确到 {quantum}，{mode}）"),
    "tier": ("After {start} {units}, each further {unit_one} costs {price} {currency}",
             "超过 {start}{units}后，{each} {price} {currency}"),
    "pay_before": ("Pay {amount} {unit} before use", "使用前支付 {amount} {unit}"),
    "pay_amount": ("Pay {amount} {unit}", "支付 {amount} {unit}"),
    "pay_to": ("Payment goes to {v}", "款项支付给 {v}"),
    "duty": ("Duty: {action}", "义务：{action}"),
    "duty_before": ("Before use: {action}", "使用前须：{action}"),
    "duty_party": ("Duty: {action} ({v})", "义务：{action}（{v}）"),
    "duty_when": ("This duty applies when {cond}", "该义务适用于：{cond}"),
    "consequence": ("If a duty is not fulfilled: {s}", "如未履行义务：{s}"),
    "remedy": ("If the prohibition is broken: {s}", "如违反禁止：{s}"),
    "obligation": ("Obligation: {action}", "必须履行：{action}"),
    "obligation_party": ("Obligation: {action} ({v})", "必须履行：{action}（{v}）"),
    "conflict_prohibit": ("Where a permission and a prohibition conflict, the prohibition wins",
                          "许可与禁止冲突时，以禁止为准"),
    "conflict_perm": ("Where a permission and a prohibition conflict, the permission wins",
                      "许可与禁止冲突时，以许可为准"),
    "more": ("… and more rules not shown", "……更多规则未列出"),
    "empty": ("The policy states no rules", "该策略未规定任何规则"),
    "value_ref": ("the value at {v}", "{v} 处的值"),
}

# Actions, bare ODRL name → (English, 中文). Others are shown as written (camelCase split in English).
_ACTIONS: dict[str, tuple[str, str]] = {
    "use": ("use", "使用"), "read": ("read", "读取"), "display": ("display", "显示"),
    "print": ("print", "打印"), "play": ("play", "播放"), "stream": ("stream", "流式传输"),
    "distribute": ("distribute", "分发"), "sell": ("sell", "出售"), "give": ("give", "赠与"),
    "lend": ("lend", "出借"), "transfer": ("transfer ownership", "转让所有权"), "derive": ("derive", "派生"),
    "reproduce": ("reproduce", "复制"), "modify": ("modify", "修改"), "delete": ("delete the data", "删除数据"),
    "aggregate": ("aggregate", "聚合"), "anonymize": ("anonymize", "匿名化"), "archive": ("archive", "归档"),
    "concurrentUse": ("concurrent use", "并发使用"), "execute": ("execute", "执行"), "index": ("index", "索引"),
    "install": ("install", "安装"), "present": ("present", "展示"), "translate": ("translate", "翻译"),
    "textToSpeech": ("text to speech", "文字转语音"), "watermark": ("watermark", "加水印"),
    "attribute": ("attribute the source", "注明来源"), "attribution": ("attribute the source", "注明来源"),
    "compensate": ("pay", "支付"), "inform": ("inform", "通知"), "acceptTracking": ("accept tracking", "接受跟踪"),
    "obtainConsent": ("obtain consent", "取得同意"), "reviewPolicy": ("review the policy", "审阅策略"),
    "ensureExclusivity": ("ensure exclusivity", "确保排他性"), "include": ("include", "包含"),
    "uninstall": ("uninstall", "卸载"), "grantUse": ("grant use", "授予使用权"),
    "nextPolicy": ("pass on with the next policy", "按后续策略转授"), "move": ("move", "移动"),
    "synchronize": ("synchronize", "同步"), "annotate": ("annotate", "注释"),
}

# Left operands, bare name → (English, 中文), for generic sentences.
_OPERANDS: dict[str, tuple[str, str]] = {
    "dateTime": ("the date and time", "日期时间"),
    "elapsedTime": ("the time since the first use", "首次使用以来的时间"),
    "count": ("the number of uses", "使用次数"), "purpose": ("the purpose", "用途"),
    "spatial": ("the region", "区域"), "recipient": ("the recipient", "接收方"),
    "systemDevice": ("the connector", "连接器"), "event": ("the event", "事件"),
    "payAmount": ("the amount to pay", "支付金额"), "percentage": ("the percentage", "百分比"),
    "meteredPer": ("what the price is paid for", "计价单位"), "billingPeriod": ("the billing period", "结算周期"),
    "rounding": ("the rounding", "舍入规则"), "priceTiers": ("a price tier", "阶梯价格"),
    "dataClass": ("the data class", "数据级别"), "exportDestination": ("the export destination", "出境目的地"),
    "verifiedRegion": ("the verified region", "经验证的区域"),
    "memberOf": ("the verified membership", "经验证的成员资格"),
    "legalEntityId": ("the verified legal entity id", "经验证的法人标识"),
    "certificationLevel": ("the verified certification level", "经验证的认证等级"),
    "queryColumns": ("the columns a query uses", "查询使用的列"),
    "queryAggregates": ("the aggregates a query computes", "查询计算的聚合"),
    "minGroupSize": ("the smallest group in a result", "结果中最小分组的记录数"),
    "epsilonPerQuery": ("the privacy budget of a query", "单次查询的隐私预算"),
    "epsilonTotal": ("the privacy budget of all queries", "全部查询的隐私预算"),
    "queryTemplates": ("the query", "查询"),
    "delayPeriod": ("the delay", "延迟时间"), "deliveryChannel": ("the delivery channel", "交付渠道"),
    "fileFormat": ("the file format", "文件格式"), "industry": ("the industry", "行业"),
    "language": ("the language", "语言"), "media": ("the medium", "媒介"),
    "meteredTime": ("the metered time", "计量时间"),
    "product": ("the product", "产品"), "relativePosition": ("the relative position", "相对位置"),
    "resolution": ("the resolution", "分辨率"), "spatialCoordinates": ("the coordinates", "坐标"),
    "timeInterval": ("the time interval", "时间间隔"), "unitOfCount": ("the unit of count", "计数单位"),
    "version": ("the version", "版本"), "virtualLocation": ("the virtual location", "虚拟位置"),
    "absolutePosition": ("the position", "位置"), "absoluteSize": ("the size", "大小"),
    "absoluteSpatialPosition": ("the spatial position", "空间位置"),
    "absoluteTemporalPosition": ("the time position", "时间位置"), "relativeSize": ("the relative size", "相对大小"),
    "relativeSpatialPosition": ("the relative spatial position", "相对空间位置"),
    "relativeTemporalPosition": ("the relative time position", "相对时间位置"),
}

# Operators, bare name → (English, 中文), for generic sentences ("{operand} {operator} {value}").
_OPERATORS: dict[str, tuple[str, str]] = {
    "eq": ("is", "为"), "neq": ("is not", "不为"), "lt": ("is less than", "小于"), "lteq": ("is at most", "不超过"),
    "term-lteq": ("is at most", "不超过"), "gt": ("is more than", "大于"), "gteq": ("is at least", "不少于"),
    "isA": ("is a kind of", "属于"), "isPartOf": ("is within", "位于"), "hasPart": ("includes", "包含"),
    "isAnyOf": ("is one of", "为以下之一："), "isAllOf": ("is all of", "为以下全部："),
    "isNoneOf": ("is none of", "不为以下任何一个："),
}

_EVENTS: dict[str, tuple[str, str]] = {"policyUsage": ("the use", "使用")}

# A price's terms (usage_policies.pricing): billing periods, rounding modes, and what each basis counts.
_PERIODS: dict[str, tuple[str, str, str]] = {  # period → (settled how often, one period in English, in Chinese)
    "P1M": ("monthly", "month", "月"), "P1W": ("weekly", "week", "周"), "P1D": ("daily", "day", "日")}
_PERIOD_ZH = {"P1M": "按月", "P1W": "按周", "P1D": "按日"}
_ROUNDING: dict[str, tuple[str, str]] = {
    "half-up": ("half up", "四舍五入"), "half-even": ("half to even", "四舍六入五成双"),
    "up": ("away from zero", "远离零舍入"), "down": ("toward zero", "向零舍入"),
    "ceiling": ("up", "向上舍入"), "floor": ("down", "向下舍入")}
# basis → (one, many, Chinese count unit, Chinese "each …")
_BASES: dict[str, tuple[str, str, str, str]] = {
    "use": ("use", "uses", " 次使用", "每次使用"), "query": ("query", "queries", " 次查询", "每次查询"),
    "gigabyte": ("GB", "GB", " GB ", "每 GB"), "period": ("period", "periods", " 个周期", "每个周期")}
_PRICE_TERMS = frozenset({"meteredPer", "billingPeriod", "rounding", "priceTiers"})
_DECIMAL_TEXT = re.compile(r"^[0-9]{1,15}(\.[0-9]{1,12})?$")

_LOGICAL = {"and": "all_of", "or": "any_of", "xone": "one_of", "andSequence": "in_order"}
_POSITIVE = frozenset({"eq", "isAnyOf", "isPartOf", "isA"})  # "within": the value must be (inside) one of these
_NEGATIVE = frozenset({"neq", "isNoneOf"})

_DURATION = re.compile(
    r"^(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)
_DURATION_UNITS: tuple[tuple[str, str, str], ...] = (
    ("year", "years", "年"), ("month", "months", "个月"), ("week", "weeks", "周"), ("day", "days", "天"),
    ("hour", "hours", "小时"), ("minute", "minutes", "分钟"), ("second", "seconds", "秒"),
)


def describe(policy: dict[str, Any], lang: Lang) -> list[str]:
    """One plain sentence per rule, constraint and duty of *policy*, in *lang* ("en" or "zh")."""
    return _Writer(lang).policy(policy)


def duration_words(iso8601: str, lang: Lang) -> str | None:
    """An ISO 8601 duration in words (``P30D`` → "30 days" / "30天"), None when it is not one."""
    m = _DURATION.match(iso8601.strip())
    if m is None or iso8601.strip() in ("P", "-P") or iso8601.strip().endswith("T"):
        return None
    sign, *parts = m.groups()
    words = []
    for amount, (one, many, zh) in zip(parts, _DURATION_UNITS, strict=True):
        if amount is None:
            continue
        number = amount if "." in amount else (amount.lstrip("0") or "0")
        if lang == "zh":
            words.append(f"{number}{zh}")
        else:
            words.append(f"{number} {one if number == '1' else many}")
    if not words:
        return None
    text = "".join(words) if lang == "zh" else ", ".join(words)
    return ("-" if sign else "") + text


def _json(value: Any) -> str:
    """A value with no wording of its own, as its JSON text (cut: only the start is shown)."""
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)[: MAX_CHARS + 1]
    except (RecursionError, TypeError, ValueError):
        return "…"


def _cut(text: str) -> str:
    text = " ".join(text.split())  # no line breaks or runs of spaces from a peer's strings
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _items(value: Any, limit: int = MAX_SENTENCES) -> list[Any]:
    """A JSON-LD value as a list: None → [], a list or ``@list``/``@set`` → its items, else [value]. Past
    *limit* items the rest is left out (a sentence says so: there are never more sentences than that)."""
    if value is None:
        return []
    if isinstance(value, dict) and ("@list" in value or "@set" in value):
        value = value.get("@list", value.get("@set"))
    if isinstance(value, list):
        return value[:limit]
    return [value]


def _bare(term: str) -> str:
    """The ODRL or TDS name of a term (``odrl:eq``, ``http://www.w3.org/ns/odrl/2/eq`` → ``eq``); others as
    written."""
    for prefix in (ODRL, "odrl:", TDS, "tds:"):
        if term.startswith(prefix) and len(term) > len(prefix):
            return term[len(prefix):]
    return term


def _get(node: dict[str, Any], name: str) -> Any:
    """A property in any of its spellings: ``permission``, ``odrl:permission``, the full IRI."""
    for key in (name, "odrl:" + name, ODRL + name):
        if key in node:
            return node[key]
    return None


def _ident(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("@id", "uid", "@value"):
            if isinstance(value.get(key), str | int | float) and not isinstance(value.get(key), bool):
                return str(value[key])
    return None


class _Writer:
    def __init__(self, lang: Lang) -> None:
        self.zh = lang == "zh"
        self.out: list[str] = []
        self.full = False

    # -- output --------------------------------------------------------------------------------------------
    def t(self, key: str, **fields: str) -> str:
        en, zh = _T[key]
        text = (zh if self.zh else en).format(**fields)
        if not self.zh and en.startswith("{action}") and not _PREFIXED.match(text):
            text = text[:1].upper() + text[1:]  # a sentence begins with the action's name
        return text

    def inner(self, text: str) -> str:
        """A sentence of ours inside another: "If …: each use is logged"."""
        if self.zh or _PREFIXED.match(text) or text[1:2].isupper():
            return text
        return text[:1].lower() + text[1:]

    def say(self, text: str) -> None:
        if len(self.out) >= MAX_SENTENCES:
            self.full = True  # the last sentence becomes "and more" (policy())
            return
        self.out.append(_cut(text))

    # -- values --------------------------------------------------------------------------------------------
    def join(self, texts: list[str]) -> str:
        if self.zh:
            return "、".join(texts)
        if len(texts) <= 2:
            return " and ".join(texts)
        return ", ".join(texts[:-1]) + ", and " + texts[-1]

    def value(self, value: Any, *, duration: bool = False, depth: int = 0) -> str:
        """A right operand (or a list of them) as text, durations in words."""
        if depth > MAX_DEPTH:
            return "…"
        if isinstance(value, list) or (isinstance(value, dict) and ("@list" in value or "@set" in value)):
            items = _items(value, _MAX_VALUES + 1)
            texts = [self.value(v, duration=duration, depth=depth + 1) for v in items[:_MAX_VALUES]]
            return ("、" if self.zh else ", ").join(texts + ["…"] * (len(items) > _MAX_VALUES))
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            text = str(value)
        elif isinstance(value, dict) and "@value" in value:
            raw = value["@value"]
            text = raw if isinstance(raw, str) else _json(raw)
            kind = value.get("@type")
            duration = duration or (isinstance(kind, str) and kind.endswith("duration"))
        elif isinstance(value, dict) and isinstance(value.get("@id"), str):
            name = _bare(value["@id"])
            words = _EVENTS.get(name)
            return (words[1] if self.zh else words[0]) if words else value["@id"]
        else:
            text = _json(value)
        if duration:
            return duration_words(text, "zh" if self.zh else "en") or text
        return text[:MAX_CHARS]

    def right(self, c: dict[str, Any], *, duration: bool = False) -> str:
        right = _get(c, "rightOperand")
        if right is None:
            reference = _get(c, "rightOperandReference")
            return self.t("value_ref", v=self.value(reference))
        return self.value(right, duration=duration)

    def action_name(self, value: Any) -> str:
        name = _ident(value) or "?"
        words = _ACTIONS.get(_bare(name))
        if words is not None:
            return words[1] if self.zh else words[0]
        name = _bare(name)
        if self.zh or ":" in name or "/" in name:
            return name
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower() if name.isascii() else name

    def party(self, value: Any) -> str:
        return _ident(value) or self.value(value)

    def unit(self, value: Any) -> str:
        text = _ident(value) or ""
        return text.rstrip("/#").rsplit("/", 1)[-1].rsplit("#", 1)[-1] if "/" in text or "#" in text else text

    # -- constraints ---------------------------------------------------------------------------------------
    def logical(self, c: dict[str, Any]) -> tuple[str, list[Any]] | None:
        for name, key in _LOGICAL.items():
            value = _get(c, name)
            if value is not None:
                return key, _items(value)
        return None

    def condition(self, c: Any, depth: int = 0) -> str:
        """A constraint as a condition phrase: "the region is one of CN" (for prohibitions, duties,
        refinements, and any constraint without a sentence of its own)."""
        if not isinstance(c, dict) or depth > MAX_DEPTH:
            return self.value(c)
        logical = self.logical(c)
        if logical is not None:
            key, items = logical
            return self.t(key, items="; ".join(self.inner(self.condition(i, depth + 1)) for i in items))
        if set(c) <= {"@id", "uid"}:
            return _ident(c) or "?"
        left = _ident(_get(c, "leftOperand")) or "?"
        op = _ident(_get(c, "operator")) or "?"
        name = _bare(left)
        operand = _OPERANDS.get(name)
        operator = _OPERATORS.get(_bare(op))
        value = self.right(c, duration=name == "elapsedTime")
        unit = _get(c, "unit")
        if unit is not None:
            value = f"{value} {self.unit(unit)}"
        o = (operand[1] if self.zh else operand[0]) if operand else left
        w = (operator[1] if self.zh else operator[0]) if operator else op
        return f"{o} {w} {value}"

    def restriction(self, c: Any, depth: int = 0) -> str:
        """A permission's constraint as a sentence: "Only in region CN-GD", else "Condition: …"."""
        if isinstance(c, dict) and depth <= MAX_DEPTH:
            logical = self.logical(c)
            if logical is not None:
                key, items = logical
                return self.t(key, items="; ".join(self.inner(self.restriction(i, depth + 1)) for i in items))
            special = self.known(c)
            if special is not None:
                return special
        return self.t("condition", cond=self.condition(c, depth))

    def known(self, c: dict[str, Any]) -> str | None:
        name = _bare(_ident(_get(c, "leftOperand")) or "")
        op = _bare(_ident(_get(c, "operator")) or "")
        if _get(c, "rightOperand") is None:
            return None
        right = _get(c, "rightOperand")
        v = self.value(right, duration=name == "elapsedTime")
        many = isinstance(right, list) and len(right) > 1
        if name == "count" and op in ("lteq", "term-lteq"):
            return self.t("max_uses", v=v)
        if name == "count" and op == "lt":
            return self.t("fewer_uses", v=v)
        if name == "elapsedTime" and op in ("lteq", "term-lteq", "lt"):
            return self.t("within_first_use", v=v)
        if name == "dateTime" and op in ("gteq", "gt", "lt", "lteq"):
            return self.t({"gteq": "from", "gt": "after", "lt": "before", "lteq": "until"}[op], v=v)
        if name == "spatial" and op in _POSITIVE - {"isA"}:
            return self.t("region", v=v)
        if name == "spatial" and op in _NEGATIVE:
            return self.t("not_region", v=v)
        if name == "verifiedRegion" and op in _POSITIVE - {"isA"}:
            return self.t("verified_region", v=v)
        if name == "verifiedRegion" and op in _NEGATIVE:
            return self.t("not_verified_region", v=v)
        if name == "memberOf" and op in ("eq", "isAnyOf", "isPartOf"):
            return self.t("member_of_any" if many else "member_of", v=v)
        if name == "memberOf" and op == "isAllOf":
            return self.t("member_of_all" if many else "member_of", v=v)
        if name == "memberOf" and op in _NEGATIVE:
            return self.t("not_member_of", v=v)
        if name == "exportDestination" and op in _POSITIVE - {"isA"}:
            return self.t("no_export", v=v)
        if name == "exportDestination" and op in _NEGATIVE:
            return self.t("no_export_to", v=v)
        if name == "purpose" and op in _NEGATIVE:
            return self.t("not_purpose", v=v)
        if name == "recipient" and op in ("eq", "isAnyOf"):
            return self.t("recipient", v=v)
        if name == "systemDevice" and op in ("eq", "isAnyOf"):
            return self.t("connector", v=v)
        if name == "legalEntityId" and op in ("eq", "isAnyOf"):
            return self.t("legal_entity", v=v)
        if name == "certificationLevel" and op == "gteq":
            return self.t("certified", v=v)
        if name == "dataClass" and op in ("eq", "isAnyOf"):
            return self.t("data_class", v=v)
        return self.sandbox_term(name, op, right, v)

    def sandbox_term(self, name: str, op: str, right: Any, v: str) -> str | None:
        """The data sandbox's terms (``tds:queryColumns`` …, on an ``aggregate`` permission)."""
        if name == "queryColumns" and op in ("eq", "isAnyOf", "isPartOf"):
            return self.t("query_columns", v=v)
        if name == "queryAggregates" and op in ("eq", "isAnyOf", "isPartOf"):
            return self.t("query_aggregates", v=v)
        if name == "minGroupSize" and op in ("eq", "gteq"):
            return self.t("min_group", v=v)
        if name == "epsilonPerQuery" and op in ("eq", "lteq", "term-lteq"):
            return self.t("epsilon_query", v=v)
        if name == "epsilonTotal" and op in ("eq", "lteq", "term-lteq"):
            return self.t("epsilon_total", v=v)
        if name == "queryTemplates" and op in ("eq", "isAnyOf"):
            return self.t("query_templates", v=self.template_ids(right))
        return None

    def template_ids(self, right: Any) -> str:
        """The ids of query templates carried as JSON texts (``{"id": …, "sql": …}``); anything else as written."""
        shown = []
        for item in _items(right, _MAX_VALUES):
            ident = None
            if isinstance(item, str) and len(item) <= _MAX_TEMPLATE_CHARS:
                try:
                    parsed = json.loads(item)
                except (RecursionError, ValueError):
                    parsed = None
                if isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
                    ident = parsed["id"]
            shown.append(ident if ident is not None else self.value(item))
        return ("、" if self.zh else ", ").join(shown)

    # -- rules ---------------------------------------------------------------------------------------------
    def actions(self, rule: dict[str, Any], default: Any) -> tuple[list[str], list[Any]]:
        """The rule's action names and the refinements of its actions."""
        names: list[str] = []
        refinements: list[Any] = []
        raw = _get(rule, "action")
        for item in _items(raw if raw is not None else default) or ["use"]:
            if isinstance(item, dict) and not set(item) <= {"@id", "uid"}:
                name = item.get("rdf:value", item.get(_RDF_VALUE, _get(item, "value") or item.get("@id")))
                names.append(self.action_name(name))
                refinements += _items(_get(item, "refinement"))
            else:
                names.append(self.action_name(item))
        return names, refinements

    def parties_and_assets(self, rule: dict[str, Any], *, prohibition: bool = False) -> None:
        for item in _items(_get(rule, "assignee")):
            refinement = _items(_get(item, "refinement")) if isinstance(item, dict) else []
            if refinement:
                cond = "; ".join(self.condition(c) for c in refinement)
                self.say(self.t("prohibited_for_refined" if prohibition else "assignee_refined", cond=cond))
            else:
                self.say(self.t("prohibited_for" if prohibition else "assignee", v=self.party(item)))
        for item in _items(_get(rule, "target")):
            refinement = _items(_get(item, "refinement")) if isinstance(item, dict) else []
            if refinement:
                self.say(self.t("target_refined", cond="; ".join(self.condition(c) for c in refinement)))

    def permission(self, rule: dict[str, Any], default_action: Any) -> None:
        names, refinements = self.actions(rule, default_action)
        action = self.join(names)
        plural = "_many" if len(names) > 1 and not self.zh else ""
        constraints = _items(_get(rule, "constraint"))
        head = self.t("allowed" + plural, action=action)
        for i, c in enumerate(constraints):  # the first positive purpose constraint joins the head
            if not isinstance(c, dict) or _bare(_ident(_get(c, "leftOperand")) or "") != "purpose":
                continue
            op = _bare(_ident(_get(c, "operator")) or "")
            right = _get(c, "rightOperand")
            if op not in _POSITIVE or right is None:
                continue
            many = isinstance(right, list) and len(right) > 1
            key = "allowed_purpose_kind" if op == "isA" else "allowed_purposes" if many else "allowed_purpose"
            head = self.t(key + plural, action=action, v=self.value(right))
            constraints = constraints[:i] + constraints[i + 1:]
            break
        self.say(head)
        for r in refinements:
            self.say(self.t("refined", action=action, cond=self.inner(self.condition(r))))
        self.parties_and_assets(rule)
        for c in constraints:
            if self.full:
                return
            self.say(self.restriction(c))
        for duty in _items(_get(rule, "duty")):
            if self.full:
                return
            self.duty(duty, 0)

    def prohibition(self, rule: dict[str, Any], default_action: Any) -> None:
        names, refinements = self.actions(rule, default_action)
        action = self.join(names)
        plural = "_many" if len(names) > 1 and not self.zh else ""
        conditions = [self.inner(self.condition(c)) for c in (*_items(_get(rule, "constraint")), *refinements)]
        if conditions:
            self.say(self.t("prohibited_if" + plural, action=action, cond="; ".join(conditions)))
        else:
            self.say(self.t("prohibited" + plural, action=action))
        self.parties_and_assets(rule, prohibition=True)
        for remedy in _items(_get(rule, "remedy")):
            self.duty(remedy, 1, wrap="remedy")

    def duty(self, duty: Any, depth: int, wrap: str | None = None) -> None:
        if not isinstance(duty, dict) or depth > MAX_DEPTH:
            return
        sentences = self.duty_sentences(duty)
        for s in sentences:
            self.say(self.t(wrap, s=self.inner(s)) if wrap else s)
        for consequence in _items(_get(duty, "consequence")):
            self.duty(consequence, depth + 1, wrap="consequence")

    def duty_sentences(self, duty: dict[str, Any], *, obligation: bool = False) -> list[str]:
        """A duty (of a permission, or a policy's *obligation*, which is not tied to a use) in sentences."""
        names, refinements = self.actions(duty, None)
        constraints = [c for c in _items(_get(duty, "constraint")) if isinstance(c, dict)]
        before = False
        rest: list[Any] = []
        bounds: dict[str, tuple[str, Any]] = {}
        amount: tuple[Any, Any] | None = None
        pricing: dict[str, dict[str, Any]] = {}  # the price's terms, by bare name (compensate only)
        for c in [*constraints, *refinements]:
            if not isinstance(c, dict) or self.logical(c) is not None:
                rest.append(c)
                continue
            name = _bare(_ident(_get(c, "leftOperand")) or "")
            op = _bare(_ident(_get(c, "operator")) or "")
            right = _get(c, "rightOperand")
            if name == "event" and op in ("lt", "lteq") and _bare(_ident(right) or "") == "policyUsage":
                before = True
            elif name in ("elapsedTime", "dateTime") and op in ("lt", "lteq", "eq") and name not in bounds:
                bounds[name] = (op, right)
            elif name == "payAmount" and op == "eq" and amount is None:
                amount = (right, _get(c, "unit"))
            elif name in _PRICE_TERMS and op in ("eq", "isAnyOf") and name not in pricing:
                pricing[name] = c
            else:
                rest.append(c)
        raw = _items(_get(duty, "action"))
        kind = ""
        if len(raw) == 1:
            item = raw[0]
            if isinstance(item, dict) and not set(item) <= {"@id", "uid"}:
                item = item.get("rdf:value", item.get(_RDF_VALUE, _get(item, "value")))
            kind = _bare(_ident(item) or "")
        before = before or kind in ("obtainConsent", "reviewPolicy")
        if kind != "compensate" or amount is None:  # a price's terms on something that is not a price: as written
            rest.extend(pricing.values())
        out: list[str] = []
        if kind == "acceptTracking" and not before:
            party = _get(duty, "trackingParty")
            out.append(self.t("log_for", v=self.party(party)) if party is not None else self.t("log"))
        elif kind == "inform" and not before:
            party = _get(duty, "informedParty")
            out.append(self.t("inform_party", v=self.party(party)) if party is not None else self.t("inform"))
        elif kind == "delete" and not before:
            if "dateTime" in bounds:
                out.append(self.t("delete_by", v=self.value(bounds["dateTime"][1])))
            elif "elapsedTime" in bounds:
                out.append(self.t("delete_after", v=self.value(bounds["elapsedTime"][1], duration=True)))
            else:
                out.append(self.t("delete_now" if obligation else "delete_each"))
            bounds = {}
        elif kind == "compensate" and amount is not None:
            fields = {"amount": self.value(amount[0]), "unit": self.unit(amount[1]) if amount[1] is not None else ""}
            if before:  # pre-paid: a precondition of use, not settled by statements (its terms do not apply)
                out.append(self.t("pay_before", **fields).replace("  ", " "))
            else:
                out.extend(self.price(fields, pricing, rest, obligation=obligation))
            party = _get(duty, "compensatedParty")
            if party is not None:
                out.append(self.t("pay_to", v=self.party(party)))
        else:
            if amount is not None:  # a pay amount on some other action: say it as it is
                rest.append({"leftOperand": "payAmount", "operator": "eq", "rightOperand": amount[0],
                             **({"unit": amount[1]} if amount[1] is not None else {})})
            parties = [self.party(p) for key in ("informedParty", "trackingParty", "compensatedParty",
                                                   "attributedParty", "consentingParty", "assignee")
                       for p in _items(_get(duty, key))]
            action = self.join(names)
            if before:
                out.append(self.t("duty_before", action=action))
            elif parties:
                key = "obligation_party" if obligation else "duty_party"
                out.append(self.t(key, action=action, v=self.join(parties)))
            else:
                out.append(self.t("obligation" if obligation else "duty", action=action))
        for name, (op, right) in bounds.items():  # by when a duty other than deletion is due
            rest.append({"leftOperand": name, "operator": op, "rightOperand": right})
        if rest:
            out.append(self.t("duty_when", cond="; ".join(self.condition(c) for c in rest)))
        return out

    def price(self, fields: dict[str, str], terms: dict[str, dict[str, Any]], rest: list[Any], *,
              obligation: bool) -> list[str]:
        """A post-paid price (``usage_policies.pricing``): what it is paid for, how often statements settle it and
        how they round, then its tiers. A term it cannot read goes to *rest* (said as written); the defaults are
        those the statements apply (per use, monthly, to 0.01 half up)."""

        def term(name: str) -> str | None:
            c = terms.get(name)
            value = _ident(_get(c, "rightOperand")) if c is not None else None
            return _bare(value) if value is not None else None

        basis, period, rounding = term("meteredPer"), term("billingPeriod"), term("rounding")
        if basis is not None and basis not in _BASES:  # paid for something unknown: the amount, the term as written
            rest.extend(terms.values())
            return [self.t("pay_amount", **fields).replace("  ", " ")]
        if period is not None and period not in _PERIODS:  # not said as settled in any period of ours
            rest.append(terms["billingPeriod"])
            period = "?"
        parts = rounding.split() if rounding is not None else ["0.01", "half-up"]
        if len(parts) != 2 or parts[1] not in _ROUNDING or not _DECIMAL_TEXT.match(parts[0]):
            rest.append(terms["rounding"])
            parts = []
        period = period or "P1M"
        settled, one_en, one_zh = _PERIODS.get(period, ("", "period", "个周期"))
        if basis is None and obligation and not terms:
            return [self.t("pay_amount", **fields).replace("  ", " ")]  # a payment the policy owes, as written
        basis = basis or "use"
        if basis == "period":
            text = self.t("pay_period", period=one_zh if self.zh else one_en, **fields)
        else:
            text = self.t({"use": "pay", "query": "pay_query", "gigabyte": "pay_gigabyte"}[basis], **fields)
            if settled:
                text = self.t("settled", s=text, period=_PERIOD_ZH[period] if self.zh else settled)
        if parts:
            mode = _ROUNDING[parts[1]][1 if self.zh else 0]
            text = self.t("rounded", s=text, quantum=parts[0], mode=mode)
        out = [text.replace("  ", " ")]
        tiers = terms.get("priceTiers")
        for item in _items(_get(tiers, "rightOperand"), _MAX_VALUES) if tiers is not None else []:
            start, _, price = (_ident(item) or "").partition(":")
            if not (_DECIMAL_TEXT.match(start) and _DECIMAL_TEXT.match(price)):
                rest.append({"leftOperand": "priceTiers", "operator": "eq", "rightOperand": item})
                continue
            one, many, count_zh, each_zh = _BASES[basis]
            out.append(self.t("tier", start=start, units=count_zh if self.zh else many, unit_one=one,
                              each=each_zh, price=price, currency=fields["unit"]).replace("  ", " "))
        return out

    def policy(self, policy: Any) -> list[str]:
        if not isinstance(policy, dict):
            return [_cut(self.t("empty"))]
        default_action = _get(policy, "action")
        for item in _items(_get(policy, "assignee")):
            self.say(self.t("assignee", v=self.party(item)))
        for rule in _rules(policy, "permission"):
            if not self.full:
                self.permission(rule, default_action)
        for rule in _rules(policy, "prohibition"):
            if not self.full:
                self.prohibition(rule, default_action)
        for duty in _rules(policy, "obligation"):
            for s in self.duty_sentences(duty, obligation=True) if not self.full else []:
                self.say(s)
        conflict = _bare(_ident(_get(policy, "conflict")) or "")
        if conflict in ("prohibit", "perm") and _get(policy, "prohibition") is not None:
            self.say(self.t("conflict_" + conflict))
        if not self.out:
            self.say(self.t("empty"))
        if self.full:
            self.out[-1] = _cut(self.t("more"))
        return self.out


def _rules(policy: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    for rule in _items(_get(policy, name)):
        if isinstance(rule, dict):
            yield rule
