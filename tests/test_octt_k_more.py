"""Block K cases of an independent port of the OCTT's CSMS tests (issue 11, tzi-OCTT) that had never run
against chargeops, written from what the port's station expects of each CSMS call (and OCPP 2.0.1 K01, K05,
K09, F01): a real 2.0.1 station over WebSocket against a whole chargeops process, the OCTT's manual actions
("request the CSMS to ...") done through the operator API's OCPP relay (`POST /api/chargers/{id}/ocpp/
{action}`), which checks the operator's payload against the station's schema before sending it."""

from __future__ import annotations

import json
from typing import Any

from chargeops.db.models import IdToken
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, raw_charger
from tests.octt_support import api, connector, now, operator, tx_event
from tests.waiting import until

TOKEN = {"idToken": "OCTT-K-TOKEN", "type": "ISO14443"}


def _profile(
    pid: int, purpose: str, limit: float, *, kind: str = "Absolute", tx: str | None = None
) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "id": pid,
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
    }
    if kind != "Relative":
        schedule["startSchedule"] = now()
    profile: dict[str, Any] = {
        "id": pid,
        "stackLevel": 1,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
    }
    if tx is not None:
        profile["transactionId"] = tx
    return profile


async def _booted(cp: RawCharger) -> None:
    assert (await cp.boot())["status"] == "Accepted"
    await connector(cp, "Available")


async def _energy_transfer_started(cp: RawCharger, tx: str) -> None:
    """The OCTT's reusable states Authorized and EnergyTransferStarted."""
    assert (await cp.result("Authorize", {"idToken": TOKEN}))["idTokenInfo"]["status"] == "Accepted"
    started = await cp.result("TransactionEvent", tx_event("Started", "Authorized", 0, tx, id_token=TOKEN))
    assert started["idTokenInfo"]["status"] == "Accepted"
    await connector(cp, "Occupied")
    await cp.result(
        "TransactionEvent", tx_event("Updated", "CablePluggedIn", 1, tx, chargingState="EVConnected")
    )
    await cp.result(
        "TransactionEvent", tx_event("Updated", "ChargingStateChanged", 2, tx, chargingState="Charging")
    )


async def _runtime(start_runtime: StartRuntime) -> Runtime:
    runtime = await start_runtime(accept_unknown=True)
    async with runtime.sessions() as s, s.begin():
        s.add(IdToken(id_token=TOKEN["idToken"], type=TOKEN["type"], status="Accepted"))
    return runtime


def _relay(charger_id: str, action: str) -> str:
    return f"/api/chargers/{charger_id}/ocpp/{action}"


async def test_tc_k_02_tx_profile_without_a_transaction_is_sent_and_the_rejection_told(
    start_runtime: StartRuntime,
) -> None:
    """SetChargingProfile TxProfile on EVSE 1, Relative (no startSchedule), one period of 7000 W from 0, no
    transaction on the EVSE: sent as given, and the station's Rejected reaches the operator."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K02", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        body = {"evseId": 1, "chargingProfile": _profile(21, "TxProfile", 7000.0, kind="Relative")}
        r, (sent,) = await operator(
            runtime, cp, "POST", _relay("OCTT-K02", "SetChargingProfile"),
            [("SetChargingProfile", {"status": "Rejected"})], json=body,
        )  # fmt: skip
    assert r.status_code == 200 and r.json()["response"] == {"status": "Rejected"}, r.text
    profile = sent["chargingProfile"]
    assert sent["evseId"] == 1 and profile["chargingProfilePurpose"] == "TxProfile"
    assert (
        profile["chargingProfileKind"] == "Relative" and "startSchedule" not in profile["chargingSchedule"][0]
    )
    assert profile["chargingSchedule"][0]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 7000.0}]


async def test_tc_k_04_a_profile_is_replaced_by_one_with_the_same_id(start_runtime: StartRuntime) -> None:
    """Two SetChargingProfile with the same id, purpose, kind and stack level (TxDefaultProfile, Absolute,
    startSchedule given), one period each: 8000 W then 6000 W, both Accepted."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K04", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        sent = []
        for limit in (8000.0, 6000.0):
            body = {"evseId": 0, "chargingProfile": _profile(40, "TxDefaultProfile", limit)}
            r, calls = await operator(
                runtime, cp, "POST", _relay("OCTT-K04", "SetChargingProfile"),
                [("SetChargingProfile", {"status": "Accepted"})], json=body,
            )  # fmt: skip
            assert r.json()["response"] == {"status": "Accepted"}, r.text
            sent.append(calls[0]["chargingProfile"])
    first, second = sent
    assert first["id"] == second["id"] and first["stackLevel"] == second["stackLevel"]
    assert first["chargingProfileKind"] == second["chargingProfileKind"] == "Absolute"
    assert "recurrencyKind" not in first and all("startSchedule" in p["chargingSchedule"][0] for p in sent)
    assert [p["chargingSchedule"][0]["chargingSchedulePeriod"] for p in sent] == [
        [{"startPeriod": 0, "limit": 8000.0}],
        [{"startPeriod": 0, "limit": 6000.0}],
    ]


