"""The OCA's OCPP 1.6 Compliancy Test Tool cases with the central system under test (TC_0xx_CSMS, issue 11),
as an independent tool runs them: the test plays the charge point over a real 1.6J WebSocket against a whole
chargeops process, the operator's part (valid / expired / blocked idTags, remote start and stop) goes through
the HTTP API, and every answer is checked against the 1.6 schemas (tests/ocpp_client.py). After each case the
operator's view (GET /api/chargers, GET /api/transactions) shows what the charge point reported."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger
from tests.waiting import until

HEADERS = {"Authorization": "Bearer test-admin-token"}
VALID, EXPIRED, BLOCKED = "OCTT-VALID", "OCTT-EXPIRED", "OCTT-BLOCKED"
Payload = dict[str, Any]


@dataclass
class Octt:
    cp: RawCharger
    api: httpx.AsyncClient
    cid: str
    port: int

    @asynccontextmanager
    async def offline_then_back(self) -> AsyncIterator[None]:
        """Connectivity lost, then restored: the charge point's WebSocket closes and a new one opens,
        with no BootNotification (it did not reboot); the test then sends what it queued meanwhile."""
        await self.cp.ws.close()
        async with raw_charger(self.port, self.cid) as cp:
            self.cp = cp
            yield

    async def status(self, status: str, connector: int = 1, error: str = "NoError") -> None:
        sent = {"connectorId": connector, "errorCode": error, "status": status}
        assert await self.cp.result("StatusNotification", sent) == {}

    async def authorize(self, tag: str) -> str:
        return str((await self.cp.result("Authorize", {"idTag": tag}))["idTagInfo"]["status"])

    async def start(self, tag: str, at: str = "2026-11-25T10:00:00Z", meter: int = 1_000) -> Payload:
        sent = {"connectorId": 1, "idTag": tag, "meterStart": meter, "timestamp": at}
        return await self.cp.result("StartTransaction", sent)

    async def stop(
        self, tx: int, reason: str, at: str = "2026-11-25T10:30:00Z", meter: int = 4_000, tag: str = VALID
    ) -> Payload:
        sent = {"transactionId": tx, "meterStop": meter, "timestamp": at, "reason": reason, "idTag": tag}
        return await self.cp.result("StopTransaction", sent)

    async def operator(self, action: str, payload: Payload, answer: Payload) -> Payload:
        """The operator sends `action` through the API; the charge point gets it as a CALL (checked against
        the 1.6 request schema), answers `answer`; the API returns that answer. Returns the CALL's payload."""
        sent = asyncio.create_task(self.api.post(f"/api/chargers/{self.cid}/ocpp/{action}", json=payload))
        call = json.loads(await asyncio.wait_for(self.cp.ws.recv(), 10))
        assert call[0] == 2 and call[2] == action, call
        assert_strictly_valid("ocpp1.6", action, call[3], response=False)
        await self.cp.ws.send(json.dumps([3, call[1], answer]))
        r = await sent
        assert r.status_code == 200, r.text
        assert r.json()["response"] == answer
        return dict(call[3])

    async def connector(self, connector: int = 1) -> Payload:
        charger = (await self.api.get(f"/api/chargers/{self.cid}")).json()
        return next(c for c in charger["connectors"] if c["connector_id"] == connector)

    async def connector_is(self, status: str, error: str | None = None) -> None:
        async def reached() -> bool:
            c = await self.connector()
            return bool(c["status"] == status and c["error_code"] == error)

        await until(reached, what=f"connector 1 {status} in the API")

    async def transactions(self) -> list[Payload]:
        r = await self.api.get("/api/transactions", params={"charger_id": self.cid})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def ended(self, tx: int) -> Payload:
        """The transaction as the API shows it once stored as ended."""

        async def stored() -> bool:
            return any(t["transaction_id"] == str(tx) and not t["active"] for t in await self.transactions())

        await until(stored, what=f"transaction {tx} ended in the API")
        return next(t for t in await self.transactions() if t["transaction_id"] == str(tx))

    async def active(self, tx: int) -> Payload:
        async def stored() -> bool:
            return any(t["transaction_id"] == str(tx) and t["active"] for t in await self.transactions())

        await until(stored, what=f"transaction {tx} active in the API")
        return next(t for t in await self.transactions() if t["transaction_id"] == str(tx))


