"""OCPP 2.1 DER control against the real thing: chargeops on Postgres, real WebSockets, simulated
bidirectional (V2X) chargers speaking schema-strict OCPP 2.1 — the site planner capping discharge with
SetDERControl LimitMaxDischarge beside a 1.6 charger that keeps its charging profile, DER alarms raising and
clearing tickets, the operator's DER-control API, and the DER payloads both sides build against the 2.1
schemas."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import func, select

from chargeops.db.models import MeterSample
from chargeops.db.ops_models import DischargeLimit, SiteTelemetry
from chargeops.events import utcnow
from firmware_stubs import EV, SimulatedCharger
from ocpp_gateway.der import (
    PLANNER_CONTROL_ID,
)
from tests import test_site_power
from tests.test_site_power import SITE, SiteStack, until

site_stack = test_site_power.site_stack  # the running chargeops with a site, as the site tests use it
RATED_W = 10_000.0


async def _exported_since(stack: SiteStack, cp_id: str, since: Any) -> list[float]:
    async with stack.runtime.sessions() as s:
        rows = await s.scalars(
            select(MeterSample.value)
            .where(
                MeterSample.charger_id == cp_id,
                MeterSample.measurand == "Power.Active.Export",
                MeterSample.sampled_at > since,
            )
            .order_by(MeterSample.sampled_at)
        )
        return list(rows.all())


async def _cap(stack: SiteStack, cp_id: str) -> DischargeLimit | None:
    async with stack.runtime.sessions() as s:
        return await s.get(DischargeLimit, cp_id)


def _der_calls(cp: SimulatedCharger) -> list[dict[str, Any]]:
    return [p for action, p in cp.received_calls if action == "SetDERControl"]


async def test_planner_caps_v2x_discharge_with_der_control(site_stack: SiteStack) -> None:
    """Night, no storage: 3 kW of site load, a 5 kW export limit, a 10 kW bidirectional 2.1 charger whose EV
    offers 10 kW, a 1.6 charger beside it. The planner allows 5 + 3 = 8 kW of discharge: SetDERControl
    LimitMaxDischarge 80 %; the charger's measured discharge drops to 8 kW and the site exports ≤ 5 kW. The
    1.6 charger still gets its SetChargingProfile and no DER message. A higher export limit relaxes the cap
    to 100 %; removing the export limit clears it."""
    stack = site_stack
    body: dict[str, Any] = {"grid_export_limit_kw": 5, "pv_peak_kw": 20}
    await stack.site(30, **body)
    assert (await stack.api.put("/api/id-tokens/DRIVER1", json={"status": "Accepted"})).status_code == 201
    v2x = await stack.charger("V2X-1", "ocpp2.1", max_power_w=11_000, max_discharge_w=RATED_W)
    old = await stack.charger("SITE16-1", "ocpp1.6")
    controller = stack.controller(
        discharging_w=lambda: sum(c.export_w for cp in stack.chargers for c in cp.connectors)
    )
    reporting = asyncio.create_task(controller.run())
    try:
        await until(
            lambda: stack.settled({v2x.id: 1300.0, old.id: 1300.0}), what="both chargers at the floor"
        )
        started = utcnow()
        await v2x.plug_in(1, "DRIVER1", ev=EV(capacity_wh=80_000, soc=90.0, discharge_w=RATED_W))

        async def capped(pct: float, watts: float) -> bool:
            cap = await _cap(stack, v2x.id)
            if cap is None or cap.status != "Accepted" or cap.pct != pct:
                return False
            measured = await _exported_since(stack, v2x.id, cap.sent_at)
            return len(measured) >= 3 and all(abs(w - watts) <= 1 for w in measured[-3:])

        await until(lambda: capped(80.0, 8000.0), 30, "discharge capped at 80 % = 8 kW")
        settled_at = utcnow()
        await asyncio.sleep(2.0)  # a few more reports and samples at the cap
        measured = await _exported_since(stack, v2x.id, settled_at)
        async with stack.runtime.sessions() as s:
            export_peak = -float(
                await s.scalar(
                    select(func.min(SiteTelemetry.grid_w)).where(
                        SiteTelemetry.site_id == SITE, SiteTelemetry.at > settled_at
                    )
                )
                or 0.0
            )
            uncapped = max(await _exported_since(stack, v2x.id, started))
        assert measured and max(measured) <= 8000.0 + 1e-6, measured
        assert export_peak <= 5000.0 + 1, export_peak
        assert _der_calls(v2x)[-1] == {
            "isDefault": True,
            "controlId": PLANNER_CONTROL_ID,
            "controlType": "LimitMaxDischarge",
            "limitMaxDischarge": {"pctMaxDischargePower": 80.0, "priority": 5},
        }
        assert {a for a, _ in old.received_calls} >= {"SetChargingProfile"}
        assert not any(a.endswith("DERControl") for a, _ in old.received_calls)
        assert await _cap(stack, old.id) is None
        power = (await stack.api.get(f"/api/sites/{SITE}/power")).json()
        assert power["discharge"]["allowance_w"] == 8000.0 and power["discharge"]["reason"] == "export_limit"
        assert power["discharge"]["caps"][0] | {"sent_at": None} == {
            "charger_id": v2x.id,
            "pct": 80.0,
            "rated_w": RATED_W,
            "status": "Accepted",
            "sent_at": None,
        }
        print(
            json.dumps(
                {
                    "der_test": "V2X 2.1 charger 10 kW, EV offers 10 kW, site load 3 kW, export limit 5 kW",
                    "discharge_before_cap_w": uncapped,
                    "der_control": "LimitMaxDischarge 80 %",
                    "measured_discharge_w": max(measured),
                    "samples_at_cap": len(measured),
                    "site_export_peak_w": export_peak,
                    "grid_export_limit_w": 5000,
                }
            )
        )

        await stack.site(30, **(body | {"grid_export_limit_kw": 20}))
        await until(lambda: capped(100.0, RATED_W), 30, "cap relaxed to 100 %")
        await stack.site(30, **(body | {"grid_export_limit_kw": None}))
        await until(lambda: _gone(stack, v2x.id), 30, "cap cleared")
        assert v2x.extras()["der"].controls == {}
        assert [a for a, _ in v2x.received_calls if a == "ClearDERControl"]
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)


async def _gone(stack: SiteStack, cp_id: str) -> bool:
    return await _cap(stack, cp_id) is None
