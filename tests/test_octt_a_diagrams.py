"""Block A cases of the independent OCTT port (issue 11, tzi-OCTT) that exist there only as a sequence
diagram: TC_A_09 (update the charging station password, OCPP 2.0.1 A01), over wss:// with Basic auth
(security profile 2) against a whole chargeops process. TC_A_06 and TC_A_08 are covered by
tests/test_ocpp_conformance_security.py (test_tc_a_06_..., test_tc_a_08_...)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from ops.fleet import add_charger
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import assert_strictly_valid, basic, raw_charger
from tests.octt_support import api, connector

OLD = "octt-a09-old-password"
NEW = "octt-a09-NEW-password:42"


@pytest.fixture
def start_runtime(start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, "wss", pki)


@pytest.mark.parametrize("answer", ["Accepted", "RebootRequired"])
async def test_tc_a_09_update_charging_station_password(start_runtime: StartRuntime, answer: str) -> None:
    """A01: the operator's request makes the CSMS send SetVariables SecurityCtrlr.BasicAuthPassword with the
    new password; the station answers Accepted or RebootRequired (the OCTT takes both). It then connects
    (over TLS) with Basic auth `id:new password`: let in, BootNotification Accepted, its connectors told;
    once the new password has been used, the old one is refused (A01.FR.11 does not keep it)."""
    runtime = await start_runtime()
    cp_id = f"OCTT-A09-{answer}"
    async with runtime.sessions() as session, session.begin():
        await add_charger(session, cp_id, password=OLD)
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with (
        api(runtime) as client,
        raw_charger(port, cp_id, "ocpp2.0.1", additional_headers=basic(cp_id, OLD)) as cp,
    ):
        assert cp.ws.transport.get_extra_info("ssl_object") is not None  # security profile 2: TLS
        assert (await cp.boot())["status"] == "Accepted"
        rotate = asyncio.create_task(
            client.post(f"/api/chargers/{cp_id}/rotate-password", json={"password": NEW})
        )
        call = json.loads(await asyncio.wait_for(cp.ws.recv(), 10))
        assert call[0] == 2 and call[2] == "SetVariables", call
        assert_strictly_valid(cp.protocol, "SetVariables", call[3], response=False)
        assert call[3]["setVariableData"] == [
            {
                "attributeValue": NEW,
                "component": {"name": "SecurityCtrlr"},
                "variable": {"name": "BasicAuthPassword"},
            }
        ]
        result = {**call[3]["setVariableData"][0], "attributeStatus": answer}
        del result["attributeValue"]
        await cp.ws.send(json.dumps([3, call[1], {"setVariableResult": [result]}]))
        r = await rotate
    assert r.status_code == 200, r.text
    assert r.json() == {"charger_id": cp_id, "status": answer, "password": None}  # given: not echoed
    # Steps 3-8: the station reconnects with the new password (after its reboot for RebootRequired).
    async with raw_charger(port, cp_id, "ocpp2.0.1", additional_headers=basic(cp_id, NEW)) as cp:
        assert (await cp.boot())["status"] == "Accepted"
        await connector(cp, "Available")
    with pytest.raises(InvalidStatus) as refused:
        async with raw_charger(port, cp_id, "ocpp2.0.1", additional_headers=basic(cp_id, OLD)):
            pass
    assert refused.value.response.status_code == 401
