"""The web console in a real browser: Debian's chromium driven by Playwright (no browser download).

`make test` installs chromium when it is missing; when it is still missing these tests fail with the reason,
unless ``TDS_SKIP_BROWSER=1`` asks to skip them. Each test launches its own headless browser in its own event
loop (its nodes run in that loop too) and closes it at the end. When a test fails, every page it opened is
saved as a screenshot in ``test-output/console/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_setup import CHROMIUM, CHROMIUM_ARGS, Browser, HostedSmes

from connector.testing import NodeFactory

FAILURE_SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "console"
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TDS_SKIP_BROWSER") != "1":
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="TDS_SKIP_BROWSER=1: the console browser tests are skipped on purpose")
    for item in items:
        if here in item.path.parents:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so that a fixture's teardown knows whether the test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture
async def browser(request: pytest.FixtureRequest, nodes: NodeFactory) -> AsyncIterator[Browser]:
    """A headless chromium, closed before the test's nodes stop (no page keeps a stream of theirs open)."""
    if not CHROMIUM.exists():
        pytest.fail(f"the console browser tests need chromium at {CHROMIUM} (Debian package 'chromium'): `make test` "
                    "installs it when run as root with apt-get; install it, or set TDS_SKIP_BROWSER=1 to skip "
                    "these tests", pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        held = Browser(launched)
        try:
            yield held
        finally:
            if any(r.failed for r in request.node.stash.get(REPORTS, {}).values()):
                await _screenshots(held.pages, request.node.name)
            await launched.close()


async def _screenshots(pages: list[Any], test_name: str) -> None:
    FAILURE_SHOTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]+", "_", test_name)
    for n, page in enumerate(p for p in pages if not p.is_closed()):
        name = f"{stem}.png" if n == 0 else f"{stem}-{n + 1}.png"
        try:
            await page.screenshot(path=str(FAILURE_SHOTS / name), full_page=True)
        except Exception as exc:  # a crashed page: the failure itself says more than its picture would
            print(f"no screenshot {name}: {exc}")


@pytest.fixture
async def hosted(nodes: NodeFactory) -> HostedSmes:
    """A node hosting two SMEs (stopped by ``nodes`` at the end)."""
    host = await nodes.start("acme")
    one = await nodes.host(host, "sme-one", legal_name="SME One Ltd.")
    two = await nodes.host(host, "sme-two", legal_name="SME Two Ltd.")
    return HostedSmes(host, one, two)
