"""What a session costs, decided while the gateway answers (OCPP 2.0.1 block I; the arithmetic is
`chargeops.tariffs`).

The tariffs, their assignments and the chargers' sites are read into memory (`TariffBook`, one query each)
and read again at most every `tariff_refresh` seconds, so choosing a tariff costs no query on the answer
path; with no tariff defined at all nothing is priced and nothing is queried. Pricing a transaction is one
short database transaction on its row: choose its tariff once (again when its id token becomes known: the
token's group may have a tariff of its own), follow its charging state (2.x `chargingState`: charging and
idle minutes are priced apart), compute the cost so far and, at its end, store the final one.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import stored_utc
from chargeops.db.models import Charger, IdToken, Transaction
from chargeops.db.tariff_models import TariffAssignment, TariffRow
from chargeops.tariffs import Assignments, Cost, Tariff, charging_step, choose, cost_of, describe, usage_of

WITH_TOKEN = "chosen_with_token"
_SITES = select(Charger.id, Charger.site).where(
    Charger.site.is_not(None)
)  # kept beside the tariff on the transaction: its id token was known then


@dataclass(frozen=True, slots=True)
class TariffBook:
    """Every tariff by id, where each applies, and each charger's site (chargers without one left out)."""

    tariffs: dict[int, Tariff] = field(default_factory=dict)
    assignments: Assignments = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)

    def choose(self, site: str | None, group: str | None) -> Tariff | None:
        found = choose(self.assignments, site, group)
        return self.tariffs.get(found) if found is not None else None


@dataclass(frozen=True, slots=True)
class Priced:
    """A transaction's tariff and its cost so far (final at its end); `chosen`: this event chose it."""

    tariff: Tariff
    cost: Cost
    chosen: bool


def personal_message(tariff: Tariff) -> dict[str, Any]:
    """The tariff as an OCPP 2.x MessageContent for the driver (I01 personalMessage, I06 updated)."""
    message = {"format": "UTF8", "content": describe(tariff)[:512]}
    if tariff.language:
        message["language"] = tariff.language
    return message


class Pricing:
    """One per gateway process, shared by its sessions."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], refresh: float) -> None:
        self._sessions = sessions
        self._refresh = refresh
        self._book = TariffBook()
        self._loaded = -math.inf
        self._lock = asyncio.Lock()

    async def book(self) -> TariffBook:
        """The tariffs, read again when older than `refresh` seconds (one reader at a time)."""
        if time.monotonic() - self._loaded < self._refresh:
            return self._book
        async with self._lock:
            if time.monotonic() - self._loaded >= self._refresh:
                async with self._sessions() as session:
                    rows = (await session.scalars(select(TariffRow))).all()
                    links = (await session.scalars(select(TariffAssignment))).all()
                    sites = (await session.execute(_SITES)).all() if rows else []
                self._book = TariffBook(
                    {r.id: r.tariff() for r in rows},
                    {(a.site or None, a.group_id or None): a.tariff_id for a in links},
                    {charger_id: site for charger_id, site in sites if site is not None},
                )
                self._loaded = time.monotonic()
        return self._book

    async def tariff_for(self, charger_id: str, group: str | None) -> Tariff | None:
        """The tariff a driver of `group` would charge under at this charger (I01)."""
        book = await self.book()
        return book.choose(book.sites.get(charger_id), group) if book.tariffs else None

    async def price(
        self,
        charger_id: str,
        transaction_id: str,
        *,
        token: str | None,
        group: str | None,
        state: str | None,
        at: datetime,
        final: bool,
    ) -> Priced | None:
        """The transaction's cost as of `at` (its end if `final`: stored), after noting that its station
        said `state` then; `token` and `group`: the id token this event carries, if any. None: no tariff
        applies (or no such transaction)."""
        book = await self.book()
        if not book.tariffs:
            return None
        site = book.sites.get(charger_id)
        async with self._sessions() as session, session.begin():
            query = select(Transaction).where(
                Transaction.charger_id == charger_id, Transaction.transaction_id == transaction_id
            )
            row = await session.scalar(query.with_for_update())
            if row is None:
                return None
            tariff, chosen = await _choose(session, row, book, site, token, group)
            if tariff is None:
                return None
            if state is not None:
                row.charging_s, row.charging_since = charging_step(
                    row.charging_s, _utc(row.charging_since), state, at
                )
            until = at
            if final and row.stopped_at is not None:
                until = stored_utc(row.stopped_at)
                if row.charging_since is not None:  # the open charging spell ends with the session
                    row.charging_s, row.charging_since = charging_step(
                        row.charging_s, _utc(row.charging_since), "Ended", until
                    )
            started = _utc(row.started_at)
            usage = usage_of(started, until, row.energy_wh, row.charging_s, _utc(row.charging_since))
            cost = cost_of(tariff, usage)
            if final:
                row.total_cost = cost.total
            return Priced(tariff, cost, chosen)


async def _choose(
    session: AsyncSession,
    row: Transaction,
    book: TariffBook,
    site: str | None,
    token: str | None,
    group: str | None,
) -> tuple[Tariff | None, bool]:
    """The transaction's tariff, and whether it was chosen just now. Chosen when it is first priced, and
    again once its id token is known if it was chosen without one."""
    kept = row.tariff
    if kept is not None and (kept.get(WITH_TOKEN) or (token is None and row.id_token is None)):
        return Tariff.from_json(kept), False
    if token is None and row.id_token is not None:  # a tariff created during the session: whose token?
        token = row.id_token
        group = await session.scalar(select(IdToken.group_id).where(IdToken.id_token == token))
    tariff = book.choose(site, group)
    if tariff is None:
        if kept is None:
            return None, False
        tariff = Tariff.from_json(kept)  # the token's group has no tariff of its own: the one chosen stays
    row.tariff = {**tariff.to_json(), WITH_TOKEN: token is not None}
    return tariff, kept is None or Tariff.from_json(kept) != tariff


def _utc(value: datetime | None) -> datetime | None:
    return stored_utc(value) if value is not None else None
