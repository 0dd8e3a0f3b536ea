"""A charger's status, defined once: for the fleet gauges, the API's charger list and fleet summary, the CLI.

A charger reports a status per connector (and evse 0 / connector 0 for the charger as a whole); its own status
is the worst of them, so a faulted connector is never hidden behind an "Available" charger, and 1.6 in-use
states rank with Occupied. Among equally bad ones the first connector (by evse, connector) names it. Being
offline is not a status (`connected` says that). `charger_status` computes it in Python on loaded connectors,
`status_of_chargers` in SQL, so a count by status and a list filtered by it always agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, Subquery

from chargeops.db.models import Charger, Connector

STATUS_RANK = {
    "Faulted": 4,
    "Unavailable": 3,
    "Charging": 2,
    "Occupied": 2,
    "Preparing": 2,
    "SuspendedEV": 2,
    "SuspendedEVSE": 2,
    "Finishing": 2,
    "Reserved": 1,
    "Available": 0,
}
STATUSES = tuple(STATUS_RANK)  # worst first


class _Reported(Protocol):
    @property
    def status(self) -> str: ...


def charger_status(connectors: Iterable[_Reported]) -> str | None:
    """The charger's status from its connectors in (evse, connector) order; None if none reported one."""
    worst = max(connectors, key=lambda c: STATUS_RANK.get(c.status, -1), default=None)
    return None if worst is None else worst.status


def status_of_chargers() -> Subquery:
    """(charger_id, status) of every charger that reported a status: `charger_status` in SQL."""
    rank = case(STATUS_RANK, value=Connector.status, else_=-1)
    ranked = select(
        Connector.charger_id,
        Connector.status,
        func.row_number()
        .over(
            partition_by=Connector.charger_id,
            order_by=(rank.desc(), Connector.evse_id, Connector.connector_id),
        )
        .label("n"),
    ).subquery("ranked")
    return select(ranked.c.charger_id, ranked.c.status).where(ranked.c.n == 1).subquery("charger_status")


def status_is(status: str) -> ColumnElement[bool]:
    """The charger's status is `status` (a condition on `Charger.id`)."""
    wide = status_of_chargers()
    return Charger.id.in_(select(wide.c.charger_id).where(wide.c.status == status))


class ChargerState(NamedTuple):
    id: str
    site: str | None
    protocol: str | None
    connected: bool
    last_seen: datetime | None
    status: str | None


def _states(*where: ColumnElement[bool]) -> Select[Any]:
    wide = status_of_chargers()
    columns = (Charger.id, Charger.site, Charger.protocol, Charger.connected, Charger.last_seen)
    return select(*columns, wide.c.status).outerjoin(wide, wide.c.charger_id == Charger.id).where(*where)


async def charger_states(session: AsyncSession, *where: ColumnElement[bool]) -> list[ChargerState]:
    """Each charger matching `where` (conditions on `Charger`) with its status, by id."""
    rows = (await session.execute(_states(*where).order_by(Charger.id))).all()
    return [ChargerState(*row) for row in rows]


class ChargerGroup(NamedTuple):
    site: str | None
    protocol: str | None
    connected: bool
    status: str | None
    n: int


async def chargers_by_state(session: AsyncSession, *where: ColumnElement[bool]) -> list[ChargerGroup]:
    """The chargers of `charger_states` counted by site, protocol, connection and status: one row a group."""
    states = _states(*where).subquery()
    keys = (states.c.site, states.c.protocol, states.c.connected, states.c.status)
    rows = (await session.execute(select(*keys, func.count()).group_by(*keys))).all()
    return [ChargerGroup(*row) for row in rows]
