"""The console's negotiations pages: every contract negotiation of the participant (newest first), and one
negotiation with its steps, the offer's terms in plain words, the agreement and both parties' signatures once
it is FINALIZED, its Accept and Terminate buttons, and its live progress (server-sent events).

A step is an event of the negotiation's history; the state a message moved the negotiation to is read from
the protocol's state table (``connector.protocol.negotiation``). The signatures are checked offline by the
check of ``tds agreement verify`` (``connector.protocol.agreements.check_bundle``) on the agreement's evidence
bundle. Every read and action is a management route called with the caller's token (``ctx.api``): another
participant's negotiation is a 404 here as it is through the API.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connector.errors import BadRequest, TdsError
from connector.http.console import i18n
from connector.http.console.agreements import ProofView, proof_views
from connector.http.console.api import segment
from connector.http.console.view import BASE, Console, Ctx, NavItem, event_stream
from connector.protocol.negotiation import INITIAL, TERMINAL, TRANSITIONS, Role, State
from usage_policies.words import describe

NAV = (NavItem(f"{BASE}/negotiations", "nav.negotiations"),)

#: States after which nothing changes.
FINAL = frozenset(s.value for s in TERMINAL)
#: The state each protocol message moves a negotiation to (DSP 2025-1 §7.1, the one state table).
STATE_AFTER: dict[str, str] = {
    **{kind.value: state.value for moves in TRANSITIONS.values() for kind, state in moves.items()},
    **{kind.value: state.value for kind, state in INITIAL.items()},
}
#: Each poll of the stream waits this long for the negotiation to reach a final state (``?wait=``).
POLL_S = 1.0
#: The longest termination reason (as ``TerminateIn`` takes it).
MAX_REASON = 1000
#: Rows of the listing, and most steps shown (the latest).
LIST_LIMIT = 200
MAX_STEPS = 500
#: The element the live stream's messages update.
LIVE_ID = "negotiation-live"
STATES = tuple(s.value for s in State)

i18n.add({
    "negotiations.title": ("Negotiations", "协商"),
    "negotiations.intro": ("Every contract negotiation of this participant, newest first.",
                           "本参与方的所有合同协商，最新的在前。"),
    "negotiations.none": ("No negotiations yet: find an offer under Discover data and negotiate it.",
                          "尚无协商：请在“发现数据”中找到要约并发起协商。"),
    "negotiations.filter": ("State", "状态"),
    "negotiations.filter.any": ("Any", "任意"),
    "negotiations.filter.submit": ("Show", "显示"),
    "negotiations.filter.bad": ("Unknown state: choose one of the list.", "未知状态：请从列表中选择。"),
    "negotiations.col.asset": ("Asset", "资产"),
    "negotiations.col.role": ("Role", "角色"),
    "negotiations.col.peer": ("Peer", "对方"),
    "negotiations.col.state": ("State", "状态"),
    "negotiations.col.reason": ("Reason", "原因"),
    "negotiations.col.updated": ("Updated", "更新时间"),
    "negotiations.role.provider": ("Provider", "提供方"),
    "negotiations.role.consumer": ("Consumer", "使用方"),
    "negotiations.detail": ("Negotiation", "协商"),
    "negotiations.id": ("Negotiation id", "协商编号"),
    "negotiations.state": ("State", "状态"),
    "negotiations.reason": ("Reason", "原因"),
    "negotiations.peer": ("Peer", "对方"),
    "negotiations.asset": ("Asset", "资产"),
    "negotiations.offer_id": ("Offer id", "要约编号"),
    "negotiations.started": ("Started", "开始时间"),
    "negotiations.updated": ("Updated", "更新时间"),
    "negotiations.progress": ("Steps so far", "已完成的步骤"),
    "negotiations.live.waiting": ("Waiting for the peer… this page follows the negotiation as it moves on.",
                                  "正在等待对方……本页面会跟随协商进度更新。"),
    "negotiations.live.final": ("The negotiation has ended: reload the page to see its outcome.",
                                "协商已结束：请刷新页面查看结果。"),
    "negotiations.live.ended": ("The negotiation has ended.", "协商已结束。"),
    "negotiations.terminated": ("Terminated", "已终止"),
    "negotiations.steps": ("Steps", "步骤"),
    "negotiations.steps.none": ("No steps yet.", "暂无步骤。"),
    "negotiations.steps.earlier": ("{n} earlier steps are not shown.", "另有 {n} 个较早的步骤未显示。"),
    "negotiations.step.at": ("Time", "时间"),
    "negotiations.step.state": ("State", "状态"),
    "negotiations.step.what": ("What happened", "发生了什么"),
    "negotiations.kind.message-out": ("Sent", "已发送"),
    "negotiations.kind.message-in": ("Received", "已收到"),
    "negotiations.kind.error": ("Refused", "已拒绝"),
    "negotiations.kind.duplicate": ("Received again", "重复收到"),
    "negotiations.terms": ("Terms of the offer", "要约条款"),
    "negotiations.terms_raw": ("The offer (ODRL, JSON)", "要约原文（ODRL，JSON）"),
    "negotiations.agreement": ("Agreement", "协议"),
    "negotiations.agreement.id": ("Agreement id", "协议编号"),
    "negotiations.agreement.open": ("Open the agreement", "查看协议"),
    "negotiations.agreement.unavailable": ("The agreement's evidence cannot be read: {reason}",
                                           "无法读取协议证据：{reason}"),
    "negotiations.proofs": ("Signatures", "签名"),
    "negotiations.proofs_help": ("Checked on this node without any network, as `tds agreement verify` checks them.",
                                 "在本节点离线校验，与 `tds agreement verify` 的校验方式相同。"),
    "negotiations.proof.provider": ("Provider's proof", "提供方的签名"),
    "negotiations.proof.consumer": ("Consumer's proof", "使用方的签名"),
    "negotiations.proof.method": ("Verification method", "验证方法"),
    "negotiations.proof.created": ("Signed at", "签名时间"),
    "negotiations.proof.check": ("Check", "校验结果"),
    "negotiations.proof.valid": ("valid", "有效"),
    "negotiations.proof.invalid": ("invalid", "无效"),
    "negotiations.proof.missing": ("not signed", "未签名"),
    "negotiations.accept": ("Accept the offer", "接受要约"),
    "negotiations.accept.help": ("The provider made this offer; accepting it asks the provider for the agreement.",
                                 "提供方提出了此要约；接受后将请求提供方签订协议。"),
    "negotiations.accept.submit": ("Accept", "接受"),
    "negotiations.accept.done": ("Offer accepted.", "已接受要约。"),
    "negotiations.terminate": ("Terminate the negotiation", "终止协商"),
    "negotiations.terminate.reason": ("Reason (the peer sees it)", "原因（对方可见）"),
    "negotiations.terminate.confirm": ("Terminate this negotiation? It cannot be resumed.",
                                       "确定终止此协商？终止后无法恢复。"),
    "negotiations.terminate.submit": ("Terminate", "终止"),
    "negotiations.terminate.done": ("Negotiation terminated; the peer is being told.", "协商已终止，正在通知对方。"),
    "negotiations.terminate.reason_required": ("Give a reason for the termination (1 to 1000 characters).",
                                               "请填写终止原因（1 至 1000 个字符）。"),
})


@dataclass(frozen=True)
class Step:
    """One event of a negotiation's history as the page shows it."""

    at: str
    kind: str
    label: str
    state: str
    detail: str


