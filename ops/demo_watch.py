"""What `chargeops demo` prints while it runs (issue 13): the fleet connecting, and every ticket opened,
resolved or closed, e.g. `ticket 6 opened: P2 GroundFailure at DEMO00013`.

Read from the database the demo's server writes, every `interval` seconds: the tickets' audit trail
(`ticket_log`, written in the transaction that changes a ticket) and the chargers' `connected` flags. Nothing
in ops knows that the demo prints: no hook in `ops.tickets`, no webhook receiver to run. A line comes at most
`interval` after its change committed; the tickets of an earlier run are not repeated. The lines are a
narration, the API the record: on Postgres, a transaction committing after a later-numbered entry's could be
skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger
from chargeops.db.ops_models import Ticket, TicketLog

log = logging.getLogger("chargeops.demo")
# audit action → the word the demo prints
SHOWN = {"created": "opened", "resolved": "resolved", "closed": "closed"}
BATCH = 200


def _print(line: str) -> None:
    print(line, flush=True)


def describe(t: Ticket) -> str:
    """`P2 GroundFailure at DEMO00013`, `P3 order 4 × RCD-B-40A for D-WEST`."""
    if t.kind == "supply":
        return f"{t.priority} order {t.qty} × {t.sku} for {t.depot}"
    pack = f" (pack {t.subject})" if t.subject else ""
    return f"{t.priority} {t.fault_code or t.rule} at {t.charger_id}{pack}"


class DemoWatch:
    """`await run()` until cancelled; `out` gets each line."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        fleet: Collection[str],
        out: Callable[[str], None] = _print,
        interval: float = 2.0,
    ) -> None:
        self._sessions = sessions
        self._fleet = list(fleet)
        self._out = out
        self._interval = interval
        self._after: int | None = None  # the audit entry last looked at
        self._connected = 0

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except SQLAlchemyError as exc:  # e.g. SQLite busy under a write burst: the next poll catches up
                log.debug("demo watch: %s", exc)
            await asyncio.sleep(self._interval)

    async def poll(self) -> None:
        async with self._sessions() as session:
            if self._after is None:  # from now on: what a database kept from an earlier run is not news
                self._after = await session.scalar(select(func.max(TicketLog.id))) or 0
            if self._connected < len(self._fleet):
                await self._fleet_connecting(session)
            stmt = (
                select(TicketLog.id, TicketLog.action, Ticket)
                .join(Ticket, Ticket.id == TicketLog.ticket_id)
                .where(TicketLog.id > self._after, TicketLog.action.in_(SHOWN))
                .order_by(TicketLog.id)
                .limit(BATCH)
            )
            for entry, action, ticket in (await session.execute(stmt)).all():
                self._out(f"ticket {ticket.id} {SHOWN[action]}: {describe(ticket)}")
                self._after = entry

    async def _fleet_connecting(self, session: AsyncSession) -> None:
        """A line each time more of the simulated fleet is connected, until all of it is."""
        connected = await session.scalar(
            select(func.count())
            .select_from(Charger)
            .where(Charger.id.in_(self._fleet), Charger.connected.is_(True))
        )
        if connected and connected > self._connected:
            self._connected = connected
            self._out(f"fleet: {connected} of {len(self._fleet)} simulated chargers and stations connected")
