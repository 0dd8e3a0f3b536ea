"""`python -m bench.soak` end to end in under a minute: a small fleet against a real `chargeops serve` on its
own Postgres database, so the hour-long run is not the first time the harness meets a server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg
import pytest

from bench.soak_db import ADMIN_URL


async def soak_databases() -> list[str]:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'chargeops_soak_%'")
    finally:
        await conn.close()
    return [r[0] for r in rows]


@pytest.mark.postgres
def test_a_short_soak_prints_samples_and_a_summary_and_cleans_up() -> None:
    cmd = [sys.executable, "-m", "bench.soak", "--hours", "0.005", "--chargers", "20", "--interval", "4"]
    cmd += ["--warmup-minutes", "0.1", "--steer-every", "2", "--rate", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out)
    samples, summary = result["samples"], result["summary"]
    assert len(samples) >= 3
    assert all(s["rss_kib"] > 10_000 and s["fds"] > 20 for s in samples)  # the server's, with 20 sockets
    assert samples[-1]["connected"] == 20 and summary["errors"] == 0 and summary["reconnects"] == 0
    assert summary["calls_answered"] > 20 and summary["p99_ms_overall"] is not None
    assert summary["rows_exact_end"]["chargers"] == 20 and summary["rows_exact_end"]["events"] > 20
    assert isinstance(summary["rss_growth_after_warmup_pct"], float)
    assert summary["server_exit_code"] == 0 and not summary["interrupted"]
    assert f"chargeops_soak_{proc.pid}" not in asyncio.run(soak_databases())  # its database was dropped
