"""The planning formulas with numbers worked by hand (README "Spare parts"): gamma–Poisson demand, the trend
test, measured lead times and overdue orders, the reorder point on the inventory position, the stock-out
probability, and the warning levels' hysteresis."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from chargeops.db.ops_models import Part, Stock
from ops.planning import plan
from ops.planning.demand import HALF_LIFE_DAYS, PRIOR_UNIT_YEARS, TREND_ALPHA, fleet_trends, forecast
from ops.planning.history import Demand, History, Order
from ops.planning.leadtime import PRIOR_ORDERS, estimate
from ops.planning.policy import Policy, policy
from ops.planning.risk import Risk, stockout_probability
from ops.supply_warnings import CALM_DAYS, next_level

NOW = datetime(2026, 11, 25, 8, tzinfo=UTC)
PAIR = ("D1", "PM")


def part(**kw: object) -> Part:
    base = dict(
        sku="PM", name="module", category="power_module", annual_failure_rate=0.0365, lead_time_days=16.0,
        lead_time_sd_days=4.0, suppliers=["A", "B"], service_level_z=2.0, cover_days=10.0,
    )  # fmt: skip
    return Part(**{**base, **kw})


def history(
    demand: list[tuple[float, float]] = (),  # type: ignore[assignment]
    units: int = 100,
    orders: list[Order] | None = None,
    stock: tuple[int, int, int] = (10, 0, 0),
    **part_kw: object,
) -> History:
    """100 units installed a year ago; `demand` as (days ago, units)."""
    on_hand, reserved, on_order = stock
    return History(
        now=NOW,
        parts={"PM": part(**part_kw)},
        stock={PAIR: Stock(depot_id="D1", sku="PM", on_hand=on_hand, reserved=reserved, on_order=on_order)},
        installed={PAIR: [(NOW - timedelta(days=365), units)]},
        demand={PAIR: [Demand(NOW - timedelta(days=ago), qty) for ago, qty in demand]},
        orders=orders or [],
        since=NOW - timedelta(days=365),
    )


def test_gamma_poisson_demand_by_hand() -> None:
    # No failures yet: the catalogue prior, rate 0.0365 / unit-year × 100 units = 0.01 / day.
    quiet = forecast(history(), PAIR)
    e0 = PRIOR_UNIT_YEARS
    assert quiet.rate_per_unit_year == pytest.approx(0.0365 * e0 / (e0 + quiet.exposure_unit_years))
    # Exposure: 100 units over a year, halved every HALF_LIFE_DAYS: 100 · h/ln2 · (1 − 2^(−365/h)) / 365.
    h = HALF_LIFE_DAYS
    assert quiet.exposure_unit_years == pytest.approx(100 * h / math.log(2) * (1 - 0.5 ** (365 / h)) / 365)
    # Two failures 60 and 200 days ago, each weighted by its age.
    d = forecast(history([(60, 1), (200, 1)]), PAIR)
    k = 0.5 ** (60 / h) + 0.5 ** (200 / h)
    alpha, beta = 0.0365 * PRIOR_UNIT_YEARS + k, PRIOR_UNIT_YEARS + d.exposure_unit_years
    assert d.observed == pytest.approx(k)
    assert d.rate_per_unit_year == pytest.approx(alpha / beta) and d.shape == pytest.approx(alpha)
    assert d.per_day == pytest.approx(alpha / beta * 100 / 365)
    # Predictive demand over 30 days is negative binomial with that shape.
    n, p = d.nb(30)
    assert n == pytest.approx(alpha) and n * (1 - p) / p == pytest.approx(d.per_day * 30)
    assert d.var_per_day == pytest.approx(d.per_day + d.per_day**2 / alpha)


def test_a_trend_needs_a_significant_count_not_a_ratio() -> None:
    # Two failures in the last 30 days where 0.3 were due: 6.7× the rate, but two is not evidence.
    two = forecast(history([(3, 1), (10, 1)]), PAIR)
    assert two.trend is None
    # Eight in 30 days: P(Poisson(e) ≥ 8) < α, the forecast moves to the recent rate, the reason says why.
    eight = forecast(history([(d, 1) for d in range(1, 30, 4)]), PAIR)
    assert eight.trend is not None and eight.trend.count == 8
    e = eight.trend.expected
    e0 = PRIOR_UNIT_YEARS
    assert e == pytest.approx(0.0365 * e0 / (e0 + 100 * 335 / 365) * 100 * 30 / 365, rel=1e-6)
    assert eight.trend.p == pytest.approx(stats.poisson.sf(7, e)) and eight.trend.p < TREND_ALPHA
    assert eight.rate_per_unit_year == pytest.approx(8 / (100 * 30 / 365))
    assert "8 failures in 30 days" in eight.trend.text() and "p = " in eight.trend.text()
    # Pooled over the fleet, two depots' 3 + 3 failures are a significant rise; each alone is not.
    h = history([(2, 1), (9, 1), (20, 1)])
    h.installed[("D2", "PM")] = h.installed[PAIR]
    h.demand[("D2", "PM")] = list(h.demand[PAIR])
    h.stock[("D2", "PM")] = Stock(depot_id="D2", sku="PM", on_hand=5, reserved=0, on_order=0)
    assert forecast(h, PAIR).trend is None
    assert fleet_trends(h)["PM"].count == 6


def order(
    age: float, promised_in: float | None = None, done_after: float | None = None, **kw: object
) -> Order:
    ordered = NOW - timedelta(days=age)
    return Order(
        id=int(str(kw.get("id", 1))), depot="D1", sku="PM", supplier=str(kw.get("supplier", "A")), qty=5,
        received=5 if done_after is not None else 0,
        ordered_at=ordered,
        promised_at=ordered + timedelta(days=promised_in) if promised_in is not None else None,
        open=done_after is None,
        completed_at=ordered + timedelta(days=done_after) if done_after is not None else None,
    )  # fmt: skip


def test_lead_time_moves_from_the_catalogue_to_what_the_supplier_does() -> None:
    done = [order(100, 16, 30, id=1), order(80, 16, 34, id=2), order(60, 16, 14, id=3)]
    lt = estimate("A", "PM", 16.0, 4.0, done, NOW)
    mean = (PRIOR_ORDERS * 16 + 30 + 34 + 14) / (PRIOR_ORDERS + 3)
    var = (PRIOR_ORDERS * (16 + (16 - mean) ** 2) + sum((x - mean) ** 2 for x in (30, 34, 14))) / (
        PRIOR_ORDERS + 3
    )
    assert lt.mean == pytest.approx(mean) and lt.sd == pytest.approx(math.sqrt(var))
    assert lt.on_time == pytest.approx(1 / 3) and lt.completed == 3
    # An open order 45 days old is a lead time of at least 45: the estimate rises before it arrives.
    late = estimate("A", "PM", 16.0, 4.0, [*done, order(45, 16, id=4)], NOW)
    assert late.mean == pytest.approx((PRIOR_ORDERS * 16 + 30 + 34 + 14 + 45) / (PRIOR_ORDERS + 4))
    # Overdue: past the promised date (by 29 days), and its arrival is expected later the later it is.
    o = order(45, 16, id=4)
    assert late.overdue_days(o, NOW) == pytest.approx(29)
    assert late.expected_arrival_days(o, NOW) == pytest.approx(max(late.sd, 45 - late.mean))
    assert late.overdue_days(order(5, 16, id=5), NOW) < 0


def test_reorder_point_on_the_inventory_position_by_hand() -> None:
    h = history([(d, 1) for d in (20, 50, 80, 110, 140, 170)], stock=(6, 2, 3))
    plans, _ = plan(h)
    p = plans[PAIR]
    d, var, lt = p.demand.per_day, p.demand.var_per_day, p.lead
    mean, spread = d * lt.mean, lt.mean * var + d**2 * lt.sd**2
    normal = mean + 2.0 * math.sqrt(spread)
    # s is the larger of the normal approximation and the Φ(2) = 97.7 % quantile of the negative binomial
    # with that mean and variance.
    quantile = stats.nbinom.ppf(stats.norm.cdf(2.0), mean**2 / (spread - mean), mean / spread)
    s = max(normal, quantile)
    assert p.policy.reorder_point == pytest.approx(s)
    # A slow mover (40 units): the normal approximation would reorder only with the shelf empty; the
    # quantile keeps one more.
    slow = plan(history(units=40))[0][PAIR]
    m, v = (
        slow.demand.per_day * slow.lead.mean,
        slow.lead.mean * slow.demand.var_per_day + (slow.demand.per_day * slow.lead.sd) ** 2,
    )
    assert m + 2.0 * math.sqrt(v) < 1 and slow.policy.reorder_point == 1.0
    assert p.policy.order_up_to == pytest.approx(s + d * 10)
    assert p.policy == policy(h.parts["PM"], p.demand, lt)
    pol = Policy(reorder_point=3.4, order_up_to=6.2)
    assert pol.quantity(4) == 0  # position above s
    assert pol.quantity(3) == math.ceil(6.2 - 3)  # at or below s: up to S
    assert pol.quantity(-2) == 9  # crews waiting count against the position


def test_stockout_probability_against_the_exact_answer() -> None:
    d = forecast(history(), PAIR)
    rng = np.random.default_rng(1)
    # Nothing on order: the negative-binomial tail over the horizon, exactly.
    assert stockout_probability(1, [], d, 20, rng) == pytest.approx(d.tail(20, 1))
    assert stockout_probability(-1, [], d, 20, rng) == 1.0
    # An order of 3 certain to land on day 10: P(D(9) > 1) + P(D(9) ≤ 1, D(20) > 4) by the gamma mixture.
    arrival = np.full(2000, 9.5)
    mc = stockout_probability(1, [(3, arrival)], d, 20, rng)
    lam = stats.gamma(d.shape, scale=d.per_day / d.shape).rvs(200_000, random_state=2)
    first = np.random.default_rng(3).poisson(lam * 9)
    rest = np.random.default_rng(4).poisson(lam * 11)
    exact = np.mean((first > 1) | (first + rest > 4))
    assert mc == pytest.approx(exact, abs=0.03)


def risk(p: float, available: int = 3) -> Risk:
    level = next(lv for lv, t in (("critical", 0.8), ("warning", 0.5), ("watch", 0.2), ("ok", 0.0)) if p >= t)
    return Risk("D1", "PM", level, p, figures={"available": available})


def test_levels_rise_at_once_and_clear_only_after_calm_days() -> None:
    day = timedelta(days=1)
    level, calm = next_level("ok", None, risk(0.55), NOW)
    assert (level, calm) == ("warning", None)
    # 0.3 is below the warning threshold but above half of it: the warning holds, not calm.
    assert next_level("warning", None, risk(0.3), NOW) == ("warning", None)
    # Below 0.25: calm from now; still a warning until CALM_DAYS have passed.
    level, calm = next_level("warning", None, risk(0.1), NOW)
    assert (level, calm) == ("warning", NOW)
    assert next_level("warning", calm, risk(0.1), NOW + day) == ("warning", NOW)
    # A relapse resets the calm; after CALM_DAYS calm it drops to what 0.1 still holds: watch (≥ 0.1).
    assert next_level("warning", calm, risk(0.3), NOW + day) == ("warning", None)
    assert next_level("warning", NOW, risk(0.1), NOW + CALM_DAYS * day) == ("watch", None)
    assert next_level("warning", NOW, risk(0.02), NOW + CALM_DAYS * day) == ("ok", None)
    # Crews waiting keep it up whatever the probability says.
    assert next_level("critical", NOW, risk(0.0, available=-1), NOW + 9 * day) == ("critical", None)
    assert next_level("watch", None, risk(0.9), NOW) == ("critical", None)
