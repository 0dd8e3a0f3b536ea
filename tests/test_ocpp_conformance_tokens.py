"""What the OCA's certification test cases check of a CSMS and chargeops decides on its own (issue 11): every
id token type looked up, Central included (2.0.1 C01-C05), with its group (groupIdToken, 1.6 parentIdTag);
a token the CSMS itself sent in a remote start Accepted; an operator's admission change reaching the next
BootNotification (B02/B03); requested reboots told apart from boot loops. Every case runs over ws:// and
over wss:// (RSA and ECDSA certificates made in the test)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chargeops.db.models import IdToken
from tests.charger_payloads import started_event
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import raw_charger


@pytest.fixture(params=["ws", "wss"])
def start_runtime(request: pytest.FixtureRequest, start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, request.param, pki)


async def _tokens(runtime: Any) -> None:
    async with runtime.sessions() as session, session.begin():
        session.add_all(
            [
                IdToken(id_token="APP-OK", status="Accepted", type="Central", group_id="FLEET-7"),
                IdToken(id_token="APP-BLOCKED", status="Blocked", type="Central"),
                IdToken(id_token="CARD-1", status="Accepted", type="ISO14443", group_id="FLEET-7"),
            ]
        )


async def test_tc_c_central_tokens_are_looked_up(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True)
    await _tokens(runtime)
    async with raw_charger(runtime.gateway.port, "TC-C201", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()

        async def info(token: str, kind: str = "Central") -> dict[str, Any]:
            answer = await cp.result("Authorize", {"idToken": {"idToken": token, "type": kind}})
            return answer["idTokenInfo"]

        assert await info("APP-OK") == {
            "status": "Accepted",
            "groupIdToken": {"idToken": "FLEET-7", "type": "Central"},
        }
        assert (await info("APP-BLOCKED"))["status"] == "Blocked"  # a blocked Central token
        assert (await info("NOBODY"))["status"] == "Invalid"  # unknown Central token
        assert (await info("", "NoAuthorization"))["status"] == "Accepted"  # no identity to check
        started = await cp.result(
            "TransactionEvent", started_event({"idToken": "APP-BLOCKED", "type": "Central"})
        )
        assert started["idTokenInfo"]["status"] == "Blocked"


async def test_tc_1_6_parent_id_tag_is_returned(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True)
    await _tokens(runtime)
    async with raw_charger(runtime.gateway.port, "TC-C16") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await cp.result("Authorize", {"idTag": "CARD-1"})
        assert answer["idTagInfo"] == {"status": "Accepted", "parentIdTag": "FLEET-7"}
        assert "parentIdTag" not in (await cp.result("Authorize", {"idTag": "NOBODY"}))["idTagInfo"]


async def test_tc_f_a_remotely_started_token_is_accepted(start_runtime: StartRuntime) -> None:
    """RequestStartTransaction with a token not on the list: the operator chose it, so the station's
    TransactionEvent for it is Accepted; another unknown Central token still is not."""
    runtime = await start_runtime(accept_unknown=True)
    gateway = runtime.gateway
    assert gateway is not None
    async with raw_charger(gateway.port, "TC-F201", "ocpp2.0.1") as cp:
        await cp.boot()
        session = gateway.sessions["TC-F201"]
        request = {"idToken": {"idToken": "REMOTE-9", "type": "Central"}, "remoteStartId": 3}
        sent = asyncio.create_task(session.execute("RequestStartTransaction", request, timeout=5))
        call = await cp.recv()
        assert call[0] == 2 and call[2] == "RequestStartTransaction"
        await cp.ws.send(f'[3, "{call[1]}", {{"status": "Accepted"}}]')
        assert (await sent).outcome == "result"
        started = await cp.result(
            "TransactionEvent", started_event({"idToken": "REMOTE-9", "type": "Central"})
        )
        assert started["idTokenInfo"]["status"] == "Accepted"
        other = await cp.result("Authorize", {"idToken": {"idToken": "REMOTE-10", "type": "Central"}})
        assert other["idTokenInfo"]["status"] == "Invalid"


async def _set_admission(runtime: Any, charger_id: str, admission: str) -> None:
    from chargeops.db.models import Charger

    async with runtime.sessions() as session, session.begin():
        charger = await session.get(Charger, charger_id)
        assert charger is not None
        charger.admission = admission


async def test_tc_b_02_03_operator_admission_reaches_the_next_boot_on_the_same_connection(
    start_runtime: StartRuntime,
) -> None:
    """Pending → the operator accepts → the next BootNotification on the same connection is Accepted, and
    the station is served; withdrawn → the next one is Rejected and other calls are refused again."""
    runtime = await start_runtime(registration_policy="pending", boot_retry_interval=7)
    for protocol in ("ocpp1.6", "ocpp2.0.1"):
        cid = f"TC-B-{protocol[-3:]}"
        async with raw_charger(runtime.gateway.port, cid, protocol) as cp:  # type: ignore[union-attr]
            assert (await cp.boot())["status"] == "Pending"
            assert (await cp.call("Heartbeat", {}))[2] == "SecurityError"
            await _set_admission(runtime, cid, "accepted")
            assert (await cp.boot())["status"] == "Accepted"
            assert (await cp.call("Heartbeat", {}))[0] == 3
            await _set_admission(runtime, cid, "rejected")
            assert (await cp.boot())["status"] == "Rejected"
            assert (await cp.call("Heartbeat", {}))[2] == "SecurityError"


async def test_a_reset_the_charger_accepts_is_recorded_as_a_requested_reboot(
    start_runtime: StartRuntime,
) -> None:
    """The boot-loop rule excuses requested reboots (tests/test_ops_engine.py); the gateway tells it which:
    a Reset or a TriggerMessage BootNotification the charger accepted, not one it rejected."""
    from sqlalchemy import select

    from chargeops.db.models import StoredEvent
    from tests.waiting import until

    runtime = await start_runtime(accept_unknown=True)
    gateway = runtime.gateway
    assert gateway is not None
    async with raw_charger(gateway.port, "TC-RESET") as cp:
        await cp.boot()
        session = gateway.sessions["TC-RESET"]
        for action, payload, status in (
            ("Reset", {"type": "Soft"}, "Accepted"),
            ("TriggerMessage", {"requestedMessage": "BootNotification"}, "Rejected"),
            ("TriggerMessage", {"requestedMessage": "BootNotification"}, "Accepted"),
        ):
            sent = asyncio.create_task(session.execute(action, payload, timeout=5))
            call = await cp.recv()
            await cp.ws.send(f'[3, "{call[1]}", {{"status": "{status}"}}]')
            assert (await sent).outcome == "result"

    async def requested() -> list[str]:
        async with runtime.sessions() as s:
            query = select(StoredEvent.data).where(StoredEvent.kind == "reboot_requested")
            return sorted(d["command"] for d in (await s.scalars(query)).all())

    async def two() -> bool:
        return len(await requested()) == 2

    await until(two, what="two requested reboots stored")
    assert await requested() == ["reset", "trigger_boot"]