async def _get_profiles(
    runtime: Runtime, cp: RawCharger, charger_id: str, body: dict[str, Any], reports: list[int]
) -> dict[str, Any]:
    """GetChargingProfiles as the operator gives it, Accepted; then the station's ReportChargingProfiles,
    one per EVSE in `reports` (tbc on all but the last), each answered by the CSMS. Returns the request."""
    r, (sent,) = await operator(
        runtime, cp, "POST", _relay(charger_id, "GetChargingProfiles"),
        [("GetChargingProfiles", {"status": "Accepted"})], json=body,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["response"] == {"status": "Accepted"}, r.text
    for n, evse in enumerate(reports):
        report = {
            "requestId": sent["requestId"],
            "chargingLimitSource": "CSO",
            "evseId": evse,
            "tbc": n < len(reports) - 1,
            "chargingProfile": [_profile(1, "TxDefaultProfile", 6000.0)],
        }
        assert await cp.result("ReportChargingProfiles", report) == {}
    return sent


async def test_tc_k_31_get_charging_profiles_of_every_evse(start_runtime: StartRuntime) -> None:
    """GetChargingProfilesRequest without evseId, criterion chargingProfilePurpose only; the station reports
    EVSE by EVSE (tbc true, then false) and each report is answered."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K31", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        body = {"requestId": 31, "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"}}
        sent = await _get_profiles(runtime, cp, "OCTT-K31", body, [1, 2])
    assert "evseId" not in sent and sent["chargingProfile"] == {"chargingProfilePurpose": "TxDefaultProfile"}


async def test_tc_k_34_get_charging_profiles_of_an_evse_by_limit_source(start_runtime: StartRuntime) -> None:
    """evseId 1 and criterion chargingLimitSource alone (no stack level, purpose or ids)."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K34", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        body = {"requestId": 34, "evseId": 1, "chargingProfile": {"chargingLimitSource": ["CSO"]}}
        sent = await _get_profiles(runtime, cp, "OCTT-K34", body, [1])
    assert sent["evseId"] == 1 and sent["chargingProfile"] == {"chargingLimitSource": ["CSO"]}


async def test_tc_k_35_get_charging_profiles_of_an_evse_by_purpose(start_runtime: StartRuntime) -> None:
    """evseId 1 and criterion chargingProfilePurpose alone."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K35", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        body = {
            "requestId": 35,
            "evseId": 1,
            "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"},
        }
        sent = await _get_profiles(runtime, cp, "OCTT-K35", body, [1])
    assert sent["evseId"] == 1 and sent["chargingProfile"] == {"chargingProfilePurpose": "TxDefaultProfile"}


async def test_tc_k_37_remote_start_with_a_tx_profile(start_runtime: StartRuntime) -> None:
    """RequestStartTransaction with the valid idToken, evseId 1 and a TxProfile without transactionId
    (F01.FR.09 / FR.11), Relative without startSchedule; the station's TransactionEvent Started, RemoteStart,
    with the remoteStartId is answered and the session stored with the operator's token."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K37", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        body = {
            "idToken": TOKEN,
            "evseId": 1,
            "remoteStartId": 37,
            "chargingProfile": _profile(37, "TxProfile", 11000.0, kind="Relative"),
        }
        r, (sent,) = await operator(
            runtime, cp, "POST", _relay("OCTT-K37", "RequestStartTransaction"),
            [("RequestStartTransaction", {"status": "Accepted"})], json=body,
        )  # fmt: skip
        assert r.json()["response"] == {"status": "Accepted"}, r.text
        assert sent["idToken"] == TOKEN and sent["evseId"] == 1
        profile = sent["chargingProfile"]
        assert profile["chargingProfilePurpose"] == "TxProfile" and "transactionId" not in profile
        assert (
            profile["chargingProfileKind"] == "Relative"
            and "startSchedule" not in profile["chargingSchedule"][0]
        )
        started = tx_event("Started", "RemoteStart", 0, "K37-TX", remoteStartId=sent["remoteStartId"])
        assert await cp.result("TransactionEvent", started) == {}

    async def stored() -> bool:
        async with api(runtime) as client:
            return (await client.get("/api/transactions/OCTT-K37/K37-TX")).status_code == 200

    await until(stored, what="K37-TX stored")


