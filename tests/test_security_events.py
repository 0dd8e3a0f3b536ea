"""Critical security events over a real charger connection, on Postgres (issue 12): a cleared security log
opens a ticket as tamper does; a boot, a clock sync, the reset and the firmware update the central system
asked for, and a non-critical event open none."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from ocpp_gateway.session import ChargerSession
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, raw_charger
from tests.waiting import until

T = "2026-11-25T10:00:00Z"
FIRMWARE = "http://127.0.0.1/firmware.bin"
# What the central system asks, and what the charger answers, per version.
REQUESTS: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "ocpp1.6": [
        ("Reset", {"type": "Soft"}, {"status": "Accepted"}),
        ("UpdateFirmware", {"location": FIRMWARE, "retrieveDate": T}, {}),
    ],
    "ocpp2.0.1": [
        ("Reset", {"type": "Immediate"}, {"status": "Accepted"}),
        (
            "UpdateFirmware",
            {"requestId": 7, "firmware": {"location": FIRMWARE, "retrieveDateTime": T}},
            {"status": "Accepted"},
        ),
    ],
}


async def agree(
    cp: RawCharger, session: ChargerSession, action: str, payload: dict[str, Any], answer: Any
) -> None:
    """The central system sends `action`; the charger answers `answer`."""
    sent = asyncio.create_task(session.execute(action, payload, timeout=5))
    call = await cp.recv()
    assert call[2] == action, call
    await cp.ws.send(json.dumps([3, call[1], answer]))
    assert (await sent).outcome == "result"


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_a_cleared_security_log_opens_a_ticket_routine_events_do_not(
    start_runtime: StartRuntime, pg_url: str, protocol: str
) -> None:
    runtime = await start_runtime(pg_url, accept_unknown=True, allow_private_urls=True, ops_interval=3600)
    gateway = runtime.gateway
    assert gateway is not None
    cp_id = f"SEC-{protocol[4:]}"
    async with raw_charger(gateway.port, cp_id, protocol) as cp:
        await cp.boot()
        for action, payload, answer in REQUESTS[protocol]:
            await agree(cp, gateway.sessions[cp_id], action, payload, answer)
        for kind in (
            "StartupOfTheDevice",  # critical, every boot
            "SettingSystemTime",  # critical, a clock sync
            "ResetOrReboot",  # critical, the Reset it accepted
            "FirmwareUpdated",  # critical, the update it accepted
            "InvalidMessages",  # not critical
            "SecurityLogWasCleared",  # critical: evidence gone
        ):
            event = {"type": kind, "timestamp": T, "techInfo": "test"}
            assert await cp.result("SecurityEventNotification", event) == {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}",
        headers={"Authorization": "Bearer test-admin-token"},
    ) as api:

        async def charger_tickets() -> list[dict[str, Any]]:
            r = await api.get("/api/tickets", params={"charger_id": cp_id})
            assert r.status_code == 200, r.text
            return list(r.json()["items"])

        async def ticketed() -> bool:
            return bool(await charger_tickets())

        # Ops takes the events in order: once the last one's ticket is there, all were looked at.
        await until(ticketed, what="a ticket for the cleared security log")
        [ticket] = await charger_tickets()
    assert (ticket["rule"], ticket["priority"], ticket["status"]) == ("security", "P1", "open")
    assert ticket["fault"]["code"] == "SecurityLogWasCleared" and ticket["occurrences"] == 1
