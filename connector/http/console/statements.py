"""The console's statements pages: the settlement statements of the participant's post-paid prices.

The list shows each statement's period, agreement, counterparty, total and state (narrowed to a period, a role
or one agreement), and, for a provider, a form to issue the next statement of an agreement now. A statement's
page shows its lines, the receipt range it bills and the consumer's answer (the acceptance, or the dispute with
each problem it names); the consumer accepts or disputes (with a reason) a statement it received; both sides
download it signed (JSON, checked offline by ``tds statement verify``) or as CSV.

Every read and action is a management route called with the caller's token (``ctx.api``): another
participant's statement is a 404 here as it is through the API.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connector.errors import BadRequest, Forbidden
from connector.http.console import i18n
from connector.http.console.api import segment
from connector.http.console.view import BASE, Console, Ctx, NavItem
from usage_policies import PolicyError, parse_policy, pricing

NAV = (NavItem(f"{BASE}/statements", "nav.statements"),)

#: The longest dispute reason (as the management API takes it).
MAX_REASON = 1000
ROLES = ("provider", "consumer")
STATES = ("issued", "delivered", "received", "accepted", "disputed")

i18n.add({
    "nav.statements": ("Statements", "结算单"),
    "statements.title": ("Statements", "结算单"),
    "statements.intro": ("Settlement statements of the post-paid prices in this participant's agreements, newest "
                         "first: the provider issues one per agreement and billing period, signed; the consumer's "
                         "node checks it against its own records and disputes it at once if it does not match, "
                         "else the consumer accepts or disputes it.",
                         "本参与方协议中后付费价格的结算单，最新的在前：提供方按协议和结算周期签发并签名；"
                         "使用方节点用自己的记录核对，不符即自动提出异议，否则由使用方确认或提出异议。"),
    "statements.none": ("No statements yet.", "尚无结算单。"),
    "statements.filter": ("Show", "筛选"),
    "statements.filter.period": ("Period (2026-11, 2026-W48 or 2026-11-30)", "周期（2026-11、2026-W48 或 2026-11-30）"),
    "statements.filter.role": ("Role", "角色"),
    "statements.filter.any": ("any", "全部"),
    "statements.filter.agreement": ("Agreement", "协议"),
    "statements.filter.submit": ("Show", "显示"),
    "statements.filter.clear": ("Show all", "显示全部"),
    "statements.bad_period": ("A period is written 2026-11 (month), 2026-W48 (week) or 2026-11-30 (day).",
                              "周期的写法为 2026-11（月）、2026-W48（周）或 2026-11-30（日）。"),
    "statements.col.period": ("Period", "周期"),
    "statements.col.agreement": ("Agreement", "协议"),
    "statements.col.counterparty": ("Counterparty", "对方"),
    "statements.col.role": ("Role", "角色"),
    "statements.col.quantities": ("Quantities", "数量"),
    "statements.col.total": ("Total", "合计"),
    "statements.col.state": ("State", "状态"),
    "statements.role.provider": ("Provider", "提供方"),
    "statements.role.consumer": ("Consumer", "使用方"),
    "statements.basis.use": ("uses", "次使用"),
    "statements.basis.query": ("queries", "次查询"),
    "statements.basis.gigabyte": ("GB", "GB"),
    "statements.basis.period": ("periods", "个周期"),
    "statements.issue": ("Issue a statement now", "立即签发结算单"),
    "statements.issue.help": ("Closes the agreement's open stretch now (instead of at the end of its billing "
                              "period) and sends the consumer the signed statement.",
                              "立即结束该协议当前未结算的时段（而不是等到结算周期结束），并把签名的结算单发送给使用方。"),
    "statements.issue.agreement": ("Agreement (as provider, with a post-paid price)",
                                   "协议（作为提供方，含后付费价格）"),
    "statements.issue.submit": ("Issue now", "立即签发"),
    "statements.issue.done": ("Statement issued and sent to the consumer.", "结算单已签发并发送给使用方。"),
    "statements.issue.none": ("No agreement of yours as provider has a post-paid price.",
                              "您作为提供方的协议中没有后付费价格。"),
    "statements.issue.missing": ("Choose an agreement.", "请选择协议。"),
    "statements.detail": ("Statement", "结算单"),
    "statements.id": ("Statement id", "结算单编号"),
    "statements.agreement_link": ("the agreement", "查看协议"),
    "statements.period_range": ("{start} to {end}", "{start} 至 {end}"),
    "statements.issued": ("Issued", "签发时间"),
    "statements.updated": ("Updated", "更新时间"),
    "statements.previous": ("Follows", "上一张"),
    "statements.supersedes": ("Replaces (disputed)", "替代（已有异议的）"),
    "statements.receipts": ("Receipts billed", "计费的使用回执"),
    "statements.receipts.range": ("entries {first} to {last} of the usage log ({uses} permitted uses), the last "
                                  "with hash {head}",
                                  "使用日志第 {first} 至 {last} 条（获准使用 {uses} 次），最后一条的哈希为 {head}"),
    "statements.receipts.none": ("No usage log entry in this period.", "本周期内没有使用日志记录。"),
    "statements.lines": ("Lines", "明细"),
    "statements.line.basis": ("For", "计费项"),
    "statements.line.quantity": ("Quantity", "数量"),
    "statements.line.unit_price": ("Unit price", "单价"),
    "statements.line.tiers": ("Tiers", "阶梯"),
    "statements.line.amount": ("Amount", "金额"),
    "statements.share": ("Platform share", "平台分成"),
    "statements.share.text": ("{percent}% to {platform}: {platform_amount} {currency}; the provider's "
                              "{provider_amount} {currency}",
                              "{percent}% 归 {platform}：{platform_amount} {currency}；提供方所得 "
                              "{provider_amount} {currency}"),
    "statements.answer": ("The consumer's answer", "使用方的答复"),
    "statements.answer.none": ("Not answered yet.", "尚未答复。"),
    "statements.answer.accepted": ("Accepted (countersigned) on {at}.", "已于 {at} 确认（会签）。"),
    "statements.answer.disputed": ("Disputed on {at}; the consumer's own total: {total}.",
                                   "已于 {at} 提出异议；使用方自己的合计：{total}。"),
    "statements.problem.rule": ("Rule", "规则"),
    "statements.problem.detail": ("Problem", "问题"),
    "statements.problem.contested": ("Contested", "异议项"),
    "statements.problem.expected": ("Consumer's figure", "使用方的数字"),
    "statements.reason": ("Note", "说明"),
    "statements.accept": ("Accept", "确认"),
    "statements.accept.help": ("Countersign this statement: it settles the period.", "会签此结算单：本周期即告结清。"),
    "statements.accept.confirm": ("Accept this statement and its total?", "确认此结算单及其合计金额？"),
    "statements.accept.done": ("Statement accepted; the provider is being told.", "结算单已确认，正在通知提供方。"),
    "statements.dispute": ("Dispute", "提出异议"),
    "statements.dispute.reason": ("Reason (the provider sees it)", "原因（提供方可见）"),
    "statements.dispute.done": ("Statement disputed; the provider is being told.", "已提出异议，正在通知提供方。"),
    "statements.dispute.reason_required": ("Give a reason for the dispute (1 to 1000 characters).",
                                           "请填写异议原因（1 至 1000 个字符）。"),
    "statements.consumer_only": ("Only the consumer answers a statement.", "只有使用方可以答复结算单。"),
    "statements.provider_only": ("Only the provider of an agreement issues its statements.",
                                 "只有协议的提供方可以签发结算单。"),
    "statements.next": ("Issue the next statement of this agreement now", "立即签发此协议的下一张结算单"),
    "statements.download": ("Download", "下载"),
    "statements.download.json": ("Signed statement (JSON)", "签名的结算单（JSON）"),
    "statements.download.csv": ("Lines for accounting (CSV)", "会计用明细（CSV）"),
    "statements.download.help": ("The JSON holds the signed statement, the signed answer and both parties' DID "
                                 "documents: anyone can check it offline with \"tds statement verify FILE\".",
                                 "JSON 文件包含签名的结算单、签名的答复和双方的 DID 文档：任何人都可以用 "
                                 "“tds statement verify FILE”离线校验。"),
})


@dataclass(frozen=True)
class StatementRow:
    """One statement as the list shows it."""

    id: str
    agreement: str
    role: str
    counterparty: str
    period: str
    quantities: list[tuple[str, str]]
    total: str
    currency: str
    state: str
    reason: str


def statement_row(found: dict[str, Any]) -> StatementRow:
    period = found.get("period")
    period = period if isinstance(period, dict) else {}
    quantities = found.get("quantities")
    quantities = quantities if isinstance(quantities, dict) else {}
    return StatementRow(id=str(found.get("id", "")), agreement=str(found.get("agreement", "")),
                        role=str(found.get("role", "")), counterparty=str(found.get("counterparty", "")),
                        period=str(period.get("label", "")),
                        quantities=[(str(k), str(v)) for k, v in quantities.items()],
                        total=str(found.get("total", "")), currency=str(found.get("currency", "")),
                        state=str(found.get("state", "")), reason=str(found.get("reason") or ""))


def priced_agreements(agreements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agreements this participant provides, in force, whose terms hold a post-paid price: those a
    statement can be issued for."""
    out = []
    for found in agreements:
        if found.get("role") != "provider" or found.get("state") != "FINALIZED":
            continue
        try:
            if pricing.postpaid_terms(parse_policy(found.get("agreement") or {})):
                out.append(found)
        except (PolicyError, ValueError, TypeError, KeyError):
            continue  # terms it cannot read: the API would refuse the statement with the reason
    return out


