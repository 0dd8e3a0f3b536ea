"""The status page (issue 13) in a real headless Chromium (the Debian package) against a whole running
chargeops on the real Postgres: a north viewer signs in on a phone-sized screen with every request to another
host refused, and sees the north's summary counts, its offline and faulted chargers, its open tickets (the
overdue one in red), its supply warning in force and every north site's chargers, none of the south's; the
page refreshes itself after 30 s; a wrong or revoked token goes back to sign-in. No Chromium is a failure,
never a skip."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, Connector
from chargeops.db.ops_models import SupplyWarning, Ticket
from chargeops.events import utcnow
from chargeops.settings import Settings
from ops import tickets
from ops.api import create_app
from ops.api.routes import status_page
from ops.runtime import Runtime
from telemetry.bus import InProcessBus
from tests.browser import LAB, offline_page
from tests.conftest import StartRuntime

pytest_plugins = ("tests.browser",)

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": "Bearer test-admin-token"}
PHONE: ViewportSize = {"width": 390, "height": 844}
ON_A_PHONE = {"viewport": PHONE, "is_mobile": True, "has_touch": True, "device_scale_factor": 3}
FLEET = {
    "regions": [{"id": "north"}, {"id": "south"}],
    "depots": [{"id": "D-N", "region": "north"}, {"id": "D-S", "region": "south"}],
    "sites": [
        {"id": "north-1", "region": "north", "depot": "D-N"},
        {"id": "north-2", "region": "north", "depot": "D-N"},
        {"id": "south-1", "region": "south", "depot": "D-S"},
    ],
    "chargers": [
        {"id": "CP-N1", "site": "north-1"},
        {"id": "CP-N2", "site": "north-1"},
        {"id": "CP-N3", "site": "north-2"},
        {"id": "CP-S1", "site": "south-1"},
    ],
}
REASON = "3 RCD-B-40A on hand, 5 expected to fail within the lead time"


@pytest.fixture
async def runtime(start_runtime: StartRuntime, pg_url: str) -> Runtime:
    return await start_runtime(pg_url, ops_interval=3600)  # no background scan touches the test's data


async def open_ticket(
    runtime: Runtime, charger_id: str, site: str, region: str, priority: str, due_in: timedelta
) -> int:
    """Inserted through the product's ticket code, as the ops engine does when a rule matches a fault."""
    now = utcnow()
    async with runtime.sessions() as session:
        ticket = await tickets.create(
            session,
            Ticket(
                kind="maintenance",
                status="open",
                priority=priority,
                open_key=tickets.maintenance_key(charger_id, "earth-fault"),
                charger_id=charger_id,
                site=site,
                region=region,
                rule="earth-fault",
                fault_code="GroundFailure",
                component="RCD",
                description="residual current device tripped",
                parts=[],
                occurrences=1,
                created_at=now,
                updated_at=now,
                last_occurred_at=now,
                sla_due_at=now + due_in,
            ),
            "test",
        )
        await session.commit()
        return ticket.id


async def seed(runtime: Runtime) -> None:
    """What the chargers and the ops engine would have stored: CP-N2 faulted, CP-N3 gone offline 10 min
    ago (not long enough for the engine's offline ticket), the south's CP-S1 faulted too; warnings at both
    depots (and one that is back to ok)."""
    seen = utcnow() - timedelta(minutes=10)
    async with runtime.sessions() as s, s.begin():
        for cid in ("CP-N1", "CP-N2", "CP-S1"):
            await s.execute(
                update(Charger).where(Charger.id == cid).values(connected=True, protocol="ocpp2.0.1")
            )
        await s.execute(
            update(Charger)
            .where(Charger.id == "CP-N3")
            .values(connected=False, protocol="ocpp1.6", last_seen=seen)
        )
        s.add_all(
            [
                Connector(charger_id="CP-N1", evse_id=1, connector_id=1, status="Available"),
                Connector(charger_id="CP-N2", evse_id=1, connector_id=1, status="Available"),
                Connector(
                    charger_id="CP-N2",
                    evse_id=2,
                    connector_id=1,
                    status="Faulted",
                    error_code="GroundFailure",
                ),
                Connector(charger_id="CP-N3", evse_id=1, connector_id=1, status="Available"),
                Connector(charger_id="CP-S1", evse_id=1, connector_id=1, status="Faulted"),
            ]
        )
        reasons = [{"code": "stock_low", "text": REASON}, {"code": "lead_time", "text": "lead time 21 days"}]
        s.add_all(
            [
                SupplyWarning(
                    depot_id="D-N", sku="RCD-B-40A", level="critical", probability=0.82, reasons=reasons
                ),
                SupplyWarning(depot_id="D-N", sku="FAN-1", level="ok", probability=0.05),  # not in force
                SupplyWarning(depot_id="D-S", sku="CBL-1", level="warning", probability=0.6),
            ]
        )


