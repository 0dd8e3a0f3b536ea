"""Supplier lead times, measured: per supplier and SKU, from order to the receipt that completed it.

The catalogue's lead time is the prior, N(L_cat, σ_cat) weighted as `PRIOR_ORDERS` orders; the last
`RECENT_ORDERS` completed orders move it toward what the supplier really does. An open order already older
than the estimate is evidence too (its lead time is at least its age), so a supplier that has stopped
delivering raises its own estimate before a single late order arrives. An order is **overdue** past its
promised date, or past L̂ + 2σ̂ when it has none.

An open order's arrival is drawn conditional on it not having arrived yet: before L̂ from the normal
lead time cut at its age; once it is later than L̂, the time still to wait is exponential with a mean of
how late it already is (an order two weeks late is, as a rule, not about to land tomorrow).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from scipy import stats

from ops.planning.history import History, Order

PRIOR_ORDERS = 2.0
RECENT_ORDERS = 8
OVERDUE_SIGMAS = 2.0
ON_TIME_GRACE_DAYS = 1.0


@dataclass(frozen=True, slots=True)
class LeadTime:
    supplier: str | None
    sku: str
    mean: float
    sd: float
    catalogue_mean: float
    catalogue_sd: float
    completed: int  # orders measured
    on_time: float | None  # share completed by their promised date (None: none measured)

    def overdue_days(self, order: Order, now: datetime) -> float:
        """Days past the promised date (or past L̂ + 2σ̂ without one); ≤ 0 while not overdue."""
        if order.promised_at is not None:
            return (now - order.promised_at).total_seconds() / 86400
        return order.age_days(now) - (self.mean + OVERDUE_SIGMAS * self.sd)

    def expected_arrival_days(self, order: Order, now: datetime) -> float:
        """Mean days from now until the order lands."""
        age = order.age_days(now)
        if age >= self.mean:
            return max(self.sd, age - self.mean)
        sd = max(self.sd, 0.5)
        a = (age - self.mean) / sd
        return float(stats.truncnorm.mean(a, math.inf, loc=self.mean, scale=sd)) - age

    def sample_arrival_days(
        self, order: Order, now: datetime, rng: np.random.Generator, n: int
    ) -> np.ndarray:
        """n draws of the days from now until the order lands (≥ 0)."""
        age = order.age_days(now)
        if age >= self.mean:
            return rng.exponential(max(self.sd, age - self.mean, 0.5), n)
        sd = max(self.sd, 0.5)
        a = (age - self.mean) / sd
        drawn = stats.truncnorm.rvs(a, math.inf, loc=self.mean, scale=sd, size=n, random_state=rng)
        return np.maximum(np.asarray(drawn) - age, 0.0)


def estimate(
    supplier: str | None, sku: str, cat_mean: float, cat_sd: float, orders: list[Order], now: datetime
) -> LeadTime:
    """The lead time of `supplier` for `sku` from its orders (any depot), oldest first."""
    done = [o for o in orders if o.lead_days is not None][-RECENT_ORDERS:]
    samples = [o.lead_days for o in done if o.lead_days is not None]
    # Open orders already older than what the completed ones say are lower bounds worth counting.
    provisional = _mean(cat_mean, samples)
    samples += [o.age_days(now) for o in orders if o.open and o.age_days(now) > provisional]
    mean = _mean(cat_mean, samples)
    w = PRIOR_ORDERS + len(samples)
    var = (PRIOR_ORDERS * (cat_sd**2 + (cat_mean - mean) ** 2) + sum((x - mean) ** 2 for x in samples)) / w
    promised = [o for o in done if o.promised_at is not None and o.completed_at is not None]
    on_time = (
        sum(
            (o.completed_at - o.promised_at).total_seconds() / 86400 <= ON_TIME_GRACE_DAYS  # type: ignore[operator]
            for o in promised
        )
        / len(promised)
        if promised
        else None
    )
    return LeadTime(supplier, sku, mean, math.sqrt(var), cat_mean, cat_sd, len(done), on_time)


def _mean(prior: float, samples: list[float]) -> float:
    return (PRIOR_ORDERS * prior + sum(samples)) / (PRIOR_ORDERS + len(samples))


def lead_times(history: History) -> dict[tuple[str | None, str], LeadTime]:
    """(supplier, SKU) → its lead time, for every supplier in the catalogue and every one ordered from."""
    by_key: dict[tuple[str | None, str], list[Order]] = defaultdict(list)
    for o in history.orders:
        by_key[(o.supplier, o.sku)].append(o)
    keys = set(by_key) | {(s, sku) for sku, p in history.parts.items() for s in _suppliers(p.suppliers)}
    out = {}
    for supplier, sku in keys:
        part = history.parts.get(sku)
        if part is None:
            continue
        out[(supplier, sku)] = estimate(
            supplier,
            sku,
            part.lead_time_days,
            part.lead_time_sd_days,
            by_key.get((supplier, sku), []),
            history.now,
        )
    return out


def preferred(part_suppliers: list[str], sku: str, times: dict[tuple[str | None, str], LeadTime]) -> LeadTime:
    """The supplier to order from: shortest expected lead time (mean + σ); catalogue order breaks ties."""
    options = [times[(s, sku)] for s in _suppliers(part_suppliers) if (s, sku) in times]
    return min(options, key=lambda lt: lt.mean + lt.sd)


def _suppliers(names: list[str]) -> list[str | None]:
    return list(names) if names else [None]