def state_after(detail: str) -> str:
    """The state a message event moved the negotiation to ("ContractAgreementMessage from …" → AGREED);
    "" for an event that is not a protocol message."""
    first = detail.split(" ", 1)[0].rstrip(":")
    return STATE_AFTER.get(first, "")


def steps_of(lang: i18n.Lang, negotiation: dict[str, Any]) -> list[Step]:
    history = negotiation.get("history")
    steps = []
    for event in history if isinstance(history, list) else []:
        if not isinstance(event, dict):
            continue
        kind, detail = str(event.get("kind", "")), str(event.get("detail", ""))
        key = f"negotiations.kind.{kind}"
        steps.append(Step(at=str(event.get("at", "")), kind=kind,
                          label=i18n.translate(lang, key) if key in i18n.CATALOG else kind,
                          state=state_after(detail) if kind.startswith("message-") else "", detail=detail))
    return steps


def progress_text(steps: list[Step]) -> str:
    """The states the negotiation went through: "REQUESTED → AGREED → VERIFIED → FINALIZED"."""
    states: list[str] = []
    for step in steps:
        if step.state and (not states or states[-1] != step.state):
            states.append(step.state)
    return " → ".join(states)


def live_message(lang: i18n.Lang, negotiation: dict[str, Any]) -> dict[str, Any]:
    """The live stream's message for *negotiation* (see ``static/console.js``)."""
    state = str(negotiation.get("state", ""))
    final = state in FINAL
    return {"id": LIVE_ID, "final": final, "fields": {
        "state": state, "reason": str(negotiation.get("reason") or ""),
        "steps": progress_text(steps_of(lang, negotiation)),
        "note": i18n.translate(lang, "negotiations.live.final" if final else "negotiations.live.waiting")}}


