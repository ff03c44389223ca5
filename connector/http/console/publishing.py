"""The console's publishing pages: the participant's assets, usage policies and offers (contract definitions),
adding each and deleting them.

An asset's bytes are either a file already inside the participant's data roots (a ``File`` path, checked by
the management API exactly as ``tds asset add --file`` is) or uploaded here: an upload is saved under the
participant's own data root (``files/NAME/uploads/<random>/<name>``, :mod:`connector.services.addresses`)
and published with that path, so the same confinement check applies to it. The upload's size is bounded by
the form's (``node.max_request_bytes``: a bigger form is a 413 page) and its name is reduced to a plain file
name (one naming a folder is refused). A policy is built from the templates of ``tds policy add``
(:func:`usage_policies.templates.policy_from_options`) and can be previewed as ODRL and in plain words before
it is saved. Every read and action is a management route called with the caller's token (``ctx.api``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from connector import filemodes
from connector.errors import BadRequest, Conflict, PayloadTooLarge, TdsError
from connector.http.console import i18n
from connector.http.console.api import segment
from connector.http.console.transfers import human_bytes
from connector.http.console.view import BASE, Console, Ctx, NavItem, log
from connector.services import addresses
from usage_policies import templates
from usage_policies.words import describe

NAV = (NavItem(f"{BASE}/publishing", "nav.publishing"),)

#: Uploaded files go under this folder of the participant's own data root, one random folder each.
UPLOADS = "uploads"
#: The longest file name an upload keeps.
MAX_NAME = 120
#: What a file name keeps: letters and digits of any script, '.', '_' and '-'; anything else becomes '_'.
_NAME_PART = re.compile(r"[^\w.-]+")
#: Separators between the values of a list field (keywords, purposes, regions, ...).
_LIST_SPLIT = re.compile(r"[,，;；\n]+")
DATA_CLASSES = templates.DATA_CLASSES
#: The console's kinds of catalog entry and their management routes.
KINDS = {"assets": "assets", "policies": "policies", "offers": "contract-definitions"}

i18n.add({
    "publishing.title": ("Publishing", "发布"),
    "publishing.intro": ("What this participant offers: its assets (the data), its usage policies, and its offers, "
                         "which put assets under an access policy and a contract policy.",
                         "本参与方提供的内容：资产（数据）、使用策略，以及把资产置于访问策略和合同策略之下的报价。"),
    "publishing.assets": ("Assets", "资产"),
    "publishing.policies": ("Policies", "策略"),
    "publishing.offers": ("Offers", "报价"),
    "publishing.no_assets": ("No assets yet.", "尚无资产。"),
    "publishing.no_policies": ("No policies yet.", "尚无策略。"),
    "publishing.no_offers": ("No offers yet: peers see nothing until an offer names an asset.",
                             "尚无报价：在报价包含资产之前，对方看不到任何内容。"),
    "publishing.add_asset": ("Add an asset", "添加资产"),
    "publishing.add_policy": ("Add a policy", "添加策略"),
    "publishing.add_offer": ("Add an offer", "添加报价"),
    "publishing.col.title": ("Title", "标题"),
    "publishing.col.class": ("Data class", "数据分级"),
    "publishing.col.data": ("Data", "数据"),
    "publishing.col.created": ("Added", "添加时间"),
    "publishing.col.terms": ("In words", "文字说明"),
    "publishing.col.access": ("Access policy", "访问策略"),
    "publishing.col.contract": ("Contract policy", "合同策略"),
    "publishing.col.assets": ("Assets", "资产"),
    "publishing.col.actions": ("Actions", "操作"),
    "publishing.delete": ("Delete", "删除"),
    "publishing.delete.confirm": ("Delete {id}? This cannot be undone.", "确定删除 {id}？此操作无法撤销。"),
    "publishing.deleted": ("{id} deleted.", "已删除 {id}。"),
    "publishing.no_kind": ("There is no such kind of catalog entry.", "没有这种目录条目。"),
    "publishing.refused.title": ("Still in use", "仍在使用中"),
    "publishing.refused.refs": ("What still needs it:", "仍在使用它的有："),
    "publishing.refused.back": ("Back to publishing", "返回发布"),
    "publishing.ref.offers": ("Offers", "报价"),
    "publishing.ref.agreements": ("Agreements", "协议"),
    "publishing.ref.negotiations": ("Negotiations", "协商"),
    "publishing.class.general": ("general", "一般数据"),
    "publishing.class.important": ("important", "重要数据"),
    "publishing.class.core": ("core", "核心数据"),
    "publishing.class.personal": ("personal", "个人信息"),
    "publishing.asset.id": ("Asset id", "资产编号"),
    "publishing.id_help": ("1-128 letters, digits, '.', '_', '~' or '-', starting with a letter or digit.",
                           "1 至 128 个字母、数字、“.”、“_”、“~”或“-”，以字母或数字开头。"),
    "publishing.asset.title": ("Title", "标题"),
    "publishing.asset.description": ("Description", "描述"),
    "publishing.asset.content_type": ("Content type", "内容类型"),
    "publishing.asset.content_type_help": ("Left empty: the uploaded file's type, else application/octet-stream.",
                                           "留空：使用上传文件的类型，否则为 application/octet-stream。"),
    "publishing.asset.data_class": ("Data class", "数据分级"),
    "publishing.asset.keywords": ("Keywords (separated by commas)", "关键词（用逗号分隔）"),
    "publishing.asset.source": ("The data", "数据"),
    "publishing.asset.file": ("Upload a file", "上传文件"),
    "publishing.asset.file_help": ("Saved in this participant's own data folder; at most {limit}.",
                                   "保存在本参与方自己的数据文件夹中；最大 {limit}。"),
    "publishing.asset.path": ("Or: a file already in this participant's data folder",
                              "或：本参与方数据文件夹中已有的文件"),
    "publishing.asset.path_help": ("A path relative to {root}, or an absolute path inside a folder the operator "
                                   "assigned to this participant.",
                                   "相对于 {root} 的路径，或运营方分配给本参与方的文件夹中的绝对路径。"),
    "publishing.asset.submit": ("Add the asset", "添加资产"),
    "publishing.asset.added": ("Asset {id} added.", "已添加资产 {id}。"),
    "publishing.asset.id_missing": ("Give the asset an id.", "请填写资产编号。"),
    "publishing.asset.no_data": ("Upload a file or give the path of one.", "请上传文件或填写文件路径。"),
    "publishing.asset.both": ("Upload a file or give a path, not both.", "上传文件和填写路径只能选一种。"),
    "publishing.asset.over_quota": ("Uploads together may hold at most {quota} (node.vault_quota_bytes): delete "
                                    "assets this participant no longer offers first.",
                                    "上传文件合计最多 {quota}（node.vault_quota_bytes）：请先删除不再提供的资产。"),
    "publishing.asset.bad_name": ("The file name must be a plain name, without folders or '..': {name}",
                                  "文件名必须是单纯的名称，不能包含文件夹或“..”：{name}"),
    "publishing.asset.bad_class": ("Choose one of the data classes.", "请选择一个数据分级。"),
    "publishing.policy.id": ("Policy id", "策略编号"),
    "publishing.policy.help": ("Built from the common templates (as `tds policy add` builds it). With no option "
                               "ticked, use is allowed.",
                               "由常用模板组合而成（与 `tds policy add` 相同）。不选择任何选项时，允许使用。"),
    "publishing.policy.purposes": ("Allowed purposes (separated by commas)", "允许的用途（用逗号分隔）"),
    "publishing.policy.max_uses": ("At most this many uses", "最多使用次数"),
    "publishing.policy.for_duration": ("Use within this time of the first use (ISO 8601, e.g. P30D)",
                                       "首次使用后的使用期限（ISO 8601，如 P30D）"),
    "publishing.policy.regions": ("Only participants that say they are in these regions (e.g. CN-GD)",
                                  "仅限自称位于这些地区的参与方（如 CN-GD）"),
    "publishing.policy.verified_regions": ("Only participants whose region a trusted issuer vouches for (e.g. CN-GD)",
                                           "仅限其地区经可信签发方证明的参与方（如 CN-GD）"),
    "publishing.policy.spaces": ("Only members of these data spaces (by a trusted issuer's credential)",
                                 "仅限这些数据空间的成员（凭可信签发方的凭证）"),
    "publishing.policy.no_export_outside": ("The data may not leave this region (e.g. CN)",
                                            "数据不得离开该地区（如 CN）"),
    "publishing.policy.consumers": ("Only these participants (DIDs, separated by commas)",
                                    "仅限这些参与方（DID，用逗号分隔）"),
    "publishing.policy.log_uses": ("Log each use", "记录每次使用"),
    "publishing.policy.inform": ("Inform this participant of each use", "每次使用时通知本参与方"),
    "publishing.policy.price": ("Price (leave empty for none)", "价格（不收费则留空）"),
    "publishing.policy.price_help": ("Post-paid: statements settle it each billing period (see Statements). "
                                     "Pre-paid: every use is denied until the payment is reported.",
                                     "后付费：每个结算周期由结算单结算（见“结算单”）。预付费：在付款被报告之前，"
                                     "每次使用都会被拒绝。"),
    "publishing.policy.amount": ("Amount (e.g. 2.50)", "金额（如 2.50）"),
    "publishing.policy.currency": ("Currency (e.g. CNY)", "币种（如 CNY）"),
    "publishing.policy.price_per": ("Paid for", "计价单位"),
    "publishing.policy.per.use": ("each use", "每次使用"),
    "publishing.policy.per.gigabyte": ("each GB transferred", "每传输 1 GB"),
    "publishing.policy.per.period": ("each billing period (a subscription)", "每个结算周期（订阅）"),
    "publishing.policy.billing_period": ("Billing period", "结算周期"),
    "publishing.policy.period.P1M": ("monthly", "按月"),
    "publishing.policy.period.P1W": ("weekly", "按周"),
    "publishing.policy.period.P1D": ("daily", "按日"),
    "publishing.policy.rounding": ("Rounding of each statement line (e.g. 0.01 half-up)",
                                   "结算单每行金额的舍入（如 0.01 half-up）"),
    "publishing.policy.tiers": ("Tiers FROM:PRICE, separated by commas (e.g. 1000:2.00)",
                                "阶梯 FROM:PRICE，用逗号分隔（如 1000:2.00）"),
    "publishing.policy.prepaid": ("Pre-paid: due before use", "预付费：使用前支付"),
    "publishing.policy.bad_currency": ("A price needs its currency, a code such as CNY.", "价格需要币种，例如 CNY。"),
    "publishing.policy.preview": ("Preview", "预览"),
    "publishing.policy.save": ("Save", "保存"),
    "publishing.policy.preview_title": ("Preview", "预览"),
    "publishing.policy.words": ("In plain words", "文字说明"),
    "publishing.policy.odrl": ("As ODRL (JSON)", "ODRL 原文（JSON）"),
    "publishing.policy.added": ("Policy {id} added.", "已添加策略 {id}。"),
    "publishing.policy.id_missing": ("Give the policy an id.", "请填写策略编号。"),
    "publishing.policy.bad_uses": ("The number of uses must be a whole number, 1 or more.",
                                   "使用次数必须是大于等于 1 的整数。"),
    "publishing.policy.bad": ("This policy cannot be built: {reason}", "无法生成该策略：{reason}"),
    "publishing.offer.id": ("Offer id", "报价编号"),
    "publishing.offer.access": ("Access policy (who sees the offer)", "访问策略（谁能看到报价）"),
    "publishing.offer.contract": ("Contract policy (the usage terms agreed)", "合同策略（约定的使用条款）"),
    "publishing.offer.assets": ("Assets offered", "提供的资产"),
    "publishing.offer.assets_help": ("Hold Ctrl (or ⌘) to choose several.", "按住 Ctrl（或 ⌘）可多选。"),
    "publishing.offer.submit": ("Add the offer", "添加报价"),
    "publishing.offer.added": ("Offer {id} added.", "已添加报价 {id}。"),
    "publishing.offer.id_missing": ("Give the offer an id.", "请填写报价编号。"),
    "publishing.offer.policy_missing": ("Choose an access policy and a contract policy.", "请选择访问策略和合同策略。"),
    "publishing.offer.assets_missing": ("Choose at least one asset.", "请至少选择一个资产。"),
    "publishing.offer.needs": ("An offer needs at least one asset and one policy: add them first.",
                               "报价至少需要一个资产和一个策略：请先添加。"),
})


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _all(form: Mapping[str, Any], name: str) -> list[str]:
    values = form.getall(name, []) if isinstance(form, MultiMapping) else [form.get(name)]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def split_list(text: str) -> list[str]:
    """The values of a list field: separated by commas (either width), semicolons or lines."""
    return [part.strip() for part in _LIST_SPLIT.split(text) if part.strip()]


def folder_bytes(folder: Path) -> int:
    """Bytes of the files below *folder* (0 when there is none)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _file_of(asset: Mapping[str, Any]) -> Path | None:
    address = asset.get("dataAddress")
    path = address.get("path") if isinstance(address, dict) else None
    return Path(path).resolve() if isinstance(path, str) else None


