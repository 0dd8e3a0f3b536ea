"""Region scope (issue 12 item 8), generated from the app's own routes rather than listed by hand.

Two regions, `north` and `south`, each with a depot, a site, a charger, a swap station, a session, tickets,
stock, a supply warning, swaps and packs; every south id contains "south" (and a charger placed nowhere
contains "nowhere"), so a leak shows as text. A token scoped to the north must: get 403 or 404 for every GET
route filled with south ids (and 200 with north ids), never see "south" in any list, and have every write
aimed at the south refused with nothing changed; an unscoped token gets the south ids' rows. A new route the
tables below cannot fill, or a list the seed leaves empty, fails the test until it is scoped and seeded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import audit
from chargeops.db.models import Transaction
from chargeops.db.ops_models import (
    Battery,
    BatteryReading,
    BatterySwap,
    SupplyWarning,
    SupplyWarningLog,
    Ticket,
    WebhookSubscription,
)
from chargeops.settings import Settings
from ops.api import create_app
from ops.api.scope import region_scope
from telemetry.bus import CommandReply, InProcessBus
from tests.test_api_support import ADMIN_TOKEN, bearer

pytest_plugins = ("tests.test_api_support",)

SKU = "FAN-1"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
FLEET = {
    "regions": [{"id": "north"}, {"id": "south"}],
    "depots": [{"id": "D-NORTH", "region": "north"}, {"id": "D-SOUTH", "region": "south"}],
    "sites": [
        {"id": "site-north", "region": "north", "depot": "D-NORTH"},
        {"id": "site-south", "depot": "D-SOUTH"},  # in the south only through its depot
    ],
    "parts": [{"sku": SKU, "name": "Fan", "category": "fan", "suppliers": ["Acme"]}],
    "models": [{"id": "m-1", "vendor": "V", "model": "M", "parts": {SKU: 1}}],
    "chargers": [
        {"id": "CP-NORTH", "site": "site-north"},
        {"id": "ST-NORTH", "site": "site-north", "kind": "swap_station"},
        {"id": "CP-SOUTH", "site": "site-south"},
        {"id": "ST-SOUTH", "site": "site-south", "kind": "swap_station"},
        {"id": "CP-NOWHERE"},
    ],
    "stock": [{"depot": "D-NORTH", "sku": SKU, "on_hand": 3}, {"depot": "D-SOUTH", "sku": SKU, "on_hand": 4}],
}
OTHERS = ("south", "nowhere")  # never in what a north token is shown
# Routes that serve no region's data: the catalogue, the authorization list (one for the whole fleet) and
# the caller itself. Every other /api route must take the scope; the admin's routes need no scope.
GLOBAL = {"/api/me", "/api/parts", "/api/models", "/api/id-tokens", "/api/id-tokens/{id_token}"}
GLOBAL |= {"/api/tariffs", "/api/tariffs/{tariff_id}"}  # the tariff catalogue (assignments are scoped)
ADMIN_ONLY = ("/api/tokens", "/api/webhooks")
# Reads that span the fleet: refused to a region (403 out_of_scope), open to the unscoped.
FLEET_WIDE = {"/api/supply-risk/weak-spots", "/api/supply-risk/weak-spots/report"}
# Routes outside /api need no token, so they must serve no fleet data: the index, docs (and their vendored
# files), health, the crew page's and the status page's files and what they share (/ui).
OPEN = {
    "/",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/static/{package}/{name}",
    "/healthz",
    "/crew",
    "/crew/",
    "/crew/{name}",
    "/status",
    "/status/",
    "/status/{name}",
    "/ui/{name}",
}
WRITE_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/chargers"): {"id": "CP-NEW", "site": "site-south"},
    ("PATCH", "/api/chargers/{charger_id}"): {"kind": "charger"},
    ("POST", "/api/chargers/{charger_id}/ocpp/{action}"): {},
    ("POST", "/api/chargers/{charger_id}/der-controls"): {"control_type": "LimitMaxDischarge"},
    ("PUT", "/api/id-tokens/{id_token}"): {"status": "Blocked"},
    ("POST", "/api/tokens"): {"name": "x", "role": "viewer"},
    ("POST", "/api/tickets/{ticket_id}/transition"): {"to": "assigned"},
    ("PUT", "/api/parts/{sku}"): {"sku": SKU, "name": "Fan", "category": "fan"},
    ("POST", "/api/stock/receipts"): {"depot": "D-SOUTH", "sku": SKU, "qty": 1},
    ("PUT", "/api/sites/{site_id}"): {"id": "site-south", "region": "north"},
    ("PUT", "/api/regions/{region_id}"): {"id": "south", "name": "taken"},
    ("PUT", "/api/depots/{depot_id}"): {"id": "D-SOUTH", "region": "north"},
    ("PUT", "/api/models/{model_id}"): {"id": "m-1", "vendor": "V", "model": "M"},
    ("POST", "/api/fleet"): {"regions": [{"id": "south", "name": "taken"}]},
    ("POST", "/api/sites/{site_id}/telemetry"): {"at": T0.isoformat(), "pv_w": 1},
    ("POST", "/api/swaps/request"): {"station_id": "ST-SOUTH", "id_token": "CARD-1"},
    ("POST", "/api/webhooks"): {"url": "https://example.com/hook"},
    ("POST", "/api/chargers/{charger_id}/installed-certificates"): {
        "certificate_type": "CSMSRootCertificate",
        "certificate": "PEM",
    },
    ("POST", "/api/tariffs"): {"name": "x", "currency": "EUR"},
    ("PUT", "/api/tariffs/{tariff_id}"): {"name": "x", "currency": "EUR"},
    ("PUT", "/api/tariff-assignments"): {"tariff_id": 1, "site": "site-south"},
    ("POST", "/api/local-list/sync"): {"site": "site-south"},
    ("POST", "/api/chargers/{charger_id}/evses/{evse_id}/renegotiate"): {"limit_kw": 7},
}
NO_BODY = {
    ("DELETE", "/api/chargers/{charger_id}"),
    ("POST", "/api/chargers/{charger_id}/rotate-password"),
    ("POST", "/api/chargers/{charger_id}/local-list/sync"),
    ("DELETE", "/api/chargers/{charger_id}/der-controls"),
    ("DELETE", "/api/chargers/{charger_id}/der-controls/{control_id}"),
    ("DELETE", "/api/id-tokens/{id_token}"),
    ("DELETE", "/api/tokens/{token_id}"),
    ("POST", "/api/supply-risk/review"),
    ("DELETE", "/api/webhooks/{subscription_id}"),
    ("POST", "/api/chargers/{charger_id}/installed-certificates/refresh"),
    ("DELETE", "/api/chargers/{charger_id}/installed-certificates/{serial_number}"),
    ("DELETE", "/api/tariffs/{tariff_id}"),
    ("DELETE", "/api/tariff-assignments"),  # no site: the default, fleet-wide
}


def routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    """(method, path, dependant) of every route the app serves, HEAD left out."""
    try:
        from fastapi.routing import iter_route_contexts  # newer FastAPI keeps included routers nested
    except ImportError:  # pragma: no cover - older FastAPI flattens them into app.routes
        found: list[Any] = list(app.routes)
    else:
        found = list(iter_route_contexts(app.routes))
    return [
        (method, r.path, getattr(r, "dependant", None))
        for r in found
        for method in sorted(r.methods or ())
        if method != "HEAD"
    ]


def _takes_scope(dependant: Any) -> bool:
    return any(d.call is region_scope or _takes_scope(d) for d in dependant.dependencies)


def _needs_scope(path: str) -> bool:
    return path.startswith("/api/") and path not in GLOBAL and not path.startswith(ADMIN_ONLY)


def test_every_api_route_takes_the_scope_and_no_other_route_serves_data() -> None:
    app = create_app(cast(async_sessionmaker[AsyncSession], None), InProcessBus(), Settings())
    found = routes(app)
    unscoped = [f"{m} {p}" for m, p, dep in found if _needs_scope(p) and not _takes_scope(dep)]
    assert not unscoped, f"routes without the region scope (ops.api.scope.Scoped): {unscoped}"
    assert {p for _, p, _ in found if not p.startswith("/api/")} == OPEN
    writes = {(m, p) for m, p, _ in found if m != "GET" and p.startswith("/api/")}
    assert writes == set(WRITE_BODIES) | NO_BODY, "give every write a body here, so its scope is tested"


class FakeCharger:
    """Stands in for a connected charger: answers every call NotFound and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, action: str, payload: dict[str, Any], timeout: float) -> CommandReply:
        self.calls += 1
        return CommandReply("result", payload={"status": "NotFound"})


