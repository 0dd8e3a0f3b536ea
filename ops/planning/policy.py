"""Replenishment on the inventory position, with the lead time that was measured (Silver, Pyke & Peterson).

    IP   inventory position = on hand − reserved + still on order (every open order counts)
    s    reorder point = d̄ · L̄ + z · √(L̄ · σ_d² + d̄² · σ_L²)
    S    order-up-to level = s + d̄ · cover days
    order when IP ≤ s: S − IP, rounded up (at least 1)

d̄, σ_d² are the forecast daily demand and its variance (negative binomial: the rate's uncertainty counts);
L̄, σ_L the preferred supplier's measured lead time. Several orders may be open at once: an order in transit
counts in IP, so stock is topped up again as soon as demand eats into the position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chargeops.db.ops_models import Part
from ops.planning.demand import Forecast
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
    s = d * lead.mean + part.service_level_z * math.sqrt(lead.mean * var + d**2 * lead.sd**2)
    return Policy(s, s + d * part.cover_days)


def position(on_hand: int, reserved: int, on_order: int) -> int:
    return on_hand - reserved + on_order
