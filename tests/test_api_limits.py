"""Issue 12.4: the operator API cannot starve the chargers: its own thread and loop, its own bounded database
pool (503 + Retry-After when it stays busy, never 500), and a rate limit per token (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from chargeops.settings import Settings
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.test_api_support import bearer


def refused_total(metrics: str, reason: str) -> float:
    prefix = f'chargeops_api_requests_refused_total{{reason="{reason}"}} '
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


async def test_each_token_has_its_own_rate(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(api_rate_limit="3/minute")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http:
        admin = bearer("test-admin-token")
        tokens = []
        for name in ("dashboard", "script"):
            r = await http.post("/api/tokens", json={"name": name, "role": "viewer"}, headers=admin)
            assert r.status_code == 201, r.text
            tokens.append(r.json()["token"])
        # the admin used 2 of its 3; the dashboard uses its 3 and is then refused, with when to come back
        for _ in range(3):
            assert (await http.get("/api/chargers", headers=bearer(tokens[0]))).status_code == 200
        before = refused_total((await http.get("/metrics")).text, "rate_limited")
        r = await http.get("/api/chargers", headers=bearer(tokens[0]))
        assert r.status_code == 429
        assert r.json()["error"] == "rate_limited" and "3/minute" in r.json()["detail"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert refused_total((await http.get("/metrics")).text, "rate_limited") == before + 1
        # another token is not held back by the first one's use
        assert (await http.get("/api/chargers", headers=bearer(tokens[1]))).status_code == 200
        assert (await http.get("/api/chargers", headers=admin)).status_code == 200
        assert (await http.get("/api/chargers", headers=admin)).status_code == 429


async def test_guessing_tokens_is_limited_per_address(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(api_rate_limit="3/minute")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http:
        statuses = [
            (await http.get("/api/chargers", headers=bearer(f"cop_guess{i}"))).status_code for i in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        # the operator's own token still works from elsewhere: only the address that guessed is held back
        assert (await http.get("/api/chargers", headers=bearer("test-admin-token"))).status_code == 200


def test_a_bad_rate_limit_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not a rate limit like"):
        Settings(api_rate_limit="lots")
    assert Settings(api_rate_limit="off").api_rate_limit == "off"


async def test_a_busy_api_pool_answers_503_not_500(start_runtime: StartRuntime, pg_url: str) -> None:
    """The API's single connection is stuck behind a table lock: the next request waits the pool's timeout
    and gets 503 with Retry-After; once the lock goes, the stuck one completes."""
    runtime = await start_runtime(database_url=pg_url, api_db_pool=1)
    base = f"http://127.0.0.1:{runtime.http_port}"
    admin = bearer("test-admin-token")
    locker = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with httpx.AsyncClient(base_url=base, headers=admin, timeout=60) as http:
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE chargers IN ACCESS EXCLUSIVE MODE")
            stuck = asyncio.create_task(http.get("/api/chargers"))
            await asyncio.sleep(0.5)
            r = await http.get("/api/transactions")
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "overloaded" and int(r.headers["retry-after"]) >= 1
            await tx.rollback()
            assert (await stuck).status_code == 200
            assert (await http.get("/api/transactions")).status_code == 200
            assert refused_total((await http.get("/metrics")).text, "overloaded") >= 1
    finally:
        await locker.close()


async def test_a_stalled_api_does_not_hold_up_the_chargers(start_runtime: StartRuntime) -> None:
    """The API's event loop is not the gateway's: while the API's loop is stalled for 3 s (what a huge
    serialisation would do), a charger's Heartbeat is answered at once and the API answers only after."""
    runtime = await start_runtime(accept_unknown=True)
    api_loop = runtime.api_loop
    assert api_loop is not asyncio.get_running_loop()
    async with (
        raw_charger(runtime.gateway.port, "CP-ISOLATED") as cp,  # type: ignore[union-attr]
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http,
    ):
        await cp.boot()
        api_loop.call_soon_threadsafe(time.sleep, 3.0)
        started = time.monotonic()
        api = asyncio.create_task(http.get("/api/chargers", headers=bearer("test-admin-token")))
        await asyncio.sleep(0.2)
        await cp.result("Heartbeat", {})
        heartbeat_s = time.monotonic() - started
        assert (await api).status_code == 200
        api_s = time.monotonic() - started
    assert heartbeat_s < 1.5 < 2.5 < api_s


async def test_every_request_is_in_the_access_log(
    start_runtime: StartRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12.10: one line per request with status, time and who (token id and name, never the secret)."""
    import logging

    runtime = await start_runtime()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http:
        r = await http.post(
            "/api/tokens", json={"name": "grafana", "role": "viewer"}, headers=bearer("test-admin-token")
        )
        token, token_id = r.json()["token"], r.json()["id"]
        with caplog.at_level(logging.INFO, logger="chargeops.access"):
            assert (await http.get("/api/chargers?limit=5", headers=bearer(token))).status_code == 200
            assert (await http.get("/api/nowhere", headers=bearer(token))).status_code == 404
            assert (await http.get("/api/chargers")).status_code == 401
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "chargeops.access"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("GET /api/chargers?limit=5 200 ") and f"token {token_id} grafana" in lines[0]
    assert lines[1].startswith("GET /api/nowhere 404 ")
    assert lines[2].startswith("GET /api/chargers 401 ") and "token" not in lines[2]
    assert not any(token in line or "test-admin-token" in line for line in lines)


async def test_metrics_can_have_their_own_listener(start_runtime: StartRuntime) -> None:
    """Issue 12.10: with `metrics_port`, /metrics answers there and not on the API's port, so a deployment
    can publish the API and keep the metrics internal (docker/compose.yaml does)."""
    runtime = await start_runtime(metrics_port=0)
    assert runtime.metrics_port != runtime.http_port
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{runtime.metrics_port}/metrics")
        assert r.status_code == 200 and "chargeops_ocpp_messages_total" in r.text
        assert (await http.get(f"http://127.0.0.1:{runtime.http_port}/metrics")).status_code == 404
        assert (await http.get(f"http://127.0.0.1:{runtime.metrics_port}/api/chargers")).status_code == 404
        assert (await http.get(f"http://127.0.0.1:{runtime.http_port}/healthz")).status_code == 200