async def _seed_region(s: AsyncSession, region: str) -> dict[str, int]:
    """One region's session, tickets, warning, swap and packs; the ids the database gave."""
    up = region.upper()
    s.add(Transaction(charger_id=f"CP-{up}", transaction_id=f"tx-{region}", started_at=T0, active=False))
    fault = Ticket(kind="maintenance", priority="P2", charger_id=f"CP-{up}", site=f"site-{region}")
    order = Ticket(kind="supply", priority="P3", sku=SKU, qty=2, supplier="Acme", ordered_at=T0)
    for ticket in (fault, order):
        ticket.depot, ticket.region, ticket.status = f"D-{up}", region, "open"
        s.add(ticket)
    figures: dict[str, Any] = {"reasons": [], "figures": {}, "actions": [], "probability": 0.6}
    s.add(SupplyWarning(depot_id=f"D-{up}", sku=SKU, level="warning", opened_at=T0, **figures))
    s.add(
        SupplyWarningLog(
            depot_id=f"D-{up}", sku=SKU, change="opened", from_level="ok", to_level="warning", **figures
        )
    )
    s.add(BatterySwap(station_id=f"ST-{up}", request_id=1, status="completed", in_at=T0))
    s.add(Battery(serial=f"PACK-{up}", location="slot", station_id=f"ST-{up}", slot=1, swaps=1))
    # A pack in a vehicle is at no station: it belongs to the one it was last read at.
    s.add(Battery(serial=f"ROAM-{up}", location="vehicle", swaps=1))
    s.add(
        BatteryReading(
            event_id=f"ev-{region}", serial=f"ROAM-{up}", at=T0, station_id=f"ST-{up}", request_id=1
        )
    )
    await s.flush()
    return {"ticket_id": fault.id, "order": order.id}


