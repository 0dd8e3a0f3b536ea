"""Site controller telemetry (PV, storage, grid) and battery-pack telemetry from MQTT into the database.

Topics, payloads and the session: docs/bus.md, "Site telemetry". Several processes split the reports (a
shared subscription on a persistent session, `telemetry/mqtt/consumer.py`); each message is acked only
after its row is committed, and rows are keyed by (id, at), so a redelivered report is stored once. A
payload that fails validation, or names an unregistered site, is logged and acked (dropped): it would
never get better.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import unquote

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import insert_for
from chargeops.db.ops_models import Battery, BatteryReading, Site, SiteTelemetry
from chargeops.events import utcnow
from chargeops.settings import Settings
from telemetry.mqtt.client import Broker
from telemetry.mqtt.consumer import ONE_BY_ONE, DurableConsumer
from telemetry.periodic import Background

log = logging.getLogger(__name__)

TOPIC_VERSION = "v1"
GROUP = "chargeops-site-telemetry"
OP_TIMEOUT = 10.0  # s for a subscribe to be confirmed (aiomqtt's default)
# A report from further ahead than this is a controller with a wrong clock: it would stay "latest" for hours.
MAX_CLOCK_AHEAD = timedelta(minutes=5)


class SiteReport(BaseModel):
    """One site controller report; powers in W. `storage_w` > 0 charges the storage, `grid_w` > 0 imports."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    at: AwareDatetime
    pv_w: float | None = Field(default=None, ge=0)
    storage_soc: float | None = Field(default=None, ge=0, le=100)
    storage_w: float | None = None
    grid_w: float | None = None
    load_w: float | None = Field(default=None, ge=0)
    charging_w: float | None = Field(default=None, ge=0)

    @field_validator("at")
    @classmethod
    def _not_ahead(cls, at: AwareDatetime) -> AwareDatetime:
        if at > utcnow() + MAX_CLOCK_AHEAD:
            raise ValueError("lies in the future; check the site controller's clock")
        return at.astimezone(UTC)  # SQLite keeps no offset: every stored time is UTC


class BatteryReport(BaseModel):
    """One pack's condition between swaps: what `vendorInfo` carries at a swap, plus SoC / SoH."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    at: AwareDatetime
    station_id: str | None = Field(default=None, max_length=48)
    slot: int | None = Field(default=None, ge=0)
    soc: float | None = Field(default=None, ge=0, le=100)
    soh: float | None = Field(default=None, ge=0, le=100)
    cycles: int | None = Field(default=None, ge=0)
    cell_temp_min: float | None = None
    cell_temp_max: float | None = None
    cell_volt_min: float | None = None
    cell_volt_max: float | None = None

    _not_ahead = field_validator("at")(SiteReport._not_ahead.__func__)  # type: ignore[attr-defined]


class UnknownSite(LookupError):
    pass


async def store_battery_report(session: AsyncSession, serial: str, report: BatteryReport) -> None:
    """A reading in the pack's history (once per instant) and its latest condition; where the pack is stays
    as the swaps say. An unknown serial is recorded as an unregistered pack."""
    dialect = (await session.connection()).dialect.name
    station = report.station_id or ""
    fields = report.model_dump(exclude={"at", "station_id"})
    key = str(uuid.uuid5(uuid.NAMESPACE_URL, f"battery-telemetry:{serial}:{report.at.isoformat()}"))
    await session.execute(
        insert_for(dialect, BatteryReading)
        .values(event_id=key, serial=serial, at=report.at, station_id=station, **fields)
        .on_conflict_do_nothing(index_elements=["event_id", "serial"])
    )
    await session.execute(
        insert_for(dialect, Battery)
        .values(serial=serial, registered=False, location="unknown", swaps=0)
        .on_conflict_do_nothing(index_elements=["serial"])
    )
    latest = {k: v for k, v in fields.items() if k in ("soc", "soh", "cycles") and v is not None}
    await session.execute(
        update(Battery)
        .where(Battery.serial == serial, Battery.last_seen.is_(None) | (Battery.last_seen <= report.at))
        .values(last_seen=report.at, **latest)
    )
    await session.commit()


async def store_report(session: AsyncSession, site_id: str, report: SiteReport) -> bool:
    """Insert the report (and commit); False if a report for that instant was already stored.
    Raises UnknownSite for a site that is not registered."""
    if await session.get(Site, site_id) is None:
        raise UnknownSite(site_id)
    dialect = (await session.connection()).dialect.name
    stmt = (
        insert_for(dialect, SiteTelemetry)
        .values(site_id=site_id, **report.model_dump())
        .on_conflict_do_nothing(index_elements=["site_id", "at"])
    )
    result = await session.execute(stmt)
    await session.commit()
    return bool(getattr(result, "rowcount", 0))


class SiteTelemetrySubscriber(Background):
    """Stores what site controllers and battery monitors publish, one report at a time, through the shared
    durable consumer (`telemetry/mqtt/consumer.py`: reconnects, acks after the commit)."""

    name = "site-telemetry"

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings, *, session_expiry: int = 86400
    ) -> None:
        if not settings.mqtt_url:
            raise ValueError("site telemetry over MQTT needs CHARGEOPS_MQTT_URL")
        self._sessions = sessions
        broker = Broker.from_settings(settings)
        self.root = broker.root
        self.client_id = f"{self.root}-site-telemetry-{settings.node_id}"
        self.topic_filters = [
            f"$share/{GROUP}/{self.root}/{TOPIC_VERSION}/{kind}/+/telemetry" for kind in _KINDS
        ]
        self._consumer = DurableConsumer(
            broker,
            self.client_id,
            self.topic_filters,
            _decode,
            self._store,
            ONE_BY_ONE,
            session_expiry=session_expiry,
            op_timeout=OP_TIMEOUT,
            name="site telemetry",
            error_label="site_telemetry",
        )
        self.subscribed = self._consumer.ready

    async def _run(self) -> None:
        await self._consumer.run()

    async def _store(self, reports: list[_Report]) -> None:
        """A database failure raises (the consumer retries with back-off, nothing is acked meanwhile); a
        report for an unregistered site is dropped."""
        for what, key, store, report in reports:
            try:
                async with self._sessions() as session:
                    await store(session, key, report)
            except UnknownSite:
                log.warning("%s=%s telemetry for an unregistered site dropped", what, key)


_Store = Callable[[AsyncSession, str, Any], Awaitable[object]]
# topic level → (payload model, what stores it, the id's name in log lines)
_KINDS: dict[str, tuple[type[BaseModel], _Store, str]] = {
    "sites": (SiteReport, store_report, "site"),
    "batteries": (BatteryReport, store_battery_report, "battery"),
}
# a validated report: (the id's name, the id, what stores it, the report)
_Report = tuple[str, str, _Store, BaseModel]


def _decode(payload: bytes, topic: str) -> list[_Report]:
    """The report of one message, or none when it does not validate (dropped: it would never get better)."""
    parts = topic.split("/")
    key = unquote(parts[-2])
    model, store, what = _KINDS[parts[-3]]
    try:
        report = model.model_validate_json(payload)
    except ValidationError as exc:
        log.warning("%s=%s bad telemetry dropped: %s", what, key, _reason(exc))
        return []
    return [(what, key, store, report)]


def _reason(exc: ValidationError) -> str:
    """The validation errors without the input values (short, one line)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
