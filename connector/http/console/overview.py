"""The overview page: the participant, its keys, credentials and recent activity."""

from __future__ import annotations

from aiohttp import web

from connector.http.console.view import BASE, Console, Ctx, NavItem

NAV = (NavItem(f"{BASE}/", "nav.overview"),)


def routes(console: Console) -> list[web.RouteDef]:
    @console.page()
    async def overview(ctx: Ctx) -> web.StreamResponse:
        me = await ctx.api.get("/participant")
        held = await ctx.api.get("/credentials/held")
        negotiations = await ctx.api.get("/negotiations", limit=5)
        transfers = await ctx.api.get("/transfers", limit=5)
        activity = sorted(
            [{"kind": "negotiation", "href": f"{BASE}/negotiations/", **n} for n in negotiations]
            + [{"kind": "transfer", "href": f"{BASE}/transfers/", **t} for t in transfers],
            key=lambda row: row.get("updatedAt", ""), reverse=True)[:8]
        return ctx.render("overview.html", me=me, held=held, activity=activity)

    return [web.get(f"{BASE}/", overview)]
