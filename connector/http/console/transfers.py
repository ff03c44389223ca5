"""The console's transfers pages: every transfer process of the participant, one transfer with its live
progress (server-sent events), its suspend / resume / terminate buttons, and starting a transfer of a
finalized agreement's data (pulled, or pushed by the provider).

Progress is what the management API says of a transfer (``TransferOut``): the consumer's ``received`` bytes
are verified chunks already stored (the resume point), so the verified chunks are those bytes counted in the
manifest's chunks. The speed is worked out by the live stream from two consecutive samples. Every read and
action is a management route called with the caller's token (``ctx.api``): another participant's transfer
is a 404 here as it is through the API.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connector.errors import BadRequest
from connector.http.console import i18n
from connector.http.console.api import segment
from connector.http.console.view import BASE, Console, Ctx, NavItem, event_stream

NAV = (NavItem(f"{BASE}/transfers", "nav.transfers"),)

#: States after which nothing changes (``connector.protocol.transfer.TERMINAL``).
FINAL = frozenset({"COMPLETED", "TERMINATED"})
#: Each poll of the stream waits this long for the transfer to reach a final state (``?wait=``).
POLL_S = 1.0
#: The longest reason a suspend or terminate carries (as ``ReasonIn`` takes it).
MAX_REASON = 1000
#: Rows of the listing.
LIST_LIMIT = 200
#: The element the live stream's messages update.
LIVE_ID = "transfer-live"
ACTIONS = ("suspend", "resume", "terminate")

i18n.add({
    "transfers.title": ("Transfers", "传输"),
    "transfers.intro": ("Every transfer of this participant, newest first: data it pulls as a consumer and data "
                        "it sends as a provider.",
                        "本参与方的所有传输，最新的在前：作为使用方获取的数据，以及作为提供方发送的数据。"),
    "transfers.none": ("No transfers yet.", "尚无传输。"),
    "transfers.role": ("Role", "角色"),
    "transfers.role.consumer": ("Consumer", "使用方"),
    "transfers.role.provider": ("Provider", "提供方"),
    "transfers.progress": ("Progress", "进度"),
    "transfers.open": ("Details", "详情"),
    "transfers.of": ("{done} of {total}", "{done} / {total}"),
    "transfers.unknown": ("not known yet", "尚不知道"),
    "transfers.sent_by_provider": ("sent by this node; the consumer verifies each chunk",
                                   "由本节点发送；使用方逐块校验"),
    "transfers.detail": ("Transfer", "传输"),
    "transfers.id": ("Transfer id", "传输编号"),
    "transfers.agreement": ("Agreement", "协议"),
    "transfers.format": ("Format", "方式"),
    "transfers.format.pull": ("pull (this node fetches the data)", "拉取（本节点获取数据）"),
    "transfers.format.push": ("push (the provider sends the data)", "推送（提供方发送数据）"),
    "transfers.created": ("Started", "开始时间"),
    "transfers.updated": ("Updated", "更新时间"),
    "transfers.live": ("Progress", "进度"),
    "transfers.live_help": ("Updated live while this page is open (reload the page if your browser runs no "
                            "JavaScript).",
                            "页面打开时实时更新（若浏览器未启用 JavaScript，请刷新页面）。"),
    "transfers.state": ("State", "状态"),
    "transfers.received": ("Received and verified", "已接收并校验"),
    "transfers.speed": ("Speed", "速度"),
    "transfers.chunks": ("Verified chunks", "已校验的数据块"),
    "transfers.reason": ("Reason", "原因"),
    "transfers.size": ("Size", "大小"),
    "transfers.history": ("History", "历史"),
    "transfers.history.at": ("When", "时间"),
    "transfers.history.kind": ("Event", "事件"),
    "transfers.history.detail": ("Detail", "详情"),
    "transfers.history.none": ("No events yet.", "暂无事件。"),
    "transfers.actions": ("Actions", "操作"),
    "transfers.action.reason": ("Reason (the peer sees it)", "原因（对方可见）"),
    "transfers.suspend": ("Suspend", "暂停"),
    "transfers.suspend.confirm": ("Suspend this transfer? It can be resumed later.", "确定暂停此传输？之后可以恢复。"),
    "transfers.suspend.done": ("Transfer suspended.", "传输已暂停。"),
    "transfers.resume": ("Resume", "恢复"),
    "transfers.resume.done": ("Transfer resumed.", "传输已恢复。"),
    "transfers.terminate": ("Terminate", "终止"),
    "transfers.terminate.confirm": ("Terminate this transfer? This cannot be undone; a new transfer starts from the "
                                    "beginning.",
                                    "确定终止此传输？此操作无法撤销；新的传输需从头开始。"),
    "transfers.terminate.done": ("Transfer terminated.", "传输已终止。"),
    "transfers.final": ("This transfer has ended; nothing more can be done with it.", "此传输已结束，无法再操作。"),
    "transfers.reason_too_long": ("The reason is too long (at most {n} characters).", "原因过长（最多 {n} 个字符）。"),
    "transfers.start": ("Start a transfer", "开始传输"),
    "transfers.start.help": ("Get the data of a finalized agreement where this participant is the consumer.",
                             "获取本参与方作为使用方的已生效协议的数据。"),
    "transfers.start.agreement": ("Agreement", "协议"),
    "transfers.start.mode": ("How", "方式"),
    "transfers.start.pull": ("Pull: this node fetches the data from the provider", "拉取：本节点从提供方获取数据"),
    "transfers.start.push": ("Push: the provider sends the data to this node", "推送：提供方把数据发送到本节点"),
    "transfers.start.submit": ("Start", "开始"),
    "transfers.start.none": ("No finalized agreement to get data from yet: negotiate an offer first.",
                             "尚无可获取数据的已生效协议：请先协商一个报价。"),
    "transfers.start.done": ("Transfer started.", "传输已开始。"),
    "transfers.start.missing": ("Choose the agreement whose data to get.", "请选择要获取数据的协议。"),
    "transfers.start.mode_bad": ("Choose pull or push.", "请选择拉取或推送。"),
    "transfers.no_action": ("There is no such action on a transfer.", "传输没有这个操作。"),
})


def human_bytes(n: int | None) -> str:
    """*n* bytes in binary units (``1.5 MiB``), the same in both languages."""
    if n is None:
        return ""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


@dataclass(frozen=True)
class Progress:
    """What a transfer's progress bar and figures show."""

    #: Bytes received and verified (consumer), or the payload's size once completed (either side).
    done: int
    #: The payload's size (None until the manifest is known).
    size: int | None
    verified_chunks: int | None
    chunks: int | None
    #: False on the provider's side while it runs: only the consumer counts what it has verified.
    counted: bool


