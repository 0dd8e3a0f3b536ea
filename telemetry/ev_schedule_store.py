"""The charging schedules ISO 15118 EVs chose (`EvChargingSchedule` events) into `ev_charging_schedules`,
inside ingest's batch transaction; keyed by the event, so a re-delivered event is stored once."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from chargeops.db.engine import insert_for
from chargeops.db.models import EvChargingSchedule as ScheduleRow
from chargeops.events import EvChargingSchedule, Event


async def store_ev_schedules(conn: AsyncConnection, events: Sequence[Event]) -> None:
    rows = [
        {
            "event_id": ev.event_id,
            "charger_id": ev.charger_id,
            "transaction_id": ev.body.transaction_id,
            "evse_id": ev.body.evse_id,
            "source": "ev",
            "starts_at": ev.body.starts_at,
            "duration_s": ev.body.duration_s,
            "rate_unit": ev.body.rate_unit[:2],
            "periods": ev.body.periods,
            "created_at": ev.received_at,
        }
        for ev in events
        if isinstance(ev.body, EvChargingSchedule)
    ]
    if rows:
        ins = insert_for(conn.dialect.name, ScheduleRow).on_conflict_do_nothing(index_elements=["event_id"])
        await conn.execute(ins, rows)
