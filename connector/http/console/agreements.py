"""The console's agreements pages: every agreement of the participant, one agreement's terms in plain words,
both parties' proofs checked offline (the check of ``tds agreement verify --file``), the evidence bundle to
download, revocation (provider) and starting a transfer of the data (consumer).

Every read and action is a management route called with the caller's token (``ctx.api``): another
participant's agreement is a 404 here as it is through the API.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connector.errors import BadRequest, Forbidden, NotFound
from connector.http.console import i18n
from connector.http.console.api import segment
from connector.http.console.view import BASE, Console, Ctx, NavItem
from connector.protocol import agreements as evidence_check
from connector.protocol import ids
from usage_policies.words import describe

NAV = (NavItem(f"{BASE}/agreements", "nav.agreements"),)

#: The longest revocation reason (as ``TerminateIn`` takes it).
MAX_REASON = 1000
#: At most this many providers' titles are looked up in the catalog cache for one page.
MAX_TITLE_LOOKUPS = 20
#: Up to this many of its own assets, a page asks for each; beyond, for the whole list.
FEW_ASSETS = 5
#: The search route's largest page.
SEARCH_PAGE = 200

i18n.add({
    "agreements.title": ("Agreements", "协议"),
    "agreements.none": ("No agreements yet.", "尚无协议。"),
    "agreements.intro": ("Every agreement this participant signed, newest first.",
                         "本参与方签订的所有协议，最新的在前。"),
    "agreements.role": ("Role", "角色"),
    "agreements.role.provider": ("Provider", "提供方"),
    "agreements.role.consumer": ("Consumer", "使用方"),
    "agreements.peer": ("Peer", "对方"),
    "agreements.asset": ("Asset", "资产"),
    "agreements.state": ("State", "状态"),
    "agreements.agreed": ("Agreed", "签订时间"),
    "agreements.open": ("Details", "详情"),
    "agreements.usage": ("Usage", "使用情况"),
    "agreements.revoked_at": ("revoked {at}", "已于 {at} 撤销"),
    "agreements.data_deleted": ("data deleted", "数据已删除"),
    "agreements.detail": ("Agreement", "协议"),
    "agreements.id": ("Agreement id", "协议编号"),
    "agreements.provider": ("Provider", "提供方"),
    "agreements.consumer": ("Consumer", "使用方"),
    "agreements.you": ("(this participant)", "（本参与方）"),
    "agreements.terms": ("Terms", "条款"),
    "agreements.terms_raw": ("The terms as signed (ODRL, JSON)", "签署的条款原文（ODRL，JSON）"),
    "agreements.terms_unreadable": ("These terms cannot be put in words here: {reason}. The signed ODRL is below.",
                                    "无法用文字描述这些条款：{reason}。签署的 ODRL 原文见下方。"),
    "agreements.proofs": ("Signatures", "签名"),
    "agreements.proofs_help": ("Checked on this node without any network, as the command \"tds agreement verify "
                               "--file\" checks the evidence file.",
                               "在本节点离线校验，与命令“tds agreement verify --file”校验证据文件的方式相同。"),
    "agreements.proof.provider": ("Provider's proof", "提供方的签名"),
    "agreements.proof.consumer": ("Consumer's proof", "使用方的签名"),
    "agreements.proof.party": ("Signer", "签名方"),
    "agreements.proof.method": ("Verification method", "验证方法"),
    "agreements.proof.created": ("Signed at", "签名时间"),
    "agreements.proof.check": ("Check", "校验结果"),
    "agreements.proof.valid": ("valid", "有效"),
    "agreements.proof.invalid": ("invalid", "无效"),
    "agreements.proof.missing": ("not signed", "未签名"),
    "agreements.evidence": ("Download the evidence (JSON)", "下载证据（JSON）"),
    "agreements.evidence_help": ("The agreement with both proofs and both parties' DID documents: anyone can check "
                                 "it later with the command \"tds agreement verify --file\".",
                                 "包含协议、双方签名和双方 DID 文档：任何人之后都可用 "
                                 "命令“tds agreement verify --file”校验。"),
    "agreements.revocation": ("Revocation", "撤销"),
    "agreements.revocation.reason": ("Reason", "原因"),
    "agreements.revocation.at": ("Revoked at", "撤销时间"),
    "agreements.revocation.status": ("Status", "状态"),
    "agreements.revocation.pending": ("pending: the consumer has not confirmed the deletion yet",
                                      "待确认：使用方尚未确认删除"),
    "agreements.revocation.acknowledged": ("acknowledged: the consumer confirmed the deletion with a signed receipt",
                                           "已确认：使用方已用签名回执确认删除"),
    "agreements.revocation.received": ("received: every use is blocked", "已收到：所有使用均被阻止"),
    "agreements.revocation.applied": ("applied: use blocked and the data deleted", "已执行：使用已阻止，数据已删除"),
    "agreements.deleted": ("Data deleted", "数据删除"),
    "agreements.deleted.at": ("Deleted at", "删除时间"),
    "agreements.deleted.reason": ("Why", "原因"),
    "agreements.revoke": ("Revoke this agreement", "撤销此协议"),
    "agreements.revoke.help": ("The consumer's node blocks every further use, deletes the data and answers with a "
                               "signed deletion receipt.",
                               "使用方节点将阻止之后的所有使用、删除数据，并返回签名的删除回执。"),
    "agreements.revoke.reason": ("Reason (the consumer sees it)", "原因（使用方可见）"),
    "agreements.revoke.confirm": ("Revoke this agreement? The consumer can no longer use the data.",
                                  "确定撤销此协议？使用方将无法再使用该数据。"),
    "agreements.revoke.submit": ("Revoke", "撤销"),
    "agreements.revoke.done": ("Agreement revoked; the consumer is being told.", "协议已撤销，正在通知使用方。"),
    "agreements.revoke.provider_only": ("Only the provider can revoke an agreement; as its consumer, ask the provider.",
                                        "只有提供方可以撤销协议；作为使用方，请联系提供方。"),
    "agreements.revoke.reason_required": ("Give a reason for the revocation (1 to 1000 characters).",
                                          "请填写撤销原因（1 至 1000 个字符）。"),
    "agreements.transfer": ("Get the data", "获取数据"),
    "agreements.transfer.help": ("Start a transfer of this agreement's data from the provider to this node.",
                                 "从提供方把此协议的数据传输到本节点。"),
    "agreements.transfer.submit": ("Start a transfer", "开始传输"),
    "agreements.transfer.started": ("Transfer started.", "传输已开始。"),
    "agreements.transfer.consumer_only": ("Only the consumer of an agreement pulls its data.",
                                          "只有协议的使用方可以获取数据。"),
    "agreements.links": ("See also", "相关"),
    "agreements.usage_link": ("Usage of this agreement's data", "此协议数据的使用情况"),
    "agreements.statements_link": ("Settlement statements of this agreement", "此协议的结算单"),
})


@dataclass(frozen=True)
class AgreementRow:
    """One agreement as the pages show it."""

    id: str
    role: str
    peer: str
    asset_id: str
    #: The publisher's title where known (free text), else the provider's own id of the asset.
    name: str
    state: str
    created_at: str
    revocation: dict[str, Any] | None
    data_deleted: dict[str, Any] | None


def agreement_row(found: dict[str, Any], titles: dict[str, str]) -> AgreementRow:
    role = str(found.get("role", ""))
    peer = found.get("consumerDid") if role == "provider" else found.get("providerDid")
    asset_id = str(found.get("assetId", ""))
    name = titles.get(asset_id) or ids.local_asset_id(str(found.get("providerDid", "")), asset_id)
    return AgreementRow(id=str(found["id"]), role=role, peer=str(peer or ""), asset_id=asset_id,
                        name=name or asset_id, state=str(found.get("state", "")),
                        created_at=str(found.get("createdAt") or ""), revocation=found.get("revocation"),
                        data_deleted=found.get("dataDeleted"))


async def asset_titles(ctx: Ctx, agreements: list[dict[str, Any]]) -> dict[str, str]:
    """The titles of the agreements' assets, by the agreement's asset id: this participant's own assets (as
    provider) from its asset list; a peer's (as consumer) from the catalog cache, where a crawl has put it.
    A title is the publisher's free text: the templates escape it like everything else."""
    titles: dict[str, str] = {}
    provided = [a for a in agreements if a.get("role") == "provider"]
    if provided:
        wanted = {ids.local_asset_id(str(a.get("providerDid", "")), str(a.get("assetId", ""))) for a in provided}
        own: dict[str, str] = {}
        if len(wanted) <= FEW_ASSETS:
            for local in wanted:
                try:
                    own[local] = str((await ctx.api.get(f"/assets/{segment(local)}")).get("title") or "")
                except NotFound:  # deleted since (the agreement keeps its own copy of the terms)
                    continue
        else:
            own = {str(asset.get("id")): str(asset.get("title") or "") for asset in await ctx.api.get("/assets")}
        for a in provided:
            local = ids.local_asset_id(str(a.get("providerDid", "")), str(a.get("assetId", "")))
            if own.get(local):
                titles[str(a["assetId"])] = own[local]
    providers = list(dict.fromkeys(str(a.get("providerDid", "")) for a in agreements if a.get("role") == "consumer"))
    for provider in providers[:MAX_TITLE_LOOKUPS]:
        try:
            page = await ctx.api.get("/search", provider=provider, limit=SEARCH_PAGE)
        except (NotFound, BadRequest):  # no catalog cache on this node, or a DID the search does not take
            continue
        cached = {ids.local_asset_id(provider, str(o.get("datasetId", ""))): str(o.get("title") or "")
                  for o in page.get("offers", []) if o.get("providerDid") == provider}
        for a in agreements:
            if a.get("role") == "consumer" and a.get("providerDid") == provider:
                title = cached.get(ids.local_asset_id(provider, str(a.get("assetId", ""))))
                if title:
                    titles[str(a["assetId"])] = title
    return titles


