"""ISO 15118 smart charging (issue 11 item 8, OCPP 2.x K15–K17): the EV's needs → Accepted, then ops'
TxProfile computed from them within the site's limit; the schedule the EV chose stored and shown on the
transaction. Hand figures for the pure parts; real WebSocket chargers, Postgres and SQLite for the rest."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from chargeops.commands import SET_EV_CHARGING_SCHEDULE
from chargeops.db.engine import make_engine
from chargeops.db.migrate import alembic_config
from chargeops.db.models import Charger
from chargeops.db.ops_models import Site
from ocpp_gateway.commands import Unsupported, to_ocpp
from ocpp_gateway.ev_charging import needs_of
from ocpp_gateway.versions import V16, V201
from ops.ev_schedule import ev_schedule
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger
from tests.waiting import until

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
AC_22KW = {"energyAmount": 20_000, "evMinCurrent": 6, "evMaxCurrent": 32, "evMaxVoltage": 230}
# NotifyEVChargingNeeds of a 22 kW AC EV without a departure time: it may draw what the site allows
AC_NEEDS = {
    "evseId": 1,
    "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase", "acChargingParameters": AC_22KW},
}


# -- the pure parts, by hand figures ------------------------------------------------------------------------


def test_ac_and_dc_needs_in_watts() -> None:
    """AC: 32 A × 230 V × 3 phases = 22,080 W, 6 A → 4,140 W; DC: the lesser of 125 A × 400 V = 50,000 W
    and evMaxPower 45,000 W, energy from the state of charge: (80 − 30) % of 60,000 Wh = 30,000 Wh."""
    ac = needs_of(
        {
            "evseId": 1,
            "maxScheduleTuples": 3,
            "chargingNeeds": {
                "requestedEnergyTransfer": "AC_three_phase",
                "departureTime": "2026-11-26T02:00:00Z",
                "acChargingParameters": AC_22KW,
            },
        },
        "TX-1",
    )
    assert ac is not None
    assert (ac.max_power_w, ac.min_power_w, ac.energy_wh, ac.max_periods) == (22_080, 4_140, 20_000, 3)
    assert ac.departure_at == NOW + timedelta(hours=8)
    dc_params = {"evMaxCurrent": 125, "evMaxVoltage": 400, "evMaxPower": 45_000, "stateOfCharge": 30,
                 "evEnergyCapacity": 60_000, "fullSoC": 80}  # fmt: skip
    dc = needs_of(
        {"evseId": 2, "chargingNeeds": {"requestedEnergyTransfer": "DC", "dcChargingParameters": dc_params}},
        "T",
    )
    assert dc is not None and (dc.max_power_w, dc.energy_wh, dc.departure_at) == (45_000, 30_000, None)
    single = needs_of(
        {
            "evseId": 1,
            "chargingNeeds": {"requestedEnergyTransfer": "AC_single_phase", "acChargingParameters": AC_22KW},
        },
        "T",
    )
    assert single is not None and single.max_power_w == 7_360  # 32 A × 230 V
    assert needs_of({"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC"}}, "T") is None


def test_schedule_levels_the_load_within_the_site_limit() -> None:
    """20 kWh in 8 h with 10 % margin = 2,750 W, but the EV needs 4,140 W to charge at all → 4,200 W (the
    next 100 W step) for the 8 h; with no departure time the site's 11,000 W cap (below the EV's 22,080 W);
    100 kWh in 2 h (55,000 W) cannot be met → the allowed 11,000 W until departure."""
    base: dict[str, Any] = {"now": NOW, "max_power_w": 22_080, "min_power_w": 4_140, "cap_w": 11_000}
    leveled = ev_schedule(**base, energy_wh=20_000, departure_at=NOW + timedelta(hours=8))
    assert leveled.periods == ((0, 4_200),) and leveled.duration_s == 8 * 3600
    assert ev_schedule(**base, energy_wh=20_000).periods == ((0, 11_000),)
    rushed = ev_schedule(**base, energy_wh=100_000, departure_at=NOW + timedelta(hours=2))
    assert rushed.periods == ((0, 11_000),) and rushed.duration_s == 7200
    # 30 kWh in 10 h: 3,300 W (no EV minimum); no site cap: the EV's own 22,080 W floored to 22,000 W.
    slow = ev_schedule(now=NOW, max_power_w=22_080, energy_wh=30_000, departure_at=NOW + timedelta(hours=10))
    assert slow.periods == ((0, 3_300),)
    assert ev_schedule(now=NOW, max_power_w=22_080).periods == ((0, 22_000),)
    assert ev_schedule(now=NOW, max_power_w=22_080, cap_w=0).periods == ((0, 0),)


def test_set_ev_charging_schedule_is_a_tx_profile_on_2x_and_nothing_on_1_6() -> None:
    neutral = {"evse_id": 1, "transaction_id": "TX-9", "start_at": NOW.isoformat(), "duration_s": 3600,
               "periods": [{"start_s": 0, "limit_w": 4200.7}]}  # fmt: skip
    action, payload = to_ocpp(V201, SET_EV_CHARGING_SCHEDULE, neutral)
    assert action == "SetChargingProfile"
    assert_strictly_valid("ocpp2.0.1", action, payload, response=False)
    profile = payload["chargingProfile"]
    assert (payload["evseId"], profile["chargingProfilePurpose"], profile["transactionId"]) == (
        1,
        "TxProfile",
        "TX-9",
    )
    schedule = profile["chargingSchedule"][0]
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 4200.0}]
    assert (schedule["startSchedule"], schedule["duration"]) == ("2026-11-25T18:00:00Z", 3600)
    with pytest.raises(Unsupported):
        to_ocpp(V16, SET_EV_CHARGING_SCHEDULE, neutral)
    with pytest.raises(ValueError):
        to_ocpp(V201, SET_EV_CHARGING_SCHEDULE, {**neutral, "periods": [{"start_s": 5, "limit_w": 1}]})


# -- end to end -------------------------------------------------------------------------------------------


def _started(tx: str, evse: int = 1) -> dict[str, Any]:
    return {
        "eventType": "Started",
        "timestamp": datetime.now(UTC).isoformat(),
        "triggerReason": "CablePluggedIn",
        "seqNo": 0,
        "transactionInfo": {"transactionId": tx, "chargingState": "EVConnected"},
        "evse": {"id": evse, "connectorId": 1},
    }


async def site_with_charger(runtime: Runtime, site: str, charger: str, grid_limit_kw: float = 11) -> None:
    """A site with a grid connection (the site planner keeps 5 %: 10,450 W of 11 kW) and a charger there."""
    async with runtime.sessions() as s, s.begin():
        s.add(Site(id=site, name=site, grid_limit_kw=grid_limit_kw))
        s.add(Charger(id=charger, site=site, admission="accepted"))


class Station:
    """A raw 2.x charger that answers the central system's SetChargingProfile calls Accepted whenever they
    come (the site planner's TxDefaultProfiles may arrive between our calls), keeping the TxProfiles."""

    def __init__(self, cp: RawCharger) -> None:
        self.cp = cp
        self.tx_profiles: list[dict[str, Any]] = []

    async def _take(self, frame: list[Any]) -> None:
        assert frame[0] == 2 and frame[2] == "SetChargingProfile", frame
        assert_strictly_valid(self.cp.protocol, "SetChargingProfile", frame[3], response=False)
        await self.cp.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        if frame[3]["chargingProfile"]["chargingProfilePurpose"] == "TxProfile":
            self.tx_profiles.append(frame[3])

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = f"s{id(payload)}-{len(self.tx_profiles)}"
        await self.cp.ws.send(json.dumps([2, unique_id, action, payload]))
        while True:
            frame = await self.cp.recv()
            if frame[0] == 2:
                await self._take(frame)
                continue
            assert frame[:2] == [3, unique_id], frame
            assert_strictly_valid(self.cp.protocol, action, frame[2], response=True)
            return frame[2]

    async def next_profile(self, seen: int) -> dict[str, Any]:
        """The TxProfile after the first `seen` ones."""
        while len(self.tx_profiles) <= seen:
            await self._take(await self.cp.recv())
        return self.tx_profiles[seen]


async def test_tc_k_53_ev_charging_needs_get_a_tx_profile_and_the_ev_schedule_is_stored(
    start_runtime: StartRuntime, pg_url: str
) -> None:
    """K15 (TC_K_53): NotifyEVChargingNeeds Accepted, then a TxProfile for the session computed from the
    needs (4,200 W until departure, see the hand figures); the EV's schedule Accepted and stored; both
    shown on the transaction with the needs. K17: the EV renegotiates without a departure time → a new
    TxProfile (same id) at its maximum. No transaction on the EVSE → Rejected (K15.FR.04)."""
    runtime = await start_runtime(database_url=pg_url, accept_unknown=True)
    departure = (datetime.now(UTC) + timedelta(hours=8)).isoformat()
    needs = {
        "evseId": 1,
        "maxScheduleTuples": 10,
        "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase",
            "departureTime": departure,
            "acChargingParameters": AC_22KW,
        },
    }
    async with raw_charger(runtime.gateway.port, "K15-1", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = Station(raw)
        refused = await cp.result("NotifyEVChargingNeeds", needs)
        assert refused["status"] == "Rejected"  # no transaction yet
        await cp.result("TransactionEvent", _started("TX-K15"))
        assert await cp.result("NotifyEVChargingNeeds", needs) == {"status": "Accepted"}
        request = await cp.next_profile(0)
        profile = request["chargingProfile"]
        assert (request["evseId"], profile["transactionId"], profile["chargingProfileKind"]) == (
            1,
            "TX-K15",
            "Absolute",
        )
        schedule = profile["chargingSchedule"][0]
        assert schedule["chargingRateUnit"] == "W"
        assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 4200.0}]
        assert 8 * 3600 - 60 < schedule["duration"] <= 8 * 3600
        ev_choice = {
            "timeBase": schedule["startSchedule"],
            "evseId": 1,
            "chargingSchedule": {**schedule, "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 4000.0}]},
        }
        assert await cp.result("NotifyEVChargingSchedule", ev_choice) == {"status": "Accepted"}

        api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{runtime.http_port}",
            headers={"Authorization": "Bearer test-admin-token"},
        )
        async with api:
            url = "/api/transactions/K15-1/TX-K15/charging-schedules"

            async def both_stored() -> bool:
                r = await api.get(url)
                return r.status_code == 200 and len(r.json()["items"]) == 2

            await until(both_stored, 10, "the offered and the chosen schedule stored")
            body = (await api.get(url)).json()
            offered, chosen = sorted(body["items"], key=lambda i: i["source"])
            assert (offered["source"], offered["status"], offered["periods"]) == (
                "csms",
                "Accepted",
                [{"start_s": 0, "limit": 4200.0}],
            )
            assert (chosen["source"], chosen["periods"]) == ("ev", [{"start_s": 0, "limit": 4000.0}])
            assert body["needs"]["max_power_w"] == 22_080 and body["needs"]["energy_wh"] == 20_000
            assert (await api.get("/api/transactions/K15-1/NOPE/charging-schedules")).status_code == 404

            # K17: the EV asks again, with no departure time: its maximum (no site limit), same profile id.
            again = {
                **needs,
                "chargingNeeds": {k: v for k, v in needs["chargingNeeds"].items() if k != "departureTime"},
            }
            assert await cp.result("NotifyEVChargingNeeds", again) == {"status": "Accepted"}
            renewed = await cp.next_profile(1)
            assert renewed["chargingProfile"]["id"] == profile["id"]
            assert renewed["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"] == [
                {"startPeriod": 0, "limit": 22_000.0}
            ]

            async def three() -> bool:
                return len((await api.get(url)).json()["items"]) == 3

            await until(three, 10, "the renegotiated schedule stored")


