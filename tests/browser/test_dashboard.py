"""The live dashboard in headless Chromium, across stage flips, without a reload.

Two pages on the same backend: ``/`` (the new-protocol view: ``envelope.v1`` on
/ws) and ``/?client=legacy`` (the old-protocol view: plain socket, old payloads).
Training runs over REST; the stage of /ws moves legacy -> live -> new through the
operator command, then back to legacy with one click in the dashboard's own
migration panel. Each page must keep its one WebSocket (same page, same socket,
state "open"), keep counting frames, keep moving its progress bar, and log no
error. Screenshots go to ``artifacts/``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from flags import FlagSettings
from shim.stages import Stage
from tests.reference.support import (
    OPS_TOKEN,
    ROOT,
    Backend,
    copy_toggles,
    fast_settings,
    flags_cli,
    serve_reference,
)
from tests.support import UNIT

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, WebSocket

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(120)]

ARTIFACTS = ROOT / "artifacts"
#: Playwright takes milliseconds.
WAIT_MS = 5_000 * UNIT


@dataclass
class View:
    """One dashboard page and what it did: errors logged, sockets opened."""

    name: str
    page: Page
    marker: str = ""
    errors: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, browser_page: Page, name: str, url: str) -> View:
        view = cls(name, browser_page)
        browser_page.on("console", view._console)
        browser_page.on("pageerror", lambda error: view.errors.append(f"pageerror: {error}"))
        browser_page.on("websocket", view._websocket)
        await browser_page.goto(url)
        await view.expect_text("#conn-state", "open")
        # Set once after load: a reload would lose it.
        view.marker = uuid.uuid4().hex
        await browser_page.evaluate("(marker) => { window.testMarker = marker; }", view.marker)
        return view

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _websocket(self, socket: WebSocket) -> None:
        self.sockets.append(socket.url)

    async def expect_text(self, selector: str, text: str | re.Pattern[str]) -> None:
        from playwright.async_api import expect

        await expect(self.page.locator(selector)).to_have_text(text, timeout=WAIT_MS)

    async def received(self) -> int:
        return int(await self.page.locator("#received").inner_text())

    async def progress(self, session_id: str) -> float:
        """The session row's progress text as a number (-1 while there is no row)."""
        row = self.page.locator(f'#sessions [data-session="{session_id}"] .progress-text')
        if await row.count() == 0:
            return -1.0
        text = await row.inner_text()
        return float(text.split("%")[0])

    async def still_the_same_page(self) -> None:
        """No reload, one socket since load, connected, nothing logged as an error."""
        assert await self.page.evaluate("() => window.testMarker") == self.marker, self.name
        assert len(self.sockets) == 1, (self.name, self.sockets)
        await self.expect_text("#conn-state", "open")
        assert await self.page.evaluate("() => window.dashboardClient.attempt") == 0
        assert self.errors == [], (self.name, self.errors)


async def progress_advances(backend: Backend, views: list[View]) -> str:
    """A new session's bar moves on every page: seen mid-way, then higher, then done."""
    counts = [await v.received() for v in views]
    session_id = await backend.train(8)  # 3 phases x 8 epochs x 50 ms
    await asyncio.gather(*(bar_moves(view, session_id) for view in views))
    for view, count in zip(views, counts, strict=True):
        # The counter is refreshed every 500 ms.
        async with asyncio.timeout(WAIT_MS / 1000):
            while await view.received() <= count:
                await asyncio.sleep(0.05)
    return session_id


async def bar_moves(view: View, session_id: str) -> None:
    async with asyncio.timeout(WAIT_MS / 1000):
        first = await view.progress(session_id)
        while not 0 < first < 100:
            await asyncio.sleep(0.01)
            first = await view.progress(session_id)
        while (later := await view.progress(session_id)) <= first:
            await asyncio.sleep(0.01)
    assert later > first, view.name
    row = f'#sessions [data-session="{session_id}"]'
    await view.expect_text(f"{row} .progress-text", re.compile(r"^100\.0%"))
    width = await view.page.locator(f"{row} .bar > div").evaluate("e => e.style.width")
    assert width == "100%", (view.name, width)


async def test_dashboard_follows_flips_without_reload(browser: Browser, tmp_path: Path) -> None:
    toggles = copy_toggles(tmp_path)
    flag_settings = FlagSettings(toggles_file=toggles, watch_interval=0.1)
    async with serve_reference(flag_settings, fast_settings()) as backend:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            await run_dashboard_scenario(backend, toggles, context)
        finally:
            await context.close()


