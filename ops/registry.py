"""Fleet registry: regions, depots, sites, parts, charger models with their bill of parts, stock.

One document format (YAML or JSON, `FleetDoc`) serves the seeded catalogue, `chargeops fleet load FILE`
and `POST /api/fleet`; applying it upserts by id, so loading the same file twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import ColumnElement

from chargeops.db.models import Charger
from chargeops.db.ops_models import (
    Battery,
    ChargerModel,
    Depot,
    ModelPart,
    Part,
    Region,
    Site,
    Stock,
    StockMovement,
)
from chargeops.ids import CHARGER_ID_PATTERN

CATALOGUE = Path(__file__).with_name("catalogue.yaml")
Id = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegionDoc(_Doc):
    id: str = Id
    name: str | None = None


class DepotDoc(_Doc):
    id: str = Id
    name: str | None = None
    region: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class SiteDoc(_Doc):
    id: str = Id
    name: str | None = None
    kind: Literal["charging", "battery_swap", "pv_storage"] = "charging"
    region: str | None = None
    depot: str | None = None
    address: str | None = Field(default=None, max_length=300)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    grid_limit_kw: float | None = Field(default=None, gt=0)
    pv_peak_kw: float | None = Field(default=None, ge=0)
    storage_kwh: float | None = Field(default=None, ge=0)
    storage_max_kw: float | None = Field(default=None, ge=0)
    grid_export_limit_kw: float | None = Field(default=None, ge=0)


class BatteryDoc(_Doc):
    """A pack the operator owns: swaps of serials not registered here are flagged."""

    serial: str = Field(min_length=1, max_length=50)
    production_date: datetime | None = None


class PartDoc(_Doc):
    sku: str = Id
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=40)
    unit_cost: float | None = Field(default=None, ge=0)
    annual_failure_rate: float = Field(default=0.05, ge=0)
    lead_time_days: float = Field(default=14, gt=0, description="days from order to delivery; 0 is refused")
    lead_time_sd_days: float = Field(default=0, ge=0)
    suppliers: list[str] = Field(default_factory=list)
    service_level_z: float = Field(default=1.65, ge=0, le=5)
    cover_days: float = Field(default=30, ge=0)


class ModelDoc(_Doc):
    id: str = Id
    vendor: str = Field(min_length=1, max_length=50)
    model: str = Field(min_length=1, max_length=50)
    kind: Literal["dc", "ac", "swap_station"] = "dc"
    max_power_kw: float | None = Field(
        default=None, gt=0, description="rated output: the fastest its meter may rise (meter plausibility)"
    )
    parts: dict[str, int] = Field(default_factory=dict, description="SKU → quantity in one unit")


class ChargerDoc(_Doc):
    id: str = Field(pattern=CHARGER_ID_PATTERN)
    site: str | None = None
    vendor: str | None = None
    model: str | None = None
    kind: Literal["charger", "swap_station"] = "charger"


class StockDoc(_Doc):
    depot: str = Id
    sku: str = Id
    on_hand: int = Field(ge=0)


class FleetDoc(_Doc):
    regions: list[RegionDoc] = Field(default_factory=list)
    depots: list[DepotDoc] = Field(default_factory=list)
    sites: list[SiteDoc] = Field(default_factory=list)
    parts: list[PartDoc] = Field(default_factory=list)
    models: list[ModelDoc] = Field(default_factory=list)
    chargers: list[ChargerDoc] = Field(default_factory=list)
    stock: list[StockDoc] = Field(default_factory=list)
    batteries: list[BatteryDoc] = Field(default_factory=list)


class UnknownReference(ValueError):
    """The document names a region, depot, site or SKU that is neither in it nor already known."""


def read_fleet_file(path: Path) -> FleetDoc:
    return FleetDoc.model_validate(yaml.safe_load(path.read_text()) or {})


async def _dangling(session: AsyncSession, doc: FleetDoc) -> list[str]:
    """The references in `doc` to a region, depot or site that is neither in it nor in the database: loaded,
    they would send tickets to the wrong crew and stock to nowhere."""
    regions = {r.id for r in doc.regions} | set((await session.scalars(select(Region.id))).all())
    depots = {d.id for d in doc.depots} | set((await session.scalars(select(Depot.id))).all())
    sites = {s.id for s in doc.sites} | set((await session.scalars(select(Site.id))).all())
    problems = [
        f"depot {d.id}: unknown region {d.region}" for d in doc.depots if d.region and d.region not in regions
    ]
    for s in doc.sites:
        if s.region and s.region not in regions:
            problems.append(f"site {s.id}: unknown region {s.region}")
        if s.depot and s.depot not in depots:
            problems.append(f"site {s.id}: unknown depot {s.depot}")
    problems += [
        f"charger {c.id}: unknown site {c.site}" for c in doc.chargers if c.site and c.site not in sites
    ]
    problems += [f"stock: unknown depot {st.depot}" for st in doc.stock if st.depot not in depots]
    return problems


async def apply_fleet(session: AsyncSession, doc: FleetDoc, actor: str = "fleet-file") -> dict[str, int]:
    """Upserts everything in `doc` (the caller commits); returns how many of each it holds. A reference to
    something neither in `doc` nor in the database is UnknownReference, before anything is written."""
    if problems := await _dangling(session, doc):
        raise UnknownReference("; ".join(problems))
    for r in doc.regions:
        await session.merge(Region(id=r.id, name=r.name or r.id))
    for d in doc.depots:
        await session.merge(
            Depot(
                id=d.id, name=d.name or d.id, region_id=d.region, latitude=d.latitude, longitude=d.longitude
            )
        )
    for s in doc.sites:
        fields = s.model_dump(exclude={"region", "depot", "name"})
        await session.merge(Site(name=s.name or s.id, region_id=s.region, depot_id=s.depot, **fields))
    for p in doc.parts:
        await session.merge(Part(**p.model_dump()))
    await session.flush()
    known = set((await session.scalars(select(Part.sku))).all())
    for m in doc.models:
        missing = set(m.parts) - known
        if missing:
            raise UnknownReference(f"model {m.id}: unknown SKU(s) {', '.join(sorted(missing))}")
        fields = m.model_dump(exclude={"parts"})
        await session.merge(ChargerModel(**fields))
        await session.execute(delete(ModelPart).where(ModelPart.model_id == m.id))
        session.add_all(ModelPart(model_id=m.id, sku=sku, qty=qty) for sku, qty in m.parts.items())
    for c in doc.chargers:
        row = await session.get(Charger, c.id)
        if row is None:
            session.add(
                Charger(id=c.id, site=c.site, vendor=c.vendor, model=c.model, kind=c.kind, security_profile=0)
            )
        else:
            row.site, row.kind = c.site, c.kind
            row.vendor, row.model = c.vendor or row.vendor, c.model or row.model
    for b in doc.batteries:
        pack = await session.get(Battery, b.serial)
        if pack is None:
            session.add(Battery(serial=b.serial, registered=True, production_date=b.production_date, swaps=0))
        else:
            pack.registered = True
            pack.production_date = b.production_date or pack.production_date
    for st in doc.stock:
        if st.sku not in known:
            raise UnknownReference(f"stock: unknown SKU {st.sku}")
        stock = await session.get(Stock, (st.depot, st.sku))
        if stock is None:
            stock = Stock(depot_id=st.depot, sku=st.sku, on_hand=0, reserved=0, on_order=0)
            session.add(stock)
        if st.on_hand != stock.on_hand:
            session.add(
                StockMovement(
                    depot_id=st.depot, sku=st.sku, kind="adjust", qty=st.on_hand - stock.on_hand, actor=actor
                )
            )
            stock.on_hand = st.on_hand
    await session.flush()
    return {name: len(getattr(doc, name)) for name in FleetDoc.model_fields}


async def seed_catalogue(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """The default parts and models into a database that has none (True if it seeded)."""
    async with sessions() as session, session.begin():
        if await session.scalar(select(func.count()).select_from(Part)):
            return False
        await apply_fleet(session, read_fleet_file(CATALOGUE), actor="catalogue")
        return True


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a charger is and what it is made of, as the ops engine needs it."""

    site: str | None
    depot: str | None
    region: str | None
    model_id: str | None