@asynccontextmanager
async def octt(start_runtime: StartRuntime, cid: str, boot: bool = True) -> AsyncIterator[Octt]:
    """A chargeops process with the tool's idTags on the authorization list (set through the API), and the
    tool connected as charge point `cid` (booted unless `boot` is false)."""
    runtime = await start_runtime(accept_unknown=True)
    base = f"http://127.0.0.1:{runtime.http_port}"
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=20) as api:
        for tag, body in (
            (VALID, {"status": "Accepted"}),
            (EXPIRED, {"status": "Accepted", "expiry": "2020-01-01T00:00:00Z"}),
            (BLOCKED, {"status": "Blocked"}),
        ):
            r = await api.put(f"/api/id-tokens/{tag}", json=body)
            assert r.status_code in (200, 201), r.text
        async with raw_charger(runtime.gateway.port, cid) as cp:  # type: ignore[union-attr]
            if boot:
                assert (await cp.boot())["status"] == "Accepted"
            yield Octt(cp, api, cid, runtime.gateway.port)  # type: ignore[union-attr]


async def test_tc_001_cold_boot_charge_point(start_runtime: StartRuntime) -> None:
    """BootNotification Accepted (with a heartbeat interval and the current time), a StatusNotification per
    connector and for connectorId 0, a Heartbeat answered with the time."""
    async with octt(start_runtime, "OCTT-001", boot=False) as t:
        booted = await t.cp.boot()
        assert booted["status"] == "Accepted" and booted["interval"] > 0
        await t.status("Available", connector=0)
        await t.status("Available")
        assert (await t.cp.result("Heartbeat", {}))["currentTime"]
        await t.connector_is("Available")
        assert (await t.api.get("/api/chargers/OCTT-001")).json()["connected"] is True


async def test_tc_003_regular_charging_session_plugin_first(start_runtime: StartRuntime) -> None:
    async with octt(start_runtime, "OCTT-003") as t:
        await t.status("Preparing")
        assert await t.authorize(VALID) == "Accepted"
        started = await t.start(VALID)
        assert started["idTagInfo"]["status"] == "Accepted"
        await t.status("Charging")
        row = await t.active(started["transactionId"])
        assert (row["id_token"], row["connector_id"], row["meter_start_wh"]) == (VALID, 1, 1_000)
        await t.connector_is("Charging")


async def test_tc_004_1_regular_charging_session_identification_first(start_runtime: StartRuntime) -> None:
    async with octt(start_runtime, "OCTT-0041") as t:
        assert await t.authorize(VALID) == "Accepted"
        await t.status("Preparing")
        started = await t.start(VALID)
        assert started["idTagInfo"]["status"] == "Accepted"
        await t.status("Charging")
        await t.active(started["transactionId"])


async def test_tc_004_2_identification_first_connection_timeout(start_runtime: StartRuntime) -> None:
    """Authorized, Preparing, then the cable never comes: back to Available, no transaction."""
    async with octt(start_runtime, "OCTT-0042") as t:
        assert await t.authorize(VALID) == "Accepted"
        await t.status("Preparing")
        await t.connector_is("Preparing")
        await t.status("Available")
        await t.connector_is("Available")
        assert await t.transactions() == []


async def test_tc_005_1_ev_side_disconnected(start_runtime: StartRuntime) -> None:
    """Charging, SuspendedEV, the EV unplugs: StopTransaction EVDisconnected, Finishing, Available."""
    async with octt(start_runtime, "OCTT-0051") as t:
        await t.status("Preparing")
        started = await t.start(VALID)
        assert started["idTagInfo"]["status"] == "Accepted"
        await t.status("Charging")
        await t.status("SuspendedEV")
        stopped = await t.stop(started["transactionId"], "EVDisconnected")
        assert stopped["idTagInfo"]["status"] == "Accepted"
        await t.status("Finishing")
        await t.status("Available")
        row = await t.ended(started["transactionId"])
        assert (row["stop_reason"], row["meter_stop_wh"]) == ("EVDisconnected", 4_000)
        assert row["energy_wh"] == 3_000
        await t.connector_is("Available")


async def test_tc_007_regular_start_charging_session_cached_id(start_runtime: StartRuntime) -> None:
    """The charge point found the idTag in its cache: no Authorize, StartTransaction straight away."""
    async with octt(start_runtime, "OCTT-007") as t:
        await t.status("Preparing")
        started = await t.start(VALID)
        assert started["idTagInfo"]["status"] == "Accepted"
        await t.status("Charging")
        await t.active(started["transactionId"])


