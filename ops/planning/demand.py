"""Demand per depot and SKU: a gamma–Poisson failure rate over the installed base, and a tested trend.

Failures of a part are Poisson with rate λ = r · n / 365 (r failures per unit-year, n units installed). The
catalogue rate is the prior, Gamma(α₀ = r_cat · E₀, β₀ = E₀) with E₀ = `PRIOR_UNIT_YEARS` of exposure; the
fleet's own failures over its exposure (unit-years, each charger counted from the day it joined, older
evidence halved every `HALF_LIFE_DAYS`) update it. The predictive demand over t days is negative binomial,
so the uncertainty of r is carried into every probability. Installed-base changes move n at once.

A trend is tested, not guessed: failures in the last 30, 60 and 90 days (`TREND_WINDOWS`) against what the
rate before each window predicts (one-sided Poisson test at `TREND_ALPHA` split over the windows, at least
`TREND_MIN_COUNT` failures; the back-test reports how often it fires on stationary parts). A bad batch shows
fleet-wide before it shows at one depot, so the test runs per depot and per SKU over the whole fleet; when it
is significant the forecast moves to the recent rate, with the evidence in the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from scipy import stats

from ops.planning.history import History, Pair

PRIOR_UNIT_YEARS = 300.0
HALF_LIFE_DAYS = 365.0
TREND_WINDOWS = (30.0, 60.0, 90.0)
TREND_ALPHA = 0.003  # per depot or fleet-wide SKU and day, split evenly over the windows
TREND_MIN_COUNT = 4
_LN2 = math.log(2)


@dataclass(frozen=True, slots=True)
class Trend:
    """A significant rise: `count` failures in the window where `expected` were due (p-value `p`)."""

    scope: str  # "depot" or "fleet"
    count: float
    expected: float
    p: float
    window_days: float

    @property
    def factor(self) -> float:
        return self.count / self.expected if self.expected > 0 else math.inf

    def text(self) -> str:
        where = "at this depot" if self.scope == "depot" else "fleet-wide"
        return (
            f"{self.count:.0f} failures in {self.window_days:.0f} days {where} "
            f"vs {self.expected:.2g} expected (p = {self.p:.2g})"
        )


@dataclass(frozen=True, slots=True)
class Forecast:
    """Predictive demand of one depot/SKU: Gamma(shape, rate) on λ per day, so NB over a horizon."""

    installed: int
    per_day: float  # forecast demand, units per day
    rate_per_unit_year: float | None  # the forecast r (None without an installed base)
    shape: float  # α of the gamma on the daily rate: how sure we are of it
    catalogue_rate: float
    observed: float  # failures seen (decay-weighted) behind the posterior
    exposure_unit_years: float
    trend: Trend | None
    # Units reserved for a repair and given back unused (a fan brought along for a filter): they leave the
    # shelf for `hold_days` and come back, which a stock-out within the horizon still feels.
    hold_per_day: float = 0.0
    hold_days: float = 0.0

    @property
    def var_per_day(self) -> float:
        """Daily demand variance: Poisson plus the uncertainty of the rate (negative binomial)."""
        return self.per_day + self.per_day**2 / self.shape if self.shape > 0 else self.per_day

    def nb(self, days: float) -> tuple[float, float]:
        """(n, p) of scipy's negative binomial for demand over `days`."""
        mean = self.per_day * days
        if mean <= 0:
            return self.shape or 1.0, 1.0
        return self.shape, self.shape / (self.shape + mean)

    def tail(self, days: float, more_than: float, with_holds: bool = False) -> float:
        """P(demand over `days` > `more_than`); `with_holds`: counting every hold as if never given back."""
        if more_than < 0:
            return 1.0
        mean = (self.per_day + (self.hold_per_day if with_holds else 0.0)) * days
        if mean <= 0:
            return 0.0
        return float(stats.nbinom.sf(math.floor(more_than), self.shape, self.shape / (self.shape + mean)))


def _weight(age_days: float) -> float:
    return 0.5 ** (age_days / HALF_LIFE_DAYS)


def _exposure(
    history: History, pair: Pair, start: datetime, end: datetime, decay: bool, floor_days: float = 0.0
) -> float:
    """Unit-years installed between `start` and `end`, optionally decay-weighted back from `end`; a unit
    counts at least `floor_days` (a young unit's first failure is not a rate of one a day)."""
    total = 0.0
    for joined, units in history.installed.get(pair, ()):
        a = max(joined, start)
        if a >= end:
            continue
        span = max((end - a).total_seconds() / 86400, floor_days)
        days = HALF_LIFE_DAYS / _LN2 * (1 - _weight(span)) if decay else span
        total += units * days / 365
    return total