def agreement_id_of(negotiation: dict[str, Any]) -> str:
    agreement = negotiation.get("agreement")
    found = agreement.get("@id") if isinstance(agreement, dict) else None
    return found if isinstance(found, str) else ""


def _text(ctx: Ctx, name: str) -> str:
    value = ctx.form.get(name)
    return value.strip() if isinstance(value, str) else ""


def routes(console: Console) -> list[web.RouteDef]:
    @console.page()
    async def listing(ctx: Ctx) -> web.StreamResponse:
        state = ctx.request.query.get("state", "").strip()
        if state and state not in STATES:
            raise BadRequest(ctx.t("negotiations.filter.bad"), path="state")
        found = await ctx.api.get("/negotiations", limit=LIST_LIMIT, state=state or None)
        return ctx.render("negotiations.html", negotiations=found, states=STATES, chosen=state)

    @console.page()
    async def detail(ctx: Ctx) -> web.StreamResponse:
        path = f"/negotiations/{segment(ctx.request.match_info['id'])}"
        negotiation = await ctx.api.get(path)  # another participant's negotiation: 404
        steps = steps_of(ctx.lang, negotiation)
        offer = negotiation.get("offer") if isinstance(negotiation.get("offer"), dict) else {}
        agreement_id = agreement_id_of(negotiation)
        proofs: list[ProofView] = []
        unavailable = ""
        if negotiation.get("state") == State.FINALIZED and agreement_id:
            try:
                proofs = proof_views(await ctx.api.get(f"/agreements/{segment(agreement_id)}/evidence"))
            except TdsError as exc:  # the negotiation is shown all the same, with why
                unavailable = exc.message
        live = live_message(ctx.lang, negotiation)
        return ctx.render(
            "negotiation.html", n=negotiation, steps=steps[-MAX_STEPS:], earlier=max(0, len(steps) - MAX_STEPS),
            live=live["fields"], final=live["final"], live_id=LIVE_ID, sentences=describe(offer, ctx.lang),
            raw=json.dumps(offer, indent=2, ensure_ascii=False), agreement_id=agreement_id, proofs=proofs,
            unavailable=unavailable, can_accept=negotiation.get("role") == Role.CONSUMER
            and negotiation.get("state") == State.OFFERED, max_reason=MAX_REASON)

    @console.page()
    async def accept(ctx: Ctx) -> web.StreamResponse:
        path = f"/negotiations/{segment(ctx.request.match_info['id'])}"
        await ctx.api.post(f"{path}/accept")  # not the consumer, or not OFFERED: the API's 409 with why
        return ctx.redirect(f"{BASE}{path}", ok=ctx.t("negotiations.accept.done"))

    @console.page()
    async def terminate(ctx: Ctx) -> web.StreamResponse:
        path = f"/negotiations/{segment(ctx.request.match_info['id'])}"
        reason = _text(ctx, "reason")
        if not reason or len(reason) > MAX_REASON:
            raise BadRequest(ctx.t("negotiations.terminate.reason_required"), path="reason")
        await ctx.api.post(f"{path}/terminate", {"reason": reason})
        return ctx.redirect(f"{BASE}{path}", ok=ctx.t("negotiations.terminate.done"))

    @console.page()
    async def events(ctx: Ctx) -> web.StreamResponse:
        """Server-sent events: the negotiation's state, reason and steps whenever they change (each poll waits
        up to :data:`POLL_S` for a final state), a final message once it is FINALIZED or TERMINATED, and an end
        after ``view.STREAM_S`` in any case."""
        path = f"/negotiations/{segment(ctx.request.match_info['id'])}"
        negotiation = await ctx.api.get(path)  # another participant's negotiation: a 404 page, before any stream

        async def messages() -> AsyncGenerator[dict[str, Any], None]:
            nonlocal negotiation
            sent: dict[str, Any] | None = None
            while True:
                message = live_message(ctx.lang, negotiation)
                if message != sent:
                    yield message
                    sent = message
                negotiation = await ctx.api.get(path, wait=POLL_S)

        return await event_stream(ctx, messages(), lambda exc: {
            "id": LIVE_ID, "final": True, "fields": {"reason": exc.message, "note": ctx.t("negotiations.live.ended")}})

    return [
        web.get(f"{BASE}/negotiations", listing),
        web.get(f"{BASE}/negotiations/{{id}}", detail),
        web.get(f"{BASE}/negotiations/{{id}}/events", events),
        web.post(f"{BASE}/negotiations/{{id}}/accept", accept),
        web.post(f"{BASE}/negotiations/{{id}}/terminate", terminate),
    ]
