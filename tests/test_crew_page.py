"""The crew page in a real headless Chromium (the Debian package) against a whole running chargeops: sign in
with a crew token, see the region's open tickets most urgent first with the parts to bring, walk one through
acknowledge → start → resolve (saying which reserved parts were fitted), on a phone-sized screen. No Chromium
is a failure, never a skip."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from chargeops.db.ops_models import Ticket
from chargeops.events import utcnow
from ops import tickets
from ops.inventory import move
from ops.runtime import Runtime
from tests.conftest import StartRuntime

pytest_plugins = ("tests.browser",)

ADMIN = {"Authorization": "Bearer test-admin-token"}
PHONE: ViewportSize = {"width": 390, "height": 844}
RCD, CABLE = {"sku": "RCD-B-40A", "qty": 1}, {"sku": "CBL-CCS2-200A", "qty": 1}
FLEET = {
    "regions": [{"id": "north"}, {"id": "south"}],
    "depots": [{"id": "D-N", "region": "north"}],
    "stock": [
        {"depot": "D-N", "sku": "RCD-B-40A", "on_hand": 3},
        {"depot": "D-N", "sku": "CBL-CCS2-200A", "on_hand": 4},
    ],
}


@pytest.fixture
async def runtime(start_runtime: StartRuntime) -> Runtime:
    return await start_runtime(ops_interval=3600)  # no background scan touches the test's tickets


async def crew_token(api: httpx.AsyncClient, name: str = "alice", region: str = "north") -> str:
    r = await api.post("/api/tokens", json={"name": name, "role": "crew", "region": region}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def open_ticket(
    runtime: Runtime,
    charger_id: str,
    priority: str,
    region: str,
    parts: tuple[dict[str, object], ...] = (RCD,),
    **extra: object,
) -> int:
    """Inserted through the product's ticket code, as the ops engine does when a rule matches a fault (with
    a depot: its parts reserved there, as the engine books them)."""
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
                site=f"{region}-1",
                region=region,
                rule="earth-fault",
                fault_code="GroundFailure",
                component="RCD",
                description="residual current device tripped",
                diagnosis="RCD worn or damaged cable insulation",
                parts=[dict(p) for p in parts],
                occurrences=1,
                created_at=now,
                updated_at=now,
                last_occurred_at=now,
                **extra,
            ),
            "test",
        )
        for p in parts if ticket.depot else ():
            await move(
                session, str(ticket.depot), str(p["sku"]), "reserve", int(str(p["qty"])), ticket_id=ticket.id
            )
        await session.commit()
        return ticket.id


async def sign_in(page: Page, base: str, token: str) -> None:
    await page.goto(f"{base}/crew")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()


async def test_crew_walks_a_ticket_to_resolved_on_a_phone(runtime: Runtime, browser: Browser) -> None:
    base = f"http://127.0.0.1:{runtime.http_port}"
    async with httpx.AsyncClient(base_url=base) as api:
        token = await crew_token(api)
        assert (await api.post("/api/fleet", json=FLEET, headers=ADMIN)).status_code == 200
        later = await open_ticket(
            runtime, "CP2", "P2", "north", sla_due_at=utcnow() + timedelta(hours=8), cleared_at=utcnow()
        )
        urgent = await open_ticket(
            runtime,
            "CP1",
            "P1",
            "north",
            (RCD, CABLE),
            depot="D-N",
            sla_due_at=utcnow() - timedelta(minutes=30),
        )
        await open_ticket(runtime, "CP9", "P1", "south")  # another region: not alice's

        context = await browser.new_context(
            viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=3
        )
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        await sign_in(page, base, token)
        await expect(page.locator("#who")).to_contain_text("alice · crew · north")
        cards = page.locator("li.card")
        await expect(cards).to_have_count(2)
        first = cards.nth(0)  # P1 before P2
        await expect(first).to_have_attribute("data-ticket", str(urgent))
        await expect(first.locator(".badge")).to_have_text("P1")
        for text in ("north-1", "CP1", "GroundFailure — RCD", "residual current device tripped"):
            await expect(first).to_contain_text(text)
        await expect(first).to_contain_text("RCD worn or damaged cable insulation")
        await expect(first.locator(".parts li")).to_have_text(["RCD-B-40A × 1", "CBL-CCS2-200A × 1"])
        await expect(first).to_have_class("card prio-p1 overdue")
        await expect(first.locator(".overdue-text")).to_contain_text("overdue by 30 min")
        await expect(page.locator(f'li[data-ticket="{later}"] .cleared')).to_contain_text("Fault cleared")

        # Fits a phone: no sideways scrolling, buttons big enough for a thumb.
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        button = first.get_by_role("button", name=f"Acknowledge ticket {urgent} at north-1")
        box = await button.bounding_box()
        assert box is not None and box["height"] >= 44 and box["x"] >= 0 and box["x"] + box["width"] <= 390

        await button.tap()
        await expect(first.locator("button.action")).to_have_text("Start")
        await expect(first).to_contain_text("Assigned toalice")
        await first.get_by_role("button", name=f"Start ticket {urgent} at north-1").tap()
        await expect(first.locator("button.action")).to_have_text("Resolve")
        await first.locator("button.action").tap()
        # Which reserved parts were fitted: 0 … reserved each, 0 unless the crew says otherwise.
        dialog = page.locator("#resolve-dialog")
        rcd_used, cable_used = (
            dialog.get_by_label("RCD-B-40A used"),
            dialog.get_by_label("CBL-CCS2-200A used"),
        )
        await expect(rcd_used).to_have_value("0")
        await expect(cable_used).to_have_value("0")
        more = dialog.get_by_role("button", name="One more RCD-B-40A")
        box = await more.bounding_box()
        assert (
            box is not None and box["height"] >= 44 and box["width"] >= 44 and box["x"] + box["width"] <= 390
        )
        await more.tap()
        await more.tap()  # only one is reserved: stays at 1
        await expect(rcd_used).to_have_value("1")
        await dialog.get_by_role("button", name="One less CBL-CCS2-200A").tap()
        await expect(cable_used).to_have_value("0")
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        await page.get_by_label("What was done (optional)").fill("replaced RCD, earth continuity OK")
        await page.locator("#resolve-confirm").tap()
        await expect(page.locator(f'li[data-ticket="{urgent}"]')).to_have_count(0)  # resolved: off the list
        await expect(cards).to_have_count(1)
        await expect(page.locator("#message")).to_contain_text(f"Ticket #{urgent} is now resolved")

        r = await api.get(f"/api/tickets/{urgent}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        done = r.json()
        assert (done["status"], done["assignee"]) == ("resolved", "alice")
        assert [(e["to_status"], e["actor"]) for e in done["log"][1:]] == [
            ("assigned", "alice"),
            ("in_progress", "alice"),
            ("resolved", "alice"),
        ]
        assert done["log"][-1]["note"] == "replaced RCD, earth continuity OK"
        assert done["parts_used"] == [RCD]
        # The RCD fitted is consumed; the cable went back to the depot.
        stock = (await api.get("/api/stock", params={"depot": "D-N"}, headers=ADMIN)).json()["items"]
        assert {s["sku"]: (s["on_hand"], s["reserved"]) for s in stock} == {
            "RCD-B-40A": (2, 0),
            "CBL-CCS2-200A": (4, 0),
        }

        # A tap on a stale card (someone else started the ticket meanwhile) must not undo their step, though
        # in_progress → assigned is a legal back-step: the page says so and refreshes instead.
        moved = await api.post(f"/api/tickets/{later}/transition", json={"to": "in_progress"}, headers=ADMIN)
        assert moved.status_code == 200, moved.text
        stale = page.locator(f'li[data-ticket="{later}"] button.action')
        await expect(stale).to_have_text("Acknowledge")
        await stale.tap()  # the page sends the status it showed; the API refuses the step (409 stale_ticket)
        await expect(page.locator("#message")).to_contain_text(f"Ticket #{later} changed meanwhile")
        refused = f"409 {base}/api/tickets/{later}/transition"
        assert refused in problems
        problems = [p for p in problems if p != refused and "409 (Conflict)" not in p]
        await expect(stale).to_have_text("Resolve")
        r = await api.get(f"/api/tickets/{later}", headers=ADMIN)
        assert r.json()["status"] == "in_progress"

        await page.get_by_role("link", name="Sign out").tap()
        await expect(page.get_by_label("API token")).to_be_visible()
        assert await page.evaluate("localStorage.length") == 0
        assert problems == []
        await context.close()


async def test_a_bad_token_asks_again(runtime: Runtime, browser: Browser) -> None:
    base = f"http://127.0.0.1:{runtime.http_port}"
    page = await browser.new_page(viewport=PHONE)
    await sign_in(page, base, "cop_not-a-token")
    await expect(page.locator("#message")).to_contain_text("Sign-in failed")
    await expect(page.get_by_label("API token")).to_be_visible()
    assert await page.evaluate("localStorage.length") == 0


async def test_page_is_served_without_a_token_and_only_its_files(runtime: Runtime) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as client:
        page = await client.get("/crew")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        js = await client.get("/crew/crew.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        for path in ("/crew/nope.js", "/crew/..%2F..%2Fpyproject.toml", "/crew/__init__.py"):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["error"] == "not_found", path
