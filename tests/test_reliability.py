"""SPEC §8: a charger is answered only after what it reported is durable; with the database down it gets
InternalError (it will retry), and once the database is back the retry is stored exactly once."""

from __future__ import annotations

from sqlalchemy import func, select

from chargeops.db.models import MeterSample
from tests.conftest import StartRuntime, _pg_admin
from tests.ocpp_client import raw_charger


async def test_database_outage_answers_internal_error_and_loses_nothing(
    start_runtime: StartRuntime, pg_url: str
) -> None:
    runtime = await start_runtime(database_url=pg_url, accept_unknown=True)
    db = pg_url.rsplit("/", 1)[1]
    meter = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2026-11-25T10:00:00Z", "sampledValue": [{"value": "42"}]}],
    }
    async with raw_charger(runtime.gateway.port, "CP-DB") as cp:  # type: ignore[union-attr]
        await cp.boot()
        _pg_admin(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        _pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
        try:
            answer = await cp.call("MeterValues", meter)
            assert answer[0] == 4 and answer[2] == "InternalError", answer
            assert (await cp.call("Heartbeat", {}))[0] == 4  # nothing is pretended while storage is down
        finally:
            _pg_admin(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        assert (await cp.call("MeterValues", meter))[0] == 3  # the charger's retry
        assert (await cp.call("MeterValues", meter))[0] == 3  # and a duplicate retry
    async with runtime.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(MeterSample))).scalar_one() == 1
