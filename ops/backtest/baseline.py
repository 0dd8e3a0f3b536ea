"""The replenishment rule chargeops ran before the early warning was measured ("today's policy" of issue 9),
kept only so the back-test can replay the same history under it and compare stock held and fill rate.

    d      forecast daily demand = max(catalogue prior blended with the last 90 days, rate of the last 30)
    σ_d    max(sample deviation of daily demand over the window, √d)
    ROP    ⌈d · L_cat + z · σ_d · √L_cat⌉       (the catalogue lead time; nothing measured)
    target ROP + ⌈d · cover_days⌉
    order  when available + on order < ROP, and only when no order for the depot/SKU is open

Demand is what the snapshot counts (parts really used), so the comparison isolates the rule itself: the
old rule also counted every reserved part as used, which only inflated its stock.
"""

from __future__ import annotations

import math
from datetime import timedelta
from statistics import pstdev

from chargeops.db.ops_models import Part
from ops.planning.demand import Forecast
from ops.planning.history import History, Pair
from ops.planning.leadtime import LeadTime
from ops.planning.policy import Policy, Rule, model_rule

WINDOW_DAYS = 90
RECENT_DAYS = 30
PRIOR_DAYS = 30.0
NEVER = -1e9  # a reorder point no position reaches (finite: it is shown and stored as a figure)


def legacy_rule(history: History, pair: Pair, part: Part, demand: Forecast, lead: LeadTime) -> Policy:
    if history.open_orders(pair):
        return Policy(NEVER, NEVER)
    now = history.now
    start = max(now - timedelta(days=WINDOW_DAYS), history.since)
    observed = max(1.0, (now - start).total_seconds() / 86400)
    daily = [0.0] * math.ceil(observed)
    recent = 0.0
    for used in history.demand.get(pair, ()):
        if start <= used.at <= now:
            ago = (now - used.at).total_seconds() / 86400
            daily[min(len(daily) - 1, int(ago))] += used.qty
            recent += used.qty if ago < RECENT_DAYS else 0.0
    prior = history.installed_now(pair) * part.annual_failure_rate / 365
    blended = (prior * PRIOR_DAYS + sum(daily)) / (PRIOR_DAYS + observed)
    d = max(blended, recent / RECENT_DAYS)
    sd = max(pstdev(daily) if len(daily) > 1 else 0.0, math.sqrt(d))
    lt = part.lead_time_days
    rop = math.ceil(d * lt + part.service_level_z * sd * math.sqrt(lt))
    return Policy(rop - 1, rop + math.ceil(d * part.cover_days))


RULES: dict[str, Rule] = {"model": model_rule, "legacy": legacy_rule}
