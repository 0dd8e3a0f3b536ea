"""Every charger-initiated action of OCPP 1.6 (with the security extension) and 2.0.1 gets a schema-valid
answer, checked by an independent strict validator, and is stored."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from chargeops.db.models import StoredEvent
from ocpp_gateway.routes import StoreOnly
from ocpp_gateway.server import SESSION_CLASSES
from ocpp_gateway.versions import V16, V201, OcppVersion
from tests import charger_payloads
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger

Payloads = dict[str, dict[str, Any]]
CASES = [("ocpp1.6", V16, charger_payloads.V16), ("ocpp2.0.1", V201, charger_payloads.V201)]


@pytest.mark.parametrize(("protocol", "version", "payloads"), CASES, ids=["1.6", "2.0.1"])
def test_payload_table_covers_every_charger_action(
    protocol: str, version: OcppVersion, payloads: Payloads
) -> None:
    assert set(payloads) == set(version.charger_actions)
    for action, payload in payloads.items():
        assert_strictly_valid(protocol, action, payload, response=False)


# What the central system may ask while the actions go in: NotifyEVChargingNeeds gets the session's TxProfile.
CSMS_CALL_ANSWERS = {"SetChargingProfile": {"status": "Accepted"}}
_IDS = itertools.count(1)


async def _call_amid_csms_calls(cp: RawCharger, action: str, payload: dict[str, Any]) -> list[Any]:
    """`cp.call`, answering the central system's own calls that arrive before the answer (a station must)."""
    unique_id = f"all-{next(_IDS)}"
    await cp.ws.send(json.dumps([2, unique_id, action, payload]))
    while (frame := await cp.recv())[0] == 2:
        assert frame[2] in CSMS_CALL_ANSWERS, frame
        await cp.ws.send(json.dumps([3, frame[1], CSMS_CALL_ANSWERS[frame[2]]]))
    assert frame[1] == unique_id, frame
    if frame[0] == 3:
        assert_strictly_valid(cp.protocol, action, frame[2], response=True)
    return frame


@pytest.mark.parametrize(("protocol", "version", "payloads"), CASES, ids=["1.6", "2.0.1"])
async def test_every_charger_action_is_answered_and_stored(
    start_runtime: StartRuntime, protocol: str, version: OcppVersion, payloads: Payloads
) -> None:
    runtime = await start_runtime(accept_unknown=True)
    assert runtime.gateway is not None
    async with raw_charger(runtime.gateway.port, "CP-ALL", protocol) as cp:
        await cp.boot()
        for action, payload in payloads.items():
            frame = await _call_amid_csms_calls(cp, action, payload)
            assert frame[0] == 3, f"{action}: {frame}"
    async with runtime.sessions() as session:
        kinds = dict(
            (await session.execute(select(StoredEvent.kind, func.count()).group_by(StoredEvent.kind))).all()
        )
        reported = (
            await session.execute(select(StoredEvent.data).where(StoredEvent.kind == "reported"))
        ).scalars()
        reported_actions = {d["action"] for d in reported}
    assert kinds["booted"] >= 2 and kinds["meter_values"] >= 1 and kinds["transaction_started"] == 1
    # actions with no feature behind them yet are still stored as sent
    routes = SESSION_CLASSES[protocol].ROUTES
    assert {action for action, route in routes.items() if isinstance(route, StoreOnly)} <= reported_actions
