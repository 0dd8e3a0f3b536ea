"""Operations storage: fleet registry, maintenance and supply tickets, spare parts, webhook outbox, battery
packs and swaps, site power.

Foreign keys (migration 0019) tie what the registry and the tickets own: depots and sites to regions and
depots, stock and stock movements to depots and parts (no ON DELETE: the code never deletes those, so
deleting one by hand while something refers to it is refused), a ticket's log and counted events to it
(CASCADE), a movement to its ticket (SET NULL), a delivery to its subscription (CASCADE). `chargers.site`
(a label registration accepts without a fleet document), what a charger reports, tickets' placement and
supply warnings carry no key: history that outlives what it names (README, Database).

Registered on the same `Base` as the telemetry tables (imported by `chargeops.db.models`), so one
migration history covers the whole schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from chargeops import clock
from chargeops.db.models import Base, BigId


class Region(Base):
    __tablename__ = "regions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Depot(Base):
    """Where crews start from and spare parts are stocked; serves the sites of its region."""

    __tablename__ = "depots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("regions.id"), index=True)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)


class Site(Base):
    """A location with chargers (`chargers.site` holds its id): charging, battery swap or PV + storage."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="charging")
    region_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("regions.id"), index=True)
    depot_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("depots.id"))
    address: Mapped[str | None] = mapped_column(String(300))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    grid_limit_kw: Mapped[float | None] = mapped_column(Float)
    pv_peak_kw: Mapped[float | None] = mapped_column(Float)
    storage_kwh: Mapped[float | None] = mapped_column(Float)
    storage_max_kw: Mapped[float | None] = mapped_column(Float)
    grid_export_limit_kw: Mapped[float | None] = mapped_column(Float)  # most the site may feed into the grid


class Part(Base):
    """A spare part (SKU) and what supply planning needs to know about it."""

    __tablename__ = "parts"

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(40), index=True)
    unit_cost: Mapped[float | None] = mapped_column(Float)
    # Failures per installed unit and year, before the fleet's own history says otherwise.
    annual_failure_rate: Mapped[float] = mapped_column(Float, default=0.05)
    lead_time_days: Mapped[float] = mapped_column(Float, default=14.0)
    lead_time_sd_days: Mapped[float] = mapped_column(Float, default=0.0)
    suppliers: Mapped[list[str]] = mapped_column(JSON, default=list)
    service_level_z: Mapped[float] = mapped_column(Float, default=1.65)
    # Days of demand the stock is brought back up to above the reorder point when re-ordering.
    cover_days: Mapped[float] = mapped_column(Float, default=30.0)


class ChargerModel(Base):
    """A charger or swap-station model, matched to chargers by the vendor and model they boot with."""

    __tablename__ = "charger_models"
    __table_args__ = (UniqueConstraint("vendor", "model", name="uq_charger_models_vendor_model"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(20), default="dc")
    # Rated output: the fastest a charger of this model can raise its energy register (meter plausibility).
    max_power_kw: Mapped[float | None] = mapped_column(Float)


class ModelPart(Base):
    """Bill of spare parts: how many of a SKU one unit of the model contains."""

    __tablename__ = "model_parts"

    model_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("charger_models.id", ondelete="CASCADE"), primary_key=True
    )
    sku: Mapped[str] = mapped_column(String(64), ForeignKey("parts.sku"), primary_key=True)
    qty: Mapped[int] = mapped_column(Integer, default=1)


