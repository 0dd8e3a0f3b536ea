"""Simulated charger fleets against a tiny in-test central system (tests/mini_csms.py): 200 chargers in one
process, seeds making fleets repeatable."""

from __future__ import annotations

from typing import Any

from firmware_stubs import EV
from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from tests.mini_csms import MiniCSMS

pytest_plugins = ("tests.mini_csms",)


# --------------------------------------------------------------------------- fleets & seeds
async def test_fleet_of_200_chargers_in_one_process(csms: MiniCSMS) -> None:
    config = FleetConfig(csms.url, chargers=200, protocol="mixed", duration=4.0, connect_rate=2000.0, seed=3)
    config.strict = True
    report = await run_fleet(config)
    assert report.chargers == 200
    assert report.ever_connected == 200 and report.boots_accepted >= 200
    assert report.schema_violations == []
    assert {
        p["chargingStation"]["vendorName"]
        for c, a, p, _ in csms.received
        if a == "BootNotification" and "chargingStation" in p
    } == {"ChargeOps"}


def test_seed_makes_fleets_repeatable() -> None:
    def fingerprint(seed: int) -> list[tuple[Any, ...]]:
        fleet = build_fleet(FleetConfig("ws://127.0.0.1:1/ocpp", chargers=20, seed=seed, protocol="mixed"))
        out = []
        for cp in fleet:
            ev = EV.random(cp.rng, cp.dc)
            out.append(
                (cp.id, cp.dialect.version, len(cp.connectors), cp.max_power_w, cp.dc, ev.soc, ev.capacity_wh)
            )
        return out

    assert fingerprint(42) == fingerprint(42)
    assert fingerprint(42) != fingerprint(43)
