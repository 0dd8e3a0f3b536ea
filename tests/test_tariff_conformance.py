"""OCPP 2.0.1 block I (Tariff and Cost) as the OCA's CSMS test cases drive it: real WebSocket stations against
a whole chargeops process on Postgres, tariffs assigned per site and id-token group.

I01 the driver's tariff in idTokenInfo.personalMessage; I02 the running cost as TransactionEventResponse
`totalCost` (and CostUpdated at the interval); I03 the final cost in the Ended event's answer, stored on the
transaction; I06 the tariff of the driver's group replacing the site's during the session
(updatedPersonalMessage when the idTokenInfo does not show it). I04/I05 are the station's own fallback texts.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chargeops.commands import UPDATE_COST
from chargeops.db.models import Charger, IdToken, Transaction
from chargeops.db.tariff_models import ANY, TariffAssignment, TariffRow
from ocpp_gateway.commands import Unsupported, to_ocpp
from ocpp_gateway.versions import V16, V21, V201
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, raw_charger

SITE = "north"


async def _world(runtime: Any, *charger_ids: str) -> None:
    """A default tariff, one for the site `north` and one for the group FLEET-7 anywhere; two cards."""
    async with runtime.sessions() as s, s.begin():
        s.add_all(
            [
                TariffRow(id=1, name="standard", currency="EUR", per_kwh=D("0.40")),
                TariffRow(
                    id=2,
                    name="north",
                    currency="EUR",
                    per_kwh=D("0.30"),
                    per_minute_idle=D("0.05"),
                    session_fee=D("1.00"),
                ),
                TariffRow(
                    id=3, name="fleet", currency="EUR", per_kwh=D("0.25"), display_text="Fleet: 0.25 €/kWh"
                ),
            ]
        )
        await s.flush()
        s.add_all(
            [
                TariffAssignment(site=ANY, group_id=ANY, tariff_id=1),
                TariffAssignment(site=SITE, group_id=ANY, tariff_id=2),
                TariffAssignment(site=ANY, group_id="FLEET-7", tariff_id=3),
                IdToken(id_token="CARD-1", status="Accepted", group_id="FLEET-7"),
                IdToken(id_token="CARD-2", status="Accepted"),
                *(Charger(id=cid, site=SITE, security_profile=0) for cid in charger_ids),
            ]
        )


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _event(kind: str, seq_no: int, minutes: float, trigger: str, tx: str, **info: Any) -> dict[str, Any]:
    return {
        "eventType": kind,
        "timestamp": _at(minutes),
        "triggerReason": trigger,
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": tx, **info},
        "evse": {"id": 1, "connectorId": 1},
    }


def _meter(minutes: float, wh: float, context: str = "Sample.Periodic") -> list[dict[str, Any]]:
    return [{"timestamp": _at(minutes), "sampledValue": [{"value": wh, "context": context}]}]


async def _authorize(cp: RawCharger, token: str) -> dict[str, Any]:
    answer = await cp.result("Authorize", {"idToken": {"idToken": token, "type": "ISO14443"}})
    return dict(answer["idTokenInfo"])


async def test_tc_i_01_show_ev_driver_specific_tariff_information(
    start_runtime: StartRuntime, pg_url: str
) -> None:
    """The tariff a driver will charge under comes back with the authorization: the group's own text for a
    FLEET-7 card, the site's tariff in words for a card without a group; none for a refused card."""
    runtime = await start_runtime(pg_url, tariff_refresh=0)
    await _world(runtime, "TC-I01")
    async with raw_charger(runtime.gateway.port, "TC-I01", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        fleet = await _authorize(cp, "CARD-1")
        assert fleet["status"] == "Accepted"
        assert fleet["personalMessage"] == {"format": "UTF8", "content": "Fleet: 0.25 €/kWh"}
        plain = await _authorize(cp, "CARD-2")
        assert plain["personalMessage"]["content"] == "0.3 EUR/kWh, 0.05 EUR/min idle, 1.00 EUR per session"
        assert "personalMessage" not in await _authorize(cp, "NOBODY")  # Invalid: no tariff to show
        started = _event("Started", 0, 0, "Authorized", "TX-I01", chargingState="EVConnected")
        started["idToken"] = {"idToken": "CARD-1", "type": "ISO14443"}
        answer = await cp.result("TransactionEvent", started)
        assert answer["idTokenInfo"]["personalMessage"]["content"] == "Fleet: 0.25 €/kWh"
        assert "totalCost" not in answer and "updatedPersonalMessage" not in answer


async def test_tc_i_02_running_total_cost_in_the_transaction_event_answer(
    start_runtime: StartRuntime, pg_url: str
) -> None:
    """I02.FR.01 by TransactionEventResponse: each Updated event is answered with the cost so far under the
    site tariff (0.30 EUR/kWh, 0.05 EUR/min idle, 1.00 EUR per session): energy since the Transaction.Begin
    reading, idle minutes while the station says it is not charging."""
    runtime = await start_runtime(pg_url, tariff_refresh=0, cost_update_interval=0)
    await _world(runtime, "TC-I02")
    async with raw_charger(runtime.gateway.port, "TC-I02", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        started = _event("Started", 0, 0, "Authorized", "TX-I02", chargingState="EVConnected")
        started["idToken"] = {"idToken": "CARD-2", "type": "ISO14443"}
        started["meterValue"] = _meter(0, 1000, "Transaction.Begin")
        await cp.result("TransactionEvent", started)
        charging = _event("Updated", 1, 2, "ChargingStateChanged", "TX-I02", chargingState="Charging")
        # 2 idle minutes (0.10) + the fee
        assert (await cp.result("TransactionEvent", charging))["totalCost"] == 1.10
        periodic = _event("Updated", 2, 12, "MeterValuePeriodic", "TX-I02", chargingState="Charging")
        periodic["meterValue"] = _meter(12, 4000)
        # 3 kWh (0.90) + 0.10 + 1.00
        assert (await cp.result("TransactionEvent", periodic))["totalCost"] == 2.00
        full = _event("Updated", 3, 14, "ChargingStateChanged", "TX-I02", chargingState="SuspendedEV")
        assert (await cp.result("TransactionEvent", full))["totalCost"] == 2.00
        later = _event("Updated", 4, 20, "MeterValuePeriodic", "TX-I02", chargingState="SuspendedEV")
        # 6 more idle minutes: 8 x 0.05 = 0.40
        assert (await cp.result("TransactionEvent", later))["totalCost"] == 2.30
        again = dict(later, offline=True)  # a copy of an event already stored: answered the same
        assert (await cp.result("TransactionEvent", again))["totalCost"] == 2.30


async def test_tc_i_03_final_total_cost_after_charging(start_runtime: StartRuntime, pg_url: str) -> None:
    """The port of TC_I_02_CSMS: the transaction is first heard of in an Updated event (CablePluggedIn)
    carrying the Transaction.Begin register (1000 Wh), authorized, charged, stopped; the Ended event (6000 Wh,
    EVDisconnected) must be answered with totalCost: 5 kWh at the group's 0.25 EUR = 1.25."""
    runtime = await start_runtime(pg_url, tariff_refresh=0, cost_update_interval=0)
    await _world(runtime, "TC-I03")
    async with raw_charger(runtime.gateway.port, "TC-I03", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        plugged = _event("Updated", 0, 0, "CablePluggedIn", "TX-I03", chargingState="EVConnected")
        plugged["meterValue"] = _meter(0, 1000, "Transaction.Begin")
        first = await cp.result("TransactionEvent", plugged)
        # priced by the site's tariff until a driver is known: shown as the updated personal message
        assert first["totalCost"] == 1.00
        assert first["updatedPersonalMessage"]["content"].startswith("0.3 EUR/kWh")
        authorized = _event("Updated", 1, 1, "Authorized", "TX-I03")
        authorized["idToken"] = {"idToken": "CARD-1", "type": "ISO14443"}
        answer = await cp.result("TransactionEvent", authorized)
        assert answer["idTokenInfo"]["personalMessage"]["content"] == "Fleet: 0.25 €/kWh"  # I06
        assert answer["totalCost"] == 0.00 and "updatedPersonalMessage" not in answer
        charging = _event("Updated", 2, 2, "ChargingStateChanged", "TX-I03", chargingState="Charging")
        await cp.result("TransactionEvent", charging)
        stop = _event("Updated", 3, 30, "StopAuthorized", "TX-I03", chargingState="EVConnected")
        stop["idToken"] = {"idToken": "CARD-1", "type": "ISO14443"}
        await cp.result("TransactionEvent", stop)
        ended = _event(
            "Ended",
            4,
            31,
            "EVCommunicationLost",
            "TX-I03",
            chargingState="Idle",
            stoppedReason="EVDisconnected",
        )
        ended["meterValue"] = _meter(31, 6000, "Transaction.End")
        final = await cp.result("TransactionEvent", ended)
        assert final["totalCost"] == 1.25
    async with runtime.sessions() as s:
        row = await s.scalar(select(Transaction).where(Transaction.transaction_id == "TX-I03"))
    assert row is not None and row.total_cost == D("1.25") and row.tariff is not None
    assert (row.tariff["id"], row.tariff["per_kwh"]) == (3, "0.250000")
    headers = {"Authorization": "Bearer test-admin-token"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers) as api:
        shown = (await api.get("/api/transactions/TC-I03/TX-I03")).json()
    assert (shown["energy_wh"], shown["cost"]["total"], shown["cost"]["final"]) == (5000.0, "1.25", True)


async def test_no_tariff_no_cost(start_runtime: StartRuntime, pg_url: str) -> None:
    """Without any tariff the answers are as before block I: no totalCost, no personal message."""
    runtime = await start_runtime(pg_url, tariff_refresh=0, accept_unknown=True)
    async with raw_charger(runtime.gateway.port, "TC-I-NONE", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        started = _event("Started", 0, 0, "Authorized", "TX-N", chargingState="Charging")
        started["idToken"] = {"idToken": "", "type": "NoAuthorization"}
        assert await cp.result("TransactionEvent", started) == {"idTokenInfo": {"status": "Accepted"}}
        ended = _event("Ended", 1, 5, "EVDeparted", "TX-N", stoppedReason="EVDisconnected")
        assert await cp.result("TransactionEvent", ended) == {}


async def _call(
    cp: RawCharger, action: str, payload: dict[str, Any], calls: list[list[Any]]
) -> dict[str, Any]:
    """A CALL's result; CALLs of the central system arriving meanwhile are answered {} and kept in `calls`."""
    await cp.ws.send(json.dumps([2, f"own-{len(calls)}-{action}", action, payload]))
    while True:
        frame = await cp.recv()
        if frame[0] == 2:
            calls.append(frame)
            await cp.ws.send(json.dumps([3, frame[1], {}]))
            continue
        assert frame[0] == 3, frame
        return dict(frame[2])


async def test_tc_i_02_cost_updated_at_the_interval(start_runtime: StartRuntime, pg_url: str) -> None:
    """I02.FR.01 by CostUpdatedRequest: at each `cost_update_interval` a running, time-priced session is
    told its cost when it changed, with its transactionId; a 1.6 station in a priced session is told nothing
    (1.6 has no such message), and an ended session nothing more."""
    runtime = await start_runtime(pg_url, tariff_refresh=0, cost_update_interval=0.3)
    await _world(runtime, "TC-I02-CU", "TC-I02-16")
    async with runtime.sessions() as s, s.begin():  # 60 EUR a minute charging: a cent every 10 ms
        (await s.get(TariffRow, 2)).per_minute_charging = D(60)  # type: ignore[union-attr]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with raw_charger(port, "TC-I02-CU", "ocpp2.0.1") as cp, raw_charger(port, "TC-I02-16") as old:
        await cp.boot()
        await old.boot()
        start16 = {"connectorId": 1, "idTag": "CARD-2", "meterStart": 0, "timestamp": now}
        assert "transactionId" in await old.result("StartTransaction", start16)
        calls: list[list[Any]] = []
        started = _event("Started", 0, 0, "Authorized", "TX-CU", chargingState="Charging")
        started["timestamp"] = now
        started["idToken"] = {"idToken": "CARD-2", "type": "ISO14443"}
        await _call(cp, "TransactionEvent", started, calls)
        while len(calls) < 2:
            calls.append(await cp.recv())
            await cp.ws.send(json.dumps([3, calls[-1][1], {}]))
        told = [c[3] for c in calls]
        assert [c[2] for c in calls] == ["CostUpdated", "CostUpdated"]
        assert [t["transactionId"] for t in told] == ["TX-CU", "TX-CU"]
        assert 1.0 < told[0]["totalCost"] < told[1]["totalCost"]  # the fee, then time on top
        ended = _event("Ended", 1, 0, "EVDeparted", "TX-CU", chargingState="Idle", stoppedReason="Local")
        ended["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        final = await _call(cp, "TransactionEvent", ended, calls)
        assert final["totalCost"] >= told[1]["totalCost"]
        await asyncio.sleep(0.5)  # a pass that read the session before it ended may still be telling it
        assert await _call(cp, "Heartbeat", {}, calls)
        told_before = len(calls)
        await asyncio.sleep(1.0)  # three more passes: nothing for an ended session
        assert await _call(cp, "Heartbeat", {}, calls) and len(calls) == told_before
        assert (await old.call("Heartbeat", {}))[0] == 3  # the 1.6 station's next frame is its own answer


async def test_1_6_sessions_are_priced_for_the_api_only(start_runtime: StartRuntime, pg_url: str) -> None:
    """OCPP 1.6 has no cost in its messages (the California Pricing DataTransfer is not spoken): its answers
    are as before, and the session's cost is in the API: 8 kWh at the FLEET-7 group's 0.25 EUR = 2.00."""
    runtime = await start_runtime(pg_url, tariff_refresh=0)
    await _world(runtime, "TC-I-16")
    async with raw_charger(runtime.gateway.port, "TC-I-16") as cp:  # type: ignore[union-attr]
        await cp.boot()
        start = {"connectorId": 1, "idTag": "CARD-1", "meterStart": 1000, "timestamp": _at(0)}
        started = await cp.result("StartTransaction", start)
        assert started == {"transactionId": started["transactionId"], "idTagInfo": started["idTagInfo"]}
        assert started["idTagInfo"] == {"status": "Accepted", "parentIdTag": "FLEET-7"}
        tx = started["transactionId"]
        stop = {"transactionId": tx, "idTag": "CARD-1", "meterStop": 9000, "timestamp": _at(40)}
        assert await cp.result("StopTransaction", stop) == {"idTagInfo": started["idTagInfo"]}
    headers = {"Authorization": "Bearer test-admin-token"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers) as api:
        cost = (await api.get(f"/api/transactions/TC-I-16/{tx}")).json()["cost"]
        listed = (await api.get("/api/transactions", params={"charger_id": "TC-I-16"})).json()["items"]
    assert (cost["tariff_name"], cost["energy"], cost["total"], cost["final"]) == (
        "fleet",
        "2.00",
        "2.00",
        True,
    )
    assert [t["cost"] for t in listed] == [cost]


def test_update_cost_is_cost_updated_on_2_x_and_nothing_on_1_6() -> None:
    """The neutral `chargeops.UpdateCost` ops sends (decimal text) is 2.x CostUpdated; 1.6 has no message."""
    told = {"transaction_id": "TX-1", "total_cost": "12.30"}
    for version in (V201, V21):
        assert to_ocpp(version, UPDATE_COST, told) == (
            "CostUpdated",
            {"totalCost": 12.3, "transactionId": "TX-1"},
        )
    with pytest.raises(Unsupported):
        to_ocpp(V16, UPDATE_COST, told)
    for bad in (
        {"transaction_id": "TX-1"},
        {**told, "total_cost": "lots"},
        {**told, "total_cost": "Infinity"},
    ):
        with pytest.raises(ValueError):
            to_ocpp(V201, UPDATE_COST, bad)


async def test_a_simulated_station_is_priced_through_the_api(
    start_runtime: StartRuntime, pg_url: str
) -> None:
    """The strict simulator (it checks every answer and call against the schemas) charging under a tariff
    created and assigned through the API: it is told its running cost by CostUpdated, and once it is
    unplugged the API shows the final cost of the energy it reported."""
    from firmware_stubs import EV, SimEnvironment, SimulatedCharger
    from tests.waiting import until

    runtime = await start_runtime(pg_url, tariff_refresh=0, cost_update_interval=0.5)
    headers = {"Authorization": "Bearer test-admin-token"}
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers, timeout=20)
    async with api:
        tariff = (
            await api.post("/api/tariffs", json={"name": "kWh", "currency": "EUR", "per_kwh": "0.40"})
        ).json()
        assert (await api.put("/api/tariff-assignments", json={"tariff_id": tariff["id"]})).status_code == 201
        assert (await api.put("/api/id-tokens/SIM-TAG", json={"status": "Accepted"})).status_code == 201
        r = await api.post("/api/chargers", json={"id": "SIM-I", "password": "sim-password-1234"})
        assert r.status_code == 201, r.text
        env = SimEnvironment(strict=True, time_scale=120.0, sample_interval=0.5, call_timeout=10.0)
        url = f"ws://127.0.0.1:{runtime.gateway.port}/ocpp"  # type: ignore[union-attr]
        cp = SimulatedCharger(
            "SIM-I", url, protocol="ocpp2.0.1", password="sim-password-1234", env=env, max_power_w=22_000.0
        )
        await cp.start()
        try:
            await cp.wait_until_accepted(10)
            await cp.plug_in(1, "SIM-TAG", ev=EV(capacity_wh=60_000.0, soc=20.0, max_power_w=11_000.0))
            await until(lambda: cp.transaction(1) is not None, what="a session")
            tx = cp.transaction(1)
            assert tx is not None
            await until(lambda: (tx.cost or 0) > 0, timeout=15, what="a CostUpdated with energy in it")
            await cp.unplug(1)
            tx_id = tx.local_id

            async def final() -> bool:
                r = await api.get(f"/api/transactions/SIM-I/{tx_id}")
                return r.status_code == 200 and bool((r.json()["cost"] or {}).get("final"))

            await until(final, timeout=15, what="the final cost")
        finally:
            await cp.stop()
        assert cp.schema_violations == []
        shown = (await api.get(f"/api/transactions/SIM-I/{tx_id}")).json()
    expected = D(str(shown["energy_wh"])) / 1000 * D("0.40")
    assert D(shown["cost"]["total"]) == expected.quantize(D("0.01"), rounding="ROUND_HALF_UP") > 0
