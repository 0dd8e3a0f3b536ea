"""Spare-parts planning: demand per depot and SKU, reorder points, and the supply-risk early warning.

Demand is the parts tickets reserve (a part is needed when the fault is diagnosed, not when it is fitted).
Until the fleet has its own history, demand leans on the catalogue's annual failure rate over the installed
base: the daily rate is the prior blended with what was observed, weighted as `PRIOR_DAYS` of evidence.

    d       forecast daily demand = max(blended rate, rate of the last `RECENT_DAYS`)
    σ_d     daily demand deviation = max(sample deviation of daily demand, √d)  (Poisson floor)
    ROP     reorder point = d · L + z · σ_d · √L           (L lead time in days, z service level)
    target  order-up-to level = ROP + d · cover_days
    order   when available + on order < ROP: target − (available + on order), at least 1

Early-warning levels (the highest reason wins): critical — a backlog (more reserved than on hand) or a ≥ 50 %
chance that demand over the lead time (+ 1 σ) exceeds available + on order (Poisson); warning — that chance
≥ 20 %, or failures at ≥ 2× the baseline for a part with a lead time ≥ 30 days; watch — that chance ≥ 5 %,
failures at ≥ 1.5× baseline, a single supplier with a lead time ≥ 30 days, or a lead time varying ≥ 30 %.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import pstdev
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.engine import stored_utc
from chargeops.db.ops_models import Part, Stock, StockMovement

WINDOW_DAYS = 90
RECENT_DAYS = 30
PRIOR_DAYS = 30.0
LEVELS = ("ok", "watch", "warning", "critical")


@dataclass(slots=True)
class Demand:
    """Demand figures for one depot and SKU."""

    installed: int
    prior_per_day: float
    observed_days: float
    window_qty: int
    recent_qty: int
    daily: list[int] = field(default_factory=list)

    @property
    def blended_per_day(self) -> float:
        return (self.prior_per_day * PRIOR_DAYS + self.window_qty) / (PRIOR_DAYS + self.observed_days)

    @property
    def recent_per_day(self) -> float:
        """Over the whole recent window even for a young fleet: one failure on day one is not 1/day."""
        return self.recent_qty / RECENT_DAYS

    @property
    def forecast_per_day(self) -> float:
        return max(self.blended_per_day, self.recent_per_day)

    @property
    def sd_per_day(self) -> float:
        sample = pstdev(self.daily) if len(self.daily) > 1 else 0.0
        return max(sample, math.sqrt(self.forecast_per_day))

    @property
    def trend(self) -> float | None:
        """Recent failure rate over the baseline (the catalogue rate blended with older history)."""
        older_days = max(0.0, self.observed_days - RECENT_DAYS)
        older_qty = self.window_qty - self.recent_qty
        baseline = (self.prior_per_day * PRIOR_DAYS + older_qty) / (PRIOR_DAYS + older_days)
        return self.recent_per_day / baseline if baseline > 0 else None


def reorder_point(part: Part, d: Demand) -> int:
    lead = part.lead_time_days
    return math.ceil(d.forecast_per_day * lead + part.service_level_z * d.sd_per_day * math.sqrt(lead))


def target_level(part: Part, d: Demand) -> int:
    return reorder_point(part, d) + math.ceil(d.forecast_per_day * part.cover_days)


def order_quantity(part: Part, d: Demand, stock: Stock) -> int:
    """Units to order now (0 when available + on order is not below the reorder point)."""
    position = stock.available + stock.on_order
    if position >= reorder_point(part, d):
        return 0
    return max(1, target_level(part, d) - position)


async def first_activity(session: AsyncSession) -> datetime | None:
    """When the fleet's own stock history starts (movements before that do not exist, so are not zeros)."""
    return await session.scalar(select(func.min(StockMovement.at)))


async def demand(
    session: AsyncSession,
    depot: str,
    sku: str,
    part: Part,
    installed: int,
    *,
    now: datetime | None = None,
    since: datetime | None = None,
) -> Demand:
    now = now or clock.now()
    start = now - timedelta(days=WINDOW_DAYS)
    rows = await session.execute(
        select(StockMovement.at, StockMovement.qty).where(
            StockMovement.depot_id == depot,
            StockMovement.sku == sku,
            StockMovement.kind == "reserve",
            StockMovement.at >= start,
        )
    )
    return _demand(list(rows.all()), part, installed, now, since)


