"""Issue 13: `/docs` (Swagger UI) and `/redoc` work without internet, every file they need served by
chargeops itself: the HTML names no other host, each file it names is served, and a real headless Chromium
with every request to another host refused renders the operations."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.settings import Settings
from ops.api import create_app
from ops.api.routes import docs
from telemetry.bus import InProcessBus
from tests.browser import LAB, offline_page
from tests.conftest import StartRuntime
from tests.test_api_support import assert_error

pytest_plugins = ("tests.browser",)

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token"  # conftest's start_runtime
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@asynccontextmanager
async def docs_client(root_path: str = "") -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app without a database or a token: the docs need neither."""
    app = create_app(cast(async_sessionmaker[AsyncSession], None), InProcessBus(), Settings())
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def referenced(html: str) -> list[str]:
    """Every URL the page loads: src and href attributes, the spec URL the script is given."""
    return re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(
        r"""(?:url: |spec-url=)['"]([^'"]+)""", html
    )


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_pages_name_no_other_host_and_every_file_they_name_is_served(path: str) -> None:
    async with docs_client() as client:
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert not re.findall(r"https?:|//[\w.-]+\.[a-z]{2,}", page.text), page.text  # not even `//cdn…`
        urls = referenced(page.text)
        assert len(urls) == {"/docs": 4, "/redoc": 3, "/docs/oauth2-redirect": 0}[path], urls
        for url in urls:
            assert url.startswith("/"), url
            r = await client.get(url)
            suffix = Path(url.split("?")[0]).suffix
            assert r.status_code == 200, url
            assert r.headers["content-type"].startswith(MEDIA_TYPES[suffix]), (url, r.headers)
            if url.startswith("/static/"):
                assert "immutable" in r.headers["cache-control"] and "?v=" in url


async def test_urls_follow_the_root_path_behind_a_proxy() -> None:
    async with docs_client(root_path="/ops") as client:
        for path in ("/docs", "/redoc"):
            urls = referenced((await client.get(f"/ops{path}")).text)
            assert urls and all(u.startswith("/ops/") for u in urls), urls


async def test_only_the_listed_files_are_served() -> None:
    async with docs_client() as client:
        for path in (
            "/static/swagger-ui/LICENSE",
            "/static/swagger-ui/index.html",
            "/static/redoc/../swagger-ui/LICENSE",
            "/static/swagger-ui/..%2F..%2F__init__.py",
            "/static/crew/crew.js",
        ):
            assert_error(await client.get(path), 404, "not_found")


def test_vendored_files_match_their_versions_and_ship_in_the_package() -> None:
    """The version in the asset URLs (what lets browsers cache them for a year) is the files' own, and
    pyproject's package data takes every file served, its licence and the README."""
    bundle = (docs.STATIC_DIR / "swagger-ui/swagger-ui-bundle.js").read_text(encoding="utf-8")
    assert f'PACKAGE_VERSION:"{docs.SWAGGER_UI_VERSION}"' in bundle
    redoc = (docs.STATIC_DIR / "redoc/redoc.standalone.js").read_text(encoding="utf-8")
    assert f'"{docs.REDOC_VERSION}"' in redoc
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ops"]
    shipped = [*docs.FILES, "swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"]
    for name in shipped:
        assert (docs.STATIC_DIR / name).is_file(), name
        assert any(fnmatch.fnmatch(f"api/static/{name}", g) for g in globs), name
    for version in (docs.SWAGGER_UI_VERSION, docs.REDOC_VERSION):
        assert version in (docs.STATIC_DIR / "README.md").read_text()


async def test_swagger_ui_renders_and_calls_the_api_offline(
    start_runtime: StartRuntime, browser: Browser
) -> None:
    runtime = await start_runtime()
    async with offline_page(browser, runtime) as (page, problems):
        await page.goto(f"{LAB}/docs")
        await expect(page.locator(".info .title")).to_contain_text("chargeops operator API")
        await expect(page.locator(".info .title")).to_contain_text("OAS 3.1")
        chargers = page.locator(".opblock-get", has=page.locator('[data-path="/api/chargers"]'))
        await expect(chargers).to_be_visible()

        # Usable, not only drawn: sign in with a token and run GET /api/chargers from the page.
        await page.get_by_role("button", name="Authorize").first.click()
        dialog = page.locator(".modal-ux")
        await dialog.get_by_label("auth-bearer-value").fill(ADMIN_TOKEN)
        await dialog.get_by_role("button", name="Apply credentials").click()
        await dialog.get_by_role("button", name="Close").click()
        await chargers.locator(".opblock-summary").click()
        await chargers.get_by_role("button", name="Try it out").click()
        await chargers.get_by_role("button", name="Execute").click()
        response = chargers.locator(".live-responses-table tr.response")
        await expect(response.locator(".response-col_status")).to_have_text("200")
        await expect(response.locator(".response-col_description")).to_contain_text('"items": []')
        assert problems == []


async def test_redoc_renders_offline(start_runtime: StartRuntime, browser: Browser) -> None:
    runtime = await start_runtime()
    async with offline_page(browser, runtime) as (page, problems):
        await page.goto(f"{LAB}/redoc")
        await expect(page.get_by_role("heading", name="chargeops operator API")).to_be_visible()
        await expect(page.locator('[data-section-id^="operation/list_chargers"]')).to_be_attached()
        # Its logo from cdn.redoc.ly is refused by the page's policy, so never requested (and left out).
        logo = "Loading the image 'https://cdn.redoc.ly/redoc/logo-mini.svg' violates"
        assert [p for p in problems if not p.startswith(logo)] == []
