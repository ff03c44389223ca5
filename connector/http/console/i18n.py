"""The console's two languages: English and simplified Chinese.

Every text a page shows is a key in :data:`CATALOG` with both languages; page modules add theirs with
:func:`add` when they are imported. The language is the user's choice (the ``tds_lang`` cookie) first, else
the browser's ``Accept-Language``, else simplified Chinese for a participant whose region is CN (or CN-…)
and English otherwise.
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")
COOKIE = "tds_lang"

#: key -> {"en": text, "zh": text}; a text may name fields as ``{name}``.
CATALOG: dict[str, dict[str, str]] = {}


def add(messages: dict[str, tuple[str, str]]) -> None:
    """Add *messages* (key -> (English, Chinese)); a key already present with other texts is an error."""
    for key, (en, zh) in messages.items():
        known = CATALOG.get(key)
        if known is not None and (known["en"], known["zh"]) != (en, zh):
            raise ValueError(f"console message {key!r} defined twice with different texts")
        CATALOG[key] = {"en": en, "zh": zh}


def translate(lang: Lang, key: str, **fields: object) -> str:
    """The text of *key* in *lang* (a missing key shows as itself, so a page never fails over a text)."""
    entry = CATALOG.get(key)
    text = entry[lang] if entry is not None else key
    return text.format(**fields) if fields else text


def choose(cookie: str | None, accept_language: str | None, region: str | None) -> Lang:
    if cookie in LANGS:
        return cookie
    best: tuple[float, int, Lang] | None = None
    for index, part in enumerate((accept_language or "")[:500].split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > 0 and (best is None or (q, -index) > (best[0], best[1])):
            best = (q, -index, primary)
    if best is not None:
        return best[2]
    return "zh" if region and (region == "CN" or region.startswith("CN-")) else "en"


add({
    "app.title": ("TDS Console", "TDS 控制台"),
    "nav.overview": ("Overview", "概览"),
    "nav.discover": ("Discover data", "发现数据"),
    "nav.negotiations": ("Negotiations", "协商"),
    "nav.agreements": ("Agreements", "协议"),
    "nav.transfers": ("Transfers", "传输"),
    "nav.usage": ("Usage", "使用"),
    "nav.publishing": ("Publishing", "发布"),
    "nav.admin": ("Participants", "参与方"),
    "nav.skip": ("Skip to content", "跳到正文"),
    "lang.switch": ("中文", "English"),
    "login.title": ("Log in", "登录"),
    "login.token": ("Management token", "管理令牌"),
    "login.help": ("Paste the token your host gave you (or one of your applications' tokens).",
                   "粘贴托管方提供给您的令牌（或您的应用的令牌）。"),
    "login.submit": ("Log in", "登录"),
    "login.failed": ("Unknown or revoked token.", "令牌无效或已被撤销。"),
    "login.ended": ("Your session ended; log in again.", "会话已结束，请重新登录。"),
    "logout": ("Log out", "退出"),
    "error.title": ("Something was refused", "请求被拒绝"),
    "error.back": ("Back", "返回"),
    "error.too_large": ("The form is larger than this node accepts ({limit} bytes).",
                        "表单超过了本节点接受的大小（{limit} 字节）。"),
    "error.no_page": ("There is no such console page.", "控制台没有这个页面。"),
    "error.status": ("HTTP status {status}", "HTTP 状态 {status}"),
    "csrf.failed": ("This form expired or came from another site; reload the page and try again.",
                    "表单已过期或来自其他网站；请刷新页面后重试。"),
    "overview.title": ("Overview", "概览"),
    "overview.participant": ("Participant", "参与方"),
    "overview.did": ("DID", "DID"),
    "overview.dsp": ("DSP endpoint", "DSP 端点"),
    "overview.did_document": ("DID document", "DID 文档"),
    "overview.self_description": ("Self-description", "自我描述"),
    "overview.application": ("Signed in as application", "当前应用"),
    "overview.keys": ("Key fingerprints", "密钥指纹"),
    "overview.credentials": ("Credentials held", "持有的凭证"),
    "overview.no_credentials": ("No credentials held yet.", "尚未持有凭证。"),
    "overview.activity": ("Recent activity", "最近动态"),
    "overview.no_activity": ("Nothing yet.", "暂无。"),
    "overview.region": ("Region", "地区"),
    "overview.issuer": ("Issuer", "签发方"),
    "overview.claims": ("Claims", "声明"),
    "overview.valid_until": ("Valid until", "有效期至"),
    "col.kind": ("Kind", "类型"),
    "col.id": ("Id", "编号"),
    "col.state": ("State", "状态"),
    "col.peer": ("Peer", "对方"),
    "col.updated": ("Updated", "更新时间"),
    "col.asset": ("Asset", "资产"),
    "kind.negotiation": ("Negotiation", "协商"),
    "kind.transfer": ("Transfer", "传输"),
    "admin.only": ("This page is for the node's admin token.", "此页面仅供节点管理员令牌使用。"),
    "participant.only": ("The node's admin token reads no participant's data; log in with a participant's token.",
                         "节点管理员令牌不能读取参与方的数据；请使用参与方的令牌登录。"),
})
