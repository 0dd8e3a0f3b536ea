"""PV + storage + charging sites: the planner keeps a site under its grid limit by setting charging profiles
on real (simulated, schema-strict) 1.6 and 2.0.1 chargers; site telemetry over real Mosquitto and the API;
the per-version profile payloads against the official schemas."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiomqtt
import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from chargeops.broker import broker_address
from chargeops.commands import SET_POWER_LIMIT
from chargeops.db.models import MeterSample
from chargeops.db.ops_models import Battery, BatteryReading, Site, SiteTelemetry
from chargeops.events import utcnow
from chargeops.settings import Settings
from firmware_stubs import EV, SimulatedCharger
from firmware_stubs.site_controller import SiteController
from ocpp_gateway.commands import to_ocpp
from ocpp_gateway.limits import set_charging_profile
from ocpp_gateway.rpc import validate
from ocpp_gateway.versions import V16, V21, V201
from ops.site_power import site_budget, water_fill
from telemetry.site_telemetry import SiteTelemetrySubscriber
from tests.conftest import StartRuntime, migrated_sessions
from tests.site_stack import ADMIN, SITE, SiteStack, until

pytest_plugins = ("tests.site_stack",)


BUDGET = 30_000 - 1500 - 3000  # grid limit − the default 5 % margin − other load (W)


async def test_site_stays_under_its_grid_limit(site_stack: SiteStack) -> None:
    """3 × 22 kW chargers (1.6, 2.0.1, 1.6) behind a 30 kW grid connection, 3 kW of other load, no PV (night)
    and an empty storage: the planner keeps the default 5 % margin (1.5 kW) and shares 25.5 kW, the chargers
    obey, and the site's import stays ≤ 28.5 kW."""
    stack = site_stack
    await stack.site(30, pv_peak_kw=20, storage_kwh=20, storage_max_kw=10)
    assert (await stack.api.put("/api/id-tokens/DRIVER1", json={"status": "Accepted"})).status_code == 201
    started = utcnow() - timedelta(seconds=1)
    cps = [
        await stack.charger(f"SITE-{n}", proto) for n, proto in enumerate(("ocpp1.6", "ocpp2.0.1", "ocpp1.6"))
    ]
    # the storage is empty: nothing to discharge, so the grid carries the whole load
    controller = stack.controller(storage_wh=20_000, storage_max_w=10_000, soc=5.0)
    reporting = asyncio.create_task(controller.run())
    try:

        async def budget_known() -> bool:
            power = (await stack.api.get(f"/api/sites/{SITE}/power")).json()
            budget = power["budget"]
            return budget["telemetry_fresh"] and budget["charging_w"] == BUDGET and budget["margin_w"] == 1500

        await until(budget_known, what="the site controller's report in the budget")
        idle = dict.fromkeys((cp.id for cp in cps), 1300.0)
        await until(lambda: stack.settled(idle), what="idle chargers at the floor")

        for cp in cps:
            await cp.plug_in(1, "DRIVER1", ev=EV(capacity_wh=80_000, soc=20.0, max_power_w=22_000))
        shares = dict.fromkeys((cp.id for cp in cps), 8500.0)
        await until(lambda: stack.settled(shares), 30, "three sessions at 8.5 kW each")
        await asyncio.sleep(0)
        settled_at = utcnow()
        await until(lambda: _more_samples(stack, settled_at, 3), what="a few more samples")
        three = await stack.measured(started)
        grid_peak, reports = await stack.grid_peak(started)
        assert three["peak_w"] <= BUDGET + 1e-6, three
        assert three["last_w"] >= BUDGET - 1000, three  # the budget is used, not wasted
        assert grid_peak <= 28_500 + 1e-6 and reports >= 3
        gauge = REGISTRY.get_sample_value
        assert gauge("chargeops_site_power_limit_watts", {"site": SITE}) == BUDGET
        assert gauge("chargeops_site_pv_watts", {"site": SITE}) == 0.0
        assert gauge("chargeops_site_storage_soc_ratio", {"site": SITE}) == 0.05
        assert gauge("chargeops_site_grid_import_watts", {"site": SITE}) is not None

        await cps[0].unplug(1)
        # (25.5 − 1.38 idle floor) / 2 = 12.06 kW, in 100 W steps
        more = {cps[0].id: 1300.0, cps[1].id: 12_000.0, cps[2].id: 12_000.0}
        await until(lambda: stack.settled(more), 30, "the two remaining sessions get more")
        settled_at = utcnow()
        await until(lambda: _more_samples(stack, settled_at, 3), what="a few more samples")
        two = await stack.measured(started)
        grid_peak, reports = await stack.grid_peak(started)
        assert two["peak_w"] <= BUDGET + 1e-6 and two["last_w"] >= BUDGET - 1300 - 1000, two
        assert grid_peak <= 28_500 + 1e-6
        print(
            json.dumps(
                {
                    "site_test": "3 x 22 kW chargers (1.6, 2.0.1, 1.6), grid limit 30 kW, other load 3 kW",
                    "sum_of_charger_max_w": 66_000,
                    "budget_w": BUDGET,
                    "margin_w": 1500,
                    "measured_charging_peak_w": three["peak_w"],
                    "measured_charging_3_sessions_w": three["last_w"],
                    "measured_charging_2_sessions_w": two["last_w"],
                    "site_grid_import_peak_w": grid_peak,
                    "grid_limit_w": 30_000,
                    "meter_samples": two["samples"],
                    "site_reports": reports,
                }
            )
        )
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)