@pytest.fixture
async def world(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession], api_bus: InProcessBus
) -> dict[str, Any]:
    """The two regions, chargers held on the bus, and tokens: path parameter → (north id, south id)."""
    assert (await admin.post("/api/fleet", json=FLEET)).status_code == 200
    assert (await admin.put("/api/id-tokens/CARD-1", json={"status": "Accepted"})).status_code == 201
    tariff = (await admin.post("/api/tariffs", json={"name": "standard", "currency": "EUR"})).json()["id"]
    for site in ("site-north", "site-south"):
        r = await admin.put("/api/tariff-assignments", json={"tariff_id": tariff, "site": site})
        assert r.status_code == 201, r.text
    async with api_sessions() as s, s.begin():
        north, south = await _seed_region(s, "north"), await _seed_region(s, "south")
        hook = WebhookSubscription(url="https://example.com/hook", secret="s" * 16, events=[], active=True)
        s.add(hook)
        await s.flush()
    chargers = {cid: FakeCharger() for cid in ("CP-NORTH", "CP-SOUTH", "ST-NORTH", "ST-SOUTH")}
    for cid, fake in chargers.items():
        api_bus.hold(cid, fake)
    tokens, token_ids = {}, []
    for name, role, region in [
        ("viewer", "viewer", "north"),
        ("crew", "crew", "north"),
        ("operator", "operator", "north"),
        ("fleet", "viewer", None),
    ]:
        r = await admin.post("/api/tokens", json={"name": f"scoped-{name}", "role": role, "region": region})
        tokens[name] = bearer(r.json()["token"])
        token_ids.append(r.json()["id"])
    fill = {
        "charger_id": ("CP-NORTH", "CP-SOUTH"),
        "transaction_id": ("tx-north", "tx-south"),
        "ticket_id": (north["ticket_id"], south["ticket_id"]),
        "serial": ("ROAM-NORTH", "ROAM-SOUTH"),
        "site_id": ("site-north", "site-south"),
        "region_id": ("north", "south"),
        "depot_id": ("D-NORTH", "D-SOUTH"),
        "id_token": ("CARD-1", "CARD-1"),
        "subscription_id": (hook.id, hook.id),
        "sku": (SKU, SKU),
        "model_id": ("m-1", "m-1"),
        "token_id": (token_ids[0], token_ids[0]),
        "action": ("Reset", "Reset"),
        "control_id": ("c-1", "c-1"),
        "serial_number": ("7F01", "7F01"),
        "tariff_id": (tariff, tariff),
        "evse_id": (1, 1),
    }
    return {"fill": fill, "tokens": tokens, "chargers": chargers, "south_order": south["order"]}


def _url(path: str, fill: dict[str, tuple[Any, Any]], side: int) -> str:
    params = {p.split("}")[0] for p in path.split("{")[1:]}
    missing = params - set(fill)
    assert not missing, f"{path}: no id to fill {missing} with; seed one per region in `world`"
    for p in params:
        path = path.replace(f"{{{p}}}", str(fill[p][side]))
    return path


