"""Version-neutral power limits: "limit this charger to W watts from now" in each OCPP version's words.

The site planner (ops) must not know OCPP payload shapes, so it sends the neutral bus action
`chargeops.SetPowerLimit` `{"limit_w": float}`; the session holding the charger turns it into the
SetChargingProfile its version speaks. A TxDefaultProfile on connector / EVSE 0 covers every connector, both
the running session and the next one, so a new session never starts above the site's plan. It limits each
connector, not the charger as a whole: the planner divides a charger's share by its sessions.
"""

from __future__ import annotations

import math
from typing import Any

from ocpp_gateway.der import DER_ACTIONS, der_to_ocpp
from ocpp_gateway.versions import V16, OcppVersion

POWER_LIMIT_ACTION = "chargeops.SetPowerLimit"
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


def to_ocpp(version: OcppVersion, action: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A neutral `chargeops.*` bus action as this version's OCPP call; OCPP actions pass through unchanged.
    Raises ValueError for a neutral payload that makes no sense (`der.Unsupported` for one this version
    has no message for)."""
    if action in DER_ACTIONS:
        return der_to_ocpp(version, action, payload)
    if action != POWER_LIMIT_ACTION:
        return action, payload
    limit = payload.get("limit_w")
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit < 1e9:
        raise ValueError("limit_w must be a number of watts, 0 or more")
    return "SetChargingProfile", set_charging_profile(version, limit)
