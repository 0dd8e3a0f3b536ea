"""A simulated PV + storage site controller: what the meter cabinet of a solar charging site reports.

PV follows the sun (a sine between 06:00 and 18:00 simulated time) times a seeded cloud factor that drifts;
the storage takes the PV surplus and covers the deficit, within its power and between `min_soc` and full;
the grid supplies the rest: grid = load + charging − PV − V2X discharge + storage (storage > 0 charging,
grid > 0 import).
The charging power comes from a callable, e.g. the sum of the simulated chargers' power at that site, so
the controller can run beside a simulated fleet. Reports go to MQTT `{root}/v1/sites/{site}/telemetry` (QoS 1)
or, without a broker, to `POST {api}/api/sites/{site}/telemetry`. Talks to the server only over the wire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import aiomqtt
import httpx

log = logging.getLogger("firmware_stubs.site_controller")


class Broker(Protocol):
    """Where to publish: a topic root and `aiomqtt.Client` arguments. The caller builds it (the server's
    `chargeops.broker.broker_address` fits), so the simulated device imports no server code."""

    @property
    def root(self) -> str: ...

    def client_kwargs(self) -> dict[str, Any]: ...


class SiteController:
    """One site. Give `broker` or `api_url` + `api_token` to publish; with neither, `step()` still runs the
    physics (for tests and dashboards fed another way)."""

    def __init__(
        self,
        site_id: str,
        *,
        pv_peak_w: float,
        storage_wh: float = 0.0,
        storage_max_w: float = 0.0,
        base_load_w: float = 2000.0,
        soc: float = 50.0,
        min_soc: float = 5.0,
        charging_w: Callable[[], float] = lambda: 0.0,
        discharging_w: Callable[[], float] = lambda: 0.0,
        broker: Broker | None = None,
        api_url: str | None = None,
        api_token: str | None = None,
        interval: float = 5.0,
        time_scale: float = 1.0,
        start_hour: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.site_id = site_id
        self.pv_peak_w = pv_peak_w
        self.storage_wh = storage_wh
        self.storage_max_w = storage_max_w
        self.base_load_w = base_load_w
        self.soc = soc if storage_wh > 0 else 0.0
        self.min_soc = min_soc
        self.charging_w = charging_w
        self.discharging_w = discharging_w  # V2X: what vehicles feed into the site
        self.broker = broker
        self.api_url = api_url.rstrip("/") if api_url else None
        self.api_token = api_token
        self.interval = interval
        self.time_scale = time_scale
        now = dt.datetime.now(dt.UTC)
        self.hour = start_hour if start_hour is not None else now.hour + now.minute / 60
        self.cloud = 1.0
        self.reports = 0
        self.last: dict[str, Any] = {}
        self._rng = random.Random(seed)

    def pv_w(self) -> float:
        """Clear-sky sine over the day, times the cloud factor."""
        sun = math.sin(math.pi * (self.hour % 24 - 6.0) / 12.0)
        return self.pv_peak_w * max(0.0, sun) * self.cloud

    def step(self, elapsed_s: float) -> dict[str, Any]:
        """Advance `elapsed_s` wall seconds (× time_scale simulated) and return the report for now."""
        sim_s = elapsed_s * self.time_scale
        self.hour = (self.hour + sim_s / 3600.0) % 24
        self.cloud = min(1.0, max(0.2, self.cloud + self._rng.gauss(0.0, 0.05) * math.sqrt(sim_s / 60)))
        pv, load, charging = self.pv_w(), self.base_load_w, max(0.0, self.charging_w())
        v2x = max(0.0, self.discharging_w())
        storage = 0.0
        if self.storage_wh > 0 and sim_s > 0:
            hours = sim_s / 3600.0
            surplus = pv + v2x - load - charging
            if surplus > 0:  # charge from what would otherwise be exported
                room_w = (100.0 - self.soc) / 100.0 * self.storage_wh / hours
                storage = min(surplus, self.storage_max_w, room_w)
            else:  # discharge under load, down to min_soc
                left_w = max(0.0, self.soc - self.min_soc) / 100.0 * self.storage_wh / hours
                storage = -min(-surplus, self.storage_max_w, left_w)
            self.soc = min(100.0, max(0.0, self.soc + storage * hours / self.storage_wh * 100.0))
        self.last = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "pv_w": round(pv, 1),
            "storage_soc": round(self.soc, 2) if self.storage_wh > 0 else None,
            "storage_w": round(storage, 1),
            "grid_w": round(load + charging - pv - v2x + storage, 1),
            "load_w": round(load, 1),
            "charging_w": round(charging, 1),
        }
        return self.last

    def topic(self) -> str:
        root = self.broker.root if self.broker else "chargeops"
        return f"{root}/v1/sites/{quote(self.site_id, safe='')}/telemetry"

    async def run(self, duration: float | None = None) -> None:
        """Report every `interval` seconds until cancelled (or for `duration` seconds). A failed report is
        logged and the next one tried: a controller never stops for a broker or API outage."""
        deadline = None if duration is None else time.monotonic() + duration
        last = time.monotonic()
        async with _Publisher(self) as publish:
            while deadline is None or time.monotonic() < deadline:
                now = time.monotonic()
                report = self.step(now - last)
                last = now
                try:
                    await publish(report)
                    self.reports += 1
                except (aiomqtt.MqttError, httpx.HTTPError, OSError) as exc:
                    log.warning("site=%s report not delivered: %s", self.site_id, exc)
                await asyncio.sleep(self.interval)


class _Publisher:
    """MQTT (one connection, reconnected on failure), HTTP, or nowhere."""

    def __init__(self, site: SiteController) -> None:
        self.site = site
        self._http: httpx.AsyncClient | None = None
        self._mqtt: aiomqtt.Client | None = None

    async def __aenter__(self) -> _Publisher:
        if self.site.api_url and not self.site.broker:
            headers = {"Authorization": f"Bearer {self.site.api_token}"} if self.site.api_token else {}
            self._http = httpx.AsyncClient(base_url=self.site.api_url, headers=headers, timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self._drop_mqtt()

    async def __call__(self, report: dict[str, Any]) -> None:
        site = self.site
        if self._http is not None:
            r = await self._http.post(f"/api/sites/{quote(site.site_id, safe='')}/telemetry", json=report)
            if r.status_code >= 400:
                raise httpx.HTTPStatusError(f"{r.status_code} {r.text[:200]}", request=r.request, response=r)
        elif site.broker:
            try:
                if self._mqtt is None:
                    client = aiomqtt.Client(
                        **site.broker.client_kwargs(), identifier=f"site-controller-{site.site_id}"
                    )
                    await client.__aenter__()
                    self._mqtt = client
                await self._mqtt.publish(site.topic(), json.dumps(report), qos=1)
            except aiomqtt.MqttError:
                await self._drop_mqtt()
                raise

    async def _drop_mqtt(self) -> None:
        if self._mqtt is not None:
            client, self._mqtt = self._mqtt, None
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                pass