async def test_tc_k_ev_schedule_is_capped_by_the_site_limit(start_runtime: StartRuntime) -> None:
    """A charger at a site with an 11 kW grid connection (5 % kept: 10,450 W): the EV's 22,080 W is capped
    to the site planner's limit for it (10,400 W, its 100 W steps); on 2.1 as on 2.0.1."""
    runtime = await start_runtime(accept_unknown=True)
    await site_with_charger(runtime, "depot-k", "K15-SITE")
    async with raw_charger(runtime.gateway.port, "K15-SITE", "ocpp2.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = Station(raw)
        await cp.result("TransactionEvent", _started("TX-SITE"))
        assert (await cp.result("NotifyEVChargingNeeds", AC_NEEDS))["status"] == "Accepted"
        request = await cp.next_profile(0)
        periods = request["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
        assert periods == [{"startPeriod": 0, "limit": 10_400.0}]


async def test_tc_k_16_a_lowered_site_limit_renegotiates_the_ev_schedule(start_runtime: StartRuntime) -> None:
    """K16, renegotiation started by the CSMS: the site's grid connection drops from 11 kW to 7 kW during an
    ISO 15118 session; the session's TxProfile (which outranks the site planner's default profile) is planned
    again within the new limit (7 kW less 5 %: 6,600 W in 100 W steps) and sent, without the EV asking; a
    limit that stays put sends nothing more."""
    runtime = await start_runtime(accept_unknown=True, site_plan_interval=0.3)
    await site_with_charger(runtime, "depot-k16", "K16-SITE")
    async with raw_charger(runtime.gateway.port, "K16-SITE", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = Station(raw)
        await cp.result("TransactionEvent", _started("TX-K16"))
        assert (await cp.result("NotifyEVChargingNeeds", AC_NEEDS))["status"] == "Accepted"
        first = await cp.next_profile(0)
        periods = first["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
        assert periods == [{"startPeriod": 0, "limit": 10_400.0}]
        async with runtime.sessions() as s, s.begin():
            (await s.get(Site, "depot-k16")).grid_limit_kw = 7  # type: ignore[union-attr]
        again = await asyncio.wait_for(cp.next_profile(1), 15)
        periods = again["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
        assert periods == [{"startPeriod": 0, "limit": 6_600.0}]
        assert again["chargingProfile"]["id"] == first["chargingProfile"]["id"]  # it replaces the first
        with pytest.raises(TimeoutError):  # the limit stays: no third TxProfile
            await asyncio.wait_for(cp.next_profile(2), 2)


async def test_0017_carries_reported_ev_schedules_over(db_url: str) -> None:
    """A NotifyEVChargingSchedule stored as sent before 0017 becomes an `ev` row, with the transaction that
    ran on its EVSE at its timeBase."""
    from alembic import command

    engine = make_engine(db_url)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    payload = {
        "timeBase": "2026-03-01T10:05:00Z",
        "evseId": 2,
        "chargingSchedule": {
            "id": 1,
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}],
        },
    }
    try:
        async with engine.begin() as conn:

            def to(revision: str) -> Any:
                def run(sync: Any) -> None:
                    cfg.attributes["connection"] = sync
                    command.upgrade(cfg, revision)

                return run

            await conn.run_sync(to("0016"))
            at = datetime(2026, 3, 1, 10, 5, 1, tzinfo=UTC)
            await conn.execute(
                text(
                    "INSERT INTO transactions (charger_id, transaction_id, evse_id, started_at, active, "
                    "updated_at) VALUES ('OLD-1', 'TX-OLD', 2, :start, false, :start), "
                    "('OLD-1', 'TX-LATER', 2, :later, true, :later)"
                ),
                {"start": datetime(2026, 3, 1, 9, tzinfo=UTC), "later": datetime(2026, 3, 2, 9, tzinfo=UTC)},
            )
            await conn.execute(
                text(
                    "INSERT INTO events (event_id, charger_id, kind, reported_at, received_at, data) VALUES "
                    "('e-old', 'OLD-1', 'reported', NULL, :at, :data), "
                    "('e-other', 'OLD-1', 'reported', NULL, :at, :other)"
                ),
                {
                    "at": at,
                    "data": json.dumps({"action": "NotifyEVChargingSchedule", "payload": payload}),
                    "other": json.dumps({"action": "NotifyEvent", "payload": {}}),
                },
            )
            await conn.run_sync(to("head"))
            rows = (
                await conn.execute(
                    text(
                        "SELECT event_id, transaction_id, evse_id, source, rate_unit, periods "
                        "FROM ev_charging_schedules"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert len(rows) == 1
    event_id, tx, evse, source, unit, periods = rows[0]
    periods = json.loads(periods) if isinstance(periods, str) else periods
    assert (event_id, tx, evse, source, unit, periods) == (
        "e-old",
        "TX-OLD",
        2,
        "ev",
        "A",
        [{"start_s": 0, "limit": 16}],
    )