class Stock(Base):
    """Stock of one SKU at one depot. Available = on hand − reserved (negative: a backlog)."""

    __tablename__ = "stock"

    depot_id: Mapped[str] = mapped_column(String(64), ForeignKey("depots.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), ForeignKey("parts.sku"), primary_key=True)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    on_order: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class StockMovement(Base):
    """Every change to stock, with why: receipt, reserve, release, consume, order, adjust.

    Reservations are the demand signal of the supply-risk model (a part is needed when a ticket asks
    for it, not when a crew gets round to fitting it)."""

    __tablename__ = "stock_movements"
    __table_args__ = (Index("ix_stock_movements_depot_sku_at", "depot_id", "sku", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    depot_id: Mapped[str] = mapped_column(String(64), ForeignKey("depots.id"))
    sku: Mapped[str] = mapped_column(String(64), ForeignKey("parts.sku"))
    kind: Mapped[str] = mapped_column(String(16))
    qty: Mapped[int] = mapped_column(Integer)
    ticket_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("tickets.id", ondelete="SET NULL"))
    actor: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=clock.now)


class Ticket(Base):
    """A maintenance ticket (a charger's fault) or a supply ticket (a purchase request for a depot/SKU).

    `open_key` is set while the ticket is open (open, assigned, in progress) and unique, so a fault or a
    shortage opens one ticket however often it repeats or however many processes see it."""

    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_kind_status", "kind", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    priority: Mapped[str] = mapped_column(String(4))
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    charger_id: Mapped[str | None] = mapped_column(String(48), index=True)
    site: Mapped[str | None] = mapped_column(String(64), index=True)
    depot: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(64), index=True)
    rule: Mapped[str | None] = mapped_column(String(64))
    evse_id: Mapped[int | None]
    subject: Mapped[str | None] = mapped_column(String(64))  # a battery pack's serial, for pack tickets
    fault_code: Mapped[str | None] = mapped_column(String(120))
    component: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    diagnosis: Mapped[str | None] = mapped_column(Text)
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # What the crew reported using when it resolved the ticket (the rest went back to stock).
    parts_used: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # A supply ticket is one purchase order: SKU, qty, supplier, when ordered and promised, received so far.
    sku: Mapped[str | None] = mapped_column(String(64))
    qty: Mapped[int | None] = mapped_column(Integer)
    supplier: Mapped[str | None] = mapped_column(String(100))
    ordered_at: Mapped[datetime | None]
    promised_at: Mapped[datetime | None]
    received_qty: Mapped[int] = mapped_column(Integer, default=0)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    assignee: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)
    last_occurred_at: Mapped[datetime | None]
    sla_due_at: Mapped[datetime | None]
    cleared_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]


class SupplyWarning(Base):
    """A depot/SKU's early-warning level as it stands (absent or `ok`: no warning in force).

    Levels move with hysteresis (`ops.supply_risk.levels`), so the row remembers since when the level holds
    and since when the stock-out probability has been calm enough to clear it."""

    __tablename__ = "supply_warnings"

    depot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[str] = mapped_column(String(16), default="ok")
    opened_at: Mapped[datetime | None]  # when the current warning (any level above ok) began
    level_since: Mapped[datetime | None]
    calm_since: Mapped[datetime | None]  # first assessment in a row below the clearing threshold
    probability: Mapped[float] = mapped_column(Float, default=0.0)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    assessed_at: Mapped[datetime] = mapped_column(default=clock.now)


