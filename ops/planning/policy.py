"""Replenishment on the inventory position, with the lead time that was measured (Silver, Pyke & Peterson).

    IP   inventory position = on hand − reserved + still on order (every open order counts)
    s    reorder point = d̄ · L̄ + z · √(L̄ · σ_d² + d̄² · σ_L²)
    S    order-up-to level = s + d̄ · cover days
    order when IP ≤ s: S − IP, rounded up (at least 1)

d̄, σ_d² are the forecast daily demand and its variance (negative binomial: the rate's uncertainty counts);
L̄, σ_L the preferred supplier's measured lead time. The normal approximation behind s understates what a
slow mover needs (0.13 expected failures in a lead time: s = 0.7, so nothing is reordered until the shelf is
empty, and one more failure in the lead time is a stock-out 12 % of the time), so s is at least the
service-level quantile of a negative binomial with the same lead-time demand mean and variance.
Several orders may be open at once: an order in transit counts in IP, so stock is topped up again as soon as
demand eats into the position.

The rule in force is replaceable for a block (`use`, like `chargeops.clock`), so the back-test can replay
the same history under a baseline rule and compare stock and fill rate; the product only ever runs `policy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from scipy import stats

from chargeops.db.ops_models import Part
from ops.planning.demand import Forecast
from ops.planning.history import History, Pair
from ops.planning.leadtime import LeadTime


@dataclass(frozen=True, slots=True)
class Policy:
    reorder_point: float
    order_up_to: float

    def quantity(self, position: int) -> int:
        """Units to order at inventory position `position` (0: none)."""
        if position > self.reorder_point:
            return 0
        return max(1, math.ceil(self.order_up_to - position))


def policy(part: Part, demand: Forecast, lead: LeadTime) -> Policy:
    d, var = demand.per_day, demand.var_per_day
    mean, spread = d * lead.mean, lead.mean * var + d**2 * lead.sd**2
    s = max(mean + part.service_level_z * math.sqrt(spread), _quantile(mean, spread, part.service_level_z))
    return Policy(s, s + d * part.cover_days)


def _quantile(mean: float, var: float, z: float) -> float:
    """The Φ(z) quantile of lead-time demand (negative binomial by its mean and variance; Poisson when the
    variance is not above the mean)."""
    if mean <= 0:
        return 0.0
    level = float(stats.norm.cdf(z))
    if var <= mean:
        return float(stats.poisson.ppf(level, mean))
    return float(stats.nbinom.ppf(level, mean**2 / (var - mean), mean / var))


def position(on_hand: int, reserved: int, on_order: int) -> int:
    return on_hand - reserved + on_order


# (snapshot, depot/SKU, part, forecast, preferred supplier's lead time) → the policy for that pair
Rule = Callable[[History, Pair, Part, Forecast, LeadTime], Policy]


def model_rule(history: History, pair: Pair, part: Part, demand: Forecast, lead: LeadTime) -> Policy:
    return policy(part, demand, lead)


_rule: ContextVar[Rule] = ContextVar("chargeops_replenishment_rule", default=model_rule)


def rule() -> Rule:
    """The replenishment rule in force (the model's, unless a back-test installed a baseline)."""
    return _rule.get()


@contextmanager
def use(replenishment: Rule) -> Iterator[Rule]:
    """Runs the block (and the tasks it starts) under another replenishment rule."""
    token = _rule.set(replenishment)
    try:
        yield replenishment
    finally:
        _rule.reset(token)
