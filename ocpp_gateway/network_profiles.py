"""A station moving to a higher security profile (OCPP 2.0.1 A05; the 1.6 security whitepaper's
ChangeConfiguration SecurityProfile): what the CSMS learns from the calls that move it.

The operator sends a 2.x SetNetworkProfile with `connectionData.securityProfile` N (and then the
NetworkConfigurationPriority and a Reset), or a 1.6 ChangeConfiguration of `SecurityProfile` to N. Once the
station accepts, N is kept as the charger's pending profile (`Store.set_pending_profile`): its next
connection proving N (a client certificate for 3, TLS with its password for 2) is let in and makes N its
profile, after which the lower profile is refused (OCTT TC_A_19 steps 7–13). Until then the profile it
connects with works, so a station that cannot connect with the new one falls back to the old (A05).
"""

from __future__ import annotations

from typing import Any


def profile_agreed(action: str, payload: dict[str, Any], answer: dict[str, Any]) -> int | None:
    """The security profile the station agreed to connect with by answering `action`, if it did."""
    if action == "SetNetworkProfile" and answer.get("status") == "Accepted":
        profile = (payload.get("connectionData") or {}).get("securityProfile")
    elif action == "ChangeConfiguration" and payload.get("key") == "SecurityProfile":
        if answer.get("status") not in ("Accepted", "RebootRequired"):
            return None
        profile = payload.get("value")
    else:
        return None
    try:
        level = int(str(profile))
    except (TypeError, ValueError):
        return None
    return level if 1 <= level <= 3 else None


def proves(profile: int, tls: bool, certificate_names: list[str], charger_id: str) -> bool:
    """Whether a handshake's transport can prove `profile` (the password, where one is needed, is checked
    as for every handshake): 2 needs TLS, 3 a client certificate (on our own TLS) naming the charger."""
    if profile >= 3:
        return charger_id in certificate_names
    return tls or profile < 2
