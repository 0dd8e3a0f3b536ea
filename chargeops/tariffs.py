"""Tariffs and what a charging session costs under one (OCPP 2.0.1 block I: the central system prices sessions
and tells the station; OCPP defines no tariff structure, so this one is ours). Pure: decimal arithmetic, no
clock, no storage; the gateway (answers), ops (CostUpdated) and the API (sessions) all price through here.

A tariff charges energy (per kWh), time charging (per minute energy flowed), time idle (per minute plugged in
without charging, after a grace period: parking), and a fee per session; the net is held between an
optional minimum and maximum, and tax is added at `tax_pct` (every amount of a tariff is net of tax; 0: the
prices are what the driver pays). Each line is rounded half-up to the currency's minor unit and the total
is the sum of the rounded lines, so a receipt adds up. Minutes count pro rata (by the second).

Which tariff prices a session (`choose`): the one assigned to its site and its id token's group, else to the
group anywhere, else to the site, else the default (group overrides site).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from chargeops.currencies import minor_units

ZERO = Decimal(0)
CHARGING = "Charging"  # the 2.x chargingState in which energy flows; every other one is idle time
_MONEY = ("per_kwh", "per_minute_charging", "per_minute_idle", "session_fee", "min_cost", "max_cost")


@dataclass(frozen=True, slots=True)
class Tariff:
    """Prices in `currency` (ISO 4217). `id` None: not stored (yet)."""

    id: int | None
    name: str
    currency: str
    per_kwh: Decimal = ZERO
    per_minute_charging: Decimal = ZERO
    per_minute_idle: Decimal = ZERO
    idle_grace_minutes: int = 0
    session_fee: Decimal = ZERO
    min_cost: Decimal | None = None
    max_cost: Decimal | None = None
    tax_pct: Decimal = ZERO
    display_text: str | None = None  # what a station shows the driver; None: `describe` writes it
    language: str | None = None  # RFC 5646 code of `display_text`

    def to_json(self) -> dict[str, Any]:
        """As kept on a transaction (decimals as text: no float on the way)."""
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Tariff:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        for k in (*_MONEY, "tax_pct"):
            if values.get(k) is not None:
                values[k] = Decimal(str(values[k]))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Usage:
    """What a session used, as far as it has gone."""

    energy_wh: Decimal = ZERO
    charging_s: Decimal = ZERO
    idle_s: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Cost:
    """A session's cost line by line, each rounded to the currency's minor unit; `total` includes tax."""

    currency: str
    energy: Decimal
    charging_time: Decimal
    idle_time: Decimal
    session_fee: Decimal
    adjustment: Decimal  # what the minimum added (+) or the maximum took off (−)
    net: Decimal
    tax: Decimal
    total: Decimal


def money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up to the minor unit of `currency` (2 places for EUR, 0 for JPY)."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def cost_of(tariff: Tariff, usage: Usage) -> Cost:
    """The cost of `usage` under `tariff`."""
    cur = tariff.currency
    energy = money(usage.energy_wh / 1000 * tariff.per_kwh, cur)
    charging = money(usage.charging_s / 60 * tariff.per_minute_charging, cur)
    idle_minutes = max(ZERO, usage.idle_s / 60 - tariff.idle_grace_minutes)
    idle = money(idle_minutes * tariff.per_minute_idle, cur)
    fee = money(tariff.session_fee, cur)
    lines = energy + charging + idle + fee
    net = lines
    if tariff.min_cost is not None:
        net = max(net, money(tariff.min_cost, cur))
    if tariff.max_cost is not None:
        net = min(net, money(tariff.max_cost, cur))
    tax = money(net * tariff.tax_pct / 100, cur)
    return Cost(cur, energy, charging, idle, fee, net - lines, net, tax, net + tax)


def usage_of(
    started_at: datetime | None,
    until: datetime,
    energy_wh: float | None,
    charging_s: float | None,
    charging_since: datetime | None,
) -> Usage:
    """A session's usage up to `until` (its end, or now). `charging_s` None: the station never said when
    energy flowed (1.6, or a 2.x station without `chargingState`), so all of its time counts as charging."""
    duration = _seconds(until - started_at) if started_at is not None else ZERO
    energy = Decimal(repr(energy_wh)) if energy_wh is not None else ZERO
    if charging_s is None:
        return Usage(energy, duration, ZERO)
    charging = Decimal(repr(charging_s))
    if charging_since is not None:
        charging += _seconds(until - charging_since)
    charging = min(charging, duration)
    return Usage(energy, charging, duration - charging)


def _seconds(span: timedelta) -> Decimal:
    """A time span in exact decimal seconds (none below zero: a clock set back adds no time)."""
    exact = Decimal(span.days * 86_400 + span.seconds) + Decimal(span.microseconds).scaleb(-6)
    return max(ZERO, exact)


def charging_step(
    charging_s: float | None, charging_since: datetime | None, state: str, at: datetime
) -> tuple[float, datetime | None]:
    """The time a session has charged, after the station said it is in `state` at `at`: (seconds of closed
    charging spells, start of the open one)."""
    total = charging_s or 0.0
    if state == CHARGING:
        return total, charging_since or at
    if charging_since is not None:
        total += max(0.0, (at - charging_since).total_seconds())
    return total, None


Assignments = Mapping[tuple[str | None, str | None], int]  # (site, group) → tariff id; (None, None) default


def choose(assignments: Assignments, site: str | None, group: str | None) -> int | None:
    """The tariff of a session at `site` with an id token of `group`: site and group, group, site, default."""
    keys: list[tuple[str | None, str | None]] = []
    keys += [(site, group)] if site is not None and group is not None else []
    keys += [(None, group)] if group is not None else []
    keys += [(site, None)] if site is not None else []
    for key in [*keys, (None, None)]:
        if key in assignments:
            return assignments[key]
    return None


def describe(tariff: Tariff) -> str:
    """The tariff in one line for a station's display (OCPP personalMessage), unless it has its own text."""
    if tariff.display_text:
        return tariff.display_text
    cur = tariff.currency
    parts = []
    if tariff.per_kwh:
        parts.append(f"{tariff.per_kwh.normalize():f} {cur}/kWh")
    if tariff.per_minute_charging:
        parts.append(f"{tariff.per_minute_charging.normalize():f} {cur}/min charging")
    if tariff.per_minute_idle:
        grace = f" after {tariff.idle_grace_minutes} min" if tariff.idle_grace_minutes else ""
        parts.append(f"{tariff.per_minute_idle.normalize():f} {cur}/min idle{grace}")
    if tariff.session_fee:
        parts.append(f"{money(tariff.session_fee, cur)} {cur} per session")
    if not parts:
        parts.append("free charging")
    if tariff.min_cost is not None:
        parts.append(f"min {money(tariff.min_cost, cur)} {cur}")
    if tariff.max_cost is not None:
        parts.append(f"max {money(tariff.max_cost, cur)} {cur}")
    if tariff.tax_pct:
        parts.append(f"plus {tariff.tax_pct.normalize():f}% tax")
    return ", ".join(parts)