async def issue_token(api: httpx.AsyncClient, name: str, role: str, region: str | None) -> tuple[int, str]:
    r = await api.post("/api/tokens", json={"name": name, "role": role, "region": region}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return int(r.json()["id"]), str(r.json()["token"])


async def sign_in(page: Page, token: str) -> None:
    await page.goto(f"{LAB}/status")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_viewer_sees_the_regions_fleet_offline_on_a_phone(runtime: Runtime, browser: Browser) -> None:
    base = f"http://127.0.0.1:{runtime.http_port}"
    async with httpx.AsyncClient(base_url=base) as api:
        assert (await api.post("/api/fleet", json=FLEET, headers=ADMIN)).status_code == 200
        _, token = await issue_token(api, "vera", "viewer", "north")
    await seed(runtime)
    overdue = await open_ticket(runtime, "CP-N2", "north-1", "north", "P1", -timedelta(minutes=30))
    later = await open_ticket(runtime, "CP-N1", "north-1", "north", "P3", timedelta(hours=8))
    await open_ticket(runtime, "CP-S1", "south-1", "south", "P1", -timedelta(hours=1))  # not vera's

    async with offline_page(browser, runtime, **ON_A_PHONE) as (page, problems):
        # Time stands still unless the test moves it: the 30 s refresh, tested without waiting 30 s.
        await page.clock.install()
        await page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
        await sign_in(page, token)
        await expect(page.locator("#who")).to_contain_text("vera · viewer · north")

        # At a glance: the north's counts only.
        expected = {"total": "3", "connected": "2", "offline": "1", "tickets": "2", "past-sla": "1"}
        for tile, n in (expected | {"warnings": "1"}).items():
            await expect(page.locator(f"#n-{tile}")).to_have_text(n)
        await expect(page.locator("#tile-offline")).to_have_class(re.compile(r"\bbad\b"))
        await expect(page.locator("#by-status li")).to_have_text(["Faulted1", "Available2"])

        # Offline and faulted, with where and since when / which fault.
        await expect(page.locator("#offline li")).to_have_count(1)
        await expect(page.locator("#offline li > *")).to_have_text(
            ["CP-N3", "north-2", "last seen 10 min ago"]
        )
        await expect(page.locator("#faulted li")).to_have_count(1)
        await expect(page.locator("#faulted li > *")).to_have_text(
            ["CP-N2", "north-1", "Faulted · GroundFailure"]
        )

        # Open tickets, most urgent first; the overdue SLA in red.
        rows = page.locator("#tickets li")
        await expect(rows).to_have_count(2)
        first, second = rows.nth(0), rows.nth(1)
        await expect(first).to_have_attribute("data-ticket", str(overdue))
        await expect(first.locator(".badge")).to_have_text("P1")
        for text in ("CP-N2", "north-1", "GroundFailure — RCD", f"#{overdue} · open · unassigned"):
            await expect(first).to_contain_text(text)
        late = first.locator(".overdue-text")
        await expect(late).to_contain_text("overdue by 30 min")
        assert await late.evaluate("e => getComputedStyle(e).color") == "rgb(179, 38, 30)"  # --p1
        await expect(first).to_have_class(re.compile(r"\boverdue\b"))
        await expect(second).to_have_attribute("data-ticket", str(later))
        await expect(second.locator(".due")).to_contain_text("in 8 h")
        await expect(second.locator(".overdue-text")).to_have_count(0)

        # Supply warnings in force: depot, SKU, level, probability, the first reason.
        warnings = page.locator("#warnings li")
        await expect(warnings).to_have_count(1)
        for text in ("critical", "RCD-B-40A", "depot D-N", "82 % stock-out risk", REASON):
            await expect(warnings).to_contain_text(text)
        await expect(warnings).not_to_contain_text("lead time 21 days")

        # Every north site with its chargers' state.
        sites = page.locator("#sites section.site")
        await expect(sites).to_have_count(2)
        await expect(sites.locator("h3")).to_have_text(
            ["north-1 2 chargers · 1 faulted", "north-2 1 charger · 1 offline"]
        )
        cells = {
            "CP-N1": ["Available", "online", "now"],
            "CP-N2": ["Faulted", "online", "now"],
            "CP-N3": ["Available", "offline", "10 min ago"],
        }
        for cid, state in cells.items():
            await expect(page.locator(f'#sites tr[data-charger="{cid}"] td')).to_have_text(state)

        body = (await page.locator("body").inner_text()).lower()
        assert "south" not in body and "cp-s1" not in body and "d-s" not in body
        # Fits a phone: no sideways scrolling of the page.
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        # Nobody touches it, and after 30 s it shows what changed: CP-N3 is back.
        async with runtime.sessions() as s, s.begin():
            await s.execute(update(Charger).where(Charger.id == "CP-N3").values(connected=True))
        summaries: list[str] = []
        page.on("request", lambda r: summaries.append(r.url) if r.url.endswith("/fleet/summary") else None)
        await page.clock.run_for(29_000)
        await asyncio.sleep(1)  # real time for a refresh to show, had one started
        assert summaries == []
        await expect(page.locator("#n-offline")).to_have_text("1")
        await page.clock.run_for(1_000)
        await expect(page.locator("#n-offline")).to_have_text("0")
        assert summaries == [f"{LAB}/api/fleet/summary"]
        await expect(page.locator("#offline li")).to_have_count(0)
        await expect(page.locator("#offline-empty")).to_be_visible()
        await expect(page.locator('#sites tr[data-charger="CP-N3"] td.link')).to_have_text("online")

        await page.get_by_role("link", name="Sign out").tap()
        await expect(page.get_by_label("API token")).to_be_visible()
        assert await page.evaluate("localStorage.length") == 0
        assert problems == []  # not one request left chargeops, no error in the page


async def test_a_wrong_or_revoked_token_returns_to_sign_in(runtime: Runtime, browser: Browser) -> None:
    async with offline_page(browser, runtime, viewport=PHONE) as (page, problems):
        await sign_in(page, "cop_not-a-token")
        await expect(page.locator("#message")).to_contain_text("Sign-in failed")
        await expect(page.get_by_label("API token")).to_be_visible()
        await expect(page.locator("#board")).to_be_hidden()
        assert await page.evaluate("localStorage.length") == 0

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as api:
            token_id, token = await issue_token(api, "whole-fleet", "viewer", None)
            await sign_in(page, token)
            await expect(page.locator("#who")).to_contain_text("whole-fleet · viewer · whole fleet")
            await expect(page.locator("#n-total")).to_have_text("0")
            await expect(page.locator("#sites-empty")).to_be_visible()
            assert (await api.delete(f"/api/tokens/{token_id}", headers=ADMIN)).status_code == 204
        await page.get_by_role("button", name="Refresh").click()
        await expect(page.locator("#message")).to_contain_text("Sign-in failed: unknown or revoked token")
        await expect(page.get_by_label("API token")).to_be_visible()
        await expect(page.locator("#board")).to_be_hidden()
        assert await page.evaluate("localStorage.length") == 0
        # The refused calls, and nothing else.
        assert {p for p in problems if not p.startswith("Failed to load resource")} <= {
            f"401 {LAB}/api/me",
            f"401 {LAB}/api/fleet/summary",
            f"401 {LAB}/api/chargers?limit=1000",
            f"401 {LAB}/api/tickets?kind=maintenance&open=true",
            f"401 {LAB}/api/supply-risk",
        }, problems
        assert not [p for p in problems if p.startswith("outside request")]


async def test_page_is_served_without_a_token_and_only_its_files() -> None:
    """No database or token needed: the page and its files hold no data. It names no other host, each file
    it names is served with its type, the security headers are the crew page's, and pyproject ships every
    file."""
    app = create_app(cast(async_sessionmaker[AsyncSession], None), InProcessBus(), Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        page = await client.get("/status")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert (await client.get("/status/")).text == page.text
        crew_page = await client.get("/crew")
        for header in (
            "content-security-policy",
            "x-content-type-options",
            "referrer-policy",
            "cache-control",
        ):
            assert page.headers[header] == crew_page.headers[header], header
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert not re.findall(r"https?:|//[\w.-]+\.[a-z]{2,}/", page.text)
        urls = [u for u in re.findall(r'(?:src|href)="([^"]+)"', page.text) if u != "#"]
        assert sorted(urls) == [
            "/status/icon.svg", "/status/status.css", "/status/status.js", "/ui/ui.css", "/ui/ui.js"
        ]  # fmt: skip
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        for url in urls:
            r = await client.get(url)
            assert r.status_code == 200, url
            assert r.headers["content-type"].startswith(types[Path(url).suffix]), (url, r.headers)
            assert r.headers["content-security-policy"] == page.headers["content-security-policy"]
            if not url.endswith(".svg"):  # the icon names the SVG namespace, which is never fetched
                assert not re.findall(r"https?:|//[\w.-]+\.[a-z]{2,}/", r.text), url
        for path in (
            "/status/nope.js",
            "/status/..%2F..%2Fpyproject.toml",
            "/status/crew.js",
            "/status/index.html",
        ):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["error"] == "not_found", path
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ops"]
    shipped = sorted(p.name for p in status_page.STATUS_DIR.iterdir())
    assert shipped == ["icon.svg", "index.html", "status.css", "status.js"]
    for name in shipped:
        assert any(fnmatch.fnmatch(f"status/{name}", g) for g in globs), name
    for name in ("ui.css", "ui.js"):  # what the pages share
        assert any(fnmatch.fnmatch(f"ui/{name}", g) for g in globs), name
