"""`chargeops.SetPowerLimit` ("limit this charger to W watts from now") in each OCPP version's words.

The session holding the charger turns the neutral command into the SetChargingProfile its version speaks. A
TxDefaultProfile on connector / EVSE 0 covers every connector, both the running session and the next one, so
a new session never starts above the site's plan. It limits each connector, not the charger as a whole: the
planner divides a charger's share by its sessions.
"""

from __future__ import annotations

import math
from typing import Any

from ocpp_gateway.versions import V16, OcppVersion

# Reserved for the planner: each new limit replaces the previous one (same id) and leaves the operator's own
# profiles (other ids) alone. The stack level sits above the usual 0 / 1 so the site limit wins.
PLANNER_PROFILE_ID = 900_001
PLANNER_STACK_LEVEL = 8


def set_charging_profile(version: OcppVersion, limit_w: float) -> dict[str, Any]:
    """The SetChargingProfile request for a TxDefaultProfile of `limit_w` watts, starting now.

    Relative kind: the schedule starts when it is installed (or at the session start), so the charger's clock
    does not matter. Whole watts, rounded down: 1.6 wants a multiple of 0.1 and must not be exceeded."""
    watts = float(math.floor(limit_w))
    period = {"startPeriod": 0, "limit": watts}
    if version is V16:
        return {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": PLANNER_PROFILE_ID,
                "stackLevel": PLANNER_STACK_LEVEL,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [period]},
            },
        }
    return {
        "evseId": 0,
        "chargingProfile": {
            "id": PLANNER_PROFILE_ID,
            "stackLevel": PLANNER_STACK_LEVEL,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [
                {"id": PLANNER_PROFILE_ID, "chargingRateUnit": "W", "chargingSchedulePeriod": [period]}
            ],
        },
    }


def power_limit(version: OcppVersion, p: dict[str, Any]) -> dict[str, Any]:
    """The SetChargingProfile request for a neutral `{"limit_w"}`; ValueError for nonsense."""
    limit = p.get("limit_w")
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit < 1e9:
        raise ValueError("limit_w must be a number of watts, 0 or more")
    return set_charging_profile(version, limit)
