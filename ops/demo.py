"""`chargeops demo`: the whole backend plus a simulated fleet with faults, and a short guide to it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from pydantic import SecretStr

from chargeops.db.engine import insert_for
from chargeops.db.models import IdToken
from chargeops.settings import Settings
from firmware_stubs import SimEnvironment, SimulatedCharger
from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from firmware_stubs.site_controller import SiteController
from firmware_stubs.swap_station import SwapStation
from ops import progress
from ops.demo_watch import DemoWatch
from ops.registry import FleetDoc, apply_fleet
from ops.runtime import Runtime

BLOCKED_SHARE = 10  # every tenth simulated driver token is blocked, so rejections show up too
ID_PREFIX = "DEMO"
DEMO_SITES = ("harbour", "airport", "mall", "motorway")
PV_SITE = "harbour"  # PV + storage, and a grid limit below what its chargers could draw
SWAP_SITE = "swap-yard"
SWAP_STATIONS = 2  # one on OCPP 2.1, one on the 2.0.1 DataTransfer fallback
V2X_CHARGERS = 2  # bidirectional OCPP 2.1 chargers at the PV site, capped by DER control
# Thin stock, so faults use it up and supply tickets and warnings show within minutes.
DEMO_STOCK = {"PM-30KW": 3, "CT-250A": 2, "RCD-B-40A": 1, "CBL-CCS2-200A": 2, "FAN-120": 2, "MDM-LTE": 1}


def demo_fleet(fleet: list[SimulatedCharger]) -> FleetDoc:
    """Two depots in one region, four charging sites (one with PV, storage, an export limit and the V2X
    chargers) and a swap yard; the simulated chargers spread over them; the swap stations' packs registered
    as the operator's."""
    depots = ("D-WEST", "D-EAST")
    plain = [cp.id for cp in fleet if not isinstance(cp, SwapStation) and not cp.max_discharge_w]
    v2x = [cp.id for cp in fleet if cp.max_discharge_w]
    stations = [cp for cp in fleet if isinstance(cp, SwapStation)]
    pv = {
        "kind": "pv_storage",
        "grid_limit_kw": 60,
        "pv_peak_kw": 50,
        "storage_kwh": 100,
        "storage_max_kw": 30,
        "grid_export_limit_kw": 20,
    }
    return FleetDoc.model_validate(
        {
            "regions": [{"id": "demo", "name": "Demo region"}],
            "depots": [{"id": d, "region": "demo"} for d in depots],
            "sites": [
                {"id": site, "region": "demo", "depot": depots[n % 2]} | (pv if site == PV_SITE else {})
                for n, site in enumerate(DEMO_SITES)
            ]
            + [{"id": SWAP_SITE, "kind": "battery_swap", "region": "demo", "depot": depots[0]}],
            "chargers": [
                {"id": cp_id, "site": DEMO_SITES[n % len(DEMO_SITES)]} for n, cp_id in enumerate(plain)
            ]
            + [{"id": cp_id, "site": PV_SITE} for cp_id in v2x]
            + [{"id": st.id, "site": SWAP_SITE, "kind": "swap_station"} for st in stations],
            "batteries": [{"serial": serial} for st in stations for serial in st.serials],
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
    """What to open. The admin token is shown only when the demo made it up (else: $CHARGEOPS_ADMIN_TOKEN,
    in double quotes so the pasted line expands it)."""
    s = runtime.settings
    api = f"http://{s.http_host}:{runtime.http_port}"
    port = runtime.gateway.port if runtime.gateway else s.ocpp_port
    ocpp = f"ws://{s.ocpp_host}:{port}/ocpp/{{chargePointId}}"
    auth = f'-H "Authorization: Bearer {token}"'
    return "\n".join(
        [
            "",
            "chargeops demo is running",
            f"  OCPP endpoint     {ocpp}",
            f"  simulated         {chargers} chargers (1.6, 2.0.1), {SWAP_STATIONS} swap stations (2.1),"
            f" {V2X_CHARGERS} V2X chargers (2.1, DER control) at {PV_SITE}",
            f"  operator API      {api}/docs",
            f"  admin token       {token}",
            f"  fleet             curl {auth} {api}/api/chargers",
            f"  sessions          curl {auth} '{api}/api/transactions'",
            f"  tickets           curl {auth} '{api}/api/tickets?open=true'",
            f"  stock             curl {auth} '{api}/api/stock'",
            f"  supply risk       curl {auth} '{api}/api/supply-risk/report'",
            f"  battery swaps     curl {auth} '{api}/api/swaps'",
            f"  PV + storage site curl {auth} '{api}/api/sites/{PV_SITE}/power'",
            f"  DER controls      curl {auth} '{api}/api/chargers/V2X00000/der-controls'",
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
    # Supply reviewed every 10 s instead of every 15 min: at 30× speed the warnings move within minutes.
    # The fleet's meters run `time_scale`× faster than the wall clock that stamps their readings: so may
    # their registers rise before they count as implausible.
    ceiling = settings.meter_max_power_kw * max(1.0, time_scale)
    settings = settings.model_copy(
        update={
            "admin_token": SecretStr(token),
            "accept_unknown": True,
            "supply_interval": 10.0,
            "meter_max_power_kw": ceiling,
        }
    )
    runtime = Runtime(settings)
    await runtime.start()
    try:
        progress.log.info("registering the demo fleet: sites, depots, stock and drivers' tokens")
        await seed_id_tokens(runtime, SimEnvironment().id_tags)
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
            swap_stations=SWAP_STATIONS,
            v2x_chargers=V2X_CHARGERS,
        )
        fleet = build_fleet(config)
        doc = demo_fleet(fleet)
        async with runtime.sessions() as session, session.begin():
            await apply_fleet(session, doc, actor="demo")
        print(guide(runtime, shown, chargers), flush=True)
        progress.log.info("connecting %d simulated chargers and stations", len(fleet))
        watch = DemoWatch(runtime.sessions, [cp.id for cp in fleet])
        await watch.poll()  # tickets from here on: those a kept database holds from earlier runs are not news
        sites = {c.id: c.site for c in doc.chargers}
        at_pv_site = [cp for cp in fleet if sites.get(cp.id) == PV_SITE]
        controller = SiteController(
            PV_SITE,
            pv_peak_w=50_000,
            storage_wh=100_000,
            storage_max_w=30_000,
            charging_w=lambda: sum(c.power_w for cp in at_pv_site for c in cp.connectors[1:]),
            discharging_w=lambda: sum(c.export_w for cp in at_pv_site for c in cp.connectors[1:]),
            api_url=f"http://{settings.http_host}:{runtime.http_port}",
            api_token=token,
            interval=5.0,
            time_scale=time_scale,
            seed=1,
        )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(run_fleet(config, fleet), controller.run(), watch.run())
    finally:
        await runtime.stop()
