"""The event pipeline end to end (simulated chargers → gateway process → MQTT → ingest process → Postgres)
across a Postgres restart and a Mosquitto restart: every meter sample a charger was told is stored is in
`meter_samples`, none more often than chargers sent it (the truth counted on the wire: tests/pipeline_lab.py).
The broker and the database are private instances (tests/private_services.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.pipeline_lab import Pipeline, dump_logs
from tests.private_services import PrivateBroker, PrivatePostgres

pytest_plugins = ("tests.private_services", "tests.pipeline_lab")
pytestmark = pytest.mark.timeout(120)


@pytest.mark.postgres
async def test_every_sample_is_stored_once_across_a_postgres_restart(
    pipeline: Pipeline, postgres: PrivatePostgres
) -> None:
    await pipeline.start(ingest_processes=1)

    async def restart() -> None:
        await asyncio.to_thread(postgres.restart)

    try:
        await pipeline.run_fleet(restart)
        confirmed, _ = await pipeline.check_exactly_once()
    except BaseException:
        dump_logs(pipeline)
        raise
    assert confirmed > 0
    assert pipeline.ingest[0].saw("failed"), "the restart should have made a commit fail and be retried"


@pytest.mark.postgres
async def test_every_sample_is_stored_once_across_a_mosquitto_restart(
    pipeline: Pipeline, restart_broker: PrivateBroker
) -> None:
    await pipeline.start(ingest_processes=1)

    async def restart() -> None:
        await asyncio.to_thread(restart_broker.stop)
        await asyncio.sleep(1.0)  # the gateway answers chargers from its spool meanwhile
        await asyncio.to_thread(restart_broker.start)

    try:
        await pipeline.run_fleet(restart)
        await pipeline.check_exactly_once()
        assert pipeline.gateway is not None
        assert pipeline.gateway.saw("spooling events"), "the outage should have been ridden out by the spool"
        await pipeline.gateway.wait_for_line("spool drained", timeout=10)
    except BaseException:
        dump_logs(pipeline)
        raise
