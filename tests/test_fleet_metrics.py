"""Fleet gauges (online / offline / faulted per site, connectors by status, sessions, power per site)
computed from what real chargers reported, on SQLite and Postgres."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ops.fleet import add_charger
from telemetry.fleet_metrics import refresh
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger

NOW = "2030-01-01T00:00:00Z"  # in the future, so the power window always holds it


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_fleet_gauges_follow_what_chargers_report(start_runtime: StartRuntime, db_url: str) -> None:
    runtime = await start_runtime(database_url=db_url, fleet_metrics_interval=3600)
    async with runtime.sessions() as session, session.begin():
        for cid, site in (("N1", "north"), ("N2", "north"), ("S1", "south")):
            await add_charger(session, cid, site=site)
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with raw_charger(port, "N1") as n1, raw_charger(port, "N2", "ocpp2.0.1") as n2:
        await n1.boot()
        await n2.boot()
        await n1.result(
            "StatusNotification", {"connectorId": 1, "errorCode": "GroundFailure", "status": "Faulted"}
        )
        await n2.result(
            "StatusNotification",
            {"timestamp": NOW, "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1},
        )
        await n2.result(
            "TransactionEvent",
            {
                "eventType": "Started",
                "timestamp": NOW,
                "triggerReason": "CablePluggedIn",
                "seqNo": 0,
                "transactionInfo": {"transactionId": "T1"},
                "evse": {"id": 1, "connectorId": 1},
                "meterValue": [
                    {
                        "timestamp": NOW,
                        "sampledValue": [
                            {"value": 7400.0, "measurand": "Power.Active.Import"},
                            {"value": 2400.0, "measurand": "Power.Active.Import", "phase": "L1"},
                        ],
                    }
                ],
            },
        )
        await refresh(runtime.sessions)
    assert gauge("chargeops_fleet_chargers", site="north", state="faulted") == 1
    assert gauge("chargeops_fleet_chargers", site="north", state="online") == 1
    assert gauge("chargeops_fleet_chargers", site="south", state="offline") == 1
    assert gauge("chargeops_fleet_connectors", status="Faulted") == 1
    assert gauge("chargeops_fleet_connectors", status="Occupied") == 1
    assert gauge("chargeops_sessions_active", site="north") == 1
    assert gauge("chargeops_site_power_watts", site="north") == 7400.0  # the total, not the phase value
    assert gauge("chargeops_site_power_watts", site="south") == 0  # issue 13: 0 rather than absent
    assert gauge("chargeops_fleet_chargers", site="south", state="online") == 0
