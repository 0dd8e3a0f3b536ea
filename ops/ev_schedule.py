"""The charging schedule of an ISO 15118 session, from the EV's needs and the site's limit (pure).

The session may draw `allowed` = the lesser of what the EV takes at most and the site's limit for the
charger (none: the EV's maximum). Without a departure time or an energy amount the schedule is one period
at `allowed`. With both, it levels the load: the least rate that delivers the energy by the departure time
with a `margin` (10 %: charging losses and the EV tapering near full), rounded up to `STEP_W` and never below
what the EV needs at least to charge — so the site keeps the rest for others. When even `allowed` cannot
deliver the energy in time, the schedule is `allowed` throughout. A leveled schedule lasts until the
departure time; after it the charger's default profile (the site planner's limit) applies again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

STEP_W = 100.0
MARGIN = 0.1


@dataclass(frozen=True, slots=True)
class EvSchedule:
    """Periods as (seconds from the start, limit in W); `duration_s` None: open-ended."""

    periods: tuple[tuple[int, float], ...]
    duration_s: int | None = None


def ev_schedule(
    *,
    now: datetime,
    max_power_w: float,
    min_power_w: float = 0.0,
    energy_wh: float | None = None,
    departure_at: datetime | None = None,
    cap_w: float | None = None,
    max_periods: int | None = None,
    step_w: float = STEP_W,
    margin: float = MARGIN,
) -> EvSchedule:
    allowed = max_power_w if cap_w is None else min(max_power_w, cap_w)
    allowed = max(0.0, math.floor(allowed / step_w) * step_w)
    if energy_wh is None or departure_at is None or departure_at <= now or energy_wh <= 0:
        return EvSchedule(((0, allowed),))
    window_s = int((departure_at - now).total_seconds())
    needed_w = energy_wh * 3600 / window_s * (1 + margin)
    rate = math.ceil(round(max(needed_w, min_power_w) / step_w, 6)) * step_w  # 3300.0000000001 W is 3300 W
    periods = ((0, min(rate, allowed)),)
    return EvSchedule(periods[: max(1, max_periods or 1)], window_s)