async def test_tc_k_60_tx_profile_for_the_running_transaction(start_runtime: StartRuntime) -> None:
    """EnergyTransferStarted, then SetChargingProfile TxProfile on EVSE 1 with the station's transactionId
    (K01.FR.03), Absolute with startSchedule, first period at 0 (K01.FR.31): Accepted."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K60", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        await _energy_transfer_started(cp, "K60-TX")
        body = {"evseId": 1, "chargingProfile": _profile(60, "TxProfile", 7400.0, tx="K60-TX")}
        r, (sent,) = await operator(
            runtime, cp, "POST", _relay("OCTT-K60", "SetChargingProfile"),
            [("SetChargingProfile", {"status": "Accepted"})], json=body,
        )  # fmt: skip
    assert r.json()["response"] == {"status": "Accepted"}, r.text
    profile = sent["chargingProfile"]
    assert sent["evseId"] == 1 and profile["transactionId"] == "K60-TX"
    assert (
        profile["chargingProfilePurpose"] == "TxProfile" and "startSchedule" in profile["chargingSchedule"][0]
    )
    assert profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["startPeriod"] == 0


async def test_tc_k_70_several_profiles_at_once(start_runtime: StartRuntime) -> None:
    """During EnergyTransferStarted: a TxDefaultProfile (Absolute, startSchedule) and then a
    ChargingStationMaxProfile (Absolute, startSchedule, another id) on EVSE 0, both Accepted."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-K70", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        await _energy_transfer_started(cp, "K70-TX")
        sent = []
        for pid, purpose, limit in (
            (70, "TxDefaultProfile", 7000.0),
            (71, "ChargingStationMaxProfile", 22000.0),
        ):
            body = {"evseId": 0, "chargingProfile": _profile(pid, purpose, limit)}
            r, calls = await operator(
                runtime, cp, "POST", _relay("OCTT-K70", "SetChargingProfile"),
                [("SetChargingProfile", {"status": "Accepted"})], json=body,
            )  # fmt: skip
            assert r.json()["response"] == {"status": "Accepted"}, r.text
            sent.append(calls[0]["chargingProfile"])
    assert [p["chargingProfilePurpose"] for p in sent] == ["TxDefaultProfile", "ChargingStationMaxProfile"]
    assert sent[0]["id"] != sent[1]["id"] and all(p["chargingProfileKind"] == "Absolute" for p in sent)
    assert all(p["chargingSchedule"][0]["chargingSchedulePeriod"][0]["startPeriod"] == 0 for p in sent)


async def test_relay_refuses_a_profile_the_schema_forbids(start_runtime: StartRuntime) -> None:
    """What keeps the relayed K cases honest: a SetChargingProfile that breaks the 2.0.1 schema (no
    chargingSchedule) is refused with 422 before anything reaches the station."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-KBAD", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        bad = _profile(9, "TxDefaultProfile", 1.0)
        del bad["chargingSchedule"]
        async with api(runtime) as client:
            r = await client.post(
                _relay("OCTT-KBAD", "SetChargingProfile"), json={"evseId": 0, "chargingProfile": bad}
            )
        assert r.status_code == 422 and r.json()["error"] == "invalid_payload", r.text
        assert json.loads(r.text)["ocpp_error"]