async def remote_start(t: Octt, connector: int | None = 1, tag: str = VALID) -> None:
    """The operator's RemoteStartTransaction through the API, accepted by the charge point."""
    body: Payload = {"idTag": tag, **({"connectorId": connector} if connector else {})}
    assert await t.operator("RemoteStartTransaction", body, {"status": "Accepted"}) == body


async def test_tc_010_remote_start_cable_plugged_in_first(start_runtime: StartRuntime) -> None:
    async with octt(start_runtime, "OCTT-010") as t:
        await t.status("Preparing")
        await remote_start(t)
        assert await t.authorize(VALID) == "Accepted"
        started = await t.start(VALID)
        assert started["idTagInfo"]["status"] == "Accepted"
        await t.status("Charging")
        await t.active(started["transactionId"])


async def test_tc_011_1_remote_start_first(start_runtime: StartRuntime) -> None:
    """Remote start first (no connectorId): as the tool runs it with the configured valid idTag, and with an
    app token that is not on the list: the operator sent it, so Authorize and StartTransaction accept it."""
    async with octt(start_runtime, "OCTT-0111") as t:
        for tag in (VALID, "APP-REMOTE-1"):
            await remote_start(t, connector=None, tag=tag)
            assert await t.authorize(tag) == "Accepted"
            await t.status("Preparing")
            started = await t.start(tag)
            assert started["idTagInfo"]["status"] == "Accepted"
            await t.status("Charging")
            assert (await t.active(started["transactionId"]))["id_token"] == tag
            await t.stop(started["transactionId"], "Local", tag=tag)
            await t.status("Available")
        assert await t.authorize("APP-REMOTE-2") == "Invalid"  # one the operator did not send


async def test_tc_011_2_remote_start_time_out(start_runtime: StartRuntime) -> None:
    """Remote start accepted, authorized, Preparing; the cable never comes: Available, no transaction."""
    async with octt(start_runtime, "OCTT-0112") as t:
        await remote_start(t)
        assert await t.authorize(VALID) == "Accepted"
        await t.status("Preparing")
        await t.status("Available")
        await t.connector_is("Available")
        assert await t.transactions() == []


async def test_tc_012_remote_stop_charging_session(start_runtime: StartRuntime) -> None:
    async with octt(start_runtime, "OCTT-012") as t:
        await t.status("Preparing")
        tx = (await t.start(VALID))["transactionId"]
        await t.status("Charging")
        await t.active(tx)
        body = {"transactionId": tx}
        assert await t.operator("RemoteStopTransaction", body, {"status": "Accepted"}) == body
        await t.stop(tx, "Remote")
        await t.status("Finishing")
        await t.status("Available")
        assert (await t.ended(tx))["stop_reason"] == "Remote"


async def test_tc_023_1_2_3_authorize_invalid_expired_blocked(start_runtime: StartRuntime) -> None:
    """TC_023_1 an unknown idTag → Invalid; TC_023_2 one the operator set to expire in the past →
    Expired; TC_023_3 one the operator blocked → Blocked. StartTransaction answers the same."""
    async with octt(start_runtime, "OCTT-023") as t:
        for tag, status in (("NotARealID", "Invalid"), (EXPIRED, "Expired"), (BLOCKED, "Blocked")):
            assert await t.authorize(tag) == status, tag
        # the operator lifts the block: the next Authorize sees it
        assert (await t.api.put(f"/api/id-tokens/{BLOCKED}", json={"status": "Accepted"})).status_code == 200
        assert await t.authorize(BLOCKED) == "Accepted"


async def test_tc_024_start_charging_session_lock_failure(start_runtime: StartRuntime) -> None:
    """The connector cannot lock: Faulted with ConnectorLockFailure, and the operator sees that."""
    async with octt(start_runtime, "OCTT-024") as t:
        await t.status("Preparing")
        sent = {
            "connectorId": 1,
            "errorCode": "ConnectorLockFailure",
            "status": "Faulted",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),  # after Preparing's arrival
            "info": "lock motor",
            "vendorErrorCode": "E-17",
        }
        assert await t.cp.result("StatusNotification", sent) == {}
        await t.connector_is("Faulted", "ConnectorLockFailure")
        assert (await t.connector())["vendor_error_code"] == "E-17"
        assert (await t.api.get("/api/chargers/OCTT-024")).json()["status"] == "Faulted"