@dataclass(frozen=True)
class ProofView:
    role: str
    party: str
    verification_method: str
    created: str
    status: str  # "valid", "invalid" or "missing"
    detail: str


def proof_views(evidence: dict[str, Any]) -> list[ProofView]:
    """Both proofs of *evidence* with their check, made by the same offline check as the CLI's
    ``tds agreement verify --file`` (:func:`connector.protocol.agreements.check_bundle`)."""
    try:
        checks = {c.role: c for c in evidence_check.check_bundle(evidence)}
    except evidence_check.AgreementProofError as exc:
        checks = {role: evidence_check.SignatureCheck(role, "", "invalid", str(exc))
                  for role in ("provider", "consumer")}
    views = []
    for role, field in (("provider", "providerProof"), ("consumer", "consumerProof")):
        proof = evidence.get(field)
        proof = proof if isinstance(proof, dict) else {}
        check = checks[role]
        views.append(ProofView(role=role, party=check.did, verification_method=str(proof.get("verificationMethod", "")),
                               created=str(proof.get("created", "")), status=check.status, detail=check.detail))
    return views


def terms_in_words(policy: dict[str, Any], lang: i18n.Lang) -> tuple[list[str], str]:
    """The agreement's terms as sentences, or why they cannot be said (the raw ODRL is shown all the same)."""
    try:
        return describe(policy, lang), ""
    except (ValueError, TypeError, KeyError) as exc:
        return [], str(exc) or type(exc).__name__


