"""The event pipeline end to end with two ingest processes sharing the load: every meter sample a charger was
told is stored is in `meter_samples` once, and both processes store some (tests/pipeline_lab.py counts the
truth on the wire; the broker and the database are private instances, tests/private_services.py)."""

from __future__ import annotations

import pytest

from tests.pipeline_lab import MIN_CONFIRMED, Pipeline, dump_logs

pytest_plugins = ("tests.private_services", "tests.pipeline_lab")
pytestmark = pytest.mark.timeout(120)


@pytest.mark.postgres
@pytest.mark.timeout(180)  # the fleet runs until enough samples are confirmed, up to 90 s on a loaded machine
async def test_every_sample_is_stored_once_by_two_ingest_processes_sharing_the_load(
    pipeline: Pipeline,
) -> None:
    await pipeline.start(ingest_processes=2)
    try:
        await pipeline.run_fleet(None, duration=90.0, until_confirmed=MIN_CONFIRMED)
        await pipeline.check_exactly_once()
        shares = [
            await s.metric('chargeops_ingest_rows_total{table="meter_samples"}') for s in pipeline.ingest
        ]
    except BaseException:
        dump_logs(pipeline)
        raise
    assert all(share > 0 for share in shares), f"both ingest processes should store samples: {shares}"
