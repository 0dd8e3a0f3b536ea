"""Block B cases of the independent OCTT port (issue 11, tzi-OCTT) that exist there only as a sequence
diagram: TC_B_18 (GetReport with componentCriteria and componentVariable, OCPP 2.0.1 B08) and TC_B_42
(SetNetworkProfile accepted, B09). The OCTT's manual actions ("request the CSMS to ...") are the operator's
OCPP relay (`POST /api/chargers/{id}/ocpp/{action}`, the payload checked against the station's schema); a
real 2.0.1 station over wss:// against a whole chargeops process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import RawCharger, raw_charger
from tests.octt_support import connector, now, operator


@pytest.fixture
def start_runtime(start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, "wss", pki)


async def _booted(cp: RawCharger) -> None:
    assert (await cp.boot())["status"] == "Accepted"
    await connector(cp, "Available")


EVSE_AVAILABILITY = {
    "component": {"name": "EVSE", "evse": {"id": 1}},
    "variable": {"name": "AvailabilityState"},
}


async def test_tc_b_18_get_custom_report_by_component_criteria_and_variable(
    start_runtime: StartRuntime,
) -> None:
    """EVSE #1's AvailabilityState asked of every Problem component: EmptyResultSet reaches the operator
    and nothing more is awaited; then of every Available one: Accepted, and the station's NotifyReport for
    the request is answered."""
    runtime = await start_runtime(accept_unknown=True)
    async with raw_charger(runtime.gateway.port, "OCTT-BD18", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _booted(cp)
        path = "/api/chargers/OCTT-BD18/ocpp/GetReport"
        sent: list[dict[str, Any]] = []
        for request_id, criterion, status in (
            (181, "Problem", "EmptyResultSet"),
            (182, "Available", "Accepted"),
        ):
            body = {
                "requestId": request_id,
                "componentCriteria": [criterion],
                "componentVariable": [EVSE_AVAILABILITY],
            }
            r, (call,) = await operator(
                runtime, cp, "POST", path, [("GetReport", {"status": status})], json=body
            )
            assert r.status_code == 200 and r.json()["response"] == {"status": status}, r.text
            sent.append(call)
        report = {
            "requestId": 182,
            "generatedAt": now(),
            "seqNo": 0,
            "tbc": False,
            "reportData": [
                {
                    **EVSE_AVAILABILITY,
                    "variableAttribute": [{"type": "Actual", "value": "Available", "mutability": "ReadOnly"}],
                }
            ],
        }
        assert await cp.result("NotifyReport", report) == {}
    assert [c["componentCriteria"] for c in sent] == [["Problem"], ["Available"]]
    assert all(c["componentVariable"] == [EVSE_AVAILABILITY] for c in sent)


async def test_tc_b_42_set_network_connection_profile_accepted(start_runtime: StartRuntime) -> None:
    """SetNetworkProfile with the configured slot and connectionData (JSON, OCPP20, the CSMS's wss:// URL,
    security profile 2, message timeout, interface) goes out as given and the station's Accepted reaches the
    operator; the station, already on profile 2, reconnecting over TLS with its password is let in."""
    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    connection = {
        "ocppVersion": "OCPP20",
        "ocppTransport": "JSON",
        "ocppCsmsUrl": f"wss://127.0.0.1:{port}/ocpp/OCTT-BD42",
        "messageTimeout": 30,
        "securityProfile": 2,
        "ocppInterface": "Wired0",
    }
    body = {"configurationSlot": 1, "connectionData": connection}
    async with raw_charger(port, "OCTT-BD42", "ocpp2.0.1") as cp:
        await _booted(cp)
        r, (sent,) = await operator(
            runtime, cp, "POST", "/api/chargers/OCTT-BD42/ocpp/SetNetworkProfile",
            [("SetNetworkProfile", {"status": "Accepted"})], json=body,
        )  # fmt: skip
    assert r.status_code == 200 and r.json()["response"] == {"status": "Accepted"}, r.text
    assert sent == body
    async with raw_charger(port, "OCTT-BD42", "ocpp2.0.1") as cp:
        assert cp.ws.transport.get_extra_info("ssl_object") is not None
        await _booted(cp)