async def run_dashboard_scenario(backend: Backend, toggles: Path, context: BrowserContext) -> None:
    # The stage buttons need the operator token, which the page reads from its fragment.
    new_view = await View.open(
        await context.new_page(), "new", f"{backend.http_url}/#ops_token={OPS_TOKEN}"
    )
    old_view = await View.open(
        await context.new_page(), "legacy", f"{backend.http_url}/?client=legacy"
    )
    views = [new_view, old_view]
    await new_view.expect_text("#client-format", "new protocol")
    await old_view.expect_text("#client-format", "old protocol")
    connection_id = await new_view.page.evaluate("() => window.dashboardClient.connectionId")
    assert connection_id
    assert backend.stages("/ws") == {Stage.LEGACY}
    sessions = [await progress_advances(backend, views)]

    for stage in (Stage.LIVE, Stage.NEW):
        await flags_cli(toggles, "set", "/ws", stage.value)
        await backend.rerouted({"/ws": stage})
        for view in views:
            await view.expect_text('#stages tr[data-endpoint="/ws"] td.stage', stage.value)
        sessions.append(await progress_advances(backend, views))
        for view in views:
            await view.still_the_same_page()
    state = await backend.migration()
    assert state["endpoints"]["/ws"]["clients"] == {"legacy": 0, "new": 2}

    # Roll back with one click in the migration panel.
    row = new_view.page.locator('#stages tr[data-endpoint="/ws"]')
    await row.get_by_role("button", name="legacy", exact=True).click()
    await backend.rerouted({"/ws": Stage.LEGACY})
    for view in views:
        await view.expect_text('#stages tr[data-endpoint="/ws"] td.stage', "legacy")
    sessions.append(await progress_advances(backend, views))
    for view in views:
        await view.still_the_same_page()
    assert (
        await new_view.page.evaluate("() => window.dashboardClient.connectionId") == connection_id
    )
    assert await new_view.page.locator("#migration-error").inner_text() == ""

    # One row per session, whatever the format: phase bookkeeping is not a session.
    for view in views:
        rows = view.page.locator("#sessions .session")
        keys = [await rows.nth(i).get_attribute("data-session") for i in range(await rows.count())]
        assert keys == sessions, (view.name, keys)
        await view.expect_text("#phase-report", re.compile(r"Quiet-STaR: epoch 8/8"))

    await new_view.page.get_by_role("button", name="Create a model").click()
    for view in views:
        await view.expect_text("#model-list li", re.compile(r"^model-\d+ \("))

    ARTIFACTS.mkdir(exist_ok=True)
    await new_view.page.screenshot(path=ARTIFACTS / "dashboard-new.png", full_page=True)
    await old_view.page.screenshot(path=ARTIFACTS / "dashboard-legacy.png", full_page=True)

    # Forward again: the new side's seq moved on while legacy delivered (its frames
    # carry no seq), which is not a gap: nothing was lost.
    await flags_cli(toggles, "set", "/ws", "new")
    await backend.rerouted({"/ws": Stage.NEW})
    await progress_advances(backend, views)
    assert await new_view.page.evaluate("() => window.dashboardClient.gaps") == 0
    await new_view.expect_text("#gaps", "0")
    for view in views:
        await view.still_the_same_page()


async def test_dashboard_with_authentication_on(browser: Browser, tmp_path: Path) -> None:
    """With WS_JWT_SECRET set, the page authenticates with /#token=<JWT> and updates,
    as the new-protocol view and as the old-protocol one (``?client=legacy``, which
    offers ``legacy.v1`` beside ``bearer.<JWT>`` and keeps the old payloads);
    without a token its WebSocket is refused (HTTP 403) and the page says so."""
    from tests.security.helpers import SECRET, hs_token

    toggles = copy_toggles(tmp_path)
    flag_settings = FlagSettings(toggles_file=toggles, watch_interval=0.1)
    async with serve_reference(flag_settings, fast_settings(jwt_key=SECRET)) as backend:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            await flags_cli(toggles, "set", "/ws", "new")
            await backend.rerouted({"/ws": Stage.NEW})
            view = await View.open(
                await context.new_page(), "authenticated", f"{backend.http_url}/#token={hs_token()}"
            )
            old_view = await View.open(
                await context.new_page(),
                "authenticated legacy",
                f"{backend.http_url}/?client=legacy#token={hs_token('olga')}",
            )
            await old_view.expect_text("#client-format", "old protocol")
            protocol = await old_view.page.evaluate("() => window.dashboardClient.ws.protocol")
            assert protocol == "legacy.v1"
            assert await view.page.evaluate("() => window.dashboardClient.ws.protocol") == (
                "envelope.v1"
            )
            service = backend.app.state.service
            formats = {
                service.principal(route.connection_id)["sub"]: route.format.value
                for route in backend.manager.routes()
            }
            assert formats == {"alice": "envelope", "olga": "legacy"}
            await progress_advances(backend, [view, old_view])
            for each in (view, old_view):
                await each.still_the_same_page()
            for url in (f"{backend.http_url}/", f"{backend.http_url}/?client=legacy"):
                refused = await context.new_page()
                await refused.goto(url)
                await refused.wait_for_function(
                    "() => window.dashboardClient && window.dashboardClient.state !== 'connecting'"
                    " && window.dashboardClient.state !== 'open'",
                    timeout=10_000 * UNIT,
                )
                assert await refused.evaluate("() => window.dashboardClient.connectionId") is None
            assert service.stats()["refused_auth"] >= 2
        finally:
            await context.close()
