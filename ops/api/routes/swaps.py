"""Battery swaps and packs (SPEC §5): swap records, one pack's history, operator-requested swaps.

Swaps and readings are scoped by their station; a pack by the station it is in, or the one it last left
(`_pack_station`), and a region-scoped token sees only the part of its history at its region's stations."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy import func, select, tuple_
from sqlalchemy.sql import ColumnElement

from chargeops.commands import REQUEST_BATTERY_SWAP
from chargeops.db.engine import insert_for, stored_iso
from chargeops.db.ops_models import Battery, BatteryReading, BatterySwap
from chargeops.events import utcnow
from ops.api.auth import Operator, Viewer
from ops.api.context import Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.routes.commands import ask_charger, reply_to_http
from ops.api.schemas import ID_TOKEN_PATTERN, MAX_PAGE, ChargerId, Input, Items
from ops.api.scope import Scoped

router = APIRouter(tags=["battery swaps"], responses=documented(401, 403, 422))


def _swap(s: BatterySwap) -> dict[str, Any]:
    return {
        "id": s.id,
        "station_id": s.station_id,
        "request_id": s.request_id,
        "id_token": s.id_token,
        "status": s.status,
        "requested": s.requested,
        "batteries_in": s.batteries_in,
        "batteries_out": s.batteries_out,
        "in_at": stored_iso(s.in_at),
        "out_at": stored_iso(s.out_at),
        "updated_at": stored_iso(s.updated_at),
    }


@router.get("/api/swaps", dependencies=[Viewer])
async def list_swaps(
    db: Db,
    scope: Scoped,
    station_id: str | None = None,
    status: Literal["requested", "in_progress", "completed", "out_timeout", "out_only"] | None = None,
    limit: int = Query(200, ge=1, le=MAX_PAGE),
) -> Items[dict[str, Any]]:
    """Swap records, newest first; `out_timeout` ones are orphans (a charged pack left in its slot)."""
    stmt = select(BatterySwap).where(scope.chargers(BatterySwap.station_id))
    stmt = stmt.order_by(BatterySwap.id.desc()).limit(limit)
    if station_id is not None:
        stmt = stmt.where(BatterySwap.station_id == station_id)
    if status is not None:
        stmt = stmt.where(BatterySwap.status == status)
    return Items(items=[_swap(s) for s in (await db.scalars(stmt)).all()])


class SwapRequest(Input):
    station_id: ChargerId
    id_token: Annotated[str, Field(pattern=ID_TOKEN_PATTERN)]
    id_token_type: str = "ISO14443"


@router.post(
    "/api/swaps/request", dependencies=[Operator], status_code=201, responses=documented(404, 409, 502)
)
async def request_swap(body: SwapRequest, db: Db, ctx: Ctx, scope: Scoped) -> dict[str, Any]:
    """Asks an OCPP 2.1 station for a swap (RequestBatterySwap); its BatteryIn / BatteryOut fill the
    record."""
    request_id = secrets.randbelow(2**31 - 1) + 1
    command = {"request_id": request_id, "id_token": body.id_token, "id_token_type": body.id_token_type}
    reply = await ask_charger(ctx, db, scope, body.station_id, REQUEST_BATTERY_SWAP, command, what="station")
    answer = reply_to_http(reply).response
    if answer.get("status") != "Accepted":
        raise ApiError(
            409, "swap_rejected", f"the station answered {answer.get('status')}", extra={"response": answer}
        )
    now = utcnow()
    dialect = (await db.connection()).dialect.name
    await db.execute(
        insert_for(dialect, BatterySwap.__table__).on_conflict_do_nothing(
            index_elements=["station_id", "request_id"]
        ),
        {
            "station_id": body.station_id,
            "request_id": request_id,
            "id_token": body.id_token,
            "status": "requested",
            "requested": True,
            "batteries_in": [],
            "batteries_out": [],
            "updated_at": now,
        },
    )
    await db.commit()
    return {"station_id": body.station_id, "request_id": request_id, "response": answer}


@router.get("/api/batteries", dependencies=[Viewer])
async def list_batteries(
    db: Db, scope: Scoped, station_id: str | None = None, limit: int = Query(500, ge=1, le=MAX_PAGE)
) -> Items[dict[str, Any]]:
    stmt = select(Battery).where(scope.chargers(_pack_station())).order_by(Battery.serial).limit(limit)
    if station_id is not None:
        stmt = stmt.where(Battery.station_id == station_id)
    return Items(items=[_pack(b) for b in (await db.scalars(stmt)).all()])


def _pack_station() -> ColumnElement[str | None]:
    """The station a pack is in, else the one it was last read at (in a vehicle, a pack is at none)."""
    last = (
        select(BatteryReading.station_id)
        .where(BatteryReading.serial == Battery.serial)
        .order_by(BatteryReading.at.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(Battery.station_id, last)


def _pack(b: Battery) -> dict[str, Any]:
    return {
        "serial": b.serial,
        "registered": b.registered,
        "location": b.location,
        "station_id": b.station_id,
        "slot": b.slot,
        "soc": b.soc,
        "soh": b.soh,
        "cycles": b.cycles,
        "swaps": b.swaps,
        "production_date": stored_iso(b.production_date),
        "last_seen": stored_iso(b.last_seen),
    }


@router.get("/api/batteries/{serial}", dependencies=[Viewer], responses=documented(404))
async def battery(
    serial: str, db: Db, scope: Scoped, limit: int = Query(200, ge=1, le=MAX_PAGE)
) -> dict[str, Any]:
    """One pack: where it is, its condition, its SoH / temperature history and its swaps."""
    where = (Battery.serial == serial, scope.chargers(_pack_station()))
    pack = await scope.one(db, Battery, *where, what=f"battery {serial}")
    readings = (
        await db.scalars(
            select(BatteryReading)
            .where(BatteryReading.serial == serial, scope.chargers(BatteryReading.station_id))
            .order_by(BatteryReading.at.desc())
            .limit(limit)
        )
    ).all()
    history = [
        {
            "at": stored_iso(r.at),
            "station_id": r.station_id,
            "slot": r.slot,
            "soc": r.soc,
            "soh": r.soh,
            "cycles": r.cycles,
            "cell_temp_min": r.cell_temp_min,
            "cell_temp_max": r.cell_temp_max,
            "cell_volt_min": r.cell_volt_min,
            "cell_volt_max": r.cell_volt_max,
        }
        for r in readings
    ]
    in_swaps = select(BatteryReading.station_id, BatteryReading.request_id).where(
        BatteryReading.serial == serial, BatteryReading.request_id.is_not(None)
    )
    swaps = await db.scalars(
        select(BatterySwap)
        .where(
            tuple_(BatterySwap.station_id, BatterySwap.request_id).in_(in_swaps),
            scope.chargers(BatterySwap.station_id),
        )
        .order_by(BatterySwap.id.desc())
        .limit(limit)
    )
    return {**_pack(pack), "history": history, "swap_records": [_swap(s) for s in swaps]}
