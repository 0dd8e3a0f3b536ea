"""Block K cases of the independent OCTT port (issue 11, tzi-OCTT) that exist there only as a sequence
diagram: TC_K_30 (GetChargingProfiles of an EVSE > 0 by purpose) and TC_K_32 (by chargingProfileId), OCPP
2.0.1 K09. The operator's OCPP relay sends the request; a real 2.0.1 station over wss:// and ws:// answers
and reports (ReportChargingProfiles with the request's requestId), against a whole chargeops process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ops.runtime import Runtime
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import RawCharger, raw_charger
from tests.octt_support import connector, now, operator


@pytest.fixture(params=["ws", "wss"])
def start_runtime(request: pytest.FixtureRequest, start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, request.param, pki)


def _profile(pid: int, purpose: str) -> dict[str, Any]:
    schedule = {
        "id": pid,
        "startSchedule": now(),
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
    }
    return {
        "id": pid,
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [schedule],
    }


async def _booted(cp: RawCharger) -> None:
    assert (await cp.boot())["status"] == "Accepted"
    await connector(cp, "Available")


async def _get_and_report(
    runtime: Runtime, cp: RawCharger, charger_id: str, body: dict[str, Any], profile: dict[str, Any]
) -> dict[str, Any]:
    """GetChargingProfiles as the operator gives it: Accepted reaches the operator; the station's one
    ReportChargingProfiles (the request's requestId, EVSE 1) is answered. Returns the request sent."""
    relay = f"/api/chargers/{charger_id}/ocpp/GetChargingProfiles"
    r, (sent,) = await operator(
        runtime, cp, "POST", relay, [("GetChargingProfiles", {"status": "Accepted"})], json=body
    )
    assert r.status_code == 200 and r.json()["response"] == {"status": "Accepted"}, r.text
    report = {
        "requestId": sent["requestId"],
        "chargingLimitSource": "CSO",
        "evseId": 1,
        "tbc": False,
        "chargingProfile": [profile],
    }
    assert await cp.result("ReportChargingProfiles", report) == {}
    return sent


async def test_tc_k_30_get_charging_profiles_of_an_evse(start_runtime: StartRuntime) -> None:
    """evseId 1 (> 0), criterion chargingProfilePurpose TxDefaultProfile alone: no stackLevel, no
    chargingLimitSource, no chargingProfileId in the request."""
    runtime = await start_runtime(accept_unknown=True)
    async with raw_charger(runtime.gateway.port, "OCTT-KD30", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        body = {
            "requestId": 30,
            "evseId": 1,
            "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"},
        }
        sent = await _get_and_report(runtime, cp, "OCTT-KD30", body, _profile(300, "TxDefaultProfile"))
    assert sent == body


async def test_tc_k_32_get_charging_profiles_by_id(start_runtime: StartRuntime) -> None:
    """The operator first installs a TxDefaultProfile (Accepted), then asks for it by its
    chargingProfileId alone (no evseId, no purpose, stack level or source); the station reports it."""
    runtime = await start_runtime(accept_unknown=True)
    profile = _profile(320, "TxDefaultProfile")
    async with raw_charger(runtime.gateway.port, "OCTT-KD32", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        r, (installed,) = await operator(
            runtime, cp, "POST", "/api/chargers/OCTT-KD32/ocpp/SetChargingProfile",
            [("SetChargingProfile", {"status": "Accepted"})], json={"evseId": 1, "chargingProfile": profile},
        )  # fmt: skip
        assert r.json()["response"] == {"status": "Accepted"}, r.text
        body = {
            "requestId": 32,
            "chargingProfile": {"chargingProfileId": [installed["chargingProfile"]["id"]]},
        }
        sent = await _get_and_report(runtime, cp, "OCTT-KD32", body, profile)
    assert "evseId" not in sent and sent["chargingProfile"] == {"chargingProfileId": [320]}
