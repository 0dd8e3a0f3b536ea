"""The headless Chromium fixture for the browser tests (the crew page, the status page, the API docs), loaded
through `pytest_plugins`, and `offline_page`, a page that reaches chargeops and nothing else. Playwright
drives the Debian package's Chromium and downloads no browser of its own; no Chromium is a failure, never a
skip."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from ops.runtime import Runtime

CHROMIUM = shutil.which("chromium")  # the Debian package
# Not localhost, as in a lab: Swagger UI treats localhost specially (its online validator badge).
LAB = "http://chargeops.lab"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM, "no Chromium: apt-get install chromium (the Debian package; .ci/run does)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        yield browser
        await browser.close()


@asynccontextmanager
async def offline_page(
    browser: Browser, runtime: Runtime, **context: Any
) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page at `LAB`, which reaches the running chargeops and nothing else: every other request is
    refused as if the network were down, and listed with every page error, console error and HTTP error.
    `context`: options of the browser context (viewport, is_mobile…)."""
    server = f"http://127.0.0.1:{runtime.http_port}"
    problems: list[str] = []

    async def only_chargeops(route: Route) -> None:
        url = route.request.url
        if url == LAB or url.startswith(f"{LAB}/"):
            await route.fulfill(response=await route.fetch(url=server + url[len(LAB) :]))
        else:
            problems.append(f"outside request {url}")
            await route.abort("internetdisconnected")

    browser_context = await browser.new_context(**context)
    await browser_context.route("**/*", only_chargeops)
    page = await browser_context.new_page()
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        yield page, problems
    finally:
        await browser_context.close()