def _demand(rows: list[Any], part: Part, installed: int, now: datetime, since: datetime | None) -> Demand:
    history_start = max(now - timedelta(days=WINDOW_DAYS), stored_utc(since) if since else now)
    observed = max(1.0, (now - history_start).total_seconds() / 86400)
    days = math.ceil(observed)
    daily = [0] * days
    recent_from = now - timedelta(days=RECENT_DAYS)
    window = recent = 0
    for at, qty in rows:
        at = stored_utc(at)
        window += qty
        recent += qty if at >= recent_from else 0
        daily[min(days - 1, max(0, int((now - at).total_seconds() // 86400)))] += qty
    return Demand(installed, installed * part.annual_failure_rate / 365, observed, window, recent, daily)


@dataclass(slots=True)
class Risk:
    """One depot/SKU's early warning, with the figures that triggered it."""

    depot: str
    sku: str
    level: str
    reasons: list[dict[str, Any]]
    figures: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stockout_probability(expected_demand: float, position: int) -> float:
    """P(Poisson(expected_demand) > position): failures are rare, independent events."""
    if position < 0:
        return 1.0
    term = total = math.exp(-expected_demand)
    for k in range(1, position + 1):
        term *= expected_demand / k
        total += term
    return max(0.0, 1.0 - total)


def assess(part: Part, d: Demand, stock: Stock, now: datetime) -> Risk:
    rate = d.forecast_per_day
    lead, lead_sd = part.lead_time_days, part.lead_time_sd_days
    cover = stock.available / rate if rate > 0 else math.inf
    trend = d.trend
    figures: dict[str, Any] = {
        "on_hand": stock.on_hand,
        "reserved": stock.reserved,
        "available": stock.available,
        "on_order": stock.on_order,
        "installed_base": d.installed,
        "demand_per_day": round(rate, 4),
        "demand_sd_per_day": round(d.sd_per_day, 4),
        "demand_last_30_days": d.recent_qty,
        "demand_last_90_days": d.window_qty,
        "failure_rate_per_unit_year": round(d.recent_per_day * 365 / d.installed, 4) if d.installed else None,
        "catalogue_failure_rate_per_unit_year": part.annual_failure_rate,
        "trend": round(trend, 2) if trend is not None else None,
        "days_of_cover": round(cover, 1) if math.isfinite(cover) else None,
        "stockout_date": (now + timedelta(days=cover)).date().isoformat() if math.isfinite(cover) else None,
        "lead_time_days": lead,
        "lead_time_sd_days": lead_sd,
        "reorder_point": reorder_point(part, d),
        "suppliers": len(part.suppliers),
    }
    reasons: list[dict[str, Any]] = []

    def flag(level: str, code: str, text: str) -> None:
        reasons.append({"level": level, "code": code, "text": text})

    if stock.available < 0 or (stock.available == 0 and stock.reserved > 0):
        flag("critical", "backlog", f"{stock.reserved} reserved against {stock.on_hand} on hand")
    # Chance that demand before a new order could arrive (pessimistic lead time) exceeds the position.
    p_out = stockout_probability(rate * (lead + lead_sd), stock.available + stock.on_order)
    figures["stockout_probability"] = round(p_out, 3)
    for level, threshold in (("critical", 0.5), ("warning", 0.2), ("watch", 0.05)):
        if p_out >= threshold:
            flag(
                level,
                "stockout_within_lead_time",
                f"{p_out:.0%} chance of running out within the {lead:.0f} ± {lead_sd:.0f}-day lead time "
                f"({cover:.0f} days of cover)",
            )
            break
    if trend is not None and trend >= 2 and lead >= 30:
        flag(
            "warning", "failures_rising_long_lead_time", f"failures {trend:.1f}× baseline, lead {lead:.0f} d"
        )
    elif trend is not None and trend >= 1.5:
        flag("watch", "failures_rising", f"failures at {trend:.1f}× the baseline rate")
    if len(part.suppliers) <= 1 and lead >= 30:
        flag("watch", "single_sourced", f"one supplier, lead time {lead:.0f} days")
    if lead > 0 and lead_sd / lead >= 0.3:
        flag("watch", "unreliable_lead_time", f"lead time varies ± {lead_sd:.0f} of {lead:.0f} days")
    level = max((r["level"] for r in reasons), key=LEVELS.index, default="ok")
    return Risk(stock.depot_id, stock.sku, level, reasons, figures)


async def assess_all(
    session: AsyncSession, installed: dict[tuple[str, str], int], now: datetime | None = None
) -> list[Risk]:
    """Every depot/SKU that has stock, an installed base or demand, most urgent first."""
    now = now or clock.now()
    parts = {p.sku: p for p in (await session.scalars(select(Part))).all()}
    stocks = {(s.depot_id, s.sku): s for s in (await session.scalars(select(Stock))).all()}
    rows = await session.execute(
        select(StockMovement.depot_id, StockMovement.sku, StockMovement.at, StockMovement.qty).where(
            StockMovement.kind == "reserve", StockMovement.at >= now - timedelta(days=WINDOW_DAYS)
        )
    )
    moves: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for depot, sku, at, qty in rows.all():
        moves[(depot, sku)].append((at, qty))
    since = await first_activity(session)
    risks = []
    for key in sorted(set(stocks) | set(installed) | set(moves)):
        part = parts.get(key[1])
        if part is None:
            continue
        stock = stocks.get(key) or Stock(depot_id=key[0], sku=key[1], on_hand=0, reserved=0, on_order=0)
        d = _demand(moves.get(key, []), part, installed.get(key, 0), now, since)
        risks.append(assess(part, d, stock, now))
    risks.sort(key=lambda r: (-LEVELS.index(r.level), r.depot, r.sku))
    return risks
