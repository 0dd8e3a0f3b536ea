"""Meter-value mapping shared by every version: OCPP `meterValue` entries → neutral samples."""

from __future__ import annotations

from typing import Any

from chargeops.events import ENERGY_REGISTER, MeterValues, Sample
from ocpp_gateway.times import parse_time


def samples_of(meter_values: list[dict[str, Any]]) -> list[Sample]:
    """Every numeric sampled value, with its measurand, phase, location, context and unit.

    1.6 carries `unit` flat and the value as a string; 2.0.1 nests `unitOfMeasure` and uses numbers.
    Signed (non-numeric) values are kept in the raw event log only.
    """
    out: list[Sample] = []
    for mv in meter_values:
        at = parse_time(mv["timestamp"])
        for sv in mv.get("sampledValue", ()):
            try:
                value = float(sv["value"])
            except (TypeError, ValueError):
                continue
            unit = sv.get("unit")
            uom = sv.get("unitOfMeasure")
            if uom is not None:
                unit = uom.get("unit", "Wh")
                if uom.get("multiplier"):
                    value *= 10 ** uom["multiplier"]
            measurand = sv.get("measurand", ENERGY_REGISTER)
            if unit is None and measurand.startswith("Energy"):
                unit = "Wh"
            out.append(
                Sample(
                    measurand=measurand,
                    value=value,
                    unit=unit,
                    phase=sv.get("phase"),
                    location=sv.get("location"),
                    context=sv.get("context"),
                    sampled_at=at,
                )
            )
    return out


def energy_wh(samples: list[Sample], context: str | None = None) -> float | None:
    """The main energy register (no phase) in Wh: the last sample that has it (of `context`, if given)."""
    for s in reversed(samples):
        wh = s.register_wh
        if wh is not None and (context is None or s.context == context):
            return wh
    return None


def meter_events(
    meter_values: list[dict[str, Any]], evse_id: int, connector_id: int, transaction_id: str | None
) -> list[MeterValues]:
    """One event per sampled timestamp, so each stores and replays independently."""
    events = []
    for mv in meter_values:
        samples = samples_of([mv])
        if samples:
            events.append(MeterValues(evse_id, connector_id, transaction_id, samples))
    return events
