"""Tariffs and where they apply (OCPP 2.0.1 block I; the arithmetic is `chargeops.tariffs`).

A transaction keeps a copy of the tariff that prices it (`transactions.tariff`), taken when the session was
first heard of or when its id token first became known: editing a tariff prices the sessions that start
afterwards, never one a driver was already shown the price of.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from chargeops.db.models import Base, BigId
from chargeops.events import utcnow
from chargeops.tariffs import Tariff

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
