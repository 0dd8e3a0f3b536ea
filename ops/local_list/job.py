"""The automatic sync (role ops, `local_list_sync_interval` seconds, off at 0): every pass syncs the
connected chargers whose list is stale, failed or never synced, those marked unsupported that booted since
(new firmware may support it), and those that booted since the last pass (a reboot may lose the list;
GetLocalListVersion tells)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.commands import Commands
from chargeops.db.models import Charger, LocalList
from chargeops.events import Booted, Event
from chargeops.settings import Settings
from ops.local_list.records import FAILED, NEVER, STALE, UNSUPPORTED
from ops.local_list.sync import LocalListSync
from telemetry.periodic import Periodic


class LocalListJob(Periodic):
    name = "local_list_sync"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Commands, settings: Settings) -> None:
        super().__init__(settings.local_list_sync_interval)
        self.sync = LocalListSync(
            sessions, bus, groups=settings.local_list_group_set(), timeout=settings.call_timeout
        )
        self._sessions = sessions
        self._booted: set[str] = set()

    async def handle(self, events: Sequence[Event]) -> None:
        """Bus listener: a charger that booted is synced on the next pass."""
        booted = {ev.charger_id for ev in events if isinstance(ev.body, Booted)}
        if booted:
            self._booted |= booted
            self.wake()

    async def due(self) -> list[str]:
        async with self._sessions() as session:
            query = (
                select(Charger.id)
                .outerjoin(LocalList, LocalList.charger_id == Charger.id)
                .where(
                    Charger.connected,
                    Charger.kind == "charger",
                    or_(
                        LocalList.charger_id.is_(None),
                        LocalList.state.in_((NEVER, STALE, FAILED)),
                        and_(LocalList.state == UNSUPPORTED, LocalList.settings_at < Charger.last_boot_at),
                        Charger.id.in_(self._booted),
                    ),
                )
                .order_by(Charger.id)
            )
            return list(await session.scalars(query))

    async def step(self) -> None:
        due = await self.due()
        self._booted -= set(due)
        await self.sync.sync_many(due)
