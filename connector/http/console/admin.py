"""The console's admin pages (the node's admin token) and a participant's own tokens page.

Admin: the participants the node hosts with their state and the node's fair-use quotas (the same for each
hosted participant: ``node.vault_quota_bytes``, ``node.management_rate_per_s`` / ``management_burst``), hosting
a new participant (its first token is shown once, on the answer to the form, and never again), suspending
(with a reason its tokens are then refused with) and resuming one, setting the host's platform share of what a
hosted participant earns as a provider (with the host's report: what accepted statements come to, per participant
and currency), and the node's metrics tokens. The admin token reads no participant's data: these pages call only
the admin routes.

Tokens (``/console/tokens``, a participant's token): the participant's management tokens, creating one for an
application (its value shown once) and revoking one. Every read and action is a management route called with
the caller's token (``ctx.api``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from connector.errors import BadRequest, NotFound
from connector.http.console import i18n
from connector.http.console.api import segment
from connector.http.console.transfers import human_bytes
from connector.http.console.view import BASE, Console, Ctx, NavItem

NAV = (NavItem(f"{BASE}/admin", "nav.admin", "admin"), NavItem(f"{BASE}/tokens", "nav.tokens"))

#: The longest suspension reason (as ``SuspendIn`` takes it).
MAX_REASON = 500
#: The longest platform share the form sends (as ``PlatformShareIn`` takes it).
MAX_PERCENT = 20

i18n.add({
    "nav.tokens": ("Tokens", "令牌"),
    "admin.title": ("Hosted participants", "托管的参与方"),
    "admin.intro": ("The participants this node hosts. The admin token manages them but reads none of their data.",
                    "本节点托管的参与方。管理员令牌可以管理它们，但不能读取它们的任何数据。"),
    "admin.quotas": ("Fair use: each hosted participant's quotas", "公平使用：每个托管参与方的配额"),
    "admin.quota.vault": ("Vault (received data kept)", "保险库（保存的接收数据）"),
    "admin.quota.rate": ("Management requests", "管理请求"),
    "admin.quota.rate_value": ("{rate} per second (bursts of {burst})", "每秒 {rate} 次（突发上限 {burst} 次）"),
    "admin.quota.request": ("Largest request or upload", "最大请求或上传"),
    "admin.quota.help": ("Set in the node's tds.toml ([node] vault_quota_bytes, management_rate_per_s, "
                         "management_burst, max_request_bytes). A pull that would pass a participant's vault "
                         "quota is refused with 413.",
                         "在节点的 tds.toml 中设置（[node] vault_quota_bytes、management_rate_per_s、"
                         "management_burst、max_request_bytes）。超出参与方保险库配额的拉取会以 413 被拒绝。"),
    "admin.col.vault": ("Vault used", "保险库已用"),
    "admin.vault_used": ("{used} of {quota}", "{used} / {quota}"),
    "admin.counts": ("{active} active, {suspended} suspended", "{active} 个正常，{suspended} 个已暂停"),
    "admin.col.name": ("Name", "名称"),
    "admin.col.legal_name": ("Legal name", "法定名称"),
    "admin.col.region": ("Region", "地区"),
    "admin.col.industry": ("Industry", "行业"),
    "admin.col.created": ("Hosted since", "托管时间"),
    "admin.col.actions": ("Actions", "操作"),
    "admin.state.active": ("active", "正常"),
    "admin.state.suspended": ("suspended", "已暂停"),
    "admin.suspended_since": ("since {at}", "自 {at} 起"),
    "admin.none": ("No participants.", "没有参与方。"),
    "admin.suspend": ("Suspend", "暂停"),
    "admin.suspend.reason": ("Reason (the participant sees it; peers do not)", "原因（参与方可见，对方不可见）"),
    "admin.suspend.confirm": ("Suspend {name}? Its endpoints answer 403 and its tokens are refused until it is "
                              "resumed; nothing is deleted.",
                              "确定暂停 {name}？在恢复之前，其端点返回 403，其令牌被拒绝；不会删除任何内容。"),
    "admin.suspend.done": ("{name} suspended.", "已暂停 {name}。"),
    "admin.suspend.own": ("the node's own participant cannot be suspended", "节点自身的参与方不能被暂停"),
    "admin.resume": ("Resume", "恢复"),
    "admin.resume.done": ("{name} resumed.", "已恢复 {name}。"),
    "admin.reason_too_long": ("The reason is too long (at most {n} characters).", "原因过长（最多 {n} 个字符）。"),
    "admin.add": ("Host a new participant", "托管新的参与方"),
    "admin.add.name": ("Name (in its DID and URLs)", "名称（用于其 DID 和网址）"),
    "admin.add.name_help": ("1-63 lowercase letters, digits or '-', starting with a letter or digit.",
                            "1 至 63 个小写字母、数字或“-”，以字母或数字开头。"),
    "admin.add.legal_name": ("Legal name", "法定名称"),
    "admin.add.region": ("Region (e.g. CN-GD)", "地区（如 CN-GD）"),
    "admin.add.industry": ("Industry", "行业"),
    "admin.add.contact": ("Contact", "联系方式"),
    "admin.add.submit": ("Host it", "开始托管"),
    "admin.add.missing": ("Give a name, a legal name and a region.", "请填写名称、法定名称和地区。"),
    "admin.added.title": ("Participant {name} is hosted", "已开始托管参与方 {name}"),
    "admin.added.did": ("DID", "DID"),
    "admin.added.dsp": ("DSP endpoint", "DSP 端点"),
    "admin.added.did_document": ("DID document", "DID 文档"),
    "admin.added.token": ("Its first management token", "其第一个管理令牌"),
    "admin.added.note": ("Hand this token to the participant over a safe channel. It is shown only now: this node "
                         "keeps only its hash and cannot show it again. The participant should create its own tokens "
                         "(Tokens page) and revoke this one.",
                         "请通过安全渠道把此令牌交给该参与方。它只显示这一次：本节点只保存其哈希值，无法再次显示。"
                         "参与方应创建自己的令牌（令牌页面）并撤销此令牌。"),
    "admin.back": ("Back to the participants", "返回参与方列表"),
    "admin.col.share": ("Platform share", "平台分成"),
    "admin.share.none": ("none", "无"),
    "admin.share.percent": ("{percent}%", "{percent}%"),
    "admin.share.label": ("Platform share of {name} (percent)", "{name} 的平台分成（百分比）"),
    "admin.share.set": ("Set", "设置"),
    "admin.share.help": ("The host's share of what a hosted participant earns as a provider under post-paid "
                         "prices, from 0 to 100 (10, 2.5); 0 takes it off. Statements issued from now on show the "
                         "split; those issued before keep theirs.",
                         "主机从托管参与方作为提供方按后付费价格所得收入中抽取的分成，取值 0 至 100（如 10、2.5）；"
                         "0 表示取消。此后开出的结算单会显示分成，之前开出的保持不变。"),
    "admin.share.own": ("the host pays no platform share", "主机本身不支付平台分成"),
    "admin.share.missing": ("Give a percentage from 0 to 100.", "请填写 0 至 100 的百分比。"),
    "admin.share.done": ("Platform share of {name}: {percent}%.", "{name} 的平台分成：{percent}%。"),
    "admin.share.removed": ("{name} pays no platform share now.", "{name} 现在不支付平台分成。"),
    "admin.report": ("Host's report: accepted statements", "主机报表：已接受的结算单"),
    "admin.report.help": ("Per hosted participant and currency: what it earned as a provider (net of the platform "
                          "share), the platform's share of it, and what it owes as a consumer.",
                          "按托管参与方和币种：作为提供方的收入（扣除平台分成后）、其中的平台分成，以及作为使用方的应付款。"),
    "admin.report.earned": ("Earned", "收入"),
    "admin.report.share": ("Platform share", "平台分成"),
    "admin.report.owes": ("Owes", "应付"),
    "admin.report.statements": ("Statements", "结算单"),
    "admin.report.platform": ("Platform's shares in all", "平台分成合计"),
    "admin.report.none": ("This node settles no statements.", "本节点不处理结算单。"),
    "admin.metrics": ("Metrics tokens", "监控令牌"),
    "admin.metrics.help": ("A metrics token reads the node's /metrics (Prometheus) and nothing else.",
                           "监控令牌只能读取节点的 /metrics（Prometheus），不能访问其他内容。"),
    "admin.metrics.none": ("No metrics tokens.", "没有监控令牌。"),
    "admin.metrics.create": ("Create a metrics token", "创建监控令牌"),
    "admin.metrics.created": ("Metrics token for {application}", "{application} 的监控令牌"),
    "tokens.title": ("Management tokens", "管理令牌"),
    "tokens.intro": ("The tokens of this participant: one per application (a script, an ERP connector, a person "
                     "using this console). Revoke one that leaked or is no longer needed.",
                     "本参与方的令牌：每个应用一个（脚本、ERP 连接器、使用本控制台的人员）。"
                     "泄露或不再需要的令牌请撤销。"),
    "tokens.none": ("No tokens.", "没有令牌。"),
    "tokens.col.application": ("Application", "应用"),
    "tokens.col.created": ("Created", "创建时间"),
    "tokens.col.revoked": ("Revoked", "撤销时间"),
    "tokens.col.actions": ("Actions", "操作"),
    "tokens.current": ("(this session)", "（当前会话）"),
    "tokens.active": ("active", "有效"),
    "tokens.create": ("Create a token", "创建令牌"),
    "tokens.application": ("Application name", "应用名称"),
    "tokens.application_help": ("1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
                                "1 至 64 个字母、数字、“.”、“_”或“-”，以字母或数字开头。"),
    "tokens.application_missing": ("Give the application's name.", "请填写应用名称。"),
    "tokens.submit": ("Create", "创建"),
    "tokens.created": ("Token for {application}", "{application} 的令牌"),
    "tokens.value": ("The token", "令牌"),
    "tokens.once": ("Copy it now: it is shown only once. This node keeps only its hash and cannot show it again.",
                    "请立即复制：它只显示这一次。本节点只保存其哈希值，无法再次显示。"),
    "tokens.revoke": ("Revoke", "撤销"),
    "tokens.revoke.confirm": ("Revoke the token of {application}? It stops working at once.",
                              "确定撤销 {application} 的令牌？它将立即失效。"),
    "tokens.revoke.confirm_own": ("This is the token of your own session: revoking it logs you out. Revoke it?",
                                  "这是您当前会话的令牌：撤销后您将退出登录。确定撤销？"),
    "tokens.revoked": ("Token revoked.", "令牌已撤销。"),
    "tokens.back": ("Back to the tokens", "返回令牌列表"),
})


def _text(ctx: Ctx, name: str) -> str:
    value = ctx.form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _reason(ctx: Ctx) -> str:
    reason = _text(ctx, "reason")
    if len(reason) > MAX_REASON:
        raise BadRequest(ctx.t("admin.reason_too_long", n=MAX_REASON), path="reason")
    return reason


def routes(console: Console) -> list[web.RouteDef]:
    def quotas() -> dict[str, Any]:
        node = console.participants.config.node
        return {"vault": human_bytes(node.vault_quota_bytes), "rate": f"{node.management_rate_per_s:g}",
                "burst": node.management_burst, "request": human_bytes(node.max_request_bytes)}

    # the hosted participants ----------------------------------------------------------------------------------

    @console.page(audience="admin")
    async def overview(ctx: Ctx) -> web.StreamResponse:
        participants = await ctx.api.get("/participants")
        metrics_tokens = await ctx.api.get("/metrics/tokens")
        first = console.participants.first()
        suspended = sum(1 for p in participants if p.get("state") == "suspended")
        quota = console.participants.config.node.vault_quota_bytes
        for p in participants:
            used = p.get("vaultBytes") or 0
            p["vault"] = {"used": used, "quota": quota, "text": ctx.t("admin.vault_used", used=human_bytes(used),
                                                                       quota=human_bytes(quota))}
        try:
            report = await ctx.api.get("/statements/report")
        except NotFound:
            report = None  # the node settles no statements
        return ctx.render("admin.html", participants=participants, own=first.name if first else "",
                          quotas=quotas(), active=len(participants) - suspended, suspended=suspended,
                          metrics_tokens=metrics_tokens, max_reason=MAX_REASON, max_percent=MAX_PERCENT,
                          report=report)

    @console.page(audience="admin")
    async def add(ctx: Ctx) -> web.StreamResponse:
        body = {"name": _text(ctx, "name"), "legalName": _text(ctx, "legal_name"), "region": _text(ctx, "region"),
                "industry": _text(ctx, "industry"), "contact": _text(ctx, "contact")}
        if not (body["name"] and body["legalName"] and body["region"]):
            raise BadRequest(ctx.t("admin.add.missing"), path="name")
        added = await ctx.api.post("/participants", body)
        # The token is on this answer only (never in a flash or a redirect); the page is not stored (no-store).
        return ctx.render("admin_added.html", status=201, added=added)

    @console.page(audience="admin")
    async def suspend(ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        done = await ctx.api.post(f"/participants/{segment(name)}/suspend", {"reason": _reason(ctx)})
        return ctx.redirect(f"{BASE}/admin", ok=ctx.t("admin.suspend.done", name=done.get("name", name)))

    @console.page(audience="admin")
    async def resume(ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        done = await ctx.api.post(f"/participants/{segment(name)}/resume")
        return ctx.redirect(f"{BASE}/admin", ok=ctx.t("admin.resume.done", name=done.get("name", name)))

    @console.page(audience="admin")
    async def platform_share(ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        percent = _text(ctx, "percent")
        if not percent:
            raise BadRequest(ctx.t("admin.share.missing"), path="percent")
        # The API checks the percentage and refuses the host itself (409): its reason is the page shown.
        done = await ctx.api.put(f"/participants/{segment(name)}/platform-share", {"percent": percent})
        shown, share = done.get("name", name), done.get("platformShare", percent)
        text = (ctx.t("admin.share.removed", name=shown) if share == "0"
                else ctx.t("admin.share.done", name=shown, percent=share))
        return ctx.redirect(f"{BASE}/admin", ok=text)

    # the node's metrics tokens --------------------------------------------------------------------------------

    @console.page(audience="admin")
    async def create_metrics_token(ctx: Ctx) -> web.StreamResponse:
        application = _text(ctx, "application")
        if not application:
            raise BadRequest(ctx.t("tokens.application_missing"), path="application")
        created = await ctx.api.post("/metrics/tokens", {"application": application})
        return ctx.render("token_once.html", status=201, created=created,
                          heading=ctx.t("admin.metrics.created", application=created["application"]),
                          back=f"{BASE}/admin", back_text=ctx.t("admin.back"))

    @console.page(audience="admin")
    async def revoke_metrics_token(ctx: Ctx) -> web.StreamResponse:
        await ctx.api.delete(f"/metrics/tokens/{segment(ctx.request.match_info['id'])}")
        return ctx.redirect(f"{BASE}/admin", ok=ctx.t("tokens.revoked"))

    # a participant's own tokens -------------------------------------------------------------------------------

    @console.page()
    async def tokens(ctx: Ctx) -> web.StreamResponse:
        return ctx.render("tokens.html", tokens=await ctx.api.get("/tokens"), current=ctx.token.id)

    @console.page()
    async def create_token(ctx: Ctx) -> web.StreamResponse:
        application = _text(ctx, "application")
        if not application:
            raise BadRequest(ctx.t("tokens.application_missing"), path="application")
        created = await ctx.api.post("/tokens", {"application": application})
        return ctx.render("token_once.html", status=201, created=created,
                          heading=ctx.t("tokens.created", application=created["application"]),
                          back=f"{BASE}/tokens", back_text=ctx.t("tokens.back"))

    @console.page()
    async def revoke_token(ctx: Ctx) -> web.StreamResponse:
        await ctx.api.delete(f"/tokens/{segment(ctx.request.match_info['id'])}")
        return ctx.redirect(f"{BASE}/tokens", ok=ctx.t("tokens.revoked"))

    return [
        web.get(f"{BASE}/admin", overview),
        web.post(f"{BASE}/admin/participants", add),
        web.post(f"{BASE}/admin/participants/{{name}}/suspend", suspend),
        web.post(f"{BASE}/admin/participants/{{name}}/resume", resume),
        web.post(f"{BASE}/admin/participants/{{name}}/platform-share", platform_share),
        web.post(f"{BASE}/admin/metrics-tokens", create_metrics_token),
        web.post(f"{BASE}/admin/metrics-tokens/{{id}}/revoke", revoke_metrics_token),
        web.get(f"{BASE}/tokens", tokens),
        web.post(f"{BASE}/tokens", create_token),
        web.post(f"{BASE}/tokens/{{id}}/revoke", revoke_token),
    ]
