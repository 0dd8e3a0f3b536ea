"""The supply back-test: `chargeops ops backtest` as a process, scenario errors as one line, and a short
replay of a late sole supplier in which the real ops code notices the delay (overdue order, lead time
measured, warning stored) before the stock runs out."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from chargeops.db.ops_models import StockMovement, SupplyWarning, SupplyWarningLog, Ticket
from ops.backtest import Scenario, run
from ops.backtest.scenario import DepotSpec, PartOverride, SupplierChange
from ops.backtest.world import World
from tests.conftest import migrated_sessions

CLI = [sys.executable, "-m", "ops.cli", "ops", "backtest"]


def test_backtest_command_prints_the_score_as_json() -> None:
    done = subprocess.run([*CLI, "--days", "40", "--seed", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    score = json.loads(done.stdout)
    assert score["scenario"] == "generated-3" and score["days"] == 40
    assert score["faults"] > 0 and 0.9 <= score["tickets_per_fault"] <= 1.0
    assert score["units_consumed_not_used"] == 0  # crews report what they used; nothing else is consumed
    assert 0 < score["fill_rate"] <= 1 and score["stock_held"]["mean_units"] > 0
    assert sum(b["days"] for b in score["calibration"]) > 0
    for rule in ("model", "naive"):
        assert set(score[rule]["onsets"]) == {"true", "false", "reactive", "censored"}


def test_a_broken_scenario_file_is_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("depots: [{id: D1, chargers: {dc-150: 5}}]\ntrends: [{sku: PM-30KW, start_day: -4}]\n")
    done = subprocess.run([*CLI, "--scenario", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "trends.0.start_day" in done.stderr, done.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("depots: [{id: D1, chargers: {no-such-model: 5}}]\n")
    done = subprocess.run([*CLI, "--scenario", str(unknown)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown charger model no-such-model" in done.stderr
    assert "Traceback" not in done.stderr


LATE = Scenario(
    name="late-supplier",
    days=90,
    seed=7,
    depots=[DepotSpec(id="D1", chargers={"ac-22": 150})],
    # The RFID reader (a busy part here) from one supplier whose lead time is 14 days in the catalogue and
    # 60 from day 0.
    parts=[
        PartOverride(
            sku="RFID-MF", suppliers=["Slow"], lead_time_days=14, lead_time_sd_days=2, annual_failure_rate=0.3
        )
    ],
    supplier_changes=[
        SupplierChange(supplier="Slow", start_day=0, end_day=90, lead_time_days=60, lead_time_sd_days=1)
    ],
)


async def test_a_late_sole_supplier_is_measured_flagged_and_warned(sqlite_url: str) -> None:
    async with migrated_sessions(sqlite_url) as sessions:
        await World(LATE, sessions).run()
        async with sessions() as session:
            orders = (
                await session.scalars(select(Ticket).where(Ticket.kind == "supply", Ticket.sku == "RFID-MF"))
            ).all()
            log = (
                await session.scalars(select(SupplyWarningLog).where(SupplyWarningLog.sku == "RFID-MF"))
            ).all()
            now = await session.get(SupplyWarning, ("D1", "RFID-MF"))
            receipts = dict(
                (
                    await session.execute(
                        select(StockMovement.ticket_id, func.min(StockMovement.at))
                        .where(StockMovement.kind == "receipt")
                        .group_by(StockMovement.ticket_id)
                    )
                ).all()
            )
    assert now is not None
    # Nothing arrived in less than the supplier's 60 days (± 1).
    assert orders and all(o.ordered_at is not None for o in orders)
    for o in orders:
        if o.received_qty:
            assert receipts[o.id] - o.ordered_at >= timedelta(days=57), o.id  # type: ignore[operator]
    opened = [e for e in log if e.change == "opened"]
    assert opened, "the late supplier never raised a warning"
    # The warning says why: the orders are overdue; and what to do: expedite them.
    assert {"order_overdue", "stockout_risk"} <= {r["code"] for r in opened[0].reasons}
    # Orders are promised after the measured lead time: later ones after more than the catalogue's 14 days.
    promised = [(o.promised_at - o.ordered_at).days for o in orders if o.promised_at and o.ordered_at]
    assert max(promised) > 14
    expedite = [a for a in opened[0].actions if a["action"] == "expedite"]
    assert expedite and "overdue" in expedite[0]["text"]


async def test_the_same_seed_replays_the_same_year() -> None:
    short = LATE.model_copy(update={"days": 30, "supplier_changes": []})
    first, second = await run(short), await run(short)
    assert first == second


def test_the_legacy_rule_by_hand_and_one_order_at_a_time() -> None:
    """The baseline the model's stock is compared with, by hand: demand 1 and 2 in the last 30 and 90 days."""
    from ops.backtest.baseline import legacy_rule
    from ops.planning import plan, policy
    from tests.test_ops_planning import PAIR, history, order

    h = history(demand=[(5, 1), (10, 1), (40, 1)])  # 100 units at 0.0365/unit-year; L 16, z 2, cover 10
    # d = max((0.01·30 + 3) / 120, 2 / 30) = 0.0667; σ_d = max(pstdev, √d) = 0.258
    # ROP = ⌈0.0667·16 + 2·0.258·√16⌉ = ⌈3.13⌉ = 4; target = 4 + ⌈0.667⌉ = 5; order when position < 4
    with policy.use(legacy_rule):
        p = plan(h)[0][PAIR].policy
    assert p.quantity(3) == 2 and p.quantity(4) == 0
    assert plan(h)[0][PAIR].policy != p  # outside the block, the model's own rule again
    # One open order at a time: nothing more is ordered however low the position.
    busy = history(demand=[(5, 1), (10, 1), (40, 1)], orders=[order(3, 16)])
    with policy.use(legacy_rule):
        assert plan(busy)[0][PAIR].policy.quantity(-5) == 0


def test_sba_and_tsb_by_hand() -> None:
    """The intermittent-demand methods the model's forecast is scored against, by hand (α = β = 0.1)."""
    from ops.backtest.accuracy import pair_errors, sba, tsb

    warm = [0, 2, 0, 0]  # one demand of 2 in 4 days, the last one 2 days before the warm-up ended
    # SBA: size 2, interval 4; day 4 has demand 1 three days after the last: size 1.9, interval 3.9
    assert sba([*warm, 1], warm=4) == pytest.approx([(1 - 0.05) * 1.9 / 3.9])
    # TSB: probability 1/4 → 0.25 + 0.1·(1 − 0.25) = 0.325, size 1.9; then a quiet day decays the probability
    assert tsb([*warm, 1, 0], warm=4) == pytest.approx([0.325 * 1.9, 0.2925 * 1.9])
    # The errors: H = 2, a perfect forecast of 0.5 a day over alternating demand is off by nothing.
    failed = [1, 0] * 40
    cls, sums = pair_errors(failed, [0.5] * len(failed), 2)
    assert cls == "intermittent" and sums["model"][0] == 0 and sums["model"][2] > 0
