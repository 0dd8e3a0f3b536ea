"""Spare-parts planning: demand, measured lead times, replenishment and the stock-out early warning.

`history` reads one snapshot; `demand` forecasts failures (gamma–Poisson, tested trend); `leadtime` measures
suppliers; `policy` sets reorder points on the inventory position; `risk` turns it all into the stock-out
probability, with reasons and actions. `assess_all` runs the whole chain for every depot and SKU.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ops.planning.demand import Forecast, fleet_trends, forecast
from ops.planning.history import History, Pair, load
from ops.planning.leadtime import LeadTime, lead_times, preferred
from ops.planning.policy import Policy, rule
from ops.planning.risk import LEVELS, Risk, assess, propose_transfers

__all__ = ["LEVELS", "History", "Pair", "Plan", "Risk", "assess_all", "load", "plan"]


@dataclass(slots=True)
class Plan:
    """What planning knows about one depot/SKU at a snapshot."""

    pair: Pair
    demand: Forecast
    lead: LeadTime
    policy: Policy


def plan(history: History) -> tuple[dict[Pair, Plan], dict[tuple[str | None, str], LeadTime]]:
    trends = fleet_trends(history)
    times = lead_times(history)
    plans = {}
    replenish = rule()
    for pair in history.pairs():
        part = history.parts[pair[1]]
        d = forecast(history, pair, trends.get(pair[1]))
        lt = preferred(part.suppliers, pair[1], times)
        plans[pair] = Plan(pair, d, lt, replenish(history, pair, part, d, lt))
    return plans, times


def assess_history(history: History) -> list[Risk]:
    plans, times = plan(history)
    risks = [assess(history, p.pair, p.demand, p.lead, p.policy, times) for p in plans.values()]
    propose_transfers(risks)
    risks.sort(key=lambda r: (-LEVELS.index(r.level), -r.probability, r.depot, r.sku))
    return risks


async def assess_all(session: AsyncSession) -> list[Risk]:
    """Every depot/SKU with stock, an installed base, demand or an order: most urgent first."""
    return assess_history(await load(session))
