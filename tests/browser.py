"""Headless Chromium for the dashboard tests: Debian's package, driven by playwright."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from stationd.api import create_app
from stationd.httpserve import HTTPServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def dashboard(station: Any, async_playwright: Any, **page_options: Any) -> AsyncIterator[tuple[Any, str]]:
    """The station's API and dashboard on a free loopback port, and a new page in headless Chromium: (page, URL).
    The caller opens the page (after setting its handlers and init scripts)."""
    app = create_app(station)
    server = HTTPServer(app)
    url = await server.start()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                yield await browser.new_page(**page_options), url
            finally:
                await browser.close()
    finally:
        app.state.api.closing.set()
        await server.stop()
