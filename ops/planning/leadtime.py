"""Supplier lead times, measured, and supplier disruptions inferred from the orders still out.

Per supplier and SKU, a lead time is a mixture of two regimes:
- **normal**: L̂ ± σ̂, the catalogue's N(L_cat, σ_cat) as a prior weighted as `PRIOR_ORDERS` orders, moved
  toward the last `RECENT_ORDERS` completed orders (each weighted by how normal it looks). Its predictive
  form is Student-t with more degrees of freedom the more orders are behind it: σ̂ from a handful of orders
  is itself uncertain, and a thin normal tail would call every third late order a disruption;
- **disrupted**: Pareto from L̂ + 2σ̂ with shape `DISRUPTED_SHAPE` — "late, by an unknown factor" (an
  allocation, a factory stop, a port closure): scale-free, and the longer an order has been stuck the longer
  it is expected to stay stuck (at age a, another a / (shape − 1) days on average).

A disruption is a property of the supplier, not of one order: when its oldest order is stuck, the ones placed
after it are stuck too. So the posterior probability that a supplier is disrupted (`LeadTime.disruption`)
pools every open order it has, of any SKU and depot: each order still out at age a is evidence through the
survival of each regime, P(L > a). The prior is the supplier's own share of disrupted completed orders,
Beta(1, 49) (2 %) to start. The stock-out probability draws one regime per Monte Carlo path for all of a
supplier's orders, so their delays move together. Only orders already past L̂ + 2σ̂ count as evidence: mild
lateness of many orders at once is what a thin-tailed normal model misreads, and a flood of false
disruptions is worse than one found a few days later. The replenishment policy keeps the normal regime (it
does not chase a disruption of unknown length with months of stock); the warning, the supplier choice
(`preferred`, by `expected_mean`) and the proposed actions (expedite, transfer) carry the disruption.

An order is **overdue** past its promised date, or past L̂ + 2σ̂ when it has none.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from scipy import stats

from ops.planning.history import History, Order

PRIOR_ORDERS = 2.0
PRIOR_DOF = 5.0  # the catalogue's σ counts as this many degrees of freedom of the Student-t
RECENT_ORDERS = 8
OVERDUE_SIGMAS = 2.0
ON_TIME_GRACE_DAYS = 1.0
DISRUPTED_SHAPE = 2.5  # Pareto shape of a disrupted lead time: mean 5/3 of its start, finite variance
DISRUPTION_PRIOR = (1.0, 49.0)  # Beta(a, b) on the share of a supplier's orders caught in a disruption


@dataclass(frozen=True, slots=True)
class LeadTime:
    supplier: str | None
    sku: str
    mean: float  # the normal regime
    sd: float
    catalogue_mean: float
    catalogue_sd: float
    completed: int  # orders measured
    on_time: float | None  # share completed by their promised date (None: none measured)
    disruption: float = 0.0  # P(the supplier is disrupted now), from its open orders
    disrupted_share: float = DISRUPTION_PRIOR[0] / sum(DISRUPTION_PRIOR)  # the prior behind it

    @property
    def disrupted_from(self) -> float:
        """Where a disrupted lead time starts: where the normal one has all but ended."""
        return max(1.0, self.mean + OVERDUE_SIGMAS * max(self.sd, 0.5))

    @property
    def dof(self) -> float:
        return PRIOR_DOF + self.completed

    # -- the two regimes, for an order of age `age` (days) ---------------------------------------------

    def _normal_sf(self, age: float) -> float:
        return float(stats.t.sf(age, self.dof, self.mean, max(self.sd, 0.5)))

    def _disrupted_sf(self, age: float) -> float:
        lo = self.disrupted_from
        return 1.0 if age <= lo else (lo / age) ** DISRUPTED_SHAPE

    def _normal_pdf(self, x: float) -> float:
        return float(stats.t.pdf(x, self.dof, self.mean, max(self.sd, 0.5)))

    def _disrupted_pdf(self, x: float) -> float:
        lo, k = self.disrupted_from, DISRUPTED_SHAPE
        return k * lo**k / x ** (k + 1) if x >= lo else 0.0

    def overdue_days(self, order: Order, now: datetime) -> float:
        """Days past the promised date (or past L̂ + 2σ̂ without one); ≤ 0 while not overdue."""
        if order.promised_at is not None:
            return (now - order.promised_at).total_seconds() / 86400
        return order.age_days(now) - (self.mean + OVERDUE_SIGMAS * self.sd)

    def _remaining_means(self, age: float) -> tuple[float, float]:
        """Mean days still to wait under each regime, given the order is `age` days old and still out."""
        sd, nu = max(self.sd, 0.5), self.dof
        z = (age - self.mean) / sd
        tail = stats.t.sf(z, nu)  # E[T | T > z] = (ν + z²) / (ν − 1) · f(z) / S(z) for Student-t, ν > 1
        normal = (
            self.mean + sd * (nu + z * z) / (nu - 1) * stats.t.pdf(z, nu) / tail - age if tail > 1e-9 else 0.0
        )
        start = max(self.disrupted_from, age)
        disrupted = DISRUPTED_SHAPE * start / (DISRUPTED_SHAPE - 1) - age
        return max(0.0, float(normal)), max(0.0, disrupted)

    def expected_arrival_days(self, order: Order, now: datetime) -> float:
        """Mean days from now until the order lands (both regimes, weighted by the supplier's state)."""
        normal, disrupted = self._remaining_means(order.age_days(now))
        return (1 - self.disruption) * normal + self.disruption * disrupted

    def sample_arrival_days(
        self,
        order: Order,
        now: datetime,
        rng: np.random.Generator,
        n: int,
        disrupted: np.ndarray | None = None,
    ) -> np.ndarray:
        """n draws of the days from now until the order lands (≥ 0). `disrupted`: per draw, the supplier's
        regime (shared by its orders on one path); drawn here from `disruption` when not given."""
        if disrupted is None:
            disrupted = rng.random(n) < self.disruption
        age = order.age_days(now)
        t = stats.t(self.dof, self.mean, max(self.sd, 0.5))
        below = t.cdf(age)
        if below < 1 - 1e-9:  # the normal regime, cut at the order's age (inverse CDF of the tail)
            normal = t.ppf(rng.uniform(below, 1.0, n))
        else:
            normal = np.full(n, age)
        start = max(self.disrupted_from, age)
        late = start * rng.random(n) ** (-1 / DISRUPTED_SHAPE)  # Pareto from `start`
        return np.maximum(np.where(disrupted, late, np.asarray(normal)) - age, 0.0)

    # -- what a new order should be planned with -------------------------------------------------------

    @property
    def evidence(self) -> float:
        """How far the orders still out have raised the disruption probability above the supplier's base
        rate (0: no sign of one)."""
        base = self.disrupted_share
        return max(0.0, (self.disruption - base) / (1 - base)) if base < 1 else self.disruption

    @property
    def expected_mean(self) -> float:
        """What a new order from this supplier is expected to take: a disruption the evidence shows moves it;
        the base rate alone does not."""
        q = self.evidence
        return (1 - q) * self.mean + q * self._disrupted_mean()

    @property
    def expected_sd(self) -> float:
        q, m, k, lo = self.evidence, self.expected_mean, DISRUPTED_SHAPE, self.disrupted_from
        d_mean = self._disrupted_mean()
        d_var = lo**2 * k / ((k - 1) ** 2 * (k - 2))
        var = (1 - q) * (self.sd**2 + (self.mean - m) ** 2) + q * (d_var + (d_mean - m) ** 2)
        return math.sqrt(max(0.0, var))

    def _disrupted_mean(self) -> float:
        return DISRUPTED_SHAPE * self.disrupted_from / (DISRUPTED_SHAPE - 1)

    def responsibility(self, lead_days: float, share: float) -> float:
        """P(a completed order of `lead_days` was caught in a disruption), at a disrupted share `share`."""
        d = share * self._disrupted_pdf(lead_days)
        n = (1 - share) * self._normal_pdf(lead_days)
        return d / (d + n) if d + n > 0 else 1.0


def estimate(
    supplier: str | None, sku: str, cat_mean: float, cat_sd: float, orders: list[Order], now: datetime
) -> LeadTime:
    """The normal-regime lead time of `supplier` for `sku` from its completed orders (any depot, oldest
    first): each weighted by how likely it is normal, so one order stuck in a disruption does not drag the
    everyday figure to it (it counts toward the supplier's disrupted share instead)."""
    done = [o for o in orders if o.lead_days is not None][-RECENT_ORDERS:]
    samples = [o.lead_days for o in done if o.lead_days is not None]
    share = DISRUPTION_PRIOR[0] / sum(DISRUPTION_PRIOR)
    lt = LeadTime(supplier, sku, cat_mean, cat_sd, cat_mean, cat_sd, len(done), _on_time(done), 0.0, share)
    for _ in range(3):  # a few EM steps: weights from the current fit, the fit from the weights
        w = [1 - lt.responsibility(x, share) for x in samples]
        total = PRIOR_ORDERS + sum(w)
        mean = (PRIOR_ORDERS * cat_mean + sum(wi * x for wi, x in zip(w, samples, strict=True))) / total
        var = (
            PRIOR_ORDERS * (cat_sd**2 + (cat_mean - mean) ** 2)
            + sum(wi * (x - mean) ** 2 for wi, x in zip(w, samples, strict=True))
        ) / total
        share = (DISRUPTION_PRIOR[0] + len(samples) - sum(w)) / (sum(DISRUPTION_PRIOR) + len(samples))
        lt = replace(lt, mean=mean, sd=math.sqrt(var), disruption=share, disrupted_share=share)
    return lt


def _on_time(done: list[Order]) -> float | None:
    promised = [o for o in done if o.promised_at is not None and o.completed_at is not None]
    if not promised:
        return None
    return sum(
        (o.completed_at - o.promised_at).total_seconds() / 86400 <= ON_TIME_GRACE_DAYS  # type: ignore[operator]
        for o in promised
    ) / len(promised)


def disruption(times: list[LeadTime], open_orders: list[Order], now: datetime) -> float:
    """P(the supplier is disrupted) from its disrupted share and the ages of its overdue orders.
    `times`: the supplier's lead time per SKU (all share one supplier)."""
    by_sku = {lt.sku: lt for lt in times}
    prior = max(lt.disrupted_share for lt in times)
    log_n, log_d = math.log1p(-prior), math.log(prior)
    for o in open_orders:
        lt = by_sku.get(o.sku)
        if lt is None or o.age_days(now) <= lt.disrupted_from:
            continue  # not overdue yet: as likely under either regime, as far as this model can tell
        age = o.age_days(now)
        log_n += math.log(max(lt._normal_sf(age), 1e-300))
        log_d += math.log(max(lt._disrupted_sf(age), 1e-300))
    return 1 / (1 + math.exp(min(700.0, log_n - log_d)))


def lead_times(history: History) -> dict[tuple[str | None, str], LeadTime]:
    """(supplier, SKU) → its lead time, for every supplier in the catalogue and every one ordered from,
    with the supplier's present disruption probability."""
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
    by_supplier: dict[str | None, list[LeadTime]] = defaultdict(list)
    for lt in out.values():
        by_supplier[lt.supplier].append(lt)
    for supplier, times in by_supplier.items():
        still_out = [o for o in history.orders if o.open and o.outstanding > 0 and o.supplier == supplier]
        q = disruption(times, still_out, history.now)
        for lt in times:
            out[(supplier, lt.sku)] = replace(lt, disruption=q)
    return out


def preferred(part_suppliers: list[str], sku: str, times: dict[tuple[str | None, str], LeadTime]) -> LeadTime:
    """The supplier to order from: shortest expected lead time (mean + σ, disruptions included);
    catalogue order breaks ties."""
    options = [times[(s, sku)] for s in _suppliers(part_suppliers) if (s, sku) in times]
    return min(options, key=lambda lt: lt.expected_mean + lt.expected_sd)


def _suppliers(names: list[str]) -> list[str | None]:
    return list(names) if names else [None]
