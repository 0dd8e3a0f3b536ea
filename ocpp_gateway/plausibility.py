"""Meter plausibility: is a transaction's energy register reading believable, judged against the last
plausible one? Billing counts only plausible readings; the others are stored as sent and flagged.

Pure. The store keeps each transaction's last plausible reading on its row and runs `judge` under the row's
lock, so the check goes on across reconnects and gateway processes (`GatewayStore.check_meter`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from chargeops.events import Body, MeterImplausible, MeterValues
from chargeops.logs import ChargerLog

BACKWARDS = "backwards"
EXCEEDS_MAX_POWER = "exceeds_max_power"
CLOCK_SKEW = "clock_skew"
REASONS = (BACKWARDS, EXCEEDS_MAX_POWER, CLOCK_SKEW)
# Readings carry whole seconds and a meter latches its register a little before the message is stamped, so
# a rise may take GRACE_S more seconds at HEADROOM × the maximum power; a register may read up to
# BACKWARDS_TOLERANCE_WH lower than before (float and Wh rounding) before it counts as going backwards.
GRACE_S = 60.0
HEADROOM = 1.1
BACKWARDS_TOLERANCE_WH = 1.0


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of the main energy register (Wh) at the time the charger stamped it."""

    wh: float
    at: datetime


@dataclass(frozen=True, slots=True)
class MeterLimits:
    max_power_w: float  # the charger model's rated power, or the configured ceiling
    max_clock_skew_s: float


@dataclass(frozen=True, slots=True)
class Flag:
    """An implausible reading, why, and the last plausible reading it was judged against."""

    reason: str
    reading: Reading
    previous: Reading | None
    detail: str


def check(
    good: Reading | None, r: Reading, limits: MeterLimits, now: datetime, started_at: datetime | None = None
) -> Flag | None:
    """Why `r` cannot be right after the last plausible reading `good`, or None when it can be."""
    skew = timedelta(seconds=limits.max_clock_skew_s)
    if r.at > now + skew:
        ahead = (r.at - now).total_seconds()
        text = f"stamped {ahead:,.0f} s ahead of the server clock (limit {limits.max_clock_skew_s:g} s)"
        return Flag(CLOCK_SKEW, r, good, text)
    if started_at is not None and r.at < started_at - skew:
        before = (started_at - r.at).total_seconds()
        return Flag(CLOCK_SKEW, r, good, f"stamped {before:,.0f} s before the transaction started")
    if good is None:
        return None
    if r.at < good.at:  # sent late (1.6 transactionData, a queued message): it must not top the later one
        if r.wh > good.wh + BACKWARDS_TOLERANCE_WH:
            text = f"{r.wh:,.0f} Wh, but a later plausible reading is {good.wh:,.0f} Wh"
            return Flag(BACKWARDS, r, good, text)
        return None
    if r.wh < good.wh - BACKWARDS_TOLERANCE_WH:
        text = f"register fell from {good.wh:,.0f} to {r.wh:,.0f} Wh"
        return Flag(BACKWARDS, r, good, text)
    elapsed = (r.at - good.at).total_seconds()
    allowed = limits.max_power_w * HEADROOM * (elapsed + GRACE_S) / 3600
    if r.wh - good.wh > allowed:
        text = (
            f"rose {r.wh - good.wh:,.0f} Wh in {elapsed:,.0f} s; at most {allowed:,.0f} Wh "
            f"at {limits.max_power_w / 1000:g} kW"
        )
        return Flag(EXCEEDS_MAX_POWER, r, good, text)
    return None


def judge(
    good: Reading | None,
    readings: Iterable[Reading],
    limits: MeterLimits,
    now: datetime,
    started_at: datetime | None = None,
) -> tuple[Reading | None, list[Flag]]:
    """Readings in time order against the last plausible one: (the new last plausible reading, the flags).

    A plausible reading older than the last plausible one leaves it in place. The first reading of a
    transaction is its base even when its time is wrong (nothing to judge its value by); the server's clock
    then stands in for its time.
    """
    flags: list[Flag] = []
    for r in sorted(readings, key=lambda r: r.at):
        flag = check(good, r, limits, now, started_at)
        if flag is not None:
            flags.append(flag)
            if good is None:
                good = Reading(r.wh, min(r.at, now))
        elif good is None or r.at >= good.at:
            good = r
    return good, flags


def readings_of(bodies: Iterable[Body]) -> list[Reading]:
    """The main energy register readings among meter-value events."""
    return [
        Reading(wh, s.sampled_at)
        for body in bodies
        if isinstance(body, MeterValues)
        for s in body.samples
        if (wh := s.register_wh) is not None and s.sampled_at is not None
    ]


def flag_events(
    flags: Sequence[Flag], transaction_id: str, evse_id: int | None, connector_id: int | None, log: ChargerLog
) -> list[Body]:
    """Implausible readings the store recorded, logged and as events to store beside the samples."""
    if flags:
        log.warning("transaction %s: %d implausible meter reading(s), first %s: %s",
                    transaction_id, len(flags), flags[0].reason, flags[0].detail)  # fmt: skip
    return [
        MeterImplausible(
            transaction_id,
            evse_id or 0,
            connector_id or 0,
            f.reason,
            f.reading.wh,
            f.reading.at,
            f.previous.wh if f.previous else None,
            f.previous.at if f.previous else None,
            f.detail,
        )
        for f in flags
    ]
