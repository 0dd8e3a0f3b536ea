"""The inventory formulas with numbers worked by hand (README "Spare parts")."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from chargeops.db.ops_models import Part, Stock
from ops.planning import PRIOR_DAYS, _demand, assess, order_quantity, reorder_point, stockout_probability

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def part(**kw: object) -> Part:
    base = dict(
        sku="PM", name="module", category="power_module", annual_failure_rate=0.0365, lead_time_days=16.0,
        lead_time_sd_days=0.0, suppliers=["A", "B"], service_level_z=2.0, cover_days=10.0,
    )  # fmt: skip
    return Part(**{**base, **kw})


def stock(on_hand: int, reserved: int = 0, on_order: int = 0) -> Stock:
    return Stock(depot_id="D1", sku="PM", on_hand=on_hand, reserved=reserved, on_order=on_order)


def test_reorder_point_and_order_quantity_by_hand() -> None:
    # 100 installed × 3.65 %/year = 0.01/day prior; 9 reserved in the last 30 days over 90 days of history.
    moves = [(NOW - timedelta(days=d), 1) for d in range(1, 10)]
    d = _demand(moves, part(), 100, NOW, NOW - timedelta(days=200))
    assert d.blended_per_day == pytest.approx((0.01 * PRIOR_DAYS + 9) / (PRIOR_DAYS + 90))
    assert d.recent_per_day == pytest.approx(9 / 30)
    rate = 0.3  # forecast = the larger: the recent rate
    sd = max(d.sd_per_day, math.sqrt(rate))
    assert d.forecast_per_day == pytest.approx(rate) and sd == pytest.approx(math.sqrt(rate))
    rop = math.ceil(rate * 16 + 2.0 * sd * 4)  # d·L + z·σ·√L
    assert reorder_point(part(), d) == rop == 10
    assert order_quantity(part(), d, stock(12, reserved=2)) == 0  # position 10 is not below 10
    # Position 9 → up to the target ROP + d · cover days = 10 + 3 = 13.
    assert order_quantity(part(), d, stock(10, reserved=2, on_order=1)) == 13 - 9


def test_stockout_probability_is_the_poisson_tail() -> None:
    assert stockout_probability(2.0, 0) == pytest.approx(1 - math.exp(-2))
    assert stockout_probability(2.0, 2) == pytest.approx(1 - math.exp(-2) * (1 + 2 + 2))
    assert stockout_probability(0.0, 0) == 0.0 and stockout_probability(1.0, -1) == 1.0


def test_levels_carry_the_figures_that_triggered_them() -> None:
    quiet = _demand([], part(), 100, NOW, NOW - timedelta(days=200))
    ok = assess(part(), quiet, stock(5), NOW)
    assert ok.level == "ok" and ok.reasons == []

    backlog = assess(part(), quiet, stock(1, reserved=2), NOW)
    assert backlog.level == "critical" and backlog.reasons[0]["code"] == "backlog"
    assert backlog.figures["available"] == -1

    single = part(suppliers=["only"], lead_time_days=60.0, lead_time_sd_days=20.0)
    burst = _demand([(NOW - timedelta(days=1), 1)] * 4, single, 100, NOW, NOW - timedelta(days=200))
    risk = assess(single, burst, stock(40), NOW)
    codes = {r["code"] for r in risk.reasons}
    assert {"failures_rising_long_lead_time", "single_sourced", "unreliable_lead_time"} <= codes
    assert risk.level == "warning" and risk.figures["trend"] > 2 and risk.figures["suppliers"] == 1