def site_region() -> ColumnElement[str | None]:
    """A site's region (in a query over `sites`): its own, else its depot's, since a fleet document may
    name only the depot. Tickets record it, and region-scoped API tokens see a site's data by it."""
    depot_region = select(Depot.region_id).where(Depot.id == Site.depot_id).scalar_subquery()
    return func.coalesce(Site.region_id, depot_region)


async def placement(session: AsyncSession, charger_id: str) -> Placement:
    charger = await session.get(Charger, charger_id)
    if charger is None:
        return Placement(None, None, None, None)
    where = select(Site.depot_id, site_region()).where(Site.id == charger.site)
    site = (await session.execute(where)).one_or_none() if charger.site else None
    model_id = await session.scalar(
        select(ChargerModel.id).where(
            ChargerModel.vendor == charger.vendor, ChargerModel.model == charger.model
        )
    )
    depot, region = site if site is not None else (None, None)
    return Placement(charger.site, depot, region, model_id)


async def parts_for(
    session: AsyncSession, model_id: str | None, needs: list[tuple[str, int]]
) -> list[dict[str, object]]:
    """Part categories a rule names → SKUs of the charger's model (× quantity needed).

    Without a known model a category resolves only when the catalogue has exactly one SKU for it."""
    out: list[dict[str, object]] = []
    for category, qty in needs:
        stmt = select(Part.sku).where(Part.category == category)
        if model_id is not None:
            stmt = stmt.join(ModelPart, ModelPart.sku == Part.sku).where(ModelPart.model_id == model_id)
        skus = list((await session.scalars(stmt.order_by(Part.sku))).all())
        if len(skus) == 1 or (skus and model_id is not None):
            out.append({"sku": skus[0], "qty": qty})
    return out
