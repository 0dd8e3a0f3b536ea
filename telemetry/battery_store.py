"""Swap events into swap records and the battery fleet, inside ingest's batch transaction.

Only events stored for the first time come here (ingest passes the fresh ones), so a re-delivered swap
changes nothing. BatteryIn and BatteryOut are paired by the station's requestId whichever arrives first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chargeops.db.engine import insert_for
from chargeops.db.ops_models import Battery, BatteryReading, BatterySwap
from chargeops.events import BatterySwapped, Event

# Where a pack is after each step: taken from the vehicle into a slot, handed out, or left in its slot.
LOCATION = {"BatteryIn": "slot", "BatteryOut": "vehicle", "BatteryOutTimeout": "slot"}
READING_FIELDS = ("soc", "soh", "cycles", "cell_temp_min", "cell_temp_max", "cell_volt_min", "cell_volt_max")


async def store_battery_events(conn: AsyncConnection, events: Sequence[Event]) -> None:
    for ev in sorted(events, key=lambda e: e.received_at):
        body = ev.body
        if isinstance(body, BatterySwapped):
            at = ev.reported_at or ev.received_at
            await _swap(conn, ev.charger_id, body, at)
            for pack in body.batteries:
                await _pack(conn, ev, body, pack, at)


async def _swap(conn: AsyncConnection, station: str, body: BatterySwapped, at: datetime) -> None:
    dialect = conn.dialect.name
    await conn.execute(
        insert_for(dialect, BatterySwap).on_conflict_do_nothing(index_elements=["station_id", "request_id"]),
        {
            "station_id": station,
            "request_id": body.request_id,
            "status": "in_progress",
            "requested": False,
            "batteries_in": [],
            "batteries_out": [],
            "updated_at": at,
        },
    )
    row = (
        await conn.execute(
            select(BatterySwap.in_at, BatterySwap.out_at).where(
                BatterySwap.station_id == station, BatterySwap.request_id == body.request_id
            )
        )
    ).one()
    values: dict[str, Any] = {"updated_at": at}
    if body.id_token:
        values["id_token"] = body.id_token
    if body.event_type == "BatteryIn":
        values |= {"batteries_in": body.batteries, "in_at": at}
        values["status"] = "completed" if row.out_at else "in_progress"
    elif body.event_type == "BatteryOut":
        values |= {"batteries_out": body.batteries, "out_at": at}
        values["status"] = "completed" if row.in_at else "out_only"
    else:  # BatteryOutTimeout: the charged pack was not taken, an orphan for ops
        values |= {"batteries_out": body.batteries, "status": "out_timeout"}
    await conn.execute(
        update(BatterySwap)
        .where(BatterySwap.station_id == station, BatterySwap.request_id == body.request_id)
        .values(**values)
    )


async def _pack(
    conn: AsyncConnection, ev: Event, body: BatterySwapped, pack: dict[str, Any], at: datetime
) -> None:
    dialect = conn.dialect.name
    step = body.event_type
    serial = pack["serial"]
    reading = {f: pack.get(f) for f in READING_FIELDS}
    await conn.execute(
        insert_for(dialect, BatteryReading).on_conflict_do_nothing(index_elements=["event_id", "serial"]),
        {"event_id": ev.event_id, "serial": serial, "at": at, "station_id": ev.charger_id,
         "request_id": body.request_id, "slot": pack.get("slot"), **reading},
    )  # fmt: skip
    produced = datetime.fromisoformat(pack["production_date"]) if pack.get("production_date") else None
    await conn.execute(
        insert_for(dialect, Battery).on_conflict_do_nothing(index_elements=["serial"]),
        {
            "serial": serial,
            "registered": False,
            "location": "unknown",
            "swaps": 0,
            "production_date": produced,
        },
    )
    in_slot = LOCATION[step] == "slot"
    changes: dict[str, Any] = {
        "location": LOCATION[step],
        "station_id": ev.charger_id if in_slot else None,
        "slot": pack.get("slot") if in_slot else None,
        "last_seen": at,
        **{f: v for f, v in reading.items() if v is not None and f in ("soc", "soh", "cycles")},
    }
    if step == "BatteryIn":
        changes["swaps"] = Battery.swaps + 1
    await conn.execute(
        update(Battery)
        .where(Battery.serial == serial, Battery.last_seen.is_(None) | (Battery.last_seen <= at))
        .values(**changes)
    )