async def test_every_get_route_refuses_another_regions_ids(
    admin: httpx.AsyncClient, api_app: FastAPI, world: dict[str, Any]
) -> None:
    fill, tokens, chargers = world["fill"], world["tokens"], world["chargers"]
    walked = []
    for method, path, _ in routes(api_app):
        if method != "GET" or "{" not in path or not path.startswith("/api/"):
            continue
        walked.append(path)
        south, north = _url(path, fill, 1), _url(path, fill, 0)
        admin_only = path.startswith(ADMIN_ONLY)
        for who in ("viewer", "crew"):
            r = await admin.get(south, headers=tokens[who])
            if path in GLOBAL:
                assert r.status_code == 200, (who, south, r.text)
                continue
            assert r.status_code == (403 if admin_only else 404), (who, south, r.text)
            r = await admin.get(north, headers=tokens[who])
            assert r.status_code == (403 if admin_only else 200), (who, north, r.text)
        r = await admin.get(south, headers=tokens["fleet"] if not admin_only else bearer(ADMIN_TOKEN))
        assert r.status_code == 200, (south, r.text)
    assert len(walked) >= 8, walked
    # Only the unscoped calls reached the south's chargers.
    assert chargers["CP-SOUTH"].calls == 1 and chargers["CP-NORTH"].calls == 2


async def test_lists_show_only_the_region(
    admin: httpx.AsyncClient, api_app: FastAPI, world: dict[str, Any]
) -> None:
    tokens = world["tokens"]
    for method, path, _ in routes(api_app):
        if method != "GET" or "{" in path or not path.startswith("/api/"):
            continue
        unscoped = await admin.get(path, headers=tokens["fleet"])
        if path.startswith(ADMIN_ONLY):
            assert unscoped.status_code == 403, path
            continue
        assert unscoped.status_code == 200, (path, unscoped.text)
        for who in ("viewer", "crew"):
            r = await admin.get(path, headers=tokens[who])
            if path in FLEET_WIDE:
                assert r.status_code == 403 and r.json()["error"] == "out_of_scope", (who, path, r.text)
                continue
            assert r.status_code == 200, (who, path, r.text)
            assert not [o for o in OTHERS if o in r.text.lower()], (who, path, r.text)
            if path not in GLOBAL:
                assert "north" in r.text.lower(), (who, path, r.text)  # filtered, not emptied
        if path not in GLOBAL | FLEET_WIDE:
            assert "south" in unscoped.text.lower(), f"{path}: seed the south with data this list shows"


SNAPSHOT = ("/api/chargers", "/api/tickets", "/api/stock", "/api/parts", "/api/models", "/api/id-tokens")
SNAPSHOT += ("/api/sites", "/api/regions", "/api/depots", "/api/tokens", "/api/webhooks", "/api/swaps")
SNAPSHOT += ("/api/tariffs", "/api/tariff-assignments")


async def _snapshot(admin: httpx.AsyncClient) -> list[str]:
    return [(await admin.get(path)).text for path in SNAPSHOT]


async def test_writes_aimed_at_another_region_are_refused_and_change_nothing(
    admin: httpx.AsyncClient, api_app: FastAPI, world: dict[str, Any]
) -> None:
    fill, operator = world["fill"], world["tokens"]["operator"]
    before = await _snapshot(admin)
    for method, path, _ in routes(api_app):
        if method == "GET" or not path.startswith("/api/"):
            continue
        clear_all = method == "DELETE" and path.endswith("/der-controls")
        params = {"control_type": "LimitMaxDischarge"} if clear_all else None
        body = WRITE_BODIES.get((method, path))
        r = await admin.request(method, _url(path, fill, 1), json=body, params=params, headers=operator)
        error = r.json().get("error") if r.content else None
        if path.startswith(ADMIN_ONLY):
            assert (r.status_code, error) == (403, "forbidden"), (method, path, r.text)
        elif r.status_code == 404:  # the target, named in the answer, is not in the token's region
            detail = r.json()["detail"].lower()
            assert "south" in detail or f"ticket {fill['ticket_id'][1]}" in detail, (method, path, r.text)
        else:
            assert (r.status_code, error) == (403, "out_of_scope"), (method, path, r.text)
    # The region's own depot, but another region's purchase order.
    receipt = {"depot": "D-NORTH", "sku": SKU, "qty": 1, "order": world["south_order"]}
    r = await admin.post("/api/stock/receipts", json=receipt, headers=operator)
    assert r.status_code == 404 and r.json()["detail"] == f"no purchase order {world['south_order']}"
    assert await _snapshot(admin) == before
    assert [c.calls for c in world["chargers"].values()] == [0, 0, 0, 0]


async def test_out_of_scope_refusals_are_audited(
    admin: httpx.AsyncClient, world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    audit.reset()  # a fresh minute for this test
    with caplog.at_level(logging.WARNING, logger="chargeops.audit"):
        r = await admin.post("/api/supply-risk/review", headers=world["tokens"]["operator"])
    assert r.status_code == 403 and "whole fleet" in r.json()["detail"]
    (line,) = [rec.getMessage() for rec in caplog.records if rec.name == "chargeops.audit"]
    assert "API 403 POST /api/supply-risk/review" in line and "out of scope north" in line, line
    assert "scoped-operator" in line
