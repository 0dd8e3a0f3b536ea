"""ISO 15118 smart charging (OCPP 2.x K15–K17) in the gateway: the EV's charging needs and the schedule it
chose, as neutral events, and the neutral `chargeops.SetEvChargingSchedule` as the session's TxProfile.

What the charging schedule is, is ops' decision (`ops.ev_charging`): the gateway answers
NotifyEVChargingNeeds Accepted when the EVSE has a transaction to hang a TxProfile on, and publishes the
needs; ops answers with the command. Without a transaction Rejected (K15.FR.04: no schedule will come).
The EV's figures become watts: AC `evMaxCurrent` × `evMaxVoltage` × the phases of the requested transfer
(the voltage taken per phase), DC the lesser of `evMaxPower` and `evMaxCurrent` × `evMaxVoltage`; the energy
is `energyAmount`, or for DC without it the state of charge missing to `fullSoC` (100 % if not said) of
`evEnergyCapacity`. An EV that gave neither AC nor DC parameters (as the OCTT's TC_K_53 state does) may
draw what the station can give: its model's rated power, else `--meter-max-power-kw`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from chargeops.commands import ev_profile_id
from chargeops.events import EvChargingNeeds, EvChargingSchedule
from ocpp_gateway.times import parse_time

Payload = dict[str, Any]
PHASES = {"AC_single_phase": 1, "AC_two_phase": 2, "AC_three_phase": 3}


def needs_of(p: Payload, transaction_id: str, station_max_w: float | None = None) -> EvChargingNeeds | None:
    """A NotifyEVChargingNeedsRequest as neutral needs. An EV that gave no AC or DC parameters may draw
    `station_max_w` (the EVSE's own limit then holds it); None when that is not given either."""
    needs = p["chargingNeeds"]
    transfer = needs["requestedEnergyTransfer"]
    ac, dc = needs.get("acChargingParameters"), needs.get("dcChargingParameters")
    energy: float | None
    if ac is not None:
        volts_phases = ac["evMaxVoltage"] * PHASES.get(transfer, 1)
        max_w, min_w = ac["evMaxCurrent"] * volts_phases, ac["evMinCurrent"] * volts_phases
        energy = ac["energyAmount"]
    elif dc is not None:
        max_w, min_w = dc["evMaxCurrent"] * dc["evMaxVoltage"], 0.0
        if dc.get("evMaxPower") is not None:
            max_w = min(max_w, dc["evMaxPower"])
        energy = dc.get("energyAmount")
        if energy is None and dc.get("stateOfCharge") is not None and dc.get("evEnergyCapacity"):
            missing = max(0, (dc.get("fullSoC") or 100) - dc["stateOfCharge"])
            energy = dc["evEnergyCapacity"] * missing / 100
    elif station_max_w is not None:
        max_w, min_w, energy = station_max_w, 0.0, None
    else:
        return None
    departure = needs.get("departureTime")
    return EvChargingNeeds(
        evse_id=p["evseId"],
        transaction_id=transaction_id,
        energy_transfer=transfer,
        max_power_w=float(max(0, max_w)),
        min_power_w=float(max(0, min_w)),
        energy_wh=float(energy) if energy is not None else None,
        departure_at=parse_time(departure) if departure else None,
        max_periods=p.get("maxScheduleTuples"),
    )


def schedule_of(p: Payload, transaction_id: str | None) -> EvChargingSchedule:
    """A NotifyEVChargingScheduleRequest as the neutral schedule the EV chose."""
    schedule = p["chargingSchedule"]
    periods = []
    for period in schedule["chargingSchedulePeriod"]:
        entry: dict[str, Any] = {"start_s": period["startPeriod"], "limit": period.get("limit")}
        if period.get("numberPhases") is not None:
            entry["phases"] = period["numberPhases"]
        periods.append(entry)
    return EvChargingSchedule(
        evse_id=p["evseId"],
        transaction_id=transaction_id,
        starts_at=parse_time(schedule.get("startSchedule") or p["timeBase"]),
        rate_unit=schedule["chargingRateUnit"],
        periods=periods,
        duration_s=schedule.get("duration"),
    )


def tx_profile(p: Payload) -> Payload:
    """The 2.x SetChargingProfile request for a neutral `chargeops.SetEvChargingSchedule`: an Absolute
    TxProfile of the transaction, in W; ValueError for nonsense."""
    try:
        evse_id, transaction_id = int(p["evse_id"]), str(p["transaction_id"])
        start = datetime.fromisoformat(str(p["start_at"]))
        periods = [
            {"startPeriod": int(x["start_s"]), "limit": float(math.floor(float(x["limit_w"])))}
            for x in p["periods"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an EV charging schedule: {exc}") from None
    if evse_id < 1 or not periods or periods[0]["startPeriod"] != 0 or any(x["limit"] < 0 for x in periods):
        raise ValueError(
            "an EV charging schedule needs an EVSE and periods from 0 s with limits of 0 W or more"
        )
    profile_id = ev_profile_id(evse_id)
    schedule: Payload = {
        "id": profile_id,
        "startSchedule": start.isoformat().replace("+00:00", "Z"),
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": periods,
    }
    if p.get("duration_s") is not None:
        schedule["duration"] = int(p["duration_s"])
    return {
        "evseId": evse_id,
        "chargingProfile": {
            "id": profile_id,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "transactionId": transaction_id,
            "chargingSchedule": [schedule],
        },
    }