def _count(
    history: History, pair: Pair, start: datetime, end: datetime, decay_from: datetime | None
) -> float:
    total = 0.0
    for d in history.demand.get(pair, ()):
        if start <= d.at < end:
            total += d.qty * (_weight((decay_from - d.at).total_seconds() / 86400) if decay_from else 1.0)
    return total


@dataclass(frozen=True, slots=True)
class _Window:
    recent: float  # failures in the trend window
    expected: float  # what the rate before the window predicts for it
    baseline: float = 0.0  # that rate, per unit-year
    exposure: float = 0.0  # unit-years in the window


def _window(history: History, pair: Pair, cat_rate: float, days: float) -> _Window:
    now, since = history.now, history.since
    cut = now - timedelta(days=days)
    old_k = _count(history, pair, since, cut, None)
    old_e = _exposure(history, pair, since, cut, decay=False)
    baseline = (cat_rate * PRIOR_UNIT_YEARS + old_k) / (PRIOR_UNIT_YEARS + old_e)
    recent_e = _exposure(history, pair, max(cut, since), now, decay=False, floor_days=days / 2)
    return _Window(_count(history, pair, max(cut, since), now, None), baseline * recent_e, baseline, recent_e)


def _significant(scope: str, windows: dict[float, _Window]) -> Trend | None:
    """The significant window with the highest recent rate (each tested at α / number of windows)."""
    found = []
    for days, w in windows.items():
        if w.recent < TREND_MIN_COUNT or w.expected <= 0 or w.recent <= w.expected:
            continue
        p = float(stats.poisson.sf(math.ceil(w.recent) - 1, w.expected))
        if p < TREND_ALPHA / len(TREND_WINDOWS):
            found.append((w.recent / w.expected, Trend(scope, w.recent, w.expected, p, days)))
    return max(found, key=lambda f: f[0])[1] if found else None


def fleet_trends(history: History) -> dict[str, Trend]:
    """SKU → a significant fleet-wide rise in its failures."""
    sums: dict[str, dict[float, list[float]]] = {}
    for pair in history.pairs():
        for days in TREND_WINDOWS:
            w = _window(history, pair, history.parts[pair[1]].annual_failure_rate, days)
            acc = sums.setdefault(pair[1], {}).setdefault(days, [0.0, 0.0])
            acc[0] += w.recent
            acc[1] += w.expected
    found = {}
    for sku, by_window in sums.items():
        trend = _significant("fleet", {d: _Window(k, e) for d, (k, e) in by_window.items()})
        if trend is not None:
            found[sku] = trend
    return found


def forecast(history: History, pair: Pair, fleet_trend: Trend | None = None) -> Forecast:
    part = history.parts[pair[1]]
    cat = part.annual_failure_rate
    now = history.now
    k = _count(history, pair, history.since, now + timedelta(seconds=1), now)
    e = _exposure(history, pair, history.since, now, decay=True)
    alpha, beta = cat * PRIOR_UNIT_YEARS + k, PRIOR_UNIT_YEARS + e
    rate, shape = (alpha / beta if beta > 0 else cat), alpha
    windows = {days: _window(history, pair, cat, days) for days in TREND_WINDOWS}
    trend = _significant("depot", windows) or fleet_trend
    if trend is not None:  # the recent rate, only as sure as the recent count makes it
        rate, shape = windows[trend.window_days].baseline * trend.factor, trend.count + 1
    n = history.installed_now(pair)
    days = HALF_LIFE_DAYS / _LN2 * (1 - _weight((now - history.since).total_seconds() / 86400))
    held = sum(h.qty * _weight((now - h.at).total_seconds() / 86400) for h in history.holds.get(pair, ()))
    holds = {"hold_per_day": held / days if days > 0 else 0.0, "hold_days": history.hold_days}
    if n > 0:
        return Forecast(n, rate * n / 365, rate, max(shape, 1e-6), cat, k, e, trend, **holds)
    # Parts reserved for chargers of no known model: no exposure to divide by, so the depot's own daily rate.
    per_day = k / days if days > 0 else 0.0
    return Forecast(0, per_day, None, k + 0.5, cat, k, e, trend, **holds)
