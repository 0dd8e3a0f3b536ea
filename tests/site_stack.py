"""A running chargeops with a PV + storage site for the site-power and DER tests: `SiteStack` (the runtime,
its site planner re-planning every 2 s, an API client and simulated schema-strict chargers), the
`site_stack` fixture (a plugin: test modules name it in `pytest_plugins`) and a slower-polling `until`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chargeops.db.engine import stored_utc
from chargeops.db.models import MeterSample, Transaction
from chargeops.db.ops_models import ChargerLimit, SiteTelemetry
from firmware_stubs import SimEnvironment, SimulatedCharger
from firmware_stubs.site_controller import SiteController
from ops.runtime import Runtime
from ops.site_power import SitePlanner
from tests import waiting
from tests.conftest import StartRuntime

ADMIN = {"Authorization": "Bearer test-admin-token"}
SITE = "solar-1"


def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "") -> Awaitable[None]:
    """Polls the database or the API: longer and less often than the default."""
    return waiting.until(predicate, timeout, what, interval=0.1)


class SiteStack:
    """A running chargeops (its site planner re-planning every 2 s), an API client and simulated chargers."""

    def __init__(self, runtime: Runtime, api: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.api = api
        self.chargers: list[SimulatedCharger] = []
        self.env = SimEnvironment(
            strict=True, time_scale=30.0, sample_interval=0.5, backoff_base=0.2, backoff_cap=1.0
        )
        assert runtime.site_planner is not None
        self.planner: SitePlanner = runtime.site_planner

    async def site(self, grid_limit_kw: float, **extra: Any) -> None:
        body = {
            "id": SITE,
            "name": "Solar depot",
            "kind": "pv_storage",
            "grid_limit_kw": grid_limit_kw,
            **extra,
        }
        r = await self.api.put(f"/api/sites/{SITE}", json=body)
        assert r.status_code == 200, r.text

    async def charger(self, cp_id: str, protocol: str, **options: Any) -> SimulatedCharger:
        password = "sim-password-1234"
        r = await self.api.post("/api/chargers", json={"id": cp_id, "password": password, "site": SITE})
        assert r.status_code == 201, r.text
        url = f"ws://127.0.0.1:{self.runtime.gateway.port}/ocpp"  # type: ignore[union-attr]
        options = {"max_power_w": 22_000, **options}
        cp = SimulatedCharger(cp_id, url, protocol=protocol, password=password, env=self.env, **options)
        self.chargers.append(cp)
        await cp.start()
        await cp.wait_until_accepted(10)
        return cp

    def controller(self, **options: Any) -> SiteController:
        """The site's simulated controller at night (no PV), 3 kW of other load, reporting through the API
        every 0.5 s; `charging_w` is what the simulated chargers draw."""
        defaults: dict[str, Any] = {"pv_peak_w": 20_000, "base_load_w": 3000, "start_hour": 0.0, "seed": 7}
        return SiteController(
            SITE,
            charging_w=lambda: sum(c.power_w for cp in self.chargers for c in cp.connectors),
            api_url=str(self.api.base_url),
            api_token="test-admin-token",
            interval=0.5,
            **(defaults | options),
        )

    async def limits(self) -> dict[str, ChargerLimit]:
        async with self.runtime.sessions() as s:
            return {lim.charger_id: lim for lim in await s.scalars(select(ChargerLimit))}

    async def settled(self, expected: dict[str, float]) -> bool:
        """Each charger accepted `expected` W, obeys it, and has a stored sample at it since."""
        limits = await self.limits()
        for cp in self.chargers:
            lim = limits.get(cp.id)
            if lim is None or lim.status != "Accepted" or lim.limit_w != expected[cp.id]:
                return False
            if expected[cp.id] > 2000 and abs(cp.connectors[1].power_w - expected[cp.id]) > 1:
                return False
        async with self.runtime.sessions() as s:
            for cp in self.chargers:
                if expected[cp.id] <= 2000:
                    continue
                since = limits[cp.id].sent_at
                latest = await s.scalar(
                    select(MeterSample.value)
                    .where(
                        MeterSample.charger_id == cp.id,
                        MeterSample.measurand == "Power.Active.Import",
                        MeterSample.phase.is_(None),
                        MeterSample.sampled_at > since,
                    )
                    .order_by(MeterSample.sampled_at.desc())
                    .limit(1)
                )
                if latest is None or abs(latest - expected[cp.id]) > 1:
                    return False
        return True

    async def measured(self, since: Any) -> dict[str, float]:
        """Site charging power over time from the stored samples: at every sample, the sum of each running
        session's latest Power.Active.Import. Returns its peak and its last value."""
        ids = [cp.id for cp in self.chargers]
        async with self.runtime.sessions() as s:
            samples = (
                await s.execute(
                    select(MeterSample.sampled_at, MeterSample.charger_id, MeterSample.value).where(
                        MeterSample.charger_id.in_(ids),
                        MeterSample.measurand == "Power.Active.Import",
                        MeterSample.phase.is_(None),
                        MeterSample.sampled_at >= since,
                    )
                )
            ).all()
            stops = (
                await s.execute(
                    select(Transaction.stopped_at, Transaction.charger_id).where(
                        Transaction.charger_id.in_(ids), Transaction.stopped_at.is_not(None)
                    )
                )
            ).all()
        timeline = sorted(
            [(stored_utc(at), 1, cid, value) for at, cid, value in samples]
            + [(stored_utc(at), 0, cid, 0.0) for at, cid in stops]
        )
        latest: dict[str, float] = {}
        peak = last = 0.0
        for _, _, cid, value in timeline:
            latest[cid] = value
            last = sum(latest.values())
            peak = max(peak, last)
        return {"peak_w": peak, "last_w": last, "samples": len(samples)}

    async def grid_peak(self, since: Any) -> tuple[float, int]:
        async with self.runtime.sessions() as s:
            peak, n = (
                await s.execute(
                    select(func.max(SiteTelemetry.grid_w), func.count()).where(
                        SiteTelemetry.site_id == SITE, SiteTelemetry.at >= since
                    )
                )
            ).one()
        return float(peak or 0.0), int(n)


@pytest.fixture
async def site_stack(start_runtime: StartRuntime, pg_url: str) -> AsyncIterator[SiteStack]:
    runtime = await start_runtime(pg_url, call_timeout=10.0, site_plan_interval=2.0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        stack = SiteStack(runtime, api)
        yield stack
        for cp in stack.chargers:
            await cp.stop()
        for cp in stack.chargers:
            assert cp.schema_violations == [], cp.schema_violations