def _count(value: Any) -> int | None:
    """A byte or chunk count from the API's JSON (None when it is not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def progress_of(transfer: dict[str, Any]) -> Progress:
    """*transfer*'s progress (a ``TransferOut``): the consumer's verified bytes against the manifest's size,
    and how many of the manifest's chunks they hold (every chunk once the payload is whole)."""
    found = transfer.get("manifest")
    manifest: dict[str, Any] = found if isinstance(found, dict) else {}
    size = _count(transfer.get("size"))
    size = size if size is not None else _count(manifest.get("size"))
    completed = transfer.get("state") == "COMPLETED"
    counted = transfer.get("role") == "consumer" or completed
    done = size if completed and size is not None else (_count(transfer.get("received")) or 0) if counted else 0
    chunks = verified = None
    if isinstance(manifest.get("chunks"), list):
        chunks = len(manifest["chunks"])
        chunk_size = _count(manifest.get("chunkSize"))
        if completed or (counted and size is not None and done >= size):
            verified = chunks
        elif counted and chunk_size:
            verified = min(chunks, done // chunk_size)
    return Progress(done=done, size=size, verified_chunks=verified, chunks=chunks, counted=counted)


class Speed:
    """Bytes per second between consecutive samples of the received bytes (monotonic clock)."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.value: float | None = None

    def sample(self, received: int, now: float) -> float | None:
        if self._last is not None and now > self._last[0]:
            self.value = max(0.0, (received - self._last[1]) / (now - self._last[0]))
        self._last = (now, received)
        return self.value


def live_fields(lang: i18n.Lang, transfer: dict[str, Any], speed: float | None) -> dict[str, Any]:
    """The live stream's message for *transfer* (see ``static/console.js``)."""
    p = progress_of(transfer)
    state = str(transfer.get("state", ""))
    final = state in FINAL

    def of(done: str, total: str) -> str:
        return i18n.translate(lang, "transfers.of", done=done, total=total)

    received = (i18n.translate(lang, "transfers.sent_by_provider") if not p.counted
                else of(human_bytes(p.done), human_bytes(p.size) if p.size is not None
                        else i18n.translate(lang, "transfers.unknown")))
    chunks = (of(str(p.verified_chunks), str(p.chunks)) if p.chunks is not None and p.verified_chunks is not None
              else "")
    rate = "" if speed is None or final or not p.counted else f"{human_bytes(round(speed))}/s"
    return {"id": LIVE_ID, "final": final, "progress": [p.done, p.size or 0],
            "fields": {"state": state, "received": received, "speed": rate, "chunks": chunks,
                       "size": human_bytes(p.size) if p.size is not None else i18n.translate(lang, "transfers.unknown"),
                       "reason": str(transfer.get("reason") or "")}}


def _text(ctx: Ctx, name: str) -> str:
    value = ctx.form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _row(transfer: dict[str, Any]) -> dict[str, Any]:
    """*transfer* with its progress, for a template."""
    p = progress_of(transfer)
    return {**transfer, "p": p, "done_text": human_bytes(p.done), "size_text": human_bytes(p.size)}


def routes(console: Console) -> list[web.RouteDef]:
    async def startable(ctx: Ctx) -> list[dict[str, Any]]:
        """The finalized agreements whose data this participant may get (it is their consumer)."""
        found = await ctx.api.get("/agreements", state="FINALIZED")
        return [a for a in found if a.get("role") == "consumer"]

    @console.page()
    async def listing(ctx: Ctx) -> web.StreamResponse:
        found = await ctx.api.get("/transfers", limit=LIST_LIMIT)
        return ctx.render("transfers.html", transfers=[_row(t) for t in found], agreements=await startable(ctx),
                          chosen=ctx.request.query.get("agreement", ""))

    @console.page()
    async def start(ctx: Ctx) -> web.StreamResponse:
        agreement_id, mode = _text(ctx, "agreement"), _text(ctx, "mode") or "pull"
        if not agreement_id:
            raise BadRequest(ctx.t("transfers.start.missing"), path="agreement")
        if mode not in ("pull", "push"):
            raise BadRequest(ctx.t("transfers.start.mode_bad"), path="mode")
        started = await ctx.api.post("/transfers", {"agreementId": agreement_id, "push": mode == "push"})
        return ctx.redirect(f"{BASE}/transfers/{segment(str(started['id']))}", ok=ctx.t("transfers.start.done"))

    @console.page()
    async def detail(ctx: Ctx) -> web.StreamResponse:
        transfer = await ctx.api.get(f"/transfers/{segment(ctx.request.match_info['id'])}")
        live = live_fields(ctx.lang, transfer, None)
        history = transfer.get("history") if isinstance(transfer.get("history"), list) else []
        return ctx.render("transfer.html", tr=_row(transfer), live=live["fields"], final=live["final"],
                          history=history, live_id=LIVE_ID, max_reason=MAX_REASON)

    @console.page()
    async def act(ctx: Ctx) -> web.StreamResponse:
        action = ctx.request.match_info["action"]
        if action not in ACTIONS:
            raise BadRequest(ctx.t("transfers.no_action"))
        reason = _text(ctx, "reason")
        if len(reason) > MAX_REASON:
            raise BadRequest(ctx.t("transfers.reason_too_long", n=MAX_REASON), path="reason")
        path = f"/transfers/{segment(ctx.request.match_info['id'])}"
        await ctx.api.post(f"{path}/{action}", {"reason": reason})
        return ctx.redirect(f"{BASE}{path}", ok=ctx.t(f"transfers.{action}.done"))

    @console.page()
    async def events(ctx: Ctx) -> web.StreamResponse:
        """Server-sent events: the transfer's progress about once a second (each poll waits for a final state),
        a final message once it is COMPLETED or TERMINATED, and an end after ``view.STREAM_S`` in any case."""
        path = f"/transfers/{segment(ctx.request.match_info['id'])}"
        transfer = await ctx.api.get(path)  # another participant's transfer: a 404 page, before any stream

        async def messages() -> AsyncGenerator[dict[str, Any], None]:
            nonlocal transfer
            speed = Speed()
            while True:
                yield live_fields(ctx.lang, transfer, speed.sample(progress_of(transfer).done, time.monotonic()))
                transfer = await ctx.api.get(path, wait=POLL_S)

        return await event_stream(ctx, messages(), lambda exc: {
            "id": LIVE_ID, "final": True, "fields": {"reason": exc.message}})

    return [
        web.get(f"{BASE}/transfers", listing),
        web.post(f"{BASE}/transfers", start),
        web.get(f"{BASE}/transfers/{{id}}", detail),
        web.get(f"{BASE}/transfers/{{id}}/events", events),
        web.post(f"{BASE}/transfers/{{id}}/{{action}}", act),
    ]
