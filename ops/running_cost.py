"""Running cost told to 2.x stations (OCPP 2.0.1 I02: CostUpdated "at a relevant interval"): every
`cost_update_interval` seconds each priced, active session on a connected 2.0.1 / 2.1 station is priced as of
now (`chargeops.tariffs`, by the tariff kept on the transaction) and, when its cost changed since the last one
told, sent as the neutral `chargeops.UpdateCost` (the gateway holding the station turns it into CostUpdated).
The TransactionEvent answers carry the cost too; this keeps a time-priced session's display moving between
the station's events. 1.6 has no message for it: its cost is in the API only.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.commands import UPDATE_COST
from chargeops.db.models import Charger, Transaction
from chargeops.db.tariff_models import COST_COLUMNS, session_cost
from chargeops.logs import for_charger
from chargeops.settings import Settings
from telemetry.bus import Bus
from telemetry.periodic import Periodic

log = logging.getLogger("chargeops.running_cost")
PRICED_PROTOCOLS = ("ocpp2.0.1", "ocpp2.1")
AT_ONCE = 32  # calls in flight (each station answers its own; one slow station holds up no other)

_ACTIVE = (
    select(Transaction.charger_id, Transaction.transaction_id, *COST_COLUMNS)
    .join(Charger, Charger.id == Transaction.charger_id)
    .where(
        Transaction.active,
        Transaction.tariff.is_not(None),
        Charger.connected,
        Charger.protocol.in_(PRICED_PROTOCOLS),
    )
)


class CostUpdater(Periodic):
    """The ops role's CostUpdated sender; remembers per session the last cost a station accepted."""

    name = "cost_updates"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Bus, settings: Settings) -> None:
        super().__init__(settings.cost_update_interval)
        self._sessions = sessions
        self._bus = bus
        self._timeout = settings.call_timeout
        self._told: dict[tuple[str, str], Decimal] = {}

    async def step(self) -> None:
        now = clock.now()
        async with self._sessions() as session:
            rows = (await session.execute(_ACTIVE)).all()
        due: list[tuple[str, str, Decimal]] = []
        for r in rows:
            priced = session_cost(r._mapping, now)
            if priced is not None and self._told.get((r.charger_id, r.transaction_id)) != priced[1].total:
                due.append((r.charger_id, r.transaction_id, priced[1].total))
        live = {(r.charger_id, r.transaction_id) for r in rows}
        self._told = {key: total for key, total in self._told.items() if key in live}
        gate = asyncio.Semaphore(AT_ONCE)
        await asyncio.gather(*(self._tell(gate, *one) for one in due))

    async def _tell(self, gate: asyncio.Semaphore, charger_id: str, tx_id: str, total: Decimal) -> None:
        payload = {"transaction_id": tx_id, "total_cost": str(total)}
        async with gate:
            reply = await self._bus.request(charger_id, UPDATE_COST, payload, self._timeout)
        if reply.outcome == "result":
            self._told[(charger_id, tx_id)] = total
        else:
            for_charger(log, charger_id).warning(
                "CostUpdated %s for %s: %s %s", total, tx_id, reply.outcome, reply.description or ""
            )
