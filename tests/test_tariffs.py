"""The cost of a session under a tariff (`chargeops.tariffs`), against figures worked out by hand: decimal
arithmetic, each line rounded half-up to the currency's minor unit, min / max on the net, tax on top."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from chargeops.currencies import minor_units
from chargeops.tariffs import Cost, Tariff, Usage, charging_step, choose, cost_of, describe, usage_of

FULL = Tariff(
    id=1,
    name="city",
    currency="EUR",
    per_kwh=D("0.35"),
    per_minute_charging=D("0.02"),
    per_minute_idle=D("0.10"),
    idle_grace_minutes=15,
    session_fee=D("1.00"),
    tax_pct=D("19"),
)
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def minutes(n: float) -> D:
    return D(str(n * 60))


def test_every_line_of_a_full_tariff() -> None:
    """22.5 kWh x 0.35 = 7.875 -> 7.88; 90 min x 0.02 = 1.80; (40 - 15 grace) min x 0.10 = 2.50; fee 1.00;
    net 13.18; tax 19 % = 2.5042 -> 2.50; total 15.68."""
    cost = cost_of(FULL, Usage(D(22_500), minutes(90), minutes(40)))
    assert cost == Cost(
        "EUR", D("7.88"), D("1.80"), D("2.50"), D("1.00"), D("0.00"), D("13.18"), D("2.50"), D("15.68")
    )


def test_idle_time_within_the_grace_period_is_free() -> None:
    assert cost_of(FULL, Usage(D(0), D(0), minutes(15))).idle_time == D("0.00")
    assert cost_of(FULL, Usage(D(0), D(0), minutes(15.5))).idle_time == D("0.05")


def test_maximum_and_minimum_bound_the_net_and_tax_follows() -> None:
    capped = Tariff(**{**FULL.to_json(), "max_cost": "10", "id": 1})
    cost = cost_of(Tariff.from_json(capped.to_json()), Usage(D(22_500), minutes(90), minutes(40)))
    assert (cost.adjustment, cost.net, cost.tax, cost.total) == (
        D("-3.18"),
        D("10.00"),
        D("1.90"),
        D("11.90"),
    )
    floor = Tariff.from_json({**FULL.to_json(), "min_cost": "5"})
    # 1 kWh 0.35 + 2 min 0.04 + fee 1.00 = 1.39, lifted to 5.00; tax 0.95
    cost = cost_of(floor, Usage(D(1000), minutes(2), D(0)))
    assert (cost.adjustment, cost.net, cost.total) == (D("3.61"), D("5.00"), D("5.95"))


def test_energy_only_tariff_and_a_free_one() -> None:
    energy = Tariff(None, "kWh", "EUR", per_kwh=D("0.30"))
    assert cost_of(energy, Usage(D(5000), minutes(30), minutes(30))).total == D("1.50")
    assert cost_of(Tariff(None, "free", "EUR"), Usage(D(5000), minutes(9), D(0))).total == D("0.00")


@pytest.mark.parametrize(
    ("currency", "per_kwh", "wh", "total"),
    [
        ("JPY", "45.5", 10_300, D("469")),
        ("KWD", "0.0125", 10_300, D("0.129")),
        ("EUR", "0.125", 100, D("0.01")),
    ],
)
def test_rounding_follows_the_currency(currency: str, per_kwh: str, wh: int, total: D) -> None:
    """468.65 JPY -> 469; 0.12875 KWD -> 0.129 (3 places); 0.0125 EUR -> 0.01 (half-up at the 3rd place)."""
    assert cost_of(Tariff(None, "t", currency, per_kwh=D(per_kwh)), Usage(D(wh))).total == total


def test_minor_units_and_unknown_codes() -> None:
    assert (minor_units("EUR"), minor_units("JPY"), minor_units("BHD")) == (2, 0, 3)
    for code in ("XYZ", "eur", "XAU", "XTS"):
        with pytest.raises(KeyError):
            minor_units(code)


def test_charging_spells_from_the_stations_charging_states() -> None:
    state: tuple[float | None, datetime | None] = (None, None)
    for name, at in [("EVConnected", 0), ("Charging", 5), ("SuspendedEV", 65), ("Charging", 80)]:
        state = charging_step(*state, name, T0 + timedelta(minutes=at))
    assert state == (3600.0, T0 + timedelta(minutes=80))
    # still charging 30 min later, plugged in since T0 (110 min): 60 + 30 = 90 min charging, 20 min idle
    usage = usage_of(T0, T0 + timedelta(minutes=110), 22_500.0, *state)
    assert usage == Usage(D("22500.0"), minutes(90), minutes(20))
    state = charging_step(*state, "Idle", T0 + timedelta(minutes=110))
    assert state == (5400.0, None)


def test_a_station_that_never_says_its_charging_state_charges_all_of_the_time() -> None:
    usage = usage_of(T0, T0 + timedelta(minutes=45, microseconds=500_000), 700.25, None, None)
    assert usage == Usage(D("700.25"), D("2700.5"), D(0))
    assert usage_of(None, T0, None, None, None) == Usage()  # nothing known: nothing used
    assert usage_of(T0, T0 - timedelta(minutes=5), 0.0, 0.0, None).charging_s == 0  # a clock set back


def test_the_group_overrides_the_site_and_the_default_is_the_last_resort() -> None:
    assignments = {("north", "FLEET"): 1, (None, "FLEET"): 2, ("north", None): 3, (None, None): 4}
    assert choose(assignments, "north", "FLEET") == 1
    assert choose(assignments, "south", "FLEET") == 2
    assert choose(assignments, "north", "OTHER") == 3
    assert choose(assignments, "north", None) == 3
    assert choose(assignments, None, None) == 4
    assert choose({("north", None): 3}, "south", None) is None


def test_the_tariff_in_words_for_the_station_display() -> None:
    assert describe(FULL) == (
        "0.35 EUR/kWh, 0.02 EUR/min charging, 0.1 EUR/min idle after 15 min, 1.00 EUR per session, "
        "plus 19% tax"
    )
    assert describe(Tariff(None, "f", "EUR", max_cost=D(0))) == "free charging, max 0.00 EUR"
    assert describe(Tariff(None, "own", "EUR", display_text="Tarif: 0,35 €/kWh", language="de")) == (
        "Tarif: 0,35 €/kWh"
    )
