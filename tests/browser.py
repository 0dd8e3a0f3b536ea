"""The headless Chromium fixture for the browser tests (the crew page, the API docs), loaded through
`pytest_plugins`. Playwright drives the Debian package's Chromium and downloads no browser of its own; no
Chromium is a failure, never a skip."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = shutil.which("chromium")  # the Debian package


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM, "no Chromium: apt-get install chromium (the Debian package; .ci/run does)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        yield browser
        await browser.close()