def evidence_filename(agreement_id: str) -> str:
    """A download name made of the agreement id's safe characters only (no quotes, no path, no header breaks)."""
    return "agreement-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", agreement_id).strip("._")[:120] or "evidence") + ".json"


def _field(ctx: Ctx, name: str) -> str:
    value = ctx.form.get(name)
    return value.strip() if isinstance(value, str) else ""


def routes(console: Console) -> list[web.RouteDef]:
    @console.page()
    async def listing(ctx: Ctx) -> web.StreamResponse:
        found = await ctx.api.get("/agreements")
        titles = await asset_titles(ctx, found)
        return ctx.render("agreements.html", agreements=[agreement_row(a, titles) for a in found])

    @console.page()
    async def detail(ctx: Ctx) -> web.StreamResponse:
        path = f"/agreements/{segment(ctx.request.match_info['id'])}"
        found = await ctx.api.get(path)
        evidence = await ctx.api.get(f"{path}/evidence")
        row = agreement_row(found, await asset_titles(ctx, [found]))
        sentences, unreadable = terms_in_words(found.get("agreement") or {}, ctx.lang)
        return ctx.render("agreement.html", a=row, found=found, sentences=sentences, unreadable=unreadable,
                          raw=json.dumps(found.get("agreement"), indent=2, ensure_ascii=False),
                          proofs=proof_views(evidence), max_reason=MAX_REASON)

    @console.page()
    async def evidence_file(ctx: Ctx) -> web.StreamResponse:
        agreement_id = ctx.request.match_info["id"]
        evidence = await ctx.api.get(f"/agreements/{segment(agreement_id)}/evidence")
        body = json.dumps(evidence, indent=2, ensure_ascii=False) + "\n"
        return web.Response(text=body, content_type="application/json", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{evidence_filename(agreement_id)}"'})

    @console.page()
    async def revoke(ctx: Ctx) -> web.StreamResponse:
        agreement_id = ctx.request.match_info["id"]
        path = f"/agreements/{segment(agreement_id)}"
        found = await ctx.api.get(path)  # another participant's agreement: 404 here
        if found.get("role") != "provider":
            raise Forbidden(ctx.t("agreements.revoke.provider_only"))
        reason = _field(ctx, "reason")
        if not reason or len(reason) > MAX_REASON:
            raise BadRequest(ctx.t("agreements.revoke.reason_required"), path="reason")
        await ctx.api.post(f"{path}/revoke", {"reason": reason})
        return ctx.redirect(f"{BASE}{path}", ok=ctx.t("agreements.revoke.done"))

    @console.page()
    async def transfer(ctx: Ctx) -> web.StreamResponse:
        agreement_id = ctx.request.match_info["id"]
        found = await ctx.api.get(f"/agreements/{segment(agreement_id)}")
        if found.get("role") != "consumer":
            raise Forbidden(ctx.t("agreements.transfer.consumer_only"))
        started = await ctx.api.post("/transfers", {"agreementId": agreement_id})
        return ctx.redirect(f"{BASE}/transfers/{segment(str(started['id']))}", ok=ctx.t("agreements.transfer.started"))

    return [
        web.get(f"{BASE}/agreements", listing),
        web.get(f"{BASE}/agreements/{{id}}", detail),
        web.get(f"{BASE}/agreements/{{id}}/evidence.json", evidence_file),
        web.post(f"{BASE}/agreements/{{id}}/revoke", revoke),
        web.post(f"{BASE}/agreements/{{id}}/transfer", transfer),
    ]