class SupplyWarningLog(Base):
    """Every level change of a warning: opened, escalated, deescalated, cleared, with what was known then."""

    __tablename__ = "supply_warning_log"
    __table_args__ = (Index("ix_supply_warning_log_depot_sku_at", "depot_id", "sku", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    depot_id: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=clock.now, index=True)
    change: Mapped[str] = mapped_column(String(16))
    from_level: Mapped[str] = mapped_column(String(16))
    to_level: Mapped[str] = mapped_column(String(16))
    probability: Mapped[float] = mapped_column(Float)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class TicketOccurrence(Base):
    """The events counted on a ticket: a re-delivered event is not counted twice."""

    __tablename__ = "ticket_occurrences"

    ticket_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class TicketLog(Base):
    """Audit trail: who did what to a ticket, and when."""

    __tablename__ = "ticket_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(BigId, ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=clock.now)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)


class WebhookSubscription(Base):
    """A receiver of ticket events. The secret signs deliveries (HMAC-SHA256), so it is kept, never shown."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every event type
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class OutboxMessage(Base):
    """A webhook delivery, written in the same transaction as the change it reports; sent until acked."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        Index("ix_webhook_outbox_due", "delivered_at", "next_attempt_at"),
        # The dispatcher's "earliest undelivered message of a subscription" lookups; partial, so it stays
        # the size of the backlog however much delivered history the table keeps.
        Index(
            "ix_webhook_outbox_undelivered",
            "subscription_id",
            "id",
            postgresql_where=text("delivered_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=clock.now)
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class Battery(Base):
    """A swappable battery pack, by serial number: where it is now and its latest condition.

    `registered` packs come from the operator's fleet document; a pack first seen in a swap is recorded
    with `registered = False` (an unknown serial, which ops flags)."""

    __tablename__ = "batteries"

    serial: Mapped[str] = mapped_column(String(50), primary_key=True)
    registered: Mapped[bool] = mapped_column(default=False)
    location: Mapped[str] = mapped_column(String(16), default="unknown")  # slot, vehicle, depot, unknown
    station_id: Mapped[str | None] = mapped_column(String(48), index=True)
    slot: Mapped[int | None]
    soc: Mapped[float | None] = mapped_column(Float)
    soh: Mapped[float | None] = mapped_column(Float)
    cycles: Mapped[int | None]
    production_date: Mapped[datetime | None]
    swaps: Mapped[int] = mapped_column(Integer, default=0)
    last_seen: Mapped[datetime | None]


class BatteryReading(Base):
    """A pack's condition each time a swap or the station reported it (SoH history, temperatures)."""

    __tablename__ = "battery_readings"
    __table_args__ = (Index("ix_battery_readings_serial_at", "serial", "at"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    serial: Mapped[str] = mapped_column(String(50), primary_key=True)
    at: Mapped[datetime]
    station_id: Mapped[str] = mapped_column(String(48))
    request_id: Mapped[int | None] = mapped_column(BigInteger)  # the swap it came from; None: telemetry
    slot: Mapped[int | None]
    soc: Mapped[float | None] = mapped_column(Float)
    soh: Mapped[float | None] = mapped_column(Float)
    cycles: Mapped[int | None]
    cell_temp_min: Mapped[float | None] = mapped_column(Float)
    cell_temp_max: Mapped[float | None] = mapped_column(Float)
    cell_volt_min: Mapped[float | None] = mapped_column(Float)
    cell_volt_max: Mapped[float | None] = mapped_column(Float)


class BatterySwap(Base):
    """One swap at a station, BatteryIn and BatteryOut paired by the station's requestId.

    status: `in_progress` (BatteryIn only), `completed`, `out_timeout` (the charged pack was not taken: an
    orphan ops must see), `out_only` (BatteryOut without a BatteryIn)."""

    __tablename__ = "battery_swaps"
    __table_args__ = (UniqueConstraint("station_id", "request_id", name="uq_battery_swaps_station_request"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    request_id: Mapped[int] = mapped_column(BigInteger)
    id_token: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    requested: Mapped[bool] = mapped_column(default=False)  # started by RequestBatterySwap
    batteries_in: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    batteries_out: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    in_at: Mapped[datetime | None]
    out_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)


class SiteTelemetry(Base):
    """A site controller's report: PV, storage, grid (import > 0, export < 0) and charging power, in W."""

    __tablename__ = "site_telemetry"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True)
    pv_w: Mapped[float | None] = mapped_column(Float)
    storage_soc: Mapped[float | None] = mapped_column(Float)
    storage_w: Mapped[float | None] = mapped_column(Float)  # > 0 charging the storage, < 0 discharging
    grid_w: Mapped[float | None] = mapped_column(Float)
    load_w: Mapped[float | None] = mapped_column(Float)  # site load besides charging
    charging_w: Mapped[float | None] = mapped_column(Float)


class ChargerLimit(Base):
    """The power limit the site planner last gave a charger (and whether the charger accepted it)."""

    __tablename__ = "charger_limits"

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    limit_w: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # Accepted, Rejected, error, pending
    sent_at: Mapped[datetime] = mapped_column(default=clock.now)


class DischargeLimit(Base):
    """The discharge cap the site planner last gave a bidirectional OCPP 2.1 charger (LimitMaxDischarge, %
    of its rated discharge power) and the charger's answer; the row goes when the cap is cleared."""

    __tablename__ = "discharge_limits"

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    pct: Mapped[float] = mapped_column(Float)
    rated_w: Mapped[float | None] = mapped_column(Float)  # the charger's rated discharge power, as reported
    status: Mapped[str] = mapped_column(String(16))  # Accepted, Rejected, NotSupported, timeout, ...
    sent_at: Mapped[datetime] = mapped_column(default=clock.now)
