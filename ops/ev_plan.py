"""One ISO 15118 session's TxProfile (OCPP 2.x K15–K17): planned from the EV's needs within the caps that
hold, sent as `chargeops.SetEvChargingSchedule` and kept in `ev_charging_schedules` with the charger's answer.
Shared by the EV planner (`ops.ev_charging`, ops role) and the operator's renegotiation (K16 on demand,
`ops.ev_renegotiation`, wherever the API runs): both read what they need from the database and reach the
charger over the bus.

The caps: the site's limit for the charger (what the site planner last gave it, `charger_limits`; at a site
with a grid limit the planner has not yet planned for, the site's whole budget; elsewhere none) and the
operator's cap on the session (`ev_operator_caps`), whichever is less. The EV's (or, for an EV that gave
no parameters, the station's) maximum is in the needs.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.commands import SET_EV_CHARGING_SCHEDULE, Commands, ev_profile_id
from chargeops.db.engine import insert_for
from chargeops.db.models import Charger, EvOperatorCap
from chargeops.db.models import EvChargingSchedule as ScheduleRow
from chargeops.db.ops_models import ChargerLimit, Site, SiteTelemetry
from chargeops.events import EvChargingNeeds
from chargeops.logs import for_charger
from ops.ev_schedule import ev_schedule
from ops.site_power import latest_report, site_budget

log = logging.getLogger("chargeops.ev_charging")


@dataclass(frozen=True, slots=True)
class Offer:
    """A TxProfile sent: its id, periods (`{"start_s", "limit_w"}`), highest limit, the caps it was planned
    within and the charger's answer (its status, or the command's outcome when there was none)."""

    charger_id: str
    evse_id: int
    transaction_id: str
    profile_id: int
    periods: list[dict[str, float]]
    limit_w: float
    site_cap_w: float | None
    operator_cap_w: float | None
    status: str
    outcome: str = "result"

    def view(self) -> dict[str, Any]:
        return {
            "charger_id": self.charger_id,
            "evse_id": self.evse_id,
            "transaction_id": self.transaction_id,
            "profile_id": self.profile_id,
            "limit_w": self.limit_w,
            "periods": self.periods,
            "site_cap_w": self.site_cap_w,
            "operator_cap_w": self.operator_cap_w,
            "status": self.status,
        }


def least(*caps: float | None) -> float | None:
    known = [c for c in caps if c is not None]
    return min(known) if known else None


async def offer(
    sessions: async_sessionmaker[AsyncSession],
    bus: Commands,
    timeout: float,
    charger_id: str,
    needs: EvChargingNeeds,
    *,
    site_cap_w: float | None,
    operator_cap_w: float | None,
    row_id: str | None = None,
) -> Offer:
    """Plan `needs` within the caps, send the TxProfile and keep it; `row_id` names the stored row (the needs'
    event, so a re-delivered event is stored once; default: a row of its own)."""
    now = clock.now()
    plan = ev_schedule(
        now=now,
        max_power_w=needs.max_power_w,
        min_power_w=needs.min_power_w,
        energy_wh=needs.energy_wh,
        departure_at=needs.departure_at,
        cap_w=least(site_cap_w, operator_cap_w),
        max_periods=needs.max_periods,
    )
    periods = [{"start_s": s, "limit_w": w} for s, w in plan.periods]
    command: dict[str, Any] = {
        "evse_id": needs.evse_id,
        "transaction_id": needs.transaction_id,
        "start_at": now.isoformat(),
        "periods": periods,
    }
    if plan.duration_s is not None:
        command["duration_s"] = plan.duration_s
    reply = await bus.request(charger_id, SET_EV_CHARGING_SCHEDULE, command, timeout)
    status = str(reply.payload.get("status", "?")) if reply.outcome == "result" else reply.outcome
    for_charger(log, charger_id).log(
        logging.INFO if status == "Accepted" else logging.WARNING,
        "EV schedule for transaction %s (EVSE %d, site cap %s W, operator cap %s W): %s %s",
        needs.transaction_id, needs.evse_id, site_cap_w, operator_cap_w, periods, status,
    )  # fmt: skip
    await _keep(
        sessions, row_id or str(uuid.uuid4()), charger_id, needs, plan.duration_s, periods, status, now
    )
    return Offer(
        charger_id=charger_id,
        evse_id=needs.evse_id,
        transaction_id=needs.transaction_id,
        profile_id=ev_profile_id(needs.evse_id),
        periods=periods,
        limit_w=max(p["limit_w"] for p in periods),
        site_cap_w=site_cap_w,
        operator_cap_w=operator_cap_w,
        status=status,
        outcome=reply.outcome,
    )


async def operator_cap_w(session: AsyncSession, charger_id: str, transaction_id: str) -> float | None:
    return await session.scalar(
        select(EvOperatorCap.limit_w).where(
            EvOperatorCap.charger_id == charger_id, EvOperatorCap.transaction_id == transaction_id
        )
    )


async def site_caps_w(
    session: AsyncSession, charger_ids: set[str], margin_pct: float
) -> dict[str, float | None]:
    """Each charger's site limit, read together (K16 looks at every scheduled session at once): the
    planner's last limit, else the budget of its site with a grid limit, else none."""
    caps: dict[str, float | None] = dict.fromkeys(charger_ids)
    if not charger_ids:
        return caps
    limits = await session.execute(
        select(ChargerLimit.charger_id, ChargerLimit.limit_w).where(ChargerLimit.charger_id.in_(charger_ids))
    )
    caps.update((charger_id, limit_w) for charger_id, limit_w in limits)
    unplanned = charger_ids - {c for c, cap in caps.items() if cap is not None}
    if not unplanned:
        return caps
    sites = await session.execute(
        select(Charger.id, Site)
        .join(Site, Charger.site == Site.id)
        .where(Charger.id.in_(unplanned), Site.grid_limit_kw.is_not(None))
    )
    reports: dict[str, SiteTelemetry | None] = {}
    now = clock.now()
    for charger_id, site in sites:
        if site.id not in reports:
            reports[site.id] = await latest_report(session, site.id)
        caps[charger_id] = site_budget(site, reports[site.id], now, margin_pct=margin_pct).total_w
    return caps


async def _keep(
    sessions: async_sessionmaker[AsyncSession],
    row_id: str,
    charger_id: str,
    needs: EvChargingNeeds,
    duration_s: int | None,
    periods: list[dict[str, float]],
    status: str,
    at: datetime,
) -> None:
    async with sessions() as session, session.begin():
        dialect = (await session.connection()).dialect.name
        row = {
            "event_id": row_id,
            "charger_id": charger_id,
            "transaction_id": needs.transaction_id,
            "evse_id": needs.evse_id,
            "source": "csms",
            "starts_at": at,
            "duration_s": duration_s,
            "rate_unit": "W",
            "periods": [{"start_s": p["start_s"], "limit": p["limit_w"]} for p in periods],
            "status": status[:16],
            "created_at": clock.now(),
        }
        stmt = insert_for(dialect, ScheduleRow).values(**row)
        await session.execute(
            stmt.on_conflict_do_update(index_elements=["event_id"], set_={"status": row["status"]})
        )
