"""The console's usage pages: how an agreement's data is used.

Consumer side: the uses against the allowance, a chart of permitted uses per day and purpose, the latest
decisions with their reasons, the usage log's chain checked as ``tds log verify`` checks it
(:func:`connector.services.usage.check_log`), and a form to check a use (``dryRun``) or count one without
delivery. Provider side: the consumer's signed receipts (``GET /agreements/{id}/usage-report``) with the
anomalies found in them.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connector.errors import BadRequest, Forbidden
from connector.http.console import i18n
from connector.http.console.agreements import agreement_row, asset_titles
from connector.http.console.api import segment
from connector.http.console.view import BASE, Console, Ctx, NavItem
from connector.services.usage import check_log

NAV = (NavItem(f"{BASE}/usage", "nav.usage"),)

#: As ``UseIn`` takes them.
MAX_FIELD = 200
#: The chart shows at most this many days (the latest with uses); the table below it has them all.
MAX_DAYS = 60
#: The report's name for a use without a purpose.
NO_PURPOSE = "(none)"
#: Bar colours by purpose (in order of first use); fixed values, never from data.
PALETTE = ("#0b5cad", "#1c7c3c", "#9a6700", "#7b3fa0", "#b3261e", "#00838f", "#5d4037", "#546e7a")

# The chart's geometry (SVG user units).
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 30
MAX_BAR = 48
MAX_LABELS = 12

i18n.add({
    "usage.title": ("Usage", "使用情况"),
    "usage.intro": ("How each agreement's data is used: counted uses, decisions, the signed usage log and, as "
                    "provider, the consumer's receipts.",
                    "每份协议数据的使用情况：计数、决策、签名的使用日志，以及作为提供方收到的使用方回执。"),
    "usage.none": ("No agreements yet.", "尚无协议。"),
    "usage.open": ("Usage", "使用情况"),
    "usage.detail": ("Usage", "使用情况"),
    "usage.agreement": ("Agreement", "协议"),
    "usage.allowance": ("Allowance", "使用额度"),
    "usage.meter": ("{n} of {max} uses", "已使用 {n} 次，共 {max} 次"),
    "usage.no_limit": ("{n} uses, no limit", "已使用 {n} 次，不限次数"),
    "usage.uses_left": ("Uses left", "剩余次数"),
    "usage.use_until": ("Use until", "可使用至"),
    "usage.use_period": ("Use period from the first use", "自首次使用起的期限"),
    "usage.not_after": ("Not after", "截止时间"),
    "usage.first_use": ("First use", "首次使用"),
    "usage.chart": ("Uses per day and purpose", "每日各用途的使用次数"),
    "usage.chart.title": ("Permitted uses per day, stacked by purpose", "每日获准使用次数（按用途堆叠）"),
    "usage.chart.desc": ("{days} day(s) from {first} to {last}, {total} permitted use(s) in all.",
                         "从 {first} 到 {last} 共 {days} 天，获准使用共 {total} 次。"),
    "usage.chart.empty": ("No permitted use yet.", "尚无获准的使用。"),
    "usage.chart.capped": ("The chart shows the latest {n} days with uses; the table has them all.",
                           "图中仅显示最近 {n} 个有使用的日期；表格中列出全部。"),
    "usage.chart.table": ("The chart's numbers", "图表数据"),
    "usage.day": ("Day", "日期"),
    "usage.total": ("Total", "合计"),
    "usage.no_purpose": ("(no purpose)", "（未注明用途）"),
    "usage.decisions": ("Latest decisions", "最近的决策"),
    "usage.decisions.none": ("No use or duty logged yet.", "尚无使用或义务记录。"),
    "usage.seq": ("#", "序号"),
    "usage.at": ("When", "时间"),
    "usage.kind": ("Kind", "类型"),
    "usage.action": ("Action", "动作"),
    "usage.purpose": ("Purpose", "用途"),
    "usage.application": ("Application", "应用"),
    "usage.decision": ("Decision", "决策"),
    "usage.reasons": ("Reasons", "原因"),
    "usage.chain": ("Usage log", "使用日志"),
    "usage.chain.help": ("Every decision is a hash-chained entry of the log, and the node signs the chain's head; "
                         "checked here as the command \"tds log verify\" checks it.",
                         "每个决策都是哈希链中的一条记录，节点对链头签名；此处的校验与命令“tds log verify”相同。"),
    "usage.chain.intact": ("chain intact ({n} entries, head {head})", "链完整（{n} 条记录，链头 {head}）"),
    "usage.chain.empty": ("chain intact (no entries yet)", "链完整（尚无记录）"),
    "usage.chain.broken": ("chain broken at entry #{seq}: {problem}", "链在第 {seq} 条记录处断开：{problem}"),
    "usage.chain.acknowledged": ("The provider acknowledged the log up to entry #{seq}.",
                                 "提供方已确认到第 {seq} 条记录。"),
    "usage.use": ("Use now", "立即使用"),
    "usage.use.help": ("Check asks what a use would be decided now (nothing is counted or logged). Use counts and "
                       "logs one use without delivering the data (for data your application holds by other "
                       "means).",
                       "“检查”只询问现在使用会得到什么决策（不计数、不记录）。“使用”会计数并记录一次使用，但不交付数据"
                       "（适用于应用已通过其他方式持有的数据）。"),
    "usage.use.check": ("Check only", "仅检查"),
    "usage.use.submit": ("Use (counted, no data delivered)", "使用（计数，不交付数据）"),
    "usage.use.bad_mode": ("Choose Check only or Use.", "请选择“仅检查”或“使用”。"),
    "usage.use.too_long": ("Action and purpose take at most 200 characters each.", "动作和用途各不超过 200 个字符。"),
    "usage.use.consumer_only": ("Only the consumer of an agreement uses its data.", "只有协议的使用方可以使用其数据。"),
    "usage.use.bad_seq": ("seq must be a log entry's number.", "seq 必须是日志记录的序号。"),
    "usage.result": ("Result", "结果"),
    "usage.result.check": ("A use now would be decided:", "现在使用将得到的决策："),
    "usage.result.check_note": ("Nothing was counted or logged.", "未计数，也未记录。"),
    "usage.result.use": ("Log entry #{seq}:", "日志记录 #{seq}："),
    "usage.result.repeated": ("(a repeat of an earlier use: not counted again)", "（重复的使用：不再计数）"),
    "usage.decision.permit": ("permit", "允许"),
    "usage.decision.deny": ("deny", "拒绝"),
    "usage.receipts": ("The consumer's receipts", "使用方的回执"),
    "usage.receipts.help": ("What the consumer's node reported, signed, about the use of the data.",
                            "使用方节点签名报告的数据使用情况。"),
    "usage.receipts.entries": ("Log entries received", "收到的日志记录"),
    "usage.receipts.heads": ("Signed heads", "签名链头"),
    "usage.receipts.last": ("Last receipt", "最近回执"),
    "usage.receipts.never": ("none yet", "尚无"),
    "usage.receipts.uses": ("Permitted uses", "获准使用"),
    "usage.receipts.denied": ("Denied uses", "被拒绝的使用"),
    "usage.receipts.overdue": ("Receipts are overdue: the consumer's node has not reported for a while.",
                               "回执逾期：使用方节点已有一段时间未报告。"),
    "usage.anomalies": ("Anomalies", "异常"),
    "usage.anomalies.found": ("{n} anomaly(ies) found in the consumer's receipts.", "在使用方回执中发现 {n} 项异常。"),
    "usage.anomalies.capped": ("More anomalies were found than are kept.", "发现的异常多于保存的数量。"),
    "usage.anomalies.none": ("No anomaly in the receipts.", "回执中没有异常。"),
    "usage.anomaly.at": ("When", "时间"),
    "usage.anomaly.kind": ("Kind", "类型"),
    "usage.anomaly.detail": ("Detail", "详情"),
    "usage.duties": ("Duties carried out", "已履行的义务"),
    "usage.revoked": ("This agreement was revoked ({reason}); no use is left.",
                      "此协议已被撤销（{reason}）；不再允许使用。"),
    "usage.agreement_link": ("The agreement", "协议详情"),
})


# -- the chart (numbers only; every label is escaped by the template) -------------------------------------

@dataclass(frozen=True)
class Segment:
    purpose: str
    count: int
    y: float
    height: float
    color: str


@dataclass(frozen=True)
class Bar:
    day: str
    label: str
    show_label: bool
    total: int
    x: float
    width: float
    segments: list[Segment]


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom_y: int
    right_x: int
    bars: list[Bar]
    ticks: list[Tick]
    #: (purpose, colour), in order of first use.
    legend: list[tuple[str, str]]
    #: Every day: (day, {purpose: uses}, total), oldest first (the table fallback).
    rows: list[tuple[str, dict[str, int], int]]
    total: int
    capped: bool


def uses_per_day(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Permitted uses by UTC day and purpose, from usage log entries (as the provider's report counts them)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in entries:
        if e.get("kind") == "use" and e.get("decision") == "permit" and isinstance(e.get("at"), str):
            out[e["at"][:10]][str(e.get("purpose") or NO_PURPOSE)] += 1
    return {day: dict(purposes) for day, purposes in sorted(out.items())}


def chart(per_day: dict[str, dict[str, int]]) -> Chart | None:
    """A stacked bar chart of *per_day* (day -> purpose -> uses); None when there is nothing to draw."""
    rows = [(day, dict(p), sum(p.values())) for day, p in sorted(per_day.items()) if sum(p.values()) > 0]
    if not rows:
        return None
    shown = rows[-MAX_DAYS:]
    purposes: list[str] = []
    for _, by_purpose, _ in rows:
        purposes.extend(p for p in sorted(by_purpose) if p not in purposes)
    colors = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(purposes)}
    top = max(total for _, _, total in shown)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom_y = TOP + plot_h
    slot = plot_w / len(shown)
    bar_w = min(MAX_BAR, slot * 0.7)
    every = math.ceil(len(shown) / MAX_LABELS)
    bars = []
    for i, (day, by_purpose, total) in enumerate(shown):
        y, segments = float(bottom_y), []
        for purpose in purposes:
            count = by_purpose.get(purpose, 0)
            if count:
                h = plot_h * count / top
                y -= h
                segments.append(Segment(purpose, count, round(y, 2), round(h, 2), colors[purpose]))
        bars.append(Bar(day=day, label=day[5:], show_label=(len(shown) - 1 - i) % every == 0, total=total,
                        x=round(LEFT + i * slot + (slot - bar_w) / 2, 2), width=round(bar_w, 2), segments=segments))
    ticks = [Tick(v, round(bottom_y - plot_h * v / top, 2)) for v in sorted({0, top // 2, top})]
    return Chart(width=WIDTH, height=HEIGHT, left=LEFT, bottom_y=bottom_y, right_x=WIDTH - RIGHT, bars=bars,
                 ticks=ticks, legend=[(p, colors[p]) for p in purposes], rows=rows,
                 total=sum(total for _, _, total in rows), capped=len(rows) > len(shown))


# -- the pages ---------------------------------------------------------------------------------------------

def _field(ctx: Ctx, name: str) -> str:
    value = ctx.form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _seq(ctx: Ctx) -> int | None:
    raw = ctx.request.query.get("seq")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise BadRequest(ctx.t("usage.use.bad_seq"), path="seq")
    return int(raw)


async def usage_page(ctx: Ctx, agreement_id: str, *, check: dict[str, Any] | None = None) -> web.Response:
    path = segment(agreement_id)
    found = await ctx.api.get(f"/agreements/{path}")  # another participant's agreement: 404 here
    row = agreement_row(found, await asset_titles(ctx, [found]))
    values: dict[str, Any] = {"a": row, "check": check, "result": None, "max_field": MAX_FIELD}
    if row.role == "provider":
        report = await ctx.api.get(f"/agreements/{path}/usage-report")
        values.update(report=report, uses=report.get("uses", 0), allowance=report.get("allowance") or {},
                      chart=chart(report.get("usesPerDay") or {}))
        return ctx.render("usage.html", **values)
    summary = await ctx.api.get(f"/usage/{path}")
    log = await ctx.api.get(f"/usage/{path}/log")
    entries = log.get("entries") or []
    # The same check as `tds log verify`: hash links, counts, signed heads, the provider's acknowledgement.
    problem = check_log(entries, log.get("heads") or [], log.get("didDocument") or {}, log.get("acknowledgement"),
                        log.get("providerDidDocument"))
    seq = _seq(ctx)
    if seq is not None:
        values["result"] = next((e for e in entries if e.get("seq") == seq), None)
    values.update(summary=summary, uses=summary.get("uses", 0), allowance=summary.get("allowance") or {},
                  chart=chart(uses_per_day(entries)), problem=problem, entries=len(entries),
                  head=entries[-1].get("hash", "") if entries else "", acknowledgement=log.get("acknowledgement"))
    return ctx.render("usage.html", **values)


def routes(console: Console) -> list[web.RouteDef]:
    @console.page()
    async def listing(ctx: Ctx) -> web.StreamResponse:
        found = await ctx.api.get("/agreements")
        titles = await asset_titles(ctx, found)
        return ctx.render("usage_list.html", agreements=[agreement_row(a, titles) for a in found])

    @console.page()
    async def detail(ctx: Ctx) -> web.StreamResponse:
        return await usage_page(ctx, ctx.request.match_info["id"])

    @console.page()
    async def use(ctx: Ctx) -> web.StreamResponse:
        agreement_id = ctx.request.match_info["id"]
        mode, action, purpose = _field(ctx, "mode"), _field(ctx, "action") or "use", _field(ctx, "purpose")
        if mode not in ("check", "use"):
            raise BadRequest(ctx.t("usage.use.bad_mode"), path="mode")
        if len(action) > MAX_FIELD or len(purpose) > MAX_FIELD:
            raise BadRequest(ctx.t("usage.use.too_long"))
        found = await ctx.api.get(f"/agreements/{segment(agreement_id)}")
        if found.get("role") != "consumer":
            raise Forbidden(ctx.t("usage.use.consumer_only"))
        body: dict[str, Any] = {"agreementId": agreement_id, "action": action, "purpose": purpose}
        if mode == "check":
            # Nothing changes: the answer is shown on the page itself.
            outcome = await ctx.api.post("/usage", {**body, "dryRun": True})
            return await usage_page(ctx, agreement_id, check=outcome)
        # A counted use without delivery; the id is new for every press of the button (a retry of the same id
        # would not be counted again, which is for applications that resend).
        outcome = await ctx.api.post("/usage", {**body, "useId": str(uuid.uuid4()), "deliver": False})
        return ctx.redirect(f"{BASE}/usage/{segment(agreement_id)}?seq={int(outcome['seq'])}#result")

    return [
        web.get(f"{BASE}/usage", listing),
        web.get(f"{BASE}/usage/{{id}}", detail),
        web.post(f"{BASE}/usage/{{id}}/use", use),
    ]
