"""Headless Debian Chromium through Playwright's async API (never a downloaded browser).

``bash scripts/ensure-browser.sh`` installs both. The browser is launched from
``/usr/bin/chromium`` (``$CHROMIUM`` overrides) with a fresh temporary profile;
Playwright's sync API cannot run inside the event loop the backend is served
from, so everything here is async.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOW = "run `bash scripts/ensure-browser.sh` (Debian's chromium + the playwright package)"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh profile; fails (never skips) when it is missing."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(f"the playwright package is not installed: {HOW}")
    executable = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if executable is None:
        pytest.fail(f"{CHROMIUM} not found: {HOW}")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()