def remove_upload(own: Path, asset: Mapping[str, Any], others: list[Mapping[str, Any]]) -> None:
    """Delete the folder of *asset*'s file if the console uploaded it (``own/uploads/<random>/<name>``) and
    none of *others* (the assets left) names a file in it."""
    path = _file_of(asset)
    if path is None or path.parent.parent != (own / UPLOADS).resolve():
        return
    if any((found := _file_of(other)) is not None and found.is_relative_to(path.parent) for other in others):
        return
    shutil.rmtree(path.parent, ignore_errors=True)


def upload_name(raw: str) -> str | None:
    """A plain file name for an upload named *raw* by the browser, or None when *raw* names a folder or goes up
    one (``../../etc/x``): a browser sends the bare name, so such a name is refused, not repaired. Characters
    other than letters, digits, '.', '_' and '-' become '_'; leading dots go (no hidden files)."""
    name = unicodedata.normalize("NFC", raw).strip()
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith(".."):
        return None
    name = _NAME_PART.sub("_", name).lstrip(".")[:MAX_NAME]
    return name or "upload"


def _write(source: Any, target: Path, own: Path) -> int:
    """Copy the upload *source* (a file object) to the new file *target* inside *own*, private and flushed to
    disk; returns its size."""
    if not target.resolve().is_relative_to(own.resolve()):  # cannot be, by upload_name: checked all the same
        raise BadRequest("the upload would land outside this participant's data folder")
    fd = filemodes.open_private(target, os.O_WRONLY | os.O_EXCL)
    with os.fdopen(fd, "wb") as out:
        source.seek(0)
        shutil.copyfileobj(source, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


async def save_upload(upload: web.FileField, own: Path, name: str) -> tuple[Path, int]:
    """Save *upload* as *name* in a new folder of its own under *own* (the participant's own data root): its
    path and size. The folder is removed again if anything fails."""
    folder = own / UPLOADS / uuid.uuid4().hex
    target = folder / name
    try:
        await asyncio.to_thread(filemodes.make_dir, folder)
        size = await asyncio.to_thread(_write, upload.file, target, own)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise
    return target, size


def policy_options(form: Mapping[str, Any], t: Callable[..., str]) -> dict[str, Any]:
    """The template options of the policy form, checked; BadRequest naming a bad one."""
    uses_text = _text(form, "max_uses")
    uses = None
    if uses_text:
        if not (uses_text.isascii() and uses_text.isdigit()) or len(uses_text) > 9 or int(uses_text) < 1:
            raise BadRequest(t("publishing.policy.bad_uses"), path="max_uses")
        uses = int(uses_text)
    return {"purposes": split_list(_text(form, "purposes")), "uses": uses,
            "duration": _text(form, "for_duration") or None, "regions": split_list(_text(form, "regions")),
            "export_region": _text(form, "no_export_outside") or None,
            "consumers": [c for part in split_list(_text(form, "consumers")) for c in part.split()],
            "log_uses": bool(_text(form, "log_uses")), "inform": bool(_text(form, "inform")),
            "verified_regions": split_list(_text(form, "verified_regions")),
            "spaces": split_list(_text(form, "spaces")), "price": price_option(form, t)}


#: The policy form's price fields (``usage_policies.templates.price_duty``).
PRICE_FIELDS = ("price", "currency", "price_per", "billing_period", "rounding", "tiers", "prepaid")
#: What the form's price may be paid for (a price per sandbox query is set with `tds policy add --sandbox`).
PRICE_BASES = ("use", "gigabyte", "period")
BILLING_PERIODS = ("P1M", "P1W", "P1D")


def price_option(form: Mapping[str, Any], t: Callable[..., str]) -> dict[str, Any] | None:
    """The price the form's price fields make (a ``compensate`` duty), None without an amount; BadRequest
    naming a bad field."""
    amount = _text(form, "price")
    if not amount:
        return None
    currency = _text(form, "currency")
    if not currency or len(currency) > 64 or any(c.isspace() for c in currency):
        raise BadRequest(t("publishing.policy.bad_currency"), path="currency")
    per, period = _text(form, "price_per") or "use", _text(form, "billing_period") or "P1M"
    if per not in PRICE_BASES:
        raise BadRequest(t("publishing.policy.bad", reason=f"a price here is per {', '.join(PRICE_BASES)}, not "
                                                          f"{per!r}"), path="price_per")
    if period not in BILLING_PERIODS:
        raise BadRequest(t("publishing.policy.bad", reason=f"the billing period is one of "
                                                          f"{', '.join(BILLING_PERIODS)}, not {period!r}"),
                         path="billing_period")
    try:
        return templates.price_duty(amount, currency, per=per, period=period,
                                    rounding=_text(form, "rounding") or "0.01 half-up",
                                    tiers=split_list(_text(form, "tiers")), prepaid=bool(_text(form, "prepaid")))
    except ValueError as exc:
        raise BadRequest(t("publishing.policy.bad", reason=str(exc)), path="price") from exc


def build_policy(form: Mapping[str, Any], t: Callable[..., str]) -> dict[str, Any]:
    """The ODRL policy the form's template options make."""
    options = policy_options(form, t)
    try:
        return templates.policy_from_options(**options)
    except ValueError as exc:
        raise BadRequest(t("publishing.policy.bad", reason=str(exc))) from exc


def in_words(policy: Any, lang: i18n.Lang) -> list[str]:
    try:
        return describe(policy, lang) if isinstance(policy, dict) else []
    except (ValueError, TypeError, KeyError):
        return []


def data_of(asset: dict[str, Any]) -> str:
    """Where an asset's bytes are, in short: the file's name, or the backend it was fetched from."""
    address = asset.get("dataAddress") or {}
    origin, path = address.get("origin"), address.get("path")
    if isinstance(origin, str):
        return origin
    return Path(path).name if isinstance(path, str) else ""


def routes(console: Console) -> list[web.RouteDef]:
    def limit_text() -> str:
        return human_bytes(console.participants.config.node.max_request_bytes)

    def own_root(name: str) -> Path:
        return addresses.confinement(console.participants.data_dir, name, {}).own

    @console.page()
    async def overview(ctx: Ctx) -> web.StreamResponse:
        assets = await ctx.api.get("/assets")
        policies = await ctx.api.get("/policies")
        offers = await ctx.api.get("/contract-definitions")
        return ctx.render("publishing.html", assets=[{**a, "data": data_of(a)} for a in assets],
                          policies=[{**p, "words": in_words(p.get("policy"), ctx.lang)} for p in policies],
                          offers=offers, classes=DATA_CLASSES)

    # assets ---------------------------------------------------------------------------------------------------

    @console.page()
    async def asset_form(ctx: Ctx) -> web.StreamResponse:
        me = await ctx.api.get("/participant")
        return ctx.render("publishing_asset.html", classes=DATA_CLASSES, limit=limit_text(),
                          root=f"files/{me['name']}/")

    #: Per participant (by name), the lock its uploads take in turn (add_asset).
    uploading: dict[str, asyncio.Lock] = {}

    @console.page()
    async def add_asset(ctx: Ctx) -> web.StreamResponse:
        form = ctx.form
        asset_id, data_class = _text(form, "id"), _text(form, "data_class") or "general"
        if not asset_id:
            raise BadRequest(ctx.t("publishing.asset.id_missing"), path="id")
        if data_class not in DATA_CLASSES:
            raise BadRequest(ctx.t("publishing.asset.bad_class"), path="data_class")
        upload, path = form.get("file"), _text(form, "path")
        upload = upload if isinstance(upload, web.FileField) and upload.filename else None
        if upload is None and not path:
            raise BadRequest(ctx.t("publishing.asset.no_data"), path="file")
        if upload is not None and path:
            raise BadRequest(ctx.t("publishing.asset.both"), path="path")
        body: dict[str, Any] = {
            "id": asset_id, "title": _text(form, "title"), "description": _text(form, "description"),
            "contentType": _text(form, "content_type") or (upload.content_type if upload is not None else "")
            or "application/octet-stream",
            "dataClass": data_class, "keywords": split_list(_text(form, "keywords"))}
        if upload is None:
            await ctx.api.post("/assets", {**body, "dataAddress": {"type": "File", "path": path}})
            return ctx.redirect(f"{BASE}/publishing", ok=ctx.t("publishing.asset.added", id=asset_id))
        try:
            name = upload_name(upload.filename)
            if name is None:
                log.warning("console upload refused: its file name names a folder")
                raise BadRequest(ctx.t("publishing.asset.bad_name", name=upload.filename[:200]), path="file")
            me = await ctx.api.get("/participant")  # a suspended participant: refused here, nothing written
            own = own_root(str(me["name"]))
            # One upload of a participant at a time from measuring to the quota's verdict: uploads sent at once
            # would each measure the folder without the others and together pass the quota.
            async with uploading.setdefault(str(me["name"]), asyncio.Lock()):
                before = await asyncio.to_thread(folder_bytes, own / UPLOADS)
                saved, size = await save_upload(upload, own, name)
                quota = console.participants.config.node.vault_quota_bytes
                if before + size > quota:  # fair use: uploads together count against the participant's vault quota
                    await asyncio.to_thread(shutil.rmtree, saved.parent, True)
                    raise PayloadTooLarge(ctx.t("publishing.asset.over_quota", quota=human_bytes(quota)))
        finally:
            upload.file.close()
        try:
            await ctx.api.post("/assets", {**body, "dataAddress": {"type": "File", "path": str(saved)}})
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, saved.parent, True)
            raise
        log.info("console upload published", asset=asset_id, bytes=size)
        return ctx.redirect(f"{BASE}/publishing", ok=ctx.t("publishing.asset.added", id=asset_id))

    # policies -------------------------------------------------------------------------------------------------

    def policy_page(ctx: Ctx, *, status: int = 200, error: str = "",
                    preview: dict[str, Any] | None = None) -> web.Response:
        values = {k: _text(ctx.form, k) for k in ("id", "purposes", "max_uses", "for_duration", "regions",
                                                   "verified_regions", "spaces", "no_export_outside", "consumers",
                                                   "log_uses", "inform", *PRICE_FIELDS)}
        return ctx.render("publishing_policy.html", status=status, v=values, error=error, bases=PRICE_BASES,
                          periods=BILLING_PERIODS,
                          preview=json.dumps(preview, indent=2, ensure_ascii=False) if preview is not None else "",
                          words=in_words(preview, ctx.lang) if preview is not None else [])

    @console.page()
    async def policy_form(ctx: Ctx) -> web.StreamResponse:
        return policy_page(ctx)

    @console.page()
    async def add_policy(ctx: Ctx) -> web.StreamResponse:
        """"Preview" shows the policy the options make, as ODRL and in words; "Save" publishes it. A refusal
        shows the form again, as it was filled in, with the reason."""
        policy_id = _text(ctx.form, "id")
        try:
            policy = build_policy(ctx.form, ctx.t)
            if _text(ctx.form, "action") != "save":
                return policy_page(ctx, preview=policy)
            if not policy_id:
                raise BadRequest(ctx.t("publishing.policy.id_missing"), path="id")
            await ctx.api.post("/policies", {"id": policy_id, "policy": policy})
        except TdsError as exc:
            if exc.status >= 500:
                raise
            return policy_page(ctx, status=exc.status, error=exc.message)
        return ctx.redirect(f"{BASE}/publishing", ok=ctx.t("publishing.policy.added", id=policy_id))

    # offers ---------------------------------------------------------------------------------------------------

    @console.page()
    async def offer_form(ctx: Ctx) -> web.StreamResponse:
        return ctx.render("publishing_offer.html", assets=await ctx.api.get("/assets"),
                          policies=await ctx.api.get("/policies"))

    @console.page()
    async def add_offer(ctx: Ctx) -> web.StreamResponse:
        offer_id, access, contract = (_text(ctx.form, k) for k in ("id", "access", "contract"))
        assets = _all(ctx.form, "assets")
        if not offer_id:
            raise BadRequest(ctx.t("publishing.offer.id_missing"), path="id")
        if not access or not contract:
            raise BadRequest(ctx.t("publishing.offer.policy_missing"), path="access")
        if not assets:
            raise BadRequest(ctx.t("publishing.offer.assets_missing"), path="assets")
        await ctx.api.post("/contract-definitions", {"id": offer_id, "accessPolicyId": access,
                                                     "contractPolicyId": contract, "assets": assets})
        return ctx.redirect(f"{BASE}/publishing", ok=ctx.t("publishing.offer.added", id=offer_id))

    # deleting -------------------------------------------------------------------------------------------------

    @console.page()
    async def delete(ctx: Ctx) -> web.StreamResponse:
        kind, entry_id = ctx.request.match_info["kind"], ctx.request.match_info["id"]
        if kind not in KINDS:
            raise BadRequest(ctx.t("publishing.no_kind"))
        asset = await ctx.api.get(f"/assets/{segment(entry_id)}") if kind == "assets" else None
        try:
            await ctx.api.delete(f"/{KINDS[kind]}/{segment(entry_id)}")
        except Conflict as exc:
            details = getattr(exc, "details", None)
            found = details.get("references") if isinstance(details, dict) else None
            references: dict[str, Any] = found if isinstance(found, dict) else {}
            return ctx.render("publishing_refused.html", status=409, message=exc.message,
                              references={str(k): [str(i) for i in v] for k, v in references.items()
                                          if isinstance(v, list)})
        if asset is not None:  # an uploaded file goes with its asset (no agreement needs it any more) ...
            me = await ctx.api.get("/participant")
            others = await ctx.api.get("/assets")  # ... unless another asset names the same file
            await asyncio.to_thread(remove_upload, own_root(str(me["name"])), asset, others)
        return ctx.redirect(f"{BASE}/publishing", ok=ctx.t("publishing.deleted", id=entry_id))

    return [
        web.get(f"{BASE}/publishing", overview),
        web.get(f"{BASE}/publishing/assets/new", asset_form),
        web.post(f"{BASE}/publishing/assets", add_asset),
        web.get(f"{BASE}/publishing/policies/new", policy_form),
        web.post(f"{BASE}/publishing/policies", add_policy),
        web.get(f"{BASE}/publishing/offers/new", offer_form),
        web.post(f"{BASE}/publishing/offers", add_offer),
        web.post(f"{BASE}/publishing/{{kind}}/{{id}}/delete", delete),
    ]
