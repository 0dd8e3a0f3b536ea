"""Meter plausibility: a register going backwards, a reading stamped a day ahead and a 10× jump are flagged,
left out of the billed energy, shown on the transaction and raise one meter ticket per charger — over real
OCPP 1.6 and 2.0.1 connections to a server on Postgres; plausible sessions are billed as read, unflagged.
The check itself (`ocpp_gateway.plausibility`) is pure and tested on its own first."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from chargeops.db.models import MeterSample, Transaction
from chargeops.events import ENERGY_REGISTER, MeterValues, Sample
from ocpp_gateway.plausibility import (
    BACKWARDS,
    CLOCK_SKEW,
    EXCEEDS_MAX_POWER,
    GRACE_S,
    HEADROOM,
    MeterLimits,
    Reading,
    check,
    judge,
    readings_of,
)
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, raw_charger
from tests.waiting import until

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = MeterLimits(max_power_w=22_000, max_clock_skew_s=300)
ADMIN = {"Authorization": "Bearer test-admin-token"}


def at(minutes: float) -> datetime:
    return NOW - timedelta(minutes=30) + timedelta(minutes=minutes)


# -- the check (pure) ---------------------------------------------------------------------------------


def test_a_plausible_session_moves_the_last_good_reading_and_flags_nothing() -> None:
    readings = [
        Reading(10_000, at(0)),
        Reading(11_000, at(5)),
        Reading(11_000, at(6)),
        Reading(12_500, at(10)),
    ]
    good, flags = judge(None, readings, LIMITS, NOW)
    assert flags == [] and good == Reading(12_500, at(10))


def test_a_register_going_backwards_is_flagged_and_the_next_reading_judged_by_the_last_good_one() -> None:
    good, flags = judge(
        Reading(12_000, at(5)), [Reading(11_000, at(10)), Reading(12_600, at(15))], LIMITS, NOW
    )
    assert [(f.reason, f.reading.wh, f.previous) for f in flags] == [
        (BACKWARDS, 11_000, Reading(12_000, at(5)))
    ]
    assert good == Reading(12_600, at(15))
    # Rounding is not a fault: a reading 1 Wh lower is still the same register.
    assert check(Reading(12_000, at(5)), Reading(11_999, at(6)), LIMITS, NOW) is None


def test_a_tenfold_jump_is_flagged_and_the_stop_after_it_judged_against_the_last_plausible_reading() -> None:
    good, flags = judge(
        Reading(12_000, at(5)), [Reading(120_000, at(10)), Reading(13_000, at(15))], LIMITS, NOW
    )
    assert [(f.reason, f.reading.wh) for f in flags] == [(EXCEEDS_MAX_POWER, 120_000)]
    assert "rose 108,000 Wh in 300 s" in flags[0].detail and "22 kW" in flags[0].detail
    assert good == Reading(13_000, at(15))  # not "backwards" from the jump: the jump never counted


def test_the_rise_allowed_is_max_power_with_headroom_over_the_elapsed_time_and_a_grace() -> None:
    base = Reading(10_000, at(0))
    allowed = LIMITS.max_power_w * HEADROOM * (600 + GRACE_S) / 3600
    assert check(base, Reading(10_000 + allowed - 0.01, at(10)), LIMITS, NOW) is None
    flag = check(base, Reading(10_000 + allowed + 1, at(10)), LIMITS, NOW)
    assert flag is not None and flag.reason == EXCEEDS_MAX_POWER


def test_a_reading_stamped_beyond_the_clock_skew_is_flagged_and_does_not_count() -> None:
    good, flags = judge(
        Reading(10_000, at(0)),
        [Reading(10_500, NOW + timedelta(days=1)), Reading(10_400, at(5))],
        LIMITS,
        NOW,
    )
    assert [f.reason for f in flags] == [CLOCK_SKEW] and "86,400 s ahead" in flags[0].detail
    assert good == Reading(10_400, at(5))
    assert check(None, Reading(10_500, NOW + timedelta(seconds=299)), LIMITS, NOW) is None
    before = check(None, Reading(10_000, datetime(1970, 1, 1, tzinfo=UTC)), LIMITS, NOW, started_at=at(0))
    assert (
        before is not None
        and before.reason == CLOCK_SKEW
        and "before the transaction started" in before.detail
    )


def test_late_readings_may_not_top_a_later_one_and_leave_the_last_good_reading_in_place() -> None:
    """1.6 StopTransaction `transactionData` repeats the session's readings after they were sent."""
    last = Reading(14_000, at(20))
    good, flags = judge(last, [Reading(10_000, at(0)), Reading(12_000, at(5))], LIMITS, NOW)
    assert flags == [] and good == last
    good, flags = judge(last, [Reading(15_000, at(10))], LIMITS, NOW)
    assert [f.reason for f in flags] == [BACKWARDS] and good == last


