"""Early warnings as records: the level in force per depot and SKU, with hysteresis, and every change of it.

A level is raised as soon as the stock-out probability calls for it (watch ≥ 0.2, warning ≥ 0.5,
critical ≥ 0.8 or crews waiting now) and lowered only after the probability has stayed below half of the
raising threshold for `CALM_DAYS` days, so a warning does not flap with every reservation. Each change is
stored (`supply_warning_log`: opened, escalated, deescalated, cleared, with the probability, reasons, figures
and proposed actions of that moment) and sent as a webhook `supply_warning.<change>` in the same
transaction. The API, the report and the Prometheus gauge read the stored state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from chargeops import clock
from chargeops.db.engine import stored_iso, stored_utc
from chargeops.db.ops_models import SupplyWarning, SupplyWarningLog
from ops import supply
from ops.outbox import enqueue
from ops.planning import LEVELS, Risk, assess_all
from ops.planning.risk import RAISE_AT

CLEAR_FRACTION = 0.5
CALM_DAYS = 3.0


def _clear_at(level: str) -> float:
    return RAISE_AT[level] * CLEAR_FRACTION if level in RAISE_AT else 0.0


def next_level(
    current: str, calm_since: datetime | None, risk: Risk, now: datetime
) -> tuple[str, datetime | None]:
    """(the level now in force, since when the probability has been calm) — the hysteresis, pure."""
    raw = risk.level
    if LEVELS.index(raw) >= LEVELS.index(current):
        return raw, None
    if risk.probability >= _clear_at(current) or risk.figures.get("available", 0) < 0:
        return current, None  # below the raising threshold, not yet calm enough to lower
    calm_since = calm_since or now
    if now - calm_since < timedelta(days=CALM_DAYS):
        return current, calm_since
    # Calm long enough: down to the highest level whose clearing threshold the probability still reaches.
    lower = [lv for lv in ("watch", "warning") if LEVELS.index(lv) < LEVELS.index(current)]
    held = [lv for lv in lower if risk.probability >= _clear_at(lv)]
    return max([raw, *held], key=LEVELS.index), None


def warning_view(w: SupplyWarning) -> dict[str, Any]:
    return {
        "depot": w.depot_id,
        "sku": w.sku,
        "level": w.level,
        "probability": round(w.probability, 3),
        "opened_at": stored_iso(w.opened_at),
        "level_since": stored_iso(w.level_since),
        "assessed_at": stored_iso(w.assessed_at),
        "reasons": w.reasons,
        "figures": w.figures,
        "actions": w.actions,
    }


def log_view(e: SupplyWarningLog) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": stored_iso(e.at),
        "depot": e.depot_id,
        "sku": e.sku,
        "change": e.change,
        "from": e.from_level,
        "to": e.to_level,
        "probability": round(e.probability, 3),
        "reasons": e.reasons,
        "figures": e.figures,
        "actions": e.actions,
    }


async def in_force_by_level(session: AsyncSession, *where: ColumnElement[bool]) -> dict[str, int]:
    """Stored warnings matching `where` per level above `ok` (every level, 0 if none): the fleet summary."""
    stmt = (
        select(SupplyWarning.level, func.count())
        .where(SupplyWarning.level != "ok", *where)
        .group_by(SupplyWarning.level)
    )
    found: dict[str, int] = {level: n for level, n in (await session.execute(stmt)).all()}
    return {level: found.get(level, 0) for level in reversed(LEVELS) if level != "ok"}


async def refresh(session: AsyncSession, risks: list[Risk]) -> list[SupplyWarningLog]:
    """Applies one assessment of every depot/SKU to the stored warnings; returns the changes it logged."""
    now = clock.now()
    rows = {(w.depot_id, w.sku): w for w in (await session.scalars(select(SupplyWarning))).all()}
    changes = []
    for risk in risks:
        row = rows.get((risk.depot, risk.sku))
        if row is None:
            row = SupplyWarning(depot_id=risk.depot, sku=risk.sku, level="ok", probability=0.0)
            session.add(row)
        calm = stored_utc(row.calm_since) if row.calm_since else None
        level, row.calm_since = next_level(row.level, calm, risk, now)
        row.probability, row.reasons, row.figures = risk.probability, risk.reasons, risk.figures
        row.actions, row.assessed_at = risk.actions, now
        if level != row.level:
            changes.append(await _change(session, row, level, now))
    return changes


async def _change(session: AsyncSession, row: SupplyWarning, level: str, now: datetime) -> SupplyWarningLog:
    before = row.level
    if before == "ok":
        change = "opened"
        row.opened_at = now
    elif level == "ok":
        change = "cleared"
    else:
        change = "escalated" if LEVELS.index(level) > LEVELS.index(before) else "deescalated"
    row.level, row.level_since = level, now
    if level == "ok":
        row.opened_at = None
    entry = SupplyWarningLog(
        depot_id=row.depot_id,
        sku=row.sku,
        at=now,
        change=change,
        from_level=before,
        to_level=level,
        probability=row.probability,
        reasons=row.reasons,
        figures=row.figures,
        actions=row.actions,
    )
    session.add(entry)
    await session.flush()
    await enqueue(
        session, f"supply_warning.{change}", {"warning": warning_view(row), "change": log_view(entry)}
    )
    return entry


async def cycle(session: AsyncSession, actor: str = "ops-engine") -> list[SupplyWarningLog]:
    """The supply review: order what the positions call for, then assess and store the warnings."""
    await supply.review_all(session, actor)
    await session.flush()
    return await refresh(session, await assess_all(session))