async def _more_samples(stack: SiteStack, since: Any, n: int) -> bool:
    async with stack.runtime.sessions() as s:
        counts = (
            await s.execute(
                select(MeterSample.charger_id, func.count())
                .where(MeterSample.measurand == "Power.Active.Import", MeterSample.sampled_at > since)
                .group_by(MeterSample.charger_id)
            )
        ).all()
    active = [cp.id for cp in stack.chargers if cp.connectors[1].tx is not None]
    got = dict(counts)
    return all(got.get(cid, 0) >= n for cid in active)


async def test_pv_raises_the_budget(start_runtime: StartRuntime) -> None:
    """Telemetry through the API (no broker): PV output adds to the 10 kW grid limit (no margin here) and the
    charger gets it; after a reboot the charger is sent its limit again; a bad report is refused with a JSON
    reason."""
    runtime = await start_runtime(call_timeout=10.0, site_plan_interval=2.0, site_margin_pct=0.0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        stack = SiteStack(runtime, api)
        try:
            await stack.site(10, pv_peak_kw=15)
            assert (await api.put("/api/id-tokens/DRIVER1", json={"status": "Accepted"})).status_code == 201
            cp = await stack.charger("PV-1", "ocpp2.0.1")

            async def report(pv_w: float) -> None:
                body = {"at": utcnow().isoformat(), "pv_w": pv_w, "grid_w": 0.0, "load_w": 0.0}
                r = await api.post(f"/api/sites/{SITE}/telemetry", json=body)
                assert r.status_code == 201 and r.json() == {"stored": True}, r.text

            await report(0.0)
            await cp.plug_in(1, "DRIVER1", ev=EV(capacity_wh=80_000, soc=20.0, max_power_w=22_000))
            await until(lambda: stack.settled({cp.id: 10_000.0}), 30, "10 kW from the grid alone")
            await report(8000.0)
            await until(lambda: stack.settled({cp.id: 18_000.0}), 30, "18 kW with 8 kW of PV")
            power = (await api.get(f"/api/sites/{SITE}/power")).json()
            assert power["budget"]["charging_w"] == 18_000 and power["telemetry"]["pv_w"] == 8000
            assert power["allocations"][0] | {"sent_at": None} == {
                "charger_id": "PV-1",
                "limit_w": 18_000.0,
                "status": "Accepted",
                "sent_at": None,
            }
            assert power["budget"]["margin_w"] == 0

            # A reboot (many chargers lose their profiles in one): the same limit goes out again.
            await cp.unplug(1)
            await until(lambda: stack.settled({cp.id: 1300.0}), 30, "idle at the floor")
            sent = _profiles_received(cp)

            async def sent_again() -> bool:
                return _profiles_received(cp) > sent

            cp.request_reboot("RemoteReset", hard=True, stop_reason="Reboot")
            await until(sent_again, 30, "the limit sent again after the reboot")
            await until(lambda: stack.settled({cp.id: 1300.0}), 30, "accepted again")

            bad = await api.post(f"/api/sites/{SITE}/telemetry", json={"at": "yesterday", "pv_w": -5})
            assert bad.status_code == 422 and bad.json()["error"] == "invalid_request", bad.text
            assert "pv_w" in bad.json()["detail"]
            unknown = await api.post("/api/sites/nowhere/telemetry", json={"at": utcnow().isoformat()})
            assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
        finally:
            await cp.stop()
            assert cp.schema_violations == []


def _profiles_received(cp: SimulatedCharger) -> int:
    return sum(1 for action, _ in cp.received_calls if action == "SetChargingProfile")


async def test_site_telemetry_over_mqtt(pg_url: str) -> None:
    """The site controller simulator publishes to Mosquitto; the subscriber stores each report once in
    Postgres; a bad payload and a report for an unknown site are dropped without blocking what follows."""
    root = f"test-{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=pg_url, mqtt_url=f"mqtt://127.0.0.1:1883/{root}", node_id="t1")
    async with migrated_sessions(pg_url) as sessions:
        async with sessions() as s:
            s.add(Site(id=SITE, name="Solar", kind="pv_storage", grid_limit_kw=30, pv_peak_kw=20))
            await s.commit()
        subscriber = SiteTelemetrySubscriber(sessions, settings)
        subscriber.start()
        try:
            await asyncio.wait_for(subscriber.subscribed.wait(), 10)
            controller = SiteController(
                SITE,
                pv_peak_w=20_000,
                storage_wh=40_000,
                storage_max_w=10_000,
                start_hour=12.0,
                broker=broker_address(settings.mqtt_url),
                interval=0.2,
                seed=3,
            )
            await controller.run(duration=1.0)
            assert controller.reports >= 3

            async def rows() -> list[SiteTelemetry]:
                async with sessions() as s:
                    return list(await s.scalars(select(SiteTelemetry).order_by(SiteTelemetry.at)))

            await until(lambda: _count(rows, controller.reports), 10, "the controller's reports stored")
            stored = (await rows())[-1]
            assert stored.pv_w == controller.last["pv_w"] and stored.grid_w == controller.last["grid_w"]
            assert stored.pv_w is not None and stored.pv_w > 15_000  # noon

            topic = controller.topic()
            final = {**controller.last, "at": utcnow().isoformat(), "pv_w": 1234.5}
            async with aiomqtt.Client("127.0.0.1", 1883) as client:
                await client.publish(topic, b'{"at": "2025-01-01T12:00:00Z", "pv_w": "lots"}', qos=1)
                await client.publish(topic, b"not json", qos=1)
                await client.publish(topic.replace(SITE, "nowhere"), json.dumps(final), qos=1)
                await client.publish(topic, json.dumps(final), qos=1)
                await client.publish(topic, json.dumps(final), qos=1)  # a duplicate is stored once
            await until(lambda: _count(rows, controller.reports + 1), 10, "the final report stored")
            await asyncio.sleep(0.3)  # the duplicate, had it been stored, would be there by now
            assert len(await rows()) == controller.reports + 1
            async with sessions() as s:
                assert await s.scalar(select(func.count()).where(SiteTelemetry.site_id != SITE)) == 0

            # A pack's BMS reports on the same subscriber: history row once, latest condition on the pack.
            reading = {
                "at": utcnow().isoformat(),
                "soc": 55.5,
                "soh": 88.0,
                "cycles": 301,
                "cell_temp_max": 31.0,
            }
            pack_topic = f"{root}/v1/batteries/PACK-MQTT-1/telemetry"
            async with aiomqtt.Client("127.0.0.1", 1883) as client:
                await client.publish(pack_topic, b'{"at": "soon", "soc": 500}', qos=1)
                for _ in range(2):
                    await client.publish(pack_topic, json.dumps(reading), qos=1)

            async def pack() -> Battery | None:
                async with sessions() as s:
                    return await s.get(Battery, "PACK-MQTT-1")

            await until(lambda: _has(pack), 10, "the pack's reading stored")
            async with sessions() as s:
                stored_pack = await s.get(Battery, "PACK-MQTT-1")
                history = (
                    await s.scalars(select(BatteryReading).where(BatteryReading.serial == "PACK-MQTT-1"))
                ).all()
            assert stored_pack is not None and (
                stored_pack.soh,
                stored_pack.cycles,
                stored_pack.registered,
            ) == (
                88.0,
                301,
                False,
            )
            assert [(h.soc, h.cell_temp_max) for h in history] == [(55.5, 31.0)]
        finally:
            await subscriber.stop()


async def _has(get: Callable[[], Awaitable[object]]) -> bool:
    return await get() is not None


async def _count(rows: Callable[[], Awaitable[list[SiteTelemetry]]], n: int) -> bool:
    return len(await rows()) >= n


def test_budget_formula_and_sharing() -> None:
    site = Site(id=SITE, name="s", grid_limit_kw=30, storage_max_kw=10)
    now = utcnow()
    report = SiteTelemetry(site_id=SITE, at=now, pv_w=12_000, load_w=4000, storage_soc=55, grid_w=0)
    assert site_budget(site, report, now, margin_pct=0).total_w == 30_000 + 12_000 - 4000 + 10_000
    assert site_budget(site, report, now, margin_pct=5).total_w == 30_000 - 1500 + 12_000 - 4000 + 10_000
    low = SiteTelemetry(site_id=SITE, at=now, pv_w=12_000, load_w=4000, storage_soc=20)
    assert site_budget(site, low, now, margin_pct=0).total_w == 38_000  # storage at its reserve: not counted
    # A stale report: no PV or storage counted on, but the site's last known load still is.
    stale = SiteTelemetry(site_id=SITE, at=now - timedelta(minutes=10), pv_w=12_000, load_w=4000)
    old = site_budget(site, stale, now, margin_pct=5)
    assert old.total_w == 30_000 - 1500 - 4000 and not old.fresh
    assert site_budget(site, None, now, margin_pct=0).total_w == 30_000
    # One EV takes 4 kW only, a charger with two sessions counts twice, an idle one keeps its floor.
    shares = water_fill(
        30_000, {"a": (1, 4000.0), "b": (1, float("inf")), "c": (2, 22_000.0), "d": (1, 1300.0)}
    )
    assert shares == {
        "a": 4000.0,
        "d": 1300.0,
        "b": pytest.approx(8233.3, abs=0.1),
        "c": pytest.approx(8233.3, abs=0.1),
    }


@pytest.mark.parametrize("version", [V16, V201, V21], ids=lambda v: v.name)
def test_power_limit_payloads_match_the_schemas(version: Any) -> None:
    for watts in (0, 1300, 9000.0, 12_850.7, 22_000):
        action, payload = to_ocpp(version, SET_POWER_LIMIT, {"limit_w": watts})
        assert action == "SetChargingProfile" and payload == set_charging_profile(version, watts)
        validate(version, action, payload, response=False, unique_id="t")
    assert to_ocpp(version, "Reset", {"type": "Hard"}) == ("Reset", {"type": "Hard"})
    for bad in ({}, {"limit_w": -1}, {"limit_w": "9000"}, {"limit_w": float("nan")}, {"limit_w": True}):
        with pytest.raises(ValueError):
            to_ocpp(version, SET_POWER_LIMIT, bad)
