"""`chargeops ops backtest`: the real ops engine, stock, supply and warning code replayed over a simulated
(or given) history on a throwaway database, scored as JSON (`ops.backtest.score`)."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.db.ops_models import StockMovement, Ticket
from ops.backtest.baseline import RULES
from ops.backtest.scenario import Scenario, ScenarioError, generated, read_scenario
from ops.backtest.score import score
from ops.backtest.world import World
from ops.planning import policy

__all__ = ["RULES", "Scenario", "ScenarioError", "generated", "read_scenario", "run"]


async def run(scenario: Scenario, database_url: str | None = None, rule: str = "model") -> dict[str, Any]:
    """Replays `scenario` on `database_url` (an empty database; default: a temporary SQLite file) under the
    replenishment rule `rule` (`RULES`: the model's, or the baseline it is compared with)."""
    if rule not in RULES:
        raise ScenarioError(f"unknown replenishment rule {rule!r}: one of {', '.join(RULES)}")
    with tempfile.TemporaryDirectory(prefix="chargeops-backtest-") as tmp, policy.use(RULES[rule]):
        engine = make_engine(database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'backtest.db'}")
        try:
            await upgrade(engine)
            sessions = make_sessionmaker(engine)
            rec = await World(scenario, sessions).run()
            fill = await _fill(sessions)
            async with sessions() as session:
                tickets = await session.scalar(
                    select(func.count()).select_from(Ticket).where(Ticket.kind == "maintenance")
                )
            return {"rule": rule, **score(rec, fill, int(tickets or 0))}
        finally:
            await engine.dispose()


async def _fill(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """Units reserved and units served from stock (available when reserved), replayed from the movements."""
    on_hand: dict[tuple[str, str], int] = defaultdict(int)
    reserved: dict[tuple[str, str], int] = defaultdict(int)
    served = asked = 0
    consumed: dict[str, int] = defaultdict(int)
    async with sessions() as session:
        rows = await session.execute(
            select(StockMovement.depot_id, StockMovement.sku, StockMovement.kind, StockMovement.qty).order_by(
                StockMovement.id
            )
        )
        for depot, sku, kind, qty in rows.all():
            key = (depot, sku)
            if kind == "reserve":
                free = on_hand[key] - reserved[key]
                served += max(0, min(qty, free))
                asked += qty
                reserved[key] += qty
            elif kind == "release":
                reserved[key] = max(0, reserved[key] - qty)
            elif kind == "consume":
                on_hand[key] -= qty
                reserved[key] = max(0, reserved[key] - qty)
                consumed[sku] += qty
            elif kind in ("receipt", "receipt_extra", "adjust"):
                on_hand[key] += qty
    return {"served": served, "reserved": asked, "consumed": dict(consumed)}
