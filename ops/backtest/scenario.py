"""Back-test scenarios: a fleet, its true failure rates and suppliers, and what changes by design.

A scenario is a YAML or JSON file (`chargeops ops backtest --scenario FILE`) or generated from a seed. What
it changes by design — a failure trend (a bad batch), a supplier's lead time, installed-base growth — marks
the depot/SKU pairs whose stock-outs have a *systematic cause*; every other pair is a stationary control.

```yaml
name: bad-batch-and-late-supplier
days: 365
start: 2026-01-01
depots:                      # chargers per model at each depot's sites, from day 0
  - {id: D1, chargers: {dc-150: 30, ac-22: 20}}
  - {id: D2, chargers: {dc-150: 20, ac-22: 30}}
parts:                       # catalogue overrides (the real catalogue otherwise)
  - {sku: RFID-MF, suppliers: [Elatec], lead_time_days: 14, lead_time_sd_days: 3}
trends:                      # failures ramp to `factor` × over `ramp_days` from `start_day`
  - {sku: PM-30KW, start_day: 120, ramp_days: 60, factor: 3}        # depots: [D1] for one depot only
supplier_changes:            # orders placed in [start_day, end_day) take this long
  - {supplier: Elatec, start_day: 150, end_day: 240, lead_time_days: 60, lead_time_sd_days: 5}
growth:                      # chargers added on a day
  - {depot: D2, day: 150, chargers: {dc-150: 10, ac-22: 15}}
repair_days: [1, 3]          # a crew fits the part this many days after it is there (uniform)
```
"""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ops.registry import CATALOGUE, read_fleet_file

Day = Annotated[int, Field(ge=0)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DepotSpec(_Doc):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    chargers: dict[str, Annotated[int, Field(ge=0, le=5000)]]


class PartOverride(_Doc):
    sku: str
    annual_failure_rate: float | None = Field(default=None, ge=0)
    lead_time_days: float | None = Field(default=None, gt=0)
    lead_time_sd_days: float | None = Field(default=None, ge=0)
    suppliers: list[str] | None = Field(default=None, min_length=1)


class TrendSpec(_Doc):
    sku: str
    start_day: Day
    ramp_days: Annotated[int, Field(ge=1)] = 60
    factor: Annotated[float, Field(gt=0, le=50)] = 3.0
    depots: list[str] | None = None  # None: the whole fleet (a bad batch)


class SupplierChange(_Doc):
    supplier: str
    skus: list[str] | None = None  # None: every part it supplies
    start_day: Day
    end_day: Day
    lead_time_days: Annotated[float, Field(gt=0)]
    lead_time_sd_days: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _span(self) -> SupplierChange:
        if self.end_day <= self.start_day:
            raise ValueError("end_day must be after start_day")
        return self


class Growth(_Doc):
    depot: str
    day: Day
    chargers: dict[str, Annotated[int, Field(ge=0, le=5000)]]


class Scenario(_Doc):
    name: str = "scenario"
    days: Annotated[int, Field(ge=1, le=3650)] = 365
    start: date = date(2026, 1, 1)
    seed: int = 0
    depots: list[DepotSpec] = Field(min_length=1)
    parts: list[PartOverride] = Field(default_factory=list)
    trends: list[TrendSpec] = Field(default_factory=list)
    supplier_changes: list[SupplierChange] = Field(default_factory=list)
    growth: list[Growth] = Field(default_factory=list)
    repair_days: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = (1, 3)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        catalogue = read_fleet_file(CATALOGUE)
        skus = {p.sku for p in catalogue.parts}
        models = {m.id for m in catalogue.models}
        depots = {d.id for d in self.depots}
        problems = []
        for d in self.depots:
            problems += [f"depot {d.id}: unknown charger model {m}" for m in d.chargers if m not in models]
        for g in self.growth:
            problems += [f"growth: unknown charger model {m}" for m in g.chargers if m not in models]
            if g.depot not in depots:
                problems.append(f"growth: unknown depot {g.depot}")
        for sku in [p.sku for p in self.parts] + [t.sku for t in self.trends]:
            if sku not in skus:
                problems.append(f"unknown SKU {sku}")
        for t in self.trends:
            problems += [f"trend {t.sku}: unknown depot {d}" for d in t.depots or [] if d not in depots]
        if self.repair_days[0] > self.repair_days[1]:
            problems.append("repair_days: [low, high] with low ≤ high")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ScenarioError(ValueError):
    """A scenario file that cannot be used: the message says where."""


def read_scenario(path: Path) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read it ({exc})") from None
    try:
        return Scenario.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the file"
        raise ScenarioError(f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s))") from None


def generated(seed: int, days: int = 365) -> Scenario:
    """A year of a regional operator (four depots, 140-220 chargers each) with what the field throws at a
    buyer: a bad batch of a DC part (failures ramp to 3× over two months), a sole supplier whose lead time
    jumps from 14 to 60 days for a quarter, a depot that grows by half, and stationary parts as controls.
    The seed picks the parts, depots and days."""
    rnd = random.Random(seed)
    depots = [
        DepotSpec(id=f"D{i + 1}", chargers={"dc-150": rnd.randint(80, 120), "ac-22": rnd.randint(60, 100)})
        for i in range(4)
    ]
    bad = rnd.choice(["PM-30KW", "CT-250A", "CBL-CCS2-200A", "MDM-LTE"])
    late = rnd.choice(["RFID-MF", "CBL-T2-32A", "CT-40A-4P"])
    grower = rnd.choice(depots)
    grow = {m: max(1, n // 2) for m, n in grower.chargers.items()}
    delay_start = rnd.randint(int(days * 0.3), int(days * 0.55))
    return Scenario(
        name=f"generated-{seed}",
        days=days,
        seed=seed,
        depots=depots,
        parts=[PartOverride(sku=late, suppliers=["SoleSource"], lead_time_days=14, lead_time_sd_days=3)],
        trends=[
            TrendSpec(
                sku=bad, start_day=rnd.randint(int(days * 0.25), int(days * 0.5)), ramp_days=60, factor=3
            )
        ],
        supplier_changes=[
            SupplierChange(
                supplier="SoleSource",
                start_day=delay_start,
                end_day=delay_start + 90,
                lead_time_days=60,
                lead_time_sd_days=5,
            )
        ],
        growth=[Growth(depot=grower.id, day=rnd.randint(int(days * 0.2), int(days * 0.6)), chargers=grow)],
    )
