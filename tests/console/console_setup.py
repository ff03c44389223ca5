"""What the console browser tests share: the browser they drive, the nodes they log in to, the login itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.testing import HostedParticipant, RunningNode

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, no sandbox (CI runs as root), and none of chromium's own connections to the outside.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: How long a browser action or expectation waits for the page before it fails.
WAIT_MS = 10_000


@dataclass
class Browser:
    """One headless chromium for one test; :meth:`page` opens a page in a fresh context (its own cookies)."""

    browser: Any
    pages: list[Any] = field(default_factory=list)

    async def page(self, *, locale: str = "en-US", width: int = 1280, height: int = 800) -> Any:
        context = await self.browser.new_context(locale=locale, viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_MS)
        page = await context.new_page()
        self.pages.append(page)
        return page


@dataclass
class HostedSmes:
    """A node (``acme``) hosting two SMEs, ``sme-one`` and ``sme-two``."""

    host: RunningNode
    one: HostedParticipant
    two: HostedParticipant

    @property
    def console(self) -> str:
        return f"{self.host.node.management_url}/console"


async def login(page: Any, console: str, token: str) -> None:
    """Log in on *console*'s login page with *token*, as a person does: type it, press the button."""
    await page.goto(f"{console}/login")
    await page.fill("#token", token)
    async with page.expect_navigation():
        await page.click("form[action$='/login'] button[type=submit]")
