"""Meter-value mapping shared by every version: OCPP `meterValue` entries → neutral samples."""

from __future__ import annotations

from typing import Any

from chargeops.events import ENERGY_REGISTER, Body, MeterValues, Sample, SignedMeterValues
from ocpp_gateway.times import parse_time


def samples_of(meter_values: list[dict[str, Any]]) -> list[Sample]:
    """Every numeric sampled value, with its measurand, phase, location, context and unit.

    1.6 carries `unit` flat and the value as a string; 2.0.1 nests `unitOfMeasure` and uses numbers.
    Signed values are kept as signed (`signed_of`); a 1.6 `SignedData` value has no number to sample.
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


def signed_of(meter_value: dict[str, Any]) -> list[dict[str, Any]]:
    """The signed readings of one `meterValue` entry: 2.x `signedMeterValue`, 1.6 format `SignedData`."""
    out = []
    for sv in meter_value.get("sampledValue", ()):
        signed = sv.get("signedMeterValue")
        if signed is None and sv.get("format") != "SignedData":
            continue
        try:
            value: float | None = float(sv["value"])
        except (TypeError, ValueError):
            value = None
        out.append(
            {
                "sampled_at": meter_value["timestamp"],
                "measurand": sv.get("measurand", ENERGY_REGISTER),
                "context": sv.get("context"),
                "phase": sv.get("phase"),
                "value": value,
                "signed_meter_data": signed["signedMeterData"] if signed else str(sv["value"]),
                "signing_method": signed.get("signingMethod") if signed else None,
                "encoding_method": signed.get("encodingMethod") if signed else None,
                "public_key": signed.get("publicKey") if signed else None,
            }
        )
    return out


def meter_events(
    meter_values: list[dict[str, Any]], evse_id: int, connector_id: int, transaction_id: str | None
) -> list[Body]:
    """One event per sampled timestamp, so each stores and replays independently; signed readings in one
    more event beside it."""
    events: list[Body] = []
    for mv in meter_values:
        samples = samples_of([mv])
        if samples:
            events.append(MeterValues(evse_id, connector_id, transaction_id, samples))
        if signed := signed_of(mv):
            events.append(SignedMeterValues(evse_id, connector_id, transaction_id, signed))
    return events
