"""`chargeops demo`: the whole backend plus a simulated fleet with faults, and a short guide to it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from pydantic import SecretStr

from chargeops.db.engine import insert_for
from chargeops.db.models import IdToken
from chargeops.settings import Settings
from firmware_stubs import SimEnvironment
from firmware_stubs.fleet import FleetConfig, run_fleet
from ops.registry import FleetDoc, apply_fleet
from ops.runtime import Runtime

BLOCKED_SHARE = 10  # every tenth simulated driver token is blocked, so rejections show up too
ID_PREFIX = "DEMO"
DEMO_SITES = ("harbour", "airport", "mall", "motorway")
# Thin stock, so faults use it up and supply tickets and warnings show within minutes.
DEMO_STOCK = {"PM-30KW": 3, "CT-250A": 2, "RCD-B-40A": 1, "CBL-CCS2-200A": 2, "FAN-120": 2, "MDM-LTE": 1}


def demo_fleet(chargers: int) -> FleetDoc:
    """Two depots in one region, four sites, the simulated chargers spread over them."""
    depots = ("D-WEST", "D-EAST")
    return FleetDoc.model_validate(
        {
            "regions": [{"id": "demo", "name": "Demo region"}],
            "depots": [{"id": d, "region": "demo"} for d in depots],
            "sites": [
                {"id": site, "region": "demo", "depot": depots[n % 2], "grid_limit_kw": 400}
                for n, site in enumerate(DEMO_SITES)
            ],
            "chargers": [
                {"id": f"{ID_PREFIX}{n:05d}", "site": DEMO_SITES[n % len(DEMO_SITES)]}
                for n in range(chargers)
            ],
            "stock": [
                {"depot": d, "sku": sku, "on_hand": n} for d in depots for sku, n in DEMO_STOCK.items()
            ],
        }
    )


async def seed_id_tokens(runtime: Runtime, tags: tuple[str, ...]) -> None:
    """The simulated drivers' tokens, most accepted, some blocked (existing entries are left alone)."""
    rows = [
        {"id_token": tag, "type": "ISO14443", "status": "Blocked" if n % BLOCKED_SHARE == 9 else "Accepted"}
        for n, tag in enumerate(tags)
    ]
    async with runtime.sessions() as session, session.begin():
        conn = await session.connection()
        insert = insert_for(conn.dialect.name, IdToken).on_conflict_do_nothing(index_elements=["id_token"])
        await conn.execute(insert, rows)


def guide(runtime: Runtime, token: str, chargers: int) -> str:
    """What to open. The admin token is shown only when the demo made it up (else: $CHARGEOPS_ADMIN_TOKEN)."""
    s = runtime.settings
    api = f"http://{s.http_host}:{runtime.http_port}"
    port = runtime.gateway.port if runtime.gateway else s.ocpp_port
    ocpp = f"ws://{s.ocpp_host}:{port}/ocpp/{{chargePointId}}"
    return "\n".join(
        [
            "",
            "chargeops demo is running",
            f"  OCPP endpoint     {ocpp}  ({chargers} simulated chargers, 1.6 and 2.0.1)",
            f"  operator API      {api}/docs",
            f"  admin token       {token}",
            f"  fleet             curl -H 'Authorization: Bearer {token}' {api}/api/chargers",
            f"  sessions          curl -H 'Authorization: Bearer {token}' '{api}/api/transactions'",
            f"  tickets           curl -H 'Authorization: Bearer {token}' '{api}/api/tickets?open=true'",
            f"  stock             curl -H 'Authorization: Bearer {token}' '{api}/api/stock'",
            f"  supply risk       curl -H 'Authorization: Bearer {token}' '{api}/api/supply-risk/report'",
            f"  crew page         {api}/crew  (sign in with the admin token or a crew token)",
            f"  metrics           {api}/metrics",
            "  stop with Ctrl-C",
            "",
        ]
    )


async def run_demo(settings: Settings, *, chargers: int, fault_rate: float, time_scale: float) -> None:
    token = secrets.token_urlsafe(24)
    shown = token
    if settings.admin_token:
        token, shown = settings.admin_token.get_secret_value(), "$CHARGEOPS_ADMIN_TOKEN"
    settings = settings.model_copy(update={"admin_token": SecretStr(token), "accept_unknown": True})
    runtime = Runtime(settings)
    await runtime.start()
    try:
        await seed_id_tokens(runtime, SimEnvironment().id_tags)
        async with runtime.sessions() as session, session.begin():
            await apply_fleet(session, demo_fleet(chargers), actor="demo")
        print(guide(runtime, shown, chargers), flush=True)
        assert runtime.gateway is not None
        config = FleetConfig(
            csms_url=f"ws://{settings.ocpp_host}:{runtime.gateway.port}/ocpp",
            chargers=chargers,
            protocol="mixed",
            fault_rate=fault_rate,
            time_scale=time_scale,
            sample_interval=10.0,
            session_rate=0.05,
            id_prefix=ID_PREFIX,
        )
        with contextlib.suppress(asyncio.CancelledError):
            await run_fleet(config)
    finally:
        await runtime.stop()
