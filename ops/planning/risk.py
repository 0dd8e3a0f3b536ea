"""The stock-out probability of a depot/SKU and the warning figures, reasons and proposed actions behind it.

The one number: P(a ticket finds the depot's available stock short within the protection interval H =
L + σ_L of the part), from the predictive demand (negative binomial: trend and installed base included) and
the supply pipeline (each open order's arrival drawn from its supplier's measured lead time, conditional on
not having arrived yet, so an overdue order pushes the risk up). Computed by seeded Monte Carlo
(`PATHS` paths; the same snapshot gives the same answer), short-cut by exact bounds when the answer is
clearly near 0 or 1. This is the number the back-test calibrates and the levels are set from.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from ops.planning.demand import Forecast
from ops.planning.history import History, Order, Pair
from ops.planning.leadtime import LeadTime
from ops.planning.policy import Policy, position

PATHS = 2000
NEGLIGIBLE = 0.005
LEVELS = ("ok", "watch", "warning", "critical")
RAISE_AT = {"watch": 0.2, "warning": 0.5, "critical": 0.8}


def raw_level(probability: float, short_now: bool) -> str:
    """The level the probability alone calls for (hysteresis is the stored warning's business)."""
    if short_now:
        return "critical"
    return next((lv for lv in ("critical", "warning", "watch") if probability >= RAISE_AT[lv]), "ok")


@dataclass(slots=True)
class Risk:
    """One depot/SKU's assessment: the probability, the level it calls for, why, and what to do."""

    depot: str
    sku: str
    level: str
    probability: float
    reasons: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def horizon_days(lead_mean: float, lead_sd: float) -> int:
    return max(1, math.ceil(lead_mean + lead_sd))


def stockout_probability(
    available: int,
    arrivals: list[tuple[int | np.ndarray, np.ndarray]],
    demand: Forecast,
    horizon: int,
    rng: np.random.Generator,
) -> float:
    """P(demand up to some day t ≤ horizon, plus the holds still out that day, exceeds available + what
    has arrived by t).

    `arrivals`: per open order (or reservation likely to come back unused), its quantity (or `PATHS` draws
    of it) and `PATHS` draws of its arrival (days from now)."""
    if available < 0:
        return 1.0
    if demand.per_day <= 0 and demand.hold_per_day <= 0:
        return 0.0
    upper = demand.tail(horizon, available, with_holds=True)  # nothing arrives, no hold comes back
    if upper < NEGLIGIBLE or (not arrivals and demand.hold_per_day <= 0):
        return upper  # exact when nothing is on order and nothing is held
    most = sum(int(np.max(q)) for q, _ in arrivals)
    lower = demand.tail(horizon, available + most)  # everything arrives today
    if lower > 1 - NEGLIGIBLE:
        return lower
    lam = (
        rng.gamma(demand.shape, demand.per_day / demand.shape, PATHS)
        if demand.per_day > 0
        else np.zeros(PATHS)
    )
    used = np.cumsum(rng.poisson(lam[:, None], (PATHS, horizon)), axis=1)
    if demand.hold_per_day > 0:  # holds taken each day, each back after hold_days
        taken = np.cumsum(rng.poisson(demand.hold_per_day, (PATHS, horizon)), axis=1)
        lag = max(1, round(demand.hold_days))
        back = np.zeros_like(taken)
        back[:, lag:] = taken[:, :-lag] if lag < horizon else 0
        used = used + taken - back
    days = np.arange(1, horizon + 1)
    stock = np.full((PATHS, horizon), float(available))
    for qty, when in arrivals:
        stock += np.asarray(qty, dtype=float).reshape(-1, 1) * (np.ceil(when)[:, None] <= days[None, :])
    return float(np.mean(np.any(used > stock, axis=1)))


def rng_for(history: History, pair: Pair) -> np.random.Generator:
    """Seeded by depot, SKU and day: the same snapshot gives the same probability."""
    return np.random.default_rng(zlib.crc32(f"{pair[0]}|{pair[1]}|{history.now.date()}".encode()))


def assess(
    history: History,
    pair: Pair,
    demand: Forecast,
    lead: LeadTime,
    policy: Policy,
    supplier_times: dict[tuple[str | None, str], LeadTime],
) -> Risk:
    part = history.parts[pair[1]]
    now = history.now
    stock = history.stock.get(pair)
    on_hand, reserved = (stock.on_hand, stock.reserved) if stock else (0, 0)
    available = on_hand - reserved
    orders = history.open_orders(pair)
    on_order = sum(o.outstanding for o in orders)
    ip = position(on_hand, reserved, on_order)
    horizon = horizon_days(part.lead_time_days, part.lead_time_sd_days)
    rng = rng_for(history, pair)
    arrivals = []
    order_figures = []
    overdue: list[tuple[Order, float]] = []
    for o in orders:
        if o.outstanding <= 0:
            continue
        lt = supplier_times.get((o.supplier, o.sku), lead)
        arrivals.append((o.outstanding, lt.sample_arrival_days(o, now, rng, PATHS)))
        late = lt.overdue_days(o, now)
        if late > 0:
            overdue.append((o, late))
        order_figures.append(
            {
                "id": o.id,
                "supplier": o.supplier,
                "outstanding": o.outstanding,
                "ordered": o.ordered_at.date().isoformat(),
                "promised": o.promised_at.date().isoformat() if o.promised_at else None,
                "age_days": round(o.age_days(now), 1),
                "overdue_days": round(late, 1) if late > 0 else 0,
                "expected_in_days": round(lt.expected_arrival_days(o, now), 1),
            }
        )
    returning: list[tuple[int | np.ndarray, np.ndarray]] = list(arrivals)
    for units, unused, age in history.returns.get(pair, ()):
        back = max(1.0, history.hold_days - age)  # the repair's expected end
        returning.append((rng.binomial(units, unused, PATHS), np.full(PATHS, back)))
    p = stockout_probability(available, returning, demand, horizon, rng)
    rate = demand.per_day
    cover = available / rate if rate > 0 and available >= 0 else (0.0 if available < 0 else math.inf)
    figures: dict[str, Any] = {
        "on_hand": on_hand,
        "reserved": reserved,
        "available": available,
        "on_order": on_order,
        "inventory_position": ip,
        "installed_base": demand.installed,
        "demand_per_day": round(rate, 5),
        "demand_sd_per_day": round(math.sqrt(demand.var_per_day), 5),
        "held_for_repairs_per_day": round(demand.hold_per_day, 5),
        "failure_rate_per_unit_year": round(demand.rate_per_unit_year, 5)
        if demand.rate_per_unit_year is not None
        else None,
        "catalogue_failure_rate_per_unit_year": demand.catalogue_rate,
        "failures_observed": round(demand.observed, 2),
        "trend": {
            "scope": demand.trend.scope,
            "factor": round(demand.trend.factor, 2),
            "count": demand.trend.count,
            "expected": round(demand.trend.expected, 2),
            "p": demand.trend.p,
        }
        if demand.trend
        else None,
        "days_of_cover": round(cover, 1) if math.isfinite(cover) else None,
        "stockout_date": (now + timedelta(days=cover)).date().isoformat() if math.isfinite(cover) else None,
        "horizon_days": horizon,
        "stockout_probability": round(p, 3),
        "lead_time_days": round(lead.mean, 1),
        "lead_time_sd_days": round(lead.sd, 1),
        "catalogue_lead_time_days": part.lead_time_days,
        "supplier": lead.supplier,
        "supplier_on_time": lead.on_time,
        "reorder_point": round(policy.reorder_point, 2),
        "order_up_to": round(policy.order_up_to, 2),
        "open_orders": order_figures,
        "suppliers": len(part.suppliers),
    }
    risk = Risk(pair[0], pair[1], raw_level(p, available < 0), p, figures=figures)
    _explain(risk, demand, overdue, cover, horizon, available, on_order, policy, ip)
    return risk


def _explain(
    risk: Risk,
    demand: Forecast,
    overdue: list[tuple[Order, float]],
    cover: float,
    horizon: int,
    available: int,
    on_order: int,
    policy: Policy,
    ip: int,
) -> None:
    def reason(code: str, text: str) -> None:
        risk.reasons.append({"code": code, "text": text})

    if available < 0:
        reason("short_now", f"{-available} more reserved than on hand: crews are waiting for parts")
    if risk.probability >= NEGLIGIBLE:
        expected = demand.per_day * horizon
        reason(
            "stockout_risk",
            f"{risk.probability:.0%} chance of a stock-out within {horizon} days "
            f"(expected demand {expected:.1f}, available {available}, on order {on_order})",
        )
    if demand.trend is not None:
        reason("failures_rising", f"failures rising: {demand.trend.text()}")
    for order, late in overdue:
        reason(
            "order_overdue",
            f"PO {order.id} from {order.supplier or 'unknown supplier'} {late:.0f} days overdue",
        )
    if risk.level == "ok":
        return
    for order, late in overdue:
        risk.actions.append(
            {"action": "expedite", "order": order.id, "supplier": order.supplier,
             "text": f"expedite PO {order.id} ({order.outstanding} units, {late:.0f} days overdue)"}
        )  # fmt: skip
    late_ids = {o.id for o, _ in overdue}
    for o in risk.figures["open_orders"]:
        if o["id"] not in late_ids and math.isfinite(cover) and o["expected_in_days"] > cover:
            risk.actions.append(
                {"action": "expedite", "order": o["id"], "supplier": o["supplier"],
                 "text": f"expedite PO {o['id']}: expected in {o['expected_in_days']:.0f} days, "
                 f"stock lasts about {cover:.0f}"}
            )  # fmt: skip
    if ip <= policy.reorder_point:
        qty = policy.quantity(ip)
        text = f"order {qty} more now (position {ip} ≤ reorder point {policy.reorder_point:.1f})"
        risk.actions.append({"action": "order", "qty": qty, "text": text})


def propose_transfers(risks: list[Risk]) -> None:
    """A depot at warning or worse: move units from a depot of the same SKU whose position beyond its own
    reorder point covers them and that is itself out of danger."""
    by_sku: dict[str, list[Risk]] = {}
    for r in risks:
        by_sku.setdefault(r.sku, []).append(r)
    for r in risks:
        if LEVELS.index(r.level) < LEVELS.index("warning"):
            continue
        f = r.figures
        need = max(1, math.ceil(f["reorder_point"] - f["inventory_position"]), -f["available"])
        donors = []
        for other in by_sku[r.sku]:
            o = other.figures
            spare = min(o["available"], math.floor(o["inventory_position"] - o["reorder_point"]))
            if other.depot != r.depot and other.probability < NEGLIGIBLE * 10 and spare >= 1:
                donors.append((spare, other.depot))
        if donors:
            spare, depot = max(donors)
            k = min(need, spare)
            r.actions.append(
                {"action": "transfer", "from_depot": depot, "qty": k,
                 "text": f"move {k} from depot {depot} (it holds {spare} beyond its reorder point)"}
            )  # fmt: skip