def test_the_first_reading_is_the_base_even_when_its_clock_is_wrong() -> None:
    good, flags = judge(None, [Reading(10_000, NOW + timedelta(days=1)), Reading(10_500, NOW)], LIMITS, NOW)
    assert [f.reason for f in flags] == [CLOCK_SKEW]
    assert good == Reading(10_500, NOW)  # the base was timed by the server clock, then this one counted


def test_only_the_main_energy_register_is_read_in_wh() -> None:
    samples = [
        Sample(ENERGY_REGISTER, 12.5, "kWh", sampled_at=at(1)),
        Sample(ENERGY_REGISTER, 4_000, "Wh", phase="L1", sampled_at=at(1)),
        Sample("Power.Active.Import", 7_400, "W", sampled_at=at(1)),
    ]
    assert readings_of([MeterValues(1, 1, "7", samples)]) == [Reading(12_500, at(1))]


# -- over the wire, on Postgres -----------------------------------------------------------------------


@dataclass
class Server:
    runtime: Runtime
    api: httpx.AsyncClient

    @property
    def port(self) -> int:
        return self.runtime.gateway.port  # type: ignore[union-attr]

    async def transaction(self, charger_id: str, tx_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/transactions/{charger_id}/{tx_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def listed(self, charger_id: str) -> list[dict[str, Any]]:
        r = await self.api.get("/api/transactions", params={"charger_id": charger_id})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def tickets(self, charger_id: str) -> list[dict[str, Any]]:
        r = await self.api.get("/api/tickets", params={"charger_id": charger_id, "kind": "maintenance"})
        return list(r.json()["items"])

    async def row(self, charger_id: str, tx_id: str) -> Transaction:
        async with self.runtime.sessions() as session:
            query = select(Transaction).where(
                Transaction.charger_id == charger_id, Transaction.transaction_id == tx_id
            )
            return (await session.execute(query)).scalar_one()

    async def register_samples(self, charger_id: str) -> int:
        async with self.runtime.sessions() as session:
            query = select(func.count()).where(
                MeterSample.charger_id == charger_id, MeterSample.measurand == ENERGY_REGISTER
            )
            return int((await session.execute(query)).scalar_one())


@pytest.fixture
async def server(pg_url: str, start_runtime: StartRuntime) -> AsyncIterator[Server]:
    # Chargers of an unregistered model may rise at most 50 kW; the 1.6 test registers its model at 22 kW.
    runtime = await start_runtime(pg_url, accept_unknown=True, meter_max_power_kw=50)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        assert (await api.put("/api/id-tokens/DRIVER", json={"status": "Accepted"})).status_code == 201
        yield Server(runtime, api)


def ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def counted(reason: str) -> float:
    return REGISTRY.get_sample_value("chargeops_meter_implausible_total", {"reason": reason}) or 0.0


def minutes_ago(n: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=n)


async def boot16(cp: RawCharger, model: str) -> None:
    await cp.result("BootNotification", {"chargePointVendor": "Test", "chargePointModel": model})


async def meter16(cp: RawCharger, tx: int, when: datetime, wh: float) -> None:
    value = {"value": str(wh), "measurand": ENERGY_REGISTER, "context": "Sample.Periodic", "unit": "Wh"}
    payload = {
        "connectorId": 1,
        "transactionId": tx,
        "meterValue": [{"timestamp": ts(when), "sampledValue": [value]}],
    }
    await cp.result("MeterValues", payload)


async def session16(cp: RawCharger, t0: datetime, readings: list[tuple[float, float]], stop: float) -> int:
    """Start at t0 with 10,000 Wh, send (minutes after t0, Wh) readings, stop 25 minutes in."""
    start = {"connectorId": 1, "idTag": "DRIVER", "meterStart": 10_000, "timestamp": ts(t0)}
    tx = int((await cp.result("StartTransaction", start))["transactionId"])
    for minute, wh in readings:
        await meter16(cp, tx, t0 + timedelta(minutes=minute), wh)
    end = {
        "transactionId": tx,
        "meterStop": stop,
        "timestamp": ts(t0 + timedelta(minutes=25)),
        "reason": "Local",
    }
    await cp.result("StopTransaction", end)
    return tx


async def test_v16_implausible_readings_are_flagged_not_billed_shown_and_ticketed(server: Server) -> None:
    model = {"id": "raw-22", "vendor": "Test", "model": "Raw22", "kind": "ac", "max_power_kw": 22}
    assert (await server.api.post("/api/fleet", json={"models": [model]})).status_code == 200
    before = {r: counted(r) for r in (BACKWARDS, EXCEEDS_MAX_POWER, CLOCK_SKEW)}
    t0 = minutes_ago(30)
    start = {"connectorId": 1, "idTag": "DRIVER", "meterStart": 10_000, "timestamp": ts(t0)}
    async with raw_charger(server.port, "MP16") as cp:
        await boot16(cp, "Raw22")
        tx = int((await cp.result("StartTransaction", start))["transactionId"])
        await meter16(cp, tx, t0 + timedelta(minutes=5), 12_000)
        await meter16(cp, tx, t0 + timedelta(minutes=10), 120_000)  # 10×: 108 kWh in 5 min at 22 kW
    jumped = await server.transaction("MP16", str(tx))
    # While it runs the session is billed up to the last plausible reading, not the jump (110,000 Wh).
    assert jumped["active"] and jumped["energy_wh"] == 2_000
    assert [(f["reason"], f["value_wh"], f["previous_wh"]) for f in jumped["meter_flags"]] == [
        (EXCEEDS_MAX_POWER, 120_000, 12_000)
    ]
    assert (await server.row("MP16", str(tx))).energy_counted_wh == 12_000  # the site energy metric too

    # The charger reconnects: the last plausible reading is the stored one, so the check goes on.
    async with raw_charger(server.port, "MP16") as cp:
        await boot16(cp, "Raw22")
        await meter16(cp, tx, t0 + timedelta(minutes=15), 11_000)  # backwards from 12,000
        await meter16(cp, tx, t0 + timedelta(days=1), 13_000)  # a day ahead of the server clock
        await meter16(cp, tx, t0 + timedelta(minutes=20), 14_000)
        stop = {"transactionId": tx, "meterStop": 15_000, "timestamp": ts(t0 + timedelta(minutes=25)),
                "reason": "EVDisconnected"}  # fmt: skip
        await cp.result("StopTransaction", stop)  # judged against 14,000, not the jump: plausible

    done = await server.transaction("MP16", str(tx))
    assert not done["active"] and done["meter_stop_wh"] == 15_000 and done["energy_wh"] == 5_000
    flags = [(f["reason"], f["value_wh"], f["previous_wh"]) for f in done["meter_flags"]]
    assert flags == [
        (EXCEEDS_MAX_POWER, 120_000, 12_000),
        (BACKWARDS, 11_000, 12_000),
        (CLOCK_SKEW, 13_000, 12_000),
    ]
    skew = done["meter_flags"][2]
    assert skew["sampled_at"] == ts(t0 + timedelta(days=1)) and "ahead of the server clock" in skew["detail"]
    [listed] = await server.listed("MP16")
    assert listed["energy_wh"] == 5_000 and listed["meter_flags"] == done["meter_flags"]
    row = await server.row("MP16", str(tx))
    assert (row.meter_good_wh, row.energy_counted_wh) == (15_000, 15_000)
    # Nothing acknowledged is lost: the flagged readings are stored as sent beside the good ones.
    assert await server.register_samples("MP16") == 5

    async def one_ticket() -> bool:
        tickets = await server.tickets("MP16")
        return len(tickets) == 1 and tickets[0]["occurrences"] == 3

    await until(one_ticket, 10, "one meter ticket counting three readings")
    [ticket] = await server.tickets("MP16")
    assert ticket["rule"] == "meter-implausible" and ticket["priority"] == "P2"
    assert f"transaction {tx}" in (ticket["fault"]["description"] or "")
    assert {r: counted(r) - before[r] for r in before} == {BACKWARDS: 1, EXCEEDS_MAX_POWER: 1, CLOCK_SKEW: 1}

    # A plausible session on another charger of the same model: billed as read, no flag, no ticket.
    async with raw_charger(server.port, "MP16-OK") as cp:
        await boot16(cp, "Raw22")
        ok = await session16(cp, minutes_ago(30), [(5, 11_000), (15, 13_500), (20, 14_000)], 15_500)
    good = await server.transaction("MP16-OK", str(ok))
    assert good["energy_wh"] == 5_500 and good["meter_flags"] == []
    assert await server.tickets("MP16-OK") == []


def tx_event(
    kind: str, seq: int, when: datetime, wh: float | None, context: str = "Sample.Periodic"
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventType": kind,
        "timestamp": ts(when),
        "triggerReason": {"Started": "Authorized", "Ended": "EVCommunicationLost"}.get(
            kind, "MeterValuePeriodic"
        ),
        "seqNo": seq,
        "transactionInfo": {"transactionId": "TX-201"},
        "evse": {"id": 1, "connectorId": 1},
    }
    if kind == "Started":
        event["idToken"] = {"idToken": "DRIVER", "type": "ISO14443"}
    if kind == "Ended":
        event["transactionInfo"]["stoppedReason"] = "EVDisconnected"
    if wh is not None:
        value = {
            "value": wh,
            "measurand": ENERGY_REGISTER,
            "context": context,
            "unitOfMeasure": {"unit": "Wh"},
        }
        event["meterValue"] = [{"timestamp": ts(when), "sampledValue": [value]}]
    return event


async def boot201(cp: RawCharger) -> None:
    station = {"vendorName": "Test", "model": "Raw201"}
    await cp.result("BootNotification", {"reason": "PowerUp", "chargingStation": station})


async def test_v201_implausible_readings_are_flagged_not_billed_shown_and_ticketed(server: Server) -> None:
    """No rated power registered for this model: the ceiling setting (50 kW here) is the limit. The meter
    stays stuck after its jump, so the Ended event's reading is flagged too and the session is billed up
    to the last plausible reading."""
    t0 = minutes_ago(30)
    events = [
        tx_event("Started", 0, t0, 10_000, "Transaction.Begin"),
        tx_event("Updated", 1, t0 + timedelta(minutes=5), 12_000),
        tx_event("Updated", 2, t0 + timedelta(minutes=10), 120_000),  # 108 kWh in 5 min: > 50 kW
        tx_event("Updated", 3, t0 + timedelta(minutes=15), 11_000),  # backwards from 12,000
        tx_event("Updated", 4, t0 + timedelta(days=1), 13_000),  # a day ahead
        tx_event("Updated", 5, t0 + timedelta(minutes=20), 14_000),
        tx_event("Ended", 6, t0 + timedelta(minutes=25), 130_000, "Transaction.End"),  # still jumped
    ]
    async with raw_charger(server.port, "MP201", "ocpp2.0.1") as cp:
        await boot201(cp)
        for event in events[:3]:
            await cp.result("TransactionEvent", event)
    async with raw_charger(server.port, "MP201", "ocpp2.0.1") as cp:  # reconnected mid-session
        await boot201(cp)
        for event in events[3:]:
            await cp.result("TransactionEvent", event)
        await cp.result("TransactionEvent", events[-1])  # a retry changes nothing

    done = await server.transaction("MP201", "TX-201")
    assert not done["active"] and done["meter_start_wh"] == 10_000 and done["meter_stop_wh"] == 130_000
    assert done["energy_wh"] == 4_000  # 14,000 − 10,000; read as reported it was 120,000
    flags = [(f["reason"], f["value_wh"], f["previous_wh"]) for f in done["meter_flags"]]
    assert flags == [
        (EXCEEDS_MAX_POWER, 120_000, 12_000),
        (BACKWARDS, 11_000, 12_000),
        (EXCEEDS_MAX_POWER, 130_000, 14_000),
        (CLOCK_SKEW, 13_000, 12_000),
    ]
    assert "at 50 kW" in done["meter_flags"][0]["detail"]
    assert (await server.row("MP201", "TX-201")).energy_counted_wh == 14_000
    assert await server.register_samples("MP201") == 7

    async def one_ticket() -> bool:
        tickets = await server.tickets("MP201")
        return len(tickets) == 1 and tickets[0]["occurrences"] == 4

    await until(one_ticket, 10, "one meter ticket counting four readings")

    async with raw_charger(server.port, "MP201-OK", "ocpp2.0.1") as cp:
        await boot201(cp)
        plausible = [
            tx_event("Started", 0, t0, 10_000, "Transaction.Begin"),
            tx_event("Updated", 1, t0 + timedelta(minutes=10), 16_000),
            tx_event("Ended", 2, t0 + timedelta(minutes=25), 22_000, "Transaction.End"),
        ]
        for event in plausible:
            await cp.result("TransactionEvent", event)
    good = await server.transaction("MP201-OK", "TX-201")
    assert good["energy_wh"] == 12_000 and good["meter_flags"] == []
    assert await server.tickets("MP201-OK") == []


async def test_roles_split_over_mqtt_judge_in_the_gateway_and_keep_the_state_across_gateways(
    pg_url: str, start_runtime: StartRuntime, tmp_path: Path
) -> None:
    """Ingest, ops and the API in one process, two gateways in others: the charger moves from one gateway
    to the other mid-session, and the second judges by the last plausible reading the first stored."""
    root = f"chargeops-test-{uuid.uuid4().hex[:10]}"
    bus = {"mqtt_url": f"mqtt://127.0.0.1:1883/{root}", "accept_unknown": True}
    backend = await start_runtime(pg_url, roles="ingest,ops,api", node_id=f"{root}-be", **bus)
    gateways = [
        await start_runtime(
            pg_url, roles="gateway", gateway_id=gw, node_id=f"{root}-{gw}", spool_dir=tmp_path / gw, **bus
        )
        for gw in ("gw-a", "gw-b")
    ]
    ports = [gw.gateway.port for gw in gateways]  # type: ignore[union-attr]
    t0 = minutes_ago(30)
    start = {"connectorId": 1, "idTag": "DRIVER", "meterStart": 10_000, "timestamp": ts(t0)}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{backend.http_port}", headers=ADMIN, timeout=30
    ) as api:
        assert (await api.put("/api/id-tokens/DRIVER", json={"status": "Accepted"})).status_code == 201
        async with raw_charger(ports[0], "MPQ") as cp:
            await boot16(cp, "RawQ")
            tx = int((await cp.result("StartTransaction", start))["transactionId"])
            await meter16(cp, tx, t0 + timedelta(minutes=5), 12_000)
            await meter16(cp, tx, t0 + timedelta(minutes=10), 120_000)  # beyond the 400 kW ceiling × 5 min
        async with raw_charger(ports[1], "MPQ") as cp:
            await boot16(cp, "RawQ")
            await meter16(cp, tx, t0 + timedelta(minutes=15), 11_000)  # backwards from 12,000
            stop = {"transactionId": tx, "meterStop": 15_000, "timestamp": ts(t0 + timedelta(minutes=25))}
            await cp.result("StopTransaction", stop)

        async def billed_and_ticketed() -> bool:
            done = (await api.get(f"/api/transactions/MPQ/{tx}")).json()
            tickets = (await api.get("/api/tickets", params={"charger_id": "MPQ"})).json()["items"]
            return (
                done.get("energy_wh") == 5_000
                and [(f["reason"], f["previous_wh"]) for f in done["meter_flags"]]
                == [(EXCEEDS_MAX_POWER, 12_000), (BACKWARDS, 12_000)]
                and [(t["rule"], t["occurrences"]) for t in tickets] == [("meter-implausible", 2)]
            )

        await until(billed_and_ticketed, 20, "energy billed from plausible readings, flags, one ticket")