async def test_tc_032_1_power_failure_boot_stops_transactions(start_runtime: StartRuntime) -> None:
    """Charging; the power fails and comes back: a new connection, BootNotification Accepted, a
    StatusNotification for connectorId 0 and per connector (Finishing where the transaction ran), then the
    StopTransaction PowerLoss it queued: the transaction ends with the charge point's reading and reason."""
    async with octt(start_runtime, "OCTT-0321") as t:
        await t.status("Preparing")
        tx = (await t.start(VALID))["transactionId"]
        await t.status("Charging")
        await t.active(tx)
        await t.cp.ws.close()
        async with raw_charger(t.port, t.cid) as t.cp:
            assert (await t.cp.boot())["status"] == "Accepted"
            await t.status("Available", connector=0)
            await t.status("Finishing")
            assert (await t.stop(tx, "PowerLoss", meter=2_500))["idTagInfo"]["status"] == "Accepted"
            row = await t.ended(tx)
            assert (row["stop_reason"], row["meter_stop_wh"], row["energy_wh"]) == ("PowerLoss", 2_500, 1_500)
            await t.connector_is("Finishing")


async def test_tc_037_1_offline_start_transaction_valid_id_tag(start_runtime: StartRuntime) -> None:
    """The transaction started while the charge point was offline: after reconnecting (no boot) its queued
    StartTransaction arrives, its timestamp in the past; Accepted, stored with the charge point's time."""
    async with octt(start_runtime, "OCTT-0371") as t:
        await t.status("Available")
        async with t.offline_then_back():
            started = await t.start(VALID, at="2026-11-25T08:00:00Z")
            assert started["idTagInfo"]["status"] == "Accepted"
            await t.status("Charging")
            row = await t.active(started["transactionId"])
            assert row["started_at"] == "2026-11-25T08:00:00Z"
            await t.connector_is("Charging")


async def test_tc_037_3_offline_start_transaction_invalid_id_tag(start_runtime: StartRuntime) -> None:
    """Started offline with an idTag the central system does not know: the queued StartTransaction is
    answered Invalid (with a transaction id, as 1.6 requires); the charge point stops it, DeAuthorized, and
    the central system stores it ended."""
    async with octt(start_runtime, "OCTT-0373") as t:
        async with t.offline_then_back():
            started = await t.start("NotAValidID", at="2026-11-25T08:00:00Z")
            assert started["idTagInfo"]["status"] == "Invalid"
            await t.status("Charging")
            tx = started["transactionId"]
            at = "2026-11-25T08:00:05Z"
            stopped = await t.stop(tx, "DeAuthorized", at=at, meter=1_000, tag="NotAValidID")
            assert stopped["idTagInfo"]["status"] == "Invalid"
            await t.status("Finishing")
            row = await t.ended(tx)
            assert (row["stop_reason"], row["id_token"]) == ("DeAuthorized", "NotAValidID")
            assert (row["stopped_at"], row["energy_wh"]) == (at, 0)


async def test_tc_039_offline_transaction(start_runtime: StartRuntime) -> None:
    """Started and stopped while offline: after reconnecting both arrive, in order; the transaction is
    stored with the charge point's times and readings."""
    async with octt(start_runtime, "OCTT-039") as t:
        async with t.offline_then_back():
            started = await t.start(VALID, at="2026-11-25T08:00:00Z")
            assert started["idTagInfo"]["status"] == "Accepted"
            await t.stop(started["transactionId"], "Local", at="2026-11-25T08:45:00Z", meter=9_000)
            row = await t.ended(started["transactionId"])
        assert (row["started_at"], row["stopped_at"]) == ("2026-11-25T08:00:00Z", "2026-11-25T08:45:00Z")
        assert (row["energy_wh"], row["stop_reason"]) == (8_000, "Local")


async def test_tc_064_data_transfer_to_the_central_system(start_runtime: StartRuntime) -> None:
    """A vendor the central system does not know: answered UnknownVendorId (no CALLERROR)."""
    async with octt(start_runtime, "OCTT-064") as t:
        sent = {"vendorId": "Radboud", "messageId": "No-Idea", "data": "There should be some data here"}
        assert await t.cp.result("DataTransfer", sent) == {"status": "UnknownVendorId"}
