"""Tariffs and where they apply (OCPP 2.0.1 block I; the arithmetic is `chargeops.tariffs`).

A transaction keeps a copy of the tariff that prices it (`transactions.tariff`), taken when the session was
first heard of or when its id token first became known: editing a tariff prices the sessions that start
afterwards, never one a driver was already shown the price of.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from chargeops.db.engine import stored_utc
from chargeops.db.models import Base, BigId, Transaction, billed_energy_wh
from chargeops.events import utcnow
from chargeops.tariffs import Cost, Tariff, cost_of, money, usage_of

PRICE = Numeric(12, 6)
ANY = ""  # an assignment's site or group that matches every one (a key column cannot hold NULL)


class TariffRow(Base):
    __tablename__ = "tariffs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(3))
    per_kwh: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    per_minute_charging: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    per_minute_idle: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    idle_grace_minutes: Mapped[int] = mapped_column(Integer, default=0)
    session_fee: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    min_cost: Mapped[Decimal | None] = mapped_column(PRICE)
    max_cost: Mapped[Decimal | None] = mapped_column(PRICE)
    tax_pct: Mapped[Decimal] = mapped_column(Numeric(7, 3), default=Decimal(0))
    display_text: Mapped[str | None] = mapped_column(String(512))
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def tariff(self) -> Tariff:
        return Tariff(
            id=self.id,
            name=self.name,
            currency=self.currency,
            per_kwh=self.per_kwh,
            per_minute_charging=self.per_minute_charging,
            per_minute_idle=self.per_minute_idle,
            idle_grace_minutes=self.idle_grace_minutes,
            session_fee=self.session_fee,
            min_cost=self.min_cost,
            max_cost=self.max_cost,
            tax_pct=self.tax_pct,
            display_text=self.display_text,
            language=self.language,
        )


class TariffAssignment(Base):
    """`tariff_id` prices sessions at `site` with id tokens of `group_id`; `ANY` ('') matches every site or
    group, so ('', '') is the default."""

    __tablename__ = "tariff_assignments"

    site: Mapped[str] = mapped_column(String(64), primary_key=True, default=ANY)
    group_id: Mapped[str] = mapped_column(String(64), primary_key=True, default=ANY)
    tariff_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tariffs.id"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# What `session_cost` reads of a transaction (lists select these columns rather than whole rows).
COST_COLUMNS = (
    Transaction.tariff,
    Transaction.active,
    Transaction.started_at,
    Transaction.stopped_at,
    Transaction.meter_start_wh,
    Transaction.meter_stop_wh,
    Transaction.meter_last_wh,
    Transaction.meter_good_wh,
    Transaction.charging_s,
    Transaction.charging_since,
    Transaction.total_cost,
)


def session_cost(row: Mapping[Any, Any], now: datetime) -> tuple[Tariff, Cost] | None:
    """A transaction's cost under the tariff it keeps (`COST_COLUMNS`): as of its end, or of `now` while it
    runs; its final total as stored. None: no tariff prices it."""
    doc = row["tariff"]
    if doc is None:
        return None
    tariff = Tariff.from_json(doc)
    started, stopped, since = (
        stored_utc(v) if v is not None else None
        for v in (row["started_at"], row["stopped_at"], row["charging_since"])
    )
    until = stopped if stopped is not None and not row["active"] else now
    energy = billed_energy_wh(
        row["meter_start_wh"], row["meter_stop_wh"], row["meter_last_wh"], row["meter_good_wh"]
    )
    cost = cost_of(tariff, usage_of(started, until, energy, row["charging_s"], since))
    if not row["active"] and row["total_cost"] is not None:
        cost = replace(cost, total=money(row["total_cost"], tariff.currency))  # what the station was told
    return tariff, cost