def export_filename(statement_id: str, ext: str) -> str:
    """A download name made of the statement id's safe characters only."""
    return "statement-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", statement_id).strip("._")[:120] or "export") + f".{ext}"


def _field(ctx: Ctx, name: str) -> str:
    value = ctx.form.get(name)
    return value.strip() if isinstance(value, str) else ""


def routes(console: Console) -> list[web.RouteDef]:
    @console.page()
    async def listing(ctx: Ctx) -> web.StreamResponse:
        query = ctx.request.query
        period, role, agreement = (query.get("period", "").strip()[:40], query.get("role", ""),
                                   query.get("agreement", "").strip()[:500])
        if period:
            try:
                pricing.parse_period_label(period)
            except pricing.PricingError as exc:
                raise BadRequest(ctx.t("statements.bad_period"), path="period") from exc
        role = role if role in ROLES else ""
        found = await ctx.api.get("/statements", period=period or None, role=role or None,
                                  agreement=agreement or None)
        issuable = priced_agreements(await ctx.api.get("/agreements"))
        return ctx.render("statements.html", statements=[statement_row(s) for s in found.get("statements", [])],
                          period=period, role=role, agreement=agreement, roles=ROLES, issuable=issuable)

    @console.page()
    async def detail(ctx: Ctx) -> web.StreamResponse:
        found = await ctx.api.get(f"/statements/{segment(ctx.request.match_info['id'])}")
        document = found.get("document") if isinstance(found.get("document"), dict) else {}
        answer = found.get("answer") if isinstance(found.get("answer"), dict) else None
        return ctx.render("statement.html", s=statement_row(found), found=found, document=document,
                          answer=answer, disputed=answer is not None and "problems" in answer,
                          period=found.get("period") or {}, max_reason=MAX_REASON)

    async def answer(ctx: Ctx, how: str, body: dict[str, Any] | None) -> web.StreamResponse:
        path = f"/statements/{segment(ctx.request.match_info['id'])}"
        found = await ctx.api.get(path)  # another participant's statement: 404 here
        if found.get("role") != "consumer":
            raise Forbidden(ctx.t("statements.consumer_only"))
        await ctx.api.post(f"{path}/{how}", body)
        return ctx.redirect(f"{BASE}{path}", ok=ctx.t(f"statements.{how}.done"))

    @console.page()
    async def accept(ctx: Ctx) -> web.StreamResponse:
        return await answer(ctx, "accept", None)

    @console.page()
    async def dispute(ctx: Ctx) -> web.StreamResponse:
        reason = _field(ctx, "reason")
        if not reason or len(reason) > MAX_REASON:
            raise BadRequest(ctx.t("statements.dispute.reason_required"), path="reason")
        return await answer(ctx, "dispute", {"reason": reason})

    @console.page()
    async def issue(ctx: Ctx) -> web.StreamResponse:
        agreement_id = _field(ctx, "agreement")
        if not agreement_id:
            raise BadRequest(ctx.t("statements.issue.missing"), path="agreement")
        found = await ctx.api.get(f"/agreements/{segment(agreement_id)}")  # not this participant's: 404
        if found.get("role") != "provider":
            raise Forbidden(ctx.t("statements.provider_only"))
        issued = await ctx.api.post("/statements", {"agreement": agreement_id, "until": "now"})
        return ctx.redirect(f"{BASE}/statements/{segment(str(issued['id']))}", ok=ctx.t("statements.issue.done"))

    @console.page()
    async def export_json(ctx: Ctx) -> web.StreamResponse:
        statement_id = ctx.request.match_info["id"]
        found = await ctx.api.get(f"/statements/{segment(statement_id)}/export", format="json")
        disposition = f'attachment; filename="{export_filename(statement_id, "json")}"'
        return web.Response(text=json.dumps(found, indent=2, ensure_ascii=False) + "\n",
                            content_type="application/json", charset="utf-8",
                            headers={"Content-Disposition": disposition})

    @console.page()
    async def export_csv(ctx: Ctx) -> web.StreamResponse:
        statement_id = ctx.request.match_info["id"]
        found = await ctx.api.get(f"/statements/{segment(statement_id)}/export", format="csv")
        text = found.decode("utf-8", errors="replace") if isinstance(found, bytes) else str(found)
        return web.Response(text=text, content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{export_filename(statement_id, "csv")}"'})

    return [
        web.get(f"{BASE}/statements", listing),
        web.post(f"{BASE}/statements/issue", issue),
        web.get(f"{BASE}/statements/{{id}}", detail),
        web.get(f"{BASE}/statements/{{id}}/statement.json", export_json),
        web.get(f"{BASE}/statements/{{id}}/statement.csv", export_csv),
        web.post(f"{BASE}/statements/{{id}}/accept", accept),
        web.post(f"{BASE}/statements/{{id}}/dispute", dispute),
    ]
